//! crid ⇄ crid-monitor. crid writes a [`MonitorConfig`] into the pod's state
//! dir and starts `crid-monitor <pod dir>`; the monitor prints one
//! [`MonitorStarted`] line (JSON) on stdout and detaches. Afterwards crid
//! talks to it over `<pod dir>/monitor.sock`: one [`MonitorRequest`] per
//! frame, answered by one [`MonitorResponse`]; a frame is a 4-byte big-endian
//! length followed by that many bytes of JSON.

use serde::{Deserialize, Serialize};

/// File names inside a pod's state dir that both sides use.
pub const CONFIG_FILE: &str = "monitor.json";
pub const SOCKET_FILE: &str = "monitor.sock";
/// Largest frame either side accepts.
pub const MAX_FRAME_BYTES: u32 = 1024 * 1024;

/// Namespaces the pod's pause process creates (the others are the host's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewNamespaces {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    pub pid: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub pod_id: String,
    pub namespaces: NewNamespaces,
    /// Set in the new UTS namespace.
    pub hostname: Option<String>,
    /// Namespaced sysctls written by pause inside the new namespaces, as
    /// (`net.ipv4.ip_forward`, `1`).
    pub sysctls: Vec<(String, String)>,
    /// `cgroup.procs` files the launcher joins before it forks, so the
    /// monitor and pause are born in the pod's cgroup (one migration per
    /// hierarchy instead of one per process).
    #[serde(default)]
    pub cgroup_procs: Vec<std::path::PathBuf>,
}

/// The one line the monitor prints once the pod's pause process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorStarted {
    Ready { monitor_pid: i32, pause_pid: i32 },
    Failed { message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorRequest {
    /// Is pause still running?
    Status,
    /// Kill pause (and everything else of the pod), reap, and exit.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorResponse {
    Status {
        pause_pid: i32,
        pause_exit: Option<ExitStatus>,
    },
    ShuttingDown,
    Error {
        message: String,
    },
}

/// How a process ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}
