//! Containers and their monitor.
//!
//! crid (multi-threaded) never forks Rust code: every process of a pod is
//! forked by that pod's single-threaded `crid-monitor`, which also runs the
//! built-in pause. This crate holds the monitor ([`monitor`]), crid's side of
//! talking to it ([`client`]), the frame format both use ([`wire`]), and
//! the pods' and containers' cgroups ([`cgroup`]).

pub mod cgroup;
pub mod client;
pub mod container;
pub mod crilog;
pub mod host;
pub mod monitor;
pub mod spec;
mod sys;
pub mod wire;

pub use client::{MonitorClient, MonitorError, StartedMonitor};
