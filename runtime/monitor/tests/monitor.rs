//! The real crid-monitor binary, as root: pause in new namespaces, process
//! names, PID 1, no inherited fds, hostname and sysctls, status, shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{
    ALL, TestCgroup, config, monitor_binary, proc_text, shut_down, start_monitor, wait_gone,
};
use e2e::{nsenter, status_field};
use proto::monitor::{ExitStatus, MonitorRequest, MonitorResponse, NewNamespaces};
use runtime::MonitorClient;

fn ns_link(pid: &str, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn pause_runs_in_new_namespaces_as_pid_1_under_a_detached_monitor() {
    let pod_dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(ALL);
    config.sysctls = vec![("net.ipv4.ip_unprivileged_port_start".into(), "80".into())];
    let cgroup = TestCgroup::new("pids", "born");
    config.cgroup_procs = vec![cgroup.procs()];
    let (client, started, _cleanup) = start_monitor(pod_dir.path(), &config).await;
    let (monitor, pause) = (started.monitor_pid, started.pause_pid);

    assert_eq!(proc_text(monitor, "comm").trim(), "crid-monitor");
    // Born in the pod's cgroup: the launcher joined it before forking.
    let members = std::fs::read_to_string(cgroup.procs()).expect("cgroup.procs");
    for pid in [monitor, pause] {
        assert!(
            members.lines().any(|line| line == pid.to_string()),
            "{pid} not in the cgroup: {members}"
        );
    }
    assert_eq!(proc_text(pause, "comm").trim(), "pause");
    // Detached: its own session, not our child.
    assert_eq!(
        nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(monitor)))
            .expect("getsid")
            .as_raw(),
        monitor
    );
    assert_ne!(nix::unistd::getppid().as_raw(), monitor);
    let ppid: i32 = proc_text(monitor, "stat")
        .split(") ")
        .nth(1)
        .and_then(|s| s.split(' ').nth(1))
        .and_then(|p| p.parse().ok())
        .expect("ppid");
    assert_ne!(
        ppid,
        std::process::id() as i32,
        "the monitor is still the test's child"
    );
    // pause's parent is the monitor (sub-reaper), also with a new PID ns.
    let pause_ppid: i32 = proc_text(pause, "stat")
        .split(") ")
        .nth(1)
        .and_then(|s| s.split(' ').nth(1))
        .and_then(|p| p.parse().ok())
        .expect("ppid");
    assert_eq!(pause_ppid, monitor);

    for ns in ["net", "ipc", "uts", "pid"] {
        assert_ne!(
            ns_link(&pause.to_string(), ns),
            ns_link("self", ns),
            "{ns} namespace not new"
        );
    }
    // Confined: a mount namespace of its own with an empty read-only
    // root, nothing held, no privilege, nothing of crid's environment.
    assert_ne!(
        ns_link(&pause.to_string(), "mnt"),
        ns_link("self", "mnt"),
        "pause is in the host's mount namespace"
    );
    let root = format!("/proc/{pause}/root");
    let entries: Vec<_> = std::fs::read_dir(&root)
        .expect("pause's root")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(entries.is_empty(), "pause's root is not empty: {entries:?}");
    let written = std::fs::write(format!("{root}/x"), "x").expect_err("pause's root is writable");
    assert_eq!(written.raw_os_error(), Some(libc::EROFS), "{written}");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pause}/cwd")).expect("cwd"),
        std::path::Path::new("/")
    );
    assert_eq!(proc_text(pause, "environ"), "", "pause has an environment");
    let status = proc_text(pause, "status");
    for (key, wanted) in [
        ("CapInh", "0000000000000000"),
        ("CapPrm", "0000000000000000"),
        ("CapEff", "0000000000000000"),
        ("CapBnd", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "2"),
        ("Uid", "65535\t65535\t65535\t65535"),
        ("Gid", "65535\t65535\t65535\t65535"),
        ("Groups", ""),
    ] {
        assert_eq!(status_field(&status, key), wanted, "pause's {key}");
    }
    let nspid = status_field(&status, "NSpid");
    assert!(
        nspid.ends_with("\t1"),
        "pause is not PID 1 in its namespace: {nspid}"
    );

    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pause}/fd"))
        .expect("fds")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(fds.is_empty(), "pause holds descriptors: {fds:?}");

    assert_eq!(nsenter(pause, "-u", &["hostname"]), "crid-test-host");
    // lo is up without any CNI plugin.
    // (netlink, not /sys/class/net: sysfs shows the netns that mounted it)
    let lo = nsenter(pause, "-n", &["ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("<LOOPBACK,UP"), "lo is down: {lo}");
    assert_eq!(
        nsenter(
            pause,
            "-n",
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]
        ),
        "80"
    );

    match client
        .request(&MonitorRequest::Status)
        .await
        .expect("status")
    {
        MonitorResponse::Status {
            pause_pid,
            pause_exit,
        } => {
            assert_eq!(pause_pid, pause);
            assert_eq!(pause_exit, None);
        }
        other => panic!("unexpected {other:?}"),
    }

    shut_down(&client, started).await;
    assert!(
        !pod_dir.path().join(proto::monitor::SOCKET_FILE).exists(),
        "socket left"
    );
}

#[tokio::test]
async fn host_namespaces_are_kept_when_not_asked_for() {
    let pod_dir = tempfile::tempdir().expect("tempdir");
    let only_ipc = NewNamespaces {
        ipc: true,
        ..NewNamespaces::default()
    };
    let (client, started, _cleanup) = start_monitor(pod_dir.path(), &config(only_ipc)).await;
    let pause = started.pause_pid.to_string();
    assert_ne!(ns_link(&pause, "ipc"), ns_link("self", "ipc"));
    for ns in ["net", "uts", "pid"] {
        assert_eq!(
            ns_link(&pause, ns),
            ns_link("self", ns),
            "{ns} should be the host's"
        );
    }
    shut_down(&client, started).await;
}

#[tokio::test]
async fn a_pause_killed_from_outside_is_reported() {
    let pod_dir = tempfile::tempdir().expect("tempdir");
    let (client, started, _cleanup) = start_monitor(pod_dir.path(), &config(ALL)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(started.pause_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client
            .request(&MonitorRequest::Status)
            .await
            .expect("status")
        {
            MonitorResponse::Status {
                pause_exit: Some(exit),
                ..
            } => {
                assert_eq!(exit, ExitStatus::Signaled(9));
                break;
            }
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(10)).await,
            other => panic!("pause death not reported: {other:?}"),
        }
    }
    client
        .request(&MonitorRequest::Shutdown)
        .await
        .expect("shutdown");
    wait_gone(started.monitor_pid);
}

#[tokio::test]
async fn a_bad_sysctl_fails_the_start_and_leaves_no_process() {
    let pod_dir = tempfile::tempdir().expect("tempdir");
    let client = MonitorClient::new(pod_dir.path());
    let mut config = config(ALL);
    config.sysctls = vec![("net.ipv4.crid_no_such_sysctl".into(), "1".into())];
    let error = client
        .start(monitor_binary(), &config)
        .await
        .expect_err("bad sysctl");
    assert!(
        error.to_string().contains("net.ipv4.crid_no_such_sysctl"),
        "{error}"
    );
    // The monitor that failed exits; give it a moment, then nothing of this
    // pod runs. Its argv names no path: the monitor shows the pod dir in
    // its cwd or its log's fd, its forks are in its session.
    let needle = pod_dir.path().display().to_string();
    let mentions = |link: std::path::PathBuf| {
        std::fs::read_link(link).is_ok_and(|target| target.to_string_lossy().contains(&needle))
    };
    let session = |pid: i32| {
        let stat = proc_text(pid, "stat");
        let fields = stat.rsplit_once(") ").map(|(_, fields)| fields.to_string());
        // state, ppid, pgrp, session
        fields.and_then(|fields| fields.split_whitespace().nth(3)?.parse::<i32>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids: Vec<i32> = std::fs::read_dir("/proc")
            .expect("proc")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| u32::try_from(pid).is_ok_and(|pid| pid != std::process::id()))
            .collect();
        let monitors: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|&pid| {
                mentions(format!("/proc/{pid}/cwd").into())
                    || std::fs::read_dir(format!("/proc/{pid}/fd"))
                        .is_ok_and(|fds| fds.flatten().any(|fd| mentions(fd.path())))
            })
            .collect();
        let left: Vec<String> = pids
            .into_iter()
            .filter(|&pid| {
                monitors.contains(&pid)
                    || session(pid).is_some_and(|sid| monitors.contains(&sid))
                    || proc_text(pid, "cmdline").contains(&needle)
            })
            .map(|pid| format!("{pid} {}", proc_text(pid, "comm").trim()))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left running: {left:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn a_request_of_a_newer_crid_is_refused_not_dropped() {
    use tokio::io::AsyncWriteExt;
    let pod_dir = tempfile::tempdir().expect("tempdir");
    let (client, started, _cleanup) = start_monitor(pod_dir.path(), &config(ALL)).await;
    let (_dir, socket) =
        runtime::wire::short_path(pod_dir.path(), proto::monitor::SOCKET_FILE).expect("socket");
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    let unknown = br#"{"frobnicate":{"id":"x"}}"#;
    let mut frame = u32::try_from(unknown.len())
        .expect("length")
        .to_be_bytes()
        .to_vec();
    frame.extend_from_slice(unknown);
    stream.write_all(&frame).await.expect("write");
    match runtime::wire::read_frame_async::<MonitorResponse>(&mut stream)
        .await
        .expect("an answer, not a dropped connection")
    {
        MonitorResponse::Error { kind, message } => {
            assert_eq!(kind, proto::monitor::ErrorKind::InvalidRequest);
            assert!(message.contains("frobnicate"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    shut_down(&client, started).await;
}

#[tokio::test]
async fn pause_makes_the_pods_namespaces_inside_a_mapped_user_namespace() {
    use proto::monitor::{IdMapping, UserNamespaceMappings};
    let pod_dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(ALL);
    // kubelet's shape: one range per kind, root first, 65536 long.
    let (uid_base, gid_base) = (3_276_800u32, 3_342_336u32);
    config.user_namespace = Some(UserNamespaceMappings {
        uids: IdMapping {
            container_id: 0,
            host_id: uid_base,
            length: 65536,
        },
        gids: IdMapping {
            container_id: 0,
            host_id: gid_base,
            length: 65536,
        },
    });
    // A net sysctl and an IPC one: writable by the namespaces' own root.
    config.sysctls = vec![
        ("net.ipv4.ip_unprivileged_port_start".into(), "80".into()),
        ("kernel.shmmni".into(), "1024".into()),
    ];
    let (client, started, _cleanup) = start_monitor(pod_dir.path(), &config).await;
    let pause = started.pause_pid.to_string();

    assert_ne!(ns_link(&pause, "user"), ns_link("self", "user"));
    let words = |text: String| {
        text.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words(proc_text(started.pause_pid, "uid_map")),
        ["0", &uid_base.to_string(), "65536"]
    );
    assert_eq!(
        words(proc_text(started.pause_pid, "gid_map")),
        ["0", &gid_base.to_string(), "65536"]
    );
    // setgroups stays allowed: containers set their groups.
    assert_eq!(proc_text(started.pause_pid, "setgroups").trim(), "allow");
    // Still confined as 65535, now the pod's 65535: unprivileged outside.
    let status = proc_text(started.pause_pid, "status");
    let expected_uid = (uid_base + 65535).to_string();
    assert_eq!(
        status_field(&status, "Uid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        [expected_uid.as_str(); 4]
    );
    let expected_gid = (gid_base + 65535).to_string();
    assert_eq!(
        status_field(&status, "Gid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        [expected_gid.as_str(); 4]
    );
    for ns in ["net", "ipc", "uts", "pid"] {
        assert_ne!(ns_link(&pause, ns), ns_link("self", ns), "{ns} not new");
    }
    // Made inside it: their sysctls are written by the namespace's root
    // (an IPC sysctl only by that uid, not by the host's root).
    assert_eq!(
        nsenter(
            &pause,
            "-n",
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]
        ),
        "80"
    );
    assert_eq!(
        nsenter(&pause, "-i", &["cat", "/proc/sys/kernel/shmmni"]),
        "1024"
    );
    shut_down(&client, started).await;
}
