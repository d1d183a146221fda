//! What the tests that drive the real crid-monitor binary share: a pod
//! (a monitor and its pause, killed if a test fails half-way), busybox
//! containers, test cgroups, and waits.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, Spec};
use proto::monitor::{
    CgroupView, ContainerCreate, LogFile, MonitorConfig, MonitorRequest, MonitorResponse,
    NewNamespaces, PROTOCOL_VERSION,
};
use runtime::MonitorClient;
use runtime::spec::{ContainerSpec, ImageConfigView, ResolvedUser, build_spec};

pub const ALL: NewNamespaces = NewNamespaces {
    net: true,
    ipc: true,
    uts: true,
    pid: true,
};

pub fn monitor_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_crid-monitor"))
}

pub fn config(namespaces: NewNamespaces) -> MonitorConfig {
    MonitorConfig {
        pod_id: "test-pod".into(),
        namespaces,
        user_namespace: None,
        hostname: Some("crid-test-host".into()),
        sysctls: vec![],
        cgroup_procs: vec![],
        protocol: PROTOCOL_VERSION,
    }
}

pub fn proc_text(pid: i32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

/// Kills a started monitor and its pause when a test ends, also when it
/// fails half-way, so no failed run leaves processes behind.
pub struct Cleanup(pub runtime::StartedMonitor);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in [self.0.pause_pid, self.0.monitor_pid] {
            // Only if the pid is still one of ours (pause is a fork of the
            // monitor, so both carry crid-monitor's command line).
            if proc_text(pid, "cmdline").contains("crid-monitor") {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Starts the monitor of a pod in `pod_dir`: its client, its pids, and
/// the guard that kills it (and its pause) when the test ends.
pub async fn start_monitor(
    pod_dir: &Path,
    config: &MonitorConfig,
) -> (MonitorClient, runtime::StartedMonitor, Cleanup) {
    let client = MonitorClient::new(pod_dir);
    let started = client
        .start(monitor_binary(), config)
        .await
        .expect("start monitor");
    (client, started, Cleanup(started))
}

/// Asks the monitor to shut down and waits until it and its pause are gone.
pub async fn shut_down(client: &MonitorClient, started: runtime::StartedMonitor) {
    assert_eq!(
        client
            .request(&MonitorRequest::Shutdown)
            .await
            .expect("shutdown"),
        MonitorResponse::ShuttingDown
    );
    wait_gone(started.pause_pid);
    wait_gone(started.monitor_pid);
}

/// Waits (bounded) until `pid` is gone or a zombie nobody will ask about.
pub fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let state = proc_text(pid, "stat");
        if state.is_empty()
            || state
                .split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("process {pid} still running");
}

/// A cgroup of the test's own in a v1 hierarchy (`pids`, `memory`),
/// removed on drop (its processes are gone by then).
pub struct TestCgroup(pub PathBuf);

impl TestCgroup {
    pub fn new(hierarchy: &str, name: &str) -> TestCgroup {
        let dir = Path::new("/sys/fs/cgroup")
            .join(hierarchy)
            .join(format!("crid-monitor-test-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("create {} (needs root, cgroup v1): {e}", dir.display()));
        TestCgroup(dir)
    }

    pub fn procs(&self) -> PathBuf {
        self.0.join("cgroup.procs")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // A killed process leaves its cgroup a moment after its parent
        // reaped it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Gives a container UTS, IPC and network namespaces of its own, so a
/// test touches nothing of the host's.
pub fn own_namespaces(spec: &mut Spec) -> Result<(), String> {
    let linux = spec.linux_mut().as_mut().ok_or("spec without linux")?;
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    for typ in [
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Network,
    ] {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    linux.set_namespaces(Some(namespaces));
    Ok(())
}

/// A busybox rootfs and `config.json` in `dir/<id>`, and the create crid
/// would send for it: its own UTS, IPC, network and PID namespaces (nothing
/// of the host's is touched), output into `dir/<id>.log`.
pub fn busybox_container(dir: &Path, id: &str, args: &[&str]) -> ContainerCreate {
    let bundle = dir.join(id);
    let rootfs = bundle.join("rootfs");
    for sub in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(sub)).expect("rootfs dirs");
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("/bin/busybox (apt-get install busybox-static)");
    for applet in ["sh", "sleep", "tail", "echo", "head", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("applet");
    }
    let container = ContainerSpec {
        command: args.iter().map(|s| (*s).to_owned()).collect(),
        working_dir: "/".into(),
        ..ContainerSpec::default()
    };
    let user = ResolvedUser {
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        username: None,
        home: None,
    };
    let mut spec =
        build_spec(&container, &ImageConfigView::default(), &rootfs, &user).expect("build_spec");
    own_namespaces(&mut spec).expect("namespaces");
    // crid's default NOFILE limit may be above what the test runs with.
    if let Some(process) = spec.process_mut().as_mut() {
        process.set_rlimits(None);
    }
    spec.save(bundle.join("config.json")).expect("config.json");
    ContainerCreate {
        id: id.into(),
        bundle,
        env_file: false,
        cgroup_procs: vec![],
        placed_by_crid: false,
        oom_events: None,
        cgroup_view: CgroupView::V1 {
            hierarchies: vec![],
        },
        log: Some(LogFile {
            directory: dir.to_path_buf(),
            relative: format!("{id}.log").into(),
        }),
        log_path: Some(dir.join(format!("{id}.log"))),
        stdin: false,
        stdin_once: false,
        tty: false,
    }
}

/// Creates and starts `create`'s container; its start time.
pub async fn run(client: &MonitorClient, create: ContainerCreate) -> i64 {
    let id = create.id.clone();
    match client
        .request(&MonitorRequest::CreateContainer(create))
        .await
        .expect("create")
    {
        MonitorResponse::Created { .. } => {}
        other => panic!("create answered {other:?}"),
    }
    match client
        .request(&MonitorRequest::StartContainer { id })
        .await
        .expect("start")
    {
        MonitorResponse::Started { started_at } => started_at,
        other => panic!("start answered {other:?}"),
    }
}
