//! The cgroup driver crid runs with, in one place: which cgroups a pod and
//! its containers get, who makes and removes them (crid itself, or systemd)
//! and how their processes get in. The files under them are written by
//! [`Hierarchy`] either way.

use std::path::PathBuf;

use oci_spec::runtime::LinuxDeviceCgroup;
use tokio::task::spawn_blocking;

use super::limits::Restore;
use super::systemd::{self, Systemd};
use super::{CgroupError, Hierarchy, Placement, limits};
use crate::spec::Resources;

/// Bound on placing a container in its systemd scope: below the 10 s the
/// monitor waits for crid's answer while it holds the container's init.
const PLACE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);

/// `[runtime] cgroup_driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// crid makes the cgroup dirs itself.
    Cgroupfs,
    /// systemd makes slices and scopes for crid ([`systemd`]).
    Systemd,
}

/// What [`Cgroups::update`] changed, to put back with [`Cgroups::undo`].
#[derive(Debug, Default)]
pub struct Undo {
    /// The container's scope and the properties it changed, as they were
    /// (systemd driver).
    properties: Option<(String, Vec<systemd::Property>)>,
    /// The files as they were.
    files: Restore,
}

/// The host's cgroups as the configured driver manages them.
#[derive(Debug, Clone)]
pub struct Cgroups {
    hierarchy: Hierarchy,
    /// Connected when the driver is systemd.
    systemd: Option<Systemd>,
}

impl Cgroups {
    /// Reads the host's layout and, for the systemd driver, connects to
    /// systemd (refusing a host whose init is not systemd).
    pub async fn new(driver: Driver) -> Result<Cgroups, CgroupError> {
        let hierarchy = spawn_blocking(Hierarchy::detect).await??;
        let systemd = match driver {
            Driver::Cgroupfs => None,
            Driver::Systemd => {
                let systemd = Systemd::connect().await?;
                // On v1, systemd rewrites a scope's device cgroup on every
                // daemon-reload from its own DevicePolicy, undoing crid's
                // rules; v1 with the systemd driver is legacy: refused.
                if !matches!(hierarchy, Hierarchy::V2 { .. }) {
                    return Err(CgroupError::Cgroup {
                        path: "/sys/fs/cgroup".into(),
                        reason: "the systemd cgroup driver needs cgroup v2 (a unified \
                                 hierarchy); set [runtime] cgroup_driver = \"cgroupfs\""
                            .into(),
                    });
                }
                Some(systemd)
            }
        };
        Ok(Cgroups { hierarchy, systemd })
    }

    /// The cgroupfs driver on a given layout.
    pub fn cgroupfs(hierarchy: Hierarchy) -> Cgroups {
        Cgroups {
            hierarchy,
            systemd: None,
        }
    }

    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    pub fn driver(&self) -> Driver {
        if self.systemd.is_some() {
            Driver::Systemd
        } else {
            Driver::Cgroupfs
        }
    }

    fn v2(&self) -> bool {
        matches!(self.hierarchy, Hierarchy::V2 { .. })
    }

    /// Checks a pod's `cgroup_parent` for this driver.
    pub fn validate_parent(&self, parent: &str) -> Result<(), CgroupError> {
        match self.driver() {
            Driver::Cgroupfs => super::validate_parent(parent),
            Driver::Systemd => systemd::validate_slice(parent),
        }
    }

    /// Where a new pod goes.
    pub fn placement(
        &self,
        sandbox_id: &str,
        cgroup_parent: Option<&str>,
    ) -> Result<Placement, CgroupError> {
        match self.driver() {
            Driver::Cgroupfs => Ok(super::placement(sandbox_id, cgroup_parent)),
            Driver::Systemd => systemd::placement(sandbox_id, cgroup_parent),
        }
    }

    /// Before the pod's monitor starts (blocking): the cgroupfs driver
    /// makes the sandbox's leaf and returns the files through which the
    /// monitor's launcher joins it before it forks
    /// ([`Hierarchy::join_files`]). systemd makes a scope only with pids in
    /// it ([`Cgroups::adopt_sandbox`]), so there is none yet.
    pub fn prepare_sandbox(&self, placement: &Placement) -> Result<Vec<PathBuf>, CgroupError> {
        if placement.systemd {
            return Ok(Vec::new());
        }
        self.hierarchy.create(placement)?;
        Ok(self.hierarchy.join_files(&placement.sandbox))
    }

    /// Once the monitor and pause run (`pids`): with systemd, the sandbox's
    /// scope is started with them in it. Nothing of the pod forks before
    /// crid asks for a container, so nothing is born outside the scope.
    pub async fn adopt_sandbox(
        &self,
        placement: &Placement,
        pids: &[i32],
    ) -> Result<(), CgroupError> {
        if !placement.systemd {
            return Ok(());
        }
        let pids = unit_pids(&placement.sandbox, pids)?;
        self.start_scope(placement, &placement.sandbox, &pids, &Resources::default())
            .await?;
        // v1: into the hierarchies systemd does not manage (cpuset, …) too.
        let (hierarchy, sandbox) = (self.hierarchy.clone(), placement.sandbox.clone());
        spawn_blocking(move || {
            for file in hierarchy.procs_files(&sandbox) {
                for pid in &pids {
                    std::fs::write(&file, pid.to_string())
                        .map_err(CgroupError::io("cannot write", &file))?;
                }
            }
            Ok(())
        })
        .await?
    }

    /// The scope of `cgroup` with `pids` in it and `resources` as its
    /// properties, then whatever systemd left out filled in as the cgroupfs
    /// driver would (v1 hierarchies it does not manage, v2 controllers it
    /// does not enable).
    async fn start_scope(
        &self,
        placement: &Placement,
        cgroup: &str,
        pids: &[u32],
        resources: &Resources,
    ) -> Result<(), CgroupError> {
        let systemd = self.connected(cgroup)?;
        let unit = unit(cgroup)?;
        let properties =
            systemd::scope_properties(systemd::pod_slice(placement), pids, resources, self.v2())?;
        systemd.start_scope(unit, &properties).await?;
        let (hierarchy, cgroup) = (self.hierarchy.clone(), cgroup.to_owned());
        spawn_blocking(move || hierarchy.create_leaf(&cgroup)).await?
    }

    fn connected(&self, cgroup: &str) -> Result<&Systemd, CgroupError> {
        self.systemd.as_ref().ok_or_else(|| CgroupError::Cgroup {
            path: cgroup.to_owned(),
            reason: "made by the systemd cgroup driver, but crid runs with cgroupfs now".into(),
        })
    }

    /// Kills what is left in the pod's sandbox cgroup and removes it (its
    /// scope, with systemd), and the pod cgroup when crid made that (never
    /// with systemd: the slice is kubelet's or `system.slice`). Idempotent.
    pub async fn remove_sandbox(&self, placement: &Placement) -> Result<(), CgroupError> {
        self.kill_and_remove(&placement.sandbox).await?;
        if !placement.owns_pod {
            return Ok(());
        }
        let (hierarchy, pod) = (self.hierarchy.clone(), placement.pod.clone());
        spawn_blocking(move || hierarchy.remove_owned(&pod)).await?
    }

    /// Before a container's init is forked (blocking): the cgroupfs driver
    /// makes its leaf and writes its limits and device rules. A systemd
    /// scope is made once the init exists ([`Cgroups::place_container`]).
    pub fn prepare_container(
        &self,
        cgroup: &str,
        resources: &Resources,
        devices: &[LinuxDeviceCgroup],
    ) -> Result<(), CgroupError> {
        if systemd::unit_of(cgroup).is_some() {
            return Ok(());
        }
        self.hierarchy.create_leaf(cgroup)?;
        self.hierarchy.apply(cgroup, resources)?;
        self.hierarchy.apply_devices(cgroup, devices)
    }

    /// Whether a container in `placement` is placed by crid after its fork
    /// (the monitor holds the init back until [`Cgroups::place_container`]).
    pub fn places_after_fork(placement: &Placement) -> bool {
        placement.systemd
    }

    /// With systemd: the container's scope, started with `pids` (its
    /// freshly forked init and the monitor's holder) and the limits systemd
    /// can express, then every limit written to the files (exact quotas,
    /// hugetlb, `unified`) and the device rules, all before the init goes
    /// on. On error the scope may exist: [`Cgroups::kill_and_remove`] ends it.
    pub async fn place_container(
        &self,
        placement: &Placement,
        cgroup: &str,
        pids: &[i32],
        resources: &Resources,
        devices: &[LinuxDeviceCgroup],
    ) -> Result<(), CgroupError> {
        limits::check(resources)?;
        let pids = unit_pids(cgroup, pids)?;
        // The monitor holds the init for at most its client timeout (10 s)
        // waiting for Placed: give up before it does.
        tokio::time::timeout(
            PLACE_TIMEOUT,
            self.start_scope(placement, cgroup, &pids, resources),
        )
        .await
        .map_err(|_| CgroupError::Cgroup {
            path: cgroup.into(),
            reason: format!("systemd did not start its scope within {PLACE_TIMEOUT:?}"),
        })??;
        let (hierarchy, cgroup, resources, devices) = (
            self.hierarchy.clone(),
            cgroup.to_owned(),
            resources.clone(),
            devices.to_vec(),
        );
        spawn_blocking(move || {
            let _new_scope = hierarchy.apply(&cgroup, &resources)?;
            hierarchy.apply_devices(&cgroup, &devices)
        })
        .await?
    }

    /// New limits for a container (UpdateContainerResources), all or
    /// nothing: with systemd as unit properties first, so systemd's view
    /// stays the same as the files, then the files. If any step fails, the
    /// properties and the files are put back as they were. Done, it returns
    /// what it changed, for [`Cgroups::undo`] when a later step of the
    /// caller fails. A container whose scope has ended (it exited) has none
    /// to change.
    pub async fn update(&self, cgroup: &str, resources: &Resources) -> Result<Undo, CgroupError> {
        // Refused before systemd applies any of it.
        limits::check(resources)?;
        let Some(unit) = systemd::unit_of(cgroup) else {
            let files = self.apply_files(cgroup, resources).await?;
            return Ok(Undo {
                properties: None,
                files,
            });
        };
        let systemd = self.connected(cgroup)?;
        let properties = systemd::limit_properties(resources, self.v2())?;
        let names: Vec<&'static str> = properties.iter().map(|(name, _)| *name).collect();
        // Read before anything changes: systemd writes its own files when
        // it applies a property, and the file journal would only see what
        // systemd left there.
        let Some(previous) = systemd.properties(unit, &names).await? else {
            return Ok(Undo::default());
        };
        let files: Vec<PathBuf> = self
            .hierarchy
            .dirs(cgroup)
            .iter()
            .flat_map(|dir| systemd::LIMIT_FILES.iter().map(|file| dir.join(file)))
            .collect();
        let before = spawn_blocking(move || Restore::snapshot(files)).await?;
        let undo = Undo {
            properties: Some((unit.to_owned(), previous)),
            files: before,
        };
        let applied = async {
            if !systemd.set_properties(unit, &properties).await? {
                return Ok(None);
            }
            self.apply_files(cgroup, resources).await.map(Some)
        }
        .await;
        match applied {
            Ok(Some(written)) => Ok(Undo {
                properties: undo.properties,
                files: undo.files.then(written),
            }),
            // The scope ended between the read and the change.
            Ok(None) => Ok(Undo::default()),
            Err(error) => {
                self.undo(undo).await;
                Err(error)
            }
        }
    }

    async fn apply_files(
        &self,
        cgroup: &str,
        resources: &Resources,
    ) -> Result<Restore, CgroupError> {
        let (hierarchy, cgroup, resources) =
            (self.hierarchy.clone(), cgroup.to_owned(), resources.clone());
        spawn_blocking(move || hierarchy.apply(&cgroup, &resources)).await?
    }

    /// Puts back what an [`Cgroups::update`] changed: systemd's properties
    /// first (systemd rewrites its files from them), then every file as it
    /// was. Best effort: what cannot be put back is logged.
    pub async fn undo(&self, undo: Undo) {
        if let Some((unit, previous)) = &undo.properties
            && let Some(systemd) = &self.systemd
        {
            systemd.restore_properties(unit, previous).await;
        }
        let files = undo.files;
        if let Err(error) = spawn_blocking(move || files.put_back()).await {
            tracing::warn!(%error, "cannot put back the cgroup files after a failed update");
        }
    }

    /// SIGKILLs everything in `cgroup`, stops its unit (systemd) and
    /// removes it everywhere. Idempotent.
    pub async fn kill_and_remove(&self, cgroup: &str) -> Result<(), CgroupError> {
        let (hierarchy, owned) = (self.hierarchy.clone(), cgroup.to_owned());
        spawn_blocking(move || hierarchy.kill(&owned)).await??;
        if let Some(unit) = systemd::unit_of(cgroup) {
            match &self.systemd {
                Some(systemd) => systemd.stop(unit).await?,
                None => tracing::warn!(
                    unit,
                    "a systemd unit, but crid runs with cgroupfs now: removing only its cgroup"
                ),
            }
        }
        let (hierarchy, owned) = (self.hierarchy.clone(), cgroup.to_owned());
        spawn_blocking(move || hierarchy.remove(&owned)).await?
    }
}

/// Pids as systemd's `PIDs` property takes them.
fn unit_pids(cgroup: &str, pids: &[i32]) -> Result<Vec<u32>, CgroupError> {
    pids.iter()
        .map(|&pid| u32::try_from(pid))
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|_| CgroupError::Cgroup {
            path: cgroup.to_owned(),
            reason: format!("bad pids {pids:?}"),
        })
}

fn unit(cgroup: &str) -> Result<&str, CgroupError> {
    systemd::unit_of(cgroup).ok_or_else(|| CgroupError::Cgroup {
        path: cgroup.to_owned(),
        reason: "not a systemd scope crid made".into(),
    })
}
