//! The container controller: every container's lifecycle (create, start,
//! stop, remove, update, exec, recovery), in the order, with the rollback
//! and crash points each needs. It keeps the container records (name
//! reserved per pod, phase persisted around every change) and drives
//! `runtime` (the container's files and cgroups) and the pod's monitor (its
//! processes). The monitor is the truth about what runs; the exit record it
//! writes into the bundle is the truth once the monitor is gone. Every
//! operation that changes a container holds its pod's lock.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pod_sandbox::{PodManager, fault};
use proto::cri;
use proto::monitor::{
    ContainerCreate, ContainerExit, ContainerState, ExitStatus, LogFile, MonitorRequest,
    MonitorResponse,
};
use runtime::MonitorClient;
use runtime::container::ContainerDirs;
use runtime::spec::{ImageConfigView, ResolvedUser, Resources};
use tokio::sync::OwnedMutexGuard;

use crate::container_config;
use crate::error::CridError;
use crate::images::ImageController;
use crate::limits::ListBudget;
use crate::live::{Change, LiveStates, Source, monitor_gone};
use crate::locks::KeyedLocks;
use crate::objects::{
    ContainerPhase, ContainerRecord, ImageRecord, ImageVolume, PodPhase, PodRecord, new_id,
};
use crate::records::{RecordStore, forget, insert_reserving, save};
use crate::rpc::{blocking, now_nanos};

/// Exit code and reason when a container's end was never observed (its
/// pod's monitor is gone: crash, reboot), as containerd reports it.
const UNKNOWN_EXIT_CODE: i32 = 255;
/// Exit code (reason `StartError`) of a container whose command could not
/// be run, as containerd reports it.
const START_ERROR_EXIT_CODE: i32 = 128;
/// After SIGKILL, how long to wait for the exit before giving up.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// ContainerStatus's message for a container its pod's monitor's death
/// ended (reason `Error`).
const MONITOR_DIED: &str =
    "the pod's monitor (crid-monitor) died; crid killed what was left of the container";

pub struct ContainerController {
    records: Arc<RecordStore<ContainerRecord>>,
    /// Read only: a container is created into a ready pod.
    pods: Arc<RecordStore<PodRecord>>,
    /// A container's image, and its layers for the rootfs.
    images: Arc<ImageController>,
    /// Where each pod's monitor is, and the host's cgroups.
    sandboxes: Arc<PodManager>,
    live: Arc<LiveStates>,
    /// One per pod, shared with the pod controller.
    pod_locks: Arc<KeyedLocks>,
    lists: Arc<ListBudget>,
    /// crid's state and root dirs (each container's bundle and layer).
    state: PathBuf,
    root: PathBuf,
}

/// What the container controller is built from.
pub struct ContainerDeps {
    pub records: Arc<RecordStore<ContainerRecord>>,
    pub pods: Arc<RecordStore<PodRecord>>,
    pub images: Arc<ImageController>,
    pub sandboxes: Arc<PodManager>,
    pub live: Arc<LiveStates>,
    pub pod_locks: Arc<KeyedLocks>,
    pub lists: Arc<ListBudget>,
    pub state: PathBuf,
    pub root: PathBuf,
}

impl ContainerController {
    pub fn new(deps: ContainerDeps) -> ContainerController {
        let ContainerDeps {
            records,
            pods,
            images,
            sandboxes,
            live,
            pod_locks,
            lists,
            state,
            root,
        } = deps;
        ContainerController {
            records,
            pods,
            images,
            sandboxes,
            live,
            pod_locks,
            lists,
            state,
            root,
        }
    }

    /// A full id or a unique prefix of one.
    fn find(&self, id: &str) -> Result<Option<Arc<ContainerRecord>>, CridError> {
        self.records.find("container_id", id)
    }

    pub fn find_existing(&self, id: &str) -> Result<Arc<ContainerRecord>, CridError> {
        self.find(id)?.ok_or_else(|| not_found(id))
    }

    /// The container `id` names, with its pod's lock held; None when there
    /// is none, also when it was removed while this waited for the lock.
    async fn lock_container(
        &self,
        id: &str,
    ) -> Result<Option<(OwnedMutexGuard<()>, Arc<ContainerRecord>)>, CridError> {
        let Some(found) = self.find(id)? else {
            return Ok(None);
        };
        let guard = self.pod_locks.lock(&found.pod_id).await;
        Ok(self.records.get(&found.id).map(|record| (guard, record)))
    }

    /// The pod a container is created into, which must be ready (its
    /// monitor there to run it); `requested` is the id the request named.
    fn ready_pod(
        &self,
        pod: Option<Arc<PodRecord>>,
        requested: &str,
    ) -> Result<Arc<PodRecord>, CridError> {
        let pod =
            pod.ok_or_else(|| CridError::NotFound(format!("pod sandbox {requested:?} not found")))?;
        if pod.phase != PodPhase::Ready {
            return Err(CridError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        if self.live.source(&pod.id) == Some(Source::Gone) {
            return Err(CridError::FailedPrecondition(format!(
                "pod sandbox {} is not ready: its monitor (crid-monitor) died",
                pod.id
            )));
        }
        Ok(pod)
    }

    fn dirs(&self, id: &str) -> ContainerDirs {
        ContainerDirs::new(&self.state, &self.root, id)
    }

    /// The client of the container's pod's monitor: the pod's own while crid
    /// watches the pod, else (recovery, before the watch) a new one.
    pub(crate) fn monitor(&self, record: &ContainerRecord) -> MonitorClient {
        self.pod_monitor(&record.pod_id)
    }

    fn pod_monitor(&self, pod_id: &str) -> MonitorClient {
        self.live
            .client(pod_id)
            .unwrap_or_else(|| MonitorClient::new(&self.sandboxes.pod_dir(pod_id)))
    }

    /// An env value that is not UTF-8 reaches the container only through
    /// the bundle's env file, which a monitor started by an older crid
    /// does not read (it would pass config.json's lossy strings).
    async fn check_env_file_read(
        &self,
        pod_id: &str,
        config: &cri::ContainerConfig,
    ) -> Result<(), CridError> {
        let version = self.pod_monitor(pod_id).protocol_version().await?;
        if version >= proto::monitor::ENV_FILE_SINCE {
            return Ok(());
        }
        let index = config
            .envs
            .iter()
            .position(|kv| std::str::from_utf8(&kv.value).is_err())
            .unwrap_or_default();
        Err(CridError::FailedPrecondition(format!(
            "config.envs[{index}].value: is not UTF-8, and the pod's monitor (protocol \
             version {version}, started by an older crid) passes only UTF-8 values; \
             recreate the pod"
        )))
    }

    pub async fn create(
        &self,
        pod_sandbox_id: &str,
        config: cri::ContainerConfig,
    ) -> Result<String, CridError> {
        let pod = self.ready_pod(
            self.pods.find("pod_sandbox_id", pod_sandbox_id)?,
            pod_sandbox_id,
        )?;
        let image_name = config
            .image
            .as_ref()
            .map(|image| image.image.clone())
            .unwrap_or_default();
        let image = self.images.find(&image_name)?.ok_or_else(|| {
            CridError::NotFound(format!(
                "image {image_name:?} not found: pull it before creating a container"
            ))
        })?;
        let target_pid_ns = self.target_pid_namespace(&pod, &config).await?;
        let pod_dir = self.sandboxes.pod_dir(&pod.id);
        let mut spec = container_config::translate(&config, &pod, &pod_dir, target_pid_ns)?;
        if !spec.env_is_utf8() {
            self.check_env_file_read(&pod.id, &config).await?;
        }
        let image_volumes = self.image_volumes(&config)?;
        let settled_stop_signal =
            container_config::stop_signal(&config, image.image.config.stop_signal.as_deref())?;
        let id = new_id().await?;
        let placement = match &pod.sandbox.cgroup {
            Some(placement) => placement.clone(),
            None => self
                .sandboxes
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
            monitor_died: None,
            image_volumes,
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
        let _guard = self.pod_locks.lock(&pod.id).await;
        self.ready_pod(self.pods.get(&pod.id), pod_sandbox_id)?;
        // Name reserved and record written before the host is touched: a crash
        // from here on is found and rolled back at the next start.
        insert_reserving(&self.records, &self.lists, &record).await?;
        let mut progress = pod_sandbox::Progress::new("container", &id);
        progress.step("container.recorded");
        match self
            .build(&record, &placement, &image, log, &mut progress)
            .await
        {
            Ok((pid, user)) => {
                progress.step("container.built");
                record.pid = pid;
                record.user = Some(user);
                record.phase = ContainerPhase::Created;
                save(&self.records, &record).await?;
                tracing::info!(container_id = %id, pod_id = %record.pod_id, name = %record.reserved_name, "container created");
                self.live.report(Change::Created {
                    pod_id: record.pod_id.clone(),
                    id: id.clone(),
                });
                Ok(id)
            }
            Err(error) => {
                tracing::warn!(container_id = %id, %error, "container create failed; rolling back");
                if let Err(rollback) = self.teardown(&record).await {
                    tracing::error!(container_id = %id, error = %rollback, "rollback incomplete");
                }
                forget(&self.records, &self.lists, &record).await?;
                Err(error)
            }
        }
    }

    /// The images the config mounts as volumes; each must have been pulled
    /// (kubelet pulls them before it creates the container).
    fn image_volumes(&self, config: &cri::ContainerConfig) -> Result<Vec<ImageVolume>, CridError> {
        let mut volumes = Vec::new();
        for (mount, m) in config.mounts.iter().enumerate() {
            if !container_config::is_image_volume(m) {
                continue;
            }
            let name = m
                .image
                .as_ref()
                .map(|image| image.image.as_str())
                .unwrap_or_default();
            let image = self.images.find(name)?.ok_or_else(|| {
                CridError::NotFound(format!(
                    "config.mounts[{mount}].image: image {name:?} not found: pull it before creating a container"
                ))
            })?;
            volumes.push(ImageVolume {
                mount,
                image_id: image.id.clone(),
                layers: image.image.chain_ids(),
            });
        }
        Ok(volumes)
    }

    /// The PID namespace of the target container (CRI `TARGET`), if asked for.
    async fn target_pid_namespace(
        &self,
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
        let target = self
            .find(&target_id)?
            .filter(|t| t.pod_id == pod.id)
            .ok_or_else(|| {
                CridError::invalid(field, &target_id, "no such container in this pod")
            })?;
        let state = self.observe_one(&target).await;
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
        &self,
        record: &ContainerRecord,
        placement: &pod_sandbox::Placement,
        image: &ImageRecord,
        log: Option<LogFile>,
        progress: &mut pod_sandbox::Progress,
    ) -> Result<(i32, ResolvedUser), CridError> {
        let dirs = self.dirs(&record.id);
        let lower = record
            .layers
            .iter()
            .map(|chain_id| self.images.layer_dir(chain_id))
            .collect::<Result<Vec<_>, _>>()?;
        let config = &image.image.config;
        let view = ImageConfigView {
            user: image.image.user.clone(),
            env: config.env.clone(),
            entrypoint: config.entrypoint.clone(),
            cmd: config.cmd.clone(),
            working_dir: config.working_dir.clone(),
        };
        let volumes = record
            .image_volumes
            .iter()
            .map(|volume| {
                let lower = volume
                    .layers
                    .iter()
                    .map(|chain_id| self.images.layer_dir(chain_id))
                    .collect::<Result<Vec<_>, _>>()?;
                let sub_path = record
                    .config
                    .mounts
                    .get(volume.mount)
                    .map(|m| PathBuf::from(&m.image_sub_path))
                    .unwrap_or_default();
                Ok((volume.mount, lower, sub_path))
            })
            .collect::<Result<Vec<_>, CridError>>()?;
        let cgroups = self.sandboxes.cgroups().clone();
        let (spec, cgroup) = (record.spec.clone(), record.cgroup.clone());
        let prepared = blocking(move || {
            let hierarchy = cgroups.hierarchy();
            dirs.mount_rootfs(&lower, spec.namespaces.user.as_ref())?;
            let mut spec = spec;
            let user = spec.namespaces.user.clone();
            // kubelet sets a volume's mappings (checked to be the pod's)
            // when the pod has a user namespace of its own.
            let idmap = |mount: usize| {
                user.as_ref()
                    .filter(|_| spec.mounts.get(mount).is_some_and(|m| m.idmapped))
            };
            let mut sources = Vec::new();
            for (mount, lower, sub_path) in &volumes {
                let source = dirs.mount_image_volume(*mount, lower, sub_path, idmap(*mount))?;
                sources.push((*mount, source));
            }
            for (mount, source) in sources {
                if let Some(spec_mount) = spec.mounts.get_mut(mount) {
                    spec_mount.host_path = source;
                }
            }
            runtime::container::prepare_host_paths(&mut spec)?;
            if let Some(user) = &user {
                for (index, mount) in spec.mounts.iter_mut().enumerate() {
                    let image_volume = volumes.iter().any(|(volume, ..)| *volume == index);
                    if mount.idmapped && !image_volume {
                        mount.host_path =
                            dirs.mount_idmapped_bind(index, &mount.host_path, user)?;
                    }
                }
            }
            let user = runtime::spec::resolve_user(&spec, &view.user, &dirs.rootfs)?;
            let mut oci = runtime::spec::build_spec(&spec, &view, &dirs.rootfs, &user)?;
            // build_spec is pure (unit-tested on any machine); what only this
            // host can say (its devices, the capabilities crid holds) comes after.
            runtime::host::fit_to_host(&mut oci, &spec)?;
            dirs.write_spec(&oci)?;
            let exact_env = runtime::spec::exact_env(&spec, &view, &user)?;
            if let Some(entries) = &exact_env {
                dirs.write_env(entries)?;
            }
            let device_rules = oci
                .linux()
                .as_ref()
                .and_then(|linux| linux.resources().as_ref())
                .and_then(|resources| resources.devices().clone())
                .unwrap_or_default();
            cgroups.prepare_container(&cgroup, &spec.resources, &device_rules)?;
            Ok((
                user,
                exact_env.is_some(),
                dirs.bundle,
                hierarchy.join_files(&cgroup),
                hierarchy.oom_events_file(&cgroup),
                hierarchy.view(&cgroup),
                device_rules,
            ))
        })
        .await?;
        let (user, env_file, bundle, cgroup_procs, oom_events, cgroup_view, device_rules) =
            prepared;
        progress.step("container.prepared");
        let create = ContainerCreate {
            id: record.id.clone(),
            bundle,
            env_file,
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
        let cgroups = self.sandboxes.cgroups();
        let place = async |pids: Vec<i32>| {
            let resources = &record.spec.resources;
            cgroups
                .place_container(placement, &record.cgroup, &pids, resources, &device_rules)
                .await
        };
        match self
            .monitor(record)
            .request_placing(&MonitorRequest::CreateContainer(create), place)
            .await??
        {
            MonitorResponse::Created { pid } => {
                progress.step("container.init_created");
                self.live
                    .update(&record.pod_id, |pod| pod.created(&record.id, pid));
                Ok((pid, user))
            }
            other => Err(unexpected("CreateContainer", &other)),
        }
    }

    /// Undoes everything of a container: its processes, cgroup, rootfs mount,
    /// bundle and writable layer. Idempotent; the record stays.
    async fn teardown(&self, record: &ContainerRecord) -> Result<(), CridError> {
        let remove = MonitorRequest::RemoveContainer {
            id: record.id.clone(),
        };
        if let Err(error) = self.monitor(record).request(&remove).await {
            // The pod's monitor is gone (pod stopped, crash): the cgroup kill ends it.
            tracing::debug!(container_id = %record.id, %error, "monitor did not take RemoveContainer");
        }
        self.live
            .update(&record.pod_id, |pod| pod.removed(&record.id));
        fault::point("container.teardown.monitor_done");
        self.sandboxes
            .cgroups()
            .kill_and_remove(&record.cgroup)
            .await?;
        fault::point("container.teardown.cgroup_removed");
        let dirs = self.dirs(&record.id);
        blocking(move || Ok(dirs.remove()?)).await
    }

    pub async fn start(&self, id: &str) -> Result<(), CridError> {
        let (_guard, record) = self
            .lock_container(id)
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
        let started = match self.monitor(&record).request(&start).await {
            Err(runtime::MonitorError::Refused {
                kind: proto::monitor::ErrorKind::StartFailed,
                message,
                ..
            }) => {
                // The init has exited: keep why, for ContainerStatus.
                record.start_error = Some(message.clone());
                save(&self.records, &record).await?;
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
                self.live
                    .update(&record.pod_id, |pod| pod.started(&record.id, started_at));
                fault::point("container.started");
                record.phase = ContainerPhase::Started;
                record.started_at = started_at;
                save(&self.records, &record).await?;
                tracing::info!(container_id = %record.id, pid = record.pid, "container started");
                self.live.report(Change::Started {
                    pod_id: record.pod_id.clone(),
                    id: record.id.clone(),
                });
                Ok(())
            }
            other => Err(unexpected("StartContainer", &other)),
        }
    }

    pub async fn stop(&self, id: &str, timeout_seconds: i64) -> Result<(), CridError> {
        // Stopping what is gone succeeds, as kubelet retries.
        let Some((pod_lock, record)) = self.lock_container(id).await? else {
            return Ok(());
        };
        if record.phase == ContainerPhase::Creating {
            return Ok(());
        }
        // A container that never started waits for its start with every signal
        // blocked: only SIGKILL ends it, so there is no grace to give.
        let grace = match record.phase {
            ContainerPhase::Started => {
                Duration::from_secs(u64::try_from(timeout_seconds).unwrap_or(0))
            }
            _ => Duration::ZERO,
        };
        self.stop_record(&record, grace, Some(pod_lock)).await
    }

    /// The image's stop signal (or SIGTERM), then SIGKILL after `grace`.
    /// `pod_lock`, the pod's lock if the caller passes it, is released before
    /// the grace period: kubelet stops a pod's containers in parallel, and
    /// waiting under the lock would make the pod's end take the sum of their
    /// grace periods (and hold every other operation of the pod meanwhile).
    async fn stop_record(
        &self,
        record: &ContainerRecord,
        grace: Duration,
        pod_lock: Option<OwnedMutexGuard<()>>,
    ) -> Result<(), CridError> {
        let client = self.monitor(record);
        let id = record.id.clone();
        let wait = |timeout: Duration| MonitorRequest::Wait {
            id: id.clone(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        // Each exit this learns is applied at once: Status right after
        // StopContainer says exited, whenever the monitor's event arrives.
        let exited = |exit: ContainerExit| {
            self.live
                .update(&record.pod_id, |pod| pod.exited(&record.id, exit));
        };
        match client.request(&wait(Duration::ZERO)).await {
            Ok(MonitorResponse::StillRunning) => {}
            Ok(MonitorResponse::Exited(exit)) => {
                exited(exit);
                return Ok(());
            }
            // The monitor is gone: its death ended the container, whatever
            // of it is left dies now.
            Err(error) if monitor_gone(&error) => {
                tracing::info!(container_id = %id, %error, "stopping a container whose monitor is gone");
                let live = self.live.containers(&record.pod_id).await;
                return self.end_without_monitor(record, &live).await;
            }
            // Unknown to the monitor, or it does not answer: nothing may
            // run on in the container's cgroup once Stop says it stopped.
            other => {
                tracing::debug!(container_id = %id, answer = ?other, "the monitor cannot stop the container; killing its cgroup");
                return self.kill_cgroup(&record.cgroup).await;
            }
        }
        if !grace.is_zero() {
            let signal = container_config::signal_number(stop_signal(record))
                .unwrap_or(nix::sys::signal::Signal::SIGTERM as i32);
            let request = MonitorRequest::Signal {
                id: id.clone(),
                signal,
            };
            client.request(&request).await?;
            fault::point("container.stop.signalled");
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
        fault::point("container.stop.killed");
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

    /// Follows the ids of pods whose monitor was found gone for good (see
    /// [`LiveStates::reporting_deaths`]) and ends what each left behind.
    pub async fn follow_monitor_deaths(
        self: Arc<Self>,
        mut deaths: tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        while let Some(pod_id) = deaths.recv().await {
            let controller = self.clone();
            tokio::spawn(async move { controller.monitor_died(&pod_id).await });
        }
    }

    /// The pod's monitor is gone for good while the pod should run: what is
    /// left of the pod's processes is killed through their cgroups, and
    /// each container that had not ended is recorded as ended by it. The
    /// pod is not ready from then on (its live state says its monitor is
    /// gone). A pod stopped or removed meanwhile is left alone: its monitor
    /// went with it.
    pub async fn monitor_died(&self, pod_id: &str) {
        let _guard = self.pod_locks.lock(pod_id).await;
        let Some(pod) = self.pods.get(pod_id) else {
            return;
        };
        if pod.phase != PodPhase::Ready || self.live.source(pod_id) != Some(Source::Gone) {
            return;
        }
        tracing::warn!(
            pod_id,
            "the pod's monitor died; killing what is left of the pod"
        );
        metrics::own::monitor_died();
        let live = self.live.containers(pod_id).await;
        for record in self.records.filtered(|r| r.pod_id == pod_id) {
            if let Err(error) = self.end_without_monitor(&record, &live).await {
                tracing::error!(container_id = %record.id, pod_id, %error, "cannot end a container whose monitor died");
            }
        }
        // pause (and the monitor, were anything of it left).
        if let Some(placement) = &pod.sandbox.cgroup
            && let Err(error) = self.kill_cgroup(&placement.sandbox).await
        {
            tracing::error!(pod_id, %error, "cannot kill what is left of the pod's sandbox");
        }
    }

    /// Kills what is left in the container's cgroup and, if the container
    /// had not ended (`live`: its pod's containers as last known), records
    /// that its monitor's death ended it. Ok only once nothing of it runs.
    async fn end_without_monitor(
        &self,
        record: &ContainerRecord,
        live: &HashMap<String, ContainerState>,
    ) -> Result<(), CridError> {
        self.kill_cgroup(&record.cgroup).await?;
        if record.phase == ContainerPhase::Creating || record.monitor_died.is_some() {
            return Ok(());
        }
        if live.get(&record.id).and_then(|state| state.exit).is_some() {
            return Ok(());
        }
        let dirs = self.dirs(&record.id);
        // No bundle: the node rebooted, nothing says how it ended (Unknown).
        let (ended, bundle) =
            blocking(move || Ok((dirs.read_exit().is_some(), dirs.bundle.exists()))).await?;
        if ended || !bundle {
            // Ended all the same, unseen by the monitor's events: its exit
            // record, or nothing, says how.
            self.report_ended(record);
            return Ok(());
        }
        let mut record = ContainerRecord::clone(record);
        record.monitor_died = Some(ContainerExit {
            status: ExitStatus::Signaled(nix::sys::signal::Signal::SIGKILL as i32),
            finished_at: now_nanos(),
            oom_killed: false,
        });
        save(&self.records, &record).await?;
        tracing::warn!(container_id = %record.id, pod_id = %record.pod_id, "container ended by its monitor's death");
        self.report_ended(&record);
        Ok(())
    }

    /// For the container events: the container's end is known now.
    fn report_ended(&self, record: &ContainerRecord) {
        self.live.report(Change::Ended {
            pod_id: record.pod_id.clone(),
            id: record.id.clone(),
        });
    }

    /// SIGKILLs everything in `cgroup` until it is empty; an error if
    /// anything survives.
    async fn kill_cgroup(&self, cgroup: &str) -> Result<(), CridError> {
        let (hierarchy, cgroup) = (
            self.sandboxes.cgroups().hierarchy().clone(),
            cgroup.to_string(),
        );
        blocking(move || Ok(hierarchy.kill(&cgroup)?)).await
    }

    pub async fn remove(&self, id: &str) -> Result<(), CridError> {
        let Some((_guard, record)) = self.lock_container(id).await? else {
            return Ok(());
        };
        self.remove_locked(&record).await?;
        tracing::info!(container_id = %record.id, "container removed");
        Ok(())
    }

    /// Tears the container down and forgets it; the caller holds its pod's
    /// lock.
    async fn remove_locked(&self, record: &ContainerRecord) -> Result<(), CridError> {
        self.teardown(record).await?;
        fault::point("container.remove.torn_down");
        forget(&self.records, &self.lists, record).await?;
        self.live.report(Change::Removed {
            pod_id: record.pod_id.clone(),
            id: record.id.clone(),
            pod: self.pods.get(&record.pod_id),
        });
        Ok(())
    }

    pub async fn observe_one(&self, record: &ContainerRecord) -> Observed {
        let live = self.live.containers(&record.pod_id).await;
        self.observe(record, &live).await
    }

    /// The container as `live` (its pod's containers, as the monitor last
    /// reported them) says. Only a container no monitor knows has its exit
    /// record read: the monitor's word carries the exit otherwise.
    async fn observe(
        &self,
        record: &ContainerRecord,
        live: &HashMap<String, ContainerState>,
    ) -> Observed {
        let state = live.get(&record.id);
        let exit_file = if state.is_some() {
            None
        } else {
            let dirs = self.dirs(&record.id);
            blocking(move || Ok(dirs.read_exit())).await.ok().flatten()
        };
        observed(record, state, exit_file)
    }

    /// The containers `keep` selects (none being created), each as it is
    /// now; one look per pod, not per container.
    pub async fn list(
        &self,
        keep: impl Fn(&ContainerRecord) -> bool,
    ) -> Vec<(Arc<ContainerRecord>, Observed)> {
        let records = self
            .records
            .filtered(|r| r.phase != ContainerPhase::Creating && keep(r));
        let mut live: HashMap<String, HashMap<String, ContainerState>> = HashMap::new();
        let mut containers = Vec::new();
        for record in records {
            let states = match live.entry(record.pod_id.clone()) {
                Entry::Occupied(known) => known.into_mut(),
                Entry::Vacant(vacant) => vacant.insert(self.live.containers(&record.pod_id).await),
            };
            let observed = self.observe(&record, states).await;
            containers.push((record, observed));
        }
        containers
    }

    /// The container's bundle and the runtime spec its init applied (None
    /// when it cannot be read), for `crictl inspect`.
    pub async fn runtime_spec(
        &self,
        record: &ContainerRecord,
    ) -> Result<(PathBuf, Option<serde_json::Value>), CridError> {
        let dirs = self.dirs(&record.id);
        let bundle = dirs.bundle.clone();
        let spec = blocking(move || Ok(dirs.read_spec())).await?;
        Ok((
            bundle,
            spec.and_then(|spec| serde_json::to_value(spec).ok()),
        ))
    }

    pub async fn update_resources(
        &self,
        id: &str,
        resources: Option<Resources>,
    ) -> Result<(), CridError> {
        let (_guard, record) = self
            .lock_container(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let mut record = ContainerRecord::clone(&record);
        let Some(resources) = resources else {
            return Ok(());
        };
        let cgroups = self.sandboxes.cgroups();
        let undo = cgroups.update(&record.cgroup, &resources).await?;
        fault::point("container.update.applied");
        record.spec.resources = resources;
        // All or nothing: limits the record does not hold would be lost
        // (and misreported by ContainerStatus).
        if let Err(error) = save(&self.records, &record).await {
            cgroups.undo(undo).await;
            return Err(error);
        }
        tracing::info!(container_id = %record.id, "container resources updated");
        Ok(())
    }

    pub async fn reopen_log(&self, id: &str) -> Result<(), CridError> {
        let (_guard, record) = self
            .lock_container(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let request = MonitorRequest::ReopenLog {
            id: record.id.clone(),
        };
        match self.monitor(&record).request(&request).await? {
            MonitorResponse::Done => Ok(()),
            other => Err(unexpected("ReopenLog", &other)),
        }
    }

    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_seconds: i64,
    ) -> Result<cri::ExecSyncResponse, CridError> {
        let record = self.find_existing(id)?;
        let timeout = Duration::from_secs(u64::try_from(timeout_seconds).unwrap_or(0));
        let exec = MonitorRequest::Exec {
            id: record.id.clone(),
            args: cmd.clone(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        // No timeout asked: the exec may run as long as it likes.
        let bound = if timeout.is_zero() {
            Duration::from_secs(u64::from(u32::MAX))
        } else {
            timeout + runtime::client::REQUEST_TIMEOUT
        };
        let answer = match self.monitor(&record).request_within(&exec, bound).await {
            Err(error) if monitor_gone(&error) => {
                return Err(CridError::FailedPrecondition(format!(
                    "container {} is not running: its pod's monitor (crid-monitor) died",
                    record.id
                )));
            }
            answer => answer?,
        };
        match answer {
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
                    cmd, timeout_seconds
                )))
            }
            other => Err(unexpected("Exec", &other)),
        }
    }

    /// StopPodSandbox: every container of the pod is killed (its exit recorded
    /// by the monitor) and its cgroup removed, so the pod cgroup can go. The
    /// caller holds the pod's lock.
    pub async fn stop_all_in_pod(&self, pod_id: &str) -> Result<(), CridError> {
        for record in self.records.filtered(|r| r.pod_id == pod_id) {
            if let Err(error) = self.stop_record(&record, Duration::ZERO, None).await {
                tracing::warn!(container_id = %record.id, %error, "cannot stop the container with its pod");
            }
            self.sandboxes
                .cgroups()
                .kill_and_remove(&record.cgroup)
                .await?;
        }
        Ok(())
    }

    /// RemovePodSandbox: every container of the pod is removed. The caller
    /// holds the pod's lock.
    pub async fn remove_all_in_pod(&self, pod_id: &str) -> Result<(), CridError> {
        for record in self.records.filtered(|r| r.pod_id == pod_id) {
            self.remove_locked(&record).await?;
            tracing::info!(container_id = %record.id, pod_id, "container removed with its pod");
        }
        Ok(())
    }

    /// At start: containers whose create a crash interrupted, and containers
    /// whose pod record is gone, are rolled back.
    pub async fn recover(&self) {
        for record in self.records.all() {
            let orphan = self.pods.get(&record.pod_id).is_none();
            if record.phase != ContainerPhase::Creating && !orphan {
                continue;
            }
            tracing::warn!(container_id = %record.id, orphan, "rolling back a container whose create was interrupted");
            match self.teardown(&record).await {
                Ok(()) => {
                    if let Err(error) = forget(&self.records, &self.lists, &*record).await {
                        tracing::error!(container_id = %record.id, %error, "cannot forget a rolled-back container");
                    }
                }
                Err(error) => {
                    tracing::error!(container_id = %record.id, %error, "rollback failed; will retry at next start")
                }
            }
        }
    }
}

fn not_found(id: &str) -> CridError {
    CridError::NotFound(format!("container {id:?} not found"))
}

fn unexpected(request: &str, response: &MonitorResponse) -> CridError {
    CridError::Internal(format!("crid-monitor answered {request} with {response:?}"))
}

/// The signal StopContainer sends first. Records written before crid
/// settled it at create kept only the image's `StopSignal`: what they got.
pub fn stop_signal(record: &ContainerRecord) -> cri::Signal {
    record
        .settled_stop_signal
        .unwrap_or_else(|| container_config::image_stop_signal(record.stop_signal.as_deref()))
}

/// The reason of a container the OOM killer ended, as kubelet knows it.
pub const OOM_KILLED: &str = "OOMKilled";

/// What a container is doing now.
#[derive(Debug, Clone)]
pub struct Observed {
    pub state: cri::ContainerState,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
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
    // An end the monitor saw, else the one its death made (crid's kill).
    let seen = live.and_then(|s| s.exit).or(exit_file);
    let ended_by_monitor_death = seen.is_none() && record.monitor_died.is_some();
    let exit = seen.or(record.monitor_died);
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
            } else if ended_by_monitor_death {
                observed.message = MONITOR_DIED.to_string();
                "Error"
            } else if exit.oom_killed {
                OOM_KILLED
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

#[cfg(test)]
mod tests {
    use runtime::spec::ContainerSpec;
    use tonic::{Code, Status};

    use super::*;
    use crate::testing::{self, TestDaemon};

    /// A layer the image store cannot have: a container of it fails at its
    /// rootfs, before any mount, after its record was written.
    const UNPACKED_NOWHERE: &str = "not-a-chain-id";

    fn app(image: &str) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// No record, no charge, no name: nothing a restart would find.
    fn assert_nothing_kept(test: &TestDaemon) {
        assert!(test.daemon.stores.containers.all().is_empty());
        assert!(test.stored_containers().is_empty());
        assert_eq!(test.daemon.stores.lists.usage().containers, 0);
    }

    #[tokio::test]
    async fn a_create_into_a_missing_pod_is_not_found_and_keeps_nothing() {
        let test = TestDaemon::new().await;
        test.daemon
            .stores
            .images
            .put(testing::image("busybox", UNPACKED_NOWHERE))
            .expect("image recorded");
        let error = test
            .daemon
            .containers
            .create("p1", app("busybox"))
            .await
            .expect_err("there is no pod p1");
        let status = Status::from(error);
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().contains("p1"), "{status:?}");
        assert_nothing_kept(&test);
    }

    #[tokio::test]
    async fn a_create_into_a_pod_being_removed_is_refused_and_keeps_nothing() {
        let test = TestDaemon::new().await;
        let stores = &test.daemon.stores;
        test.add_pod(testing::pod("p1", PodPhase::Ready));
        stores
            .images
            .put(testing::image("busybox", UNPACKED_NOWHERE))
            .expect("image recorded");
        // A RemovePodSandbox in progress holds the pod's lock.
        let removal = test.daemon.pod_locks.lock("p1").await;
        let containers = test.daemon.containers.clone();
        let create = tokio::spawn(async move { containers.create("p1", app("busybox")).await });
        // The create found the pod ready and now waits for the removal.
        while test.daemon.pod_locks.users("p1") < 2 {
            assert!(!create.is_finished(), "the create ended before the lock");
            tokio::task::yield_now().await;
        }
        let pod = stores.pods.get("p1").expect("the pod is there");
        stores
            .pods
            .remove_releasing(&pod, &stores.lists)
            .expect("the removal forgets the pod");
        drop(removal);
        let error = create
            .await
            .expect("the create task ends")
            .expect_err("the pod is gone");
        let status = Status::from(error);
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_nothing_kept(&test);
    }

    #[tokio::test]
    async fn a_create_into_a_stopped_pod_is_refused() {
        let test = TestDaemon::new().await;
        test.add_pod(testing::pod("p1", PodPhase::Stopped));
        test.daemon
            .stores
            .images
            .put(testing::image("busybox", UNPACKED_NOWHERE))
            .expect("image recorded");
        let error = test
            .daemon
            .containers
            .create("p1", app("busybox"))
            .await
            .expect_err("the pod is stopped");
        assert_eq!(Status::from(error).code(), Code::FailedPrecondition);
        assert_nothing_kept(&test);
    }

    #[tokio::test]
    async fn a_create_that_fails_after_recording_is_rolled_back() {
        let test = TestDaemon::new().await;
        test.add_pod(testing::pod("p1", PodPhase::Ready));
        test.daemon
            .stores
            .images
            .put(testing::image("busybox", UNPACKED_NOWHERE))
            .expect("image recorded");
        for attempt in 0..2 {
            let error = test
                .daemon
                .containers
                .create("p1", app("busybox"))
                .await
                .expect_err("the layer is missing");
            // The second attempt reserves the same name: it was released.
            let status = Status::from(error);
            assert!(
                status.message().contains("chain id"),
                "attempt {attempt}: {status:?}"
            );
            assert_nothing_kept(&test);
        }
        // Nothing of either container is left on disk.
        for dir in [test.dir.path().join("state"), test.dir.path().join("root")] {
            let containers = dir.join("containers");
            let left: Vec<_> = std::fs::read_dir(&containers)
                .map(|entries| entries.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{left:?}");
        }
    }

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
                monitor_died: None,
                image_volumes: Vec::new(),
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

    #[tokio::test]
    async fn a_dead_monitor_ends_the_pods_running_containers_as_errors() {
        let test = TestDaemon::new().await;
        test.add_pod(testing::pod("p1", PodPhase::Ready));
        test.add_container(testing::container("c1", "p1"));
        // The pod's dir has no monitor socket: the watch finds the monitor
        // gone and the controller's task ends the pod.
        let pod_dir = test.daemon.pods.pod_dir("p1");
        std::fs::create_dir_all(&pod_dir).expect("the pod dir");
        let live = &test.daemon.live;
        live.watch("p1", &pod_dir).await;
        assert_eq!(live.source("p1"), Some(Source::Gone));
        // The task runs under the pod's lock; taking it after the record
        // changed proves nothing is half done.
        let ended = loop {
            let lock = test.daemon.pod_locks.lock("p1").await;
            let record = test.daemon.stores.containers.get("c1").expect("kept");
            if record.monitor_died.is_some() {
                break record;
            }
            drop(lock);
            tokio::task::yield_now().await;
        };
        let observed = test.daemon.containers.observe_one(&ended).await;
        assert_eq!(observed.state, cri::ContainerState::ContainerExited);
        assert_eq!(
            (observed.exit_code, observed.reason.as_str()),
            (137, "Error")
        );
        assert_eq!(observed.message, MONITOR_DIED);
        assert!(observed.finished_at > 0);
        // Recorded: a restart says the same.
        let stored = test.stored_containers();
        assert!(stored[0].monitor_died.is_some(), "{stored:?}");
        // Stopping it answers OK: nothing of it runs.
        test.daemon
            .containers
            .stop("c1", 0)
            .await
            .expect("a container its monitor's death ended stops");
    }

    #[test]
    fn an_exit_the_monitor_saw_is_kept_over_its_death() {
        let mut record = testing::container("c1", "p1");
        record.monitor_died = Some(ContainerExit {
            status: ExitStatus::Signaled(9),
            finished_at: 9,
            oom_killed: false,
        });
        let seen = ContainerExit {
            status: ExitStatus::Exited(3),
            finished_at: 5,
            oom_killed: false,
        };
        let observed = observed(&record, None, Some(seen));
        assert_eq!(
            (
                observed.exit_code,
                observed.reason.as_str(),
                observed.finished_at
            ),
            (3, "Error", 5)
        );
        assert!(observed.message.is_empty(), "{observed:?}");
    }
}
