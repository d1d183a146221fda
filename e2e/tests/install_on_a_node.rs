//! The README's "Install on a node" on a Debian 12 with systemd, for real:
//! `dpkg -i` of the package this build makes (scripts/vm-lane builds it and
//! passes it as `$CRID_DEB`), crid running as the packaged service, the
//! example CNI network, `crid check`, a pod and a container over
//! /run/crid/crid.sock, a restart, an upgrade and a stop that leave them
//! running, then `dpkg --purge`, which removes the configuration and keeps
//! /var/lib/crid.
//!
//! It changes the node (/usr, /etc, /var/lib/dpkg): built only with the
//! `vm-systemd` feature, run only in scripts/vm-lane's setup (b), whose
//! /usr, /etc and dpkg database are the host's under a throwaway overlay.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use proto::cri;

const SOCKET: &str = "/run/crid/crid.sock";
const ROOT: &str = "/var/lib/crid";
const CNI_CONFIG: &str = "/etc/cni/net.d/10-crid.conflist";
const EXAMPLE: &str = "/usr/share/doc/crid/examples/10-crid.conflist";
/// The test's registry, as an admin's drop-in would name a registry.
const DROP_IN: &str = "/etc/crid/config.d/50-e2e-registry.toml";

/// The last lines of crid's journal, for failure messages.
fn journal() -> String {
    Command::new("journalctl")
        .args(["--no-pager", "-n", "60", "-u", "crid"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_else(|error| format!("journalctl: {error}"))
}

/// Runs `command` as an admin would in a shell; its stdout, or a panic
/// with its whole output and crid's journal. Says how long it took (the
/// lane's log shows where the test's time goes under TCG).
fn sh(command: &str) -> String {
    let started = Instant::now();
    let output = Command::new("sh")
        .args(["-c", command])
        .output()
        .unwrap_or_else(|error| panic!("{command}: {error}"));
    eprintln!("{:6.1} s  {command}", started.elapsed().as_secs_f64());
    assert!(
        output.status.success(),
        "{command}: {}\n--- stdout\n{}\n--- stderr\n{}\n--- crid's journal\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        journal()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn main_pid() -> i32 {
    let pid = sh("systemctl show -p MainPID --value crid");
    pid.trim()
        .parse()
        .unwrap_or_else(|_| panic!("MainPID {pid:?}"))
}

fn active() -> String {
    // is-active exits non-zero when inactive: its word is what counts.
    let output = Command::new("systemctl")
        .args(["is-active", "crid"])
        .output()
        .expect("systemctl is-active");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn alive(pid: i64) -> bool {
    e2e::running(pid)
}

async fn runtime() -> common::Runtime {
    cri::runtime_service_client::RuntimeServiceClient::new(
        e2e::connect_unix(Path::new(SOCKET))
            .await
            .unwrap_or_else(|error| panic!("{SOCKET}: {error:#}\n{}", journal())),
    )
}

/// The container's state and its process, as crid reports them.
async fn container(id: &str) -> (i32, i64) {
    let response = runtime()
        .await
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap_or_else(|status| panic!("container status: {status:?}\n{}", journal()))
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(&response.info["info"]).expect("verbose info is JSON");
    (
        response.status.expect("status").state,
        info["pid"].as_i64().expect("the container's pid"),
    )
}

async fn listed() -> Vec<String> {
    runtime()
        .await
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .expect("list containers")
        .into_inner()
        .containers
        .into_iter()
        .map(|container| container.id)
        .collect()
}

const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;

// Worker threads keep the test's CRI connections served while it waits for
// systemctl and dpkg, as kubelet's are: a stopping crid's GOAWAY is
// answered, not left to its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_runs_restarts_upgrades_and_purges_on_a_systemd_node() {
    // A node as the README's section starts from: systemd, no crid yet.
    let deb = std::env::var("CRID_DEB").expect("$CRID_DEB: the package to install");
    assert!(Path::new(&deb).is_file(), "{deb} is missing");
    assert!(
        Path::new("/run/systemd/system").is_dir(),
        "systemd is not PID 1"
    );
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "crid"])
        .output()
        .expect("dpkg-query");
    assert!(
        !String::from_utf8_lossy(&installed.stdout).contains("installed"),
        "crid is installed already: {installed:?}"
    );
    for path in [ROOT, "/etc/crid", CNI_CONFIG] {
        assert!(
            !Path::new(path).exists(),
            "{path} exists before the install"
        );
    }

    // Installed, enabled and started by the package.
    sh(&format!("dpkg -i {deb}"));
    sh("crid --version && systemctl status crid");
    assert_eq!(sh("systemctl is-enabled crid").trim(), "enabled");
    assert_eq!(active(), "active", "{}", journal());
    assert_eq!(
        sh("readlink -f /proc/$(systemctl show -p MainPID --value crid)/exe").trim(),
        "/usr/bin/crid"
    );
    assert!(Path::new(SOCKET).exists(), "{SOCKET} missing");

    // `crid check` names what the node lacks: a CNI network, so far.
    let output = Command::new("crid")
        .arg("check")
        .output()
        .expect("crid check");
    let check = String::from_utf8_lossy(&output.stdout);
    eprintln!(
        "crid check, before a network:\n{check}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{output:?}");
    let failed: Vec<&str> = check
        .lines()
        .filter(|line| !line.starts_with("ok "))
        .collect();
    assert!(
        failed.len() == 1 && failed[0].starts_with("FAIL network"),
        "{check}"
    );

    // The example network, as the README says: then every line is ok.
    sh(&format!(
        "mkdir -p /etc/cni/net.d && cp {EXAMPLE} {CNI_CONFIG}"
    ));
    let check = sh("crid check");
    eprintln!("crid check:\n{check}");
    assert!(
        check.lines().count() >= 5 && check.lines().all(|line| line.starts_with("ok ")),
        "{check}"
    );

    // The test's registry in a drop-in, which a restart picks up.
    let registry = e2e::registry::Registry::start();
    let image = common::push_image(&registry).await;
    std::fs::write(DROP_IN, registry.crid_config()).expect("write the drop-in");
    sh("systemctl restart crid");
    let dump = sh("crid config dump");
    assert!(dump.contains(&registry.host()), "{dump}");
    cri::image_service_client::ImageServiceClient::new(
        e2e::connect_unix(Path::new(SOCKET))
            .await
            .expect("image client"),
    )
    .pull_image(cri::PullImageRequest {
        image: Some(common::image_spec(&image)),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|status| panic!("pull: {status:?}\n{}", journal()));

    // A pod on the example network, and a container in it.
    let logs = tempfile::tempdir().expect("log dir");
    let pod_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "node".into(),
            uid: "node-uid".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "node".into(),
        log_directory: logs.path().display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let pod = runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|status| panic!("run pod: {status:?}\n{}", journal()))
        .into_inner()
        .pod_sandbox_id;
    let pod_status = runtime()
        .await
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        })
        .await
        .expect("pod status")
        .into_inner();
    let address = pod_status
        .status
        .and_then(|status| status.network)
        .map(|network| network.ip)
        .unwrap_or_default();
    assert!(address.starts_with("10.88."), "pod address {address:?}");
    let pod_info: serde_json::Value =
        serde_json::from_str(&pod_status.info["info"]).expect("verbose info is JSON");
    let monitor = pod_info["monitorPid"].as_i64().expect("the monitor's pid");

    let mut rt = runtime().await;
    let ctr = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "steady".into(),
                    attempt: 0,
                }),
                image: Some(common::image_spec(&image)),
                command: vec!["sleep".into(), "100000".into()],
                log_path: "steady.log".into(),
                linux: Some(cri::LinuxContainerConfig::default()),
                ..Default::default()
            }),
            sandbox_config: Some(pod_config),
        })
        .await
        .unwrap_or_else(|status| panic!("create: {status:?}\n{}", journal()))
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap_or_else(|status| panic!("start: {status:?}\n{}", journal()));
    let (state, pid) = container(&ctr).await;
    assert_eq!(state, RUNNING);
    let pod_runs = |what: &str| {
        assert!(
            alive(pid) && alive(monitor),
            "the pod's processes are gone after {what}\n{}",
            journal()
        );
    };

    // A restart, then an upgrade (the same package again), each a new crid
    // that still has the container running and listed.
    let mut crid = main_pid();
    for (what, command) in [
        (
            "systemctl restart crid",
            "systemctl restart crid".to_owned(),
        ),
        ("the upgrade", format!("dpkg -i {deb}")),
    ] {
        sh(&command);
        assert_eq!(active(), "active", "after {what}: {}", journal());
        let new = main_pid();
        assert!(
            new > 0 && new != crid,
            "{what}: no new crid ({crid}, {new})"
        );
        crid = new;
        pod_runs(what);
        assert_eq!(container(&ctr).await, (RUNNING, pid), "after {what}");
        assert_eq!(listed().await, std::slice::from_ref(&ctr), "after {what}");
    }

    // Stopped, crid leaves the pod running.
    sh("systemctl stop crid");
    assert_eq!(active(), "inactive");
    assert!(!alive(i64::from(crid)), "crid {crid} still runs");
    pod_runs("systemctl stop crid");
    // Every stop so far (four) was clean: crid's connected clients let go
    // of it, so it never waited out its grace period.
    let stops = Command::new("journalctl")
        .args([
            "-q",
            "--no-pager",
            "-u",
            "crid",
            "-g",
            "shutting down|did not finish",
        ])
        .output()
        .expect("journalctl");
    let stops = String::from_utf8_lossy(&stops.stdout);
    assert!(
        stops.matches("shutting down").count() == 4 && !stops.contains("did not finish"),
        "{stops}"
    );

    // Back up to remove the pod, as the README says to before a purge.
    sh("systemctl start crid");
    let mut rt = runtime().await;
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("stop pod");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("remove pod");
    assert!(listed().await.is_empty());
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) || alive(monitor) {
        assert!(Instant::now() < deadline, "the pod's processes outlive it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Purged: the package's files and configuration go; a drop-in of the
    // admin's own stays (dpkg says so), and so does crid's data.
    let purge = sh("dpkg --purge crid 2>&1");
    assert!(purge.contains("/etc/crid/config.d"), "{purge}");
    let status = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "crid"])
        .output()
        .expect("dpkg-query");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.is_empty() || status.ends_with("not-installed"),
        "{status}"
    );
    for gone in [
        "/usr/bin/crid",
        "/usr/bin/crid-monitor",
        "/usr/lib/systemd/system/crid.service",
        "/etc/systemd/system/crid.service",
        "/etc/systemd/system/multi-user.target.wants/crid.service",
        "/var/lib/systemd/deb-systemd-helper-enabled/crid.service",
        "/etc/crid/config.toml",
        "/etc/crid/config.d/README",
        SOCKET,
    ] {
        assert!(!Path::new(gone).exists(), "{gone} left after the purge");
    }
    assert!(Path::new(DROP_IN).is_file(), "the purge took {DROP_IN}");
    assert_eq!(active(), "inactive");
    assert!(
        Path::new(ROOT).join("metadata.redb").is_file(),
        "the purge took {ROOT}"
    );

    // What this test added to the node.
    std::fs::remove_dir_all("/etc/crid").expect("remove the drop-in");
    std::fs::remove_dir_all(ROOT).expect("remove crid's data");
    std::fs::remove_file(CNI_CONFIG).expect("remove the network");
    sh("ip link del crid0 && rm -rf /var/lib/cni/networks/crid");
}
