//! Pods' and containers' cgroups with the cgroupfs driver. A pod has a pod cgroup
//! (kubelet's `cgroup_parent`, or one crid creates) and inside it a leaf for
//! the monitor and pause, named by the sandbox id, as containerd names the
//! pause container's; containers get leaves beside it. Leaves only, so the
//! cgroup v2 rule "no processes in inner nodes" holds.
//!
//! [`Hierarchy::apply`] writes a container's limits, at create time and for
//! live updates alike. With the systemd driver ([`systemd`]) the same layout
//! is made of a slice and scopes; [`Cgroups`] is where the two differ.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proto::monitor::{CgroupV1Mount, CgroupView};
use serde::{Deserialize, Serialize};

use crate::spec::Resources;
pub use limits::Restore;
use limits::{apply_v1, apply_v2};

mod devices;
mod driver;
mod limits;
pub mod stats;
pub mod systemd;

pub use driver::{Cgroups, Driver, Undo};

/// What can go wrong with cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: String, reason: String },
    #[error("{what}: {reason}")]
    Systemd { what: String, reason: String },
    #[error("{field}: {reason} (got {value:?})")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    /// Blocking cgroup work run off the async workers panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl CgroupError {
    fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> CgroupError {
        let path = path.into();
        move |source| CgroupError::Io { what, path, source }
    }

    fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> CgroupError {
        CgroupError::Invalid {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// Where crid puts pods that come without a `cgroup_parent`.
pub const DEFAULT_POD_CGROUP_PARENT: &str = "/crid";
/// Bound on waiting for a killed cgroup to empty.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(10);

/// v1 controllers crid places pods in (and the systemd named hierarchy, as runc does).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "pids",
    "blkio",
    "devices",
    "freezer",
    "hugetlb",
    "name=systemd",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The pod cgroup, e.g. `/kubepods/burstable/pod<uid>` or `/crid/<id>`.
    pub pod: String,
    /// The monitor's and pause's leaf, `<pod>/<sandbox id>`.
    pub sandbox: String,
    /// Whether crid made the pod cgroup (and so removes it).
    pub owns_pod: bool,
    /// Made by the systemd driver: the pod cgroup is a slice, the sandbox's
    /// and the containers' are scopes (see [`systemd`]).
    #[serde(default)]
    pub systemd: bool,
}

/// One cgroup v1 hierarchy crid uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// Its mount point, e.g. `/sys/fs/cgroup/cpu,cpuacct`.
    pub dir: PathBuf,
    /// Its controllers that crid uses (`name=systemd` for the named one):
    /// they say which hierarchy holds a control file.
    pub controllers: Vec<String>,
}

/// The host's cgroup layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1: one mount per controller (set).
    V1 { mounts: Vec<V1Mount> },
    /// cgroup v2: one unified tree.
    V2 { root: PathBuf },
}

impl Hierarchy {
    /// Reads the layout from /proc/self/mountinfo: v2 if `/sys/fs/cgroup` is
    /// cgroup2, else the v1 controller mounts.
    pub fn detect() -> Result<Hierarchy, CgroupError> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(CgroupError::io("cannot read", "/proc/self/mountinfo"))?;
        Ok(Hierarchy::from_mountinfo(&mountinfo))
    }

    fn from_mountinfo(mountinfo: &str) -> Hierarchy {
        let mut v1 = Vec::new();
        for line in mountinfo.lines() {
            // id parent major:minor root mountpoint options ... - fstype source superoptions
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = before.split(' ').nth(4).unwrap_or_default();
            let mut after = after.split(' ');
            let fstype = after.next().unwrap_or_default();
            let super_options = after.nth(1).unwrap_or_default();
            if fstype == "cgroup2" && mount_point == "/sys/fs/cgroup" {
                return Hierarchy::V2 {
                    root: PathBuf::from(mount_point),
                };
            }
            let controllers: Vec<String> = super_options
                .split(',')
                .filter(|option| V1_CONTROLLERS.contains(option))
                .map(String::from)
                .collect();
            if fstype == "cgroup" && !controllers.is_empty() {
                v1.push(V1Mount {
                    dir: PathBuf::from(mount_point),
                    controllers,
                });
            }
        }
        Hierarchy::V1 { mounts: v1 }
    }

    /// The directories of `cgroup` in every hierarchy.
    fn dirs(&self, cgroup: &str) -> Vec<PathBuf> {
        let relative = cgroup.trim_start_matches('/');
        match self {
            Hierarchy::V1 { mounts } => mounts
                .iter()
                .map(|mount| mount.dir.join(relative))
                .collect(),
            Hierarchy::V2 { root } => vec![root.join(relative)],
        }
    }

    /// Creates the pod cgroup (when crid owns it) and the sandbox leaf.
    pub fn create(&self, placement: &Placement) -> Result<(), CgroupError> {
        self.create_leaf(&placement.sandbox)
    }

    /// Creates the leaf `cgroup` (a sandbox's or a container's) and any
    /// missing parents in every hierarchy.
    pub fn create_leaf(&self, cgroup: &str) -> Result<(), CgroupError> {
        for (cgroup, mount_root) in self.dirs(cgroup).into_iter().zip(self.roots()) {
            // The shared parent may vanish under us when its last other pod
            // is removed at this moment (see remove_owned): try again.
            let v2 = matches!(self, Hierarchy::V2 { .. });
            let mut attempts = 0;
            loop {
                match create_with_parents(&mount_root, &cgroup, v2) {
                    Err(CgroupError::Io { source, .. })
                        if source.kind() == ErrorKind::NotFound && attempts < 3 =>
                    {
                        attempts += 1;
                    }
                    result => break result?,
                }
            }
        }
        Ok(())
    }

    /// Removes a pod cgroup crid created, and crid's shared parent of such
    /// cgroups once no pod is left in it.
    pub fn remove_owned(&self, pod: &str) -> Result<(), CgroupError> {
        self.remove(pod)?;
        for dir in self.dirs(DEFAULT_POD_CGROUP_PARENT) {
            // Busy while other pods live there: that is fine.
            let _ = fs::remove_dir(dir);
        }
        Ok(())
    }

    fn roots(&self) -> Vec<PathBuf> {
        match self {
            Hierarchy::V1 { mounts } => mounts.iter().map(|mount| mount.dir.clone()).collect(),
            Hierarchy::V2 { root } => vec![root.clone()],
        }
    }

    /// The `cgroup.procs` files of `cgroup`, one per hierarchy: writing a
    /// pid to each moves that process into the cgroup.
    pub fn procs_files(&self, cgroup: &str) -> Vec<PathBuf> {
        self.files_named(cgroup, "cgroup.procs")
    }

    /// `cgroup`'s file `name`, one per hierarchy.
    fn files_named(&self, cgroup: &str, name: &str) -> Vec<PathBuf> {
        self.dirs(cgroup)
            .into_iter()
            .map(|dir| dir.join(name))
            .collect()
    }

    /// The files through which a single-threaded process joins `cgroup`,
    /// one per hierarchy, by writing "0" (itself) to each. On v1 that is
    /// `tasks`: moving only the writer's own thread skips the global
    /// threadgroup lock, whose write side waits for an RCU grace period
    /// (7–15 ms here) that `cgroup.procs` pays on every pod and container
    /// start. A forked child has one thread, so it moves whole. v2 has no
    /// such file for a domain cgroup: `cgroup.procs`.
    pub fn join_files(&self, cgroup: &str) -> Vec<PathBuf> {
        match self {
            Hierarchy::V1 { .. } => self.files_named(cgroup, "tasks"),
            Hierarchy::V2 { .. } => self.procs_files(cgroup),
        }
    }

    /// Pids in `cgroup` (from the first hierarchy that has it).
    pub fn processes(&self, cgroup: &str) -> Vec<i32> {
        for dir in self.dirs(cgroup) {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                return text
                    .lines()
                    .filter_map(|line| line.trim().parse().ok())
                    .collect();
            }
        }
        Vec::new()
    }

    /// SIGKILLs everything in `cgroup` until it is empty (bounded), then
    /// removes it everywhere. Idempotent.
    pub fn kill_and_remove(&self, cgroup: &str) -> Result<(), CgroupError> {
        self.kill(cgroup)?;
        self.remove(cgroup)
    }

    /// SIGKILLs everything in `cgroup` until it is empty (bounded).
    pub fn kill(&self, cgroup: &str) -> Result<(), CgroupError> {
        let deadline = Instant::now() + EMPTY_TIMEOUT;
        // v2 (Linux 5.14+): the kernel kills the whole cgroup at once, forks
        // in flight included, which a pid list read first cannot. v1: the
        // cgroup is frozen while its pids are read and killed, so none
        // forks meanwhile, then thawed so the killed ones can die.
        let killer = match self {
            Hierarchy::V2 { root } => {
                let file = root
                    .join(cgroup.trim_start_matches('/'))
                    .join("cgroup.kill");
                file.exists().then_some(Killer::V2Kill(file))
            }
            Hierarchy::V1 { mounts } => mounts
                .iter()
                .find(|mount| mount.controllers.iter().any(|c| c == "freezer"))
                .map(|mount| {
                    mount
                        .dir
                        .join(cgroup.trim_start_matches('/'))
                        .join("freezer.state")
                })
                .filter(|file| file.exists())
                .map(Killer::V1Freezer),
        };
        loop {
            let pids = self.processes(cgroup);
            if pids.is_empty() {
                break;
            }
            match &killer {
                // Gone meanwhile: the next read finds it empty.
                Some(Killer::V2Kill(file)) => {
                    let _ = fs::write(file, "1");
                }
                Some(Killer::V1Freezer(state)) => freeze_and_kill(cgroup, self, state, deadline),
                None => kill_all(&pids),
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Cgroup {
                    path: cgroup.into(),
                    reason: "processes survive SIGKILL".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Removes an empty cgroup everywhere; a missing one is fine.
    pub fn remove(&self, cgroup: &str) -> Result<(), CgroupError> {
        for dir in self.dirs(cgroup) {
            match fs::remove_dir(&dir) {
                Err(error) if error.kind() != ErrorKind::NotFound => {
                    return Err(CgroupError::Cgroup {
                        path: dir.display().to_string(),
                        reason: error.to_string(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes `resources` into the leaf `cgroup`; unset (None, 0, empty)
    /// limits are left as they are. Works on a cgroup with processes in it,
    /// so it serves UpdateContainerResources too. All or nothing; done, it
    /// returns the files written with their old values.
    pub fn apply(&self, cgroup: &str, resources: &Resources) -> Result<Restore, CgroupError> {
        match self {
            Hierarchy::V1 { mounts } => apply_v1(mounts, cgroup, resources),
            Hierarchy::V2 { root } => {
                apply_v2(&root.join(cgroup.trim_start_matches('/')), resources)
            }
        }
    }

    /// Writes the device rules of a container's spec into its leaf, before
    /// anything runs there.
    pub fn apply_devices(
        &self,
        cgroup: &str,
        rules: &[oci_spec::runtime::LinuxDeviceCgroup],
    ) -> Result<(), CgroupError> {
        match self {
            Hierarchy::V1 { mounts } => match v1_mount(mounts, "devices") {
                Some(mount) => {
                    devices::apply_v1(&mount.dir.join(cgroup.trim_start_matches('/')), rules)
                }
                None => Err(CgroupError::Cgroup {
                    path: cgroup.into(),
                    reason: "no devices controller is mounted: device access cannot be limited"
                        .into(),
                }),
            },
            Hierarchy::V2 { root } => {
                devices::apply_v2(&root.join(cgroup.trim_start_matches('/')), rules)
            }
        }
    }

    /// The file whose `oom_kill` line counts the OOM kills in `cgroup`
    /// (see [`oom_kills`]); None without a memory controller.
    pub fn oom_events_file(&self, cgroup: &str) -> Option<PathBuf> {
        let relative = cgroup.trim_start_matches('/');
        match self {
            Hierarchy::V1 { mounts } => v1_mount(mounts, "memory")
                .map(|mount| mount.dir.join(relative).join("memory.oom_control")),
            Hierarchy::V2 { root } => Some(root.join(relative).join("memory.events")),
        }
    }

    /// How a container in `cgroup` sees its cgroups: for v1, its dir in
    /// every hierarchy crid uses, named as on the host, with the host's
    /// symlinks to that hierarchy (`cpu` → `cpu,cpuacct`).
    pub fn view(&self, cgroup: &str) -> CgroupView {
        let relative = cgroup.trim_start_matches('/');
        let Hierarchy::V1 { mounts } = self else {
            return CgroupView::V2;
        };
        let hierarchies = mounts
            .iter()
            .filter_map(|mount| {
                let name = mount.dir.file_name()?.to_string_lossy().into_owned();
                Some(CgroupV1Mount {
                    name,
                    host_dir: mount.dir.join(relative),
                    aliases: aliases(&mount.dir),
                })
            })
            .collect();
        CgroupView::V1 { hierarchies }
    }
}

/// Creates `dir` and any missing parents below `root`. v1 cpuset dirs start
/// with empty `cpus`/`mems` and refuse tasks until given some; v2 parents
/// must delegate their controllers to children.
fn create_with_parents(root: &Path, dir: &Path, v2: bool) -> Result<(), CgroupError> {
    let relative = dir.strip_prefix(root).map_err(|_| CgroupError::Cgroup {
        path: dir.display().to_string(),
        reason: format!("not under {}", root.display()),
    })?;
    let mut current = root.to_path_buf();
    for component in relative.components() {
        if v2 {
            enable_controllers(&current)?;
        }
        current.push(component);
        match fs::create_dir(&current) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
            Err(error) => return Err(CgroupError::io("cannot create cgroup", &current)(error)),
        }
        // Also for a level that already existed: another pod may have just
        // made it and not yet filled it in. Idempotent, so any interleaving
        // of concurrent creators ends with every level filled.
        if !v2 {
            inherit_cpuset(root, &current)?;
        }
    }
    Ok(())
}

/// Fills an empty v1 `cpuset.cpus`/`cpuset.mems` of `dir` from its nearest
/// ancestor (up to `root`) that has them; other controllers have no such files.
fn inherit_cpuset(root: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let Ok(own) = fs::read_to_string(dir.join(file)) else {
            return Ok(());
        };
        if !own.trim().is_empty() {
            continue;
        }
        let inherited = dir
            .ancestors()
            .skip(1)
            .take_while(|ancestor| ancestor.starts_with(root))
            .filter_map(|ancestor| fs::read_to_string(ancestor.join(file)).ok())
            .find(|value| !value.trim().is_empty());
        if let Some(value) = inherited {
            fs::write(dir.join(file), value.trim())
                .map_err(CgroupError::io("cannot write", dir.join(file)))?;
        }
    }
    Ok(())
}

/// v2: makes every controller `dir` has available to its children.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<String> = available
        .split_whitespace()
        .filter(|controller| !enabled.split_whitespace().any(|e| e == *controller))
        .map(|controller| format!("+{controller}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let control = dir.join("cgroup.subtree_control");
    fs::write(&control, missing.join(" ")).map_err(CgroupError::io("cannot write", &control))
}

/// How [`Hierarchy::kill`] ends a cgroup's processes.
enum Killer {
    /// v2's `cgroup.kill`.
    V2Kill(PathBuf),
    /// v1's freezer (its `freezer.state`): freeze, kill the pids, thaw.
    V1Freezer(PathBuf),
}

fn kill_all(pids: &[i32]) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Freezes the v1 cgroup whose `freezer.state` is `state` (waiting until
/// `deadline` for it to be frozen), SIGKILLs what is in it, and thaws it
/// again, whatever happened: a frozen task dies only once thawed.
fn freeze_and_kill(cgroup: &str, hierarchy: &Hierarchy, state: &Path, deadline: Instant) {
    // Gone meanwhile: the next read finds it empty.
    if fs::write(state, "FROZEN").is_ok() {
        // FREEZING until every task stopped; a task the kernel cannot
        // stop now (uninterruptible sleep) keeps it there: kill anyway.
        while Instant::now() < deadline
            && fs::read_to_string(state).is_ok_and(|now| now.trim() == "FREEZING")
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    kill_all(&hierarchy.processes(cgroup));
    let _ = fs::write(state, "THAWED");
}

/// The placement of a new pod: kubelet's parent, or crid's own pod cgroup.
pub fn placement(sandbox_id: &str, cgroup_parent: Option<&str>) -> Placement {
    match cgroup_parent.filter(|parent| !parent.is_empty()) {
        Some(parent) => {
            let pod = format!("/{}", parent.trim_matches('/'));
            Placement {
                sandbox: format!("{pod}/{sandbox_id}"),
                pod,
                owns_pod: false,
                systemd: false,
            }
        }
        None => {
            let pod = format!("{DEFAULT_POD_CGROUP_PARENT}/{sandbox_id}");
            Placement {
                sandbox: format!("{pod}/sandbox"),
                pod,
                owns_pod: true,
                systemd: false,
            }
        }
    }
}

/// Checks a cgroupfs `cgroup_parent`: an absolute path without `..`.
pub fn validate_parent(parent: &str) -> Result<(), CgroupError> {
    // The kernel refuses a cgroup name with a newline (EINVAL at mkdir).
    let valid = parent.starts_with('/')
        && !parent.contains(['\n', '\0'])
        && !parent.split('/').any(|part| part == ".." || part == ".");
    if valid {
        Ok(())
    } else {
        Err(CgroupError::invalid(
            "linux.cgroup_parent",
            parent,
            "must be an absolute cgroupfs path without '.', '..', newline or NUL (the cgroupfs driver)",
        ))
    }
}

/// A container's cgroup: a leaf in the pod cgroup beside the sandbox's
/// (with the systemd driver, a scope).
pub fn container_cgroup(placement: &Placement, container_id: &str) -> String {
    if placement.systemd {
        format!("{}/{}", placement.pod, systemd::scope_name(container_id))
    } else {
        format!("{}/{container_id}", placement.pod)
    }
}

/// The OOM kills counted in a [`Hierarchy::oom_events_file`]: its
/// `oom_kill N` line (v1 `memory.oom_control` and v2 `memory.events` both
/// have one); a kernel without that line counts none.
pub fn oom_kills(file: &Path) -> std::io::Result<u64> {
    let text = fs::read_to_string(file)?;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("oom_kill") {
            let count = words.next().unwrap_or_default();
            return count.parse().map_err(|_| {
                std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("{}: bad oom_kill count {count:?}", file.display()),
                )
            });
        }
    }
    Ok(0)
}

/// The v1 hierarchy holding `controller`.
fn v1_mount<'a>(mounts: &'a [V1Mount], controller: &str) -> Option<&'a V1Mount> {
    mounts
        .iter()
        .find(|mount| mount.controllers.iter().any(|c| c == controller))
}

/// Names of the symlinks beside a v1 mount point that point at it.
fn aliases(mount: &Path) -> Vec<String> {
    let (Some(parent), Some(own_name)) = (mount.parent(), mount.file_name()) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name() != own_name)
        .filter(|entry| {
            fs::read_link(entry.path()).is_ok_and(|target| parent.join(target) == mount)
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests;
