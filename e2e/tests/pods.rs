//! Pod sandboxes for real: crid-monitor and pause, namespaces, CNI with
//! Debian's plugins, pod files, cgroup; stop/remove/restart; bad input and
//! failures leave nothing behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::{Crid, TestEnv, nsenter, running, wait_until};
use nix::sys::signal::Signal;
use proto::cri;
use tonic::Code;

fn pod_config(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        annotations: HashMap::from([("note".to_string(), "e2e".to_string())]),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Pod.into(),
                    pid: cri::NamespaceMode::Container.into(),
                    ipc: cri::NamespaceMode::Pod.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_namespaces(
    mut config: cri::PodSandboxConfig,
    network: cri::NamespaceMode,
    pid: cri::NamespaceMode,
) -> cri::PodSandboxConfig {
    if let Some(options) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        options.network = network.into();
        options.pid = pid.into();
    }
    config
}

async fn run_pod(crid: &Crid, config: cri::PodSandboxConfig) -> Result<String, tonic::Status> {
    let mut client = crid.runtime().await.expect("client");
    let request = cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    };
    client
        .run_pod_sandbox(request)
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

async fn pod_status(
    crid: &Crid,
    id: &str,
) -> Result<(cri::PodSandboxStatus, serde_json::Value), tonic::Status> {
    let mut client = crid.runtime().await.expect("client");
    let response = client
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await?
        .into_inner();
    let info = serde_json::from_str(&response.info["info"]).expect("verbose info is JSON");
    Ok((response.status.expect("status"), info))
}

async fn list_pods(crid: &Crid, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
    let mut client = crid.runtime().await.expect("client");
    client
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter })
        .await
        .expect("list")
        .into_inner()
        .items
}

async fn stop_pod(crid: &Crid, id: &str) {
    let mut client = crid.runtime().await.expect("client");
    client
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .expect("stop");
}

async fn remove_pod(crid: &Crid, id: &str) {
    let mut client = crid.runtime().await.expect("client");
    client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .expect("remove");
}

fn comm(pid: i64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn ns(pid: &str, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).expect("ns link")
}

fn bridge_members(bridge: &str) -> Vec<String> {
    std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// host-local keeps one file per leased IP (plus its lock and last-reserved files).
fn leases(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for network in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for lease in std::fs::read_dir(network.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = lease.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                found.push(name);
            }
        }
    }
    found
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

fn memory_cgroup(path: &str) -> PathBuf {
    e2e::cgroup_dir("memory", path)
}

#[tokio::test]
async fn a_pod_gets_namespaces_an_address_and_files_and_leaves_nothing_when_removed() {
    let env = TestEnv::new();
    let lease_dir = env.bridge_network("cridp1", "10.251.1.0/24");
    let mut crid = env.start().await;
    let id = run_pod(&crid, pod_config("web"))
        .await
        .expect("RunPodSandbox");

    let (status, info) = pod_status(&crid, &id).await.expect("status");
    assert_eq!(status.state(), cri::PodSandboxState::SandboxReady);
    assert_eq!(status.metadata.as_ref().expect("metadata").name, "web");
    assert_eq!(status.labels["app"], "web");
    let ip = status.network.as_ref().expect("network").ip.clone();
    assert!(ip.starts_with("10.251.1."), "pod IP {ip:?}");
    let (pause, monitor) = (
        info["pid"].as_i64().expect("pid"),
        info["monitorPid"].as_i64().expect("monitorPid"),
    );
    assert_eq!(comm(pause), "pause");
    assert_eq!(comm(monitor), "crid-monitor");

    // Its own network, IPC and UTS namespaces; the host's PID namespace (CONTAINER mode).
    for kind in ["net", "ipc", "uts"] {
        assert_ne!(ns(&pause.to_string(), kind), ns("self", kind), "{kind}");
    }
    assert_eq!(nsenter(pause, "-u", &["hostname"]), "web");
    assert!(nsenter(pause, "-n", &["ip", "-o", "addr", "show", "eth0"]).contains(&ip));
    assert!(nsenter(pause, "-n", &["ip", "-o", "link", "show", "lo"]).contains("UP"));

    let pod_dir = env.state().join("pods").join(&id);
    let resolv = std::fs::read_to_string(pod_dir.join("resolv.conf")).expect("resolv.conf");
    assert_eq!(
        resolv,
        "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    assert!(
        std::fs::read_to_string(pod_dir.join("hosts"))
            .expect("hosts")
            .contains(&format!("{ip}\tweb"))
    );
    assert_eq!(
        std::fs::read_to_string(pod_dir.join("hostname")).expect("hostname"),
        "web\n"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let shm = pod_dir.join("shm").display().to_string();
    assert!(
        mountinfo
            .lines()
            .any(|l| l.contains(&format!(" {shm} ")) && l.contains(" - tmpfs ")),
        "no shm tmpfs"
    );
    assert!(
        mountinfo.contains(&pod_dir.join("ns/net").display().to_string()),
        "netns not pinned"
    );

    let sandbox_cgroup = info["cgroup"]["sandbox"]
        .as_str()
        .expect("cgroup")
        .to_string();
    let procs = std::fs::read_to_string(memory_cgroup(&sandbox_cgroup).join("cgroup.procs"))
        .expect("cgroup.procs");
    for pid in [pause, monitor] {
        assert!(
            procs.lines().any(|line| line == pid.to_string()),
            "{pid} not in {sandbox_cgroup}: {procs}"
        );
    }

    let listed = list_pods(&crid, None).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    let by_label = cri::PodSandboxFilter {
        label_selector: HashMap::from([("app".into(), "other".into())]),
        ..Default::default()
    };
    assert!(list_pods(&crid, Some(by_label)).await.is_empty());
    let by_prefix = cri::PodSandboxFilter {
        id: id[..12].to_string(),
        ..Default::default()
    };
    assert_eq!(list_pods(&crid, Some(by_prefix)).await.len(), 1);
    assert_eq!(leases(&lease_dir), vec![ip.clone()]);
    assert_eq!(bridge_members("cridp1").len(), 1);

    stop_pod(&crid, &id).await;
    let (status, _) = pod_status(&crid, &id).await.expect("status after stop");
    assert_eq!(status.state(), cri::PodSandboxState::SandboxNotready);
    wait_until("pause and monitor are gone", || {
        !running(pause) && !running(monitor)
    });
    assert!(
        bridge_members("cridp1").is_empty(),
        "veth left on the bridge"
    );
    assert!(leases(&lease_dir).is_empty(), "IP lease not released");
    assert!(!memory_cgroup(&sandbox_cgroup).exists(), "cgroup left");
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .contains(&pod_dir.display().to_string())
    );
    stop_pod(&crid, &id).await; // idempotent

    remove_pod(&crid, &id).await;
    remove_pod(&crid, &id).await; // idempotent
    let error = pod_status(&crid, &id).await.expect_err("removed");
    assert_eq!(error.code(), Code::NotFound);
    assert!(list_pods(&crid, None).await.is_empty());
    assert!(!pod_dir.exists());
    // The network was taken down once: a repeated Stop and the Remove
    // after a Stop run no CNI DEL on the gone netns.
    assert!(
        !crid.log().contains("DEL without it"),
        "a second CNI DEL ran:\n{}",
        crid.log()
    );
    crid.stop().await;
}

#[tokio::test]
async fn a_pod_can_be_removed_without_being_stopped() {
    let env = TestEnv::new();
    let lease_dir = env.bridge_network("cridp2", "10.251.2.0/24");
    let mut crid = env.start().await;
    let id = run_pod(&crid, pod_config("direct")).await.expect("run");
    let (_, info) = pod_status(&crid, &id).await.expect("status");
    remove_pod(&crid, &id).await;
    let pause = info["pid"].as_i64().expect("pid");
    wait_until("pause is gone", || !running(pause));
    assert!(leases(&lease_dir).is_empty());
    assert!(bridge_members("cridp2").is_empty());
    crid.stop().await;
}

#[tokio::test]
async fn host_network_pods_need_no_cni_and_share_the_hosts_network() {
    let env = TestEnv::new(); // no CNI config at all
    let mut crid = env.start().await;
    let config = with_namespaces(
        pod_config("hostnet"),
        cri::NamespaceMode::Node,
        cri::NamespaceMode::Pod,
    );
    let id = run_pod(&crid, config).await.expect("run host-network pod");
    let (status, info) = pod_status(&crid, &id).await.expect("status");
    assert_eq!(status.state(), cri::PodSandboxState::SandboxReady);
    assert!(status.network.expect("network").ip.is_empty());
    let pause = info["pid"].as_i64().expect("pid").to_string();
    assert_eq!(ns(&pause, "net"), ns("self", "net"));
    assert_eq!(ns(&pause, "uts"), ns("self", "uts"));
    assert_ne!(ns(&pause, "ipc"), ns("self", "ipc"));
    // A pod PID namespace: pause is its PID 1.
    let status_file = std::fs::read_to_string(format!("/proc/{pause}/status")).expect("status");
    let nspid = status_file
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .expect("NSpid");
    assert!(nspid.trim_end().ends_with("\t1"), "{nspid}");
    remove_pod(&crid, &id).await;
    crid.stop().await;
}

#[tokio::test]
async fn namespaced_sysctls_are_applied_inside_the_pod() {
    let env = TestEnv::new();
    env.bridge_network("cridp3", "10.251.3.0/24");
    let mut crid = env.start().await;
    let mut config = pod_config("sysctl");
    if let Some(linux) = config.linux.as_mut() {
        linux.sysctls = HashMap::from([
            ("net.ipv4.ip_unprivileged_port_start".into(), "0".into()),
            ("kernel.shm_rmid_forced".into(), "1".into()),
        ]);
    }
    let id = run_pod(&crid, config).await.expect("run");
    let (_, info) = pod_status(&crid, &id).await.expect("status");
    let pause = info["pid"].as_i64().expect("pid");
    assert_eq!(
        nsenter(
            pause,
            "-n",
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]
        ),
        "0"
    );
    assert_eq!(
        nsenter(pause, "-i", &["cat", "/proc/sys/kernel/shm_rmid_forced"]),
        "1"
    );
    remove_pod(&crid, &id).await;
    crid.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_field_and_leave_nothing() {
    let env = TestEnv::new();
    env.bridge_network("cridp4", "10.251.4.0/24");
    let mut crid = env.start().await;
    let mut client = crid.runtime().await.expect("client");

    let error = client
        .run_pod_sandbox(cri::RunPodSandboxRequest::default())
        .await
        .expect_err("no config");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("config"), "{}", error.message());

    let mut cases: Vec<(cri::PodSandboxConfig, &str)> = Vec::new();
    let mut no_name = pod_config("x");
    no_name.metadata.as_mut().expect("metadata").name.clear();
    cases.push((no_name, "config.metadata.name"));
    let mut bad_hostname = pod_config("x");
    bad_hostname.hostname = "not_a_hostname".into();
    cases.push((bad_hostname, "hostname"));
    let mut bad_dns = pod_config("x");
    bad_dns.dns_config.as_mut().expect("dns").servers = vec!["not-an-ip".into()];
    cases.push((bad_dns, "dns_config.servers"));
    for (key, why) in [
        ("kernel.hostname", "namespaced"),
        ("net.ipv4.crid_no_such", "unknown"),
        ("vm.swappiness", "namespaced"),
    ] {
        let mut config = pod_config("x");
        config.linux.as_mut().expect("linux").sysctls =
            HashMap::from([(key.to_string(), "1".to_string())]);
        cases.push((config, key));
        let _ = why;
    }
    let mut bad_port = pod_config("x");
    bad_port.port_mappings = vec![cri::PortMapping {
        container_port: 70000,
        ..Default::default()
    }];
    cases.push((bad_port, "port_mappings[0].container_port"));
    let mut bad_parent = pod_config("x");
    bad_parent.linux.as_mut().expect("linux").cgroup_parent = "kubepods-pod1.slice".into();
    cases.push((bad_parent, "cgroup_parent"));

    for (config, field) in cases {
        let error = run_pod(&crid, config).await.expect_err(field);
        assert_eq!(
            error.code(),
            Code::InvalidArgument,
            "{field}: {}",
            error.message()
        );
        assert!(
            error.message().contains(field),
            "{field}: {}",
            error.message()
        );
    }
    let error = client
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("x")),
            runtime_handler: "kata".into(),
        })
        .await
        .expect_err("unknown handler");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("runtime_handler"),
        "{}",
        error.message()
    );

    let error = client
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: String::new(),
            verbose: false,
        })
        .await
        .expect_err("empty id");
    assert_eq!(error.code(), Code::InvalidArgument);

    assert!(list_pods(&crid, None).await.is_empty());
    let pods_dir = env.state().join("pods");
    assert_eq!(
        std::fs::read_dir(&pods_dir).expect("pods dir").count(),
        0,
        "a refused pod left its dir"
    );
    crid.stop().await;
}

#[tokio::test]
async fn without_a_network_config_pods_fail_cleanly() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    let error = run_pod(&crid, pod_config("nonet"))
        .await
        .expect_err("no CNI config");
    assert_eq!(
        error.code(),
        Code::FailedPrecondition,
        "{}",
        error.message()
    );
    assert!(
        error
            .message()
            .contains(&env.cni_conf_dir().display().to_string()),
        "{}",
        error.message()
    );
    assert!(list_pods(&crid, None).await.is_empty());
    crid.stop().await;
}

#[tokio::test]
async fn a_failing_cni_plugin_rolls_the_whole_pod_back() {
    let env = TestEnv::new();
    // host-local refuses a range it cannot parse: ADD fails after pause runs.
    let broken = r#"{"cniVersion":"1.0.0","name":"broken","plugins":[
        {"type":"bridge","bridge":"cridp5","isGateway":false,
         "ipam":{"type":"host-local","ranges":[[{"subnet":"10.251.5.0/99"}]]}}]}"#;
    env.write_cni_config("10-broken.conflist", broken);
    let mut crid = env.start().await;
    let error = run_pod(&crid, pod_config("rollback"))
        .await
        .expect_err("ADD fails");
    assert_eq!(error.code(), Code::Internal, "{}", error.message());
    assert!(
        error.message().contains("host-local") || error.message().contains("bridge"),
        "{}",
        error.message()
    );
    assert!(list_pods(&crid, None).await.is_empty());
    let pods_dir = env.state().join("pods");
    assert_eq!(std::fs::read_dir(&pods_dir).expect("pods dir").count(), 0);
    // Nothing of the failed pod stays in crid's CNI cache either.
    let cache = env.root().join("cni-cache");
    let cached: Vec<_> = walk(&cache).into_iter().filter(|p| p.is_file()).collect();
    assert!(cached.is_empty(), "CNI cache entries left: {cached:?}");
    // The name is free again.
    std::fs::remove_file(env.cni_conf_dir().join("10-broken.conflist"))
        .expect("remove broken config");
    env.bridge_network("cridp5", "10.251.5.0/24");
    let id = run_pod(&crid, pod_config("rollback"))
        .await
        .expect("same name after rollback");
    remove_pod(&crid, &id).await;
    crid.stop().await;
}

#[tokio::test]
async fn the_same_pod_name_cannot_run_twice() {
    let env = TestEnv::new();
    env.bridge_network("cridp6", "10.251.6.0/24");
    let mut crid = env.start().await;
    let id = run_pod(&crid, pod_config("twin")).await.expect("first");
    let error = run_pod(&crid, pod_config("twin"))
        .await
        .expect_err("second");
    assert_eq!(error.code(), Code::AlreadyExists, "{}", error.message());
    assert!(error.message().contains(&id), "{}", error.message());
    remove_pod(&crid, &id).await;
    let id = run_pod(&crid, pod_config("twin"))
        .await
        .expect("after remove");
    remove_pod(&crid, &id).await;
    crid.stop().await;
}

#[tokio::test]
async fn pods_keep_running_across_crid_restarts_and_crashes() {
    let env = TestEnv::new();
    let lease_dir = env.bridge_network("cridp7", "10.251.7.0/24");
    let mut crid = env.start().await;
    let id = run_pod(&crid, pod_config("survivor")).await.expect("run");
    let (_, info) = pod_status(&crid, &id).await.expect("status");
    let (pause, monitor) = (
        info["pid"].as_i64().expect("pid"),
        info["monitorPid"].as_i64().expect("monitor"),
    );

    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        crid.stop_with(signal).await;
        assert!(
            running(pause) && running(monitor),
            "the pod died with crid ({signal})"
        );
        crid = env.start().await;
        let (status, _) = pod_status(&crid, &id).await.expect("status after restart");
        assert_eq!(
            status.state(),
            cri::PodSandboxState::SandboxReady,
            "after {signal}"
        );
    }
    stop_pod(&crid, &id).await;
    remove_pod(&crid, &id).await;
    wait_until("pause is gone", || !running(pause));
    assert!(leases(&lease_dir).is_empty());
    crid.stop().await;
}

#[tokio::test]
async fn a_pod_whose_pause_died_is_not_ready_and_still_stops_cleanly() {
    let env = TestEnv::new();
    let lease_dir = env.bridge_network("cridp8", "10.251.8.0/24");
    let mut crid = env.start().await;
    let id = run_pod(&crid, pod_config("fragile")).await.expect("run");
    let (_, info) = pod_status(&crid, &id).await.expect("status");
    let (pause, monitor) = (
        info["pid"].as_i64().expect("pid"),
        info["monitorPid"].as_i64().expect("monitor"),
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor as i32), Signal::SIGKILL)
        .expect("kill monitor");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pause as i32), Signal::SIGKILL)
        .expect("kill pause");
    wait_until("pause is gone", || !running(pause));
    let (status, _) = pod_status(&crid, &id).await.expect("status");
    assert_eq!(status.state(), cri::PodSandboxState::SandboxNotready);
    stop_pod(&crid, &id).await;
    remove_pod(&crid, &id).await;
    assert!(
        leases(&lease_dir).is_empty(),
        "the pinned netns kept the lease releasable"
    );
    assert!(bridge_members("cridp8").is_empty());
    crid.stop().await;
}

/// crid killed at every step of RunPodSandbox: the next start rolls the
/// half-made pod back and nothing of it is left.
#[tokio::test]
async fn a_crash_at_any_step_of_pod_creation_is_rolled_back_at_the_next_start() {
    let env = TestEnv::new();
    let lease_dir = env.bridge_network("cridp9", "10.251.9.0/24");
    let steps = [
        "pod.recorded",
        "pod.prepared",
        "pod.monitor_started",
        "pod.namespaces_pinned",
        "pod.network_added",
        "pod.built",
    ];
    for step in steps {
        let mut crid = env.start_crashing_at(step).await;
        let error = run_pod(&crid, pod_config("crashy"))
            .await
            .expect_err("crid dies mid-way");
        assert!(
            matches!(
                error.code(),
                Code::Unavailable | Code::Unknown | Code::Internal
            ),
            "{step}: {error:?}"
        );
        let status = crid.stop_with(Signal::SIGKILL).await;
        assert!(!status.success(), "{step}: crid did not crash");

        let mut crid = env.start().await;
        assert!(
            list_pods(&crid, None).await.is_empty(),
            "{step}: the half-made pod is listed"
        );
        let pods_dir = env.state().join("pods");
        wait_until(&format!("{step}: no pod dir is left"), || {
            std::fs::read_dir(&pods_dir)
                .map(|d| d.count() == 0)
                .unwrap_or(true)
        });
        assert!(leases(&lease_dir).is_empty(), "{step}: IP lease left");
        assert!(bridge_members("cridp9").is_empty(), "{step}: veth left");
        let cache: Vec<_> = walk(&env.root().join("cni-cache"))
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        assert!(cache.is_empty(), "{step}: CNI cache left: {cache:?}");
        // The name is free again: a pod of that name runs and is removed.
        let id = run_pod(&crid, pod_config("crashy"))
            .await
            .unwrap_or_else(|e| panic!("{step}: rerun: {e:?}"));
        remove_pod(&crid, &id).await;
        crid.stop().await;
        assert!(env.leaks().is_empty(), "{step}: {:?}", env.leaks());
    }
}

/// crid killed at every crash point of StopPodSandbox and RemovePodSandbox:
/// after a restart the pod is listed until a Remove returned, the calls
/// repeated succeed, and nothing of the pod is left (address, veth, cgroup,
/// processes, state dir, CNI cache).
#[tokio::test]
async fn a_crash_inside_stop_and_remove_is_finished_by_the_repeated_call() {
    let env = TestEnv::new();
    let lease_dir = env.bridge_network("cridp11", "10.251.11.0/24");
    // (crash point, whether the pod was stopped before the crashing call,
    // the crashing call)
    let cases = [
        ("pod.stop.containers_stopped", false, "stop"),
        ("pod.teardown.network_removed", false, "stop"),
        ("pod.teardown.monitor_shut_down", false, "stop"),
        ("pod.stop.torn_down", false, "stop"),
        ("pod.teardown.network_removed", false, "remove"),
        ("pod.remove.containers_removed", true, "remove"),
        ("pod.remove.torn_down", true, "remove"),
    ];
    for (step, stopped_first, call) in cases {
        let what = format!("{step} in {call}");
        let crid = env.start().await;
        let id = run_pod(&crid, pod_config("crashy")).await.expect("run");
        let (_, info) = pod_status(&crid, &id).await.expect("status");
        let (pause, monitor) = (
            info["pid"].as_i64().expect("pid"),
            info["monitorPid"].as_i64().expect("monitor"),
        );
        if stopped_first {
            stop_pod(&crid, &id).await;
        }
        let mut crid = crid;
        crid.stop().await;
        let mut crid = env.start_crashing_at(step).await;
        let mut client = crid.runtime().await.expect("client");
        let interrupted = if call == "stop" {
            client
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .map(drop)
        } else {
            client
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .map(drop)
        };
        assert!(interrupted.is_err(), "{what}: the call returned");
        let status = crid.stop_with(Signal::SIGKILL).await;
        assert!(!status.success(), "{what}: crid did not crash");

        let mut crid = env.start().await;
        let listed: Vec<String> = list_pods(&crid, None)
            .await
            .into_iter()
            .map(|pod| pod.id)
            .collect();
        assert_eq!(listed, vec![id.clone()], "{what}: lost or phantom pod");
        stop_pod(&crid, &id).await;
        remove_pod(&crid, &id).await;
        assert!(list_pods(&crid, None).await.is_empty(), "{what}");
        wait_until(&format!("{what}: pause and monitor are gone"), || {
            !running(pause) && !running(monitor)
        });
        assert!(leases(&lease_dir).is_empty(), "{what}: IP lease left");
        assert!(bridge_members("cridp11").is_empty(), "{what}: veth left");
        assert!(
            !env.state().join("pods").join(&id).exists(),
            "{what}: pod dir left"
        );
        let cache: Vec<_> = walk(&env.root().join("cni-cache"))
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        assert!(cache.is_empty(), "{what}: CNI cache left: {cache:?}");
        crid.stop().await;
        assert!(env.leaks().is_empty(), "{what}: {:?}", env.leaks());
    }
}

/// After a reboot /run is empty: the pod's processes, pins and state dir are
/// gone. crid must report it not ready, and stop/remove must still release
/// its address (runtimes that skip DEL without a netns leak IPs here).
#[tokio::test]
async fn after_a_simulated_reboot_pods_are_not_ready_and_removal_releases_their_address() {
    let env = TestEnv::new();
    let lease_dir = env.bridge_network("cridp10", "10.251.10.0/24");
    let mut crid = env.start().await;
    let id = run_pod(&crid, pod_config("rebooted")).await.expect("run");
    let (_, info) = pod_status(&crid, &id).await.expect("status");
    let (pause, monitor) = (
        info["pid"].as_i64().expect("pid"),
        info["monitorPid"].as_i64().expect("monitor"),
    );
    crid.stop().await;

    // "Reboot": everything under the state dir's pod goes away.
    for pid in [monitor, pause] {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    wait_until("pause is gone", || !running(pause));
    let pod_dir = env.state().join("pods").join(&id);
    for pin in ["net", "ipc", "uts"] {
        let _ = nix::mount::umount2(
            &pod_dir.join("ns").join(pin),
            nix::mount::MntFlags::MNT_DETACH,
        );
    }
    let _ = nix::mount::umount2(&pod_dir.join("shm"), nix::mount::MntFlags::MNT_DETACH);
    std::fs::remove_dir_all(&pod_dir).expect("wipe the pod's state");
    assert_eq!(
        leases(&lease_dir).len(),
        1,
        "the lease outlives the reboot, as on a real node"
    );

    let mut crid = env.start().await;
    let (status, _) = pod_status(&crid, &id).await.expect("status after reboot");
    assert_eq!(status.state(), cri::PodSandboxState::SandboxNotready);
    stop_pod(&crid, &id).await;
    remove_pod(&crid, &id).await;
    assert!(leases(&lease_dir).is_empty(), "IP leaked across the reboot");
    assert!(list_pods(&crid, None).await.is_empty());
    crid.stop().await;
}

fn ping(namespace_of: Option<i64>, ip: &str) -> bool {
    let mut command = match namespace_of {
        Some(pid) => {
            let mut command = Command::new("nsenter");
            command.args(["-t", &pid.to_string(), "-n", "busybox"]);
            command
        }
        None => Command::new("busybox"),
    };
    command
        .args(["ping", "-c", "1", "-W", "5", ip])
        .output()
        .expect("busybox ping (busybox-static)")
        .status
        .success()
}

/// The host reaches the pod's address, and two pods on the network reach
/// each other. Only addresses this test created, in its own namespaces.
#[tokio::test]
async fn the_host_reaches_pods_and_pods_reach_each_other() {
    let env = TestEnv::new();
    env.bridge_network("cridp11", "10.251.11.0/24");
    let mut crid = env.start().await;
    let first = run_pod(&crid, pod_config("ping-a"))
        .await
        .expect("first pod");
    let second = run_pod(&crid, pod_config("ping-b"))
        .await
        .expect("second pod");
    let (first_status, first_info) = pod_status(&crid, &first).await.expect("status");
    let (second_status, _) = pod_status(&crid, &second).await.expect("status");
    let first_ip = first_status.network.expect("network").ip;
    let second_ip = second_status.network.expect("network").ip;
    // isGateway stays off (it would switch on the host's ip_forward), so the
    // host side of the test's own bridge gets an address by hand.
    let added = Command::new("ip")
        .args(["addr", "add", "10.251.11.254/24", "dev", "cridp11"])
        .status()
        .expect("ip");
    assert!(added.success());
    assert!(ping(None, &first_ip), "the host cannot reach {first_ip}");
    assert!(
        ping(Some(first_info["pid"].as_i64().expect("pid")), &second_ip),
        "{first_ip} cannot reach {second_ip}"
    );
    remove_pod(&crid, &first).await;
    remove_pod(&crid, &second).await;
    crid.stop().await;
}

#[tokio::test]
async fn of_two_concurrent_creates_with_one_name_exactly_one_wins() {
    let env = TestEnv::new();
    env.bridge_network("cridp12", "10.251.12.0/24");
    let mut crid = env.start().await;
    let (a, b) = tokio::join!(
        run_pod(&crid, pod_config("race")),
        run_pod(&crid, pod_config("race"))
    );
    let (winner, loser) = match (a, b) {
        (Ok(id), Err(error)) | (Err(error), Ok(id)) => (id, error),
        other => panic!("expected one winner and one AlreadyExists: {other:?}"),
    };
    assert_eq!(loser.code(), Code::AlreadyExists, "{}", loser.message());
    assert_eq!(list_pods(&crid, None).await.len(), 1);
    remove_pod(&crid, &winner).await;
    crid.stop().await;
}

/// The second plugin fails after bridge attached the pod: the whole chain
/// is rolled back (lease released, veth gone) and so is the pod.
#[tokio::test]
async fn a_plugin_failing_mid_chain_rolls_back_what_the_earlier_ones_did() {
    let env = TestEnv::new();
    let lease_dir = env.path().join("leases");
    let list = serde_json::json!({
        "cniVersion": "1.0.0", "name": "midchain",
        "plugins": [
            {"type": "bridge", "bridge": "cridp13", "isGateway": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.251.13.0/24"}]], "dataDir": lease_dir}},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.crid_no_such_knob": "1"}}
        ]
    });
    env.write_cni_config("10-midchain.conflist", &list.to_string());
    let mut crid = env.start().await;
    let error = run_pod(&crid, pod_config("midchain"))
        .await
        .expect_err("tuning fails");
    assert!(error.message().contains("tuning"), "{}", error.message());
    assert!(
        leases(&lease_dir).is_empty(),
        "bridge's lease was not rolled back"
    );
    assert!(
        bridge_members("cridp13").is_empty(),
        "bridge's veth was not rolled back"
    );
    assert!(list_pods(&crid, None).await.is_empty());
    crid.stop().await;
    let _ = Command::new("ip").args(["link", "del", "cridp13"]).status();
}

fn iptables_nat() -> String {
    let output = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Removes the shared chains portmap creates (and never deletes) if they did
/// not exist before this test.
fn remove_portmap_chains_created_since(before: &str) {
    let chains = [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-SETMARK",
        "CNI-HOSTPORT-MASQ",
    ];
    let rules = iptables_nat();
    for rule in rules.lines().filter(|line| line.starts_with("-A ")) {
        if chains
            .iter()
            .any(|chain| rule.contains(&format!("-j {chain}")) && !before.contains(rule))
        {
            // iptables-save quotes comments: let the shell split the rule.
            let delete = format!("iptables -t nat {}", rule.replacen("-A ", "-D ", 1));
            let _ = Command::new("sh").arg("-c").arg(delete).status();
        }
    }
    for chain in chains {
        if !before.contains(&format!(":{chain} ")) {
            let _ = Command::new("iptables")
                .args(["-t", "nat", "-F", chain])
                .status();
            let _ = Command::new("iptables")
                .args(["-t", "nat", "-X", chain])
                .status();
        }
    }
}

/// Port mappings reach portmap as its capability arg; removal takes the
/// pod's rules away.
#[tokio::test]
async fn host_ports_are_mapped_by_portmap_and_unmapped_on_removal() {
    let before = iptables_nat();
    let env = TestEnv::new();
    let lease_dir = env.path().join("leases");
    let list = serde_json::json!({
        "cniVersion": "1.0.0", "name": "ports",
        "plugins": [
            {"type": "bridge", "bridge": "cridp14", "isGateway": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.251.14.0/24"}]], "dataDir": lease_dir}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "loopback"}
        ]
    });
    env.write_cni_config("10-ports.conflist", &list.to_string());
    let mut crid = env.start().await;
    let mut config = pod_config("ports");
    config.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp.into(),
        container_port: 8080,
        host_port: 38080,
        host_ip: "127.0.0.1".into(),
    }];
    let id = run_pod(&crid, config).await.expect("run");
    let rules = iptables_nat();
    assert!(
        rules
            .lines()
            .any(|l| l.contains(&id) && l.contains("38080"))
            || rules.contains("--dport 38080"),
        "no DNAT for 38080:\n{rules}"
    );
    remove_pod(&crid, &id).await;
    let after = iptables_nat();
    assert!(!after.contains(&id), "rules of the pod left:\n{after}");
    assert!(
        !after.contains("38080"),
        "the host port is still mapped:\n{after}"
    );
    crid.stop().await;
    let _ = Command::new("ip").args(["link", "del", "cridp14"]).status();
    remove_portmap_chains_created_since(&before);
    let after = iptables_nat();
    let left: Vec<&str> = after
        .lines()
        .filter(|l| l.contains("CNI-") && !before.contains(*l))
        .collect();
    assert!(left.is_empty(), "CNI iptables state left: {left:?}");
}
