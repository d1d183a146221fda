//! Pod sandbox RPCs: validate and translate CRI requests, keep the pod
//! records (name reserved, state persisted before and after every change),
//! and delegate the Linux work to `pod-sandbox`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use pod_sandbox::{DnsConfig, NamespaceMode, PodSpec, PortMapping, SandboxState};
use proto::cri;
use serde::{Deserialize, Serialize};

use crate::daemon::Daemon;
use crate::error::CridError;
use crate::records::{Record, RecordStore, Stored};
use crate::rpc::{DaemonRecord, blocking, forget, insert_reserving, now_nanos, save};
use crate::store::Table;

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

impl DaemonRecord for PodRecord {
    fn store(daemon: &Daemon) -> &RecordStore<PodRecord> {
        &daemon.pod_records
    }
}

impl Record for PodRecord {
    fn reserved_name(&self) -> &str {
        &self.reserved_name
    }
    fn list_charge(&self) -> u64 {
        // The state that encodes widest (READY, 0, is not encoded at all).
        crate::limits::entry_charge(&list_entry(self, sandbox_state(false)))
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

/// A full id or a unique prefix of one.
pub fn find(daemon: &Daemon, id: &str) -> Result<Option<Arc<PodRecord>>, CridError> {
    daemon.pod_records.find("pod_sandbox_id", id)
}

pub async fn run(
    daemon: Arc<Daemon>,
    request: cri::RunPodSandboxRequest,
) -> Result<String, CridError> {
    let config = request
        .config
        .ok_or_else(|| CridError::invalid("config", "<unset>", "is required"))?;
    crate::limits::check_labels_and_annotations(
        "pod sandbox",
        &config.labels,
        &config.annotations,
        daemon.config.runtime.max_labels_annotations_bytes,
    )?;
    if !request.runtime_handler.is_empty() {
        return Err(CridError::invalid(
            "runtime_handler",
            &request.runtime_handler,
            "crid has only the default handler \"\"",
        ));
    }
    let id = new_id().await?;
    // Validation reads /proc/sys: off the async workers.
    let spec = {
        let (id, config, cgroups) = (id.clone(), config.clone(), daemon.pods.cgroups().clone());
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
        runtime_handler: request.runtime_handler,
        spec,
        phase: PodPhase::Creating,
        created_at: now_nanos(),
        sandbox: SandboxState::default(),
    };
    // Reserve the name and record the pod before touching the host, so a
    // crash from here on is found and rolled back at the next start.
    // Locked before it can be found: a RemovePodSandbox of the new id
    // waits for the pod to be built or rolled back.
    let _guard = daemon.pod_locks.lock(&id).await;
    insert_reserving(&daemon, &record).await?;
    pod_sandbox::fault::point("pod.recorded");
    match daemon.pods.run(&record.spec).await {
        Ok(sandbox) => {
            pod_sandbox::fault::point("pod.built");
            record.sandbox = sandbox;
            record.phase = PodPhase::Ready;
            save(&daemon, &record).await?;
            daemon.live.watch(&id, &daemon.pods.pod_dir(&id)).await;
            tracing::info!(pod_id = %id, name = %reserved_name, ips = ?record.sandbox.ips, "pod ready");
            Ok(id)
        }
        Err(error) => {
            forget(&daemon, &record).await?;
            Err(error.into())
        }
    }
}

pub async fn stop(daemon: Arc<Daemon>, id: &str) -> Result<(), CridError> {
    // Stopping what is gone succeeds, as kubelet retries.
    let Some(record) = find(&daemon, id)? else {
        return Ok(());
    };
    let _guard = daemon.pod_locks.lock(&record.id).await;
    let Some(record) = daemon.pod_records.get(&record.id) else {
        return Ok(());
    };
    crate::containers::stop_all_in_pod(&daemon, &record.id).await?;
    daemon.pods.stop(&record.spec, &record.sandbox).await?;
    if record.phase != PodPhase::Stopped {
        let mut record = PodRecord::clone(&record);
        record.phase = PodPhase::Stopped;
        save(&daemon, &record).await?;
        tracing::info!(pod_id = %record.id, "pod stopped");
    }
    Ok(())
}

pub async fn remove(daemon: Arc<Daemon>, id: &str) -> Result<(), CridError> {
    let Some(record) = find(&daemon, id)? else {
        return Ok(());
    };
    let _guard = daemon.pod_locks.lock(&record.id).await;
    let Some(record) = daemon.pod_records.get(&record.id) else {
        return Ok(());
    };
    crate::containers::remove_all_in_pod(&daemon, &record.id).await?;
    daemon.pods.remove(&record.spec, &record.sandbox).await?;
    daemon.live.forget(&record.id);
    forget(&daemon, &*record).await?;
    tracing::info!(pod_id = %record.id, "pod removed");
    Ok(())
}

async fn is_ready(daemon: &Daemon, record: &PodRecord) -> bool {
    record.phase == PodPhase::Ready && daemon.live.pause_running(&record.id).await
}

pub async fn status(
    daemon: Arc<Daemon>,
    request: cri::PodSandboxStatusRequest,
) -> Result<cri::PodSandboxStatusResponse, CridError> {
    let record = find(&daemon, &request.pod_sandbox_id)?.ok_or_else(|| {
        CridError::NotFound(format!(
            "pod sandbox {:?} not found",
            request.pod_sandbox_id
        ))
    })?;
    let ready = is_ready(&daemon, &record).await;
    let mut info = std::collections::HashMap::new();
    if request.verbose {
        let details = serde_json::json!({
            "pid": record.sandbox.pause_pid,
            "monitorPid": record.sandbox.monitor_pid,
            "podDir": daemon.pods.pod_dir(&record.id),
            "netns": record.sandbox.netns,
            "cgroup": record.sandbox.cgroup,
            "config": record.config,
        });
        info.insert("info".to_string(), details.to_string());
    }
    Ok(cri::PodSandboxStatusResponse {
        status: Some(sandbox_status(&record, ready)),
        info,
        containers_statuses: Vec::new(),
        timestamp: now_nanos(),
    })
}

fn sandbox_state(ready: bool) -> i32 {
    if ready {
        cri::PodSandboxState::SandboxReady.into()
    } else {
        cri::PodSandboxState::SandboxNotready.into()
    }
}

fn sandbox_status(record: &PodRecord, ready: bool) -> cri::PodSandboxStatus {
    let mut ips = record.sandbox.ips.iter();
    let namespace_options = record
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    cri::PodSandboxStatus {
        id: record.id.clone(),
        metadata: record.config.metadata.clone(),
        state: sandbox_state(ready),
        created_at: record.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: namespace_options,
            }),
        }),
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        runtime_handler: record.runtime_handler.clone(),
    }
}

pub async fn list(
    daemon: Arc<Daemon>,
    request: cri::ListPodSandboxRequest,
) -> Result<cri::ListPodSandboxResponse, CridError> {
    let filter = request.filter.unwrap_or_default();
    let records = daemon.pod_records.filtered(|record| {
        record.phase != PodPhase::Creating
            && record.id.starts_with(&filter.id)
            && filter
                .label_selector
                .iter()
                .all(|(k, v)| record.config.labels.get(k) == Some(v))
    });
    let mut items = Vec::new();
    for record in records {
        let ready = is_ready(&daemon, &record).await;
        let state = sandbox_state(ready);
        if filter
            .state
            .as_ref()
            .is_some_and(|wanted| wanted.state != state)
        {
            continue;
        }
        items.push(list_entry(&record, state));
    }
    Ok(cri::ListPodSandboxResponse { items })
}

/// The pod as ListPodSandbox answers it; also what it is charged in the
/// node's List budget.
fn list_entry(record: &PodRecord, state: i32) -> cri::PodSandbox {
    cri::PodSandbox {
        id: record.id.clone(),
        metadata: record.config.metadata.clone(),
        state,
        created_at: record.created_at,
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        runtime_handler: record.runtime_handler.clone(),
    }
}

/// At start, after recovery: every pod's monitor is followed again (all
/// at once: each waits for its monitor's snapshot).
pub async fn watch_all(daemon: &Arc<Daemon>) {
    let mut watches = tokio::task::JoinSet::new();
    for record in daemon
        .pod_records
        .filtered(|record| record.phase != PodPhase::Creating)
    {
        let daemon = daemon.clone();
        watches.spawn(async move {
            let pod_dir = daemon.pods.pod_dir(&record.id);
            daemon.live.watch(&record.id, &pod_dir).await;
        });
    }
    watches.join_all().await;
}

/// At start: a pod whose RunPodSandbox a crash interrupted is rolled back.
pub async fn recover(daemon: &Arc<Daemon>) {
    for record in daemon
        .pod_records
        .filtered(|record| record.phase == PodPhase::Creating)
    {
        tracing::warn!(pod_id = %record.id, "rolling back a pod whose start was interrupted");
        match daemon.pods.remove(&record.spec, &record.sandbox).await {
            Ok(()) => {
                if let Err(error) = forget(daemon, &*record).await {
                    tracing::error!(pod_id = %record.id, %error, "cannot forget rolled-back pod");
                }
            }
            Err(error) => {
                tracing::error!(pod_id = %record.id, %error, "rollback failed; will retry at next start")
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
