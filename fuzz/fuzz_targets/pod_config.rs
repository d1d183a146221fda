//! RunPodSandbox's validation: any PodSandboxConfig (the input decoded as
//! the protobuf message, as crid's gRPC server decodes it) is translated
//! or refused with InvalidArgument or FailedPrecondition, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::cri;

const POD_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The cgroupfs driver over this host's hierarchy, as crid's default config.
fn cgroups() -> &'static pod_sandbox::Cgroups {
    static CGROUPS: OnceLock<pod_sandbox::Cgroups> = OnceLock::new();
    CGROUPS.get_or_init(|| {
        let hierarchy = pod_sandbox::Hierarchy::detect().expect("reading the cgroup hierarchy");
        pod_sandbox::Cgroups::cgroupfs(hierarchy)
    })
}

/// A refused request answers InvalidArgument (or FailedPrecondition for
/// what crid cannot do yet), naming the field: never INTERNAL or another
/// code that blames crid or the node.
fn assert_refusal(error: cri_server::error::CridError) {
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

fuzz_target!(|input: &[u8]| {
    let Ok(config) = cri::PodSandboxConfig::decode(input) else {
        return;
    };
    if let Err(error) = cri_server::pods::translate(POD_ID, &config, cgroups()) {
        assert_refusal(error);
    }
});
