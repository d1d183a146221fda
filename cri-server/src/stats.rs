//! The CRI stats and metrics RPCs, and what `/metrics` shows: the
//! figures of the stats's one collector ([`metrics::Collector`]),
//! translated into CRI messages or Prometheus points. The records say which
//! containers and pods there are; the collector reads their cgroups,
//! network namespaces and writable layers.
//!
//! Only running containers have figures (as with containerd): one that is
//! not running, or whose cgroup is gone (removed during the call), is left
//! out of a List and answered without figures by ContainerStats. Pods that
//! are not ready are left out of a List.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use metrics::series::{self, Labels, Point};
use metrics::{ContainerSample, ContainerTarget, Detail, PodSample, PodTarget, Scope};
use proto::cri;
use runtime::cgroup::stats::{CgroupStats, Psi};
use runtime::container::ContainerDirs;

use crate::config::Config;
use crate::containers::{ContainerController, OOM_KILLED};
use crate::error::CridError;
use crate::images::ImageController;
use crate::live::LiveStates;
use crate::objects::{ContainerPhase, ContainerRecord, PodPhase, PodRecord};
use crate::pods::PodController;
use crate::records::{RecordStore, Stored};

/// What the stats RPCs and `/metrics` read: the records, the monitors'
/// pushed states and the collector; and, for crid's own metrics, the
/// controllers.
pub struct Stats {
    config: Arc<Config>,
    pods: Arc<RecordStore<PodRecord>>,
    containers: Arc<RecordStore<ContainerRecord>>,
    live: Arc<LiveStates>,
    collector: metrics::Collector,
    controllers: Controllers,
}

/// What crid's own state metrics are counted from: what List shows.
pub struct Controllers {
    pub pods: Arc<PodController>,
    pub containers: Arc<ContainerController>,
    pub images: Arc<ImageController>,
    /// When crid started (nanoseconds since the epoch): OOM kills before
    /// it were counted by an earlier crid, if at all.
    pub started_at: i64,
}

impl Stats {
    pub fn new(
        config: Arc<Config>,
        pods: Arc<RecordStore<PodRecord>>,
        containers: Arc<RecordStore<ContainerRecord>>,
        live: Arc<LiveStates>,
        collector: metrics::Collector,
        controllers: Controllers,
    ) -> Stats {
        Stats {
            config,
            pods,
            containers,
            live,
            collector,
            controllers,
        }
    }
}

/// The pod interface CNI creates, which kubelet's `default_interface` means.
const DEFAULT_INTERFACE: &str = "eth0";

fn value(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

fn collector_error(error: metrics::CollectorError) -> CridError {
    CridError::Internal(error.to_string())
}

/// An id filter is a full id or a prefix of one: lowercase hex.
fn validate_id_filter(field: &'static str, id: &str) -> Result<(), CridError> {
    if id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(CridError::invalid(
            field,
            id,
            "must be a container or pod id, or a prefix of one (lowercase hex)",
        ))
    }
}

fn validate_label_selector(
    field: &'static str,
    selector: &HashMap<String, String>,
) -> Result<(), CridError> {
    match selector.keys().find(|key| key.is_empty()) {
        Some(_) => Err(CridError::invalid(
            field,
            "",
            "a label key must not be empty",
        )),
        None => Ok(()),
    }
}

/// The `what` the request's `field` names by a full id or a unique prefix;
/// NotFound when there is none.
fn existing<T: Stored>(
    store: &RecordStore<T>,
    field: &'static str,
    id: &str,
    what: &str,
) -> Result<Arc<T>, CridError> {
    store
        .find(field, id)?
        .ok_or_else(|| CridError::NotFound(format!("{what} {id:?} not found")))
}

fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn container_target(stats: &Stats, record: &ContainerRecord) -> ContainerTarget {
    let dirs = ContainerDirs::new(&stats.config.state, &stats.config.root, &record.id);
    ContainerTarget {
        id: record.id.clone(),
        cgroup: record.cgroup.clone(),
        layer: Some(dirs.layer.join("upper")),
    }
}

fn pod_target(record: &PodRecord) -> PodTarget {
    PodTarget {
        id: record.id.clone(),
        cgroup: record
            .sandbox
            .cgroup
            .as_ref()
            .map(|placement| placement.pod.clone()),
        netns: record.sandbox.netns.clone(),
    }
}

/// Containers that may have a cgroup to read: started, not half-created.
fn has_cgroup(record: &ContainerRecord) -> bool {
    record.phase == ContainerPhase::Started && !record.cgroup.is_empty()
}

/// The running ones among `records`, as their monitors last reported
/// (pushed, so no monitor is asked): one look per pod.
async fn running(stats: &Stats, records: Vec<Arc<ContainerRecord>>) -> Vec<Arc<ContainerRecord>> {
    let mut live = HashMap::new();
    let mut running = Vec::with_capacity(records.len());
    for record in records {
        if !live.contains_key(&record.pod_id) {
            let states = stats.live.containers(&record.pod_id).await;
            live.insert(record.pod_id.clone(), states);
        }
        let is_running = live[&record.pod_id]
            .get(&record.id)
            .is_some_and(|state| state.started_at > 0 && state.exit.is_none());
        if is_running {
            running.push(record);
        }
    }
    running
}

async fn sample_containers(
    stats: &Stats,
    records: &[Arc<ContainerRecord>],
    scope: Scope,
    detail: Detail,
) -> Result<HashMap<String, Arc<ContainerSample>>, CridError> {
    let targets = records
        .iter()
        .map(|record| container_target(stats, record))
        .collect();
    stats
        .collector
        .containers(targets, scope, detail)
        .await
        .map_err(collector_error)
}

async fn sample_pods(
    stats: &Stats,
    records: &[Arc<PodRecord>],
    scope: Scope,
    detail: Detail,
) -> Result<HashMap<String, Arc<PodSample>>, CridError> {
    let targets = records.iter().map(|record| pod_target(record)).collect();
    stats
        .collector
        .pods(targets, scope, detail)
        .await
        .map_err(collector_error)
}

fn psi(psi: &Psi) -> cri::PsiStats {
    let data = |line: &runtime::cgroup::stats::PsiLine| cri::PsiData {
        total: line.total_us,
        avg10: line.avg10,
        avg60: line.avg60,
        avg300: line.avg300,
    };
    cri::PsiStats {
        full: psi.full.as_ref().map(data),
        some: Some(data(&psi.some)),
    }
}

fn cpu_usage(timestamp: i64, stats: &CgroupStats, nano_cores: Option<u64>) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp,
        usage_core_nano_seconds: value(stats.cpu.usage_ns),
        usage_nano_cores: nano_cores.and_then(value),
        psi: stats
            .pressure
            .as_ref()
            .and_then(|pressure| pressure.cpu.as_ref())
            .map(psi),
    }
}

fn memory_usage(timestamp: i64, stats: &CgroupStats) -> cri::MemoryUsage {
    let memory = &stats.memory;
    cri::MemoryUsage {
        timestamp,
        working_set_bytes: value(memory.working_set_bytes),
        // What is left under the limit, as cAdvisor counts it; no limit, no figure.
        available_bytes: memory
            .limit_bytes
            .and_then(|limit| value(limit.saturating_sub(memory.working_set_bytes))),
        usage_bytes: value(memory.usage_bytes),
        rss_bytes: value(memory.rss_bytes),
        page_faults: value(memory.page_faults),
        major_page_faults: value(memory.major_page_faults),
        psi: stats
            .pressure
            .as_ref()
            .and_then(|pressure| pressure.memory.as_ref())
            .map(psi),
    }
}

fn container_stats_of(
    stats: &Stats,
    record: &ContainerRecord,
    sample: Option<&ContainerSample>,
) -> cri::ContainerStats {
    let attributes = Some(cri::ContainerAttributes {
        id: record.id.clone(),
        metadata: record.config.metadata.clone(),
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
    });
    let Some(sample) = sample else {
        return cri::ContainerStats {
            attributes,
            ..Default::default()
        };
    };
    let (timestamp, cgroup) = (sample.timestamp, &sample.stats);
    cri::ContainerStats {
        attributes,
        cpu: Some(cpu_usage(timestamp, cgroup, sample.cpu_nano_cores)),
        memory: Some(memory_usage(timestamp, cgroup)),
        writable_layer: sample.layer.as_ref().map(|layer| cri::FilesystemUsage {
            timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: stats.config.root.join("containers").display().to_string(),
            }),
            used_bytes: value(layer.used_bytes),
            inodes_used: value(layer.inodes_used),
        }),
        swap: cgroup.memory.swap_bytes.map(|swap| cri::SwapUsage {
            timestamp,
            swap_available_bytes: None,
            swap_usage_bytes: value(swap),
        }),
        io: cgroup
            .pressure
            .as_ref()
            .and_then(|pressure| pressure.io.as_ref())
            .map(|io| cri::IoUsage {
                timestamp,
                psi: Some(psi(io)),
            }),
    }
}

pub async fn container_stats(
    stats: Arc<Stats>,
    request: cri::ContainerStatsRequest,
) -> Result<cri::ContainerStatsResponse, CridError> {
    let record = existing(
        &stats.containers,
        "container_id",
        &request.container_id,
        "container",
    )?;
    let running = running(&stats, vec![record.clone()]).await;
    let samples = sample_containers(&stats, &running, Scope::Some, Detail::Cri).await?;
    Ok(cri::ContainerStatsResponse {
        stats: Some(container_stats_of(
            &stats,
            &record,
            samples.get(&record.id).map(Arc::as_ref),
        )),
    })
}

pub async fn list_container_stats(
    stats: Arc<Stats>,
    request: cri::ListContainerStatsRequest,
) -> Result<cri::ListContainerStatsResponse, CridError> {
    let filter = request.filter.unwrap_or_default();
    validate_id_filter("filter.id", &filter.id)?;
    validate_id_filter("filter.pod_sandbox_id", &filter.pod_sandbox_id)?;
    validate_label_selector("filter.label_selector", &filter.label_selector)?;
    let records = stats.containers.filtered(|record| {
        has_cgroup(record)
            && record.id.starts_with(&filter.id)
            && record.pod_id.starts_with(&filter.pod_sandbox_id)
            && labels_match(&record.config.labels, &filter.label_selector)
    });
    let records = running(&stats, records).await;
    let unfiltered = filter.id.is_empty()
        && filter.pod_sandbox_id.is_empty()
        && filter.label_selector.is_empty();
    let scope = if unfiltered { Scope::All } else { Scope::Some };
    let samples = sample_containers(&stats, &records, scope, Detail::Cri).await?;
    let stats = records
        .iter()
        .filter_map(|record| {
            let sample = samples.get(&record.id)?;
            Some(container_stats_of(&stats, record, Some(sample)))
        })
        .collect();
    Ok(cri::ListContainerStatsResponse { stats })
}

fn network_usage(timestamp: i64, sample: &PodSample) -> Option<cri::NetworkUsage> {
    let interfaces: Vec<cri::NetworkInterfaceUsage> = sample
        .network
        .as_ref()?
        .iter()
        .map(|interface| cri::NetworkInterfaceUsage {
            name: interface.name.clone(),
            rx_bytes: value(interface.rx_bytes),
            rx_errors: value(interface.rx_errors),
            tx_bytes: value(interface.tx_bytes),
            tx_errors: value(interface.tx_errors),
        })
        .collect();
    Some(cri::NetworkUsage {
        timestamp,
        default_interface: interfaces
            .iter()
            .find(|interface| interface.name == DEFAULT_INTERFACE)
            .cloned(),
        interfaces,
    })
}

fn pod_stats_of(
    record: &PodRecord,
    sample: Option<&PodSample>,
    containers: Vec<cri::ContainerStats>,
) -> cri::PodSandboxStats {
    let attributes = Some(cri::PodSandboxAttributes {
        id: record.id.clone(),
        metadata: record.config.metadata.clone(),
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
    });
    let mut linux = cri::LinuxPodSandboxStats {
        containers,
        ..Default::default()
    };
    if let Some(sample) = sample {
        let timestamp = sample.timestamp;
        if let Some(stats) = &sample.cgroup {
            linux.cpu = Some(cpu_usage(timestamp, stats, sample.cpu_nano_cores));
            linux.memory = Some(memory_usage(timestamp, stats));
            linux.process = Some(cri::ProcessUsage {
                timestamp,
                process_count: value(stats.pids.current),
            });
            linux.io = stats
                .pressure
                .as_ref()
                .and_then(|pressure| pressure.io.as_ref())
                .map(|io| cri::IoUsage {
                    timestamp,
                    psi: Some(psi(io)),
                });
        }
        linux.network = network_usage(timestamp, sample);
    }
    cri::PodSandboxStats {
        attributes,
        linux: Some(linux),
        windows: None,
    }
}

/// Stats of `pods`, each with its containers'.
async fn pods_stats(
    stats: &Stats,
    pods: &[Arc<PodRecord>],
    scope: Scope,
) -> Result<Vec<cri::PodSandboxStats>, CridError> {
    let pod_ids: HashSet<&str> = pods.iter().map(|pod| pod.id.as_str()).collect();
    let containers = stats
        .containers
        .filtered(|record| has_cgroup(record) && pod_ids.contains(record.pod_id.as_str()));
    let containers = running(stats, containers).await;
    let container_samples = sample_containers(stats, &containers, scope, Detail::Cri).await?;
    let pod_samples = sample_pods(stats, pods, scope, Detail::Cri).await?;
    Ok(pods
        .iter()
        .map(|pod| {
            let containers = containers
                .iter()
                .filter(|record| record.pod_id == pod.id)
                .filter_map(|record| {
                    let sample = container_samples.get(&record.id)?;
                    Some(container_stats_of(stats, record, Some(sample)))
                })
                .collect();
            pod_stats_of(pod, pod_samples.get(&pod.id).map(Arc::as_ref), containers)
        })
        .collect())
}

pub async fn pod_sandbox_stats(
    stats: Arc<Stats>,
    request: cri::PodSandboxStatsRequest,
) -> Result<cri::PodSandboxStatsResponse, CridError> {
    let record = existing(
        &stats.pods,
        "pod_sandbox_id",
        &request.pod_sandbox_id,
        "pod sandbox",
    )?;
    let mut stats = pods_stats(&stats, &[record], Scope::Some).await?;
    Ok(cri::PodSandboxStatsResponse { stats: stats.pop() })
}

pub async fn list_pod_sandbox_stats(
    stats: Arc<Stats>,
    request: cri::ListPodSandboxStatsRequest,
) -> Result<cri::ListPodSandboxStatsResponse, CridError> {
    let filter = request.filter.unwrap_or_default();
    validate_id_filter("filter.id", &filter.id)?;
    validate_label_selector("filter.label_selector", &filter.label_selector)?;
    let pods = stats.pods.filtered(|record| {
        record.phase == PodPhase::Ready
            && record.id.starts_with(&filter.id)
            && labels_match(&record.config.labels, &filter.label_selector)
    });
    let unfiltered = filter.id.is_empty() && filter.label_selector.is_empty();
    let scope = if unfiltered { Scope::All } else { Scope::Some };
    Ok(cri::ListPodSandboxStatsResponse {
        stats: pods_stats(&stats, &pods, scope).await?,
    })
}

pub fn list_metric_descriptors() -> cri::ListMetricDescriptorsResponse {
    cri::ListMetricDescriptorsResponse {
        descriptors: series::DESCRIPTORS
            .iter()
            .map(|descriptor| cri::MetricDescriptor {
                name: descriptor.name.into(),
                help: descriptor.help.into(),
                label_keys: descriptor
                    .label_keys()
                    .into_iter()
                    .map(String::from)
                    .collect(),
            })
            .collect(),
    }
}

fn pod_names(pod: Option<&PodRecord>) -> (String, String) {
    pod.and_then(|pod| pod.config.metadata.as_ref())
        .map(|metadata| (metadata.name.clone(), metadata.namespace.clone()))
        .unwrap_or_default()
}

/// A container's labels on its series.
fn container_labels(record: &ContainerRecord, pod: Option<&PodRecord>) -> Labels {
    let (pod, namespace) = pod_names(pod);
    Labels {
        container: record
            .config
            .metadata
            .as_ref()
            .map(|metadata| metadata.name.clone())
            .unwrap_or_default(),
        pod,
        namespace,
        id: record.cgroup.clone(),
        image: record.image_ref.clone(),
        name: record.id.clone(),
    }
}

/// A pod's labels on its own series (network, pod cgroup): `container`
/// empty, as cAdvisor shows a pod.
fn pod_labels(record: &PodRecord) -> Labels {
    let (pod, namespace) = pod_names(Some(record));
    Labels {
        container: String::new(),
        pod,
        namespace,
        id: record
            .sandbox
            .cgroup
            .as_ref()
            .map(|placement| placement.pod.clone())
            .unwrap_or_default(),
        image: String::new(),
        name: record.id.clone(),
    }
}

/// Every ready pod's and running container's points, sampled once.
struct Sampled {
    pods: Vec<(Arc<PodRecord>, Vec<Point>, i64)>,
    containers: Vec<(Arc<ContainerRecord>, Vec<Point>, i64)>,
}

/// Where [`everything`] takes its samples from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Samples {
    /// The collector reads whatever is older than its freshness window.
    Read,
    /// The collector's kept samples, however old (a scrape: it never
    /// waits for a reading, nor makes a stats RPC wait).
    Kept,
}

/// How often the collector samples everything for `/metrics`, as
/// kubelet's cAdvisor housekeeping does: a scrape then only encodes. 100
/// containers cost about 15-30 ms of reading per round here.
const METRICS_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

async fn everything(stats: &Stats, source: Samples) -> Result<Sampled, CridError> {
    let pods = stats
        .pods
        .filtered(|record| record.phase == PodPhase::Ready);
    let containers = running(stats, stats.containers.filtered(has_cgroup)).await;
    let (container_samples, pod_samples) = match source {
        Samples::Read => (
            sample_containers(stats, &containers, Scope::All, Detail::Full).await?,
            sample_pods(stats, &pods, Scope::All, Detail::Full).await?,
        ),
        Samples::Kept => (
            stats
                .collector
                .kept_containers(containers.iter().map(|record| record.id.as_str())),
            stats
                .collector
                .kept_pods(pods.iter().map(|record| record.id.as_str())),
        ),
    };
    let by_id: HashMap<&str, &Arc<PodRecord>> =
        pods.iter().map(|pod| (pod.id.as_str(), pod)).collect();
    let containers = containers
        .iter()
        .filter_map(|record| {
            let sample = container_samples.get(&record.id)?;
            let pod = by_id.get(record.pod_id.as_str()).map(|pod| pod.as_ref());
            let labels = container_labels(record, pod);
            let points = series::container_points(&labels, sample, record.started_at);
            Some((record.clone(), points, sample.timestamp))
        })
        .collect();
    let pods = pods
        .iter()
        .filter_map(|record| {
            let sample = pod_samples.get(&record.id)?;
            let labels = pod_labels(record);
            let mut points = series::network_points(&labels, sample);
            // The pod cgroup's own series, as cAdvisor shows a pod's
            // (`container` empty).
            if let Some(stats) = &sample.cgroup {
                let as_container = ContainerSample {
                    timestamp: sample.timestamp,
                    stats: stats.clone(),
                    cpu_nano_cores: sample.cpu_nano_cores,
                    layer: None,
                };
                points.extend(series::container_points(
                    &labels,
                    &as_container,
                    record.created_at,
                ));
            }
            Some((record.clone(), points, sample.timestamp))
        })
        .collect();
    Ok(Sampled { pods, containers })
}

fn cri_metric(point: Point, timestamp: i64) -> cri::Metric {
    cri::Metric {
        name: point.descriptor.name.into(),
        timestamp,
        metric_type: match point.descriptor.kind {
            series::Kind::Counter => cri::MetricType::Counter,
            series::Kind::Gauge => cri::MetricType::Gauge,
        }
        .into(),
        label_values: point.label_values,
        // The CRI carries whole numbers: seconds are truncated there (the
        // exact figures are on /metrics and in the stats RPCs).
        value: value(point.value as u64),
    }
}

pub async fn list_pod_sandbox_metrics(
    stats: Arc<Stats>,
) -> Result<cri::ListPodSandboxMetricsResponse, CridError> {
    let Sampled { pods, containers } = everything(&stats, Samples::Read).await?;
    let mut by_pod: HashMap<String, Vec<cri::ContainerMetrics>> = HashMap::new();
    for (record, points, timestamp) in containers {
        by_pod
            .entry(record.pod_id.clone())
            .or_default()
            .push(cri::ContainerMetrics {
                container_id: record.id.clone(),
                metrics: points
                    .into_iter()
                    .map(|point| cri_metric(point, timestamp))
                    .collect(),
            });
    }
    let pod_metrics = pods
        .into_iter()
        .map(|(record, points, timestamp)| cri::PodSandboxMetrics {
            pod_sandbox_id: record.id.clone(),
            metrics: points
                .into_iter()
                .map(|point| cri_metric(point, timestamp))
                .collect(),
            container_metrics: by_pod.remove(&record.id).unwrap_or_default(),
        })
        .collect();
    Ok(cri::ListPodSandboxMetricsResponse { pod_metrics })
}

/// Sets crid's own pod and container counts by state from what List shows
/// now, counts the OOM kills among the containers that ended since crid
/// started, and takes the image store's pull figures.
async fn sample_own(stats: &Stats) {
    let controllers = &stats.controllers;
    let mut pods = metrics::own::PodStates::default();
    for (_, ready) in controllers.pods.list(|_| true).await {
        *if ready {
            &mut pods.ready
        } else {
            &mut pods.not_ready
        } += 1;
    }
    let listed = controllers.containers.list(|_| true).await;
    let mut containers = metrics::own::ContainerStates::default();
    for (_, observed) in &listed {
        *match observed.state {
            cri::ContainerState::ContainerCreated => &mut containers.created,
            cri::ContainerState::ContainerRunning => &mut containers.running,
            cri::ContainerState::ContainerExited => &mut containers.exited,
            cri::ContainerState::ContainerUnknown => &mut containers.unknown,
        } += 1;
    }
    metrics::own::saw_oom_kills(
        listed
            .iter()
            .filter(|(_, observed)| {
                observed.reason == OOM_KILLED && observed.finished_at >= controllers.started_at
            })
            .map(|(record, _)| record.id.as_str()),
        listed.iter().map(|(record, _)| record.id.as_str()),
    );
    metrics::own::set_states(pods, containers);
    metrics::own::set_pull_totals(controllers.images.pull_totals());
}

/// Samples every running container and ready pod every
/// [`METRICS_REFRESH`], for `/metrics` (and crid's own states, so an OOM
/// kill is counted even when nobody scrapes before its container goes);
/// runs until aborted.
pub async fn refresh_for_metrics(stats: Arc<Stats>) {
    let mut ticks = tokio::time::interval(METRICS_REFRESH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = everything(&stats, Samples::Read).await {
            tracing::warn!(%error, "cannot sample containers for /metrics");
        }
        sample_own(&stats).await;
    }
}

/// What `/metrics` shows: the collector's kept samples of the containers
/// and pods that exist at scrape time (a removed one is gone at once, a
/// new one appears with the next sampling).
pub fn metrics_source(stats: Arc<Stats>) -> metrics::exposition::PointsSource {
    Arc::new(move || {
        let stats = stats.clone();
        Box::pin(async move {
            sample_own(&stats).await;
            match everything(&stats, Samples::Kept).await {
                Ok(Sampled { pods, containers }) => containers
                    .into_iter()
                    .flat_map(|(_, points, _)| points)
                    .chain(pods.into_iter().flat_map(|(_, points, _)| points))
                    .collect(),
                Err(error) => {
                    tracing::warn!(%error, "cannot sample containers for /metrics");
                    Vec::new()
                }
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_filters_are_hex_prefixes() {
        assert!(validate_id_filter("filter.id", "").is_ok());
        assert!(validate_id_filter("filter.id", "0a9f").is_ok());
        let error = validate_id_filter("filter.pod_sandbox_id", "not-an-id").expect_err("bad");
        assert!(
            error.to_string().contains("filter.pod_sandbox_id"),
            "{error}"
        );
        assert!(validate_id_filter("filter.id", &"a".repeat(65)).is_err());
        let selector = HashMap::from([(String::new(), "x".to_string())]);
        let error = validate_label_selector("filter.label_selector", &selector).expect_err("bad");
        assert!(
            error.to_string().contains("filter.label_selector"),
            "{error}"
        );
    }
}
