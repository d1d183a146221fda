//! The real crid-monitor never blocks on one container or one client:
//! while a create waits at `Place` for crid (which the test plays, through
//! the real MonitorClient, and holds back) and another client has sent
//! only part of its request, another container is created, started, its
//! output drained into its log, its exit reaped, and requests are
//! answered. Then the held create goes on, one whose placement fails and
//! one removed half-way leave no process, and the slow client's request
//! is answered.

mod common;

use std::time::Duration;

use common::{ALL, busybox_container, config, run, shut_down, start_monitor, wait_gone};
use proto::monitor::{ExitStatus, MonitorRequest, MonitorResponse};
use runtime::MonitorClient;
use runtime::wire::Framing;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// Starts a placed create of `id` on its own task; returns the pids the
/// monitor asks to place, the sender that lets crid answer (`Ok`: placed,
/// `Err`: placement failed) and the task with the create's answer.
async fn held_create(
    client: &MonitorClient,
    dir: &std::path::Path,
    id: &str,
) -> (
    Vec<i32>,
    oneshot::Sender<Result<(), String>>,
    tokio::task::JoinHandle<Result<Result<MonitorResponse, String>, runtime::MonitorError>>,
) {
    let mut create = busybox_container(dir, id, &["sleep", "1000"]);
    create.placed_by_crid = true;
    let (pids_tx, pids_rx) = oneshot::channel();
    let (answer_tx, answer_rx) = oneshot::channel::<Result<(), String>>();
    let client = client.clone();
    let task = tokio::spawn(async move {
        client
            .request_placing(
                &MonitorRequest::CreateContainer(create),
                async move |pids| {
                    let _ = pids_tx.send(pids);
                    answer_rx.await.map_err(|e| e.to_string())?
                },
            )
            .await
    });
    let pids = tokio::time::timeout(Duration::from_secs(30), pids_rx)
        .await
        .expect("no Place within 30 s")
        .expect("the create ended before Place");
    (pids, answer_tx, task)
}

/// The ids of the containers the monitor knows, in its order.
async fn container_ids(client: &MonitorClient) -> Vec<String> {
    match client
        .request(&MonitorRequest::Containers)
        .await
        .expect("containers")
    {
        MonitorResponse::Containers(states) => states.into_iter().map(|s| s.id).collect(),
        other => panic!("expected Containers, got {other:?}"),
    }
}

#[tokio::test]
async fn a_create_waiting_for_placement_or_a_slow_client_holds_nothing_else_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pod_dir = dir.path().join("pod");
    std::fs::create_dir(&pod_dir).expect("pod dir");
    let (client, started, _cleanup) = start_monitor(&pod_dir, &config(ALL)).await;

    // A client that sends the first bytes of its request, then nothing
    // for a while.
    let (_dir_handle, socket) =
        runtime::wire::short_path(&pod_dir, proto::monitor::SOCKET_FILE).expect("socket path");
    let mut slow = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    let status = runtime::wire::encode_frame(&MonitorRequest::Status, Framing::V1).expect("frame");
    slow.write_all(&status[..3]).await.expect("write");

    let (pids, placed, create) = held_create(&client, dir.path(), "held").await;
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in &pids {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} to place does not exist"
        );
    }

    // Meanwhile, another container lives its whole life.
    let talker = busybox_container(
        dir.path(),
        "talker",
        &["sh", "-c", "echo drained while held; exit 5"],
    );
    let log = talker.log.as_ref().expect("log").path();
    run(&client, talker).await;
    let wait = MonitorRequest::Wait {
        id: "talker".into(),
        timeout_ms: 20_000,
    };
    match client
        .request_within(&wait, Duration::from_secs(30))
        .await
        .expect("wait")
    {
        MonitorResponse::Exited(exit) => assert_eq!(exit.status, ExitStatus::Exited(5)),
        other => panic!("expected the exit, got {other:?}"),
    }
    let logged = std::fs::read_to_string(&log).expect("talker's log");
    assert!(logged.contains("stdout F drained while held"), "{logged:?}");
    assert_eq!(container_ids(&client).await, ["talker"]);
    // The held id is taken.
    let again = busybox_container(&dir.path().join("again"), "held", &["true"]);
    match client
        .request(&MonitorRequest::CreateContainer(again))
        .await
    {
        Err(runtime::MonitorError::Refused {
            kind: proto::monitor::ErrorKind::AlreadyExists,
            ..
        }) => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }

    // crid places it now: the create completes.
    placed.send(Ok(())).expect("the create is waiting");
    match create.await.expect("task").expect("create") {
        Ok(MonitorResponse::Created { pid }) => assert!(pid > 0),
        other => panic!("expected Created, got {other:?}"),
    }

    // A placement that fails ends that create, and its processes.
    let (pids, placed, create) = held_create(&client, dir.path(), "unplaced").await;
    placed
        .send(Err("no scope".into()))
        .expect("the create is waiting");
    match create.await.expect("task").expect("exchange") {
        Err(message) => assert_eq!(message, "no scope"),
        other => panic!("expected the placement's error, got {other:?}"),
    }
    for pid in pids {
        wait_gone(pid);
    }
    assert_eq!(container_ids(&client).await, ["held", "talker"]);

    // A create that crid gives up on and removes half-way ends, and its
    // processes with it.
    let (pids, placed, create) = held_create(&client, dir.path(), "removed").await;
    client
        .request(&MonitorRequest::RemoveContainer {
            id: "removed".into(),
        })
        .await
        .expect("remove");
    for pid in pids {
        wait_gone(pid);
    }
    placed
        .send(Err("gave up".into()))
        .expect("the create is waiting");
    assert!(
        !matches!(
            create.await.expect("task"),
            Ok(Ok(MonitorResponse::Created { .. }))
        ),
        "a removed create was created"
    );

    // The slow client's request, completed now, is answered.
    slow.write_all(&status[3..]).await.expect("write");
    match runtime::wire::read_frame_async::<MonitorResponse>(&mut slow)
        .await
        .expect("the slow client's answer")
    {
        MonitorResponse::Status { pause_pid, .. } => assert_eq!(pause_pid, started.pause_pid),
        other => panic!("expected Status, got {other:?}"),
    }

    for id in ["held", "talker"] {
        client
            .request(&MonitorRequest::RemoveContainer { id: id.into() })
            .await
            .expect("remove");
    }
    shut_down(&client, started).await;
}
