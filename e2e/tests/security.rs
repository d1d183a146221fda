//! What a container may not do, checked from inside real containers run by
//! crid: its capability sets (containerd's defaults, CRI add/drop,
//! privileged), masked and read-only /proc and /sys paths, no_new_privs,
//! a setuid binary that cannot raise a user under no_new_privs, the file
//! limit, no inherited file descriptors, a starter that cannot be reached
//! through /proc, host devices and device access only when privileged, and
//! the verbose status that reports all of it. Every test ends with nothing
//! of its own left.

mod common;

use std::collections::BTreeSet;

use common::*;
use e2e::status_field;
use proto::cri;

/// Capability numbers (linux/capability.h) to the names CRI and the OCI
/// spec use.
const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// containerd's default set for a non-privileged container.
const CONTAINERD_DEFAULT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The capability names of a `/proc/<pid>/status` hex mask.
fn decode(mask: &str) -> BTreeSet<String> {
    let bits = u64::from_str_radix(mask.trim(), 16).expect("hex capability mask");
    (0..64)
        .filter(|bit| bits & (1u64 << bit) != 0)
        .map(|bit| {
            CAPABILITIES
                .get(bit)
                .map(|name| name.to_string())
                .unwrap_or_else(|| format!("unknown capability {bit}"))
        })
        .collect()
}

/// What a privileged container gets: every capability crid holds, i.e.
/// the bounding set of this test (its parent), which on some hosts lacks
/// a few of the kernel's.
fn held_capabilities() -> BTreeSet<String> {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    decode(&status_field(&status, "CapBnd"))
}

fn with_security(
    mut config: cri::ContainerConfig,
    security: cri::LinuxContainerSecurityContext,
) -> cri::ContainerConfig {
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(security),
        ..Default::default()
    });
    config
}

fn capabilities(add: &[&str], drop: &[&str]) -> cri::LinuxContainerSecurityContext {
    cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// CapEff and CapBnd of the container's init (PID 1 of its own PID
/// namespace) and of an exec in it, which must agree.
async fn capability_sets(world: &World, id: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let init = world.sh(id, "cat /proc/1/status").await;
    let exec = world.sh(id, "cat /proc/self/status").await;
    for key in ["CapEff", "CapBnd", "CapPrm"] {
        assert_eq!(
            status_field(&init, key),
            status_field(&exec, key),
            "{key}: init and exec differ"
        );
    }
    (
        decode(&status_field(&init, "CapEff")),
        decode(&status_field(&init, "CapBnd")),
    )
}

#[tokio::test]
async fn capabilities_are_containerds_defaults_with_cri_add_and_drop() {
    let world = World::new().await;
    let pod = world.pod("caps").await;
    let sleep = ["sleep", "3600"];
    let default = world.run(&pod, "default", &sleep).await;
    let cases = [
        ("add-sys-admin", capabilities(&["SYS_ADMIN"], &[]), {
            let mut set = names(CONTAINERD_DEFAULT);
            set.insert("SYS_ADMIN".into());
            set
        }),
        ("drop-net-raw", capabilities(&[], &["NET_RAW"]), {
            let mut set = names(CONTAINERD_DEFAULT);
            set.remove("NET_RAW");
            set
        }),
        (
            "only-chown",
            capabilities(&["CHOWN"], &["ALL"]),
            names(&["CHOWN"]),
        ),
    ];

    let (effective, bounding) = capability_sets(&world, &default).await;
    assert_eq!(effective, names(CONTAINERD_DEFAULT));
    assert_eq!(bounding, names(CONTAINERD_DEFAULT));
    for (name, security, expected) in cases {
        let config = with_security(world.container_config(name, &sleep), security);
        let id = world.run_config(&pod, config).await;
        let (effective, bounding) = capability_sets(&world, &id).await;
        assert_eq!(effective, expected, "{name}: CapEff");
        assert_eq!(bounding, expected, "{name}: CapBnd");
    }

    // The verbose status says the same, from the spec.
    let (_, info) = world.status(&default).await;
    let security = &info["security"];
    let reported: BTreeSet<String> = security["capabilities"]["effective"]
        .as_array()
        .expect("effective capabilities listed")
        .iter()
        .filter_map(|cap| cap.as_str()?.strip_prefix("CAP_").map(String::from))
        .collect();
    assert_eq!(reported, names(CONTAINERD_DEFAULT), "{security}");
    assert_eq!(security["privileged"], false, "{security}");
    assert_eq!(security["noNewPrivileges"], false, "{security}");
    let masked = security["maskedPaths"].to_string();
    assert!(masked.contains("/proc/kcore"), "{security}");
    assert!(
        security["readonlyPaths"].to_string().contains("/proc/sys"),
        "{security}"
    );
    assert!(
        security["lsm"]
            .as_str()
            .is_some_and(|l| l.starts_with("none")),
        "{security}"
    );
    assert!(!security["seccomp"].is_null(), "{security}");
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn masked_paths_are_empty_and_readonly_paths_refuse_writes() {
    let world = World::new().await;
    let pod = world.pod("masks").await;
    // SYS_ADMIN, so a refused write is the read-only mount's doing, not a
    // missing capability's.
    let config = with_security(
        world.container_config("masked", &["sleep", "3600"]),
        capabilities(&["SYS_ADMIN"], &[]),
    );
    let id = world.run_config(&pod, config).await;

    for file in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        // Some kernels have no /proc/kcore (CONFIG_PROC_KCORE off): then
        // there is nothing to mask, and nothing to see.
        if !std::path::Path::new(file).exists() {
            let out = world.exec(&id, &["cat", file], 10).await.expect("exec");
            assert_ne!(out.exit_code, 0, "{file} readable though the host has none");
            continue;
        }
        let script = format!("grep -c ' {file} ' /proc/self/mountinfo; wc -c < {file}");
        let out = world.sh(&id, &script).await;
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(lines, ["1", "0"], "{file}: mounted over once and empty");
    }
    let firmware = world
        .sh(
            &id,
            "grep ' /sys/firmware ' /proc/self/mountinfo; ls -A /sys/firmware | wc -l",
        )
        .await;
    assert!(firmware.contains(" - tmpfs "), "{firmware}");
    assert!(
        firmware.ends_with('0'),
        "/sys/firmware not empty: {firmware}"
    );

    // With SYS_ADMIN in its UTS namespace (the node's here: the pod uses
    // the node's network), only the read-only mount refuses this write;
    // it writes the current name back, so even a failure of the check
    // would change nothing.
    let out = world
        .exec(
            &id,
            &[
                "sh",
                "-c",
                "name=$(cat /proc/sys/kernel/hostname); echo \"$name\" > /proc/sys/kernel/hostname",
            ],
            10,
        )
        .await
        .expect("exec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.exit_code, 0, "/proc/sys/kernel/hostname was writable");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    let mounts = world
        .sh(&id, "grep ' /proc/sys ' /proc/self/mountinfo")
        .await;
    assert!(
        mounts
            .split_whitespace()
            .nth(5)
            .is_some_and(|o| o.split(',').any(|f| f == "ro")),
        "{mounts}"
    );
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn no_new_privs_only_when_asked() {
    let world = World::new().await;
    let pod = world.pod("nnp").await;
    let sleep = ["sleep", "3600"];
    let without = world.run(&pod, "without", &sleep).await;
    let config = with_security(
        world.container_config("with", &sleep),
        cri::LinuxContainerSecurityContext {
            no_new_privs: true,
            ..Default::default()
        },
    );
    let with = world.run_config(&pod, config).await;
    for (id, expected) in [(&without, "0"), (&with, "1")] {
        let init = world.sh(id, "cat /proc/1/status").await;
        let exec = world.sh(id, "cat /proc/self/status").await;
        assert_eq!(status_field(&init, "NoNewPrivs"), expected);
        assert_eq!(status_field(&exec, "NoNewPrivs"), expected);
    }
    let (_, info) = world.status(&with).await;
    assert_eq!(info["security"]["noNewPrivileges"], true);
    world.finish(&[&pod]).await;
}

/// A static program that prints its real and effective uid, built here
/// with the host's gcc (a busybox applet would drop a setuid root itself).
fn uid_printer() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("ids.c");
    std::fs::write(
        &source,
        "#include <stdio.h>\n#include <unistd.h>\n\
         int main(void) { printf(\"%d %d\\n\", (int)getuid(), (int)geteuid()); return 0; }\n",
    )
    .expect("write ids.c");
    let binary = dir.path().join("ids");
    let built = std::process::Command::new("gcc")
        .args(["-static", "-Os", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("run gcc (and libc6-dev for a static libc)");
    assert!(
        built.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::read(&binary).expect("read ids")
}

#[tokio::test]
async fn a_setuid_root_binary_raises_a_user_only_without_no_new_privs() {
    let world = World::new().await;
    let mut setuid = e2e::registry::Layer::new();
    setuid.dir("bin/").file("bin/ids", 0o4755, &uid_printer());
    let image = world.push_and_pull("e2e/setuid", vec![setuid.gzip()]).await;
    let pod = world.pod("setuid").await;
    let as_user = |name: &str, no_new_privs: bool| {
        let mut config = with_security(
            world.container_config(name, &["sleep", "3600"]),
            cri::LinuxContainerSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 1000 }),
                no_new_privs,
                ..Default::default()
            },
        );
        config.image = Some(image_spec(&image));
        config
    };
    let without = world.run_config(&pod, as_user("without", false)).await;
    let with = world.run_config(&pod, as_user("with", true)).await;
    assert_eq!(
        world.sh(&without, "/bin/ids").await,
        "1000 0",
        "setuid works"
    );
    assert_eq!(world.sh(&with, "/bin/ids").await, "1000 1000");
    world.finish(&[&pod]).await;
}

/// `Max open files` of a /proc/PID/limits: (soft, hard).
fn open_file_limits(limits: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open file limit in {limits}"));
    let mut words = line["Max open files".len()..].split_whitespace();
    let mut next = || words.next().unwrap_or_default().to_string();
    (next(), next())
}

#[tokio::test]
async fn containers_get_their_own_open_file_limit_not_crids() {
    let world = World::new().await;
    let pod = world.pod("limits").await;
    let id = world.run(&pod, "limits", &["sleep", "3600"]).await;
    let (_, own_hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    // systemd's service default, which crid gives every container, capped
    // by crid's own hard limit (the test's: crid inherits it).
    let expected = ("1024".to_string(), own_hard.min(524_288).to_string());
    for limits in [
        world.sh(&id, "cat /proc/1/limits").await,
        world.sh(&id, "cat /proc/self/limits").await,
    ] {
        assert_eq!(open_file_limits(&limits), expected, "{limits}");
    }
    let crids = std::fs::read_to_string(format!("/proc/{}/limits", world.crid.pid()))
        .expect("crid's limits");
    let (soft, hard) = open_file_limits(&crids);
    assert_eq!(soft, hard, "crid raises its own soft limit: {crids}");
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn no_fd_of_crid_or_the_monitor_and_cwd_inside_the_rootfs() {
    let world = World::new().await;
    let pod = world.pod("fds").await;
    let id = world.run(&pod, "fds", &["sleep", "3600"]).await;

    // The init (sleep, PID 1 here) holds exactly its stdio.
    let init_fds = world.sh(&id, "ls /proc/1/fd").await;
    assert_eq!(
        init_fds.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2"]
    );
    // ls itself, exec'd directly: its stdio and the directory it reads.
    let out = world
        .exec(&id, &["ls", "/proc/self/fd"], 10)
        .await
        .expect("exec ls");
    let exec_fds = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        exec_fds.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "fds of an exec"
    );
    // CVE-2024-21626: a cwd inherited from outside would read as a host
    // path (or not resolve); both are the container's `/`.
    for pid in ["1", "self"] {
        let cwd = world.sh(&id, &format!("readlink /proc/{pid}/cwd")).await;
        assert_eq!(cwd, "/", "cwd of /proc/{pid}");
    }
    world.finish(&[&pod]).await;
}

/// Issue 13's escape: in a pod sharing one PID namespace, a container
/// with CAP_SYS_PTRACE reached the host's / through pause (/proc/1/root)
/// and could write there. Now no process of the pod that is not the
/// prober's own (pause, a created-not-started init, a running container)
/// shows the host's filesystem or holds a capability the prober lacks, or
/// names a host path in its command line or cwd; pause's root is empty and
/// read-only, and it holds no fd and no environment.
#[tokio::test]
async fn a_ptrace_capable_container_finds_no_way_out_through_the_pods_processes() {
    let world = World::new().await;
    let marker = world.env.path().join("host-marker");
    std::fs::write(&marker, "host").expect("marker");
    let pod = world.pod_with("way-out", cri::NamespaceMode::Pod).await;
    let sleep = ["sleep", "3600"];
    let prober = world
        .run_config(
            &pod,
            with_security(
                world.container_config("prober", &sleep),
                capabilities(&["SYS_PTRACE"], &[]),
            ),
        )
        .await;
    world.run(&pod, "running", &sleep).await;
    world
        .create(&pod, "created", world.container_config("created", &sleep))
        .await
        .expect("create");

    let own = world.sh(&prober, "cat /proc/self/status").await;
    let allowed = decode(&status_field(&own, "CapEff"));
    assert!(allowed.contains("SYS_PTRACE"), "the prober: {allowed:?}");
    // Every process but this exec's own sh and ps: pause, the created
    // init, the running container and the prober.
    let processes = world.sh(&prober, "ps -o pid,comm").await;
    let others: Vec<&str> = processes
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let pid = fields.next()?;
            (!matches!(fields.next(), Some("sh" | "ps"))).then_some(pid)
        })
        .collect();
    assert!(
        others.len() >= 4,
        "pause, two inits, the prober: {processes}"
    );
    let marker = marker.display();
    let binary_dir = e2e::crid_binary()
        .parent()
        .expect("crid's dir")
        .display()
        .to_string();
    for pid in others {
        let status = world.sh(&prober, &format!("cat /proc/{pid}/status")).await;
        for key in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
            let held = decode(&status_field(&status, key));
            assert!(
                held.is_subset(&allowed),
                "{pid}'s {key} {held:?} exceeds the prober's {allowed:?}"
            );
        }
        let seen = world
            .exec(
                &prober,
                &["sh", "-c", &format!("test -e /proc/{pid}/root{marker}")],
                10,
            )
            .await
            .expect("exec");
        assert_ne!(
            seen.exit_code, 0,
            "the host's {marker} through /proc/{pid}/root"
        );
        // Pause and the created init are forks of crid-monitor: their argv
        // is the monitor's, which must name neither crid's binary nor the
        // pod's state dir; the containers' own argv is `sleep 3600`.
        let cmdline = world
            .sh(&prober, &format!("tr '\\0' ' ' < /proc/{pid}/cmdline"))
            .await;
        assert!(
            matches!(cmdline.trim(), "crid-monitor" | "sleep 3600"),
            "/proc/{pid}/cmdline shows {cmdline:?}"
        );
        // The cwd, where the kernel lets the prober read it.
        let cwd = world
            .exec(&prober, &["readlink", &format!("/proc/{pid}/cwd")], 10)
            .await
            .expect("exec");
        let cwd = String::from_utf8_lossy(&cwd.stdout);
        for host in [&world.env.path().display().to_string(), &binary_dir] {
            assert!(!cwd.contains(host.as_str()), "/proc/{pid}/cwd is {cwd:?}");
        }
    }
    // pause, PID 1: an empty read-only root, no fd, no environment.
    assert_eq!(world.sh(&prober, "ls -A /proc/1/root/").await, "");
    let written = world
        .exec(&prober, &["sh", "-c", "echo x > /proc/1/root/x"], 10)
        .await
        .expect("exec");
    assert_ne!(written.exit_code, 0, "wrote into pause's root");
    assert!(
        String::from_utf8_lossy(&written.stderr).contains("Read-only file system"),
        "{:?}",
        String::from_utf8_lossy(&written.stderr)
    );
    assert_eq!(world.sh(&prober, "ls -A /proc/1/fd/").await, "");
    assert_eq!(world.sh(&prober, "wc -c < /proc/1/environ").await, "0");
    assert_eq!(world.sh(&prober, "readlink /proc/1/cwd").await, "/");
    world.finish(&[&pod]).await;
}

/// CVE-2019-5736: until it execs, every process the monitor forks (pause
/// for good, a created container's init until StartContainer, an exec
/// until its execve) has the crid-monitor binary as /proc/<pid>/exe. From
/// a container in a pod sharing one PID namespace, pause and a
/// created-not-started init are visible; their exe, fds and environ must
/// be refused, and the container's own exec'd programs must be dumpable
/// again (non-dumpable, a non-root container process could not even
/// read its own /proc entries' owner-only files).
///
/// What this cannot show deterministically: those two hold every
/// capability, so the kernel's rule that the prober must hold all of the
/// target's capabilities already refuses a prober without CAP_SYS_PTRACE
/// (and one with it passes any check). Non-dumpability is the only guard
/// in the short window after an init or exec has dropped to the
/// container's capabilities and before its execve, which no test can hold
/// open without a hook in the init; `enter` refuses to join a container
/// while dumpable, so that guard cannot silently go missing.
#[tokio::test]
async fn the_monitors_forks_cannot_be_reached_through_proc() {
    let world = World::new().await;
    let pod = world.pod_with("starter", cri::NamespaceMode::Pod).await;
    let sleep = ["sleep", "3600"];
    let prober = world.run(&pod, "prober", &sleep).await;
    let created = world
        .create(&pod, "created", world.container_config("created", &sleep))
        .await
        .expect("create");
    // The monitor's forks in the pod: their argv is crid-monitor's.
    let processes = world.sh(&prober, "ps -o pid,args").await;
    let forks: Vec<&str> = processes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let pid = fields.next()?;
            // busybox ps shows `{comm}` first where it differs from argv[0].
            fields
                .take(2)
                .any(|word| word.ends_with("crid-monitor"))
                .then_some(pid)
        })
        .collect();
    assert!(forks.len() >= 2, "pause and the created init: {processes}");
    for pid in &forks {
        for probe in [
            format!("readlink /proc/{pid}/exe"),
            format!("readlink /proc/{pid}/fd/0"),
            format!("cat /proc/{pid}/exe > /dev/null"),
            format!("echo x >> /proc/{pid}/exe"),
            format!("cat /proc/{pid}/environ"),
        ] {
            let out = world
                .exec(&prober, &["sh", "-c", &probe], 10)
                .await
                .expect("exec");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_ne!(
                out.exit_code,
                0,
                "{probe:?} worked: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            // busybox readlink fails without a word.
            assert!(
                stderr.contains("Permission denied") || probe.starts_with("readlink"),
                "{probe}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{probe}: {:?}", out.stdout);
        }
    }
    // The container's own programs, once exec'd, are dumpable again.
    assert_eq!(
        world.sh(&prober, "readlink /proc/self/exe").await,
        "/bin/busybox"
    );
    // A non-root container's process owns its /proc files only when
    // dumpable (the kernel gives a non-dumpable one's to root).
    let user = world
        .run_config(
            &pod,
            with_security(
                world.container_config("user", &sleep),
                cri::LinuxContainerSecurityContext {
                    run_as_user: Some(cri::Int64Value { value: 1000 }),
                    ..Default::default()
                },
            ),
        )
        .await;
    let processes = world.sh(&user, "ps -o pid,user,args").await;
    let init = processes
        .lines()
        .find(|line| {
            line.split_whitespace().skip(1).collect::<Vec<_>>() == ["1000", "sleep", "3600"]
        })
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("the uid 1000 init in {processes}"));
    for script in [
        "ls -ln /proc/self/environ".to_string(),
        format!("ls -ln /proc/{init}/environ"),
    ] {
        let script = script.as_str();
        let listed = world.sh(&user, script).await;
        assert_eq!(
            listed.split_whitespace().nth(2),
            Some("1000"),
            "{script}: {listed}"
        );
    }
    world.start(&created).await.expect("start the created one");
    // Root's, as the prober (uid 1000's would need CAP_SYS_PTRACE).
    let inits = world.sh(&prober, "ps -o pid,user,args").await;
    let root_sleeps: Vec<&str> = inits
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1..) == Some(&["root", "sleep", "3600"][..])).then(|| fields[0])
        })
        .collect();
    assert_eq!(root_sleeps.len(), 2, "prober and created: {inits}");
    for pid in root_sleeps {
        assert_eq!(
            world
                .sh(&prober, &format!("readlink /proc/{pid}/exe"))
                .await,
            "/bin/busybox"
        );
    }
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn a_privileged_container_gets_every_capability_the_host_devices_and_access() {
    let world = World::new().await;
    let mut pod_config = world.pod_config("privileged", cri::NamespaceMode::Container);
    if let Some(security) = pod_config
        .linux
        .as_mut()
        .and_then(|linux| linux.security_context.as_mut())
    {
        security.privileged = true;
    }
    let pod = world
        .rt()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config),
            runtime_handler: String::new(),
        })
        .await
        .expect("run privileged pod")
        .into_inner()
        .pod_sandbox_id;
    let sleep = ["sleep", "3600"];
    let config = with_security(
        world.container_config("privileged", &sleep),
        cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        },
    );
    let privileged = world.run_config(&pod, config).await;
    let plain = world.run(&pod, "plain", &sleep).await;

    let (effective, bounding) = capability_sets(&world, &privileged).await;
    assert_eq!(effective, held_capabilities());
    assert_eq!(bounding, held_capabilities());
    let devices = ["/dev/kmsg", "/dev/loop-control"];
    for device in devices {
        assert!(
            std::path::Path::new(device).exists(),
            "the host has no {device} to compare with"
        );
        let listed = world.sh(&privileged, &format!("ls {device}")).await;
        assert_eq!(listed, device);
        let out = world
            .exec(&plain, &["ls", device], 10)
            .await
            .expect("exec ls");
        assert_ne!(out.exit_code, 0, "{device} in a non-privileged container");
    }
    // The device cgroup: any container may make a node (CAP_MKNOD), only
    // a privileged one may open one outside the default /dev.
    let open_loop0 = "mknod /tmp/loop0 b 7 0 && head -c 1 /tmp/loop0";
    assert_eq!(world.sh(&privileged, open_loop0).await, "");
    let out = world
        .exec(&plain, &["sh", "-c", open_loop0], 10)
        .await
        .expect("exec mknod");
    assert_ne!(out.exit_code, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    let listed: BTreeSet<String> = world
        .sh(&plain, "cat /sys/fs/cgroup/devices/devices.list")
        .await
        .lines()
        .map(str::to_owned)
        .collect();
    let expected = [
        "c *:* m",
        "b *:* m",
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 1:7 rwm",
        "c 1:8 rwm",
        "c 1:9 rwm",
        "c 5:0 rwm",
        "c 5:1 rwm",
        "c 5:2 rwm",
        "c 136:* rwm",
    ];
    assert_eq!(listed, names(&expected));
    assert_eq!(
        world
            .sh(&privileged, "cat /sys/fs/cgroup/devices/devices.list")
            .await,
        "a *:* rwm"
    );
    let (_, info) = world.status(&plain).await;
    assert_eq!(
        info["security"]["deviceRules"].as_array().map(Vec::len),
        Some(expected.len() + 1)
    );
    let (_, info) = world.status(&privileged).await;
    assert_eq!(info["security"]["privileged"], true);
    assert_eq!(info["security"]["maskedPaths"], serde_json::json!([]));
    world.finish(&[&pod]).await;
}

fn seccomp(
    profile_type: cri::security_profile::ProfileType,
    localhost: &str,
) -> cri::LinuxContainerSecurityContext {
    cri::LinuxContainerSecurityContext {
        seccomp: Some(cri::SecurityProfile {
            profile_type: profile_type.into(),
            localhost_ref: localhost.into(),
        }),
        ..Default::default()
    }
}

/// RuntimeDefault forbids what moby's default profile forbids (a new user
/// namespace needs no capability, so only the filter can refuse it);
/// Unconfined allows it; a Localhost profile denying mkdir is loaded.
#[tokio::test]
async fn seccomp_runtime_default_unconfined_and_localhost() {
    use cri::security_profile::ProfileType;
    let world = World::new().await;
    let pod = world.pod("seccomp").await;
    let sleep = ["sleep", "3600"];
    let profile_dir = tempfile::tempdir().expect("profile dir");
    let no_mkdir = profile_dir.path().join("no-mkdir.json");
    std::fs::write(
        &no_mkdir,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .expect("write profile");
    let mut ids = Vec::new();
    for (name, context) in [
        ("default", seccomp(ProfileType::RuntimeDefault, "")),
        ("unconfined", seccomp(ProfileType::Unconfined, "")),
        (
            "local",
            seccomp(ProfileType::Localhost, &no_mkdir.display().to_string()),
        ),
    ] {
        let config = with_security(world.container_config(name, &sleep), context);
        ids.push(world.run_config(&pod, config).await);
    }
    let exit_of = |out: cri::ExecSyncResponse| out.exit_code;
    let unshare = ["unshare", "-U", "true"];
    let default = world.exec(&ids[0], &unshare, 10).await.expect("exec");
    assert_ne!(exit_of(default), 0, "RuntimeDefault allowed unshare");
    assert_eq!(
        world.sh(&ids[0], "grep Seccomp: /proc/1/status").await,
        "Seccomp:\t2"
    );
    let unconfined = world.exec(&ids[1], &unshare, 10).await.expect("exec");
    assert_eq!(exit_of(unconfined), 0, "Unconfined refused unshare");
    let mkdir = world
        .exec(&ids[2], &["mkdir", "/tmp/x"], 10)
        .await
        .expect("exec");
    assert_ne!(mkdir.exit_code, 0, "the Localhost profile allowed mkdir");
    assert!(
        String::from_utf8_lossy(&mkdir.stderr).contains("not permitted"),
        "{mkdir:?}"
    );
    // A profile that is not there: the create fails naming it.
    let missing = profile_dir.path().join("missing.json");
    let config = with_security(
        world.container_config("missing", &sleep),
        seccomp(ProfileType::Localhost, &missing.display().to_string()),
    );
    let error = world
        .create(&pod, "missing", config)
        .await
        .expect_err("missing profile");
    assert!(error.message().contains("missing.json"), "{error:?}");
    world.finish(&[&pod]).await;
}

/// A non-root user keeps only its ambient capabilities across exec: none
/// by default, NET_BIND_SERVICE when CRI asks for it as ambient.
#[tokio::test]
async fn ambient_capabilities_reach_a_non_root_user() {
    let world = World::new().await;
    let pod = world.pod("ambient").await;
    let sleep = ["sleep", "3600"];
    let as_user = |ambient: &[&str]| cri::LinuxContainerSecurityContext {
        run_as_user: Some(cri::Int64Value { value: 1000 }),
        capabilities: Some(cri::Capability {
            add_ambient_capabilities: ambient.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let plain = world
        .run_config(
            &pod,
            with_security(world.container_config("plain", &sleep), as_user(&[])),
        )
        .await;
    let ambient = world
        .run_config(
            &pod,
            with_security(
                world.container_config("ambient", &sleep),
                as_user(&["NET_BIND_SERVICE"]),
            ),
        )
        .await;
    let (effective, _) = capability_sets(&world, &plain).await;
    assert!(effective.is_empty(), "{effective:?}");
    let (effective, _) = capability_sets(&world, &ambient).await;
    assert_eq!(effective, names(&["NET_BIND_SERVICE"]));
    world.finish(&[&pod]).await;
}

/// The request's masked path list replaces the defaults (kubelet sends the
/// defaults itself, or none for procMount: Unmasked).
#[tokio::test]
async fn the_requests_masked_paths_replace_the_defaults() {
    let world = World::new().await;
    let pod = world.pod("masks").await;
    let config = with_security(
        world.container_config("custom", &["sleep", "3600"]),
        cri::LinuxContainerSecurityContext {
            masked_paths: vec!["/proc/version".into()],
            ..Default::default()
        },
    );
    let id = world.run_config(&pod, config).await;
    assert_eq!(world.sh(&id, "cat /proc/version").await, "");
    // /proc/timer_list is masked by default, not here.
    assert!(
        !world
            .sh(&id, "head -c 100 /proc/timer_list")
            .await
            .is_empty()
    );
    let (_, info) = world.status(&id).await;
    assert_eq!(
        info["security"]["maskedPaths"],
        serde_json::json!(["/proc/version"])
    );
    world.finish(&[&pod]).await;
}
