//! The API types crid speaks. No logic lives here.
//!
//! `cri` is the CRI v1 API (messages, the RuntimeService/ImageService server
//! traits and their clients) generated from crid's own `cri/runtime_v1.proto`,
//! at the Kubernetes 1.36 level. `monitor` is crid's own protocol with the
//! per-pod crid-monitor.

pub mod cri {
    tonic::include_proto!("runtime.v1");
}

/// The Kubernetes release whose CRI `cri/runtime_v1.proto` matches.
pub const CRI_API_LEVEL: &str = "1.36";

pub mod env_value;
pub mod monitor;
