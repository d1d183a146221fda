//! The pod's mounts under its state dir: `/dev/shm` as a tmpfs of the pod,
//! and each namespace pinned by a bind mount of `/proc/<pause>/ns/<ns>`, so
//! CNI gets a stable netns path and the namespaces outlive a pause crash.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::error::PodError;

pub const SHM_DIR: &str = "shm";
pub const NS_DIR: &str = "ns";

/// The pod's `/dev/shm` tmpfs (when the pod has its own IPC namespace).
pub fn shm_path(pod_dir: &Path) -> PathBuf {
    pod_dir.join(SHM_DIR)
}

/// Where the pod's namespace `name` (`net`, `ipc`, `uts`) is pinned.
pub fn namespace_path(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join(NS_DIR).join(name)
}

pub fn mount_shm(pod_dir: &Path, size_bytes: u64) -> Result<PathBuf, PodError> {
    let target = shm_path(pod_dir);
    fs::create_dir_all(&target).map_err(PodError::io("cannot create", &target))?;
    let options = format!("mode=1777,size={size_bytes}");
    mount(
        Some("shm"),
        &target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(|errno| PodError::io("cannot mount tmpfs on", &target)(errno.into()))?;
    Ok(target)
}

/// Bind-mounts `/proc/<pid>/ns/<name>` onto `<pod dir>/ns/<name>`.
pub fn pin_namespace(pod_dir: &Path, pid: i32, name: &str) -> Result<PathBuf, PodError> {
    let dir = pod_dir.join(NS_DIR);
    fs::create_dir_all(&dir).map_err(PodError::io("cannot create", &dir))?;
    let target = namespace_path(pod_dir, name);
    fs::File::create(&target).map_err(PodError::io("cannot create", &target))?;
    let source = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
    mount(
        Some(&source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|errno| PodError::io("cannot pin namespace onto", &target)(errno.into()))?;
    Ok(target)
}

/// Unmounts `target` if mounted (lazily: a process inside may still hold it)
/// and removes it. Idempotent: a missing or unmounted path is fine.
pub fn unmount_and_remove(target: &Path) -> Result<(), PodError> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(errno) => return Err(PodError::io("cannot unmount", target)(errno.into())),
    }
    let removed = if target.is_dir() {
        fs::remove_dir(target)
    } else {
        fs::remove_file(target)
    };
    match removed {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            Err(PodError::io("cannot remove", target)(error))
        }
        _ => Ok(()),
    }
}

/// Undoes every pod mount under `pod_dir` (pins and shm), whatever state a
/// crash left them in.
pub fn unmount_all(pod_dir: &Path) -> Result<(), PodError> {
    let ns_dir = pod_dir.join(NS_DIR);
    if let Ok(entries) = fs::read_dir(&ns_dir) {
        for entry in entries.flatten() {
            unmount_and_remove(&entry.path())?;
        }
    }
    unmount_and_remove(&ns_dir)?;
    unmount_and_remove(&shm_path(pod_dir))
}
