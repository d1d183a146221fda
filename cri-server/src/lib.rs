//! crid, the CRI daemon: configuration, the metadata store, the CRI services
//! and the daemon's lifecycle. The `crid` binary is a thin command line over
//! this library.

pub mod config;
pub mod container_config;
pub mod container_events;
pub mod containers;
pub mod daemon;
pub mod error;
pub mod image_service;
pub mod images;
pub mod instance;
pub mod limits;
pub mod live;
pub mod locks;
pub mod object_status;
pub mod objects;
pub mod pod_config;
pub mod pods;
pub mod records;
pub mod rpc;
pub mod runtime_service;
pub mod stats;
pub mod status;
pub mod store;
pub mod streaming;
#[cfg(test)]
mod testing;
