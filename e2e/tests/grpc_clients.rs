//! Clients that are not Go: Python's grpcio with its default settings sends
//! the socket path as `:authority` on a unix socket (Go's grpc, in kubelet
//! and crictl, sends `localhost`). A node runtime must serve any conforming
//! client, so crid takes any authority there.

use std::path::Path;
use std::process::Command;

use e2e::TestEnv;
use proto::cri;

/// A venv with grpcio and grpcio-tools from PyPI, pinned
/// (scripts/install-prerequisites makes it; Debian's grpcio 1.51 sends
/// `localhost` and would not test anything).
const PYTHON: &str = "/opt/crid-tests/grpcio/bin/python";

#[tokio::test]
async fn a_python_grpcio_client_is_served() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = manifest.join("tests/clients/grpcio_client.py");
    let proto_file = manifest.join("../proto/cri/runtime_v1.proto");
    let log_dir = env.path().join("grpcio-logs");
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let output = Command::new(PYTHON)
        .arg(&script)
        .arg(env.socket())
        .arg(&proto_file)
        .arg(&log_dir)
        .output()
        .unwrap_or_else(|error| panic!("{PYTHON}: {error} (run scripts/install-prerequisites)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "client failed: {stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}\n{stderr}");
    assert_eq!(lines[0], "Version ok crid v1", "{stdout}");
    let pod_id = lines[1]
        .strip_prefix("RunPodSandbox ok ")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(lines[2], "ListContainers ok 0", "{stdout}");

    // The pod it made is real: the Go-side client sees and removes it.
    let mut runtime = crid.runtime().await.expect("client");
    let pods = runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].id, pod_id);
    for request in [cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.to_string(),
    }] {
        runtime
            .stop_pod_sandbox(request)
            .await
            .expect("StopPodSandbox");
    }
    runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.to_string(),
        })
        .await
        .expect("RemovePodSandbox");
    crid.stop().await;
}
