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
use crate::live::{Change, LiveStates};
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
        if spec.user_namespace.is_some() {
            self.user_namespaces().map_err(|reason| {
                CridError::FailedPrecondition(format!(
                    "{USERNS_FIELD}: this node cannot give pods user namespaces of their own: {reason}"
                ))
            })?;
        }
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
                self.live
                    .report(Change::SandboxReady { pod_id: id.clone() });
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
        self.live.report(Change::SandboxStopped {
            pod_id: record.id.clone(),
        });
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
        self.live.report(Change::SandboxRemoved {
            pod: record.clone(),
        });
        tracing::info!(pod_id = %record.id, "pod removed");
        Ok(())
    }

    /// Whether pods may have user namespaces of their own here; why not.
    pub fn user_namespaces(&self) -> Result<(), &str> {
        self.sandboxes.user_namespaces()
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
    let user_namespace = user_namespace(options.userns_options.as_ref())?;
    if let Some(mappings) = &user_namespace {
        for (kind, file, mapping) in [
            ("uids", "/etc/subuid", mappings.uids),
            ("gids", "/etc/subgid", mappings.gids),
        ] {
            // Absent or unreadable: no ranges named, kubelet's default.
            let content = std::fs::read_to_string(file).unwrap_or_default();
            within_subordinate_ids(kind, file, &mapping, &content)?;
        }
        if security.privileged {
            // A privileged container gets the host's device nodes, which
            // cannot be made in a user namespace (as kubelet refuses it).
            return Err(CridError::invalid(
                "config.linux.security_context.privileged",
                "true",
                "a pod with a user namespace of its own cannot be privileged",
            ));
        }
        for (field, mode) in [("network", network), ("ipc", ipc), ("pid", pid)] {
            if mode == NamespaceMode::Node {
                return Err(CridError::invalid(
                    format!("{USERNS_FIELD}.mode"),
                    "POD",
                    format!(
                        "a pod user namespace cannot be combined with namespace_options.{field} NODE"
                    ),
                ));
            }
        }
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
        user_namespace,
    })
}

const USERNS_FIELD: &str = "config.linux.security_context.namespace_options.userns_options";

/// The pod's user namespace, checked: None for the node's (NODE, or no
/// options at all); the mappings for a pod's own (POD). CONTAINER and
/// TARGET are refused, and so is every mapping kubelet would never send
/// (see [`id_mapping`]).
fn user_namespace(
    options: Option<&cri::UserNamespace>,
) -> Result<Option<proto::monitor::UserNamespaceMappings>, CridError> {
    let Some(options) = options else {
        return Ok(None);
    };
    let mode_field = format!("{USERNS_FIELD}.mode");
    match cri::NamespaceMode::try_from(options.mode) {
        Ok(cri::NamespaceMode::Node) => {
            if options.uids.is_empty() && options.gids.is_empty() {
                Ok(None)
            } else {
                Err(CridError::invalid(
                    mode_field,
                    "NODE",
                    "uid and gid mappings are only for mode POD",
                ))
            }
        }
        Ok(cri::NamespaceMode::Pod) => Ok(Some(proto::monitor::UserNamespaceMappings {
            uids: id_mapping("uids", &options.uids)?,
            gids: id_mapping("gids", &options.gids)?,
        })),
        Ok(mode @ (cri::NamespaceMode::Container | cri::NamespaceMode::Target)) => {
            Err(CridError::invalid(
                mode_field,
                mode.as_str_name(),
                "a pod's user namespace is the node's (NODE) or the pod's own (POD)",
            ))
        }
        Err(_) => Err(CridError::invalid(
            mode_field,
            options.mode.to_string(),
            "not a namespace mode",
        )),
    }
}

/// One kind's mapping of a pod user namespace: exactly one range (so no
/// two can overlap), mapping container id 0 (the pod's root), not empty,
/// and inside the 32-bit id space on both sides.
fn id_mapping(
    kind: &str,
    mappings: &[cri::IdMapping],
) -> Result<proto::monitor::IdMapping, CridError> {
    let field = format!("{USERNS_FIELD}.{kind}");
    let [mapping] = mappings else {
        return Err(CridError::invalid(
            field,
            format!("{} ranges", mappings.len()),
            "must be exactly one range",
        ));
    };
    let mapping = proto::monitor::IdMapping {
        container_id: mapping.container_id,
        host_id: mapping.host_id,
        length: mapping.length,
    };
    let value = format!(
        "container_id {} host_id {} length {}",
        mapping.container_id, mapping.host_id, mapping.length
    );
    let end = |start: u32| u64::from(start) + u64::from(mapping.length);
    if mapping.container_id != 0 {
        Err(CridError::invalid(
            format!("{field}[0].container_id"),
            value,
            "must be 0: the range must map the pod's root",
        ))
    } else if mapping.length == 0 {
        Err(CridError::invalid(
            format!("{field}[0].length"),
            value,
            "must not be 0",
        ))
    } else if end(mapping.host_id) > 1 << 32 {
        Err(CridError::invalid(
            format!("{field}[0].host_id"),
            value,
            "the range ends beyond the largest id (2^32 - 1)",
        ))
    } else {
        Ok(mapping)
    }
}

/// The user whose subordinate ids kubelet gives pods (it asks getsubids).
const KUBELET_USER: &str = "kubelet";

/// The `kubelet` user's subordinate id ranges in `content` (the text of
/// /etc/subuid or /etc/subgid: `user:start:count` lines), as (start, end).
fn subordinate_ranges(content: &str) -> Vec<(u64, u64)> {
    content
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let (user, start, count) = (fields.next()?, fields.next()?, fields.next()?);
            let (start, count) = (start.parse::<u64>().ok()?, count.parse::<u64>().ok()?);
            (user == KUBELET_USER).then_some((start, start + count))
        })
        .collect()
}

/// Where the node names subordinate ids for kubelet, a pod's range must
/// lie inside them (they are what kubelet hands out, and nothing else on
/// the node uses them); where it names none, kubelet's default applies
/// and only the 32-bit bound is checked (by [`id_mapping`]).
fn within_subordinate_ids(
    kind: &str,
    file: &str,
    mapping: &proto::monitor::IdMapping,
    content: &str,
) -> Result<(), CridError> {
    let ranges = subordinate_ranges(content);
    let (start, end) = (
        u64::from(mapping.host_id),
        u64::from(mapping.host_id) + u64::from(mapping.length),
    );
    if ranges.is_empty() || ranges.iter().any(|&(from, to)| from <= start && end <= to) {
        return Ok(());
    }
    let named = ranges
        .iter()
        .map(|(from, to)| format!("{from}-{}", to - 1))
        .collect::<Vec<_>>()
        .join(", ");
    Err(CridError::invalid(
        format!("{USERNS_FIELD}.{kind}[0].host_id"),
        format!("host ids {start}-{}", end - 1),
        format!("outside the {KUBELET_USER} user's subordinate ids in {file} ({named})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, TestDaemon};

    /// The controller over the real stores (no pod is built: the pods here
    /// are records only, so stop and remove have nothing on the host).
    #[tokio::test]
    async fn stop_and_remove_are_idempotent_and_ids_resolve_by_unique_prefix() {
        let test = TestDaemon::new().await;
        let pods = test.daemon.pods.clone();
        // kubelet repeats Stop and Remove: what is gone succeeds.
        pods.stop("0123").await.expect("stopping nothing");
        pods.remove("0123").await.expect("removing nothing");

        test.add_pod(testing::pod("ab01", PodPhase::Stopped));
        test.add_pod(testing::pod("ab02", PodPhase::Ready));
        let found = pods.find("ab01").expect("valid").expect("found");
        assert_eq!(found.id, "ab01");
        assert!(
            pods.find("ab0").is_err(),
            "an ambiguous prefix names no pod"
        );
        assert!(pods.find("cd").expect("valid").is_none());

        // A stopped pod is not torn down again; it stays as it was.
        pods.stop("ab01").await.expect("stopped again");
        let record = test.daemon.stores.pods.get("ab01").expect("kept");
        assert_eq!(record.phase, PodPhase::Stopped);
        // Neither is ready: one is stopped, the other has no pause running.
        let listed = pods.list(|_| true).await;
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|(_, ready)| !ready));

        pods.remove("ab01").await.expect("removed");
        assert!(test.daemon.stores.pods.get("ab01").is_none());
        // Its name is free again: the same pod can be recorded anew.
        test.add_pod(testing::pod("ab01", PodPhase::Stopped));
    }

    fn range(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
        cri::IdMapping {
            container_id,
            host_id,
            length,
        }
    }

    fn pod_mode(uids: Vec<cri::IdMapping>, gids: Vec<cri::IdMapping>) -> cri::UserNamespace {
        cri::UserNamespace {
            mode: i32::from(cri::NamespaceMode::Pod),
            uids,
            gids,
        }
    }

    #[test]
    fn a_range_must_lie_in_kubelets_subordinate_ids_where_the_node_names_them() {
        let mapping = |host_id, length| proto::monitor::IdMapping {
            container_id: 0,
            host_id,
            length,
        };
        let file =
            "root:100000:65536\nkubelet:65536:131072\n# kubelet:0:1\nkubelet:1000000:65536\n";
        let check = |m| within_subordinate_ids("uids", "/etc/subuid", &m, file);
        assert!(check(mapping(65536, 65536)).is_ok());
        assert!(check(mapping(131072, 65536)).is_ok());
        assert!(check(mapping(1000000, 65536)).is_ok());
        // Straddling the end of a range, and past every range.
        for outside in [mapping(131073, 65536), mapping(300000, 1)] {
            let error = check(outside).expect_err("outside").to_string();
            assert!(error.contains("userns_options.uids[0].host_id"), "{error}");
            assert!(error.contains("65536-196607, 1000000-1065535"), "{error}");
        }
        // A node that names none for kubelet: kubelet's default applies.
        let none =
            within_subordinate_ids("gids", "/etc/subgid", &mapping(1000, 100000), "root:1:2\n");
        assert!(none.is_ok());
    }

    fn refusal(options: &cri::UserNamespace) -> String {
        match user_namespace(Some(options)) {
            Err(error @ CridError::InvalidArgument { .. }) => error.to_string(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn kubelets_mappings_are_taken() {
        let options = pod_mode(vec![range(0, 65536, 65536)], vec![range(0, 131072, 65536)]);
        let mappings = user_namespace(Some(&options)).expect("valid").expect("POD");
        assert_eq!(mappings.uids.host_id, 65536);
        assert_eq!(mappings.gids.host_id, 131072);
        assert_eq!(mappings.uids.map_line(), "0 65536 65536\n");
        // critest's mapping is not 65536-aligned: still fine.
        let options = pod_mode(vec![range(0, 1000, 100000)], vec![range(0, 1000, 100000)]);
        assert!(user_namespace(Some(&options)).expect("valid").is_some());
        // Up to the very last id.
        let options = pod_mode(
            vec![range(0, u32::MAX - 65535, 65536)],
            vec![range(0, 65536, 65536)],
        );
        assert!(user_namespace(Some(&options)).expect("valid").is_some());
    }

    #[test]
    fn node_mode_and_no_options_are_the_nodes_namespace() {
        assert!(user_namespace(None).expect("none").is_none());
        let node = cri::UserNamespace {
            mode: i32::from(cri::NamespaceMode::Node),
            ..Default::default()
        };
        assert!(user_namespace(Some(&node)).expect("node").is_none());
        let node_with_mappings = cri::UserNamespace {
            mode: i32::from(cri::NamespaceMode::Node),
            uids: vec![range(0, 65536, 65536)],
            gids: vec![],
        };
        assert!(refusal(&node_with_mappings).contains("userns_options.mode"));
    }

    #[test]
    fn bad_modes_and_mappings_are_refused_naming_the_field() {
        for mode in [cri::NamespaceMode::Container, cri::NamespaceMode::Target] {
            let options = cri::UserNamespace {
                mode: i32::from(mode),
                ..Default::default()
            };
            let message = refusal(&options);
            assert!(message.contains("userns_options.mode"), "{message}");
            assert!(message.contains(mode.as_str_name()), "{message}");
        }
        let unknown = cri::UserNamespace {
            mode: 9,
            ..Default::default()
        };
        assert!(refusal(&unknown).contains("userns_options.mode"));
        let good = || vec![range(0, 65536, 65536)];
        // critest's two cases: two (overlapping) ranges, and no root.
        let two = vec![range(0, 1000, 100000), range(0, 2000, 100000)];
        assert!(refusal(&pod_mode(two.clone(), two)).contains("userns_options.uids"));
        let rootless = vec![range(1, 1000, 100000)];
        assert!(
            refusal(&pod_mode(good(), rootless)).contains("userns_options.gids[0].container_id")
        );
        assert!(refusal(&pod_mode(vec![], good())).contains("userns_options.uids"));
        assert!(
            refusal(&pod_mode(vec![range(0, 65536, 0)], good()))
                .contains("userns_options.uids[0].length")
        );
        assert!(
            refusal(&pod_mode(good(), vec![range(0, u32::MAX, 2)]))
                .contains("userns_options.gids[0].host_id")
        );
    }
}
