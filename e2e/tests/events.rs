//! crid follows what runs from the events its monitors push: List and
//! Status answer from memory, without asking any monitor, and a crid
//! restarted while containers exit catches up from the monitors.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto::cri;

/// SIGSTOPs a process and SIGCONTs it when dropped, also when the test
/// fails half-way.
struct Stopped(Pid);

impl Stopped {
    fn new(pid: i32) -> Stopped {
        let pid = Pid::from_raw(pid);
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP the monitor");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

fn state_of(listed: &[cri::Container], id: &str) -> cri::ContainerState {
    let container = listed
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("{id} not listed: {listed:?}"));
    cri::ContainerState::try_from(container.state).expect("a known state")
}

#[tokio::test]
async fn exits_and_oom_kills_are_reported_while_the_monitor_cannot_answer() {
    let world = World::new().await;
    let pod = world.pod("pushed").await;
    let failing = world.run(&pod, "seven", &["sh", "-c", "exit 7"]).await;
    let mut config = world.container_config("hog", &["tail", "/dev/zero"]);
    if let Some(linux) = config.linux.as_mut() {
        linux.resources = Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 8 * 1024 * 1024,
            ..Default::default()
        });
    }
    let hog = world.run_config(&pod, config).await;
    let sleeper = world.run(&pod, "sleeper", &["sleep", "1000"]).await;
    world.wait_exited(&failing).await;
    world.wait_exited(&hog).await;
    let (_, info) = world.pod_status(&pod).await;
    let monitor_pid =
        i32::try_from(info["monitorPid"].as_i64().expect("monitorPid")).expect("a pid");

    // A crid that asked the monitor now would wait for it and then report
    // the running container's end as unknown, and the pod as not ready.
    let stopped = Stopped::new(monitor_pid);
    // Nor can the exits come from the monitor's exit records.
    for id in [&failing, &hog] {
        let record = exit_record(&world, id);
        std::fs::remove_file(&record)
            .unwrap_or_else(|e| panic!("remove {}: {e}", record.display()));
    }
    let listed = world.list(None).await;
    assert_eq!(
        state_of(&listed, &failing),
        cri::ContainerState::ContainerExited
    );
    assert_eq!(
        state_of(&listed, &hog),
        cri::ContainerState::ContainerExited
    );
    assert_eq!(
        state_of(&listed, &sleeper),
        cri::ContainerState::ContainerRunning
    );
    let (status, _) = world.status(&failing).await;
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (7, "Error"),
        "{status:?}"
    );
    let (status, _) = world.status(&hog).await;
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (137, "OOMKilled"),
        "{status:?}"
    );
    let (status, _) = world.status(&sleeper).await;
    assert_eq!(
        status.state,
        i32::from(cri::ContainerState::ContainerRunning),
        "{status:?}"
    );
    let (status, _) = world.pod_status(&pod).await;
    assert_eq!(
        status.state,
        i32::from(cri::PodSandboxState::SandboxReady),
        "{status:?}"
    );
    let pods = world
        .rt()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .expect("list pods")
        .into_inner()
        .items;
    assert!(
        pods.iter()
            .any(|p| p.id == pod && p.state == i32::from(cri::PodSandboxState::SandboxReady)),
        "{pods:?}"
    );
    drop(stopped);
    world.finish(&[&pod]).await;
}

/// Waits (bounded) until the monitor has recorded the container's exit.
async fn wait_exit_record(world: &World, id: &str) {
    let record = exit_record(world, id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !record.exists() {
        assert!(Instant::now() < deadline, "{id} did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn exits_while_crid_is_down_are_reported_after_it_restarts() {
    let mut world = World::new().await;
    let pod = world.pod("downtime").await;
    let gates = tempfile::tempdir().expect("gate dir");
    let mut ids = Vec::new();
    for (name, code) in [("five", 5), ("three", 3)] {
        let fifo = gates.path().join(name);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let script = format!("read line < /gates/{name}; exit {code}");
        let mut config = world.container_config(name, &["sh", "-c", &script]);
        config.mounts = vec![cri::Mount {
            container_path: "/gates".into(),
            host_path: gates.path().display().to_string(),
            ..Default::default()
        }];
        let id = world.run_config(&pod, config).await;
        ids.push((id, fifo, code));
    }
    for (id, _, _) in &ids {
        let (status, _) = world.status(id).await;
        assert_eq!(
            status.state,
            i32::from(cri::ContainerState::ContainerRunning),
            "{status:?}"
        );
    }

    world.crid.stop_with(Signal::SIGKILL).await;
    for (id, fifo, _) in &ids {
        release(fifo).await;
        wait_exit_record(&world, id).await;
    }
    world.crid = world.env.start().await;

    let listed = world.list(None).await;
    for (id, _, code) in &ids {
        assert_eq!(
            state_of(&listed, id),
            cri::ContainerState::ContainerExited,
            "{id}"
        );
        let (status, _) = world.status(id).await;
        assert_eq!(
            (status.exit_code, status.reason.as_str()),
            (*code, "Error"),
            "{status:?}"
        );
        assert!(status.finished_at >= status.started_at, "{status:?}");
    }
    let (status, _) = world.pod_status(&pod).await;
    assert_eq!(
        status.state,
        i32::from(cri::PodSandboxState::SandboxReady),
        "{status:?}"
    );
    world.finish(&[&pod]).await;
}
