//! What runs, in memory: each pod's pause and containers as its monitor
//! last reported them, so List and Status never ask a monitor.
//!
//! Per pod, one task subscribes to the pod's monitor (at RunPodSandbox once
//! the monitor is up, and for every pod when crid starts), applies the
//! snapshot the monitor answers with and then every event it pushes. A
//! broken subscription (the monitor dropped a subscriber that fell behind)
//! is renewed with a bounded backoff, and the fresh snapshot catches up; a
//! monitor that is gone for good (its socket refuses, its dir is gone)
//! leaves the pod "monitor gone". The answers of crid's own requests
//! (`Created`, `Started`, `Exited`) are applied too, so a Status right
//! after StartContainer does not depend on the event's arrival. Every
//! update is monotonic: a started time only appears, an exit is never
//! undone, so events, snapshots and answers may arrive in any order.
//!
//! A monitor found gone for good while its pod is followed (it died, or
//! was gone when crid started) is reported on the channel given to
//! [`LiveStates::reporting_deaths`], so crid can end what it left behind.
//!
//! Each container whose exit becomes known (pushed, in a snapshot, or in
//! the answer of crid's own Wait) is reported, as a [`Change`], on the
//! channel given to [`LiveStates::reporting_changes`]; the container
//! controller reports its own changes there too. The container events
//! (`container_events`) are made from that one ordered channel.
//!
//! Monitors of protocol version 1 cannot push: their pods are asked on
//! each read, as before ([`LiveStates::containers`], [`LiveStates::pause_running`]).
//!
//! Reads take a std lock briefly and never across an `.await`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use proto::monitor::{
    ContainerExit, ContainerState, ExitStatus, MonitorEvent, MonitorRequest, MonitorResponse,
    Snapshot,
};
use runtime::MonitorClient;
use runtime::client::{MonitorError, Subscription};
use tokio::sync::mpsc::UnboundedSender;

use crate::objects::PodRecord;

/// Backoff between subscription attempts to a monitor that is there but
/// did not take one (busy, or it dropped this subscriber).
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long watching a pod waits for its first snapshot before reads fall
/// back to asking the monitor (a stopped or stuck monitor must not hold
/// crid's start).
const FIRST_SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

/// Where a pod's live state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No snapshot yet, or the subscription broke and is being renewed:
    /// reads ask the monitor.
    Pending,
    /// The monitor pushes; the view is its word.
    Subscribed,
    /// A protocol version 1 monitor: reads ask it, every time.
    Polled,
    /// The monitor is gone for good: only exits seen before stay known.
    Gone,
}

/// A step in a container's life, in the order crid saw it, for the
/// container events.
#[derive(Debug, Clone)]
pub enum Change {
    /// CreateContainer succeeded.
    Created { pod_id: String, id: String },
    /// StartContainer succeeded.
    Started { pod_id: String, id: String },
    /// Its end became known (the monitor's word, or crid ended it because
    /// the monitor died).
    Ended { pod_id: String, id: String },
    /// RemoveContainer (or its pod's removal) forgot it; `pod` is the pod
    /// as it was then (it may be gone by the time the event is made).
    Removed {
        pod_id: String,
        id: String,
        pod: Option<Arc<PodRecord>>,
    },
    /// crid has recovered and follows every pod again: every container is
    /// looked at once (what ended while crid was down).
    Recovered,
    /// RunPodSandbox built the pod (its sandbox's CREATED and STARTED: the
    /// sandbox has events of its own, with its id as the container id, as
    /// containerd sends them).
    SandboxReady { pod_id: String },
    /// StopPodSandbox tore the pod down.
    SandboxStopped { pod_id: String },
    /// RemovePodSandbox forgot it; `pod` is its last record (kubelet's
    /// evented PLEG drops the pod from its cache on this event, and reads
    /// the pod's status from it).
    SandboxRemoved { pod: Arc<PodRecord> },
}

/// One pod as its monitor last reported it.
#[derive(Debug, Clone)]
pub struct PodView {
    source: Source,
    pause_exit: Option<ExitStatus>,
    containers: HashMap<String, ContainerState>,
    /// A subscription is being (re)made: its snapshot may predate removals
    /// done meanwhile, which `removed` remembers until it is applied.
    resyncing: bool,
    removed: HashSet<String>,
    /// Containers whose exit became known since the last look (reported as
    /// [`Change::Ended`]).
    ended: Vec<String>,
}

impl Default for PodView {
    fn default() -> PodView {
        PodView {
            source: Source::Pending,
            pause_exit: None,
            containers: HashMap::new(),
            resyncing: false,
            removed: HashSet::new(),
            ended: Vec::new(),
        }
    }
}

impl PodView {
    /// Merges what the monitor says of one container: a pid or a start
    /// time appears, an exit stays.
    fn merge(&mut self, update: &ContainerState) {
        let known = self
            .containers
            .entry(update.id.clone())
            .or_insert_with(|| ContainerState {
                id: update.id.clone(),
                pid: 0,
                started_at: 0,
                exit: None,
            });
        if update.pid != 0 {
            known.pid = update.pid;
        }
        known.started_at = known.started_at.max(update.started_at);
        if known.exit.is_none() && update.exit.is_some() {
            known.exit = update.exit;
            self.ended.push(update.id.clone());
        }
    }

    /// A subscription begins: the snapshot's word, merged over what is
    /// known (answers applied meanwhile may be newer than it).
    fn apply_snapshot(&mut self, snapshot: &Snapshot) {
        for state in &snapshot.containers {
            if !self.removed.contains(&state.id) {
                self.merge(state);
            }
        }
        if self.pause_exit.is_none() {
            self.pause_exit = snapshot.pause_exit;
        }
        self.source = Source::Subscribed;
        self.resyncing = false;
        self.removed.clear();
    }

    /// An event of the subscription. Events of containers not known (removed
    /// by crid since) are dropped.
    fn apply_event(&mut self, event: &MonitorEvent) {
        match event {
            MonitorEvent::ContainerStarted { id, started_at } => self.started(id, *started_at),
            MonitorEvent::ContainerExited { id, exit } => self.exited(id, *exit),
            MonitorEvent::PauseExited { status } => {
                self.pause_exit.get_or_insert(*status);
            }
        }
    }

    /// The monitor answered CreateContainer.
    pub fn created(&mut self, id: &str, pid: i32) {
        self.removed.remove(id);
        self.merge(&ContainerState {
            id: id.to_string(),
            pid,
            started_at: 0,
            exit: None,
        });
    }

    pub fn started(&mut self, id: &str, started_at: i64) {
        if let Some(known) = self.containers.get_mut(id) {
            known.started_at = known.started_at.max(started_at);
        }
    }

    pub fn exited(&mut self, id: &str, exit: ContainerExit) {
        if let Some(known) = self.containers.get_mut(id)
            && known.exit.is_none()
        {
            known.exit = Some(exit);
            self.ended.push(id.to_string());
        }
    }

    /// crid removed the container.
    pub fn removed(&mut self, id: &str) {
        self.containers.remove(id);
        if self.resyncing {
            self.removed.insert(id.to_string());
        }
    }

    /// The monitor is gone: what it had not seen end, nobody will.
    fn gone(&mut self) {
        self.source = Source::Gone;
        self.containers.retain(|_, state| state.exit.is_some());
        self.resyncing = false;
        self.removed.clear();
    }

    /// True while pause runs, as far as the pushed state says.
    pub fn pause_running(&self) -> bool {
        self.source == Source::Subscribed && self.pause_exit.is_none()
    }
}

/// One watched pod: its monitor's client (one per pod: it caches the
/// monitor's protocol version) and its view.
struct PodLive {
    client: MonitorClient,
    view: RwLock<PodView>,
}

impl PodLive {
    // A panic while the lock was held cannot leave the view half-changed
    // (each update is a few field writes): a poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, PodView> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, PodView> {
        self.view.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `update` to the view and reports the exits it made known.
    fn change(
        &self,
        pod_id: &str,
        changes: Option<&UnboundedSender<Change>>,
        update: impl FnOnce(&mut PodView),
    ) {
        let ended = {
            let mut view = self.write();
            update(&mut view);
            std::mem::take(&mut view.ended)
        };
        if let Some(changes) = changes {
            for id in ended {
                // The receiver is gone only when crid is leaving.
                let _ = changes.send(Change::Ended {
                    pod_id: pod_id.to_string(),
                    id,
                });
            }
        }
    }
}

struct Watched {
    pod: Arc<PodLive>,
    task: tokio::task::JoinHandle<()>,
}

/// Every watched pod's live state.
#[derive(Default)]
pub struct LiveStates {
    pods: RwLock<HashMap<String, Watched>>,
    /// Where the id of a pod whose monitor is found gone is sent.
    monitor_deaths: Option<UnboundedSender<String>>,
    /// Where containers' changes are sent.
    changes: Option<UnboundedSender<Change>>,
}

impl LiveStates {
    /// Live states that send the id of each pod whose monitor is found
    /// gone for good to `monitor_deaths`.
    pub fn reporting_deaths(monitor_deaths: UnboundedSender<String>) -> LiveStates {
        LiveStates {
            pods: RwLock::default(),
            monitor_deaths: Some(monitor_deaths),
            changes: None,
        }
    }

    /// These live states, sending each container's change to `changes`.
    pub fn reporting_changes(mut self, changes: UnboundedSender<Change>) -> LiveStates {
        self.changes = Some(changes);
        self
    }

    /// Reports a container's change (the container controller's own).
    pub fn report(&self, change: Change) {
        if let Some(changes) = &self.changes {
            // The receiver is gone only when crid is leaving.
            let _ = changes.send(change);
        }
    }

    fn pod(&self, pod_id: &str) -> Option<Arc<PodLive>> {
        let pods = self.pods.read().unwrap_or_else(|p| p.into_inner());
        pods.get(pod_id).map(|watched| watched.pod.clone())
    }

    /// Starts following the monitor of the pod whose state dir is
    /// `pod_dir`, and waits (bounded) for its first snapshot. Replaces an
    /// earlier watch of the pod.
    pub async fn watch(&self, pod_id: &str, pod_dir: &Path) {
        let pod = Arc::new(PodLive {
            client: MonitorClient::new(pod_dir),
            view: RwLock::new(PodView::default()),
        });
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(follow(
            pod_id.to_string(),
            pod.clone(),
            first_tx,
            self.monitor_deaths.clone(),
            self.changes.clone(),
        ));
        let previous = {
            let mut pods = self.pods.write().unwrap_or_else(|p| p.into_inner());
            pods.insert(pod_id.to_string(), Watched { pod, task })
        };
        if let Some(previous) = previous {
            previous.task.abort();
        }
        // Reads of a pod without its snapshot ask the monitor meanwhile.
        let _ = tokio::time::timeout(FIRST_SNAPSHOT_WAIT, first_rx).await;
    }

    /// The pod was removed: its task ends and its state goes.
    pub fn forget(&self, pod_id: &str) {
        let removed = {
            let mut pods = self.pods.write().unwrap_or_else(|p| p.into_inner());
            pods.remove(pod_id)
        };
        if let Some(watched) = removed {
            watched.task.abort();
        }
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        self.pods.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Where the pod's live state comes from, if the pod is watched.
    pub fn source(&self, pod_id: &str) -> Option<Source> {
        self.pod(pod_id).map(|pod| pod.read().source)
    }

    /// The pod's monitor client, if the pod is watched.
    pub fn client(&self, pod_id: &str) -> Option<MonitorClient> {
        self.pod(pod_id).map(|pod| pod.client.clone())
    }

    /// Applies `update` to the pod's view, if the pod is watched.
    pub fn update(&self, pod_id: &str, update: impl FnOnce(&mut PodView)) {
        if let Some(pod) = self.pod(pod_id) {
            pod.change(pod_id, self.changes.as_ref(), update);
        }
    }

    /// The pod's containers as its monitor knows them; empty when no
    /// monitor is known (not watched, or gone: then only the exits seen
    /// before). Pods whose monitor cannot push are asked here.
    pub async fn containers(&self, pod_id: &str) -> HashMap<String, ContainerState> {
        let Some(pod) = self.pod(pod_id) else {
            return HashMap::new();
        };
        let known = {
            let view = pod.read();
            match view.source {
                Source::Subscribed | Source::Gone => Some(view.containers.clone()),
                Source::Pending | Source::Polled => None,
            }
        };
        if let Some(known) = known {
            return known;
        }
        match pod.client.request(&MonitorRequest::Containers).await {
            Ok(MonitorResponse::Containers(states)) => states
                .into_iter()
                .map(|state| (state.id.clone(), state))
                .collect(),
            _ => HashMap::new(),
        }
    }

    /// True while the pod's pause process runs. Pods whose monitor cannot
    /// push are asked here.
    pub async fn pause_running(&self, pod_id: &str) -> bool {
        let Some(pod) = self.pod(pod_id) else {
            return false;
        };
        let source = {
            let view = pod.read();
            match view.source {
                Source::Subscribed | Source::Gone => return view.pause_running(),
                source => source,
            }
        };
        tracing::trace!(pod_id, ?source, "asking the monitor for pause");
        matches!(
            pod.client.request(&MonitorRequest::Status).await,
            Ok(MonitorResponse::Status {
                pause_exit: None,
                ..
            })
        )
    }
}

/// Whether a failed request means the monitor will never answer again.
pub fn monitor_gone(error: &MonitorError) -> bool {
    let gone_kind = |source: &std::io::Error| {
        matches!(
            source.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
        )
    };
    match error {
        MonitorError::Unreachable { source, .. } | MonitorError::Config { source, .. } => {
            gone_kind(source)
        }
        _ => false,
    }
}

/// What one subscribe attempt led to.
enum Attempt {
    Subscribed(Subscription),
    /// Try again later.
    Retry,
    /// Nothing more to follow: the monitor cannot push.
    Done,
    /// Nothing more to follow: the monitor is gone for good.
    Gone,
}

async fn subscribe(
    pod_id: &str,
    pod: &PodLive,
    changes: Option<&UnboundedSender<Change>>,
) -> Attempt {
    pod.write().resyncing = true;
    match pod.client.subscribe().await {
        Ok(subscription) => {
            pod.change(pod_id, changes, |view| {
                view.apply_snapshot(subscription.snapshot())
            });
            tracing::debug!(pod_id, "following the pod's monitor");
            Attempt::Subscribed(subscription)
        }
        Err(MonitorError::Unsupported {
            monitor_version, ..
        }) => {
            let mut view = pod.write();
            view.source = Source::Polled;
            view.resyncing = false;
            tracing::info!(
                pod_id,
                monitor_version,
                "the pod's monitor cannot push events; asking it on every read"
            );
            Attempt::Done
        }
        Err(error) if monitor_gone(&error) => {
            pod.write().gone();
            tracing::debug!(pod_id, %error, "the pod's monitor is gone");
            Attempt::Gone
        }
        Err(error) => {
            tracing::warn!(pod_id, %error, "cannot subscribe to the pod's monitor; retrying");
            Attempt::Retry
        }
    }
}

/// The pod's task: subscribe, apply, and subscribe again when the
/// subscription breaks, until the monitor is gone (then `deaths` is told)
/// or cannot push.
async fn follow(
    pod_id: String,
    pod: Arc<PodLive>,
    first: tokio::sync::oneshot::Sender<()>,
    deaths: Option<UnboundedSender<String>>,
    changes: Option<UnboundedSender<Change>>,
) {
    let mut first = Some(first);
    let mut backoff = RETRY_FIRST;
    loop {
        // Boxed: subscribing (connect, handshake, the snapshot) is most of
        // this future's size, and one such task lives per pod.
        let attempt = Box::pin(subscribe(&pod_id, &pod, changes.as_ref())).await;
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
        match attempt {
            Attempt::Done => return,
            Attempt::Gone => {
                if let Some(deaths) = deaths {
                    // The receiver is gone only when crid is leaving.
                    let _ = deaths.send(pod_id);
                }
                return;
            }
            Attempt::Retry => {}
            Attempt::Subscribed(mut subscription) => {
                backoff = RETRY_FIRST;
                loop {
                    match subscription.next().await {
                        Ok(event) => {
                            pod.change(&pod_id, changes.as_ref(), |view| view.apply_event(&event))
                        }
                        Err(error) => {
                            tracing::debug!(pod_id, %error, "the monitor's subscription ended");
                            break;
                        }
                    }
                }
                // The monitor exited (pod stopped, crashed) or dropped
                // this subscriber: until the next attempt says which
                // (after the shortest pause, so a monitor that keeps
                // dropping it is not spun on), reads ask the monitor.
                pod.write().source = Source::Pending;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ContainerExit {
        ContainerExit {
            status: ExitStatus::Exited(code),
            finished_at: 7,
            oom_killed: false,
        }
    }

    fn state(id: &str, started_at: i64, exit: Option<ContainerExit>) -> ContainerState {
        ContainerState {
            id: id.into(),
            pid: 42,
            started_at,
            exit,
        }
    }

    fn snapshot(containers: Vec<ContainerState>) -> Snapshot {
        Snapshot {
            version: 2,
            pause_pid: 1,
            pause_exit: None,
            containers,
        }
    }

    #[test]
    fn a_snapshot_then_events_follow_a_container_to_its_exit() {
        let mut view = PodView::default();
        assert_eq!(view.source, Source::Pending);
        assert!(!view.pause_running());
        view.apply_snapshot(&snapshot(vec![state("a", 0, None)]));
        assert!(view.pause_running());
        view.apply_event(&MonitorEvent::ContainerStarted {
            id: "a".into(),
            started_at: 5,
        });
        assert_eq!(view.containers["a"].started_at, 5);
        assert_eq!(view.containers["a"].exit, None);
        view.apply_event(&MonitorEvent::ContainerExited {
            id: "a".into(),
            exit: exit(7),
        });
        assert_eq!(view.containers["a"].exit, Some(exit(7)));
        view.apply_event(&MonitorEvent::PauseExited {
            status: ExitStatus::Signaled(9),
        });
        assert!(!view.pause_running());
    }

    #[test]
    fn an_answer_ahead_of_its_event_is_kept_and_the_event_changes_nothing() {
        let mut view = PodView::default();
        view.apply_snapshot(&snapshot(Vec::new()));
        view.created("a", 42);
        view.started("a", 5);
        assert_eq!(view.containers["a"], state("a", 5, None));
        // The pushed event of the same start arrives later.
        view.apply_event(&MonitorEvent::ContainerStarted {
            id: "a".into(),
            started_at: 5,
        });
        assert_eq!(view.containers["a"], state("a", 5, None));
        // A Wait's answer, then the event of that exit.
        view.exited("a", exit(3));
        view.apply_event(&MonitorEvent::ContainerExited {
            id: "a".into(),
            exit: exit(3),
        });
        assert_eq!(view.containers["a"].exit, Some(exit(3)));
    }

    #[test]
    fn an_exit_is_never_undone_by_an_older_snapshot() {
        let mut view = PodView::default();
        view.apply_snapshot(&snapshot(vec![state("a", 5, None)]));
        view.apply_event(&MonitorEvent::ContainerExited {
            id: "a".into(),
            exit: exit(1),
        });
        // A resubscription whose snapshot was taken before the exit.
        view.apply_snapshot(&snapshot(vec![state("a", 5, None)]));
        assert_eq!(view.containers["a"].exit, Some(exit(1)));
        // Nor does an older start time replace a newer one.
        view.apply_snapshot(&snapshot(vec![state("a", 0, None)]));
        assert_eq!(view.containers["a"].started_at, 5);
    }

    #[test]
    fn a_snapshot_catches_up_with_exits_missed_while_not_subscribed() {
        let mut view = PodView::default();
        view.apply_snapshot(&snapshot(vec![state("a", 5, None), state("b", 6, None)]));
        // The subscription broke; meanwhile b exited.
        view.apply_snapshot(&snapshot(vec![
            state("a", 5, None),
            state("b", 6, Some(exit(5))),
        ]));
        assert_eq!(view.containers["a"].exit, None);
        assert_eq!(view.containers["b"].exit, Some(exit(5)));
    }

    #[test]
    fn each_exit_is_reported_once_however_it_arrives() {
        let mut view = PodView::default();
        view.apply_snapshot(&snapshot(vec![
            state("a", 5, None),
            state("b", 5, Some(exit(2))),
        ]));
        // An exit in the snapshot (crid was not following then).
        assert_eq!(std::mem::take(&mut view.ended), ["b"]);
        // A Wait's answer, then the pushed event and a snapshot of the same.
        view.exited("a", exit(1));
        view.apply_event(&MonitorEvent::ContainerExited {
            id: "a".into(),
            exit: exit(1),
        });
        view.apply_snapshot(&snapshot(vec![state("a", 5, Some(exit(1)))]));
        assert_eq!(view.ended, ["a"]);
    }

    #[test]
    fn removed_containers_stay_removed() {
        let mut view = PodView::default();
        view.apply_snapshot(&snapshot(vec![state("a", 5, None)]));
        view.removed("a");
        // The event of the kill that removal did comes after it.
        view.apply_event(&MonitorEvent::ContainerExited {
            id: "a".into(),
            exit: exit(137),
        });
        view.apply_event(&MonitorEvent::ContainerStarted {
            id: "a".into(),
            started_at: 9,
        });
        assert!(view.containers.is_empty());
        // A resubscription whose snapshot predates the removal.
        view.resyncing = true;
        view.created("b", 43);
        view.removed("b");
        view.apply_snapshot(&snapshot(vec![state("b", 0, None)]));
        assert!(view.containers.is_empty(), "{:?}", view.containers);
        assert!(view.removed.is_empty());
    }

    #[test]
    fn a_gone_monitor_keeps_only_the_exits_it_reported() {
        let mut view = PodView::default();
        view.apply_snapshot(&snapshot(vec![
            state("running", 5, None),
            state("ended", 5, Some(exit(7))),
        ]));
        view.gone();
        assert_eq!(view.source, Source::Gone);
        assert!(!view.pause_running());
        assert_eq!(view.containers.keys().collect::<Vec<_>>(), vec!["ended"]);
    }

    #[tokio::test]
    async fn version_1_monitors_are_polled_and_missing_ones_are_gone() {
        let dirs = tempfile::tempdir().expect("temp dir");
        let pod_dir = |name: &str, config: &str| {
            let dir = dirs.path().join(name);
            std::fs::create_dir(&dir).expect("pod dir");
            std::fs::write(dir.join(proto::monitor::CONFIG_FILE), config).expect("config");
            dir
        };
        // What a version 1 crid wrote has no protocol; no socket either.
        let old = pod_dir("old", "{}");
        let missing = pod_dir("missing", r#"{"protocol": 2}"#);
        let live = LiveStates::default();
        live.watch("old", &old).await;
        live.watch("missing", &missing).await;
        assert_eq!(live.source("old"), Some(Source::Polled));
        assert_eq!(live.source("missing"), Some(Source::Gone));
        // Polled: asked, and here it cannot answer.
        assert!(!live.pause_running("old").await);
        assert!(live.containers("old").await.is_empty());
        assert!(!live.pause_running("missing").await);
        assert_eq!(live.watched(), 2);
        live.forget("old");
        live.forget("missing");
        assert_eq!(live.watched(), 0);
        assert_eq!(live.source("old"), None);
    }

    #[test]
    fn only_refused_or_missing_sockets_mean_gone() {
        let unreachable = |kind| MonitorError::Unreachable {
            pod_dir: "/p".into(),
            source: std::io::Error::from(kind),
        };
        assert!(monitor_gone(&unreachable(
            std::io::ErrorKind::ConnectionRefused
        )));
        assert!(monitor_gone(&unreachable(std::io::ErrorKind::NotFound)));
        assert!(!monitor_gone(&unreachable(
            std::io::ErrorKind::UnexpectedEof
        )));
        assert!(!monitor_gone(&MonitorError::Timeout {
            pod_dir: "/p".into(),
            timeout: Duration::from_secs(1),
        }));
    }
}
