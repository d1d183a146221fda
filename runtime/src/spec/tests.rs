#![allow(clippy::unwrap_used)]

use super::*;
use oci_spec::runtime::LinuxSeccompAction;

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfigView {
    ImageConfigView {
        entrypoint: entrypoint.map(v),
        cmd: cmd.map(v),
        ..Default::default()
    }
}

fn container(command: &[&str], args: &[&str]) -> ContainerSpec {
    ContainerSpec {
        command: v(command),
        args: v(args),
        ..Default::default()
    }
}

fn pod_container() -> ContainerSpec {
    ContainerSpec {
        command: v(&["/bin/sh"]),
        hostname: "web-1".into(),
        namespaces: PodNamespaces {
            network: SharedNamespace::Pod("/run/crid/pods/p/ns/net".into()),
            ipc: SharedNamespace::Pod("/run/crid/pods/p/ns/ipc".into()),
            uts: SharedNamespace::Pod("/run/crid/pods/p/ns/uts".into()),
            pid: PidMode::Container,
            user: None,
        },
        ..Default::default()
    }
}

fn build(c: &ContainerSpec) -> Spec {
    build_spec(
        c,
        &ImageConfigView::default(),
        Path::new("/run/crid/c/rootfs"),
        &ResolvedUser::default(),
    )
    .unwrap()
}

/// (command, args, image entrypoint, image cmd, expected args or error)
type Row<'a> = (
    &'a [&'a str],
    &'a [&'a str],
    Option<&'a [&'a str]>,
    Option<&'a [&'a str]>,
    Option<&'a [&'a str]>,
);

#[test]
fn args_rule_table() {
    let ep: Option<&[&str]> = Some(&["/ep", "-x"]);
    let cmd: Option<&[&str]> = Some(&["cmd1", "cmd2"]);
    // (command, args, entrypoint, cmd) -> expected
    let table: Vec<Row> = vec![
        // Nothing in the request: entrypoint + cmd.
        (&[], &[], ep, cmd, Some(&["/ep", "-x", "cmd1", "cmd2"])),
        (&[], &[], ep, None, Some(&["/ep", "-x"])),
        (&[], &[], None, cmd, Some(&["cmd1", "cmd2"])),
        (&[], &[], None, None, None),
        (&[], &[], Some(&[]), Some(&[]), None),
        // Only args: they replace the image cmd, after the entrypoint.
        (&[], &["a"], ep, cmd, Some(&["/ep", "-x", "a"])),
        (&[], &["a"], None, cmd, Some(&["a"])),
        (&[], &["a"], None, None, Some(&["a"])),
        // Command: replaces the entrypoint; the image cmd is never used.
        (&["/c"], &[], ep, cmd, Some(&["/c"])),
        (&["/c"], &[], None, None, Some(&["/c"])),
        (&["/c"], &["a", "b"], ep, cmd, Some(&["/c", "a", "b"])),
        (&["/c"], &["a"], None, None, Some(&["/c", "a"])),
        // Entrypoint [""] means "no entrypoint" (moby).
        (&[], &[], Some(&[""]), cmd, Some(&["cmd1", "cmd2"])),
        (&[], &["a"], Some(&[""]), None, Some(&["a"])),
        (&[], &[], Some(&[""]), None, None),
    ];
    for (command, args, ep, cmd, want) in table {
        let got = process_args(&container(command, args), &image(ep, cmd));
        match want {
            Some(w) => assert_eq!(
                got.unwrap(),
                v(w),
                "command={command:?} args={args:?} ep={ep:?} cmd={cmd:?}"
            ),
            None => {
                let e = got.unwrap_err();
                assert!(matches!(e, SpecError::NoCommand));
                let msg = e.to_string();
                assert!(msg.contains("command") && msg.contains("args"), "{msg}");
            }
        }
    }
}

#[test]
fn build_spec_fails_without_a_command() {
    let e = build_spec(
        &ContainerSpec::default(),
        &ImageConfigView::default(),
        Path::new("/r"),
        &ResolvedUser::default(),
    )
    .unwrap_err();
    assert!(matches!(e, SpecError::NoCommand));
}

#[test]
fn env_merging() {
    let img = ImageConfigView {
        env: v(&["PATH=/img/bin", "A=1", "B=2", "NOEQUALS", "=bad"]),
        ..Default::default()
    };
    let mut c = container(&["x"], &[]);
    c.hostname = "h".into();
    c.env = vec![("B".into(), "req".into()), ("C".into(), "3=3".into())];
    let user = ResolvedUser {
        home: Some("/home/u".into()),
        ..Default::default()
    };
    let env = process_env(&c, &img, &user).unwrap();
    assert_eq!(
        env,
        v(&[
            "PATH=/img/bin",
            "A=1",
            "B=req",
            "HOSTNAME=h",
            "C=3=3",
            "HOME=/home/u"
        ])
    );

    // PATH default, HOME "/" when the user has no home, request HOME wins.
    let c = container(&["x"], &[]);
    let env = process_env(&c, &ImageConfigView::default(), &ResolvedUser::default()).unwrap();
    assert_eq!(env, vec![format!("PATH={DEFAULT_PATH}"), "HOME=/".into()]);
    let mut c = container(&["x"], &[]);
    c.env = vec![("HOME".into(), "/x".into()), ("PATH".into(), "/p".into())];
    let env = process_env(&c, &ImageConfigView::default(), &user).unwrap();
    assert_eq!(env, v(&["HOME=/x", "PATH=/p"]));

    // Bad request keys name the env.
    for bad in ["", "A=B"] {
        let mut c = container(&["x"], &[]);
        c.env = vec![(bad.into(), "v".into())];
        let e = process_env(&c, &ImageConfigView::default(), &user).unwrap_err();
        assert!(e.to_string().contains("envs"), "{e}");
    }
}

#[test]
fn env_values_that_are_not_utf8_are_kept_as_bytes() {
    let mut c = container(&["x"], &[]);
    c.hostname = "h".into();
    c.env = vec![
        ("TEXT".into(), "grüße".into()),
        ("SECRET".into(), b"caf\xe9 \xff\xfe".to_vec()),
    ];
    let user = ResolvedUser::default();
    let img = ImageConfigView {
        env: v(&["SECRET=img", "I=1"]),
        ..Default::default()
    };
    // config.json can only show it lossily...
    assert!(!c.env_is_utf8());
    let env = process_env(&c, &img, &user).unwrap();
    assert_eq!(env[1], "SECRET=caf\u{fffd} \u{fffd}\u{fffd}");
    // ...the env file has it exactly, in the same merged order.
    let exact = exact_env(&c, &img, &user).unwrap().expect("an exact env");
    let path = format!("PATH={DEFAULT_PATH}");
    let expected: [&[u8]; 6] = [
        path.as_bytes(),
        b"SECRET=caf\xe9 \xff\xfe",
        b"I=1",
        b"HOSTNAME=h",
        "TEXT=grüße".as_bytes(),
        b"HOME=/",
    ];
    assert_eq!(exact, expected.map(<[u8]>::to_vec));
    // All UTF-8: config.json is exact, no env file.
    c.env.truncate(1);
    assert!(c.env_is_utf8());
    assert_eq!(exact_env(&c, &img, &user).unwrap(), None);
    // A NUL cannot pass execve: refused, as in a key.
    c.env = vec![("A".into(), b"\xff\0".to_vec())];
    let e = exact_env(&c, &img, &user).unwrap_err();
    assert!(e.to_string().contains("envs"), "{e}");
}

#[test]
fn records_with_string_env_values_still_load() {
    let mut c = container(&["x"], &[]);
    c.env = vec![("A".into(), b"\xff".to_vec())];
    let mut json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["env"], serde_json::json!([["A", [255]]]));
    let back: ContainerSpec = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, c);
    // What crid wrote before values were bytes.
    json["env"] = serde_json::json!([["A", "héllo"], ["B", ""]]);
    let old: ContainerSpec = serde_json::from_value(json).unwrap();
    assert_eq!(
        old.env,
        vec![("A".into(), "héllo".into()), ("B".into(), Vec::new())]
    );
}

/// The merge as it was written first (a scan per entry): the reference the
/// indexed merge must match entry for entry.
fn scanning_env(c: &ContainerSpec, img: &ImageConfigView, user: &ResolvedUser) -> Vec<String> {
    fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => env.push((key.to_owned(), value.to_owned())),
        }
    }
    let mut env = Vec::new();
    for kv in &img.env {
        if let Some((k, v)) = kv.split_once('=')
            && !k.is_empty()
        {
            set(&mut env, k, v);
        }
    }
    if !c.hostname.is_empty() {
        set(&mut env, "HOSTNAME", &c.hostname);
    }
    for (k, v) in &c.env {
        set(&mut env, k, std::str::from_utf8(v).unwrap());
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), user.home.clone().unwrap_or("/".into())));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[test]
fn env_overrides_keep_the_first_position() {
    let img = ImageConfigView {
        env: v(&["A=img", "HOSTNAME=img-host", "B=img", "A=img2"]),
        ..Default::default()
    };
    let mut c = container(&["x"], &[]);
    c.hostname = "pod-host".into();
    c.env = vec![
        ("C".into(), "1".into()),
        ("B".into(), "req".into()),
        ("C".into(), "2".into()),
        ("HOSTNAME".into(), "req-host".into()),
        ("PATH".into(), "/p".into()),
    ];
    let env = process_env(&c, &img, &ResolvedUser::default()).unwrap();
    assert_eq!(
        env,
        v(&[
            "A=img2",
            "HOSTNAME=req-host",
            "B=req",
            "C=2",
            "PATH=/p",
            "HOME=/"
        ])
    );
    assert_eq!(env, scanning_env(&c, &img, &ResolvedUser::default()));
}

#[test]
fn a_large_env_merges_as_the_scan_did() {
    // Keys repeat (every 7th entry overrides an earlier key), within the
    // image, within the request and across both.
    let key = |i: usize| format!("K{}", if i.is_multiple_of(7) { i / 7 } else { i });
    let img = ImageConfigView {
        env: (0..2_000).map(|i| format!("{}=img{i}", key(i))).collect(),
        ..Default::default()
    };
    let mut c = container(&["x"], &[]);
    c.hostname = "h".into();
    c.env = (1_000..6_000)
        .map(|i| (key(i), format!("req{i}").into_bytes()))
        .collect();
    let user = ResolvedUser {
        home: Some("/home/u".into()),
        ..Default::default()
    };
    let env = process_env(&c, &img, &user).unwrap();
    assert_eq!(env, scanning_env(&c, &img, &user));
    assert_eq!(
        env.first().map(String::as_str),
        Some(&*format!("PATH={DEFAULT_PATH}"))
    );
    assert_eq!(env.last().map(String::as_str), Some("HOME=/home/u"));

    // 100 000 distinct request entries: all kept, in order, after the
    // image's and HOSTNAME.
    c.env = (0..100_000)
        .map(|i| (format!("E{i}"), Vec::new()))
        .collect();
    let env = process_env(&c, &ImageConfigView::default(), &user).unwrap();
    assert_eq!(env.len(), 100_000 + 3);
    assert_eq!(env[1], "HOSTNAME=h");
    assert_eq!(env[2], "E0=");
    assert_eq!(env[100_001], "E99999=");
}

#[test]
fn working_dir_fallback() {
    let mut c = container(&["x"], &[]);
    let mut img = ImageConfigView::default();
    assert_eq!(working_dir(&c, &img).unwrap(), PathBuf::from("/"));
    img.working_dir = "/img".into();
    assert_eq!(working_dir(&c, &img).unwrap(), PathBuf::from("/img"));
    img.working_dir = "rel".into();
    assert_eq!(working_dir(&c, &img).unwrap(), PathBuf::from("/rel"));
    c.working_dir = "/req".into();
    assert_eq!(working_dir(&c, &img).unwrap(), PathBuf::from("/req"));
    c.working_dir = "req".into();
    let e = working_dir(&c, &img).unwrap_err();
    assert!(e.to_string().contains("working_dir") && e.to_string().contains("req"));
}

fn ns_of(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
    spec.linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| (n.typ(), n.path().clone()))
        .collect()
}

#[test]
fn namespaces_join_the_pod_and_pid_modes() {
    let mut c = pod_container();
    let spec = build(&c);
    assert_eq!(
        ns_of(&spec),
        vec![
            (LinuxNamespaceType::Mount, None),
            (
                LinuxNamespaceType::Network,
                Some("/run/crid/pods/p/ns/net".into())
            ),
            (
                LinuxNamespaceType::Ipc,
                Some("/run/crid/pods/p/ns/ipc".into())
            ),
            (
                LinuxNamespaceType::Uts,
                Some("/run/crid/pods/p/ns/uts".into())
            ),
            (LinuxNamespaceType::Pid, None),
        ]
    );
    assert_eq!(spec.hostname().as_deref(), Some("web-1"));
    assert!(
        !ns_of(&spec)
            .iter()
            .any(|(t, _)| *t == LinuxNamespaceType::User)
    );

    c.namespaces.pid = PidMode::Pod("/pod/pid".into());
    assert!(ns_of(&build(&c)).contains(&(LinuxNamespaceType::Pid, Some("/pod/pid".into()))));
    c.namespaces.pid = PidMode::Target("/proc/42/ns/pid".into());
    assert!(ns_of(&build(&c)).contains(&(LinuxNamespaceType::Pid, Some("/proc/42/ns/pid".into()))));
    c.namespaces.pid = PidMode::Node;
    assert!(
        !ns_of(&build(&c))
            .iter()
            .any(|(t, _)| *t == LinuxNamespaceType::Pid)
    );

    // Host network/IPC/UTS: no entries, and no hostname set.
    c.namespaces.network = SharedNamespace::Node;
    c.namespaces.ipc = SharedNamespace::Node;
    c.namespaces.uts = SharedNamespace::Node;
    let spec = build(&c);
    assert_eq!(ns_of(&spec), vec![(LinuxNamespaceType::Mount, None)]);
    assert_eq!(spec.hostname(), &None);
}

fn mount_of<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(dest))
}

fn opts(m: &Mount) -> Vec<String> {
    m.options().clone().unwrap_or_default()
}

#[test]
fn default_mounts_and_sys_readonly_unless_privileged() {
    let mut c = pod_container();
    let spec = build(&c);
    for (dest, typ) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
        ("/sys/fs/cgroup", "cgroup"),
    ] {
        let m = mount_of(&spec, dest).unwrap_or_else(|| panic!("{dest} missing"));
        assert_eq!(m.typ().as_deref(), Some(typ), "{dest}");
    }
    assert!(mount_of(&spec, "/run").is_none());
    assert!(opts(mount_of(&spec, "/sys").unwrap()).contains(&"ro".into()));
    assert!(opts(mount_of(&spec, "/sys/fs/cgroup").unwrap()).contains(&"ro".into()));

    c.privileged = true;
    let spec = build(&c);
    let sys = opts(mount_of(&spec, "/sys").unwrap());
    assert!(sys.contains(&"rw".into()) && !sys.contains(&"ro".into()));
    assert!(opts(mount_of(&spec, "/sys/fs/cgroup").unwrap()).contains(&"rw".into()));
}

#[test]
fn pod_files_and_shm() {
    let mut c = pod_container();
    c.pod_files = PodFiles {
        hosts: Some("/run/crid/p/hosts".into()),
        resolv_conf: Some("/run/crid/p/resolv.conf".into()),
        hostname: Some("/run/crid/p/hostname".into()),
        shm: Some("/run/crid/p/shm".into()),
    };
    c.readonly_rootfs = true;
    let spec = build(&c);
    let shm = mount_of(&spec, "/dev/shm").unwrap();
    assert_eq!(shm.typ().as_deref(), Some("bind"));
    assert_eq!(shm.source().as_deref(), Some(Path::new("/run/crid/p/shm")));
    assert!(opts(shm).contains(&"rw".into()));
    let n = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/dev/shm"))
        .count();
    assert_eq!(n, 1, "the pod's shm replaces the default tmpfs");
    let hosts = mount_of(&spec, "/etc/hosts").unwrap();
    assert_eq!(opts(hosts), v(&["rbind", "rprivate", "ro"]));
    assert!(mount_of(&spec, "/etc/resolv.conf").is_some());
    assert!(mount_of(&spec, "/etc/hostname").is_some());
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
}

#[test]
fn cri_mounts_with_propagation_and_readonly() {
    let mut c = pod_container();
    c.mounts = vec![
        MountSpec {
            container_path: "/data/deep/x".into(),
            host_path: "/host/x".into(),
            readonly: true,
            propagation: Propagation::Private,
            recursive_read_only: true,
            idmapped: false,
        },
        MountSpec {
            container_path: "/data".into(),
            host_path: "/host/data".into(),
            readonly: false,
            propagation: Propagation::RSlave,
            recursive_read_only: false,
            idmapped: false,
        },
        MountSpec {
            container_path: "/ro".into(),
            host_path: "/host/ro".into(),
            readonly: true,
            ..Default::default()
        },
        MountSpec {
            container_path: "/etc/hosts".into(),
            host_path: "/host/hosts".into(),
            ..Default::default()
        },
    ];
    c.pod_files.hosts = Some("/pod/hosts".into());
    let spec = build(&c);
    let data = mount_of(&spec, "/data").unwrap();
    assert_eq!(data.typ().as_deref(), Some("bind"));
    assert_eq!(opts(data), v(&["rbind", "rslave", "rw"]));
    assert_eq!(
        opts(mount_of(&spec, "/ro").unwrap()),
        v(&["rbind", "rprivate", "ro"])
    );
    assert_eq!(
        opts(mount_of(&spec, "/data/deep/x").unwrap()),
        v(&["rbind", "rprivate", "rro"])
    );
    // The CRI mount wins over the pod file.
    assert_eq!(
        mount_of(&spec, "/etc/hosts").unwrap().source().as_deref(),
        Some(Path::new("/host/hosts"))
    );
    // Sorted by depth: /data before /data/deep/x.
    let dests: Vec<PathBuf> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().clone())
        .collect();
    let pos = |p: &str| dests.iter().position(|d| d == Path::new(p)).unwrap();
    assert!(pos("/data") < pos("/data/deep/x"));
    assert!(pos("/proc") < pos("/data"));
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.rootfs_propagation().as_deref(), Some("rslave"));

    c.mounts[1].propagation = Propagation::RShared;
    let spec = build(&c);
    assert_eq!(
        opts(mount_of(&spec, "/data").unwrap()),
        v(&["rbind", "rshared", "rw"])
    );
    assert_eq!(
        spec.linux()
            .as_ref()
            .unwrap()
            .rootfs_propagation()
            .as_deref(),
        Some("rshared")
    );
}

#[test]
fn cri_dev_mount_drops_default_dev_mounts() {
    let mut c = pod_container();
    c.mounts = vec![MountSpec {
        container_path: "/dev".into(),
        host_path: "/dev".into(),
        ..Default::default()
    }];
    let spec = build(&c);
    assert_eq!(
        mount_of(&spec, "/dev").unwrap().typ().as_deref(),
        Some("bind")
    );
    assert!(mount_of(&spec, "/dev/pts").is_none());
    assert!(mount_of(&spec, "/dev/mqueue").is_none());
    assert!(mount_of(&spec, "/proc").is_some());
}

#[test]
fn bad_mounts_name_the_field() {
    let cases = [
        MountSpec {
            container_path: "rel".into(),
            host_path: "/h".into(),
            ..Default::default()
        },
        MountSpec {
            container_path: "/c".into(),
            host_path: "/h/../etc".into(),
            ..Default::default()
        },
        MountSpec {
            container_path: "/c".into(),
            host_path: "/h".into(),
            readonly: false,
            recursive_read_only: true,
            ..Default::default()
        },
        MountSpec {
            container_path: "/c".into(),
            host_path: "/h".into(),
            readonly: true,
            recursive_read_only: true,
            propagation: Propagation::RSlave,
            idmapped: false,
        },
    ];
    for m in cases {
        let mut c = pod_container();
        c.mounts = vec![m.clone()];
        let e = build_spec(
            &c,
            &ImageConfigView::default(),
            Path::new("/r"),
            &ResolvedUser::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("mounts."), "{m:?}: {e}");
    }
}

#[test]
fn masked_and_readonly_paths_absent_when_privileged() {
    let mut c = pod_container();
    let spec = build(&c);
    let linux = spec.linux().as_ref().unwrap();
    assert!(
        linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".into())
    );
    assert!(
        linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sys".into())
    );
    c.privileged = true;
    let spec = build(&c);
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.masked_paths().as_ref().is_none_or(|p| p.is_empty()));
    assert!(linux.readonly_paths().as_ref().is_none_or(|p| p.is_empty()));
}

#[test]
fn a_privileged_container_may_use_every_device() {
    let mut c = pod_container();
    c.privileged = true;
    let j = serde_json::to_value(build(&c)).unwrap();
    assert_eq!(
        j["linux"]["resources"]["devices"],
        serde_json::json!([{"allow": true, "type": "a", "access": "rwm"}])
    );
}

#[test]
fn process_user_tty_and_flags() {
    let mut c = pod_container();
    c.tty = true;
    c.no_new_privileges = true;
    c.resources.oom_score_adj = Some(500);
    let user = ResolvedUser {
        uid: 1000,
        gid: 1001,
        additional_gids: vec![10, 1001],
        username: Some("alice".into()),
        home: None,
    };
    let spec = build_spec(&c, &ImageConfigView::default(), Path::new("/rootfs"), &user).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.user().uid(), 1000);
    assert_eq!(p.user().gid(), 1001);
    assert_eq!(p.user().additional_gids().as_deref(), Some(&[10, 1001][..]));
    assert_eq!(p.terminal(), Some(true));
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.oom_score_adj(), Some(500));
    let resources = spec.linux().as_ref().unwrap().resources().clone().unwrap();
    assert!(
        resources.memory().is_none() && resources.cpu().is_none() && resources.pids().is_none()
    );
    let c = pod_container();
    let spec = build(&c);
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.no_new_privileges(), None);
    assert_eq!(p.terminal(), Some(false));
}

#[test]
fn resources_map_to_linux_resources() {
    let mut c = pod_container();
    c.cgroups_path = Some("/kubepods/podX/ctr".into());
    c.resources = Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("0-1".into()),
        cpuset_mems: Some(String::new()),
        memory_limit: Some(64 << 20),
        memory_swap_limit: None,
        pids_limit: Some(100),
        hugepage_limits: vec![("2MB".into(), 0)],
        ..Default::default()
    };
    let spec = build(&c);
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/kubepods/podX/ctr"))
    );
    let r = linux.resources().as_ref().unwrap();
    let cpu = r.cpu().as_ref().unwrap();
    assert_eq!(cpu.shares(), Some(512));
    assert_eq!(cpu.quota(), Some(50_000));
    assert_eq!(cpu.period(), Some(100_000));
    assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
    assert_eq!(cpu.mems(), &None);
    let mem = r.memory().as_ref().unwrap();
    assert_eq!(mem.limit(), Some(64 << 20));
    assert_eq!(mem.swap(), Some(64 << 20), "swap defaults to the limit");
    assert_eq!(r.pids().as_ref().unwrap().limit(), 100);
    assert_eq!(r.hugepage_limits().as_ref().unwrap()[0].page_size(), "2MB");
}

#[test]
fn serialises_to_the_config_json_runc_reads() {
    let mut c = pod_container();
    c.readonly_rootfs = true;
    c.annotations
        .insert("io.kubernetes.cri.container-name".into(), "app".into());
    c.mounts = vec![MountSpec {
        container_path: "/data".into(),
        host_path: "/host/data".into(),
        readonly: true,
        ..Default::default()
    }];
    let img = ImageConfigView {
        env: v(&["FOO=bar"]),
        entrypoint: Some(v(&["/ignored"])),
        working_dir: "/srv".into(),
        ..Default::default()
    };
    c.args = v(&["-c", "echo hi"]);
    let user = ResolvedUser {
        uid: 1000,
        gid: 1000,
        additional_gids: vec![1000],
        username: Some("alice".into()),
        home: Some("/home/alice".into()),
    };
    let spec = build_spec(&c, &img, Path::new("/run/crid/c/rootfs"), &user).unwrap();
    let bytes = to_config_json(&spec).unwrap();
    let j: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(j["ociVersion"], "1.0.2");
    assert_eq!(j["root"]["path"], "/run/crid/c/rootfs");
    assert_eq!(j["root"]["readonly"], true);
    assert_eq!(j["hostname"], "web-1");
    assert_eq!(
        j["process"]["args"],
        serde_json::json!(["/bin/sh", "-c", "echo hi"])
    );
    assert_eq!(j["process"]["cwd"], "/srv");
    assert_eq!(j["process"]["terminal"], false);
    assert_eq!(j["process"]["user"]["uid"], 1000);
    assert_eq!(j["process"]["user"]["gid"], 1000);
    assert_eq!(
        j["process"]["user"]["additionalGids"],
        serde_json::json!([1000])
    );
    let env: Vec<&str> = j["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"FOO=bar") && env.contains(&"HOSTNAME=web-1"));
    assert!(env.contains(&"HOME=/home/alice"));
    let ns = j["linux"]["namespaces"].as_array().unwrap();
    assert!(ns.contains(&serde_json::json!({"type": "mount"})));
    assert!(
        ns.contains(&serde_json::json!({"type": "network", "path": "/run/crid/pods/p/ns/net"}))
    );
    assert!(ns.contains(&serde_json::json!({"type": "pid"})));
    assert!(j["linux"]["maskedPaths"].as_array().unwrap().len() >= 10);
    assert!(j["linux"]["readonlyPaths"].is_array());
    let data = j["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/data")
        .unwrap();
    assert_eq!(data["type"], "bind");
    assert_eq!(data["source"], "/host/data");
    assert_eq!(
        data["options"],
        serde_json::json!(["rbind", "rprivate", "ro"])
    );
    assert_eq!(j["annotations"]["io.kubernetes.cri.container-name"], "app");
    // None of oci-spec's example defaults leak in.
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        !text.contains("youki") && !text.contains("TERM=xterm"),
        "{text}"
    );
    assert_eq!(
        j["process"]["rlimits"],
        serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 524288}])
    );
    let mut bounding: Vec<&str> = j["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    bounding.sort_unstable();
    assert_eq!(bounding.len(), 14);
    assert!(bounding.contains(&"CAP_NET_BIND_SERVICE") && bounding.contains(&"CAP_CHOWN"));
    assert!(j["process"]["capabilities"].get("inheritable").is_none());
    assert!(j["process"]["capabilities"].get("ambient").is_none());
    assert!(j["process"].get("noNewPrivileges").is_none());
    assert_eq!(
        j["linux"]["resources"],
        serde_json::json!({"devices": [
            {"allow": false, "type": "a", "access": "rwm"},
            {"allow": true, "type": "c", "access": "m"},
            {"allow": true, "type": "b", "access": "m"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"},
        ]}),
        "no limits: only the device rules, denying all but the default /dev"
    );
    assert!(j["linux"].get("devices").is_none());
    // And it reads back to the same spec.
    let back: Spec = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn container_spec_round_trips_through_serde() {
    let mut c = pod_container();
    c.namespaces.pid = PidMode::Target("/proc/1/ns/pid".into());
    c.supplemental_groups_policy = SupplementalGroupsPolicy::Strict;
    let s = serde_json::to_string(&c).unwrap();
    let back: ContainerSpec = serde_json::from_str(&s).unwrap();
    assert_eq!(back, c);
}

fn caps_of(spec: &Spec) -> (Vec<String>, Vec<String>, Vec<String>) {
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    assert!(caps.inheritable().is_none(), "no inheritable caps");
    assert!(caps.ambient().is_none(), "no ambient caps");
    let sorted = |set: &Option<oci_spec::runtime::Capabilities>| {
        let mut v: Vec<String> = set
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        v.sort();
        v
    };
    (
        sorted(caps.bounding()),
        sorted(caps.effective()),
        sorted(caps.permitted()),
    )
}

fn names(caps: &[Capability]) -> Vec<String> {
    let mut v: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    v.sort();
    v
}

/// The effective set, checking bounding and permitted are the same.
fn effective_caps(c: &ContainerSpec) -> Vec<String> {
    let (bounding, effective, permitted) = caps_of(&build(c));
    assert_eq!(bounding, effective);
    assert_eq!(permitted, effective);
    effective
}

#[test]
fn default_capabilities_are_containerds() {
    let got = effective_caps(&pod_container());
    assert_eq!(got, names(DEFAULT_CAPABILITIES));
    assert_eq!(got.len(), 14);
    for cap in ["CHOWN", "NET_RAW", "AUDIT_WRITE", "SETPCAP", "SYS_CHROOT"] {
        assert!(got.contains(&cap.to_string()), "{cap}");
    }
    assert!(!got.contains(&"SYS_ADMIN".to_string()));
    assert!(!got.contains(&"NET_ADMIN".to_string()));
}

#[test]
fn privileged_gets_every_capability_and_ignores_add_drop() {
    let mut c = pod_container();
    c.privileged = true;
    c.drop_capabilities = v(&["ALL"]);
    let got = effective_caps(&c);
    assert_eq!(got.len(), 41, "Linux has capabilities 0..=40");
    assert_eq!(got, names(ALL_CAPABILITIES));
    let distinct: HashSet<Capability> = ALL_CAPABILITIES.iter().copied().collect();
    assert_eq!(distinct.len(), ALL_CAPABILITIES.len());
    assert!(got.contains(&"SYS_ADMIN".to_string()) && got.contains(&"BPF".to_string()));
}

#[test]
fn added_and_dropped_capabilities() {
    let mut c = pod_container();
    c.add_capabilities = v(&["NET_ADMIN", "sys_time", "CAP_SYS_PTRACE", "KILL"]);
    c.drop_capabilities = v(&["NET_RAW", "mknod", "NET_ADMIN"]);
    let got = effective_caps(&c);
    let mut want = names(DEFAULT_CAPABILITIES);
    want.retain(|n| n != "NET_RAW" && n != "MKNOD");
    want.extend(["SYS_TIME".to_string(), "SYS_PTRACE".to_string()]);
    want.sort();
    // Drops win over adds of the same capability (containerd's order).
    assert_eq!(got, want);
}

#[test]
fn all_in_add_and_drop() {
    // Drop ALL, add some back: only those.
    let mut c = pod_container();
    c.drop_capabilities = v(&["ALL"]);
    c.add_capabilities = v(&["NET_BIND_SERVICE", "CHOWN"]);
    assert_eq!(effective_caps(&c), v(&["CHOWN", "NET_BIND_SERVICE"]));

    // Drop ALL alone: nothing at all (an empty set, not the defaults).
    let mut c = pod_container();
    c.drop_capabilities = v(&["all"]);
    assert_eq!(effective_caps(&c), Vec::<String>::new());

    // Add ALL, drop one: all but that one.
    let mut c = pod_container();
    c.add_capabilities = v(&["ALL"]);
    c.drop_capabilities = v(&["SYS_ADMIN"]);
    let got = effective_caps(&c);
    assert_eq!(got.len(), 40);
    assert!(!got.contains(&"SYS_ADMIN".to_string()));

    // Add ALL and drop ALL: drop wins, then individual adds.
    let mut c = pod_container();
    c.add_capabilities = v(&["ALL", "KILL"]);
    c.drop_capabilities = v(&["ALL"]);
    assert_eq!(effective_caps(&c), v(&["KILL"]));
}

#[test]
fn unknown_capabilities_name_the_field() {
    for (add, drop, field) in [
        (v(&["NET_ADMINN"]), vec![], "capabilities.add_capabilities"),
        (
            vec![],
            v(&["SYS_WHATEVER"]),
            "capabilities.drop_capabilities",
        ),
        (v(&[""]), vec![], "capabilities.add_capabilities"),
    ] {
        let mut c = pod_container();
        c.add_capabilities = add.clone();
        c.drop_capabilities = drop.clone();
        let e = build_spec(
            &c,
            &ImageConfigView::default(),
            Path::new("/r"),
            &ResolvedUser::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&e, SpecError::Invalid { field: f, .. } if *f == field),
            "{e:?}"
        );
        let msg = e.to_string();
        let bad = add.iter().chain(&drop).next().unwrap();
        assert!(
            msg.contains(field) && msg.contains(&format!("{bad:?}")),
            "{msg}"
        );
        // Also for privileged containers, where add/drop is otherwise ignored.
        c.privileged = true;
        assert!(capabilities(&c).is_err());
    }
}

#[test]
fn old_container_records_without_capability_fields_still_load() {
    let c = pod_container();
    let mut j = serde_json::to_value(&c).unwrap();
    let obj = j.as_object_mut().unwrap();
    obj.remove("add_capabilities").unwrap();
    obj.remove("drop_capabilities").unwrap();
    let back: ContainerSpec = serde_json::from_value(j).unwrap();
    assert_eq!(back, c);
}

fn seccomp_of(spec: &Spec) -> Option<LinuxSeccomp> {
    spec.linux().as_ref().unwrap().seccomp().clone()
}

#[test]
fn seccomp_follows_the_profile_and_the_capabilities() {
    let mut c = pod_container();
    assert_eq!(seccomp_of(&build(&c)), None, "unset is unconfined");

    c.seccomp = SeccompProfile::RuntimeDefault;
    let caps = capabilities(&c).unwrap();
    assert_eq!(
        seccomp_of(&build(&c)),
        Some(seccomp::runtime_default(&caps).unwrap())
    );
    // Added capabilities reach the profile: with SYS_ADMIN, mount is allowed.
    c.add_capabilities = v(&["SYS_ADMIN"]);
    let with_admin = seccomp_of(&build(&c)).unwrap();
    assert!(with_admin.syscalls().iter().flatten().any(|r| {
        r.names().iter().any(|n| n == "mount") && r.action() == LinuxSeccompAction::ScmpActAllow
    }));

    c.privileged = true;
    assert_eq!(seccomp_of(&build(&c)), None, "privileged: no filter");
}

#[test]
fn a_missing_localhost_profile_fails_the_build_naming_it() {
    let mut c = pod_container();
    c.seccomp = SeccompProfile::Localhost("/nonexistent/profile.json".into());
    let e = build_spec(
        &c,
        &ImageConfigView::default(),
        Path::new("/rootfs"),
        &ResolvedUser::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/profile.json"), "{e}");
}

#[test]
fn records_without_seccomp_read_as_unconfined() {
    let mut json = serde_json::to_value(pod_container()).unwrap();
    json.as_object_mut().unwrap().remove("seccomp");
    let back: ContainerSpec = serde_json::from_value(json).unwrap();
    assert_eq!(back.seccomp, SeccompProfile::Unconfined);
}

#[test]
fn ambient_capabilities_are_also_inheritable_and_in_every_other_set() {
    let mut c = pod_container();
    c.add_ambient_capabilities = vec!["NET_ADMIN".into()];
    let spec = build(&c);
    let caps = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().clone())
        .expect("capabilities");
    let has = |set: &Option<std::collections::HashSet<Capability>>| {
        set.as_ref()
            .is_some_and(|s| s.contains(&Capability::NetAdmin))
    };
    for set in [
        caps.ambient(),
        caps.inheritable(),
        caps.permitted(),
        caps.effective(),
        caps.bounding(),
    ] {
        assert!(has(set), "{caps:?}");
    }
    // Without any, neither ambient nor inheritable is set.
    let plain = build(&pod_container());
    let plain = plain
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().clone())
        .expect("capabilities");
    assert!(plain.ambient().is_none() && plain.inheritable().is_none());
}

#[test]
fn requested_masked_and_readonly_paths_replace_the_defaults() {
    let mut c = pod_container();
    c.masked_paths = vec!["/proc/version".into()];
    c.readonly_paths = vec!["/proc/bus".into()];
    let spec = build(&c);
    let linux = spec.linux().as_ref().expect("linux");
    assert_eq!(
        linux.masked_paths().as_deref(),
        Some(&["/proc/version".to_string()][..])
    );
    assert_eq!(
        linux.readonly_paths().as_deref(),
        Some(&["/proc/bus".to_string()][..])
    );
    let defaults = build(&pod_container());
    let linux = defaults.linux().as_ref().expect("linux");
    assert_eq!(
        linux.masked_paths().as_ref().map(Vec::len),
        Some(MASKED_PATHS.len())
    );
}

#[test]
fn clean_relative_paths_stay_beneath() {
    use std::path::Path;
    for good in ["", "etc", "./etc", "usr/share/doc", "a/./b"] {
        assert!(super::is_clean_relative(Path::new(good)), "{good:?}");
    }
    for bad in ["/etc", "..", "etc/../..", "a/../b", "a\0b"] {
        assert!(!super::is_clean_relative(Path::new(bad)), "{bad:?}");
    }
}
