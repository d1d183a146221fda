//! CreateContainer's validation: the input decoded as a
//! CreateContainerRequest (as crid's gRPC server decodes it); its
//! `sandbox_config` must pass RunPodSandbox's validation, as a pod crid
//! created did, and then any `config` is translated or refused with
//! InvalidArgument or FailedPrecondition, never a panic.
#![no_main]

use std::path::{Path, PathBuf};

use cri_server::objects::{PodPhase, PodRecord};
use crid_fuzz::{POD_ID, assert_refusal, cgroups};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::cri;

const POD_DIR: &str =
    "/run/crid/pods/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// What crid resolves `namespace_options.target_id` to when that container runs.
const TARGET_PID_NS: &str = "/proc/4242/ns/pid";

fn wants_target_pid(config: &cri::ContainerConfig) -> bool {
    config
        .linux
        .as_ref()
        .and_then(|linux| linux.security_context.as_ref())
        .and_then(|security| security.namespace_options.as_ref())
        .is_some_and(|options| options.pid == i32::from(cri::NamespaceMode::Target))
}

fuzz_target!(|input: &[u8]| {
    let Ok(request) = cri::CreateContainerRequest::decode(input) else {
        return;
    };
    let (Some(config), Some(sandbox_config)) = (request.config, request.sandbox_config) else {
        return;
    };
    let Ok(spec) = cri_server::pod_config::translate(POD_ID, &sandbox_config, cgroups()) else {
        return;
    };
    let pod = PodRecord {
        id: POD_ID.into(),
        reserved_name: "fuzz".into(),
        config: sandbox_config,
        runtime_handler: String::new(),
        spec,
        phase: PodPhase::Ready,
        created_at: 1,
        sandbox: pod_sandbox::SandboxState {
            monitor_pid: 41,
            pause_pid: 42,
            ..Default::default()
        },
    };
    let target_pid_ns = wants_target_pid(&config).then(|| PathBuf::from(TARGET_PID_NS));
    if let Err(error) =
        cri_server::container_config::translate(&config, &pod, Path::new(POD_DIR), target_pid_ns)
    {
        assert_refusal(error);
    }
    if let Err(error) = cri_server::container_config::stop_signal(&config, None) {
        assert_refusal(error);
    }
});
