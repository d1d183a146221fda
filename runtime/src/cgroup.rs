//! Pods' and containers' cgroups with the cgroupfs driver. A pod has a pod cgroup
//! (kubelet's `cgroup_parent`, or one crid creates) and inside it a leaf for
//! the monitor and pause, named by the sandbox id, as containerd names the
//! pause container's; containers get leaves beside it. Leaves only, so the
//! cgroup v2 rule "no processes in inner nodes" holds.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What can go wrong with cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: String, reason: String },
    #[error("{field}: {reason} (got {value:?})")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
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
}

/// The host's cgroup layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1: one mount per controller (set).
    V1 { mounts: Vec<PathBuf> },
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
            if fstype == "cgroup"
                && super_options
                    .split(',')
                    .any(|option| V1_CONTROLLERS.contains(&option))
            {
                v1.push(PathBuf::from(mount_point));
            }
        }
        Hierarchy::V1 { mounts: v1 }
    }

    /// The directories of `cgroup` in every hierarchy.
    fn dirs(&self, cgroup: &str) -> Vec<PathBuf> {
        let relative = cgroup.trim_start_matches('/');
        match self {
            Hierarchy::V1 { mounts } => mounts.iter().map(|mount| mount.join(relative)).collect(),
            Hierarchy::V2 { root } => vec![root.join(relative)],
        }
    }

    /// Creates the pod cgroup (when crid owns it) and the sandbox leaf.
    pub fn create(&self, placement: &Placement) -> Result<(), CgroupError> {
        for (cgroup, mount_root) in self.dirs(&placement.sandbox).into_iter().zip(self.roots()) {
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
            Hierarchy::V1 { mounts } => mounts.clone(),
            Hierarchy::V2 { root } => vec![root.clone()],
        }
    }

    /// The `cgroup.procs` files of `cgroup`, one per hierarchy: writing a
    /// pid to each moves that process into the cgroup.
    pub fn procs_files(&self, cgroup: &str) -> Vec<PathBuf> {
        self.dirs(cgroup)
            .into_iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
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
        let deadline = Instant::now() + EMPTY_TIMEOUT;
        loop {
            let pids = self.processes(cgroup);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Cgroup {
                    path: cgroup.into(),
                    reason: "processes survive SIGKILL".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.remove(cgroup)
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

/// The placement of a new pod: kubelet's parent, or crid's own pod cgroup.
pub fn placement(sandbox_id: &str, cgroup_parent: Option<&str>) -> Placement {
    match cgroup_parent.filter(|parent| !parent.is_empty()) {
        Some(parent) => {
            let pod = format!("/{}", parent.trim_matches('/'));
            Placement {
                sandbox: format!("{pod}/{sandbox_id}"),
                pod,
                owns_pod: false,
            }
        }
        None => {
            let pod = format!("{DEFAULT_POD_CGROUP_PARENT}/{sandbox_id}");
            Placement {
                sandbox: format!("{pod}/sandbox"),
                pod,
                owns_pod: true,
            }
        }
    }
}

/// Checks a cgroupfs `cgroup_parent`: an absolute path without `..`.
pub fn validate_parent(parent: &str) -> Result<(), CgroupError> {
    let valid =
        parent.starts_with('/') && !parent.split('/').any(|part| part == ".." || part == ".");
    if valid {
        Ok(())
    } else {
        Err(CgroupError::invalid(
            "linux.cgroup_parent",
            parent,
            "must be an absolute cgroupfs path without '.' or '..' (the cgroupfs driver)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_v1_hybrid_and_v2() {
        let v1 = "30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n\
                  31 25 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                  32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                  33 25 0:29 / /sys/fs/cgroup/net_cls rw - cgroup cgroup rw,net_cls\n";
        assert_eq!(
            Hierarchy::from_mountinfo(v1),
            Hierarchy::V1 {
                mounts: vec![
                    PathBuf::from("/sys/fs/cgroup/memory"),
                    PathBuf::from("/sys/fs/cgroup/cpu")
                ]
            }
        );
        let v2 = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            Hierarchy::from_mountinfo(v2),
            Hierarchy::V2 {
                root: PathBuf::from("/sys/fs/cgroup")
            }
        );
    }

    #[test]
    fn placement_uses_kubelets_parent_or_crids_own() {
        let kubelet = placement("abc", Some("/kubepods/burstable/pod123"));
        assert_eq!(kubelet.pod, "/kubepods/burstable/pod123");
        assert_eq!(kubelet.sandbox, "/kubepods/burstable/pod123/abc");
        assert!(!kubelet.owns_pod);
        let own = placement("abc", None);
        assert_eq!(
            (own.pod.as_str(), own.sandbox.as_str(), own.owns_pod),
            ("/crid/abc", "/crid/abc/sandbox", true)
        );
        validate_parent("/kubepods/pod1").expect("valid");
        for bad in ["kubepods", "/a/../b", "kubepods-pod1.slice"] {
            assert!(validate_parent(bad).is_err(), "{bad}");
        }
    }

    /// The v2 path on a fake tree: parents delegate their controllers,
    /// processes go to the leaf, removal takes the leaf away.
    #[test]
    fn v2_on_a_fake_tree() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("write");
        fs::write(root.path().join("cgroup.subtree_control"), "cpu\n").expect("write");
        let hierarchy = Hierarchy::V2 {
            root: root.path().to_path_buf(),
        };
        let placement = placement("pod1", None);
        hierarchy.create(&placement).expect("create");
        let subtree = fs::read_to_string(root.path().join("cgroup.subtree_control")).expect("read");
        assert_eq!(subtree, "+cpuset +io +memory +pids");
        let leaf = root.path().join("crid/pod1/sandbox");
        assert!(leaf.is_dir());
        assert_eq!(
            hierarchy.procs_files(&placement.sandbox),
            vec![leaf.join("cgroup.procs")]
        );
        fs::write(leaf.join("cgroup.procs"), "4242\n").expect("write");
        assert_eq!(hierarchy.processes(&placement.sandbox), vec![4242]);
    }

    /// v1 on a fake tree: every controller gets the leaf; cpuset inherits.
    #[test]
    fn v1_on_a_fake_tree() {
        let root = tempfile::tempdir().expect("tempdir");
        let (memory, cpuset) = (root.path().join("memory"), root.path().join("cpuset"));
        fs::create_dir_all(&memory).expect("mkdir");
        fs::create_dir_all(&cpuset).expect("mkdir");
        fs::write(cpuset.join("cpuset.cpus"), "0-1\n").expect("write");
        fs::write(cpuset.join("cpuset.mems"), "0\n").expect("write");
        let hierarchy = Hierarchy::V1 {
            mounts: vec![memory.clone(), cpuset.clone()],
        };
        // A fake cpuset dir has no cpuset.cpus until written, so pre-create the levels' files.
        let placement = placement("pod1", Some("/kubepods/pod1"));
        // A level another creator made but has not filled in yet.
        fs::create_dir_all(cpuset.join("kubepods")).expect("mkdir");
        fs::write(cpuset.join("kubepods/cpuset.cpus"), "").expect("write");
        fs::write(cpuset.join("kubepods/cpuset.mems"), "").expect("write");
        // A fake tree's new dirs have no cpuset files; a real kernel makes them empty.
        fs::create_dir_all(cpuset.join("kubepods/pod1/pod1")).expect("mkdir");
        for level in ["kubepods/pod1", "kubepods/pod1/pod1"] {
            fs::write(cpuset.join(level).join("cpuset.cpus"), "").expect("write");
            fs::write(cpuset.join(level).join("cpuset.mems"), "").expect("write");
        }
        hierarchy.create(&placement).expect("create");
        for level in ["kubepods", "kubepods/pod1", "kubepods/pod1/pod1"] {
            assert_eq!(
                fs::read_to_string(cpuset.join(level).join("cpuset.cpus")).expect("read"),
                "0-1",
                "{level}"
            );
            assert_eq!(
                fs::read_to_string(cpuset.join(level).join("cpuset.mems")).expect("read"),
                "0",
                "{level}"
            );
        }
        assert!(memory.join("kubepods/pod1/pod1").is_dir());
        assert!(cpuset.join("kubepods/pod1/pod1").is_dir());
        // rmdir of a real cgroup takes its control files along; a fake tree's must go first.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            fs::remove_file(cpuset.join("kubepods/pod1/pod1").join(file))
                .expect("remove fake file");
        }
        hierarchy.remove(&placement.sandbox).expect("remove");
        assert!(!memory.join("kubepods/pod1/pod1").exists());
        hierarchy.remove(&placement.sandbox).expect("remove twice");
    }
}
