//! crid serving CRI on its socket: version, status conditions, runtime
//! config, unimplemented RPCs, config errors, single instance, shutdown.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use e2e::{TestEnv, bridge_conflist};
use nix::sys::signal::Signal;
use proto::cri;
use tonic::Code;

fn condition<'a>(status: &'a cri::StatusResponse, kind: &str) -> &'a cri::RuntimeCondition {
    status
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {status:?}"))
}

async fn status(crid: &e2e::Crid, verbose: bool) -> cri::StatusResponse {
    let mut client = crid.runtime().await.expect("client");
    client
        .status(cri::StatusRequest { verbose })
        .await
        .expect("Status")
        .into_inner()
}

#[tokio::test]
async fn version_names_crid_and_the_v1_api() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    let mut client = crid.runtime().await.expect("client");
    let version = client
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(version.runtime_name, "crid");
    assert_eq!(version.runtime_api_version, "v1");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));
    assert!(!version.version.is_empty());
    crid.stop().await;
}

#[tokio::test]
async fn socket_is_mode_0660() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    let mode = std::fs::metadata(env.socket())
        .expect("stat socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");
    crid.stop().await;
}

#[tokio::test]
async fn network_is_not_ready_without_a_cni_config() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    let status = status(&crid, false).await;
    let runtime = condition(&status, "RuntimeReady");
    assert!(runtime.status, "runtime not ready: {}", runtime.message);
    let network = condition(&status, "NetworkReady");
    assert!(!network.status);
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(
        network
            .message
            .contains(&env.cni_conf_dir().display().to_string()),
        "{}",
        network.message
    );
    crid.stop().await;
}

#[tokio::test]
async fn network_is_ready_with_a_valid_bridge_conflist() {
    for plugin in ["bridge", "host-local", "loopback"] {
        let path = Path::new(e2e::DEBIAN_CNI_BIN_DIR).join(plugin);
        assert!(
            path.is_file(),
            "{} missing: apt-get install containernetworking-plugins",
            path.display()
        );
    }
    let env = TestEnv::new();
    env.write_cni_config(
        "10-crid-e2e.conflist",
        &bridge_conflist("crid-e2e0", "10.250.0.0/24", &env.path().join("leases")),
    );
    let mut crid = env.start().await;
    let status = status(&crid, false).await;
    let network = condition(&status, "NetworkReady");
    assert!(network.status, "network not ready: {}", network.message);
    assert!(network.reason.is_empty());
    crid.stop().await;
}

#[tokio::test]
async fn network_is_not_ready_when_a_plugin_is_missing() {
    let env = TestEnv::new();
    let list = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"crid-e2e-no-such-plugin"}]}"#;
    env.write_cni_config("10-missing.conflist", list);
    let mut crid = env.start().await;
    let status = status(&crid, false).await;
    let network = condition(&status, "NetworkReady");
    assert!(!network.status);
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(
        network.message.contains("crid-e2e-no-such-plugin"),
        "{}",
        network.message
    );
    crid.stop().await;
}

#[tokio::test]
async fn network_readiness_follows_the_conf_dir_without_restart() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    assert!(!condition(&status(&crid, false).await, "NetworkReady").status);
    env.write_cni_config(
        "10-crid-e2e.conflist",
        &bridge_conflist("crid-e2e1", "10.250.1.0/24", &env.path().join("leases")),
    );
    assert!(condition(&status(&crid, false).await, "NetworkReady").status);
    crid.stop().await;
}

#[tokio::test]
async fn verbose_status_returns_the_effective_config_as_json() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    let status = status(&crid, true).await;
    let config: serde_json::Value =
        serde_json::from_str(&status.info["config"]).expect("config is JSON");
    assert_eq!(config["root"], env.root().display().to_string());
    assert_eq!(config["state"], env.state().display().to_string());
    assert_eq!(
        config["cni"]["conf_dir"],
        env.cni_conf_dir().display().to_string()
    );
    assert_eq!(config["runtime"]["cgroup_driver"], "cgroupfs");
    let lsm: String = serde_json::from_str(&status.info["lsm"]).expect("lsm is a JSON string");
    assert!(lsm.starts_with("none: "), "{lsm}");
    assert!(status_without_verbose_has_no_info(&crid).await);
    crid.stop().await;
}

async fn status_without_verbose_has_no_info(crid: &e2e::Crid) -> bool {
    status(crid, false).await.info.is_empty()
}

async fn cgroup_driver(crid: &e2e::Crid) -> cri::CgroupDriver {
    let mut client = crid.runtime().await.expect("client");
    let response = client
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .expect("RuntimeConfig")
        .into_inner();
    response.linux.expect("linux").cgroup_driver()
}

#[tokio::test]
async fn runtime_config_reports_the_configured_cgroup_driver() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    assert_eq!(cgroup_driver(&crid).await, cri::CgroupDriver::Cgroupfs);
    crid.stop().await;

    let mut env = env;
    env.extra_config = "[runtime]\ncgroup_driver = \"systemd\"\n".into();
    if Path::new("/run/systemd/system").is_dir() {
        // systemd is this host's init: crid uses it (tests/systemd.rs, in
        // the VM lane, goes further).
        let mut crid = env.start().await;
        assert_eq!(cgroup_driver(&crid).await, cri::CgroupDriver::Systemd);
        crid.stop().await;
    } else {
        // Anywhere else crid stops at once, saying why and what to set,
        // rather than failing every pod later.
        let (status, stderr) = env.run_to_exit(&mut env.command(&[]));
        assert!(!status.success(), "crid started: {stderr}");
        for needed in [
            "cgroup_driver",
            "systemd is not this host's init",
            "cgroup_driver = \"cgroupfs\"",
        ] {
            assert!(stderr.contains(needed), "{needed:?} not in {stderr}");
        }
        assert!(env.leaks().is_empty(), "{:?}", env.leaks());
    }
}

fn update_request(pod_cidr: &str) -> cri::UpdateRuntimeConfigRequest {
    cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig {
                pod_cidr: pod_cidr.into(),
            }),
        }),
    }
}

async fn pod_cidr(crid: &e2e::Crid) -> String {
    let info = status(crid, true).await.info;
    serde_json::from_str(&info["podCIDR"]).expect("podCIDR is a JSON string")
}

#[tokio::test]
async fn update_runtime_config_keeps_a_valid_pod_cidr_across_restarts() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    let mut client = crid.runtime().await.expect("client");
    client
        .update_runtime_config(update_request("10.244.1.0/24,fd00:1::/64"))
        .await
        .expect("update");
    assert_eq!(pod_cidr(&crid).await, "10.244.1.0/24,fd00:1::/64");
    // An empty CIDR is kubelet having none: the kept one stays.
    client
        .update_runtime_config(update_request(""))
        .await
        .expect("empty update");
    assert_eq!(pod_cidr(&crid).await, "10.244.1.0/24,fd00:1::/64");
    crid.stop().await;

    let mut crid = env.start().await;
    assert_eq!(pod_cidr(&crid).await, "10.244.1.0/24,fd00:1::/64");
    crid.stop().await;
}

#[tokio::test]
async fn update_runtime_config_refuses_bad_input_and_changes_nothing() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    let mut client = crid.runtime().await.expect("client");
    client
        .update_runtime_config(update_request("10.244.1.0/24"))
        .await
        .expect("update");

    let error = client
        .update_runtime_config(update_request("10.244.1.0/99"))
        .await
        .expect_err("bad prefix");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("pod_cidr") && error.message().contains("10.244.1.0/99"),
        "{}",
        error.message()
    );

    let error = client
        .update_runtime_config(cri::UpdateRuntimeConfigRequest {
            runtime_config: None,
        })
        .await
        .expect_err("missing runtime_config");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("runtime_config"),
        "{}",
        error.message()
    );

    assert_eq!(pod_cidr(&crid).await, "10.244.1.0/24");
    crid.stop().await;
}

#[tokio::test]
async fn rpcs_not_built_yet_answer_unimplemented_naming_themselves() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    let mut runtime = crid.runtime().await.expect("client");
    let error = runtime
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await
        .expect_err("not built");
    assert_eq!(error.code(), Code::Unimplemented);
    assert!(
        error.message().contains("CheckpointContainer"),
        "{}",
        error.message()
    );
    crid.stop().await;
}

#[tokio::test]
async fn sigterm_and_sigint_stop_crid_cleanly_and_remove_the_socket() {
    let env = TestEnv::new();
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut crid = env.start().await;
        assert!(env.socket().exists());
        let status = crid.stop_with(signal).await;
        assert!(status.success(), "{signal}: exit {status}\n{}", crid.log());
        assert!(!env.socket().exists(), "{signal} left the socket");
    }
}

#[tokio::test]
async fn a_stale_socket_from_a_killed_crid_is_replaced() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    crid.stop_with(Signal::SIGKILL).await;
    assert!(env.socket().exists(), "SIGKILL cannot remove the socket");
    let mut crid = env.start().await;
    crid.stop().await;
}

#[tokio::test]
async fn a_second_crid_on_the_same_root_or_socket_is_refused_naming_the_holder() {
    let env = TestEnv::new();
    let mut first = env.start().await;
    let holder = format!("pid {}", first.pid());

    // Same root and state, another socket.
    let other_socket = env.path().join("other.sock");
    let (status, stderr) =
        env.run_to_exit(&mut env.command(&["--listen", other_socket.to_str().expect("utf-8")]));
    assert!(!status.success());
    assert!(
        stderr.contains("in use") && stderr.contains(&holder),
        "{stderr}"
    );
    assert!(!other_socket.exists());

    // Same socket, its own root and state.
    let (root, state) = (env.path().join("root2"), env.path().join("state2"));
    let mut command = env.command(&[
        "--root",
        root.to_str().expect("utf-8"),
        "--state",
        state.to_str().expect("utf-8"),
    ]);
    let (status, stderr) = env.run_to_exit(&mut command);
    assert!(!status.success());
    assert!(
        stderr.contains("in use") && stderr.contains(&holder),
        "{stderr}"
    );

    // The first one is unharmed.
    let mut client = first.runtime().await.expect("client");
    client
        .version(cri::VersionRequest::default())
        .await
        .expect("first crid still serves");
    first.stop().await;
}

fn assert_refused(env: &TestEnv, config: &str, expected: &[&str]) {
    std::fs::write(env.config_path(), config).expect("write config");
    let mut command = std::process::Command::new(e2e::crid_binary());
    command.arg("--config").arg(env.config_path());
    let (status, stderr) = env.run_to_exit(&mut command);
    assert!(!status.success(), "crid accepted {config:?}");
    for needle in expected {
        assert!(
            stderr.contains(needle),
            "stderr does not name {needle:?}: {stderr}"
        );
    }
    assert!(!env.socket().exists(), "a refused crid created its socket");
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let env = TestEnv::new();
    let paths = format!(
        "root = {:?}\nstate = {:?}\nlisten = {:?}\n",
        env.root(),
        env.state(),
        env.socket()
    );
    assert_refused(&env, &format!("{paths}bogus_key = 1\n"), &["bogus_key"]);
    assert_refused(
        &env,
        &format!("{paths}[cni]\nconf_dirs = \"/x\"\n"),
        &["conf_dirs"],
    );
    assert_refused(
        &env,
        &format!("{paths}[runtime]\ncgroup_driver = \"cgroupv3\"\n"),
        &["runtime.cgroup_driver", "cgroupv3"],
    );
    assert_refused(
        &env,
        &format!("{paths}[metrics]\naddress = \"nowhere\"\n"),
        &["metrics.address"],
    );
    assert_refused(
        &env,
        "root = \"relative/dir\"\n",
        &["root", "relative/dir", "absolute"],
    );
    let registry = "[registries.\"docker.io\"]\nendpoints = [\"ftp://mirror\"]\n";
    assert_refused(
        &env,
        &format!("{paths}{registry}"),
        &["registries.\"docker.io\".endpoints[0]", "ftp://mirror"],
    );
    assert_refused(&env, "root = [unclosed\n", &["config"]);
}

#[test]
fn a_missing_config_file_is_refused() {
    let env = TestEnv::new();
    let missing = env.path().join("absent.toml");
    let mut command = std::process::Command::new(e2e::crid_binary());
    command.arg("--config").arg(&missing);
    let (status, stderr) = env.run_to_exit(&mut command);
    assert!(!status.success());
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

#[test]
fn config_default_prints_toml_that_crid_accepts() {
    let env = TestEnv::new();
    let output = std::process::Command::new(e2e::crid_binary())
        .args(["config", "default"])
        .output()
        .expect("run");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).expect("utf-8");
    for key in [
        "root = \"/var/lib/crid\"",
        "state = \"/run/crid\"",
        "listen = \"/run/crid/crid.sock\"",
        "cgroup_driver = \"cgroupfs\"",
        "[metrics]",
        "[streaming]",
        "conf_dir = \"/etc/cni/net.d\"",
    ] {
        assert!(text.contains(key), "missing {key}:\n{text}");
    }
    // The printed defaults, pointed at this env, are a valid config.
    let text = text
        .replace("\"/var/lib/crid\"", &format!("{:?}", env.root()))
        .replace("\"/run/crid/crid.sock\"", &format!("{:?}", env.socket()))
        .replace("\"/run/crid\"", &format!("{:?}", env.state()));
    std::fs::write(env.config_path(), text).expect("write");
    let mut command = std::process::Command::new(e2e::crid_binary());
    command
        .arg("--config")
        .arg(env.config_path())
        .arg("--log-level")
        .arg("nonsense");
    let (status, stderr) = env.run_to_exit(&mut command);
    assert!(!status.success(), "a bad --log-level was accepted");
    assert!(stderr.contains("nonsense"), "{stderr}");
}

#[tokio::test]
async fn drop_ins_merge_over_the_config_file_and_a_bad_one_stops_crid() {
    let env = TestEnv::new();
    let drop_ins = env.path().join("config.d");
    std::fs::create_dir_all(&drop_ins).expect("config.d");
    std::fs::write(
        drop_ins.join("10-images.toml"),
        "[images]\nmax_concurrent_layers = 9\n",
    )
    .expect("drop-in");
    // `config dump` prints what crid would run with.
    let output = env
        .command(&["config", "dump"])
        .output()
        .expect("crid config dump");
    let dump = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{dump}");
    assert!(dump.contains("max_concurrent_layers = 9"), "{dump}");
    assert!(
        dump.contains(&format!("root = {:?}", env.root())),
        "the file's keys are kept: {dump}"
    );
    // crid runs with it, and Status's verbose config says so.
    let mut crid = env.start().await;
    let info = crid
        .runtime()
        .await
        .expect("client")
        .status(proto::cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner()
        .info;
    assert!(
        info["config"].contains("\"max_concurrent_layers\":9"),
        "{info:?}"
    );
    crid.stop().await;

    let typo = drop_ins.join("20-typo.toml");
    std::fs::write(&typo, "[runtime]\ncgroup_drivr = \"systemd\"\n").expect("bad drop-in");
    let (status, stderr) = env.run_to_exit(&mut env.command(&[]));
    assert!(!status.success(), "a bad drop-in was accepted");
    assert!(
        stderr.contains(&typo.display().to_string()) && stderr.contains("cgroup_drivr"),
        "names the file and the key: {stderr}"
    );
    assert!(!env.socket().exists());
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let env = TestEnv::new();
    let command = env.command(&["--log-format", "json"]);
    let mut crid = env.start_with(command, env.socket()).await;
    crid.stop().await;
    let log = crid.log();
    let lines: Vec<&str> = log.lines().filter(|line| !line.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "crid logged nothing");
    for line in &lines {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(
            entry["level"].is_string() && entry["fields"].is_object(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|line| line.contains("crid serving CRI")),
        "{log}"
    );
}

#[test]
fn crid_check_says_what_a_pod_needs_and_fails_without_a_network() {
    let env = TestEnv::new();
    // No CNI config yet: not ready, and the output says why.
    let output = env.command(&["check"]).output().expect("crid check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("FAIL network"), "{stdout}");
    assert!(stdout.contains("ok   kernel"), "{stdout}");
    assert!(stdout.contains("driver cgroupfs"), "{stdout}");
    env.bridge_network("cridchk0", "10.251.99.0/24");
    let output = env.command(&["check"]).output().expect("crid check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("ok   network"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[tokio::test]
async fn flags_override_the_config_file() {
    let env = TestEnv::new();
    let flag_socket = env.path().join("flag.sock");
    let command = env.command(&["--listen", flag_socket.to_str().expect("utf-8")]);
    let mut crid = env.start_with(command, flag_socket.clone()).await;
    assert!(
        !env.socket().exists(),
        "the file's socket was used despite --listen"
    );
    crid.stop().await;
    assert!(!flag_socket.exists());
}

#[test]
fn a_corrupt_metadata_store_is_refused_and_left_untouched() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.root()).expect("root");
    let db = env.root().join("metadata.redb");
    let garbage = b"not a database at all, but keep me".repeat(64);
    std::fs::write(&db, &garbage).expect("write");
    let (status, stderr) = env.run_to_exit(&mut env.command(&[]));
    assert!(!status.success());
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert_eq!(std::fs::read(&db).expect("read"), garbage);
    assert!(!env.socket().exists());
}
