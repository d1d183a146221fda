//! CRI `GetContainerEvents`, which kubelet's evented PLEG follows: a
//! stream of CREATED, STARTED, STOPPED and DELETED events, each with the
//! pod's status and the statuses of the pod's containers as they are when
//! the event is made (as containerd fills them; a DELETED event's list no
//! longer has the container). A pod's sandbox has its own CREATED, STARTED,
//! STOPPED and DELETED, whose container id is the pod's id, as containerd
//! sends them: kubelet's evented PLEG drops a pod from its cache on its
//! sandbox's DELETED.
//!
//! One task ([`Emitter::run`]) turns the containers' changes
//! ([`Change`]: the container controller's own, and the exits the pods'
//! monitors report) into events, in the order the changes came on their one
//! channel, so each container's events are in order. It remembers how far
//! each container's events have gone and makes each event once: an exit
//! seen before StartContainer's answer was applied brings its STARTED
//! first, and a container that never started gets no STARTED.
//!
//! The [`EventHub`] gives each event to every subscriber through one bounded
//! ring: publishing never waits for a subscriber, and a subscriber that
//! falls more than the ring behind is ended with RESOURCE_EXHAUSTED
//! (kubelet then relists and subscribes again). Events made while nobody
//! subscribes (crid just restarted, kubelet not back yet) are held, at most
//! [`HOLD_MAX`] of them and for [`HOLD_FOR`], and handed to the next
//! subscriber, as containerd does: so the exits crid finds after a restart
//! reach kubelet. A held event is kept in its wire encoding: with nobody
//! subscribed (kubelet's evented PLEG is off by default) 100 pods hold
//! 400 events, which took 0.65 MiB as messages and take 0.19 MiB encoded.
//! Held events dropped to keep that bound end the next subscription with
//! RESOURCE_EXHAUSTED after the rest, so its client knows to relist.
//!
//! After a restart crid cannot tell which exits it reported before it went
//! down: every container found ended then gets a STOPPED (at least once;
//! kubelet's cache keeps a pod's status by the event's time, so a repeat
//! changes nothing there).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use prost::Message;
use proto::cri::{ContainerEventResponse, ContainerEventType, ContainerStatus, PodSandboxStatus};
use tokio::sync::broadcast;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::containers::ContainerController;
use crate::error::CridError;
use crate::live::Change;
use crate::object_status::{container_status_of, sandbox_status};
use crate::objects::{ContainerPhase, ContainerRecord, PodRecord};
use crate::pods::PodController;
use crate::records::RecordStore;
use crate::rpc::now_nanos;

/// How many events a subscriber may be behind before it is cut off.
pub const RING: usize = 1024;
/// How many events made while nobody subscribed are held for the next
/// subscriber, and for how long.
pub const HOLD_MAX: usize = 1024;
pub const HOLD_FOR: Duration = Duration::from_secs(5 * 60);

type Event = Arc<ContainerEventResponse>;
/// A held event, encoded.
type Held = Box<[u8]>;

/// Every subscriber's events.
pub struct EventHub {
    state: Mutex<HubState>,
    ring: usize,
    hold_max: usize,
    hold_for: Duration,
}

struct HubState {
    /// None once crid is stopping.
    sender: Option<broadcast::Sender<Event>>,
    /// Events made while nobody subscribed, with when.
    held: VecDeque<(Instant, Held)>,
    /// When the newest held event dropped for room was made.
    dropped_at: Option<Instant>,
}

impl HubState {
    fn expire(&mut self, now: Instant, hold_for: Duration) {
        let old = |at: &Instant| now.duration_since(*at) >= hold_for;
        while self.held.front().is_some_and(|(at, _)| old(at)) {
            self.held.pop_front();
        }
        if self.dropped_at.as_ref().is_some_and(old) {
            self.dropped_at = None;
        }
    }
}

impl Default for EventHub {
    fn default() -> EventHub {
        EventHub::new(RING, HOLD_MAX, HOLD_FOR)
    }
}

impl EventHub {
    pub fn new(ring: usize, hold_max: usize, hold_for: Duration) -> EventHub {
        let (sender, _) = broadcast::channel(ring);
        EventHub {
            state: Mutex::new(HubState {
                sender: Some(sender),
                held: VecDeque::new(),
                dropped_at: None,
            }),
            ring,
            hold_max,
            hold_for,
        }
    }

    // A panic while the lock was held leaves at worst an event more or
    // less: the state is used as is.
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives `event` to every subscriber, or holds it if there is none.
    /// Never waits.
    pub fn publish(&self, event: ContainerEventResponse) {
        let mut state = self.lock();
        let Some(sender) = &state.sender else {
            return;
        };
        // Fails only when nobody subscribes (the last one may have just
        // left): then the event is held.
        let Err(broadcast::error::SendError(event)) = sender.send(Arc::new(event)) else {
            return;
        };
        let now = Instant::now();
        state.expire(now, self.hold_for);
        if state.held.len() >= self.hold_max {
            state.held.pop_front();
            state.dropped_at = Some(now);
        }
        state
            .held
            .push_back((now, event.encode_to_vec().into_boxed_slice()));
    }

    /// A new subscriber: the events held for it, then every event made
    /// from now on.
    pub fn subscribe(&self) -> EventStream {
        let mut state = self.lock();
        state.expire(Instant::now(), self.hold_for);
        let backlog = std::mem::take(&mut state.held)
            .into_iter()
            .map(|(_, event)| event)
            .collect();
        let end = if state.dropped_at.take().is_some() {
            Some(CridError::ResourceExhausted(format!(
                "more than {} container events were made while nobody subscribed; \
                 the oldest were dropped: relist",
                self.hold_max
            )))
        } else {
            None
        };
        let live = state
            .sender
            .as_ref()
            .map(|sender| BroadcastStream::new(sender.subscribe()));
        let end = end.or_else(|| live.is_none().then(stopping));
        EventStream {
            backlog,
            end,
            live,
            ring: self.ring,
        }
    }

    /// crid is stopping: every subscription ends (UNAVAILABLE), so that
    /// the server's graceful stop does not wait for them.
    pub fn close(&self) {
        self.lock().sender = None;
    }

    #[cfg(test)]
    fn subscribers(&self) -> usize {
        self.lock()
            .sender
            .as_ref()
            .map_or(0, broadcast::Sender::receiver_count)
    }
}

fn stopping() -> CridError {
    CridError::Unavailable("crid is stopping: subscribe again once it is back".into())
}

/// One subscriber's events: what was held for it, then the live ones; it
/// ends with an error when the subscriber fell behind or crid stops.
/// Dropping it (the client went away) unsubscribes.
pub struct EventStream {
    backlog: VecDeque<Held>,
    /// The error that ends the stream once the backlog is sent.
    end: Option<CridError>,
    /// None once the stream ends.
    live: Option<BroadcastStream<Event>>,
    ring: usize,
}

impl Stream for EventStream {
    type Item = Result<ContainerEventResponse, tonic::Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(held) = this.backlog.pop_front() {
            match ContainerEventResponse::decode(&*held) {
                Ok(event) => return Poll::Ready(Some(Ok(event))),
                // crid encoded it itself, so it decodes; if it ever did
                // not, the stream ends telling its client to relist rather
                // than going on without it.
                Err(error) => {
                    this.backlog.clear();
                    this.end = Some(CridError::Internal(format!(
                        "a held container event cannot be decoded ({error}): relist"
                    )));
                }
            }
        }
        if let Some(error) = this.end.take() {
            this.live = None;
            return Poll::Ready(Some(Err(error.into())));
        }
        let Some(live) = this.live.as_mut() else {
            return Poll::Ready(None);
        };
        let error = match ready!(Pin::new(live).poll_next(cx)) {
            Some(Ok(event)) => return Poll::Ready(Some(Ok(ContainerEventResponse::clone(&event)))),
            Some(Err(BroadcastStreamRecvError::Lagged(missed))) => {
                tracing::info!(
                    missed,
                    "a container event subscriber fell behind; ending its stream"
                );
                CridError::ResourceExhausted(format!(
                    "this subscriber fell behind by more than {} container events \
                     ({missed} missed): relist and subscribe again",
                    this.ring
                ))
            }
            None => stopping(),
        };
        this.live = None;
        Poll::Ready(Some(Err(error.into())))
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        tracing::debug!("a container event subscription ended");
    }
}

/// How far a container's events have gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Created,
    Started,
    Stopped,
}

/// A pod as one event shows it.
struct Look {
    created_at: i64,
    pod: Option<PodSandboxStatus>,
    containers: Vec<ContainerStatus>,
}

/// Makes the events from the containers' changes.
pub struct Emitter {
    hub: Arc<EventHub>,
    pod_records: Arc<RecordStore<PodRecord>>,
    pods: Arc<PodController>,
    containers: Arc<ContainerController>,
    /// Each container crid knows, with its pod and how far its events have
    /// gone. Those there when crid started begin where their record says.
    stages: HashMap<String, (String, Stage)>,
}

impl Emitter {
    pub fn new(
        hub: Arc<EventHub>,
        pod_records: Arc<RecordStore<PodRecord>>,
        container_records: &RecordStore<ContainerRecord>,
        pods: Arc<PodController>,
        containers: Arc<ContainerController>,
    ) -> Emitter {
        let stages = container_records
            .all()
            .into_iter()
            .filter_map(|record| {
                let stage = match record.phase {
                    // Interrupted by a crash: rolled back at start.
                    ContainerPhase::Creating => return None,
                    ContainerPhase::Created => Stage::Created,
                    ContainerPhase::Started => Stage::Started,
                };
                Some((record.id.clone(), (record.pod_id.clone(), stage)))
            })
            .collect();
        Emitter {
            hub,
            pod_records,
            pods,
            containers,
            stages,
        }
    }

    /// Makes the events of `changes`, in order, until crid stops.
    pub async fn run(mut self, mut changes: UnboundedReceiver<Change>) {
        while let Some(change) = changes.recv().await {
            self.apply(change).await;
        }
    }

    async fn apply(&mut self, change: Change) {
        match change {
            Change::Created { pod_id, id } => {
                if self.stages.contains_key(&id) {
                    return;
                }
                let look = self.look(&pod_id, None).await;
                self.stages
                    .insert(id.clone(), (pod_id.clone(), Stage::Created));
                self.publish(ContainerEventType::ContainerCreatedEvent, &id, &look);
                // It may have moved on meanwhile.
                self.catch_up(&id, &look);
            }
            Change::Started { pod_id, id } | Change::Ended { pod_id, id } => {
                // Not known: its Created is still to come (and will catch
                // up), or it was removed.
                if !self.stages.contains_key(&id) {
                    return;
                }
                let look = self.look(&pod_id, None).await;
                self.catch_up(&id, &look);
            }
            Change::Removed { pod_id, id, pod } => {
                if self.stages.remove(&id).is_none() {
                    return;
                }
                let look = self.look(&pod_id, pod).await;
                self.publish(ContainerEventType::ContainerDeletedEvent, &id, &look);
            }
            Change::Recovered => self.recovered().await,
            Change::SandboxReady { pod_id } => {
                let look = self.look(&pod_id, None).await;
                self.publish(ContainerEventType::ContainerCreatedEvent, &pod_id, &look);
                self.publish(ContainerEventType::ContainerStartedEvent, &pod_id, &look);
            }
            Change::SandboxStopped { pod_id } => {
                let look = self.look(&pod_id, None).await;
                self.publish(ContainerEventType::ContainerStoppedEvent, &pod_id, &look);
            }
            Change::SandboxRemoved { pod } => {
                let pod_id = pod.id.clone();
                let look = self.look(&pod_id, Some(pod)).await;
                self.publish(ContainerEventType::ContainerDeletedEvent, &pod_id, &look);
            }
        }
    }

    /// Every container known is looked at once, a look per pod; those no
    /// longer there (rolled back at start) are forgotten.
    async fn recovered(&mut self) {
        let pods: BTreeSet<String> = self
            .stages
            .values()
            .map(|(pod_id, _)| pod_id.clone())
            .collect();
        for pod_id in pods {
            let look = self.look(&pod_id, None).await;
            let ids: Vec<String> = self
                .stages
                .iter()
                .filter(|(_, (pod, _))| *pod == pod_id)
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                if look.containers.iter().any(|status| status.id == id) {
                    self.catch_up(&id, &look);
                } else {
                    self.stages.remove(&id);
                }
            }
        }
    }

    /// The pod `pod_id` now; `fallback` is its record if the pod is gone.
    async fn look(&self, pod_id: &str, fallback: Option<Arc<PodRecord>>) -> Look {
        // Taken before the statuses are read: kubelet keeps a status as
        // at least as new as the event's time.
        let created_at = now_nanos();
        let pod = match self.pod_records.get(pod_id).or(fallback) {
            Some(record) => {
                let ready = self.pods.is_ready(&record).await;
                Some(sandbox_status(&record, ready))
            }
            None => None,
        };
        let containers = self
            .containers
            .list(|record| record.pod_id == pod_id)
            .await
            .iter()
            .map(|(record, observed)| container_status_of(record, observed))
            .collect();
        Look {
            created_at,
            pod,
            containers,
        }
    }

    /// The events that bring the container's to what `look` shows of it.
    fn catch_up(&mut self, id: &str, look: &Look) {
        let Some(status) = look.containers.iter().find(|status| status.id == id) else {
            // Removed meanwhile: its Removed follows.
            return;
        };
        let Some((_, stage)) = self.stages.get(id) else {
            return;
        };
        let mut stage = *stage;
        let target = match proto::cri::ContainerState::try_from(status.state) {
            Ok(proto::cri::ContainerState::ContainerRunning) => Stage::Started,
            Ok(proto::cri::ContainerState::ContainerExited) => Stage::Stopped,
            _ => return,
        };
        if stage < Stage::Started && status.started_at > 0 {
            self.publish(ContainerEventType::ContainerStartedEvent, id, look);
            stage = Stage::Started;
        }
        if target == Stage::Stopped && stage < Stage::Stopped {
            self.publish(ContainerEventType::ContainerStoppedEvent, id, look);
            stage = Stage::Stopped;
        }
        if let Some((_, known)) = self.stages.get_mut(id) {
            *known = stage;
        }
    }

    fn publish(&self, kind: ContainerEventType, id: &str, look: &Look) {
        tracing::debug!(
            container_id = id,
            event = kind.as_str_name(),
            "container event"
        );
        self.hub.publish(ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind.into(),
            created_at: look.created_at,
            pod_sandbox_status: look.pod.clone(),
            containers_statuses: look.containers.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    fn event(n: usize) -> ContainerEventResponse {
        ContainerEventResponse {
            container_id: format!("c{n}"),
            ..Default::default()
        }
    }

    fn ids(events: &[ContainerEventResponse]) -> Vec<String> {
        events.iter().map(|e| e.container_id.clone()).collect()
    }

    /// Every event the stream has ready now, and the error that ended it.
    async fn ready_events(
        stream: &mut EventStream,
    ) -> (Vec<ContainerEventResponse>, Option<tonic::Status>) {
        let mut events = Vec::new();
        loop {
            match tokio::time::timeout(Duration::ZERO, stream.next()).await {
                Ok(Some(Ok(event))) => events.push(event),
                Ok(Some(Err(status))) => return (events, Some(status)),
                Ok(None) => panic!("the stream ended without an error"),
                // Nothing more now (the timeout's zero wait).
                Err(_) => return (events, None),
            }
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_cut_off_and_the_others_go_on() {
        let hub = EventHub::new(4, 8, HOLD_FOR);
        let mut keeping_up = hub.subscribe();
        let mut lagging = hub.subscribe();
        assert_eq!(hub.subscribers(), 2);
        let mut seen = Vec::new();
        for n in 0..10 {
            hub.publish(event(n));
            let (events, end) = ready_events(&mut keeping_up).await;
            assert!(end.is_none(), "{end:?}");
            seen.extend(ids(&events));
        }
        assert_eq!(seen, (0..10).map(|n| format!("c{n}")).collect::<Vec<_>>());
        // Ten events into a ring of four: publishing never waited for it,
        // and its next read says it fell behind, then the stream ends.
        let (events, end) = ready_events(&mut lagging).await;
        assert!(events.is_empty(), "{events:?}");
        let end = end.expect("the lagging subscriber is told");
        assert_eq!(end.code(), tonic::Code::ResourceExhausted, "{end:?}");
        assert!(end.message().contains("fell behind"), "{end:?}");
        assert!(lagging.next().await.is_none());
        // Its receiver is gone with its end; the other one is still there.
        assert_eq!(hub.subscribers(), 1);
        hub.publish(event(10));
        let (events, _) = ready_events(&mut keeping_up).await;
        assert_eq!(ids(&events), ["c10"]);
        drop(keeping_up);
        assert_eq!(hub.subscribers(), 0);
    }

    #[tokio::test]
    async fn events_made_while_nobody_subscribed_go_to_the_next_subscriber() {
        let hub = EventHub::new(4, 8, HOLD_FOR);
        for n in 0..3 {
            hub.publish(event(n));
        }
        let mut first = hub.subscribe();
        let mut second = hub.subscribe();
        hub.publish(event(3));
        let (events, end) = ready_events(&mut first).await;
        assert!(end.is_none(), "{end:?}");
        assert_eq!(ids(&events), ["c0", "c1", "c2", "c3"]);
        // Held events go once.
        let (events, _) = ready_events(&mut second).await;
        assert_eq!(ids(&events), ["c3"]);
        drop((first, second));
        // Nobody again: held again.
        hub.publish(event(4));
        let (events, _) = ready_events(&mut hub.subscribe()).await;
        assert_eq!(ids(&events), ["c4"]);
    }

    #[tokio::test]
    async fn a_held_event_comes_back_whole() {
        let hub = EventHub::default();
        let labels: HashMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let made = ContainerEventResponse {
            container_id: "c".into(),
            container_event_type: ContainerEventType::ContainerStoppedEvent.into(),
            created_at: 42,
            pod_sandbox_status: Some(PodSandboxStatus {
                id: "p".into(),
                labels: labels.clone(),
                ..Default::default()
            }),
            containers_statuses: vec![ContainerStatus {
                id: "c".into(),
                exit_code: 137,
                reason: "OOMKilled".into(),
                labels,
                ..Default::default()
            }],
        };
        hub.publish(made.clone());
        let (events, end) = ready_events(&mut hub.subscribe()).await;
        assert!(end.is_none(), "{end:?}");
        assert_eq!(events, [made]);
    }

    #[tokio::test]
    async fn held_events_beyond_the_bound_end_the_next_subscription_with_an_error() {
        let hub = EventHub::new(4, 3, HOLD_FOR);
        for n in 0..5 {
            hub.publish(event(n));
        }
        let mut stream = hub.subscribe();
        let (events, end) = ready_events(&mut stream).await;
        // The newest three, then the error: the client must relist.
        assert_eq!(ids(&events), ["c2", "c3", "c4"]);
        let end = end.expect("the loss is told");
        assert_eq!(end.code(), tonic::Code::ResourceExhausted, "{end:?}");
        assert!(stream.next().await.is_none());
        // Told once: the next subscriber starts clean.
        let mut next = hub.subscribe();
        hub.publish(event(5));
        let (events, end) = ready_events(&mut next).await;
        assert_eq!(ids(&events), ["c5"]);
        assert!(end.is_none(), "{end:?}");
    }

    #[tokio::test]
    async fn held_events_expire() {
        let hub = EventHub::new(4, 3, Duration::ZERO);
        for n in 0..5 {
            hub.publish(event(n));
        }
        // Held for no time at all: nothing is left, nor is a loss told.
        let mut stream = hub.subscribe();
        let (events, end) = ready_events(&mut stream).await;
        assert!(events.is_empty(), "{events:?}");
        assert!(end.is_none(), "{end:?}");
    }

    #[tokio::test]
    async fn closing_ends_every_subscription_unavailable() {
        let hub = EventHub::default();
        let mut before = hub.subscribe();
        hub.close();
        for stream in [&mut before, &mut hub.subscribe()] {
            let end = stream
                .next()
                .await
                .expect("an error ends it")
                .expect_err("not an event");
            assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
            assert!(stream.next().await.is_none());
        }
        // Events after the close go nowhere and are not held.
        hub.publish(event(0));
        assert!(hub.lock().held.is_empty());
    }
}

#[cfg(test)]
mod emitter_tests {
    use proto::cri::ContainerState;
    use tokio_stream::StreamExt;

    use super::*;
    use crate::testing::TestDaemon;

    fn emitter(test: &TestDaemon, hub: &Arc<EventHub>) -> Emitter {
        let daemon = &test.daemon;
        Emitter::new(
            hub.clone(),
            daemon.stores.pods.clone(),
            &daemon.stores.containers,
            daemon.pods.clone(),
            daemon.containers.clone(),
        )
    }

    /// The pod as a look shows it, with one container `id`.
    fn look(id: &str, state: ContainerState, started_at: i64) -> Look {
        Look {
            created_at: 1,
            pod: None,
            containers: vec![ContainerStatus {
                id: id.into(),
                state: state.into(),
                started_at,
                ..Default::default()
            }],
        }
    }

    /// The (container, kind) of every event published so far.
    async fn published(stream: &mut EventStream) -> Vec<(String, ContainerEventType)> {
        let mut seen = Vec::new();
        while let Ok(Some(event)) = tokio::time::timeout(Duration::ZERO, stream.next()).await {
            let event = event.expect("no error");
            let kind = event.container_event_type();
            seen.push((event.container_id, kind));
        }
        seen
    }

    #[tokio::test]
    async fn each_containers_events_are_made_once_and_in_order() {
        use ContainerEventType::*;
        let test = TestDaemon::new().await;
        let hub = Arc::new(EventHub::default());
        let mut stream = hub.subscribe();
        let mut emitter = emitter(&test, &hub);
        let known = |id: &str| (id.to_string(), ("p1".to_string(), Stage::Created));
        emitter
            .stages
            .extend([known("early"), known("never"), known("runs")]);

        // Its exit was seen before StartContainer's answer: STARTED first.
        emitter.catch_up("early", &look("early", ContainerState::ContainerExited, 5));
        // Killed before it was ever started: no STARTED.
        emitter.catch_up("never", &look("never", ContainerState::ContainerExited, 0));
        // Started, then looked at again: once.
        for _ in 0..2 {
            emitter.catch_up("runs", &look("runs", ContainerState::ContainerRunning, 5));
        }
        // An exit seen again (pushed, then a Wait's answer): once.
        emitter.catch_up("early", &look("early", ContainerState::ContainerExited, 5));
        let of = |id: &str, kind| (id.to_string(), kind);
        assert_eq!(
            published(&mut stream).await,
            [
                of("early", ContainerStartedEvent),
                of("early", ContainerStoppedEvent),
                of("never", ContainerStoppedEvent),
                of("runs", ContainerStartedEvent),
            ]
        );

        // Changes of containers it does not know (created meanwhile, whose
        // Created is still to come, or removed) make nothing.
        let change = |id: &str| Change::Ended {
            pod_id: "p1".into(),
            id: id.into(),
        };
        emitter.apply(change("unknown")).await;
        // Removed: DELETED once, and nothing after it.
        let removed = || Change::Removed {
            pod_id: "p1".into(),
            id: "runs".into(),
            pod: None,
        };
        emitter.apply(removed()).await;
        emitter.apply(removed()).await;
        emitter.apply(change("runs")).await;
        assert_eq!(
            published(&mut stream).await,
            [of("runs", ContainerDeletedEvent)]
        );
    }
}
