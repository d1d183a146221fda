//! GetContainerEvents, as kubelet's evented PLEG follows it: CREATED,
//! STARTED, STOPPED and DELETED in order, to every subscriber, each with
//! the pod's status and its containers' statuses; STOPPED from the real
//! exit, also one that happened while crid was down or that a dead monitor
//! caused; a cancelled subscription is let go. (A subscriber that falls
//! behind is cut off: `container_events`' unit tests in cri-server, where
//! the ring can be small enough to overrun deterministically.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use proto::cri;
use proto::cri::ContainerEventType as Kind;
use tonic::Code;

type Events = tonic::Streaming<cri::ContainerEventResponse>;

/// How long any one event may take to come before the test gives up.
const EVENT_BOUND: Duration = Duration::from_secs(60);

async fn subscribe(world: &World) -> Events {
    world
        .rt()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .expect("subscribe")
        .into_inner()
}

/// The next event of container `id` (others' are skipped).
async fn next_of(events: &mut Events, id: &str) -> cri::ContainerEventResponse {
    loop {
        let event = tokio::time::timeout(EVENT_BOUND, events.message())
            .await
            .unwrap_or_else(|_| panic!("no event of {id} came"))
            .expect("the stream goes on")
            .expect("the stream does not end");
        if event.container_id == id {
            return event;
        }
    }
}

/// Events of `id` up to and with the first of `kind`.
async fn until(events: &mut Events, id: &str, kind: Kind) -> Vec<cri::ContainerEventResponse> {
    let mut seen = Vec::new();
    loop {
        let event = next_of(events, id).await;
        let last = event.container_event_type == i32::from(kind);
        seen.push(event);
        if last {
            return seen;
        }
    }
}

fn kinds(events: &[cri::ContainerEventResponse]) -> Vec<Kind> {
    events
        .iter()
        .map(|e| Kind::try_from(e.container_event_type).expect("a known kind"))
        .collect()
}

/// The event's status of container `id`.
fn status_in<'a>(event: &'a cri::ContainerEventResponse, id: &str) -> &'a cri::ContainerStatus {
    event
        .containers_statuses
        .iter()
        .find(|status| status.id == id)
        .unwrap_or_else(|| panic!("{id} not in the event: {event:?}"))
}

/// The event carries the pod, ready, as kubelet needs it (its metadata
/// names the pod).
fn assert_pod(event: &cri::ContainerEventResponse, pod: &str, name: &str) {
    let status = event
        .pod_sandbox_status
        .as_ref()
        .unwrap_or_else(|| panic!("no pod status: {event:?}"));
    assert_eq!(status.id, pod, "{event:?}");
    assert_eq!(
        status.metadata.as_ref().map(|m| m.name.as_str()),
        Some(name),
        "{event:?}"
    );
    assert_eq!(
        status.state(),
        cri::PodSandboxState::SandboxReady,
        "{event:?}"
    );
}

#[tokio::test]
async fn two_subscribers_see_a_containers_life_in_order_with_its_statuses() {
    let world = World::new().await;
    let pod = world.pod("evented").await;
    let mut subscribers = [subscribe(&world).await, subscribe(&world).await];
    // A container that lives on beside it shows in every event's list.
    let neighbour = world.run(&pod, "neighbour", &["sleep", "1000"]).await;
    let id = world
        .create(
            &pod,
            "cycle",
            world.container_config("cycle", &["sleep", "1000"]),
        )
        .await
        .expect("create");
    let mut times = Vec::new();
    let mut check = async |kind: Kind, subscribers: &mut [Events; 2]| {
        let mut seen = Vec::new();
        for events in subscribers.iter_mut() {
            let event = next_of(events, &id).await;
            assert_eq!(event.container_event_type(), kind, "{event:?}");
            assert_pod(&event, &pod, "evented");
            assert!(
                event.containers_statuses.iter().any(|s| s.id == neighbour),
                "{event:?}"
            );
            seen.push(event);
        }
        // Both subscribers got the same event.
        assert_eq!(seen[0], seen[1]);
        times.push(seen[0].created_at);
        seen.swap_remove(0)
    };

    let created = check(Kind::ContainerCreatedEvent, &mut subscribers).await;
    let status = status_in(&created, &id);
    assert_eq!(
        status.state(),
        cri::ContainerState::ContainerCreated,
        "{status:?}"
    );
    assert_eq!(
        status.metadata.as_ref().map(|m| m.name.as_str()),
        Some("cycle")
    );

    world.start(&id).await.expect("start");
    let started = check(Kind::ContainerStartedEvent, &mut subscribers).await;
    let status = status_in(&started, &id);
    assert_eq!(
        status.state(),
        cri::ContainerState::ContainerRunning,
        "{status:?}"
    );
    assert!(status.started_at > 0, "{status:?}");

    // PID 1 ignores SIGTERM: the grace of 0 kills it.
    world.stop(&id, 0).await;
    let stopped = check(Kind::ContainerStoppedEvent, &mut subscribers).await;
    let status = status_in(&stopped, &id);
    assert_eq!(
        status.state(),
        cri::ContainerState::ContainerExited,
        "{status:?}"
    );
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (137, "Error"),
        "{status:?}"
    );
    assert!(status.finished_at >= status.started_at, "{status:?}");

    world
        .rt()
        .await
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("remove");
    let deleted = check(Kind::ContainerDeletedEvent, &mut subscribers).await;
    assert!(
        deleted.containers_statuses.iter().all(|s| s.id != id),
        "{deleted:?}"
    );
    // Each event's time is when its statuses were read.
    assert!(times.windows(2).all(|t| t[0] <= t[1]), "{times:?}");
    assert!(times[0] > 0);
    drop(subscribers);
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn a_container_that_exits_by_itself_is_stopped_with_its_exit_code() {
    let world = World::new().await;
    let pod = world.pod("exiting").await;
    let mut events = subscribe(&world).await;
    let id = world.run(&pod, "three", &["sh", "-c", "exit 3"]).await;
    let seen = until(&mut events, &id, Kind::ContainerStoppedEvent).await;
    assert_eq!(
        kinds(&seen),
        [
            Kind::ContainerCreatedEvent,
            Kind::ContainerStartedEvent,
            Kind::ContainerStoppedEvent
        ]
    );
    let stopped = &seen[2];
    assert_pod(stopped, &pod, "exiting");
    let status = status_in(stopped, &id);
    assert_eq!(
        status.state(),
        cri::ContainerState::ContainerExited,
        "{status:?}"
    );
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (3, "Error"),
        "{status:?}"
    );
    drop(events);
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn an_exit_while_crid_was_down_is_stopped_once_it_is_back() {
    let mut world = World::new().await;
    let pod = world.pod("downtime").await;
    let gates = tempfile::tempdir().expect("gate dir");
    let fifo = gates.path().join("gate");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let mut config =
        world.container_config("four", &["sh", "-c", "read line < /gates/gate; exit 4"]);
    config.mounts = vec![cri::Mount {
        container_path: "/gates".into(),
        host_path: gates.path().display().to_string(),
        ..Default::default()
    }];
    let mut events = subscribe(&world).await;
    let id = world.run_config(&pod, config).await;
    until(&mut events, &id, Kind::ContainerStartedEvent).await;

    // A stopping crid ends its subscriptions (kubelet relists and comes
    // back), leaving the pod running.
    world.crid.stop_with(Signal::SIGTERM).await;
    let end = tokio::time::timeout(EVENT_BOUND, events.message())
        .await
        .expect("the stream ends with crid")
        .expect_err("an error ends it");
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    release(&fifo).await;
    let record = exit_record(&world, &id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !record.exists() {
        assert!(Instant::now() < deadline, "{id} did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    world.crid = world.env.start().await;

    // Subscribed after crid was back: the event was held for it.
    let mut events = subscribe(&world).await;
    let stopped = until(&mut events, &id, Kind::ContainerStoppedEvent).await;
    let stopped = stopped.last().expect("the STOPPED event");
    assert_pod(stopped, &pod, "downtime");
    let status = status_in(stopped, &id);
    assert_eq!(
        (status.state(), status.exit_code),
        (cri::ContainerState::ContainerExited, 4),
        "{status:?}"
    );
    drop(events);
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn a_container_its_monitors_death_ended_is_stopped() {
    let world = World::new().await;
    let pod = world.pod("orphaned").await;
    let sleeper = world.run(&pod, "sleeper", &["sleep", "1000"]).await;
    // Subscribed late: what was made before is held for it.
    let mut events = subscribe(&world).await;
    until(&mut events, &sleeper, Kind::ContainerStartedEvent).await;
    let (_, info) = world.pod_status(&pod).await;
    let monitor = info["monitorPid"].as_i64().expect("monitorPid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(monitor).expect("a pid")),
        Signal::SIGKILL,
    )
    .expect("kill the monitor");
    let stopped = next_of(&mut events, &sleeper).await;
    assert_eq!(
        stopped.container_event_type(),
        Kind::ContainerStoppedEvent,
        "{stopped:?}"
    );
    let status = status_in(&stopped, &sleeper);
    assert_eq!(
        (status.state(), status.exit_code, status.reason.as_str()),
        (cri::ContainerState::ContainerExited, 137, "Error"),
        "{status:?}"
    );
    assert!(status.message.contains("monitor"), "{status:?}");
    drop(events);
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn a_subscriber_that_goes_away_is_let_go() {
    const LET_GO: &str = "a container event subscription ended";
    let env = e2e::TestEnv::new();
    let mut crid = env.start().await;
    let mut rt = crid.runtime().await.expect("runtime client");
    let events = rt
        .get_container_events(cri::GetEventsRequest {})
        .await
        .expect("subscribe")
        .into_inner();
    assert!(!crid.log().contains(LET_GO), "{}", crid.log());
    // The client cancels its stream (the connection stays): crid's end of
    // it goes, with no event to send to notice it by.
    drop(events);
    // Waiting async: the client's connection task must run to send the
    // cancel.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !crid.log().contains(LET_GO) {
        assert!(
            Instant::now() < deadline,
            "crid did not let the cancelled subscription go:\n{}",
            crid.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rt.version(cri::VersionRequest::default())
        .await
        .expect("the connection still serves");
    crid.stop().await;
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
}

#[tokio::test]
async fn a_pods_sandbox_has_its_own_events_with_the_pods_id() {
    let world = World::new().await;
    let mut events = subscribe(&world).await;
    let pod = world.pod("sandboxed").await;
    let ran = until(&mut events, &pod, Kind::ContainerStartedEvent).await;
    assert_eq!(
        kinds(&ran),
        [Kind::ContainerCreatedEvent, Kind::ContainerStartedEvent]
    );
    for event in &ran {
        assert_pod(event, &pod, "sandboxed");
    }

    world.stop_pod(&pod).await;
    let stopped = next_of(&mut events, &pod).await;
    assert_eq!(stopped.container_event_type(), Kind::ContainerStoppedEvent);
    let status = stopped.pod_sandbox_status.as_ref().expect("pod status");
    assert_eq!(status.state(), cri::PodSandboxState::SandboxNotready);

    // Stopped already: only the removal is left (and makes the event).
    world.remove_pod(&pod).await;
    // kubelet's evented PLEG reads the pod's uid from the DELETED event's
    // status: it must be there although the pod is gone.
    let deleted = next_of(&mut events, &pod).await;
    assert_eq!(deleted.container_event_type(), Kind::ContainerDeletedEvent);
    let status = deleted.pod_sandbox_status.as_ref().expect("pod status");
    assert_eq!(status.id, pod);
    assert!(
        status.metadata.as_ref().is_some_and(|m| !m.uid.is_empty()),
        "{deleted:?}"
    );
    drop(events);
    world.finish(&[]).await;
}
