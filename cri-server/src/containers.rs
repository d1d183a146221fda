//! Container RPCs: validate and translate CRI requests, keep the container
//! records (name reserved per pod, phase persisted around every change), and
//! drive `runtime` (the container's files) and the pod's monitor (its
//! processes). The monitor is the truth about what runs; the exit record it
//! writes into the bundle is the truth once the monitor is gone.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proto::cri;
use proto::monitor::{
    ContainerCreate, ContainerExit, ContainerState, LogFile, MonitorRequest, MonitorResponse,
};
use runtime::MonitorClient;
use runtime::container::ContainerDirs;
use runtime::spec::{ContainerSpec, ImageConfigView, ResolvedUser};
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;

use crate::container_config;
use crate::daemon::Daemon;
use crate::error::CridError;
use crate::images::{self, ImageRecord};
use crate::pods::{self, PodPhase, PodRecord};
use crate::records::{Record, RecordStore, Stored};
use crate::rpc::{DaemonRecord, blocking, forget, insert_reserving, now_nanos, save};
use crate::store::Table;

/// Exit code and reason when a container's end was never observed (its
/// pod's monitor is gone: crash, reboot), as containerd reports it.
const UNKNOWN_EXIT_CODE: i32 = 255;
/// Exit code (reason `StartError`) of a container whose command could not
/// be run, as containerd reports it.
const START_ERROR_EXIT_CODE: i32 = 128;
/// After SIGKILL, how long to wait for the exit before giving up.
const KILL_WAIT: Duration = Duration::from_secs(10);

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
    /// image over SIGTERM). Records from before it: see [`stop_signal`].
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
}

impl Stored for ContainerRecord {
    const TABLE: Table = Table::Containers;
    fn id(&self) -> &str {
        &self.id
    }
}

impl DaemonRecord for ContainerRecord {
    fn store(daemon: &Daemon) -> &RecordStore<ContainerRecord> {
        &daemon.container_records
    }
}

impl Record for ContainerRecord {
    fn reserved_name(&self) -> &str {
        &self.reserved_name
    }
    fn list_charge(&self) -> u64 {
        // A state that encodes widest (CREATED, 0, is not encoded at all).
        let state = cri::ContainerState::ContainerUnknown.into();
        crate::limits::entry_charge(&list_entry(self, state))
    }
}

/// A full id or a unique prefix of one.
fn find(daemon: &Daemon, id: &str) -> Result<Option<Arc<ContainerRecord>>, CridError> {
    daemon.container_records.find("container_id", id)
}

fn not_found(id: &str) -> CridError {
    CridError::NotFound(format!("container {id:?} not found"))
}

fn find_existing(daemon: &Daemon, id: &str) -> Result<Arc<ContainerRecord>, CridError> {
    find(daemon, id)?.ok_or_else(|| not_found(id))
}

/// The container `id` names, with its pod's lock held (see
/// [`Daemon::pod_locks`]); None when there is none, also when it was
/// removed while this waited for the lock.
async fn lock_container(
    daemon: &Daemon,
    id: &str,
) -> Result<Option<(OwnedMutexGuard<()>, Arc<ContainerRecord>)>, CridError> {
    let Some(found) = find(daemon, id)? else {
        return Ok(None);
    };
    let guard = daemon.pod_locks.lock(&found.pod_id).await;
    Ok(daemon
        .container_records
        .get(&found.id)
        .map(|record| (guard, record)))
}

/// The pod a container is created into, which must be ready; `requested`
/// is the id the request named.
fn ready_pod(pod: Option<Arc<PodRecord>>, requested: &str) -> Result<Arc<PodRecord>, CridError> {
    let pod =
        pod.ok_or_else(|| CridError::NotFound(format!("pod sandbox {requested:?} not found")))?;
    if pod.phase != PodPhase::Ready {
        return Err(CridError::FailedPrecondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    Ok(pod)
}

fn dirs(daemon: &Daemon, id: &str) -> ContainerDirs {
    ContainerDirs::new(&daemon.config.state, &daemon.config.root, id)
}

/// The client of the container's pod's monitor: the pod's own while crid
/// watches the pod, else (recovery, before the watch) a new one.
pub(crate) fn monitor(daemon: &Daemon, record: &ContainerRecord) -> MonitorClient {
    daemon
        .live
        .client(&record.pod_id)
        .unwrap_or_else(|| MonitorClient::new(&daemon.pods.pod_dir(&record.pod_id)))
}

pub async fn create(
    daemon: Arc<Daemon>,
    request: cri::CreateContainerRequest,
) -> Result<String, CridError> {
    let config = request
        .config
        .ok_or_else(|| CridError::invalid("config", "<unset>", "is required"))?;
    crate::limits::check_labels_and_annotations(
        "container",
        &config.labels,
        &config.annotations,
        daemon.config.runtime.max_labels_annotations_bytes,
    )?;
    let pod = ready_pod(
        pods::find(&daemon, &request.pod_sandbox_id)?,
        &request.pod_sandbox_id,
    )?;
    let image_name = config
        .image
        .as_ref()
        .map(|image| image.image.clone())
        .unwrap_or_default();
    if image_name.is_empty() {
        return Err(CridError::invalid("config.image.image", "", "is required"));
    }
    let image = images::find(&daemon, &image_name)?.ok_or_else(|| {
        CridError::NotFound(format!(
            "image {image_name:?} not found: pull it before creating a container"
        ))
    })?;
    let target_pid_ns = target_pid_namespace(&daemon, &pod, &config).await?;
    let pod_dir = daemon.pods.pod_dir(&pod.id);
    let mut spec = container_config::translate(&config, &pod, &pod_dir, target_pid_ns)?;
    let settled_stop_signal =
        container_config::stop_signal(&config, image.image.config.stop_signal.as_deref())?;
    let id = pods::new_id().await?;
    let placement = match &pod.sandbox.cgroup {
        Some(placement) => placement.clone(),
        None => daemon
            .pods
            .cgroups()
            .placement(&pod.id, pod.spec.cgroup_parent.as_deref())?,
    };
    let cgroup = runtime::cgroup::container_cgroup(&placement, &id);
    spec.cgroups_path = Some(cgroup.clone());

    let metadata = config.metadata.clone().unwrap_or_default();
    let pod_metadata = pod.config.metadata.clone().unwrap_or_default();
    let reserved_name = format!(
        "{}_{}_{}_{}_{}",
        metadata.name,
        pod_metadata.name,
        pod_metadata.namespace,
        pod_metadata.uid,
        metadata.attempt
    );
    let log = container_config::log_file(&config, &pod)?;
    // ContainerStatus reports the joined path, as containerd does.
    let log_path = log.as_ref().map(LogFile::path);
    let mut record = ContainerRecord {
        id: id.clone(),
        pod_id: pod.id.clone(),
        reserved_name,
        image_ref: image_name,
        image_id: image.id.clone(),
        image_digest: image.repo_digests.iter().next().cloned(),
        layers: image.image.chain_ids(),
        stop_signal: image.image.config.stop_signal.clone(),
        settled_stop_signal: Some(settled_stop_signal),
        start_error: None,
        config,
        spec,
        phase: ContainerPhase::Creating,
        created_at: now_nanos(),
        started_at: 0,
        log_path,
        cgroup,
        user: None,
        pid: 0,
    };
    // Under the pod's lock, the pod is checked again: a StopPodSandbox or
    // RemovePodSandbox that ran meanwhile has stopped or removed it, and
    // one that comes later waits for this create and then finds the
    // container.
    let _guard = daemon.pod_locks.lock(&pod.id).await;
    ready_pod(daemon.pod_records.get(&pod.id), &request.pod_sandbox_id)?;
    // Name reserved and record written before the host is touched: a crash
    // from here on is found and rolled back at the next start.
    insert_reserving(&daemon, &record).await?;
    let mut progress = pod_sandbox::Progress::new("container", &id);
    progress.step("container.recorded");
    match build(&daemon, &record, &placement, &image, log, &mut progress).await {
        Ok((pid, user)) => {
            progress.step("container.built");
            record.pid = pid;
            record.user = Some(user);
            record.phase = ContainerPhase::Created;
            save(&daemon, &record).await?;
            tracing::info!(container_id = %id, pod_id = %record.pod_id, name = %record.reserved_name, "container created");
            Ok(id)
        }
        Err(error) => {
            tracing::warn!(container_id = %id, %error, "container create failed; rolling back");
            if let Err(rollback) = teardown(&daemon, &record).await {
                tracing::error!(container_id = %id, error = %rollback, "rollback incomplete");
            }
            forget(&daemon, &record).await?;
            Err(error)
        }
    }
}

/// The PID namespace of the target container (CRI `TARGET`), if asked for.
async fn target_pid_namespace(
    daemon: &Arc<Daemon>,
    pod: &PodRecord,
    config: &cri::ContainerConfig,
) -> Result<Option<PathBuf>, CridError> {
    let target_id = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .filter(|n| n.pid == i32::from(cri::NamespaceMode::Target))
        .map(|n| n.target_id.clone());
    let Some(target_id) = target_id else {
        return Ok(None);
    };
    let field = "config.linux.security_context.namespace_options.target_id";
    let target = find(daemon, &target_id)?
        .filter(|t| t.pod_id == pod.id)
        .ok_or_else(|| CridError::invalid(field, &target_id, "no such container in this pod"))?;
    let state = observe_one(daemon, &target).await;
    if state.state != cri::ContainerState::ContainerRunning {
        return Err(CridError::invalid(
            field,
            &target_id,
            "the target container is not running",
        ));
    }
    Ok(Some(PathBuf::from(format!("/proc/{}/ns/pid", target.pid))))
}

/// The Linux side of CreateContainer; returns the init's pid and the user.
async fn build(
    daemon: &Arc<Daemon>,
    record: &ContainerRecord,
    placement: &pod_sandbox::Placement,
    image: &ImageRecord,
    log: Option<LogFile>,
    progress: &mut pod_sandbox::Progress,
) -> Result<(i32, ResolvedUser), CridError> {
    let dirs = dirs(daemon, &record.id);
    let lower = record
        .layers
        .iter()
        .map(|chain_id| daemon.images.layer_dir(chain_id))
        .collect::<Result<Vec<_>, _>>()?;
    let config = &image.image.config;
    let view = ImageConfigView {
        user: image.image.user.clone(),
        env: config.env.clone(),
        entrypoint: config.entrypoint.clone(),
        cmd: config.cmd.clone(),
        working_dir: config.working_dir.clone(),
    };
    let cgroups = daemon.pods.cgroups().clone();
    let (spec, cgroup) = (record.spec.clone(), record.cgroup.clone());
    let prepared = blocking(move || {
        let hierarchy = cgroups.hierarchy();
        dirs.mount_rootfs(&lower)?;
        let mut spec = spec;
        runtime::container::prepare_host_paths(&mut spec)?;
        let user = runtime::spec::resolve_user(&spec, &view.user, &dirs.rootfs)?;
        let mut oci = runtime::spec::build_spec(&spec, &view, &dirs.rootfs, &user)?;
        // build_spec is pure (unit-tested on any machine); what only this
        // host can say (its devices, the capabilities crid holds) comes after.
        runtime::host::fit_to_host(&mut oci, &spec)?;
        dirs.write_spec(&oci)?;
        let device_rules = oci
            .linux()
            .as_ref()
            .and_then(|linux| linux.resources().as_ref())
            .and_then(|resources| resources.devices().clone())
            .unwrap_or_default();
        cgroups.prepare_container(&cgroup, &spec.resources, &device_rules)?;
        Ok((
            user,
            dirs.bundle,
            hierarchy.procs_files(&cgroup),
            hierarchy.oom_events_file(&cgroup),
            hierarchy.view(&cgroup),
            device_rules,
        ))
    })
    .await?;
    let (user, bundle, cgroup_procs, oom_events, cgroup_view, device_rules) = prepared;
    progress.step("container.prepared");
    let create = ContainerCreate {
        id: record.id.clone(),
        bundle,
        cgroup_procs,
        placed_by_crid: runtime::cgroup::Cgroups::places_after_fork(placement),
        oom_events,
        cgroup_view,
        log,
        // For a monitor started by an older crid, which knows only this.
        log_path: record.log_path.clone(),
        stdin: record.spec.stdin,
        stdin_once: record.spec.stdin_once,
        tty: record.spec.tty,
    };
    let cgroups = daemon.pods.cgroups();
    let place = async |pids: Vec<i32>| {
        let resources = &record.spec.resources;
        cgroups
            .place_container(placement, &record.cgroup, &pids, resources, &device_rules)
            .await
    };
    match monitor(daemon, record)
        .request_placing(&MonitorRequest::CreateContainer(create), place)
        .await??
    {
        MonitorResponse::Created { pid } => {
            progress.step("container.init_created");
            daemon
                .live
                .update(&record.pod_id, |pod| pod.created(&record.id, pid));
            Ok((pid, user))
        }
        other => Err(unexpected("CreateContainer", &other)),
    }
}

fn unexpected(request: &str, response: &MonitorResponse) -> CridError {
    CridError::Internal(format!("crid-monitor answered {request} with {response:?}"))
}

/// Undoes everything of a container: its processes, cgroup, rootfs mount,
/// bundle and writable layer. Idempotent; the record stays.
async fn teardown(daemon: &Arc<Daemon>, record: &ContainerRecord) -> Result<(), CridError> {
    let remove = MonitorRequest::RemoveContainer {
        id: record.id.clone(),
    };
    if let Err(error) = monitor(daemon, record).request(&remove).await {
        // The pod's monitor is gone (pod stopped, crash): the cgroup kill ends it.
        tracing::debug!(container_id = %record.id, %error, "monitor did not take RemoveContainer");
    }
    daemon
        .live
        .update(&record.pod_id, |pod| pod.removed(&record.id));
    daemon
        .pods
        .cgroups()
        .kill_and_remove(&record.cgroup)
        .await?;
    let dirs = dirs(daemon, &record.id);
    blocking(move || Ok(dirs.remove()?)).await
}

pub async fn start(daemon: Arc<Daemon>, id: &str) -> Result<(), CridError> {
    let (_guard, record) = lock_container(&daemon, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let mut record = ContainerRecord::clone(&record);
    match record.phase {
        ContainerPhase::Creating => {
            return Err(CridError::FailedPrecondition(format!(
                "container {} is still being created",
                record.id
            )));
        }
        ContainerPhase::Started => {
            return Err(CridError::FailedPrecondition(format!(
                "container {} was started already",
                record.id
            )));
        }
        ContainerPhase::Created => {}
    }
    let start = MonitorRequest::StartContainer {
        id: record.id.clone(),
    };
    let started = match monitor(&daemon, &record).request(&start).await {
        Err(runtime::MonitorError::Refused {
            kind: proto::monitor::ErrorKind::StartFailed,
            message,
            ..
        }) => {
            // The init has exited: keep why, for ContainerStatus.
            record.start_error = Some(message.clone());
            save(&daemon, &record).await?;
            return Err(CridError::FailedPrecondition(format!(
                "starting container {}: {message}",
                record.id
            )));
        }
        other => other?,
    };
    match started {
        MonitorResponse::Started { started_at } => {
            // Status right after this answer says running, whenever the
            // monitor's event of it arrives.
            daemon
                .live
                .update(&record.pod_id, |pod| pod.started(&record.id, started_at));
            pod_sandbox::fault::point("container.started");
            record.phase = ContainerPhase::Started;
            record.started_at = started_at;
            save(&daemon, &record).await?;
            tracing::info!(container_id = %record.id, pid = record.pid, "container started");
            Ok(())
        }
        other => Err(unexpected("StartContainer", &other)),
    }
}

pub async fn stop(daemon: Arc<Daemon>, id: &str, timeout_seconds: i64) -> Result<(), CridError> {
    // Stopping what is gone succeeds, as kubelet retries.
    let Some((pod_lock, record)) = lock_container(&daemon, id).await? else {
        return Ok(());
    };
    if record.phase == ContainerPhase::Creating {
        return Ok(());
    }
    // A container that never started waits for its start with every signal
    // blocked: only SIGKILL ends it, so there is no grace to give.
    let grace = match record.phase {
        ContainerPhase::Started => Duration::from_secs(u64::try_from(timeout_seconds).unwrap_or(0)),
        _ => Duration::ZERO,
    };
    stop_record(&daemon, &record, grace, Some(pod_lock)).await
}

/// The image's stop signal (or SIGTERM), then SIGKILL after `grace`.
/// `pod_lock`, the pod's lock if the caller passes it, is released before
/// the grace period: kubelet stops a pod's containers in parallel, and
/// waiting under the lock would make the pod's end take the sum of their
/// grace periods (and hold every other operation of the pod meanwhile).
async fn stop_record(
    daemon: &Arc<Daemon>,
    record: &ContainerRecord,
    grace: Duration,
    pod_lock: Option<OwnedMutexGuard<()>>,
) -> Result<(), CridError> {
    let client = monitor(daemon, record);
    let id = record.id.clone();
    let wait = |timeout: Duration| MonitorRequest::Wait {
        id: id.clone(),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    // Each exit this learns is applied at once: Status right after
    // StopContainer says exited, whenever the monitor's event arrives.
    let exited = |exit: ContainerExit| {
        daemon
            .live
            .update(&record.pod_id, |pod| pod.exited(&record.id, exit));
    };
    match client.request(&wait(Duration::ZERO)).await {
        Ok(MonitorResponse::StillRunning) => {}
        Ok(MonitorResponse::Exited(exit)) => {
            exited(exit);
            return Ok(());
        }
        // Unknown to the monitor, or the monitor is gone: nothing runs.
        _ => return Ok(()),
    }
    if !grace.is_zero() {
        let signal = container_config::signal_number(stop_signal(record))
            .unwrap_or(nix::sys::signal::Signal::SIGTERM as i32);
        let request = MonitorRequest::Signal {
            id: id.clone(),
            signal,
        };
        client.request(&request).await?;
        drop(pod_lock);
        let margin = runtime::client::REQUEST_TIMEOUT;
        if let MonitorResponse::Exited(exit) =
            client.request_within(&wait(grace), grace + margin).await?
        {
            exited(exit);
            return Ok(());
        }
        tracing::info!(container_id = %id, ?grace, "container outlived its grace period; killing it");
    }
    let kill = MonitorRequest::Signal {
        id: id.clone(),
        signal: nix::sys::signal::Signal::SIGKILL as i32,
    };
    client.request(&kill).await?;
    match client
        .request_within(
            &wait(KILL_WAIT),
            KILL_WAIT + runtime::client::REQUEST_TIMEOUT,
        )
        .await?
    {
        MonitorResponse::Exited(exit) => {
            exited(exit);
            Ok(())
        }
        other => Err(CridError::Internal(format!(
            "container {id} survived SIGKILL: {other:?}"
        ))),
    }
}

/// The signal StopContainer sends first. Records written before crid
/// settled it at create kept only the image's `StopSignal`: what they got.
fn stop_signal(record: &ContainerRecord) -> cri::Signal {
    record
        .settled_stop_signal
        .unwrap_or_else(|| container_config::image_stop_signal(record.stop_signal.as_deref()))
}

pub async fn remove(daemon: Arc<Daemon>, id: &str) -> Result<(), CridError> {
    let Some((_guard, record)) = lock_container(&daemon, id).await? else {
        return Ok(());
    };
    remove_locked(&daemon, &record).await?;
    tracing::info!(container_id = %record.id, "container removed");
    Ok(())
}

/// Tears the container down and forgets it; the caller holds its pod's
/// lock.
async fn remove_locked(daemon: &Arc<Daemon>, record: &ContainerRecord) -> Result<(), CridError> {
    teardown(daemon, record).await?;
    forget(daemon, record).await
}

/// What a container is doing now.
#[derive(Debug, Clone)]
struct Observed {
    state: cri::ContainerState,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
    reason: String,
    message: String,
}

fn observed(
    record: &ContainerRecord,
    live: Option<&ContainerState>,
    exit_file: Option<ContainerExit>,
) -> Observed {
    let started_at = live
        .map(|s| s.started_at)
        .filter(|&t| t > 0)
        .unwrap_or(record.started_at);
    let exit = live.and_then(|s| s.exit).or(exit_file);
    let mut observed = Observed {
        state: cri::ContainerState::ContainerCreated,
        started_at,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
    };
    match (exit, live) {
        (Some(exit), _) => {
            observed.state = cri::ContainerState::ContainerExited;
            observed.finished_at = exit.finished_at;
            observed.exit_code = exit.status.code();
            observed.reason = if let Some(message) = &record.start_error {
                // containerd's code for a command that never ran.
                observed.exit_code = START_ERROR_EXIT_CODE;
                observed.message = message.clone();
                "StartError"
            } else if exit.oom_killed {
                "OOMKilled"
            } else if observed.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .to_string();
        }
        (None, Some(_)) if started_at > 0 => observed.state = cri::ContainerState::ContainerRunning,
        (None, Some(_)) => {}
        (None, None) if record.phase == ContainerPhase::Creating => {
            observed.state = cri::ContainerState::ContainerUnknown;
        }
        // Neither the monitor nor an exit record knows it: it ended unseen.
        (None, None) => {
            observed.state = cri::ContainerState::ContainerExited;
            observed.exit_code = UNKNOWN_EXIT_CODE;
            observed.reason = "Unknown".to_string();
            observed.message =
                "the container's end was not observed (its pod's monitor is gone)".to_string();
        }
    }
    observed
}

async fn observe_one(daemon: &Arc<Daemon>, record: &ContainerRecord) -> Observed {
    let live = daemon.live.containers(&record.pod_id).await;
    observe(daemon, record, &live).await
}

/// The container as `live` (its pod's containers, as the monitor last
/// reported them) says. Only a container no monitor knows has its exit
/// record read: the monitor's word carries the exit otherwise.
async fn observe(
    daemon: &Arc<Daemon>,
    record: &ContainerRecord,
    live: &HashMap<String, ContainerState>,
) -> Observed {
    let state = live.get(&record.id);
    let exit_file = if state.is_some() {
        None
    } else {
        let dirs = dirs(daemon, &record.id);
        blocking(move || Ok(dirs.read_exit())).await.ok().flatten()
    };
    observed(record, state, exit_file)
}

pub async fn status(
    daemon: Arc<Daemon>,
    request: cri::ContainerStatusRequest,
) -> Result<cri::ContainerStatusResponse, CridError> {
    let record = find_existing(&daemon, &request.container_id)?;
    let observed = observe_one(&daemon, &record).await;
    let mut info = HashMap::new();
    if request.verbose {
        let dirs = dirs(&daemon, &record.id);
        let (spec, lsm) = {
            let dirs = dirs.clone();
            blocking(move || Ok((dirs.read_spec(), crate::status::host_lsm()))).await?
        };
        let spec = spec.and_then(|spec| serde_json::to_value(spec).ok());
        let security = spec
            .as_ref()
            .map(|spec| security_info(spec, record.spec.privileged, lsm));
        let details = serde_json::json!({
            "pid": record.pid,
            "sandboxID": record.pod_id,
            "bundle": dirs.bundle,
            "cgroup": record.cgroup,
            "runtimeSpec": spec,
            "security": security,
            "user": record.user.as_ref().map(|u| serde_json::json!({
                "uid": u.uid, "gid": u.gid, "additionalGids": u.additional_gids, "username": u.username,
            })),
        });
        info.insert("info".to_string(), details.to_string());
    }
    Ok(cri::ContainerStatusResponse {
        status: Some(container_status(&record, &observed)),
        info,
    })
}

/// What the container runs under, read from its runtime spec (the one
/// source of truth for what the init applied) for `crictl inspect`.
fn security_info(spec: &serde_json::Value, privileged: bool, lsm: &str) -> serde_json::Value {
    let process = &spec["process"];
    let linux = &spec["linux"];
    let list = |value: &serde_json::Value| value.as_array().cloned().unwrap_or_default();
    let seccomp = match linux.get("seccomp") {
        None | Some(serde_json::Value::Null) => serde_json::json!("unconfined"),
        Some(profile) => serde_json::json!({
            "defaultAction": profile["defaultAction"],
            "architectures": profile["architectures"],
            "syscallRules": list(&profile["syscalls"]).len(),
        }),
    };
    serde_json::json!({
        "privileged": privileged,
        "capabilities": {
            "effective": list(&process["capabilities"]["effective"]),
            "bounding": list(&process["capabilities"]["bounding"]),
        },
        "noNewPrivileges": process["noNewPrivileges"].as_bool().unwrap_or(false),
        "maskedPaths": list(&linux["maskedPaths"]),
        "readonlyPaths": list(&linux["readonlyPaths"]),
        "readonlyRootfs": spec["root"]["readonly"].as_bool().unwrap_or(false),
        "seccomp": seccomp,
        "rlimits": list(&process["rlimits"]),
        "deviceRules": list(&linux["resources"]["devices"]),
        "lsm": lsm,
    })
}

fn container_status(record: &ContainerRecord, observed: &Observed) -> cri::ContainerStatus {
    let user = record.user.as_ref().map(|u| cri::ContainerUser {
        linux: Some(cri::LinuxContainerUser {
            uid: i64::from(u.uid),
            gid: i64::from(u.gid),
            supplemental_groups: u.additional_gids.iter().map(|&g| i64::from(g)).collect(),
        }),
    });
    cri::ContainerStatus {
        id: record.id.clone(),
        metadata: record.config.metadata.clone(),
        state: observed.state.into(),
        created_at: record.created_at,
        started_at: observed.started_at,
        finished_at: observed.finished_at,
        exit_code: observed.exit_code,
        image: Some(cri::ImageSpec {
            image: record.image_ref.clone(),
            ..Default::default()
        }),
        image_ref: record
            .image_digest
            .clone()
            .unwrap_or_else(|| record.image_id.clone()),
        image_id: record.image_id.clone(),
        reason: observed.reason.clone(),
        message: observed.message.clone(),
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        mounts: record.config.mounts.clone(),
        log_path: record
            .log_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        resources: Some(cri::ContainerResources {
            linux: Some(container_config::to_cri_resources(&record.spec.resources)),
            windows: None,
        }),
        user,
        stop_signal: stop_signal(record).into(),
    }
}

pub async fn list(
    daemon: Arc<Daemon>,
    request: cri::ListContainersRequest,
) -> Result<cri::ListContainersResponse, CridError> {
    let filter = request.filter.unwrap_or_default();
    let records = daemon.container_records.filtered(|r| {
        r.phase != ContainerPhase::Creating
            && r.id.starts_with(&filter.id)
            && r.pod_id.starts_with(&filter.pod_sandbox_id)
            && filter
                .label_selector
                .iter()
                .all(|(k, v)| r.config.labels.get(k) == Some(v))
    });
    // One look per pod, not per container.
    let mut live: HashMap<String, HashMap<String, ContainerState>> = HashMap::new();
    let mut containers = Vec::new();
    for record in records {
        let states = match live.entry(record.pod_id.clone()) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(vacant) => vacant.insert(daemon.live.containers(&record.pod_id).await),
        };
        let observed = observe(&daemon, &record, states).await;
        if filter
            .state
            .as_ref()
            .is_some_and(|wanted| wanted.state != i32::from(observed.state))
        {
            continue;
        }
        containers.push(list_entry(&record, observed.state.into()));
    }
    Ok(cri::ListContainersResponse { containers })
}

/// The container as ListContainers answers it; also what it is charged in
/// the node's List budget.
fn list_entry(record: &ContainerRecord, state: i32) -> cri::Container {
    cri::Container {
        id: record.id.clone(),
        pod_sandbox_id: record.pod_id.clone(),
        metadata: record.config.metadata.clone(),
        image: Some(cri::ImageSpec {
            image: record.image_ref.clone(),
            ..Default::default()
        }),
        image_ref: record.image_id.clone(),
        state,
        created_at: record.created_at,
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        image_id: record.image_id.clone(),
    }
}

pub async fn update_resources(
    daemon: Arc<Daemon>,
    request: cri::UpdateContainerResourcesRequest,
) -> Result<(), CridError> {
    let (_guard, record) = lock_container(&daemon, &request.container_id)
        .await?
        .ok_or_else(|| not_found(&request.container_id))?;
    let mut record = ContainerRecord::clone(&record);
    let Some(linux) = request.linux.as_ref() else {
        return Ok(());
    };
    let resources = container_config::resources(linux)?;
    daemon
        .pods
        .cgroups()
        .update(&record.cgroup, &resources)
        .await?;
    record.spec.resources = resources;
    save(&daemon, &record).await?;
    tracing::info!(container_id = %record.id, "container resources updated");
    Ok(())
}

pub async fn reopen_log(daemon: Arc<Daemon>, id: &str) -> Result<(), CridError> {
    let (_guard, record) = lock_container(&daemon, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let request = MonitorRequest::ReopenLog {
        id: record.id.clone(),
    };
    match monitor(&daemon, &record).request(&request).await? {
        MonitorResponse::Done => Ok(()),
        other => Err(unexpected("ReopenLog", &other)),
    }
}

pub async fn exec_sync(
    daemon: Arc<Daemon>,
    request: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, CridError> {
    let record = find_existing(&daemon, &request.container_id)?;
    if request.cmd.is_empty() {
        return Err(CridError::invalid("cmd", "[]", "a command is required"));
    }
    let timeout = Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
    let exec = MonitorRequest::Exec {
        id: record.id.clone(),
        args: request.cmd.clone(),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    // No timeout asked: the exec may run as long as it likes.
    let bound = if timeout.is_zero() {
        Duration::from_secs(u64::from(u32::MAX))
    } else {
        timeout + runtime::client::REQUEST_TIMEOUT
    };
    match monitor(&daemon, &record)
        .request_within(&exec, bound)
        .await?
    {
        MonitorResponse::ExecResult {
            stdout,
            stderr,
            exit: Some(exit),
        } => {
            let (stdout, stderr) = crate::limits::fit_exec_output(stdout, stderr);
            Ok(cri::ExecSyncResponse {
                stdout,
                stderr,
                exit_code: exit.code(),
            })
        }
        MonitorResponse::ExecResult { exit: None, .. } => {
            Err(CridError::DeadlineExceeded(format!(
                "command {:?} timed out after {}s and was killed",
                request.cmd, request.timeout
            )))
        }
        other => Err(unexpected("Exec", &other)),
    }
}

/// StopPodSandbox: every container of the pod is killed (its exit recorded
/// by the monitor) and its cgroup removed, so the pod cgroup can go. The
/// caller holds the pod's lock.
pub async fn stop_all_in_pod(daemon: &Arc<Daemon>, pod_id: &str) -> Result<(), CridError> {
    for record in daemon.container_records.filtered(|r| r.pod_id == pod_id) {
        if let Err(error) = stop_record(daemon, &record, Duration::ZERO, None).await {
            tracing::warn!(container_id = %record.id, %error, "cannot stop the container with its pod");
        }
        daemon
            .pods
            .cgroups()
            .kill_and_remove(&record.cgroup)
            .await?;
    }
    Ok(())
}

/// RemovePodSandbox: every container of the pod is removed. The caller
/// holds the pod's lock.
pub async fn remove_all_in_pod(daemon: &Arc<Daemon>, pod_id: &str) -> Result<(), CridError> {
    for record in daemon.container_records.filtered(|r| r.pod_id == pod_id) {
        remove_locked(daemon, &record).await?;
        tracing::info!(container_id = %record.id, pod_id, "container removed with its pod");
    }
    Ok(())
}

/// At start: containers whose create a crash interrupted, and containers
/// whose pod record is gone, are rolled back.
pub async fn recover(daemon: &Arc<Daemon>) {
    for record in daemon.container_records.all() {
        let orphan = daemon.pod_records.get(&record.pod_id).is_none();
        if record.phase != ContainerPhase::Creating && !orphan {
            continue;
        }
        tracing::warn!(container_id = %record.id, orphan, "rolling back a container whose create was interrupted");
        match teardown(daemon, &record).await {
            Ok(()) => {
                if let Err(error) = forget(daemon, &*record).await {
                    tracing::error!(container_id = %record.id, %error, "cannot forget a rolled-back container");
                }
            }
            Err(error) => {
                tracing::error!(container_id = %record.id, %error, "rollback failed; will retry at next start")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_records_stop_with_the_images_signal() {
        // A record as crid wrote it before stop signals were settled.
        let stored = |image: Option<&str>, settled: Option<cri::Signal>| {
            let record = ContainerRecord {
                id: "c".into(),
                pod_id: "p".into(),
                reserved_name: "n".into(),
                config: cri::ContainerConfig::default(),
                spec: ContainerSpec::default(),
                image_ref: String::new(),
                image_id: String::new(),
                image_digest: None,
                layers: Vec::new(),
                stop_signal: image.map(str::to_string),
                settled_stop_signal: settled,
                start_error: None,
                phase: ContainerPhase::Created,
                created_at: 0,
                started_at: 0,
                log_path: None,
                cgroup: String::new(),
                user: None,
                pid: 0,
            };
            let mut json = serde_json::to_value(&record).expect("a record serializes");
            if settled.is_none() {
                json.as_object_mut()
                    .expect("a record is an object")
                    .remove("settled_stop_signal");
            }
            let record: ContainerRecord =
                serde_json::from_value(json).expect("an old record loads");
            stop_signal(&record)
        };
        assert_eq!(stored(None, None), cri::Signal::Sigterm);
        assert_eq!(stored(Some("QUIT"), None), cri::Signal::Sigquit);
        assert_eq!(
            stored(Some("QUIT"), Some(cri::Signal::Sigusr1)),
            cri::Signal::Sigusr1
        );
    }

    #[test]
    fn security_info_is_read_from_the_spec() {
        let spec = serde_json::json!({
            "process": {
                "capabilities": {"effective": ["CAP_CHOWN"], "bounding": ["CAP_CHOWN", "CAP_KILL"]},
                "noNewPrivileges": true,
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}],
            },
            "root": {"path": "rootfs", "readonly": true},
            "linux": {
                "resources": {"devices": [{"allow": false, "type": "a", "access": "rwm"}]},
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"],
                "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]},
            },
        });
        let info = security_info(&spec, false, "none: test");
        assert_eq!(
            info,
            serde_json::json!({
                "privileged": false,
                "capabilities": {"effective": ["CAP_CHOWN"], "bounding": ["CAP_CHOWN", "CAP_KILL"]},
                "noNewPrivileges": true,
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"],
                "readonlyRootfs": true,
                "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "syscallRules": 1},
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}],
                "deviceRules": [{"allow": false, "type": "a", "access": "rwm"}],
                "lsm": "none: test",
            })
        );
        // A privileged container's spec: no lists, no profile.
        let bare = serde_json::json!({"process": {}, "root": {"path": "rootfs"}, "linux": {}});
        let info = security_info(&bare, true, "none: test");
        assert_eq!(info["seccomp"], "unconfined");
        assert_eq!(info["maskedPaths"], serde_json::json!([]));
        assert_eq!(info["noNewPrivileges"], false);
        assert_eq!(info["privileged"], true);
    }
}
