use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("{field}: {reason} (got {value:?})")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] runtime::cgroup::CgroupError),
    #[error(transparent)]
    Monitor(#[from] runtime::MonitorError),
    #[error(transparent)]
    Cni(#[from] cni::CniError),
    #[error("pod network is not configured: {0}")]
    NetworkNotReady(#[from] cni::CniConfigError),
    #[error("{0}")]
    Unsupported(String),
    /// Blocking work run off the async workers panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl PodError {
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> PodError {
        PodError::Invalid {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> PodError {
        let path = path.into();
        move |source| PodError::Io { what, path, source }
    }
}
