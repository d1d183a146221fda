//! A pod's network counters per interface, read inside its network
//! namespace: a thread of its own enters each pod's netns in turn (setns
//! changes only the calling thread) and reads `/proc/thread-self/net/dev`,
//! which shows the namespace of the thread that reads it. The thread ends
//! when done, so no thread of crid's pools is ever left in a pod's netns
//! (a process it started would be born there), and nothing forks.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

#[derive(Debug, thiserror::Error)]
pub enum NetStatsError {
    /// The pinned namespace is gone: the pod was stopped.
    #[error("network namespace {0} does not exist")]
    Gone(PathBuf),
    #[error("{what} {path}: {reason}")]
    Failed {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the network stats thread failed: {0}")]
    Thread(String),
}

/// One interface's counters (`/proc/net/dev`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// `/proc/net/dev`: two header lines, then per interface
/// `name: rx bytes packets errs drop fifo frame compressed multicast
/// tx bytes packets errs drop fifo colls carrier compressed`. The loopback
/// is left out: it is no traffic of the pod's.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let values: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if name == "lo" || values.len() < 16 {
                return None;
            }
            Some(InterfaceStats {
                name: name.to_owned(),
                rx_bytes: values[0],
                rx_packets: values[1],
                rx_errors: values[2],
                rx_dropped: values[3],
                tx_bytes: values[8],
                tx_packets: values[9],
                tx_errors: values[10],
                tx_dropped: values[11],
            })
        })
        .collect()
}

/// The interfaces of each network namespace in `netns` (pinned namespace
/// files), in order, read on one new thread (blocking: call it off the
/// async workers).
pub fn read_in_namespaces(
    netns: Vec<PathBuf>,
) -> Result<Vec<Result<Vec<InterfaceStats>, NetStatsError>>, NetStatsError> {
    if netns.is_empty() {
        return Ok(Vec::new());
    }
    std::thread::Builder::new()
        .name("crid-netstats".into())
        .spawn(move || netns.iter().map(|path| read_in(path)).collect())
        .map_err(|error| NetStatsError::Thread(error.to_string()))?
        .join()
        .map_err(|_| NetStatsError::Thread("panicked".into()))
}

/// On the calling thread, which stays in that namespace afterwards.
fn read_in(netns: &Path) -> Result<Vec<InterfaceStats>, NetStatsError> {
    let file = File::open(netns).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => NetStatsError::Gone(netns.to_owned()),
        _ => NetStatsError::Failed {
            what: "cannot open",
            path: netns.to_owned(),
            reason: error.to_string(),
        },
    })?;
    // A pinned namespace whose bind mount is gone is a plain empty file:
    // setns refuses it (EINVAL), which means the pod's network is gone.
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| match errno {
        nix::errno::Errno::EINVAL => NetStatsError::Gone(netns.to_owned()),
        errno => NetStatsError::Failed {
            what: "cannot enter",
            path: netns.to_owned(),
            reason: errno.to_string(),
        },
    })?;
    let dev = Path::new("/proc/thread-self/net/dev");
    let text = fs::read_to_string(dev).map_err(|error| NetStatsError::Failed {
        what: "cannot read",
        path: dev.to_owned(),
        reason: error.to_string(),
    })?;
    Ok(parse_net_dev(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     840      10    0    0    0     0          0         0      840      10    0    0    0     0       0          0
  eth0:  123456     789    1    2    0     0          0         3    65432     321    4    5    0     0       0          0
";

    #[test]
    fn net_dev_counters_per_interface_without_loopback() {
        assert_eq!(
            parse_net_dev(NET_DEV),
            vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 123_456,
                rx_packets: 789,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 65_432,
                tx_packets: 321,
                tx_errors: 4,
                tx_dropped: 5,
            }]
        );
    }

    #[test]
    fn a_missing_namespace_is_gone() {
        let results =
            read_in_namespaces(vec![PathBuf::from("/nonexistent/crid/ns/net")]).expect("thread");
        assert!(
            matches!(results.as_slice(), [Err(NetStatsError::Gone(_))]),
            "{results:?}"
        );
    }
}
