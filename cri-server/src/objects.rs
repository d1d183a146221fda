//! What crid keeps of each pod, container and image: the records the
//! stores hold, their phases, the List entry each is charged for, and the
//! ids they are known by. Below the controllers, so every controller (and
//! the image GC, which keeps containers' layers) can read any kind.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use image::PulledImage;
use pod_sandbox::{PodSpec, SandboxState};
use proto::cri;
use proto::monitor::ContainerExit;
use runtime::spec::{ContainerSpec, ResolvedUser};
use serde::{Deserialize, Serialize};

use crate::error::CridError;
use crate::limits::{LIST_BUDGET_BYTES, ListBudget};
use crate::records::{Record, RecordStore, Stored};
use crate::rpc::blocking;
use crate::store::{MetadataStore, StoreError, Table};

/// Every record store, and the budget the pods' and containers' List
/// entries are charged to. The controllers each get the ones they use.
pub struct Stores {
    pub pods: Arc<RecordStore<PodRecord>>,
    pub containers: Arc<RecordStore<ContainerRecord>>,
    pub images: Arc<RecordStore<ImageRecord>>,
    pub lists: Arc<ListBudget>,
}

impl Stores {
    /// Every record is read and decoded here, once. Blocking; at start.
    pub fn load(metadata: Arc<MetadataStore>) -> Result<Stores, StoreError> {
        let pods = Arc::new(RecordStore::<PodRecord>::load(metadata.clone())?);
        let containers = Arc::new(RecordStore::<ContainerRecord>::load(metadata.clone())?);
        let images = Arc::new(RecordStore::<ImageRecord>::load(metadata)?);
        let lists = Arc::new(ListBudget::new(LIST_BUDGET_BYTES));
        pods.charge_loaded(&lists);
        containers.charge_loaded(&lists);
        Ok(Stores {
            pods,
            containers,
            images,
            lists,
        })
    }
}

/// Where a pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    /// RunPodSandbox in progress; a restart finding it rolls it back.
    Creating,
    Ready,
    Stopped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub reserved_name: String,
    pub config: cri::PodSandboxConfig,
    pub runtime_handler: String,
    pub spec: PodSpec,
    pub phase: PodPhase,
    pub created_at: i64,
    pub sandbox: SandboxState,
}

impl Stored for PodRecord {
    const TABLE: Table = Table::Pods;
    fn id(&self) -> &str {
        &self.id
    }
}

impl Record for PodRecord {
    fn reserved_name(&self) -> &str {
        &self.reserved_name
    }
    fn list_charge(&self) -> u64 {
        // The state that encodes widest (READY, 0, is not encoded at all).
        crate::limits::entry_charge(&self.list_entry(sandbox_state(false)))
    }
}

impl PodRecord {
    /// The pod as ListPodSandbox answers it; also what it is charged in
    /// the node's List budget.
    pub fn list_entry(&self, state: i32) -> cri::PodSandbox {
        cri::PodSandbox {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }
}

pub fn sandbox_state(ready: bool) -> i32 {
    if ready {
        cri::PodSandboxState::SandboxReady.into()
    } else {
        cri::PodSandboxState::SandboxNotready.into()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerPhase {
    /// CreateContainer in progress; a restart finding it rolls it back.
    Creating,
    Created,
    /// StartContainer succeeded (whether it still runs is the monitor's word).
    Started,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub reserved_name: String,
    pub config: cri::ContainerConfig,
    pub spec: ContainerSpec,
    /// The image as the request named it.
    pub image_ref: String,
    /// The image id (config digest) PullImage returned.
    pub image_id: String,
    /// A repo digest of the image, if it has one (CRI `image_ref`).
    pub image_digest: Option<String>,
    /// Chain ids of the rootfs layers (image GC keeps them).
    pub layers: Vec<String>,
    /// The image's `StopSignal`, as it declared it.
    pub stop_signal: Option<String>,
    /// The signal StopContainer sends first, settled at create (request over
    /// image over SIGTERM). Records from before it stop with the image's
    /// (the container controller's `stop_signal`).
    #[serde(default)]
    pub settled_stop_signal: Option<cri::Signal>,
    pub phase: ContainerPhase,
    pub created_at: i64,
    pub started_at: i64,
    pub log_path: Option<PathBuf>,
    pub cgroup: String,
    pub user: Option<ResolvedUser>,
    pub pid: i32,
    /// Why StartContainer could not run the command (the monitor's
    /// message), kept for ContainerStatus: reason `StartError`, as
    /// containerd reports it.
    #[serde(default)]
    pub start_error: Option<String>,
    /// Set when the pod's monitor died before the container ended: crid
    /// killed what was left of it through its cgroup, and this is the end
    /// ContainerStatus reports (reason `Error`, saying why).
    #[serde(default)]
    pub monitor_died: Option<ContainerExit>,
    /// The images mounted as volumes (CRI `Mount.image`): image GC keeps
    /// their layers, and create mounts them read-only.
    #[serde(default)]
    pub image_volumes: Vec<ImageVolume>,
}

/// One image volume of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageVolume {
    /// Its index in the CRI config's mounts (and the spec's).
    pub mount: usize,
    /// The image id (config digest), as PullImage returned it.
    pub image_id: String,
    /// Chain ids of its layers, bottom first.
    pub layers: Vec<String>,
}

impl Stored for ContainerRecord {
    const TABLE: Table = Table::Containers;
    fn id(&self) -> &str {
        &self.id
    }
}

impl Record for ContainerRecord {
    fn reserved_name(&self) -> &str {
        &self.reserved_name
    }
    fn list_charge(&self) -> u64 {
        // A state that encodes widest (CREATED, 0, is not encoded at all).
        let state = cri::ContainerState::ContainerUnknown.into();
        crate::limits::entry_charge(&self.list_entry(state))
    }
}

impl ContainerRecord {
    /// The container as ListContainers answers it; also what it is charged
    /// in the node's List budget.
    pub fn list_entry(&self, state: i32) -> cri::Container {
        cri::Container {
            id: self.id.clone(),
            pod_sandbox_id: self.pod_id.clone(),
            metadata: self.config.metadata.clone(),
            image: Some(cri::ImageSpec {
                image: self.image_ref.clone(),
                ..Default::default()
            }),
            image_ref: self.image_id.clone(),
            state,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            image_id: self.image_id.clone(),
        }
    }
}

/// One image as crid knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<hex>` of the image config.
    pub id: String,
    /// `registry/repo:tag`, sorted, unique.
    pub repo_tags: BTreeSet<String>,
    /// `registry/repo@sha256:…`, sorted, unique.
    pub repo_digests: BTreeSet<String>,
    /// Nanoseconds since the epoch of the last pull that recorded it.
    pub pulled_at: i64,
    /// Every blob any pull of this image used (config, manifests, indexes,
    /// layers): GC keeps them all.
    pub blobs: BTreeSet<String>,
    /// The last pull's result: layers, config, size, user.
    pub image: PulledImage,
}

impl Stored for ImageRecord {
    const TABLE: Table = Table::Images;
    fn id(&self) -> &str {
        &self.id
    }
}

/// A 64-hex-digit id, as containerd's and CRI-O's, from the OS's RNG (read
/// on a blocking thread: opening and reading a file may block).
pub async fn new_id() -> Result<String, CridError> {
    blocking(|| {
        let mut bytes = [0u8; 32];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").map_err(random_error)?,
            &mut bytes,
        )
        .map_err(random_error)?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    })
    .await
}

fn random_error(error: std::io::Error) -> CridError {
    CridError::FailedPrecondition(format!("cannot read /dev/urandom: {error}"))
}
