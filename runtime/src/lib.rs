//! crid's side of containers: their OCI spec, the pods' and containers'
//! cgroups ([`cgroup`]), the container's files, crid's client of the
//! per-pod monitor ([`client`]) and the frame format both use ([`wire`]).
//!
//! crid (multi-threaded) never forks Rust code: every process of a pod is
//! forked by that pod's single-threaded `crid-monitor`, which also runs the
//! built-in pause. The monitor is its own package (`runtime/monitor`), which
//! uses this one; this crate holds no fork code, so crid cannot link any.

pub mod cgroup;
pub mod client;
pub mod container;
pub mod host;
pub mod mountinfo;
pub mod netstats;
pub mod spec;
pub mod sys;
pub mod wire;

pub use client::{
    AttachEvent, AttachInput, AttachOutput, AttachedExec, Attachment, ExecEnding, MonitorClient,
    MonitorError, StartedMonitor,
};

/// Sets the window size of an exec's terminal (its pty master, which crid
/// holds).
pub fn set_window_size(
    master: std::os::fd::BorrowedFd<'_>,
    columns: u16,
    rows: u16,
) -> std::io::Result<()> {
    sys::set_window_size(master, columns, rows)
}

/// Now, in nanoseconds since the epoch: the timestamps of CRI and of the
/// monitor's protocol. A clock before 1970 reads 0, one past 2262 the most.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
