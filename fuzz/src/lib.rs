//! What the CRI request targets share.

use std::sync::OnceLock;

/// The pod id the request targets translate for.
pub const POD_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The cgroupfs driver over this host's hierarchy, as crid's default config.
pub fn cgroups() -> &'static pod_sandbox::Cgroups {
    static CGROUPS: OnceLock<pod_sandbox::Cgroups> = OnceLock::new();
    CGROUPS.get_or_init(|| {
        let hierarchy = pod_sandbox::Hierarchy::detect().expect("reading the cgroup hierarchy");
        pod_sandbox::Cgroups::cgroupfs(hierarchy)
    })
}

/// A refused request answers InvalidArgument (or FailedPrecondition for
/// what crid cannot do yet), naming the field: never INTERNAL or another
/// code that blames crid or the node.
pub fn assert_refusal(error: cri_server::error::CridError) {
    let status = tonic::Status::from(error);
    assert!(
        matches!(
            status.code(),
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
        ),
        "refused with {:?}: {}",
        status.code(),
        status.message()
    );
}
