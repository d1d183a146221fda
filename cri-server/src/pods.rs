//! The pod controller: each pod's lifecycle (run, stop, remove, recovery)
//! over `pod-sandbox` (namespaces, mounts, CNI, the pod's monitor), with
//! the pod records (name reserved, state persisted before and after every
//! change). A pod's containers go with it, through the container
//! controller; every operation holds the pod's lock.

use std::path::PathBuf;
use std::sync::Arc;

use pod_sandbox::{PodManager, SandboxState, fault};
use proto::cri;

use crate::containers::ContainerController;
use crate::error::CridError;
use crate::limits::ListBudget;
use crate::live::{Change, LiveStates};
use crate::locks::KeyedLocks;
use crate::objects::{PodPhase, PodRecord, new_id};
use crate::pod_config;
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
            blocking(move || pod_config::translate(&id, &config, &cgroups)).await?
        };
        if spec.user_namespace.is_some() {
            self.user_namespaces().map_err(|reason| {
                CridError::FailedPrecondition(format!(
                    "{}: this node cannot give pods user namespaces of their own: {reason}",
                    pod_config::USERNS_FIELD
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
}
