//! crid's own operation metrics: one registry for the process, fed where
//! the operations happen (every RPC passes through cri-server's `traced`,
//! image pulls through the image controller, CNI ADD/DEL through the pod
//! sandbox manager, monitor deaths through the container controller), and
//! the pod and container counts by state, set from the stores whenever
//! they are sampled (so they cannot drift from what List shows).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// RPC latency buckets: 0.5 ms to ~16 s, doubling.
#[derive(Clone)]
struct RpcBuckets;

impl MetricConstructor<Histogram> for RpcBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.0005, 2.0, 16))
    }
}

/// Image pull buckets: 50 ms to ~14 min, doubling.
#[derive(Clone)]
struct PullBuckets;

impl MetricConstructor<Histogram> for PullBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.05, 2.0, 15))
    }
}

/// CNI buckets: 1 ms to ~33 s, doubling.
#[derive(Clone)]
struct CniBuckets;

impl MetricConstructor<Histogram> for CniBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.001, 2.0, 16))
    }
}

type Labels = Vec<(&'static str, String)>;
type StaticLabels = Vec<(&'static str, &'static str)>;

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn of<T, E>(result: &Result<T, E>) -> Outcome {
        if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// A CNI operation on a pod's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniOperation {
    Add,
    Del,
}

impl CniOperation {
    fn label(self) -> &'static str {
        match self {
            CniOperation::Add => "ADD",
            CniOperation::Del => "DEL",
        }
    }
}

/// The image store's cumulative pull figures since crid started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullTotals {
    pub bytes_downloaded: u64,
    pub layers_fetched: u64,
    pub layers_reused: u64,
}

/// Pods by state, as ListPodSandbox shows them now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodStates {
    pub ready: u64,
    pub not_ready: u64,
}

/// Containers by state, as ListContainers shows them now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerStates {
    pub created: u64,
    pub running: u64,
    pub exited: u64,
    pub unknown: u64,
}

struct Own {
    registry: Registry,
    rpc_duration: Family<Labels, Histogram, RpcBuckets>,
    pull_duration: Family<StaticLabels, Histogram, PullBuckets>,
    pull_bytes: Counter,
    pull_layers: Family<StaticLabels, Counter>,
    cni_duration: Family<StaticLabels, Histogram, CniBuckets>,
    cni_errors: Family<StaticLabels, Counter>,
    oom_kills: Counter,
    /// Containers whose OOM kill is counted, so each counts once.
    oom_counted: Mutex<HashSet<String>>,
    monitor_deaths: Counter,
    pods: Family<StaticLabels, Gauge>,
    containers: Family<StaticLabels, Gauge>,
}

static OWN: LazyLock<Own> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let own = Own {
        registry: Registry::default(),
        rpc_duration: Family::new_with_constructor(RpcBuckets),
        pull_duration: Family::new_with_constructor(PullBuckets),
        pull_bytes: Counter::default(),
        pull_layers: Family::default(),
        cni_duration: Family::new_with_constructor(CniBuckets),
        cni_errors: Family::default(),
        oom_kills: Counter::default(),
        oom_counted: Mutex::default(),
        monitor_deaths: Counter::default(),
        pods: Family::default(),
        containers: Family::default(),
    };
    registry.register(
        "crid_rpc_duration_seconds",
        "How long crid took to answer a CRI RPC, by method and gRPC code.",
        own.rpc_duration.clone(),
    );
    registry.register(
        "crid_image_pull_duration_seconds",
        "How long an image pull took (fetching, unpacking and recording), by outcome.",
        own.pull_duration.clone(),
    );
    registry.register(
        "crid_image_pull_bytes",
        "Bytes received from registries by image pulls (manifests, configs, layers).",
        own.pull_bytes.clone(),
    );
    registry.register(
        "crid_image_pull_layers",
        "Layers image pulls needed: fetched and unpacked, or reused from the store.",
        own.pull_layers.clone(),
    );
    registry.register(
        "crid_cni_duration_seconds",
        "How long a CNI ADD or DEL of a pod's network took, by operation and outcome.",
        own.cni_duration.clone(),
    );
    registry.register(
        "crid_cni_errors",
        "CNI ADDs and DELs of a pod's network that failed, by operation.",
        own.cni_errors.clone(),
    );
    registry.register(
        "crid_container_oom_kills",
        "Containers crid saw end killed by the OOM killer (OOMKilled) since it started.",
        own.oom_kills.clone(),
    );
    registry.register(
        "crid_monitor_deaths",
        "Pods whose crid-monitor crid found dead while the pod was ready (their containers were ended).",
        own.monitor_deaths.clone(),
    );
    registry.register(
        "crid_pods",
        "Pod sandboxes by state (ready, notready), as ListPodSandbox shows them.",
        own.pods.clone(),
    );
    registry.register(
        "crid_containers",
        "Containers by state (created, running, exited, unknown), as ListContainers shows them.",
        own.containers.clone(),
    );
    Own { registry, ..own }
});

/// One answered RPC.
pub fn observe_rpc(method: &'static str, code: &str, seconds: f64) {
    OWN.rpc_duration
        .get_or_create(&vec![
            ("method", method.to_owned()),
            ("code", code.to_owned()),
        ])
        .observe(seconds);
}

/// One image pull, ended.
pub fn observe_image_pull(outcome: Outcome, seconds: f64) {
    OWN.pull_duration
        .get_or_create(&vec![("outcome", outcome.label())])
        .observe(seconds);
}

/// The image store's pull figures: its own counters (kept where the bytes
/// and layers are handled), shown as they are now.
pub fn set_pull_totals(totals: PullTotals) {
    OWN.pull_bytes
        .inner()
        .store(totals.bytes_downloaded, Ordering::Relaxed);
    for (how, value) in [
        ("fetched", totals.layers_fetched),
        ("reused", totals.layers_reused),
    ] {
        OWN.pull_layers
            .get_or_create(&vec![("how", how)])
            .inner()
            .store(value, Ordering::Relaxed);
    }
}

/// One CNI ADD or DEL, ended.
pub fn observe_cni(operation: CniOperation, outcome: Outcome, seconds: f64) {
    OWN.cni_duration
        .get_or_create(&vec![
            ("operation", operation.label()),
            ("outcome", outcome.label()),
        ])
        .observe(seconds);
    if outcome == Outcome::Failure {
        OWN.cni_errors
            .get_or_create(&vec![("operation", operation.label())])
            .inc();
    }
}

/// A pod's monitor was found dead while the pod was ready.
pub fn monitor_died() {
    OWN.monitor_deaths.inc();
}

/// The containers seen ended OOMKilled now, of `existing` (every container
/// crid has): each is counted once however often it is seen; forgetting
/// the removed ones keeps the memory to what exists.
pub fn saw_oom_kills<'a>(
    oom_killed: impl IntoIterator<Item = &'a str>,
    existing: impl IntoIterator<Item = &'a str>,
) {
    let mut counted = OWN
        .oom_counted
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for id in oom_killed {
        if counted.insert(id.to_owned()) {
            OWN.oom_kills.inc();
        }
    }
    let existing: HashSet<&str> = existing.into_iter().collect();
    counted.retain(|id| existing.contains(id.as_str()));
}

/// The pods and containers by state, as they are now.
pub fn set_states(pods: PodStates, containers: ContainerStates) {
    for (state, count) in [("ready", pods.ready), ("notready", pods.not_ready)] {
        OWN.pods
            .get_or_create(&vec![("state", state)])
            .set(gauge(count));
    }
    for (state, count) in [
        ("created", containers.created),
        ("running", containers.running),
        ("exited", containers.exited),
        ("unknown", containers.unknown),
    ] {
        OWN.containers
            .get_or_create(&vec![("state", state)])
            .set(gauge(count));
    }
}

fn gauge(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// crid's own families, OpenMetrics text without the final `# EOF`.
pub fn encode(text: &mut String) -> Result<(), std::fmt::Error> {
    encode_registry(text, &OWN.registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded() -> String {
        let mut text = String::new();
        encode(&mut text).expect("encode");
        text
    }

    #[test]
    fn rpcs_are_counted_by_method_and_code() {
        observe_rpc("Version", "OK", 0.001);
        observe_rpc("Version", "OK", 0.002);
        let text = encoded();
        assert!(
            text.contains("crid_rpc_duration_seconds_count{method=\"Version\",code=\"OK\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn cni_failures_count_as_errors() {
        observe_cni(CniOperation::Del, Outcome::Failure, 0.01);
        let text = encoded();
        assert!(
            text.contains(
                "crid_cni_duration_seconds_count{operation=\"DEL\",outcome=\"failure\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("crid_cni_errors_total{operation=\"DEL\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn an_oom_kill_counts_once_while_its_container_exists() {
        let count = || OWN.oom_kills.get();
        let before = count();
        saw_oom_kills(["oom-a"], ["oom-a", "other"]);
        saw_oom_kills(["oom-a"], ["oom-a", "other"]);
        assert_eq!(count(), before + 1, "seen twice, counted once");
        saw_oom_kills([], ["other"]);
        assert!(!OWN.oom_counted.lock().expect("lock").contains("oom-a"));
    }

    #[test]
    fn states_are_set_not_accumulated() {
        let running = |n| ContainerStates {
            running: n,
            ..Default::default()
        };
        set_states(PodStates::default(), running(3));
        set_states(PodStates::default(), running(1));
        let text = encoded();
        assert!(
            text.contains("crid_containers{state=\"running\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("crid_containers{state=\"exited\"} 0"),
            "{text}"
        );
    }
}
