//! The one place where crid's errors become gRPC statuses.

use std::borrow::Cow;

use tonic::{Code, Status};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CridError {
    #[error("{field}: {reason} (got {value:?})")]
    InvalidArgument {
        /// Owned when it carries an index, e.g. `config.mounts[2].host_path`.
        field: Cow<'static, str>,
        value: String,
        reason: String,
    },
    #[error("{0} is not implemented by crid yet")]
    NotImplemented(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Pod(#[from] pod_sandbox::PodError),
    #[error(transparent)]
    Container(#[from] runtime::container::ContainerError),
    #[error(transparent)]
    Spec(#[from] runtime::spec::SpecError),
    #[error(transparent)]
    Monitor(#[from] runtime::MonitorError),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// crid is going away: the client should come back.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl CridError {
    pub fn invalid(
        field: impl Into<Cow<'static, str>>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> CridError {
        CridError::InvalidArgument {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    fn code(&self) -> Code {
        match self {
            CridError::InvalidArgument { .. } => Code::InvalidArgument,
            CridError::NotImplemented(_) => Code::Unimplemented,
            CridError::Store(StoreError::NameReserved { .. }) => Code::AlreadyExists,
            CridError::Store(_) | CridError::Task(_) => Code::Internal,
            CridError::NotFound(_) => Code::NotFound,
            CridError::FailedPrecondition(_) => Code::FailedPrecondition,
            CridError::Image(error) => image_code(error),
            CridError::Pod(error) => pod_code(error),
            CridError::Container(error) => container_code(error),
            CridError::Spec(error) => spec_code(error),
            CridError::Monitor(error) => monitor_code(error),
            CridError::Internal(_) => Code::Internal,
            CridError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            CridError::ResourceExhausted(_) => Code::ResourceExhausted,
            CridError::Unavailable(_) => Code::Unavailable,
        }
    }
}

fn monitor_code(error: &runtime::MonitorError) -> Code {
    use proto::monitor::ErrorKind as K;
    use runtime::MonitorError as E;
    match error {
        // The monitor's own refusals (an exec that failed, a container that
        // is not running) are the container's state, not crid's; so is an
        // untyped refusal of a version 1 monitor, and a monitor that failed
        // to start the pod.
        E::Refused { kind, .. } => match kind {
            K::NotFound => Code::NotFound,
            K::AlreadyExists => Code::AlreadyExists,
            K::InvalidRequest => Code::InvalidArgument,
            K::Internal => Code::Internal,
            K::NotRunning | K::CreateFailed | K::StartFailed | K::ExecFailed | K::Unknown => {
                Code::FailedPrecondition
            }
        },
        E::Failed { .. } => Code::FailedPrecondition,
        // A pod started before an upgrade: the message says to recreate it.
        E::Unsupported { .. } => Code::FailedPrecondition,
        E::Spawn { .. }
        | E::Timeout { .. }
        | E::Unreachable { .. }
        | E::Config { .. }
        | E::Unexpected { .. } => Code::Internal,
    }
}

fn image_code(error: &image::ImageError) -> Code {
    use image::ImageError as E;
    match error {
        E::InvalidReference { .. } | E::InvalidConfig { .. } => Code::InvalidArgument,
        E::NotFound { .. } => Code::NotFound,
        E::Unauthorized { .. } => Code::PermissionDenied,
        E::Registry { .. } => Code::Unavailable,
        E::DigestMismatch { .. } | E::UnsafeLayer { .. } | E::BadImage { .. } => {
            Code::FailedPrecondition
        }
        _ => Code::Internal,
    }
}

fn pod_code(error: &pod_sandbox::PodError) -> Code {
    use pod_sandbox::PodError as E;
    match error {
        E::Invalid { .. } => Code::InvalidArgument,
        E::NetworkNotReady(_) | E::Unsupported(_) => Code::FailedPrecondition,
        E::Cgroup(pod_sandbox::cgroup::CgroupError::Invalid { .. }) => Code::InvalidArgument,
        // A sysctl that passed validation but that the pod's namespaces
        // refuse (not offered there, not writable, a value out of range).
        E::Monitor(runtime::MonitorError::Failed {
            sysctl: Some(_), ..
        }) => Code::InvalidArgument,
        E::Io { .. } | E::Cgroup(_) | E::Monitor(_) | E::Cni(_) | E::Task(_) => Code::Internal,
    }
}

/// A cgroup error outside a pod operation (validating `cgroup_parent`) maps
/// like one inside it.
impl From<pod_sandbox::cgroup::CgroupError> for CridError {
    fn from(error: pod_sandbox::cgroup::CgroupError) -> CridError {
        CridError::Pod(error.into())
    }
}

fn spec_code(error: &runtime::spec::SpecError) -> Code {
    use runtime::spec::SpecError as E;
    match error {
        E::NoCommand | E::Invalid { .. } => Code::InvalidArgument,
        // The request names a user or group the image does not have.
        E::UnknownUser(_) | E::UnknownGroup(_) => Code::FailedPrecondition,
        // The node's profile file is missing or broken, not the request.
        E::SeccompProfile { .. } => Code::FailedPrecondition,
        E::Io { .. } | E::Oci(_) => Code::Internal,
    }
}

fn container_code(error: &runtime::container::ContainerError) -> Code {
    use runtime::container::ContainerError as E;
    match error {
        E::HostPath { .. } | E::TooManyLayers(_) => Code::FailedPrecondition,
        E::Spec(error) => spec_code(error),
        E::Io { .. } | E::Mount { .. } => Code::Internal,
    }
}

impl From<CridError> for Status {
    fn from(error: CridError) -> Status {
        Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_the_right_code_and_name_the_field() {
        let status = Status::from(CridError::invalid(
            "runtime_config.network_config.pod_cidr",
            "x/99",
            "not a CIDR",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("pod_cidr") && status.message().contains("x/99"));
        let status = Status::from(CridError::NotImplemented("RunPodSandbox"));
        assert_eq!(status.code(), Code::Unimplemented);
        assert!(status.message().contains("RunPodSandbox"));
        let reserved = StoreError::NameReserved {
            name: "n".into(),
            holder: "id".into(),
        };
        assert_eq!(
            Status::from(CridError::from(reserved)).code(),
            Code::AlreadyExists
        );
        let parent = pod_sandbox::cgroup::validate_parent("kubepods").expect_err("relative");
        let status = Status::from(CridError::from(parent));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("cgroup_parent"));
        // The systemd driver's refusal of a path is the same kind of error.
        let slice = pod_sandbox::cgroup::systemd::validate_slice("/kubepods/pod1")
            .expect_err("a path, not a slice");
        let status = Status::from(CridError::from(slice));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("cgroup_parent"), "{status:?}");
        assert!(status.message().contains(".slice"), "{status:?}");
    }
}
