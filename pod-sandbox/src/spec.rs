//! What a pod is made of, as crid's handlers translate it from CRI.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Whose namespace a pod uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespaceMode {
    /// The pod's own (held by pause).
    Pod,
    /// Each container its own (PID only).
    Container,
    /// The host's.
    Node,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: String,
    pub container_port: u16,
    pub host_port: u16,
    pub host_ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodSpec {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub hostname: String,
    pub network: NamespaceMode,
    pub ipc: NamespaceMode,
    pub pid: NamespaceMode,
    pub dns: Option<DnsConfig>,
    pub port_mappings: Vec<PortMapping>,
    /// Validated namespaced sysctls.
    pub sysctls: BTreeMap<String, String>,
    /// kubelet's pod cgroup (cgroupfs form, e.g. `/kubepods/burstable/pod<uid>`), if any.
    pub cgroup_parent: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub shm_size_bytes: u64,
    /// The pod's own user namespace (CRI `userns_options` mode POD); None:
    /// the node's. (Records older than the field have none.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<proto::monitor::UserNamespaceMappings>,
}

/// Where a running pod's parts are, kept by crid with the pod's record so
/// stop and remove find them after a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxState {
    pub monitor_pid: i32,
    pub pause_pid: i32,
    /// The pinned network namespace, when the pod has its own.
    pub netns: Option<PathBuf>,
    /// Pod IPs, IPv4 first.
    pub ips: Vec<String>,
    pub cgroup: Option<crate::cgroup::Placement>,
}
