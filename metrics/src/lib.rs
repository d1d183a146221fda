//! Observability: one collector of container and pod figures
//! ([`collector`]) that feeds both the CRI stats RPCs and Prometheus's
//! `/metrics` ([`exposition`]), the container metrics with cAdvisor's names
//! and labels ([`series`]), and crid's own operation metrics ([`own`]).
//! No CRI types here: cri-server translates.

pub mod collector;
pub mod exposition;
pub mod layer;
pub mod own;
pub mod series;

pub use collector::{
    Collector, CollectorError, ContainerSample, ContainerTarget, Detail, Options, PodSample,
    PodTarget, Scope,
};
