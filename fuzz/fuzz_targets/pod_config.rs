//! RunPodSandbox's validation: any PodSandboxConfig (the input decoded as
//! the protobuf message, as crid's gRPC server decodes it) is translated
//! or refused with InvalidArgument or FailedPrecondition, never a panic.
#![no_main]

use crid_fuzz::{POD_ID, assert_refusal, cgroups};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::cri;

fuzz_target!(|input: &[u8]| {
    let Ok(config) = cri::PodSandboxConfig::decode(input) else {
        return;
    };
    if let Err(error) = cri_server::pod_config::translate(POD_ID, &config, cgroups()) {
        assert_refusal(error);
    }
});
