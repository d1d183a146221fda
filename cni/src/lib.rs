//! CNI for crid: network configuration loading and plugin lookup.
//!
//! The network is the first configuration file in the conf dir by file name,
//! as kubelet, containerd and CRI-O choose it. Plugin execution (ADD/DEL/CHECK)
//! builds on the [`NetworkConfigList`] loaded here.

mod config;

pub use config::{
    CniConfigError, NetworkConfigList, PluginConfig, SUPPORTED_CNI_VERSIONS, load_network,
};
