//! The one place container and pod figures are read. It samples on demand:
//! a caller (a stats RPC, a scrape) names what it wants, and whatever was
//! sampled less than [`Options::freshness`] ago is answered from the kept
//! sample, everything older is read again. So a kubelet poll and a scrape
//! arriving together read the files once, nobody waits for a sampler's
//! next tick, an idle node costs nothing, and a removed container is never
//! read again. The latest sample is kept; a new one's rates (CPU per
//! second) are computed against it, the previous, when it is taken.
//!
//! Samplings take turns (one at a time), so two callers asking at once do
//! not both read: the second finds the first one's figures fresh. For
//! `/metrics` the daemon asks for everything every 10 s and scrapes show
//! the kept samples ([`Collector::kept_containers`]), so a scrape reads nothing.
//!
//! A caller names the figures it needs ([`Detail`]): the CRI calls read
//! only the ones the CRI reports (a sample keeps the others from its
//! cgroup's last full reading), the periodic sampling for `/metrics` all
//! of them.
//!
//! Each sampled cgroup's control files stay open from one reading to the
//! next ([`ControlFiles`]): a reading is then a pread per file. They are
//! closed with its sample, when the cgroup is gone or a sampling of
//! everything no longer names it (at the latest at the daemon's next 10 s
//! sampling).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtime::cgroup::Hierarchy;
pub use runtime::cgroup::stats::Detail;
use runtime::cgroup::stats::{CgroupStats, ControlFiles, StatsError};
use runtime::netstats::{self, InterfaceStats};

use crate::layer::{self, LayerUsage};

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// A sample younger than this is answered as it is.
    pub freshness: Duration,
    /// How often a container's writable layer is walked again.
    pub layer_refresh: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            // Below kubelet's and Prometheus's intervals (10 s, 15 s and
            // up), above the gap between kubelet's paired stats calls.
            freshness: Duration::from_secs(1),
            // cAdvisor's fs usage period.
            layer_refresh: Duration::from_secs(60),
        }
    }
}

/// A container to sample.
#[derive(Debug, Clone)]
pub struct ContainerTarget {
    pub id: String,
    /// Its cgroup, as the hierarchy names it (`/kubepods/…/<id>`).
    pub cgroup: String,
    /// Its writable layer (overlay upper dir), if it has one.
    pub layer: Option<PathBuf>,
}

/// A pod to sample.
#[derive(Debug, Clone)]
pub struct PodTarget {
    pub id: String,
    /// The pod cgroup (sandbox and containers inside).
    pub cgroup: Option<String>,
    /// Its pinned network namespace, when it has its own.
    pub netns: Option<PathBuf>,
}

/// Which targets a call names: every one crid has (so any other kept
/// sample belongs to something removed and is dropped), or some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    Some,
}

#[derive(Debug, Clone)]
pub struct ContainerSample {
    /// When it was read, nanoseconds since the epoch.
    pub timestamp: i64,
    pub stats: CgroupStats,
    /// CPU used per second since the previous sample, in billionths of a
    /// core; None for the first sample.
    pub cpu_nano_cores: Option<u64>,
    pub layer: Option<LayerUsage>,
}

#[derive(Debug, Clone)]
pub struct PodSample {
    pub timestamp: i64,
    /// None when the pod cgroup is gone.
    pub cgroup: Option<CgroupStats>,
    pub cpu_nano_cores: Option<u64>,
    /// Per interface (no loopback); None without a netns of its own or
    /// when it is gone.
    pub network: Option<Vec<InterfaceStats>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("sampling failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

struct Kept<T> {
    latest: Arc<T>,
    taken: Instant,
    /// When the figures a [`Detail::Cri`] reading leaves as they were were
    /// last read: a [`Detail::Full`] caller wants them fresh.
    full_taken: Instant,
}

impl<T> Kept<T> {
    /// `latest`, read with `detail` after `previous`.
    fn after(previous: Option<Kept<T>>, latest: T, taken: Instant, detail: Detail) -> Kept<T> {
        // Without a previous reading (so with new control files) a CRI
        // reading reads every figure too.
        let full_taken = match (detail, previous) {
            (Detail::Cri, Some(previous)) => previous.full_taken,
            _ => taken,
        };
        Kept {
            latest: Arc::new(latest),
            taken,
            full_taken,
        }
    }
}

#[derive(Default)]
struct State {
    containers: HashMap<String, Kept<ContainerSample>>,
    pods: HashMap<String, Kept<PodSample>>,
    layers: HashMap<String, (Instant, LayerUsage)>,
}

/// Each sampled cgroup's control files, kept open for its next reading,
/// by container or pod id; only the sampling whose turn it is uses them.
#[derive(Default)]
struct Files {
    containers: HashMap<String, ControlFiles>,
    pods: HashMap<String, ControlFiles>,
}

struct Inner {
    hierarchy: Hierarchy,
    options: Options,
    state: Mutex<State>,
    files: Mutex<Files>,
    turn: tokio::sync::Mutex<()>,
}

/// Cheap to clone; every clone shares the samples.
#[derive(Clone)]
pub struct Collector {
    inner: Arc<Inner>,
}

impl Collector {
    pub fn new(hierarchy: Hierarchy, options: Options) -> Collector {
        Collector {
            inner: Arc::new(Inner {
                hierarchy,
                options,
                state: Mutex::new(State::default()),
                files: Mutex::new(Files::default()),
                turn: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The latest samples of `targets` with at least `detail`'s figures,
    /// by id; a container whose cgroup is gone has none.
    pub async fn containers(
        &self,
        targets: Vec<ContainerTarget>,
        scope: Scope,
        detail: Detail,
    ) -> Result<HashMap<String, Arc<ContainerSample>>, CollectorError> {
        let _turn = self.inner.turn.lock().await;
        let inner = self.inner.clone();
        Ok(
            tokio::task::spawn_blocking(move || inner.sample_containers(targets, scope, detail))
                .await?,
        )
    }

    /// The latest samples of `targets` with at least `detail`'s figures,
    /// by id.
    pub async fn pods(
        &self,
        targets: Vec<PodTarget>,
        scope: Scope,
        detail: Detail,
    ) -> Result<HashMap<String, Arc<PodSample>>, CollectorError> {
        let _turn = self.inner.turn.lock().await;
        let inner = self.inner.clone();
        Ok(tokio::task::spawn_blocking(move || inner.sample_pods(targets, scope, detail)).await?)
    }
}

impl Collector {
    /// The kept samples of every figure of `ids`, however old, reading
    /// nothing: what a scrape shows between the periodic samplings.
    pub fn kept_containers<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> HashMap<String, Arc<ContainerSample>> {
        let state = self.inner.lock();
        ids.into_iter()
            .filter_map(|id| Some((id.to_owned(), state.containers.get(id)?.latest.clone())))
            .collect()
    }

    /// The kept samples of `ids`, however old, reading nothing.
    pub fn kept_pods<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> HashMap<String, Arc<PodSample>> {
        let state = self.inner.lock();
        ids.into_iter()
            .filter_map(|id| Some((id.to_owned(), state.pods.get(id)?.latest.clone())))
            .collect()
    }
}

/// CPU per second between two cumulative readings, in billionths of a core.
fn nano_cores(previous_ns: u64, latest_ns: u64, elapsed: Duration) -> Option<u64> {
    let elapsed = elapsed.as_nanos();
    if elapsed == 0 {
        return None;
    }
    let used = u128::from(latest_ns.saturating_sub(previous_ns));
    u64::try_from(used * 1_000_000_000 / elapsed).ok()
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere leaves only samples behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn files(&self) -> std::sync::MutexGuard<'_, Files> {
        // Only open files behind: still usable.
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stale<T>(
        &self,
        kept: &HashMap<String, Kept<T>>,
        id: &str,
        detail: Detail,
        now: Instant,
    ) -> bool {
        kept.get(id).is_none_or(|kept| {
            let taken = match detail {
                Detail::Cri => kept.taken,
                Detail::Full => kept.full_taken,
            };
            now.duration_since(taken) >= self.options.freshness
        })
    }

    fn sample_containers(
        &self,
        targets: Vec<ContainerTarget>,
        scope: Scope,
        detail: Detail,
    ) -> HashMap<String, Arc<ContainerSample>> {
        let now = Instant::now();
        let (stale, layers_due): (Vec<&ContainerTarget>, HashSet<&str>) = {
            let state = self.lock();
            let stale: Vec<&ContainerTarget> = targets
                .iter()
                .filter(|target| self.stale(&state.containers, &target.id, detail, now))
                .collect();
            let layers_due = stale
                .iter()
                .filter(|target| {
                    state.layers.get(&target.id).is_none_or(|(walked, _)| {
                        now.duration_since(*walked) >= self.options.layer_refresh
                    })
                })
                .map(|target| target.id.as_str())
                .collect();
            (stale, layers_due)
        };
        // Read without holding the lock.
        let mut files = self.files();
        let reads: Vec<(&ContainerTarget, Result<CgroupStats, StatsError>, Option<LayerUsage>)> =
            stale
                .into_iter()
                .map(|target| {
                    let stats = self.hierarchy.stats_with(
                        &target.cgroup,
                        files.containers.entry(target.id.clone()).or_default(),
                        detail,
                    );
                    let walked = match (&target.layer, stats.is_ok()) {
                        (Some(dir), true) if layers_due.contains(target.id.as_str()) => {
                            layer::usage(dir)
                                .inspect_err(|error| {
                                    tracing::debug!(container_id = %target.id, %error, "cannot measure the writable layer")
                                })
                                .ok()
                        }
                        _ => None,
                    };
                    (target, stats, walked)
                })
                .collect();
        let timestamp = runtime::now_nanos();
        let taken = Instant::now();

        let mut state = self.lock();
        for (target, stats, walked) in reads {
            let stats = match stats {
                Ok(stats) => stats,
                Err(error) => {
                    if !matches!(error, StatsError::Gone(_)) {
                        tracing::warn!(container_id = %target.id, %error, "cannot read container stats");
                    }
                    files.containers.remove(&target.id);
                    state.containers.remove(&target.id);
                    state.layers.remove(&target.id);
                    continue;
                }
            };
            if let Some(usage) = walked {
                state.layers.insert(target.id.clone(), (taken, usage));
            }
            let previous = state.containers.remove(&target.id);
            let cpu_nano_cores = previous.as_ref().and_then(|kept| {
                nano_cores(
                    kept.latest.stats.cpu.usage_ns,
                    stats.cpu.usage_ns,
                    taken.duration_since(kept.taken),
                )
            });
            let sample = ContainerSample {
                timestamp,
                stats,
                cpu_nano_cores,
                layer: state.layers.get(&target.id).map(|(_, usage)| usage.clone()),
            };
            state.containers.insert(
                target.id.clone(),
                Kept::after(previous, sample, taken, detail),
            );
        }
        if scope == Scope::All {
            let wanted: HashSet<&str> = targets.iter().map(|target| target.id.as_str()).collect();
            state
                .containers
                .retain(|id, _| wanted.contains(id.as_str()));
            state.layers.retain(|id, _| wanted.contains(id.as_str()));
            files
                .containers
                .retain(|id, _| wanted.contains(id.as_str()));
        }
        targets
            .iter()
            .filter_map(|target| {
                let kept = state.containers.get(&target.id)?;
                Some((target.id.clone(), kept.latest.clone()))
            })
            .collect()
    }

    fn sample_pods(
        &self,
        targets: Vec<PodTarget>,
        scope: Scope,
        detail: Detail,
    ) -> HashMap<String, Arc<PodSample>> {
        let now = Instant::now();
        let stale: Vec<&PodTarget> = {
            let state = self.lock();
            targets
                .iter()
                .filter(|target| self.stale(&state.pods, &target.id, detail, now))
                .collect()
        };
        let mut files = self.files();
        let cgroups: Vec<Option<CgroupStats>> = stale
            .iter()
            .map(|target| {
                let cgroup = target.cgroup.as_deref()?;
                let read = self.hierarchy.stats_with(
                    cgroup,
                    files.pods.entry(target.id.clone()).or_default(),
                    detail,
                );
                if let Err(error) = &read {
                    if !matches!(error, StatsError::Gone(_)) {
                        tracing::warn!(pod_id = %target.id, %error, "cannot read pod cgroup stats");
                    }
                    files.pods.remove(&target.id);
                }
                read.ok()
            })
            .collect();
        // Every pod's netns in one pass of one thread.
        let with_netns: Vec<(usize, PathBuf)> = stale
            .iter()
            .enumerate()
            .filter_map(|(index, target)| Some((index, target.netns.clone()?)))
            .collect();
        let mut networks: Vec<Option<Vec<InterfaceStats>>> = vec![None; stale.len()];
        match netstats::read_in_namespaces(with_netns.iter().map(|(_, p)| p.clone()).collect()) {
            Ok(results) => {
                for ((index, path), result) in with_netns.iter().zip(results) {
                    match result {
                        Ok(interfaces) => networks[*index] = Some(interfaces),
                        Err(netstats::NetStatsError::Gone(_)) => {}
                        Err(error) => {
                            tracing::warn!(netns = %path.display(), %error, "cannot read pod network stats")
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read pod network stats"),
        }
        let timestamp = runtime::now_nanos();
        let taken = Instant::now();

        let mut state = self.lock();
        for ((target, cgroup), network) in stale.into_iter().zip(cgroups).zip(networks) {
            let previous = state.pods.remove(&target.id);
            let cpu_nano_cores = previous.as_ref().and_then(|kept| {
                let (before, now) = (kept.latest.cgroup.as_ref()?, cgroup.as_ref()?);
                nano_cores(
                    before.cpu.usage_ns,
                    now.cpu.usage_ns,
                    taken.duration_since(kept.taken),
                )
            });
            let sample = PodSample {
                timestamp,
                cgroup,
                cpu_nano_cores,
                network,
            };
            state.pods.insert(
                target.id.clone(),
                Kept::after(previous, sample, taken, detail),
            );
        }
        if scope == Scope::All {
            let wanted: HashSet<&str> = targets.iter().map(|target| target.id.as_str()).collect();
            state.pods.retain(|id, _| wanted.contains(id.as_str()));
            files.pods.retain(|id, _| wanted.contains(id.as_str()));
        }
        targets
            .iter()
            .filter_map(|target| {
                let kept = state.pods.get(&target.id)?;
                Some((target.id.clone(), kept.latest.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nano_cores_is_cpu_time_per_wall_second() {
        assert_eq!(
            nano_cores(1_000_000_000, 1_500_000_000, Duration::from_secs(1)),
            Some(500_000_000)
        );
        assert_eq!(
            nano_cores(0, 4_000_000_000, Duration::from_secs(2)),
            Some(2_000_000_000)
        );
        assert_eq!(nano_cores(5, 3, Duration::from_secs(1)), Some(0), "reset");
        assert_eq!(nano_cores(0, 1, Duration::ZERO), None);
    }

    /// A v2 tree of files is a cgroup to the reader: samples are kept
    /// within the freshness window, re-read after it with a rate from the
    /// previous one, and a cgroup that goes leaves no sample behind.
    #[tokio::test]
    async fn samples_are_kept_fresh_then_renewed_then_dropped() {
        let root = tempfile::tempdir().expect("tempdir");
        let cgroup = root.path().join("c1");
        std::fs::create_dir(&cgroup).expect("mkdir");
        let write_usage = |usec: u64| {
            std::fs::write(cgroup.join("cpu.stat"), format!("usage_usec {usec}\n")).expect("write")
        };
        write_usage(1000);
        let collector = Collector::new(
            Hierarchy::V2 {
                root: root.path().to_owned(),
            },
            Options {
                freshness: Duration::from_millis(200),
                layer_refresh: Duration::from_secs(60),
            },
        );
        let targets = vec![ContainerTarget {
            id: "c1".into(),
            cgroup: "/c1".into(),
            layer: None,
        }];
        let first = collector
            .containers(targets.clone(), Scope::All, Detail::Full)
            .await
            .expect("sample");
        let first = first.get("c1").expect("c1").clone();
        assert_eq!(first.stats.cpu.usage_ns, 1_000_000);
        assert_eq!(first.cpu_nano_cores, None);

        write_usage(2000);
        // A full sample is fresh for a CRI call too.
        let again = collector
            .containers(targets.clone(), Scope::Some, Detail::Cri)
            .await
            .expect("sample");
        assert!(Arc::ptr_eq(&first, &again["c1"]), "fresh: not read again");
        let kept = collector.kept_containers(["c1", "other"]);
        assert!(
            Arc::ptr_eq(&first, &kept["c1"]),
            "kept: the latest, not read"
        );
        assert_eq!(kept.len(), 1);

        tokio::time::sleep(Duration::from_millis(250)).await;
        let renewed = collector
            .containers(targets.clone(), Scope::Some, Detail::Cri)
            .await
            .expect("sample");
        assert_eq!(renewed["c1"].stats.cpu.usage_ns, 2_000_000);
        assert!(
            renewed["c1"].cpu_nano_cores.is_some(),
            "a rate against the previous"
        );
        // A full sampling reads again although the CRI's sample is fresh.
        write_usage(3000);
        let full = collector
            .containers(targets.clone(), Scope::Some, Detail::Full)
            .await
            .expect("sample");
        assert_eq!(full["c1"].stats.cpu.usage_ns, 3_000_000);
        let kept = collector.kept_containers(["c1"]);
        assert!(Arc::ptr_eq(&full["c1"], &kept["c1"]), "kept: the latest");

        // Not among every target any more: dropped without a read.
        let none = collector
            .containers(Vec::new(), Scope::All, Detail::Full)
            .await
            .expect("sample");
        assert!(none.is_empty());
        assert!(collector.inner.lock().containers.is_empty());

        std::fs::remove_file(cgroup.join("cpu.stat")).expect("rm");
        std::fs::remove_dir(&cgroup).expect("rmdir");
        let gone = collector
            .containers(targets, Scope::All, Detail::Cri)
            .await
            .expect("sample");
        assert!(gone.is_empty(), "a gone cgroup has no sample");
    }
}
