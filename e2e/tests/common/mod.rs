//! What the container e2e tests share: a crid with its own registry
//! holding a busybox image, pods and containers made from CRI requests as
//! kubelet makes them, and a `finish` that checks nothing was left.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::registry::{Blob, Layer, Registry, busybox_layer};
use e2e::{Crid, TestEnv};
use proto::cri;

pub type Runtime = cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

/// busybox with the applets the tests call, running as root.
pub async fn push_image(registry: &Registry) -> String {
    push_image_with(registry, "e2e/ctr", Vec::new()).await
}

/// The busybox image with `extra` layers on top, as `repo`.
pub async fn push_image_with(registry: &Registry, repo: &str, extra: Vec<Blob>) -> String {
    let mut applets = Layer::new();
    applets.dir("bin/");
    for applet in [
        "cat", "echo", "env", "head", "id", "ls", "mkdir", "ps", "pwd", "sleep", "tail", "touch",
        "tr", "true", "false", "seq", "grep", "readlink", "wc", "unshare",
    ] {
        applets.symlink(&format!("bin/{applet}"), "busybox");
    }
    let config = serde_json::json!({
        "User": "",
        "Env": ["PATH=/bin", "FROM_IMAGE=image", "OVERRIDDEN=image"],
        "Cmd": ["/bin/sh"],
        "WorkingDir": "/",
    });
    let mut layers = vec![busybox_layer(), applets.gzip()];
    layers.extend(extra);
    registry
        .pusher()
        .image_with(repo, "1", &config, &layers, e2e::registry::Schema::Oci)
        .await
        .reference
}

pub struct World {
    pub env: TestEnv,
    pub registry: Registry,
    pub crid: Crid,
    pub image: String,
    pub logs: tempfile::TempDir,
}

impl World {
    pub async fn new() -> World {
        World::with_config("").await
    }

    /// A world whose crid config also has `extra` (TOML tables).
    pub async fn with_config(extra: &str) -> World {
        let registry = Registry::start();
        let image = push_image(&registry).await;
        let mut env = TestEnv::new();
        env.extra_config = format!("{}\n{extra}", registry.crid_config());
        let crid = env.start().await;
        let mut images = crid.images().await.expect("image client");
        images
            .pull_image(cri::PullImageRequest {
                image: Some(image_spec(&image)),
                ..Default::default()
            })
            .await
            .expect("pull");
        let logs = tempfile::Builder::new()
            .prefix("crid-e2e-logs-")
            .tempdir()
            .expect("log dir");
        World {
            env,
            registry,
            crid,
            image,
            logs,
        }
    }

    /// Pushes the busybox image with `extra` layers as `repo` and pulls it.
    pub async fn push_and_pull(&self, repo: &str, extra: Vec<Blob>) -> String {
        let image = push_image_with(&self.registry, repo, extra).await;
        self.crid
            .images()
            .await
            .expect("image client")
            .pull_image(cri::PullImageRequest {
                image: Some(image_spec(&image)),
                ..Default::default()
            })
            .await
            .expect("pull");
        image
    }

    pub async fn rt(&self) -> Runtime {
        self.crid.runtime().await.expect("runtime client")
    }

    pub fn pod_config(&self, name: &str, pid: cri::NamespaceMode) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("{name}-uid"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.logs.path().join(name).display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        // The node's network keeps these tests free of CNI.
                        network: cri::NamespaceMode::Node.into(),
                        pid: pid.into(),
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

    pub async fn pod(&self, name: &str) -> String {
        self.pod_with(name, cri::NamespaceMode::Container).await
    }

    pub async fn pod_with(&self, name: &str, pid: cri::NamespaceMode) -> String {
        self.rt()
            .await
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(self.pod_config(name, pid)),
                runtime_handler: String::new(),
            })
            .await
            .expect("run pod")
            .into_inner()
            .pod_sandbox_id
    }

    pub fn container_config(&self, name: &str, command: &[&str]) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(image_spec(&self.image)),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            labels: HashMap::from([("ctr".to_string(), name.to_string())]),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    pub async fn create(
        &self,
        pod: &str,
        name: &str,
        config: cri::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        self.rt()
            .await
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(self.pod_config(name, cri::NamespaceMode::Container)),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    pub async fn start(&self, id: &str) -> Result<(), tonic::Status> {
        self.rt()
            .await
            .start_container(cri::StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// Creates and starts `command` in `pod`.
    pub async fn run(&self, pod: &str, name: &str, command: &[&str]) -> String {
        self.run_config(pod, self.container_config(name, command))
            .await
    }

    pub async fn run_config(&self, pod: &str, config: cri::ContainerConfig) -> String {
        let name = config.metadata.clone().unwrap_or_default().name;
        let id = self
            .create(pod, &name, config)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e:?}\n{}", self.crid.log()));
        self.start(&id)
            .await
            .unwrap_or_else(|e| panic!("start {name}: {e:?}"));
        id
    }

    pub async fn status(&self, id: &str) -> (cri::ContainerStatus, serde_json::Value) {
        let response = self
            .rt()
            .await
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner();
        let info = serde_json::from_str(&response.info["info"]).expect("verbose info is JSON");
        (response.status.expect("status"), info)
    }

    /// PodSandboxStatus, verbose: the status and crid's info (pause's
    /// `pid`, the `monitorPid`, …).
    pub async fn pod_status(&self, pod: &str) -> (cri::PodSandboxStatus, serde_json::Value) {
        let response = self
            .rt()
            .await
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.into(),
                verbose: true,
            })
            .await
            .expect("pod status")
            .into_inner();
        let info = serde_json::from_str(&response.info["info"]).expect("verbose info is JSON");
        (response.status.expect("status"), info)
    }

    pub async fn wait_exited(&self, id: &str) -> cri::ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, _) = self.status(id).await;
            if status.state == i32::from(cri::ContainerState::ContainerExited) {
                return status;
            }
            assert!(Instant::now() < deadline, "container {id} did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn exec(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse, tonic::Status> {
        self.rt()
            .await
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// stdout of a command that must succeed.
    pub async fn sh(&self, id: &str, script: &str) -> String {
        let out = self
            .exec(id, &["sh", "-c", script], 10)
            .await
            .unwrap_or_else(|e| panic!("exec {script:?}: {e:?}"));
        assert_eq!(
            out.exit_code,
            0,
            "{script:?}: stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub async fn stop(&self, id: &str, timeout: i64) {
        self.rt()
            .await
            .stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
            .expect("stop");
    }

    pub fn log_file(&self, pod_name: &str, container_name: &str) -> PathBuf {
        self.logs
            .path()
            .join(pod_name)
            .join(format!("{container_name}.log"))
    }

    /// ListContainers with `filter`.
    pub async fn list(&self, filter: Option<cri::ContainerFilter>) -> Vec<cri::Container> {
        self.rt()
            .await
            .list_containers(cri::ListContainersRequest { filter })
            .await
            .expect("list")
            .into_inner()
            .containers
    }

    pub async fn stop_pod(&self, pod: &str) {
        self.rt()
            .await
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.to_string(),
            })
            .await
            .expect("stop pod");
    }

    /// Stops and removes a pod, as kubelet does.
    pub async fn remove_pod(&self, pod: &str) {
        self.stop_pod(pod).await;
        let mut rt = self.rt().await;
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        })
        .await
        .expect("remove pod");
    }

    /// Removes the pods (and so their containers), stops crid, and checks
    /// nothing is left.
    pub async fn finish(mut self, pods: &[&str]) {
        for pod in pods {
            self.remove_pod(pod).await;
        }
        let containers = self.list(None).await;
        assert!(containers.is_empty(), "containers left: {containers:?}");
        self.crid.stop().await;
        assert!(self.env.leaks().is_empty(), "{:?}", self.env.leaks());
        for pod in pods {
            assert!(
                pod_cgroups(pod).is_empty(),
                "cgroups left: {:?}",
                pod_cgroups(pod)
            );
        }
    }
}

pub fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}

/// What is left of a pod's cgroup (crid's own, for pods without a parent;
/// its containers' cgroups live inside it).
pub fn pod_cgroups(pod: &str) -> Vec<PathBuf> {
    let cgroup = format!("/crid/{pod}");
    ["memory", "pids", "cpu,cpuacct", "cpuset"]
        .iter()
        .map(|controller| e2e::cgroup_dir(controller, &cgroup))
        .filter(|dir| dir.exists())
        // v2: one dir for all.
        .collect::<BTreeSet<PathBuf>>()
        .into_iter()
        .collect()
}

/// The CRI log records (stream, tag, content) of a file.
pub fn log_records(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let timestamp = parts.next().unwrap_or_default();
            assert!(
                timestamp.ends_with('Z') && timestamp.contains('T'),
                "not an RFC 3339 timestamp: {line:?}"
            );
            let stream = parts.next().unwrap_or_default().to_string();
            let tag = parts.next().unwrap_or_default().to_string();
            let content = parts.next().unwrap_or_default().to_string();
            (stream, tag, content)
        })
        .collect()
}

/// Opens `fifo` for writing once its reader has it open (bounded), and
/// writes a line: the reader's `read` returns.
pub async fn release(fifo: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Non-blocking: ENXIO while nobody reads it yet.
        match nix::fcntl::open(
            fifo,
            nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(fd) => {
                nix::unistd::write(&fd, b"go\n").expect("write the fifo");
                return;
            }
            Err(nix::errno::Errno::ENXIO) => {}
            Err(error) => panic!("open {}: {error}", fifo.display()),
        }
        assert!(Instant::now() < deadline, "nobody reads {}", fifo.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where the monitor records the container's exit.
pub fn exit_record(world: &World, id: &str) -> PathBuf {
    world
        .env
        .state()
        .join("containers")
        .join(id)
        .join("exit.json")
}
