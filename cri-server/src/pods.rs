//! The pod controller: each pod's lifecycle (run, stop, remove, recovery)
//! over `pod-sandbox` (namespaces, mounts, CNI, the pod's monitor), with
//! the pod records (name reserved, state persisted before and after every
//! change). A pod's containers go with it, through the container
//! controller; every operation holds the pod's lock.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pod_sandbox::{
    DnsConfig, NamespaceMode, PodManager, PodSpec, PortMapping, SandboxState, fault,
};
use proto::cri;

use crate::containers::ContainerController;
use crate::error::CridError;
use crate::limits::ListBudget;
use crate::live::LiveStates;
use crate::locks::KeyedLocks;
use crate::objects::{PodPhase, PodRecord, new_id};
use crate::records::{RecordStore, forget, insert_reserving, save};
use crate::rpc::{blocking, now_nanos};

pub struct PodController {
    records: Arc<RecordStore<PodRecord>>,
    sandboxes: Arc<PodManager>,
    /// A pod's containers are stopped and removed with it.
    containers: Arc<ContainerController>,
    live: Arc<LiveStates>,
    /// One per pod, shared with the container controller.
    pod_locks: Arc<KeyedLocks>,
    lists: Arc<ListBudget>,
}

impl PodController {
    pub fn new(
        records: Arc<RecordStore<PodRecord>>,
        sandboxes: Arc<PodManager>,
        containers: Arc<ContainerController>,
        live: Arc<LiveStates>,
        pod_locks: Arc<KeyedLocks>,
        lists: Arc<ListBudget>,
    ) -> PodController {
        PodController {
            records,
            sandboxes,
            containers,
            live,
            pod_locks,
            lists,
        }
    }

    /// A full id or a unique prefix of one.
    pub fn find(&self, id: &str) -> Result<Option<Arc<PodRecord>>, CridError> {
        self.records.find("pod_sandbox_id", id)
    }

    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.sandboxes.pod_dir(id)
    }

    /// Builds the pod `config` asks for; its id. The config was checked for
    /// presence and size by the service.
    pub async fn run(
        &self,
        config: cri::PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<String, CridError> {
        let id = new_id().await?;
        // Validation reads /proc/sys: off the async workers.
        let spec = {
            let (id, config, cgroups) =
                (id.clone(), config.clone(), self.sandboxes.cgroups().clone());
            blocking(move || translate(&id, &config, &cgroups)).await?
        };
        let metadata = config.metadata.clone().unwrap_or_default();
        let reserved_name = format!(
            "{}_{}_{}_{}",
            metadata.name, metadata.namespace, metadata.uid, metadata.attempt
        );
        let mut record = PodRecord {
            id: id.clone(),
            reserved_name: reserved_name.clone(),
            config,
            runtime_handler,
            spec,
            phase: PodPhase::Creating,
            created_at: now_nanos(),
            sandbox: SandboxState::default(),
        };
        // Reserve the name and record the pod before touching the host, so a
        // crash from here on is found and rolled back at the next start.
        // Locked before it can be found: a RemovePodSandbox of the new id
        // waits for the pod to be built or rolled back.
        let _guard = self.pod_locks.lock(&id).await;
        insert_reserving(&self.records, &self.lists, &record).await?;
        fault::point("pod.recorded");
        match self.sandboxes.run(&record.spec).await {
            Ok(sandbox) => {
                fault::point("pod.built");
                record.sandbox = sandbox;
                record.phase = PodPhase::Ready;
                save(&self.records, &record).await?;
                self.live.watch(&id, &self.sandboxes.pod_dir(&id)).await;
                tracing::info!(pod_id = %id, name = %reserved_name, ips = ?record.sandbox.ips, "pod ready");
                Ok(id)
            }
            Err(error) => {
                forget(&self.records, &self.lists, &record).await?;
                Err(error.into())
            }
        }
    }

    pub async fn stop(&self, id: &str) -> Result<(), CridError> {
        // Stopping what is gone succeeds, as kubelet retries.
        let Some(record) = self.find(id)? else {
            return Ok(());
        };
        let _guard = self.pod_locks.lock(&record.id).await;
        let Some(record) = self.records.get(&record.id) else {
            return Ok(());
        };
        if record.phase == PodPhase::Stopped {
            // Its teardown completed before the phase was saved; kubelet
            // repeats Stop, and a second CNI DEL would run every plugin again
            // on a netns that is gone.
            return Ok(());
        }
        self.containers.stop_all_in_pod(&record.id).await?;
        fault::point("pod.stop.containers_stopped");
        self.sandboxes.stop(&record.spec, &record.sandbox).await?;
        fault::point("pod.stop.torn_down");
        let mut record = PodRecord::clone(&record);
        record.phase = PodPhase::Stopped;
        save(&self.records, &record).await?;
        tracing::info!(pod_id = %record.id, "pod stopped");
        Ok(())
    }

    pub async fn remove(&self, id: &str) -> Result<(), CridError> {
        let Some(record) = self.find(id)? else {
            return Ok(());
        };
        let _guard = self.pod_locks.lock(&record.id).await;
        let Some(record) = self.records.get(&record.id) else {
            return Ok(());
        };
        self.containers.remove_all_in_pod(&record.id).await?;
        fault::point("pod.remove.containers_removed");
        let stopped = record.phase == PodPhase::Stopped;
        self.sandboxes
            .remove(&record.spec, &record.sandbox, stopped)
            .await?;
        fault::point("pod.remove.torn_down");
        self.live.forget(&record.id);
        forget(&self.records, &self.lists, &*record).await?;
        tracing::info!(pod_id = %record.id, "pod removed");
        Ok(())
    }

    pub async fn is_ready(&self, record: &PodRecord) -> bool {
        record.phase == PodPhase::Ready && self.live.pause_running(&record.id).await
    }

    /// The pods `keep` selects (none being created), each with whether it
    /// is ready now.
    pub async fn list(&self, keep: impl Fn(&PodRecord) -> bool) -> Vec<(Arc<PodRecord>, bool)> {
        let records = self
            .records
            .filtered(|record| record.phase != PodPhase::Creating && keep(record));
        let mut pods = Vec::with_capacity(records.len());
        for record in records {
            let ready = self.is_ready(&record).await;
            pods.push((record, ready));
        }
        pods
    }

    /// At start, after recovery: every pod's monitor is followed again (all
    /// at once: each waits for its monitor's snapshot).
    pub async fn watch_all(&self) {
        let mut watches = tokio::task::JoinSet::new();
        for record in self
            .records
            .filtered(|record| record.phase != PodPhase::Creating)
        {
            let (live, pod_dir) = (self.live.clone(), self.sandboxes.pod_dir(&record.id));
            watches.spawn(async move {
                live.watch(&record.id, &pod_dir).await;
            });
        }
        watches.join_all().await;
    }

    /// At start: a pod whose RunPodSandbox a crash interrupted is rolled back.
    pub async fn recover(&self) {
        for record in self
            .records
            .filtered(|record| record.phase == PodPhase::Creating)
        {
            tracing::warn!(pod_id = %record.id, "rolling back a pod whose start was interrupted");
            match self
                .sandboxes
                .remove(&record.spec, &record.sandbox, false)
                .await
            {
                Ok(()) => {
                    if let Err(error) = forget(&self.records, &self.lists, &*record).await {
                        tracing::error!(pod_id = %record.id, %error, "cannot forget rolled-back pod");
                    }
                }
                Err(error) => {
                    tracing::error!(pod_id = %record.id, %error, "rollback failed; will retry at next start")
                }
            }
        }
    }
}

/// CRI's pod config → a validated [`PodSpec`]; `cgroups` says what a
/// `cgroup_parent` must look like (a path or a systemd slice).
pub fn translate(
    id: &str,
    config: &cri::PodSandboxConfig,
    cgroups: &pod_sandbox::Cgroups,
) -> Result<PodSpec, CridError> {
    let metadata = config
        .metadata
        .as_ref()
        .ok_or_else(|| CridError::invalid("config.metadata", "<unset>", "is required"))?;
    for (field, value) in [
        ("config.metadata.name", &metadata.name),
        ("config.metadata.namespace", &metadata.namespace),
        ("config.metadata.uid", &metadata.uid),
    ] {
        if value.is_empty() {
            return Err(CridError::invalid(field, value, "is required"));
        }
        // They go into CNI_ARGS (';'-separated, passed as C strings).
        if value.contains(['\0', ';']) {
            return Err(CridError::invalid(
                field,
                value,
                "must not contain NUL or ';'",
            ));
        }
        if value.contains('_') && field == "config.metadata.uid" {
            // '_' separates the parts of the reserved name.
            return Err(CridError::invalid(field, value, "must not contain '_'"));
        }
    }
    if !config.log_directory.is_empty() && !Path::new(&config.log_directory).is_absolute() {
        return Err(CridError::invalid(
            "config.log_directory",
            &config.log_directory,
            "must be an absolute path",
        ));
    }
    let linux = config.linux.clone().unwrap_or_default();
    let security = linux.security_context.clone().unwrap_or_default();
    let options = security.namespace_options.clone().unwrap_or_default();
    let mode = |field: &'static str,
                value: i32,
                allowed: &[NamespaceMode]|
     -> Result<NamespaceMode, CridError> {
        let mode = match cri::NamespaceMode::try_from(value) {
            Ok(cri::NamespaceMode::Pod) => NamespaceMode::Pod,
            Ok(cri::NamespaceMode::Container) => NamespaceMode::Container,
            Ok(cri::NamespaceMode::Node) => NamespaceMode::Node,
            _ => {
                return Err(CridError::invalid(
                    field,
                    value.to_string(),
                    "not a namespace mode a pod can have",
                ));
            }
        };
        if allowed.contains(&mode) {
            Ok(mode)
        } else {
            Err(CridError::invalid(
                field,
                format!("{mode:?}"),
                "not a namespace mode a pod can have",
            ))
        }
    };
    let pod_or_node = [NamespaceMode::Pod, NamespaceMode::Node];
    let network = mode(
        "config.linux.security_context.namespace_options.network",
        options.network,
        &pod_or_node,
    )?;
    let ipc = mode(
        "config.linux.security_context.namespace_options.ipc",
        options.ipc,
        &pod_or_node,
    )?;
    let pid = mode(
        "config.linux.security_context.namespace_options.pid",
        options.pid,
        &[
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Node,
        ],
    )?;
    if let Some(userns) = &options.userns_options
        && userns.mode == i32::from(cri::NamespaceMode::Pod)
    {
        return Err(CridError::FailedPrecondition(
            "config.linux.security_context.namespace_options.userns_options: user namespaces are not supported yet".into(),
        ));
    }

    let hostname = if network == NamespaceMode::Node {
        nix::unistd::gethostname()
            .map_err(|e| {
                CridError::FailedPrecondition(format!("cannot read the node's hostname: {e}"))
            })?
            .to_string_lossy()
            .into_owned()
    } else if config.hostname.is_empty() {
        metadata.name.chars().take(63).collect()
    } else {
        config.hostname.clone()
    };
    pod_sandbox::files::validate_hostname(&hostname)?;

    let dns = config.dns_config.as_ref().map(|dns| DnsConfig {
        servers: dns.servers.clone(),
        searches: dns.searches.clone(),
        options: dns.options.clone(),
    });
    if let Some(dns) = &dns {
        pod_sandbox::files::validate_dns(dns)?;
    }

    let mut port_mappings = Vec::new();
    for (index, mapping) in config.port_mappings.iter().enumerate() {
        let field = |name: &str| format!("config.port_mappings[{index}].{name}");
        let port = |name: &str, value: i32, allow_zero: bool| -> Result<u16, CridError> {
            u16::try_from(value)
                .ok()
                .filter(|&p| allow_zero || p > 0)
                .ok_or_else(|| {
                    CridError::Pod(pod_sandbox::PodError::invalid(
                        field(name),
                        value.to_string(),
                        "not a port number",
                    ))
                })
        };
        let protocol = match cri::Protocol::try_from(mapping.protocol) {
            Ok(protocol) => protocol.as_str_name().to_string(),
            Err(_) => {
                return Err(pod_sandbox::PodError::invalid(
                    field("protocol"),
                    mapping.protocol.to_string(),
                    "unknown protocol",
                )
                .into());
            }
        };
        if !mapping.host_ip.is_empty() && mapping.host_ip.parse::<IpAddr>().is_err() {
            return Err(pod_sandbox::PodError::invalid(
                field("host_ip"),
                &mapping.host_ip,
                "not an IP address",
            )
            .into());
        }
        port_mappings.push(PortMapping {
            protocol,
            container_port: port("container_port", mapping.container_port, false)?,
            host_port: port("host_port", mapping.host_port, true)?,
            host_ip: mapping.host_ip.clone(),
        });
    }

    let requested: BTreeMap<String, String> = linux
        .sysctls
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let sysctls = pod_sandbox::sysctl::validate(&requested, network, ipc, Path::new("/proc/sys"))?;

    let cgroup_parent = Some(linux.cgroup_parent.clone()).filter(|parent| !parent.is_empty());
    if let Some(parent) = &cgroup_parent {
        cgroups.validate_parent(parent)?;
    }

    Ok(PodSpec {
        id: id.to_string(),
        name: metadata.name.clone(),
        namespace: metadata.namespace.clone(),
        uid: metadata.uid.clone(),
        hostname,
        network,
        ipc,
        pid,
        dns,
        port_mappings,
        sysctls,
        cgroup_parent,
        annotations: config
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        shm_size_bytes: pod_sandbox::DEFAULT_SHM_BYTES,
    })
}
