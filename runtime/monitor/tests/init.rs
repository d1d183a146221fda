//! The container init and exec processes, for real, as root: a busybox
//! rootfs, created, started and exec'd into by `monitor::init`.
//!
//! `harness = false`: these functions fork, which is only sound in a
//! single-threaded process, and libtest runs even `--test-threads=1` tests
//! on a thread of its own. So this binary is its own main, one thread,
//! and fails (non-zero exit, message) on the first broken check.
//!
//! It plays the monitor: it is a sub-reaper and reaps everything it
//! starts. Its own mount namespace (with `/` a slave of the host's) holds
//! the stand-in overlay, so nothing it mounts can outlive or leak out of
//! it; it still unmounts and checks.

mod common;

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::own_namespaces;
use e2e::status_field;
use monitor::init::{self, ChildStdio};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxSeccomp, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, Spec,
};
use proto::monitor::{CgroupV1Mount, CgroupView, ContainerCreate};
use runtime::spec::seccomp::{localhost, runtime_default};
use runtime::spec::{
    ContainerSpec, ImageConfigView, MountSpec, PodFiles, PodNamespaces, ResolvedUser, build_spec,
};

type Result<T = ()> = std::result::Result<T, String>;

fn main() {
    // This process stands in for crid-monitor, which is non-dumpable from
    // its launch on (init refuses to join a container otherwise).
    if let Err(error) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("init tests FAILED: prctl(PR_SET_DUMPABLE, 0): {error}");
        std::process::exit(1);
    }
    let outcome = run();
    // Whatever happened: nothing of ours may be left running.
    let leftover = reap_all();
    match (outcome, leftover) {
        (Ok(()), Ok(())) => println!("init tests: ok"),
        (Err(error), _) | (Ok(()), Err(error)) => {
            eprintln!("init tests FAILED: {error}");
            std::process::exit(1);
        }
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result {
    if ok { Ok(()) } else { Err(what()) }
}

fn run() -> Result {
    check(nix::unistd::geteuid().is_root(), || {
        "these tests need root (namespaces, mounts, cgroups)".into()
    })?;
    check(Path::new("/bin/busybox").exists(), || {
        "/bin/busybox is missing: apt-get install busybox-static".into()
    })?;
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("making / a slave: {e}"))?;

    // The masked paths checked inside must show something on the host, or
    // seeing them empty proves nothing.
    for path in ["/proc/keys", "/proc/timer_list", "/sys/firmware"] {
        let shown = std::fs::read_dir(path)
            .map(|d| d.count())
            .or_else(|_| std::fs::read(path).map(|b| b.len()))
            .unwrap_or(0);
        check(shown > 0, || {
            format!("{path} is empty or missing on this host")
        })?;
    }
    let fixture = Fixture::new()?;
    let result = scenarios(&fixture);
    let cleaned = fixture.clean_up();
    result.and(cleaned)
}

fn scenarios(fixture: &Fixture) -> Result {
    println!("container init: rootfs, user, caps, cgroup view, masks…");
    let init_pid = init_sees_its_world(fixture)?;
    let exec_result = exec_joins_the_running_init(fixture, init_pid);
    let _ = kill(init_pid, Signal::SIGKILL);
    let _ = waitpid(init_pid, None);
    exec_result?;
    println!("start of a missing command");
    missing_command_fails_at_start(fixture)?;
    println!("seccomp: runtime default and a localhost profile, init and exec");
    seccomp_filters_init_and_exec(fixture)?;
    println!("create errors leave nothing");
    bad_mount_fails_create_and_leaves_nothing(fixture)?;
    println!("an init placed by crid waits for it, with a holder");
    placed_init_waits_and_has_a_holder(fixture)?;
    Ok(())
}

/// A test cgroup leaf in the v1 pids hierarchy, removed at the end.
struct Fixture {
    dir: tempfile::TempDir,
    bundle: PathBuf,
    rootfs: PathBuf,
    cgroup: PathBuf,
    escape: PathBuf,
}

impl Fixture {
    fn new() -> Result<Fixture> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let bundle = dir.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
        for sub in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
            std::fs::create_dir_all(rootfs.join(sub)).map_err(|e| io(sub, e))?;
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).map_err(|e| io("busybox", e))?;
        for applet in [
            "sh", "cat", "ls", "id", "echo", "pwd", "touch", "hostname", "readlink", "grep", "wc",
            "sleep", "stat", "tr", "cut", "unshare", "mkdir",
        ] {
            symlink("busybox", rootfs.join("bin").join(applet)).map_err(|e| io(applet, e))?;
        }
        std::fs::write(rootfs.join("bin/noexec"), "#!/bin/sh\n").map_err(|e| io("noexec", e))?;
        // An image symlink that points far outside: a mount through it
        // must still land inside the rootfs.
        let escape = std::env::temp_dir().join(format!("crid-init-escape-{}", std::process::id()));
        symlink(
            format!("../../../../../../../..{}", escape.display()),
            rootfs.join("link"),
        )
        .map_err(|e| io("link", e))?;
        // Inside the root, the link resolves to this dir; followed on the
        // host, it would reach `escape`.
        let inside = rootfs.join(escape.strip_prefix("/").map_err(|e| e.to_string())?);
        std::fs::create_dir_all(&inside).map_err(|e| io("link target", e))?;
        std::fs::write(dir.path().join("hostname"), "pod-hostname-file\n")
            .map_err(|e| io("hostname file", e))?;
        std::fs::create_dir(dir.path().join("data")).map_err(|e| io("data", e))?;
        std::fs::write(dir.path().join("data/hello"), "hello\n").map_err(|e| io("data", e))?;
        std::fs::create_dir(dir.path().join("cpu-view")).map_err(|e| io("cpu-view", e))?;

        let cgroup = PathBuf::from(format!(
            "/sys/fs/cgroup/pids/crid-init-test-{}",
            std::process::id()
        ));
        std::fs::create_dir(&cgroup)
            .map_err(|e| io("creating a pids cgroup (needs cgroup v1 pids)", e))?;
        // The stand-in for the overlay crid mounts: a bind of the dir
        // onto itself makes it a mount point, as the overlay is.
        let fixture = Fixture {
            dir,
            bundle,
            rootfs,
            cgroup,
            escape,
        };
        mount(
            Some(&fixture.rootfs),
            &fixture.rootfs,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("binding the rootfs stand-in: {e}"))?;
        Ok(fixture)
    }

    fn create(&self, spec_args: &[&str]) -> Result<(ContainerCreate, Spec)> {
        let container = ContainerSpec {
            command: spec_args.iter().map(|s| (*s).to_owned()).collect(),
            env: vec![("FOO".into(), "bar baz".into())],
            working_dir: "/tmp".into(),
            readonly_rootfs: true,
            no_new_privileges: true,
            mounts: vec![MountSpec {
                container_path: "/link/data".into(),
                host_path: self.dir.path().join("data"),
                readonly: true,
                ..MountSpec::default()
            }],
            namespaces: PodNamespaces::default(),
            pod_files: PodFiles {
                hostname: Some(self.dir.path().join("hostname")),
                ..PodFiles::default()
            },
            resources: runtime::spec::Resources {
                oom_score_adj: Some(500),
                ..Default::default()
            },
            ..ContainerSpec::default()
        };
        let user = ResolvedUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![1000, 2000],
            username: None,
            home: None,
        };
        let mut spec = build_spec(&container, &ImageConfigView::default(), &self.rootfs, &user)
            .map_err(|e| format!("build_spec: {e}"))?;
        // A hostname to set in the container's own UTS namespace.
        own_namespaces(&mut spec)?;
        spec.set_hostname(Some("crid-init-test".into()));
        let caps: oci_spec::runtime::Capabilities = [
            Capability::Chown,
            Capability::Kill,
            Capability::NetBindService,
        ]
        .into_iter()
        .collect();
        let process = spec.process_mut().as_mut().ok_or("spec without process")?;
        process.set_capabilities(Some(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps.clone())
                .inheritable(caps.clone())
                .ambient(caps)
                .build()
                .map_err(|e| e.to_string())?,
        ));
        process.set_rlimits(Some(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(512u64)
                .hard(1024u64)
                .build()
                .map_err(|e| e.to_string())?,
        ]));
        let create = ContainerCreate {
            id: "init-test".into(),
            bundle: self.bundle.clone(),
            env_file: false,
            cgroup_procs: vec![self.cgroup.join("cgroup.procs")],
            placed_by_crid: false,
            oom_events: None,
            cgroup_view: CgroupView::V1 {
                hierarchies: vec![
                    CgroupV1Mount {
                        name: "pids".into(),
                        host_dir: self.cgroup.clone(),
                        aliases: vec![],
                    },
                    CgroupV1Mount {
                        name: "cpu,cpuacct".into(),
                        host_dir: self.dir.path().join("cpu-view"),
                        aliases: vec!["cpu".into(), "cpuacct".into()],
                    },
                ],
            },
            log: None,
            log_path: None,
            stdin: false,
            stdin_once: false,
            tty: false,
        };
        Ok((create, spec))
    }

    fn clean_up(self) -> Result {
        let unmounted = umount2(&self.rootfs, MntFlags::empty())
            .map_err(|e| format!("unmounting the rootfs stand-in: {e}"));
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.path().display().to_string();
        let leaked = mountinfo
            .lines()
            .find(|l| l.contains(&dir))
            .map(str::to_owned);
        let cgroup = std::fs::remove_dir(&self.cgroup)
            .map_err(|e| format!("removing {}: {e}", self.cgroup.display()));
        let escaped = self.escape.exists();
        unmounted?;
        cgroup?;
        check(leaked.is_none(), || format!("a mount is left: {leaked:?}"))?;
        check(!escaped, || {
            format!("a mount escaped the rootfs to {}", self.escape.display())
        })
    }
}

/// A pipe whose write end becomes the child's stdout and stderr.
struct Output {
    read: File,
}

/// The container's environment, as the monitor hands it to an exec.
fn env(create: &ContainerCreate, spec: &Spec) -> Result<Vec<std::ffi::CString>> {
    init::environment(create, spec).map_err(|e| format!("environment: {e}"))
}

fn stdio() -> Result<(ChildStdio, Output)> {
    let (read, write) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    let stdin: OwnedFd = File::open("/dev/null").map_err(|e| e.to_string())?.into();
    let stderr = write.try_clone().map_err(|e| e.to_string())?;
    Ok((
        ChildStdio {
            stdin,
            stdout: write,
            stderr,
        },
        Output {
            read: File::from(read),
        },
    ))
}

impl Output {
    /// Everything until every writer closed it.
    fn read_all(mut self) -> Result<String> {
        let mut text = String::new();
        self.read
            .read_to_string(&mut text)
            .map_err(|e| format!("reading output: {e}"))?;
        Ok(text)
    }
}

fn expect_line(output: &str, line: &str) -> Result {
    check(output.lines().any(|l| l.trim_end() == line), || {
        format!("expected the line {line:?} in:\n{output}")
    })
}

const INIT_SCRIPT: &str = r#"
echo "pid=$$"
id
echo "pwd=$(pwd)"
echo "foo=$FOO"
echo "hostname=$(hostname)"
echo "hostname-file=$(cat /etc/hostname)"
echo "data=$(cat /link/data/hello)"
touch /data-written 2>/dev/null && echo "root=rw" || echo "root=ro"
touch /link/data/x 2>/dev/null && echo "bind=rw" || echo "bind=ro"
echo "keys=$(cat /proc/keys | wc -c) timer_list=$(cat /proc/timer_list | wc -c)"
echo "firmware=$(ls -A /sys/firmware | wc -l)"
(echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo "procsys=rw" || echo "procsys=ro"
test -c /dev/null && test -c /dev/urandom && test -c /dev/tty && echo "devices=ok"
echo "devnull=$(stat -c %a /dev/null)"
echo "fd=$(readlink /dev/fd) ptmx=$(readlink /dev/ptmx) stdout=$(readlink /dev/stdout)"
grep -E '^(SigBlk|SigIgn|NoNewPrivs|CapEff|CapBnd|CapAmb):' /proc/self/status
echo "oom=$(cat /proc/self/oom_score_adj)"
echo "nofile=$(ulimit -n)"
echo "cgroups=$(ls /sys/fs/cgroup | tr '\n' ' ')"
echo "cpu-link=$(readlink /sys/fs/cgroup/cpu)"
echo "in-cgroup=$(grep -c '^1$' /sys/fs/cgroup/pids/cgroup.procs)"
touch /sys/fs/cgroup/x 2>/dev/null && echo "cgroupfs=rw" || echo "cgroupfs=ro"
echo "root-mount=$(grep -E '^[0-9]+ [0-9]+ [^ ]+ [^ ]+ / ' /proc/self/mountinfo | cut -d' ' -f4,6)"
echo done
exec 1>&- 2>&-
exec sleep 1000
"#;

fn init_sees_its_world(fixture: &Fixture) -> Result<Pid> {
    let (create, spec) = fixture.create(&["sh", "-c", INIT_SCRIPT])?;
    let (child_stdio, output) = stdio()?;
    let created = init::create(&create, &spec, child_stdio, |_, _| Ok(()))
        .map_err(|e| format!("create: {e}"))?;
    let pid = created.pid;
    // Born in the container's cgroup, before it runs anything.
    let procs = std::fs::read_to_string(fixture.cgroup.join("cgroup.procs")).unwrap_or_default();
    let started = check(procs.lines().any(|l| l == pid.to_string()), || {
        format!("init {pid} is not in the cgroup: {procs:?}")
    })
    .and_then(|()| created.start().map_err(|e| format!("start: {e}")));
    let text = started.and_then(|()| output.read_all());
    let text = match text {
        Ok(text) => text,
        Err(error) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(error);
        }
    };
    let checked = (|| {
        for line in [
            "pid=1",
            "uid=1000 gid=1000 groups=1000,2000",
            "pwd=/tmp",
            "foo=bar baz",
            "hostname=crid-init-test",
            "hostname-file=pod-hostname-file",
            "data=hello",
            "root=ro",
            "bind=ro",
            "keys=0 timer_list=0",
            "firmware=0",
            "procsys=ro",
            "devices=ok",
            "devnull=666",
            "fd=/proc/self/fd ptmx=pts/ptmx stdout=/proc/self/fd/1",
            "SigBlk:\t0000000000000000",
            "SigIgn:\t0000000000000000",
            "NoNewPrivs:\t1",
            // CHOWN (0), KILL (5), NET_BIND_SERVICE (10), through ambient
            // for uid 1000.
            "CapEff:\t0000000000000421",
            "CapBnd:\t0000000000000421",
            "CapAmb:\t0000000000000421",
            "oom=500",
            "nofile=512",
            "cpu-link=cpu,cpuacct",
            "in-cgroup=1",
            "cgroupfs=ro",
            "done",
        ] {
            expect_line(&text, line)?;
        }
        let cgroups = text
            .lines()
            .find_map(|l| l.strip_prefix("cgroups="))
            .unwrap_or_default();
        for name in ["pids", "cpu,cpuacct", "cpu", "cpuacct"] {
            check(cgroups.split_whitespace().any(|n| n == name), || {
                format!("/sys/fs/cgroup lacks {name}: {cgroups:?}")
            })?;
        }
        let root = text
            .lines()
            .find_map(|l| l.strip_prefix("root-mount="))
            .unwrap_or_default();
        check(
            root.split(' ')
                .next()
                .is_some_and(|r| r.ends_with("bundle/rootfs"))
                && root.split(' ').nth(1).is_some_and(|o| o.starts_with("ro")),
            || format!("/ is not the read-only rootfs stand-in: {root:?}\n{text}"),
        )
    })();
    // Its stdout closes just before it execs sleep: what execs into it
    // next must find sleep there, not the shell on its way out.
    let checked = checked.and_then(|()| wait_for_comm(pid, "sleep"));
    if let Err(error) = checked {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        return Err(error);
    }
    Ok(pid)
}

fn wait_for_comm(pid: Pid, expected: &str) -> Result {
    let path = format!("/proc/{pid}/comm");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let comm = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        if comm.trim_end() == expected {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{pid} still runs {comm:?}, not {expected}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn exec_joins_the_running_init(fixture: &Fixture, init_pid: Pid) -> Result {
    let (create, spec) = fixture.create(&["unused"])?;
    let script = "echo \"pid=$$\"; id; echo \"pwd=$(pwd)\"; echo \"foo=$FOO\"; \
                  echo \"mnt=$(readlink /proc/self/ns/mnt)\"; echo \"pid1=$(cat /proc/1/comm)\"; \
                  echo \"hostname=$(hostname)\"; test -e /data-written || echo no-write";
    let args: Vec<String> = ["sh", "-c", script].map(str::to_owned).to_vec();
    let (child_stdio, output) = stdio()?;
    let pid = init::exec(
        init_pid,
        &spec,
        &env(&create, &spec)?,
        &args,
        &create.cgroup_procs,
        child_stdio,
    )
    .map_err(|e| format!("exec: {e}"))?;
    let text = output.read_all();
    let status = waitpid(pid, None).map_err(|e| format!("waiting for exec {pid}: {e}"))?;
    let text = text?;
    check(status == WaitStatus::Exited(pid, 0), || {
        format!("exec ended {status:?}:\n{text}")
    })?;
    let init_mnt = std::fs::read_link(format!("/proc/{init_pid}/ns/mnt"))
        .map_err(|e| e.to_string())?
        .display()
        .to_string();
    for line in [
        "uid=1000 gid=1000 groups=1000,2000",
        "pwd=/tmp",
        "foo=bar baz",
        &format!("mnt={init_mnt}"),
        "pid1=sleep",
        "hostname=crid-init-test",
        "no-write",
    ] {
        expect_line(&text, line)?;
    }
    check(!text.lines().any(|l| l == "pid=1"), || {
        format!("exec is PID 1:\n{text}")
    })?;

    let (child_stdio, _output) = stdio()?;
    let missing = init::exec(
        init_pid,
        &spec,
        &env(&create, &spec)?,
        &["nosuchcmd".to_owned()],
        &create.cgroup_procs,
        child_stdio,
    );
    let message = missing.err().map(|e| e.to_string()).unwrap_or_default();
    check(
        message == r#"exec: "nosuchcmd": executable file not found in $PATH"#,
        || format!("exec of a missing command said {message:?}"),
    )
}

fn missing_command_fails_at_start(fixture: &Fixture) -> Result {
    for (args, expected) in [
        (
            ["nosuchcmd"],
            r#"exec: "nosuchcmd": executable file not found in $PATH"#,
        ),
        (["/bin/noexec"], r#"exec: "/bin/noexec": permission denied"#),
    ] {
        let (create, spec) = fixture.create(&args)?;
        let (child_stdio, _output) = stdio()?;
        let created = init::create(&create, &spec, child_stdio, |_, _| Ok(()))
            .map_err(|e| format!("create: {e}"))?;
        let pid = created.pid;
        let message = created.start().err().map(|e| e.to_string());
        let status = waitpid(pid, None).map_err(|e| format!("waiting for {pid}: {e}"))?;
        check(message.as_deref() == Some(expected), || {
            format!("start of {args:?} said {message:?}")
        })?;
        check(status == WaitStatus::Exited(pid, 127), || {
            format!("the failed init ended {status:?}")
        })?;
    }
    Ok(())
}

fn bad_mount_fails_create_and_leaves_nothing(fixture: &Fixture) -> Result {
    let (create, mut spec) = fixture.create(&["sh"])?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(
        MountBuilder::default()
            .destination("/bad")
            .typ("nosuchfs")
            .source("nosuchfs")
            .build()
            .map_err(|e| e.to_string())?,
    );
    spec.set_mounts(Some(mounts));
    let (child_stdio, _output) = stdio()?;
    let message = init::create(&create, &spec, child_stdio, |_, _| Ok(()))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    check(message.starts_with("mounting nosuchfs at /bad: "), || {
        format!("create with a bad mount said {message:?}")
    })?;
    let procs = std::fs::read_to_string(fixture.cgroup.join("cgroup.procs")).unwrap_or_default();
    check(procs.trim().is_empty(), || {
        format!("processes left in the cgroup: {procs:?}")
    })?;
    reap_all()
}

fn cgroup_pids(fixture: &Fixture) -> Vec<i32> {
    std::fs::read_to_string(fixture.cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// `placed_by_crid` (the systemd driver): the forked init waits, outside
/// the cgroup, until `place` has put it there (this test plays crid and
/// writes the pids itself), and a holder keeps the cgroup until released.
/// A failed placement ends both and leaves nothing.
fn placed_init_waits_and_has_a_holder(fixture: &Fixture) -> Result {
    let (mut create, spec) = fixture.create(&["sh"])?;
    create.placed_by_crid = true;
    let (child_stdio, _output) = stdio()?;
    let mut seen = Err("place was not called".to_string());
    let mut created = init::create(&create, &spec, child_stdio, |child, holder| {
        let waiting = cgroup_pids(fixture);
        seen = check(!waiting.contains(&child.as_raw()), || {
            format!("the init joined before it was placed: {waiting:?}")
        })
        .and_then(|()| check(kill(holder, None).is_ok(), || "no holder runs".into()));
        for pid in [child, holder] {
            std::fs::write(fixture.cgroup.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    })
    .map_err(|e| format!("create: {e}"))?;
    seen?;
    let pid = created.pid;
    let holder = created.holder.take().ok_or("a placed init has no holder")?;
    let holder_pid = holder.pid;
    let members = cgroup_pids(fixture);
    let placed = check(
        members.contains(&pid.as_raw()) && members.contains(&holder_pid.as_raw()),
        || format!("init {pid} and holder {holder_pid} not both in {members:?}"),
    )
    .and_then(|()| holder_is_confined(holder_pid));
    drop(holder);
    let released = waitpid(holder_pid, None);
    drop(created);
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
    placed?;
    check(released == Ok(WaitStatus::Exited(holder_pid, 0)), || {
        format!("the released holder ended {released:?}")
    })?;

    let (create, spec) = {
        let (mut create, spec) = fixture.create(&["sh"])?;
        create.placed_by_crid = true;
        (create, spec)
    };
    let (child_stdio, _output) = stdio()?;
    let mut holder = None;
    let message = init::create(&create, &spec, child_stdio, |_, pid| {
        holder = Some(pid);
        Err(std::io::Error::other("no scope for you"))
    })
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    check(message == "no scope for you", || {
        format!("a failed placement said {message:?}")
    })?;
    let holder = holder.ok_or("place was not called")?;
    let ended = waitpid(holder, None);
    check(ended == Ok(WaitStatus::Exited(holder, 0)), || {
        format!("the holder of a failed create ended {ended:?}")
    })?;
    check(cgroup_pids(fixture).is_empty(), || {
        format!("processes left in the cgroup: {:?}", cgroup_pids(fixture))
    })?;
    reap_all()
}

/// The holder sits in the container's cgroup as pause sits in the pod's:
/// an empty root of its own, no capability, no privilege, one fd.
fn holder_is_confined(holder: Pid) -> Result {
    let proc = format!("/proc/{holder}");
    let root: Vec<_> = std::fs::read_dir(format!("{proc}/root"))
        .map_err(|e| format!("the holder's root: {e}"))?
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    check(root.is_empty(), || {
        format!("the holder's root holds {root:?}")
    })?;
    let fds = std::fs::read_dir(format!("{proc}/fd"))
        .map_err(|e| format!("the holder's fds: {e}"))?
        .count();
    check(fds == 1, || format!("the holder holds {fds} fds, not 1"))?;
    let status = std::fs::read_to_string(format!("{proc}/status"))
        .map_err(|e| format!("the holder's status: {e}"))?;
    for (key, wanted) in [
        ("CapPrm", "0000000000000000"),
        ("CapEff", "0000000000000000"),
        ("CapBnd", "0000000000000000"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "2"),
        ("Uid", "65535\t65535\t65535\t65535"),
    ] {
        let found = status_field(&status, key);
        check(found == wanted, || {
            format!("the holder's {key} is {found:?}, not {wanted:?}")
        })?;
    }
    Ok(())
}

/// Runs `script` in a container with `seccomp` and no_new_privs as given;
/// its output and how it ended.
fn run_filtered(
    fixture: &Fixture,
    script: &str,
    seccomp: Option<&LinuxSeccomp>,
    no_new_privs: bool,
) -> Result<(String, WaitStatus)> {
    let (create, mut spec) = fixture.create(&["sh", "-c", script])?;
    set_seccomp(&mut spec, seccomp, no_new_privs)?;
    let (child_stdio, output) = stdio()?;
    let created = init::create(&create, &spec, child_stdio, |_, _| Ok(()))
        .map_err(|e| format!("create: {e}"))?;
    let pid = created.pid;
    let started = created.start().map_err(|e| format!("start: {e}"));
    let text = started.and_then(|()| output.read_all());
    let status = waitpid(pid, None).map_err(|e| format!("waiting for {pid}: {e}"))?;
    Ok((text?, status))
}

fn set_seccomp(spec: &mut Spec, seccomp: Option<&LinuxSeccomp>, no_new_privs: bool) -> Result {
    spec.linux_mut()
        .as_mut()
        .ok_or("spec without linux")?
        .set_seccomp(seccomp.cloned());
    spec.process_mut()
        .as_mut()
        .ok_or("spec without process")?
        .set_no_new_privileges(Some(no_new_privs));
    Ok(())
}

/// A user namespace needs no capability, so only a filter can refuse
/// `unshare -U` to uid 1000: the unconfined run shows the kernel allows it.
const USERNS: &str = "unshare -U true 2>&1 && echo userns=ok || echo userns=refused";
const MKDIR: &str = "mkdir /dev/shm/d 2>&1 && echo mkdir=ok || echo mkdir=refused";

fn seccomp_filters_init_and_exec(fixture: &Fixture) -> Result {
    let caps = [
        Capability::Chown,
        Capability::Kill,
        Capability::NetBindService,
    ]
    .into_iter()
    .collect();
    let default = runtime_default(&caps).map_err(|e| format!("runtime_default: {e}"))?;
    let script = format!("{USERNS}; {MKDIR}; grep Seccomp: /proc/self/status");

    let (text, status) = run_filtered(fixture, &script, None, true)?;
    check(
        status.pid().is_some() && matches!(status, WaitStatus::Exited(_, 0)),
        || format!("unconfined run ended {status:?}:\n{text}"),
    )?;
    expect_line(&text, "userns=ok")?;
    expect_line(&text, "Seccomp:\t0")?;

    // Both load points: before setuid (no no_new_privs, so the filter
    // needs the init's CAP_SYS_ADMIN) and right before execve.
    for no_new_privs in [false, true] {
        let (text, status) = run_filtered(fixture, &script, Some(&default), no_new_privs)?;
        let context =
            || format!("runtime default, no_new_privs {no_new_privs}: {status:?}\n{text}");
        check(matches!(status, WaitStatus::Exited(_, 0)), context)?;
        for line in ["userns=refused", "mkdir=ok", "Seccomp:\t2"] {
            expect_line(&text, line).map_err(|e| format!("{e}\n({})", context()))?;
        }
        check(text.contains("Operation not permitted"), context)?;
    }

    let profile = fixture.dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86","SCMP_ARCH_X32"]}],
            "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .map_err(|e| format!("writing {}: {e}", profile.display()))?;
    let no_mkdir = localhost(&profile, &caps).map_err(|e| format!("localhost: {e}"))?;
    let (text, _) = run_filtered(fixture, MKDIR, Some(&no_mkdir), true)?;
    expect_line(&text, "mkdir=refused")?;
    check(text.contains("Operation not permitted"), || {
        format!("mkdir under the localhost profile:\n{text}")
    })?;

    // An exec into a filtered container gets the same filter.
    let (create, mut spec) = fixture.create(&["sleep", "1000"])?;
    set_seccomp(&mut spec, Some(&default), true)?;
    let (child_stdio, _output) = stdio()?;
    let created = init::create(&create, &spec, child_stdio, |_, _| Ok(()))
        .map_err(|e| format!("create: {e}"))?;
    let init_pid = created.pid;
    let checked = created
        .start()
        .map_err(|e| format!("start: {e}"))
        .and_then(|()| {
            let args: Vec<String> = ["sh", "-c", USERNS].map(str::to_owned).to_vec();
            let (child_stdio, output) = stdio()?;
            let pid = init::exec(
                init_pid,
                &spec,
                &env(&create, &spec)?,
                &args,
                &create.cgroup_procs,
                child_stdio,
            )
            .map_err(|e| format!("exec: {e}"))?;
            let text = output.read_all();
            waitpid(pid, None).map_err(|e| format!("waiting for exec {pid}: {e}"))?;
            expect_line(&text?, "userns=refused")
        });
    let _ = kill(init_pid, Signal::SIGKILL);
    let _ = waitpid(init_pid, None);
    checked
}

/// Kills and reaps every child still there; an error names them.
fn reap_all() -> Result {
    let mut left = Vec::new();
    loop {
        match waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                // Someone still runs: find it via our children list.
                let children = std::fs::read_to_string(format!(
                    "/proc/self/task/{}/children",
                    std::process::id()
                ))
                .unwrap_or_default();
                for pid in children.split_whitespace().filter_map(|p| p.parse().ok()) {
                    left.push(pid);
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                if children.trim().is_empty() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    left.push(pid.as_raw());
                }
            }
            Err(_) => break,
        }
    }
    check(left.is_empty(), || format!("processes were left: {left:?}"))
}
