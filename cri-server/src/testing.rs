//! The daemon the controllers' and services' unit tests run against: the
//! real stores in a temp dir and the real controllers over them. Nothing
//! is started (no monitor, no pod built), so the tests need no root; what
//! a test needs in the stores it writes there itself.

use std::sync::Arc;

use crate::config::Config;
use crate::daemon::Daemon;
use crate::objects::{ContainerRecord, ImageRecord, PodPhase, PodRecord};
use crate::store::{MetadataStore, Table};

pub struct TestDaemon {
    pub daemon: Daemon,
    pub metadata: Arc<MetadataStore>,
    pub dir: tempfile::TempDir,
}

impl TestDaemon {
    pub async fn new() -> TestDaemon {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = Config {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            listen: dir.path().join("crid.sock"),
            ..Config::default()
        };
        for path in [&config.root, &config.state] {
            std::fs::create_dir_all(path).expect("root and state dirs");
        }
        let metadata = Arc::new(MetadataStore::open(&config.root).expect("the store opens"));
        let image_store = image::ImageStore::open(
            &config.root.join("images"),
            config.registries.clone(),
            config.images.pull_limits(),
        )
        .expect("the image store opens");
        let network = pod_sandbox::NetworkSetup {
            conf_dir: dir.path().join("cni"),
            runner: cni::CniRunner::new(Vec::new(), dir.path().join("cni-cache")),
        };
        // Reads the host's cgroup layout only; the tests create no cgroup.
        let cgroups = runtime::cgroup::Cgroups::new(runtime::cgroup::Driver::Cgroupfs)
            .await
            .expect("the cgroup layout is readable");
        let sandboxes = pod_sandbox::PodManager::new(
            &config.state,
            dir.path().join("crid-monitor"),
            network,
            cgroups,
        )
        .expect("the pods dir");
        let daemon = Daemon::wire(config, metadata.clone(), image_store, sandboxes)
            .expect("the daemon is wired");
        TestDaemon {
            daemon,
            metadata,
            dir,
        }
    }

    /// Records `container` as CreateContainer would, with its bundle dir.
    pub fn add_container(&self, container: ContainerRecord) {
        let bundle = self
            .daemon
            .config
            .state
            .join("containers")
            .join(&container.id);
        std::fs::create_dir_all(bundle).expect("the bundle dir");
        let stores = &self.daemon.stores;
        stores
            .containers
            .insert_reserving(container, &stores.lists)
            .expect("the container is recorded");
    }

    /// Records `pod` as RunPodSandbox would (its name reserved, charged).
    pub fn add_pod(&self, pod: PodRecord) {
        let stores = &self.daemon.stores;
        stores
            .pods
            .insert_reserving(pod, &stores.lists)
            .expect("the pod is recorded");
    }

    /// The containers the file holds now (the stores write through, so
    /// this is what a restart would find).
    pub fn stored_containers(&self) -> Vec<ContainerRecord> {
        self.metadata
            .list::<ContainerRecord>(Table::Containers)
            .expect("containers are readable")
            .into_iter()
            .map(|(_, record)| record)
            .collect()
    }
}

/// A pod record as RunPodSandbox leaves it, in `phase`.
pub fn pod(id: &str, phase: PodPhase) -> PodRecord {
    let metadata = proto::cri::PodSandboxMetadata {
        name: "web".into(),
        namespace: "default".into(),
        uid: format!("uid-{id}"),
        attempt: 0,
    };
    PodRecord {
        id: id.into(),
        reserved_name: format!("web_default_uid-{id}_0"),
        config: proto::cri::PodSandboxConfig {
            metadata: Some(metadata),
            ..Default::default()
        },
        runtime_handler: String::new(),
        spec: pod_sandbox::PodSpec {
            id: id.into(),
            name: "web".into(),
            namespace: "default".into(),
            uid: format!("uid-{id}"),
            hostname: "web".into(),
            network: pod_sandbox::NamespaceMode::Pod,
            ipc: pod_sandbox::NamespaceMode::Pod,
            pid: pod_sandbox::NamespaceMode::Container,
            dns: None,
            port_mappings: Vec::new(),
            sysctls: Default::default(),
            cgroup_parent: None,
            annotations: Default::default(),
            shm_size_bytes: pod_sandbox::DEFAULT_SHM_BYTES,
            user_namespace: None,
        },
        phase,
        created_at: 1,
        sandbox: Default::default(),
    }
}

/// An image record whose one layer is `chain_id` (nothing is unpacked: a
/// container of it fails once it needs its rootfs).
pub fn image(name: &str, chain_id: &str) -> ImageRecord {
    let reference = image::Reference::parse(name).expect("a reference");
    let id = format!("sha256:{}", "a".repeat(64));
    let manifest = format!("sha256:{}", "b".repeat(64));
    let pulled = image::PulledImage {
        id: id.clone(),
        repo_tag: reference.repo_tag(),
        repo_digest: reference.repo_digest(&manifest),
        manifest_digest: manifest,
        index_digest: None,
        size: 10,
        user: String::new(),
        config: Default::default(),
        layers: vec![image::LayerRecord {
            digest: format!("sha256:{}", "c".repeat(64)),
            diff_id: format!("sha256:{}", "d".repeat(64)),
            chain_id: chain_id.into(),
            size: 10,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        }],
    };
    ImageRecord {
        id,
        repo_tags: pulled.repo_tag.iter().cloned().collect(),
        repo_digests: [pulled.repo_digest.clone()].into(),
        pulled_at: 1,
        blobs: Default::default(),
        image: pulled,
    }
}

/// A started container's record in `pod_id`, as CreateContainer and
/// StartContainer leave it (its cgroup a path no host has).
pub fn container(id: &str, pod_id: &str) -> ContainerRecord {
    ContainerRecord {
        id: id.into(),
        pod_id: pod_id.into(),
        reserved_name: format!("app_web_default_uid-{pod_id}_0"),
        config: proto::cri::ContainerConfig {
            metadata: Some(proto::cri::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            ..Default::default()
        },
        spec: Default::default(),
        image_ref: "busybox".into(),
        image_id: format!("sha256:{}", "a".repeat(64)),
        image_digest: None,
        layers: Vec::new(),
        stop_signal: None,
        settled_stop_signal: None,
        phase: crate::objects::ContainerPhase::Started,
        created_at: 1,
        started_at: 2,
        log_path: None,
        cgroup: format!("/crid-unit-test-no-such-cgroup/{id}"),
        user: None,
        pid: 0,
        start_error: None,
        monitor_died: None,
        image_volumes: Vec::new(),
    }
}
