//! CNI for crid: network configuration loading, plugin execution
//! (ADD/CHECK/DEL/STATUS/VERSION) and the on-disk result cache.
//!
//! The network is the first configuration file in the conf dir by file name,
//! as kubelet, containerd and CRI-O choose it ([`load_network`]). Plugins are
//! run by [`CniRunner`] as the CNI spec (1.0, results 0.3.0–1.1.0) and libcni
//! do: `CNI_*` environment, the plugin's config on stdin with `name`,
//! `cniVersion`, `prevResult` and `runtimeConfig` injected.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cni::CniError> {
//! use std::path::PathBuf;
//! let bin_dirs = vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")];
//! let network = cni::load_network("/etc/cni/net.d".as_ref(), &bin_dirs)?;
//! let runner = cni::CniRunner::new(bin_dirs, "/var/lib/crid/cni-cache".into());
//! let pod = cni::Attachment {
//!     container_id: "0123abcd".into(),
//!     netns: "/run/crid/pods/0123abcd/ns/net".into(),
//!     ifname: "eth0".into(),
//!     args: vec![
//!         ("K8S_POD_NAMESPACE".into(), "default".into()),
//!         ("K8S_POD_NAME".into(), "web".into()),
//!         ("K8S_POD_INFRA_CONTAINER_ID".into(), "0123abcd".into()),
//!         ("K8S_POD_UID".into(), "5f1c…".into()),
//!     ],
//!     capability_args: serde_json::Map::new(), // "portMappings": [...], …
//! };
//! let result = runner.add(&network, &pod).await?;
//! let pod_ips = result.pod_ips(); // IPv4 first: CRI `ip`, then `additional_ips`
//! # let _ = pod_ips;
//! // At stop: with the cache this needs no network at all (after a restart,
//! // a conf dir change or a reboot it still undoes exactly what ADD did).
//! let outcome = runner.del(Some(&network), &pod).await?;
//! for skip in &outcome.skipped { /* log: plugin or netns gone */ let _ = skip; }
//! # Ok(()) }
//! ```
//!
//! Guarantees crid relies on:
//! * ADD either succeeds with a cached result or leaves nothing behind (the
//!   whole list is DEL'd on failure; see [`CniError::RollbackFailed`]).
//! * DEL is idempotent, survives a crid restart (it uses the cached config
//!   and result), tolerates a missing netns or plugin, and reports failures
//!   of individual plugins together after trying all of them.
//! * Every plugin exec is bounded in time and output.
//!
//! Callers serialize operations on one attachment (ADD and DEL of the same
//! pod must not run at once); different pods may run concurrently.

mod cache;
mod config;
mod error;
mod exec;
mod result;
mod runner;

pub use cache::CacheEntry;
pub use config::{
    CniConfigError, NetworkConfigList, PluginConfig, SUPPORTED_CNI_VERSIONS, load_network,
};
pub use error::{CniError, Command, DelOutcome, DelSkip, PluginCall};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use runner::{Attachment, CachedAttachment, CniRunner, DEFAULT_EXEC_TIMEOUT, PluginVersion};
