//! The real crid-monitor's pushed events, as root: a subscriber sees a
//! container start and exit with its status, an OOM kill, and pause's
//! death; a later subscriber's snapshot says the same; exec output comes
//! back whole in version 2 frames.

mod common;

use std::time::Duration;

use common::{ALL, TestCgroup, busybox_container, config, run, start_monitor, wait_gone};
use proto::monitor::{
    ContainerExit, ExitStatus, MonitorEvent, MonitorRequest, MonitorResponse, PROTOCOL_VERSION,
};
use runtime::client::Subscription;

/// The next event; a monitor that pushes nothing fails the test, not hangs it.
async fn next(subscription: &mut Subscription) -> MonitorEvent {
    tokio::time::timeout(Duration::from_secs(30), subscription.next())
        .await
        .expect("no event within 30 s")
        .expect("subscription ended")
}

async fn exited(subscription: &mut Subscription, id: &str) -> ContainerExit {
    match next(subscription).await {
        MonitorEvent::ContainerExited { id: exited, exit } if exited == id => exit,
        other => panic!("expected the exit of {id}, got {other:?}"),
    }
}

#[tokio::test]
async fn starts_exits_oom_kills_and_pause_deaths_are_pushed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pod_dir = dir.path().join("pod");
    std::fs::create_dir(&pod_dir).expect("pod dir");
    let (client, started, _cleanup) = start_monitor(&pod_dir, &config(ALL)).await;
    assert_eq!(client.hello().await.expect("hello"), PROTOCOL_VERSION);

    let mut events = client.subscribe().await.expect("subscribe");
    let snapshot = events.snapshot().clone();
    assert_eq!(snapshot.version, PROTOCOL_VERSION);
    assert_eq!(snapshot.pause_pid, started.pause_pid);
    assert_eq!(snapshot.pause_exit, None);
    assert!(snapshot.containers.is_empty(), "{snapshot:?}");
    // A second subscriber that never reads must not hold anything up.
    let _idle = client.subscribe().await.expect("subscribe");

    // Exit code 3.
    let three = busybox_container(dir.path(), "three", &["sh", "-c", "exit 3"]);
    let started_at = run(&client, three).await;
    assert_eq!(
        next(&mut events).await,
        MonitorEvent::ContainerStarted {
            id: "three".into(),
            started_at
        }
    );
    let exit = exited(&mut events, "three").await;
    assert_eq!(exit.status, ExitStatus::Exited(3));
    assert!(!exit.oom_killed);
    assert!(exit.finished_at >= started_at);

    // Over its memory limit: OOM-killed, and said so.
    let memory = TestCgroup::new("memory", "oom");
    let limit = (8 * 1024 * 1024).to_string();
    std::fs::write(memory.0.join("memory.limit_in_bytes"), &limit).expect("memory limit");
    let memsw = memory.0.join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        std::fs::write(&memsw, &limit).expect("memory+swap limit");
    }
    let mut hog = busybox_container(dir.path(), "hog", &["tail", "/dev/zero"]);
    hog.cgroup_procs = vec![memory.procs()];
    hog.oom_events = Some(memory.0.join("memory.oom_control"));
    let started_at = run(&client, hog).await;
    assert_eq!(
        next(&mut events).await,
        MonitorEvent::ContainerStarted {
            id: "hog".into(),
            started_at
        }
    );
    let exit = exited(&mut events, "hog").await;
    assert_eq!(exit.status, ExitStatus::Signaled(9));
    assert!(exit.oom_killed, "{exit:?}");

    // Exec output, 1 MiB and not valid UTF-8, crosses whole.
    let sleeper = busybox_container(dir.path(), "sleeper", &["sleep", "1000"]);
    run(&client, sleeper).await;
    assert!(matches!(
        next(&mut events).await,
        MonitorEvent::ContainerStarted { id, .. } if id == "sleeper"
    ));
    let exec = MonitorRequest::Exec {
        id: "sleeper".into(),
        args: vec![
            "sh".into(),
            "-c".into(),
            "head -c 1048576 /dev/zero; printf '\\377' >&2".into(),
        ],
        timeout_ms: 30_000,
    };
    match client.request(&exec).await.expect("exec") {
        MonitorResponse::ExecResult {
            stdout,
            stderr,
            exit,
        } => {
            assert_eq!(exit, Some(ExitStatus::Exited(0)));
            assert_eq!(stdout.len(), 1024 * 1024);
            assert!(stdout.iter().all(|&b| b == 0));
            assert_eq!(stderr, [0xff]);
        }
        other => panic!("exec answered {other:?}"),
    }
    // Removing a running container reports its exit too.
    client
        .request(&MonitorRequest::RemoveContainer {
            id: "sleeper".into(),
        })
        .await
        .expect("remove");
    assert_eq!(
        exited(&mut events, "sleeper").await.status,
        ExitStatus::Signaled(9)
    );

    // A later subscriber starts from where things stand.
    let late = client.subscribe().await.expect("subscribe again");
    let states = &late.snapshot().containers;
    let exit_of = |id: &str| {
        states
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.exit)
            .map(|e| (e.status, e.oom_killed))
    };
    assert_eq!(exit_of("three"), Some((ExitStatus::Exited(3), false)));
    assert_eq!(exit_of("hog"), Some((ExitStatus::Signaled(9), true)));
    assert_eq!(states.len(), 2, "{states:?}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(started.pause_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill pause");
    assert_eq!(
        next(&mut events).await,
        MonitorEvent::PauseExited {
            status: ExitStatus::Signaled(9)
        }
    );

    for id in ["three", "hog"] {
        client
            .request(&MonitorRequest::RemoveContainer { id: id.into() })
            .await
            .expect("remove");
    }
    client
        .request(&MonitorRequest::Shutdown)
        .await
        .expect("shutdown");
    // The subscription ends with the monitor.
    assert!(events.next().await.is_err());
    wait_gone(started.monitor_pid);
}
