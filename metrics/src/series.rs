//! The container metrics crid exposes, with cAdvisor's names, help texts
//! and labels: one table read by both `/metrics` and the CRI's
//! ListMetricDescriptors / ListPodSandboxMetrics, and the points of one
//! container's (or pod's network's) sample.

use crate::collector::{ContainerSample, PodSample};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// cAdvisor's name (counters end in `_total`).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// Labels beyond [`BASE_LABELS`] (`cpu`, `interface`, …), last.
    pub extra_labels: &'static [&'static str],
}

/// Who a series is about, in the labels Prometheus users chart:
/// `container`/`pod`/`namespace` as Kubernetes names them, `id` the
/// cgroup, `image` the image, `name` the runtime's container id.
pub const BASE_LABELS: [&str; 6] = ["container", "pod", "namespace", "id", "image", "name"];

impl Descriptor {
    pub fn label_keys(&self) -> Vec<&'static str> {
        BASE_LABELS
            .iter()
            .copied()
            .chain(self.extra_labels.iter().copied())
            .collect()
    }
}

macro_rules! descriptors {
    ($($id:ident: $name:literal, $kind:ident, $extra:expr, $help:literal;)*) => {
        $(pub static $id: Descriptor = Descriptor {
            name: $name,
            help: $help,
            kind: Kind::$kind,
            extra_labels: $extra,
        };)*
        /// Every descriptor, in the order `/metrics` shows them.
        pub static DESCRIPTORS: &[&Descriptor] = &[$(&$id),*];
    };
}

descriptors! {
    CPU_USAGE: "container_cpu_usage_seconds_total", Counter, &["cpu"],
        "Cumulative cpu time consumed in seconds.";
    CPU_USER: "container_cpu_user_seconds_total", Counter, &[],
        "Cumulative user cpu time consumed in seconds.";
    CPU_SYSTEM: "container_cpu_system_seconds_total", Counter, &[],
        "Cumulative system cpu time consumed in seconds.";
    CPU_PERIODS: "container_cpu_cfs_periods_total", Counter, &[],
        "Number of elapsed enforcement period intervals.";
    CPU_THROTTLED_PERIODS: "container_cpu_cfs_throttled_periods_total", Counter, &[],
        "Number of throttled period intervals.";
    CPU_THROTTLED: "container_cpu_cfs_throttled_seconds_total", Counter, &[],
        "Total time duration the container has been throttled.";
    MEMORY_USAGE: "container_memory_usage_bytes", Gauge, &[],
        "Current memory usage in bytes, including all memory regardless of when it was accessed.";
    MEMORY_WORKING_SET: "container_memory_working_set_bytes", Gauge, &[],
        "Current working set in bytes.";
    MEMORY_RSS: "container_memory_rss", Gauge, &[],
        "Size of RSS in bytes.";
    MEMORY_CACHE: "container_memory_cache", Gauge, &[],
        "Number of bytes of page cache memory.";
    MEMORY_SWAP: "container_memory_swap", Gauge, &[],
        "Container swap usage in bytes.";
    // A count, but a gauge here: an OpenMetrics counter's name ends in _total.
    MEMORY_FAILCNT: "container_memory_failcnt", Gauge, &[],
        "Number of memory usage hits limits.";
    MEMORY_FAILURES: "container_memory_failures_total", Counter, &["failure_type"],
        "Cumulative count of memory allocation failures.";
    OOM_EVENTS: "container_oom_events_total", Counter, &[],
        "Count of out of memory events observed for the container.";
    SPEC_MEMORY_LIMIT: "container_spec_memory_limit_bytes", Gauge, &[],
        "Memory limit for the container.";
    SPEC_CPU_QUOTA: "container_spec_cpu_quota", Gauge, &[],
        "CPU quota of the container.";
    SPEC_CPU_PERIOD: "container_spec_cpu_period", Gauge, &[],
        "CPU period of the container.";
    SPEC_CPU_SHARES: "container_spec_cpu_shares", Gauge, &[],
        "CPU share of the container.";
    NETWORK_RX_BYTES: "container_network_receive_bytes_total", Counter, &["interface"],
        "Cumulative count of bytes received.";
    NETWORK_RX_PACKETS: "container_network_receive_packets_total", Counter, &["interface"],
        "Cumulative count of packets received.";
    NETWORK_RX_ERRORS: "container_network_receive_errors_total", Counter, &["interface"],
        "Cumulative count of errors encountered while receiving.";
    NETWORK_RX_DROPPED: "container_network_receive_packets_dropped_total", Counter, &["interface"],
        "Cumulative count of packets dropped while receiving.";
    NETWORK_TX_BYTES: "container_network_transmit_bytes_total", Counter, &["interface"],
        "Cumulative count of bytes transmitted.";
    NETWORK_TX_PACKETS: "container_network_transmit_packets_total", Counter, &["interface"],
        "Cumulative count of packets transmitted.";
    NETWORK_TX_ERRORS: "container_network_transmit_errors_total", Counter, &["interface"],
        "Cumulative count of errors encountered while transmitting.";
    NETWORK_TX_DROPPED: "container_network_transmit_packets_dropped_total", Counter, &["interface"],
        "Cumulative count of packets dropped while transmitting.";
    FS_USAGE: "container_fs_usage_bytes", Gauge, &["device"],
        "Number of bytes that are consumed by the container on this filesystem.";
    FS_INODES_FREE: "container_fs_inodes_free", Gauge, &["device"],
        "Number of available Inodes.";
    PROCESSES: "container_processes", Gauge, &[],
        "Number of processes running inside the container.";
    LAST_SEEN: "container_last_seen", Gauge, &[],
        "Last time a container was seen by the exporter.";
    START_TIME: "container_start_time_seconds", Gauge, &[],
        "Start time of the container since unix epoch in seconds.";
    CPU_PRESSURE_WAITING: "container_pressure_cpu_waiting_seconds_total", Counter, &[],
        "Total time duration tasks in the container have waited due to CPU congestion.";
    CPU_PRESSURE_STALLED: "container_pressure_cpu_stalled_seconds_total", Counter, &[],
        "Total time duration no tasks in the container could make progress due to CPU congestion.";
    MEMORY_PRESSURE_WAITING: "container_pressure_memory_waiting_seconds_total", Counter, &[],
        "Total time duration tasks in the container have waited due to memory congestion.";
    MEMORY_PRESSURE_STALLED: "container_pressure_memory_stalled_seconds_total", Counter, &[],
        "Total time duration no tasks in the container could make progress due to memory congestion.";
    IO_PRESSURE_WAITING: "container_pressure_io_waiting_seconds_total", Counter, &[],
        "Total time duration tasks in the container have waited due to I/O congestion.";
    IO_PRESSURE_STALLED: "container_pressure_io_stalled_seconds_total", Counter, &[],
        "Total time duration no tasks in the container could make progress due to I/O congestion.";
    MEMORY_MAX_USAGE: "container_memory_max_usage_bytes", Gauge, &[],
        "Maximum memory usage recorded in bytes.";
    MEMORY_MAPPED_FILE: "container_memory_mapped_file", Gauge, &[],
        "Size of memory mapped files in bytes.";
    MEMORY_KERNEL: "container_memory_kernel_usage", Gauge, &[],
        "Size of kernel memory allocated in bytes.";
    SPEC_MEMORY_SWAP_LIMIT: "container_spec_memory_swap_limit_bytes", Gauge, &[],
        "Memory swap limit for the container.";
    THREADS: "container_threads", Gauge, &[],
        "Number of threads running inside the container.";
    THREADS_MAX: "container_threads_max", Gauge, &[],
        "Maximum number of threads allowed inside the container, infinity if value is zero.";
    FILE_DESCRIPTORS: "container_file_descriptors", Gauge, &[],
        "Number of open file descriptors for the container.";
    SOCKETS: "container_sockets", Gauge, &[],
        "Number of open sockets for the container.";
    BLKIO_DEVICE_USAGE: "container_blkio_device_usage_total", Counter, &["device", "major", "minor", "operation"],
        "Blkio device bytes usage.";
    FS_READS_BYTES: "container_fs_reads_bytes_total", Counter, &["device"],
        "Cumulative count of bytes read.";
    FS_READS: "container_fs_reads_total", Counter, &["device"],
        "Cumulative count of reads completed.";
    FS_WRITES_BYTES: "container_fs_writes_bytes_total", Counter, &["device"],
        "Cumulative count of bytes written.";
    FS_WRITES: "container_fs_writes_total", Counter, &["device"],
        "Cumulative count of writes completed.";
    FS_INODES_TOTAL: "container_fs_inodes_total", Gauge, &["device"],
        "Number of Inodes.";
    FS_LIMIT: "container_fs_limit_bytes", Gauge, &["device"],
        "Number of bytes that can be consumed by the container on this filesystem.";
}

/// The base labels' values of one container (or, for the network, of its
/// pod: `container` empty, `name` the pod id, as cAdvisor shows the
/// sandbox).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub id: String,
    pub image: String,
    pub name: String,
}

impl Labels {
    fn values(&self, extra: &[&str]) -> Vec<String> {
        [
            &self.container,
            &self.pod,
            &self.namespace,
            &self.id,
            &self.image,
            &self.name,
        ]
        .into_iter()
        .cloned()
        .chain(extra.iter().map(|&value| value.to_owned()))
        .collect()
    }
}

/// One value of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub descriptor: &'static Descriptor,
    /// In [`Descriptor::label_keys`] order.
    pub label_values: Vec<String>,
    pub value: f64,
}

struct Points<'a> {
    labels: &'a Labels,
    points: Vec<Point>,
}

impl Points<'_> {
    fn add(&mut self, descriptor: &'static Descriptor, value: f64) {
        self.add_with(descriptor, &[], value);
    }

    fn add_with(&mut self, descriptor: &'static Descriptor, extra: &[&str], value: f64) {
        self.points.push(Point {
            descriptor,
            label_values: self.labels.values(extra),
            value,
        });
    }
}

const NANOS: f64 = 1e9;
const MICROS: f64 = 1e6;
/// What `device` names for a writable layer: crid's own overlay uppers.
const LAYER_DEVICE: &str = "writable-layer";

/// A container's points from its latest sample; `started_at` (ns since the
/// epoch, 0 if never started) gives its start time.
pub fn container_points(labels: &Labels, sample: &ContainerSample, started_at: i64) -> Vec<Point> {
    let mut points = Points {
        labels,
        points: Vec::with_capacity(DESCRIPTORS.len()),
    };
    let (cpu, memory) = (&sample.stats.cpu, &sample.stats.memory);
    points.add_with(&CPU_USAGE, &["total"], cpu.usage_ns as f64 / NANOS);
    points.add(&CPU_USER, cpu.user_ns as f64 / NANOS);
    points.add(&CPU_SYSTEM, cpu.system_ns as f64 / NANOS);
    points.add(&CPU_PERIODS, cpu.periods as f64);
    points.add(&CPU_THROTTLED_PERIODS, cpu.throttled_periods as f64);
    points.add(&CPU_THROTTLED, cpu.throttled_ns as f64 / NANOS);
    points.add(&MEMORY_USAGE, memory.usage_bytes as f64);
    points.add(&MEMORY_WORKING_SET, memory.working_set_bytes as f64);
    points.add(&MEMORY_RSS, memory.rss_bytes as f64);
    points.add(&MEMORY_CACHE, memory.cache_bytes as f64);
    if let Some(swap) = memory.swap_bytes {
        points.add(&MEMORY_SWAP, swap as f64);
    }
    points.add(&MEMORY_FAILCNT, memory.failcnt as f64);
    points.add_with(&MEMORY_FAILURES, &["pgfault"], memory.page_faults as f64);
    points.add_with(
        &MEMORY_FAILURES,
        &["pgmajfault"],
        memory.major_page_faults as f64,
    );
    points.add(&OOM_EVENTS, memory.oom_kills as f64);
    if let Some(max_usage) = memory.max_usage_bytes {
        points.add(&MEMORY_MAX_USAGE, max_usage as f64);
    }
    points.add(&MEMORY_MAPPED_FILE, memory.mapped_file_bytes as f64);
    points.add(&MEMORY_KERNEL, memory.kernel_bytes as f64);
    points.add(
        &SPEC_MEMORY_SWAP_LIMIT,
        memory.swap_limit_bytes.unwrap_or(0) as f64,
    );
    // cAdvisor shows "no limit" as 0.
    points.add(&SPEC_MEMORY_LIMIT, memory.limit_bytes.unwrap_or(0) as f64);
    if let Some(quota) = cpu.quota_us {
        points.add(&SPEC_CPU_QUOTA, quota as f64);
    }
    points.add(&SPEC_CPU_PERIOD, cpu.period_us as f64);
    points.add(&SPEC_CPU_SHARES, cpu.shares as f64);
    if let Some(layer) = &sample.layer {
        points.add_with(&FS_USAGE, &[LAYER_DEVICE], layer.used_bytes as f64);
        points.add_with(
            &FS_INODES_FREE,
            &[LAYER_DEVICE],
            layer.fs_inodes_free as f64,
        );
        points.add_with(
            &FS_INODES_TOTAL,
            &[LAYER_DEVICE],
            layer.fs_inodes_total as f64,
        );
        points.add_with(&FS_LIMIT, &[LAYER_DEVICE], layer.fs_limit_bytes as f64);
    }
    points.add(&PROCESSES, sample.stats.pids.current as f64);
    // The pids controller counts tasks, that is threads; no limit shows as 0.
    points.add(&THREADS, sample.stats.pids.current as f64);
    points.add(&THREADS_MAX, sample.stats.pids.limit.unwrap_or(0) as f64);
    points.add(
        &FILE_DESCRIPTORS,
        sample.stats.files.file_descriptors as f64,
    );
    points.add(&SOCKETS, sample.stats.files.sockets as f64);
    for io in &sample.stats.io {
        let device = io.device.as_str();
        let (major, minor) = (io.major.to_string(), io.minor.to_string());
        for (operation, bytes) in [("Read", io.read_bytes), ("Write", io.write_bytes)] {
            points.add_with(
                &BLKIO_DEVICE_USAGE,
                &[device, &major, &minor, operation],
                bytes as f64,
            );
        }
        points.add_with(&FS_READS_BYTES, &[device], io.read_bytes as f64);
        points.add_with(&FS_READS, &[device], io.reads as f64);
        points.add_with(&FS_WRITES_BYTES, &[device], io.write_bytes as f64);
        points.add_with(&FS_WRITES, &[device], io.writes as f64);
    }
    points.add(&LAST_SEEN, (sample.timestamp / 1_000_000_000) as f64);
    if started_at > 0 {
        points.add(&START_TIME, started_at as f64 / NANOS);
    }
    if let Some(pressure) = &sample.stats.pressure {
        for (psi, waiting, stalled) in [
            (&pressure.cpu, &CPU_PRESSURE_WAITING, &CPU_PRESSURE_STALLED),
            (
                &pressure.memory,
                &MEMORY_PRESSURE_WAITING,
                &MEMORY_PRESSURE_STALLED,
            ),
            (&pressure.io, &IO_PRESSURE_WAITING, &IO_PRESSURE_STALLED),
        ] {
            let Some(psi) = psi else { continue };
            points.add(waiting, psi.some.total_us as f64 / MICROS);
            if let Some(full) = &psi.full {
                points.add(stalled, full.total_us as f64 / MICROS);
            }
        }
    }
    points.points
}

/// A pod's network points, per interface.
pub fn network_points(labels: &Labels, sample: &PodSample) -> Vec<Point> {
    let mut points = Points {
        labels,
        points: Vec::new(),
    };
    for interface in sample.network.iter().flatten() {
        let name = &[interface.name.as_str()];
        for (descriptor, value) in [
            (&NETWORK_RX_BYTES, interface.rx_bytes),
            (&NETWORK_RX_PACKETS, interface.rx_packets),
            (&NETWORK_RX_ERRORS, interface.rx_errors),
            (&NETWORK_RX_DROPPED, interface.rx_dropped),
            (&NETWORK_TX_BYTES, interface.tx_bytes),
            (&NETWORK_TX_PACKETS, interface.tx_packets),
            (&NETWORK_TX_ERRORS, interface.tx_errors),
            (&NETWORK_TX_DROPPED, interface.tx_dropped),
        ] {
            points.add_with(descriptor, name, value as f64);
        }
    }
    points.points
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_counters_end_in_total() {
        let mut seen = HashSet::new();
        for descriptor in DESCRIPTORS {
            assert!(seen.insert(descriptor.name), "{} twice", descriptor.name);
            // cAdvisor's one gauge named `_total` is a count of inodes.
            let total_gauge = descriptor.name == FS_INODES_TOTAL.name;
            assert_eq!(
                descriptor.kind == Kind::Counter || total_gauge,
                descriptor.name.ends_with("_total"),
                "{}",
                descriptor.name
            );
            assert!(descriptor.name.starts_with("container_"));
        }
    }

    #[test]
    fn points_carry_values_in_cadvisor_units_and_labels_in_key_order() {
        let mut sample = ContainerSample {
            timestamp: 5_000_000_000,
            stats: Default::default(),
            cpu_nano_cores: None,
            layer: None,
        };
        sample.stats.cpu.usage_ns = 2_500_000_000;
        sample.stats.memory.working_set_bytes = 20 << 20;
        let labels = Labels {
            container: "app".into(),
            pod: "web".into(),
            namespace: "default".into(),
            id: "/crid/p/c".into(),
            image: "busybox".into(),
            name: "c".into(),
        };
        let points = container_points(&labels, &sample, 0);
        let cpu = points
            .iter()
            .find(|p| p.descriptor == &CPU_USAGE)
            .expect("cpu");
        assert_eq!(cpu.value, 2.5);
        assert_eq!(
            cpu.label_values,
            [
                "app",
                "web",
                "default",
                "/crid/p/c",
                "busybox",
                "c",
                "total"
            ]
        );
        assert_eq!(cpu.label_values.len(), CPU_USAGE.label_keys().len());
        let working_set = points
            .iter()
            .find(|p| p.descriptor == &MEMORY_WORKING_SET)
            .expect("working set");
        assert_eq!(working_set.value, (20 << 20) as f64);
        assert!(!points.iter().any(|p| p.descriptor == &START_TIME));
        assert!(!points.iter().any(|p| p.descriptor == &MEMORY_SWAP));
    }

    /// With every figure read, every descriptor but the network's (a pod's)
    /// has points, each with one value per label key.
    #[test]
    fn a_full_sample_gives_every_container_series() {
        use runtime::cgroup::stats::{DeviceIo, Pressure, Psi};
        let mut sample = ContainerSample {
            timestamp: 5_000_000_000,
            stats: Default::default(),
            cpu_nano_cores: None,
            layer: Some(crate::layer::LayerUsage {
                used_bytes: 4096,
                inodes_used: 2,
                fs_inodes_free: 10,
                fs_inodes_total: 20,
                fs_limit_bytes: 1 << 30,
            }),
        };
        let stats = &mut sample.stats;
        stats.cpu.quota_us = Some(20_000);
        stats.memory.swap_bytes = Some(0);
        stats.memory.max_usage_bytes = Some(8192);
        stats.memory.swap_limit_bytes = Some(64 << 20);
        stats.pids.limit = Some(100);
        stats.files.file_descriptors = 3;
        stats.io = vec![DeviceIo {
            major: 8,
            minor: 0,
            device: "/dev/sda".into(),
            read_bytes: 4096,
            write_bytes: 512,
            reads: 2,
            writes: 1,
        }];
        let psi = Some(Psi {
            full: Some(Default::default()),
            ..Default::default()
        });
        stats.pressure = Some(Pressure {
            cpu: psi.clone(),
            memory: psi.clone(),
            io: psi,
        });
        let points = container_points(&Labels::default(), &sample, 1);
        for descriptor in DESCRIPTORS {
            let of_it: Vec<&Point> = points
                .iter()
                .filter(|p| p.descriptor == *descriptor)
                .collect();
            if descriptor.name.starts_with("container_network_") {
                assert!(of_it.is_empty(), "{}", descriptor.name);
                continue;
            }
            assert!(!of_it.is_empty(), "{} has no point", descriptor.name);
            for point in of_it {
                assert_eq!(
                    point.label_values.len(),
                    descriptor.label_keys().len(),
                    "{}",
                    descriptor.name
                );
            }
        }
        let value = |descriptor: &Descriptor, extra: &[&str]| {
            points
                .iter()
                .find(|p| p.descriptor == descriptor && p.label_values[6..] == *extra)
                .map(|p| p.value)
        };
        assert_eq!(
            value(&BLKIO_DEVICE_USAGE, &["/dev/sda", "8", "0", "Write"]),
            Some(512.0)
        );
        assert_eq!(value(&FS_READS, &["/dev/sda"]), Some(2.0));
        assert_eq!(value(&FS_LIMIT, &[LAYER_DEVICE]), Some((1u64 << 30) as f64));
        assert_eq!(value(&THREADS_MAX, &[]), Some(100.0));
        assert_eq!(value(&FILE_DESCRIPTORS, &[]), Some(3.0));
    }
}
