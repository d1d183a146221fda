//! crid's side of a container's files. The bundle (`<state>/containers/<id>`)
//! holds `config.json` (and `env` when the environment is not UTF-8), the
//! `rootfs/` mount point and the exit record the monitor writes; the
//! writable layer (`<root>/containers/<id>/{upper,work}`) lives on disk with
//! the image layers, so a container's writes do not fill the tmpfs under
//! `/run` and overlayfs finds upper and work on one fs.
//! All calls block (filesystem and mount syscalls): run them off async workers.

use std::fs;
use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use oci_spec::runtime::Spec;
use proto::monitor::{ContainerExit, ENV_FILE, EXIT_FILE};

use crate::spec::{
    ContainerSpec, MountSpec, PodUserNamespace, Propagation, SpecError, to_config_json,
};

/// A page: the kernel's limit on mount options (overlay's lowerdir list).
const MAX_MOUNT_OPTIONS: usize = 4095;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mount {path}: {source}")]
    Mount { path: PathBuf, source: Errno },
    #[error("{field} {path}: {reason}")]
    HostPath {
        field: String,
        path: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("the image has too many layers for one overlay mount ({0} bytes of options)")]
    TooManyLayers(usize),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError {
    let path = path.to_path_buf();
    move |source| ContainerError::Io { what, path, source }
}

/// Where one container's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDirs {
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// Parent of the overlay's `upper` and `work`.
    pub layer: PathBuf,
    /// The read-only mounts of the container's image volumes, one per CRI
    /// mount index, and the empty dir under their layers.
    pub volumes: PathBuf,
}

impl ContainerDirs {
    pub fn new(state_dir: &Path, root_dir: &Path, id: &str) -> ContainerDirs {
        let bundle = state_dir.join("containers").join(id);
        ContainerDirs {
            rootfs: bundle.join("rootfs"),
            volumes: bundle.join("volumes"),
            bundle,
            layer: root_dir.join("containers").join(id),
        }
    }

    /// Makes the dirs and mounts the overlay of `lower_dirs` (bottom layer
    /// first, as images list them) with the container's own upper layer.
    /// In a pod user namespace (`user`), the container's root must own its
    /// files without the image being chowned: each layer is mounted
    /// idmapped through the namespace (a detached mount, given to overlayfs
    /// as `/proc/self/fd/N`), and the empty upper layer is given to the
    /// namespace's root, so what the container writes belongs to its range.
    pub fn mount_rootfs(
        &self,
        lower_dirs: &[PathBuf],
        user: Option<&PodUserNamespace>,
    ) -> Result<(), ContainerError> {
        let (upper, work) = (self.layer.join("upper"), self.layer.join("work"));
        for dir in [&self.rootfs, &upper, &work] {
            fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        }
        if let Some(user) = user {
            let (uid, gid) = (user.mappings.uids.host_id, user.mappings.gids.host_id);
            std::os::unix::fs::chown(&upper, Some(uid), Some(gid))
                .map_err(io("cannot chown", &upper))?;
        }
        let (lower, _idmapped) = lower_layers(lower_dirs, None, user)?;
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            escape_overlay_path(&upper),
            escape_overlay_path(&work)
        );
        if options.len() > MAX_MOUNT_OPTIONS {
            return Err(ContainerError::TooManyLayers(options.len()));
        }
        // The overlay holds its own references to the layers: the detached
        // mounts go when `_idmapped` is dropped.
        mount(
            Some("overlay"),
            &self.rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|source| ContainerError::Mount {
            path: self.rootfs.clone(),
            source,
        })
    }

    /// Mounts the image volume of CRI mount `index`: a read-only overlay
    /// of `lower_dirs` (bottom layer first) with nothing writable, and
    /// returns the directory the container is to get: the overlay's root,
    /// or `sub_path` resolved beneath it (symlinks in the image cannot lead
    /// out). `sub_path` is relative and clean (the request was checked).
    pub fn mount_image_volume(
        &self,
        index: usize,
        lower_dirs: &[PathBuf],
        sub_path: &Path,
        user: Option<&PodUserNamespace>,
    ) -> Result<PathBuf, ContainerError> {
        let target = self.volumes.join(index.to_string());
        // overlayfs takes no fewer than two lower dirs without an upper
        // one: an empty dir at the bottom makes a one-layer image mountable.
        let empty = self.volumes.join("empty");
        for dir in [&target, &empty] {
            fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        }
        let (lower, _idmapped) = lower_layers(lower_dirs, Some(&empty), user)?;
        let options = format!("lowerdir={}", lower.join(":"));
        if options.len() > MAX_MOUNT_OPTIONS {
            return Err(ContainerError::TooManyLayers(options.len()));
        }
        mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|source| ContainerError::Mount {
            path: target.clone(),
            source,
        })?;
        if sub_path.as_os_str().is_empty() {
            return Ok(target);
        }
        resolve_beneath(&target, sub_path).map_err(|reason| ContainerError::HostPath {
            field: format!("config.mounts[{index}].image_sub_path"),
            path: sub_path.to_path_buf(),
            reason,
        })
    }

    /// Mounts host path `source` (resolved) of CRI mount `index` idmapped
    /// through the pod's user namespace, as kubelet asks for a pod's
    /// volumes (the mount's mappings are the pod's): files of the host's
    /// root show as the container's root. Returns where the container is
    /// to bind it from, beneath the bundle's `volumes`.
    pub fn mount_idmapped_bind(
        &self,
        index: usize,
        source: &Path,
        user: &PodUserNamespace,
    ) -> Result<PathBuf, ContainerError> {
        let target = self.volumes.join(format!("idmapped-{index}"));
        fs::create_dir_all(&self.volumes).map_err(io("cannot create", &self.volumes))?;
        let is_dir = fs::metadata(source)
            .map_err(io("cannot stat", source))?
            .is_dir();
        if is_dir {
            fs::create_dir_all(&target).map_err(io("cannot create", &target))?;
        } else {
            fs::File::create(&target).map_err(io("cannot create", &target))?;
        }
        let namespace = fs::File::open(&user.path).map_err(io("cannot open", &user.path))?;
        let mount = idmapped_clone(source, &namespace)?;
        crate::sys::attach_mount(mount.as_fd(), &target)
            .map_err(io("cannot attach at", &target))?;
        Ok(target)
    }

    /// Writes the bundle's `config.json`.
    pub fn write_spec(&self, spec: &Spec) -> Result<(), ContainerError> {
        let path = self.bundle.join("config.json");
        fs::write(&path, to_config_json(spec)?).map_err(io("cannot write", &path))
    }

    /// Writes the bundle's [`ENV_FILE`] (`entries` are `KEY=value`, NUL-free),
    /// readable by root only: the values are often Secret data.
    pub fn write_env(&self, entries: &[Vec<u8>]) -> Result<(), ContainerError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.bundle.join(ENV_FILE);
        let mut bytes = Vec::with_capacity(entries.iter().map(|e| e.len() + 1).sum());
        for entry in entries {
            bytes.extend_from_slice(entry);
            bytes.push(0);
        }
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(&bytes))
            .map_err(io("cannot write", &path))
    }

    /// The bundle's `config.json`, if it is there and readable.
    pub fn read_spec(&self) -> Option<Spec> {
        let bytes = fs::read(self.bundle.join("config.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The exit the monitor recorded, if the container has ended.
    pub fn read_exit(&self) -> Option<ContainerExit> {
        let bytes = fs::read(self.bundle.join(EXIT_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Unmounts the rootfs and deletes the bundle and the writable layer.
    /// Idempotent; never deletes through a mount that is still there.
    /// Unmounts by path, without reading the mount table: a node with many
    /// containers would otherwise parse it whole for each one removed.
    pub fn remove(&self) -> Result<(), ContainerError> {
        // The image volumes first: they are mounted inside the bundle.
        match fs::read_dir(&self.volumes) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(io("cannot list", &self.volumes))?;
                    detach_all(&entry.path())?;
                }
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => return Err(io("cannot list", &self.volumes)(error)),
        }
        // The container's own mount namespace is gone or holds its own
        // copy; a busy mount here is crid's (a concurrent reader): detach.
        detach_all(&self.rootfs)?;
        for dir in [&self.bundle, &self.layer] {
            match fs::remove_dir_all(dir) {
                Err(error) if error.kind() != ErrorKind::NotFound => {
                    return Err(io("cannot remove", dir)(error));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Unmounts whatever is mounted on `path` (mounts stack), lazily if
/// something of crid's still reads it. Done when the kernel says `path`
/// is no mount point (EINVAL) or is not there (ENOENT).
fn detach_all(path: &Path) -> Result<(), ContainerError> {
    loop {
        let result = umount2(path, MntFlags::UMOUNT_NOFOLLOW).or_else(|errno| match errno {
            Errno::EBUSY => umount2(path, MntFlags::UMOUNT_NOFOLLOW | MntFlags::MNT_DETACH),
            other => Err(other),
        });
        match result {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(ContainerError::Mount {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// `relative` resolved beneath `root` as if `root` were `/` (openat2
/// RESOLVE_IN_ROOT): the directory's real path, or why it cannot be used.
fn resolve_beneath(root: &Path, relative: &Path) -> Result<PathBuf, String> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let root_dir = fs::File::open(root).map_err(|error| error.to_string())?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let found = openat2(&root_dir, relative, how).map_err(|errno| match errno {
        Errno::ENOENT => "does not exist in the image".to_owned(),
        Errno::ENOTDIR => "is not a directory in the image".to_owned(),
        other => other.desc().to_owned(),
    })?;
    let path = fs::read_link(format!("/proc/self/fd/{}", found.as_raw_fd()))
        .map_err(|error| error.to_string())?;
    // The layers are read-only and crid's own: what resolved beneath the
    // root stays there; checked anyway, since a bind mounts this path.
    if !path.starts_with(root) {
        return Err(format!("resolves outside the image to {}", path.display()));
    }
    Ok(path)
}

/// overlayfs splits its options at ',' and lower dirs at ':'.
fn escape_overlay_path(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

/// The layers `lower_dirs` (bottom first, with `bottom` below them) as
/// overlayfs's lowerdir list (top first). Through a pod user namespace
/// (`user`) each is a detached mount idmapped through it, named
/// `/proc/self/fd/N`: the fds must stay open until the overlay is mounted,
/// which then holds its own references.
fn lower_layers(
    lower_dirs: &[PathBuf],
    bottom: Option<&PathBuf>,
    user: Option<&PodUserNamespace>,
) -> Result<(Vec<String>, Vec<OwnedFd>), ContainerError> {
    let dirs = lower_dirs.iter().rev().chain(bottom);
    let Some(user) = user else {
        return Ok((
            dirs.map(|dir| escape_overlay_path(dir)).collect(),
            Vec::new(),
        ));
    };
    let namespace = fs::File::open(&user.path).map_err(io("cannot open", &user.path))?;
    let mut mounts = Vec::with_capacity(lower_dirs.len() + 1);
    for dir in dirs {
        mounts.push(idmapped_clone(dir, &namespace)?);
    }
    let lower = mounts
        .iter()
        .map(|mount| format!("/proc/self/fd/{}", mount.as_raw_fd()))
        .collect();
    Ok((lower, mounts))
}

/// A detached copy of the mount at `path` whose files show through the
/// user namespace `namespace` (MOUNT_ATTR_IDMAP).
fn idmapped_clone(path: &Path, namespace: &fs::File) -> Result<OwnedFd, ContainerError> {
    let mount = crate::sys::clone_mount(path).map_err(io("cannot clone the mount of", path))?;
    crate::sys::mount_setattr(
        mount.as_fd(),
        libc::MOUNT_ATTR_IDMAP,
        Some(namespace.as_fd()),
        false,
    )
    .map_err(io("cannot idmap", path))?;
    Ok(mount)
}

/// Makes every CRI mount's host path exist and names it by its resolved
/// path: a missing one becomes a directory (as containerd and Docker do;
/// kubelet checks hostPath types itself), symlinks are resolved so the bind
/// mounts what the link names now, not what it might name at start.
pub fn prepare_host_paths(spec: &mut ContainerSpec) -> Result<(), ContainerError> {
    for (index, mount) in spec.mounts.iter_mut().enumerate() {
        let field = format!("config.mounts[{index}].host_path");
        let path = mount.host_path.clone();
        match fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => {
                fs::create_dir_all(&path).map_err(|error| ContainerError::HostPath {
                    field: field.clone(),
                    path: path.clone(),
                    reason: format!("does not exist and cannot be created: {error}"),
                })?;
            }
            Err(error) => {
                return Err(ContainerError::HostPath {
                    field,
                    path,
                    reason: error.to_string(),
                });
            }
        }
        mount.host_path = fs::canonicalize(&path).map_err(|error| ContainerError::HostPath {
            field,
            path: path.clone(),
            reason: format!("cannot be resolved: {error}"),
        })?;
    }
    // The mount table once, and only when some mount must propagate.
    if spec
        .mounts
        .iter()
        .any(|mount| mount.propagation != Propagation::Private)
    {
        let mounts = crate::mountinfo::mounts();
        for (index, mount) in spec.mounts.iter().enumerate() {
            check_propagation(index, mount, &mounts)?;
        }
    }
    Ok(())
}

/// A mount made inside the container reaches the host (BIDIRECTIONAL) only
/// if the host path is on a shared mount, and the host's reach the
/// container (HOST_TO_CONTAINER) only if it is shared or a slave: else the
/// request could not be honoured, and is refused as containerd refuses it.
fn check_propagation(
    index: usize,
    mount: &MountSpec,
    mounts: &[crate::mountinfo::Mount],
) -> Result<(), ContainerError> {
    let needs = match mount.propagation {
        Propagation::Private => return Ok(()),
        Propagation::RShared => "a shared mount",
        Propagation::RSlave => "a shared or slave mount",
    };
    let Some(holding) = crate::mountinfo::holding(mounts, &mount.host_path) else {
        return Ok(());
    };
    let propagates = match mount.propagation {
        Propagation::RShared => holding.is_shared(),
        _ => holding.is_shared() || holding.is_slave(),
    };
    if propagates {
        return Ok(());
    }
    Err(ContainerError::HostPath {
        field: format!("config.mounts[{index}].propagation"),
        path: mount.host_path.clone(),
        reason: format!(
            "is on the mount at {}, which is not {needs} (mount --make-rshared {} makes it one)",
            holding.mount_point.display(),
            holding.mount_point.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::MountSpec;

    #[test]
    fn overlay_paths_are_escaped() {
        assert_eq!(escape_overlay_path(Path::new("/a:b,c")), "/a\\:b\\,c");
    }

    #[test]
    fn host_paths_are_created_and_resolved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("symlink");
        let mut spec = ContainerSpec {
            mounts: vec![
                MountSpec {
                    container_path: "/a".into(),
                    host_path: dir.path().join("missing/deep"),
                    ..MountSpec::default()
                },
                MountSpec {
                    container_path: "/b".into(),
                    host_path: dir.path().join("link"),
                    ..MountSpec::default()
                },
            ],
            ..ContainerSpec::default()
        };
        prepare_host_paths(&mut spec).expect("prepare");
        assert!(dir.path().join("missing/deep").is_dir());
        assert_eq!(
            spec.mounts[1].host_path,
            fs::canonicalize(&real).expect("canonicalize")
        );
        // A path below a regular file can never be created: named in the error.
        let file = dir.path().join("file");
        fs::write(&file, b"x").expect("write");
        let mut bad = ContainerSpec {
            mounts: vec![MountSpec {
                container_path: "/c".into(),
                host_path: file.join("sub"),
                ..MountSpec::default()
            }],
            ..ContainerSpec::default()
        };
        let error = prepare_host_paths(&mut bad).expect_err("cannot create");
        assert!(
            error.to_string().contains("config.mounts[0].host_path"),
            "{error}"
        );
    }
}
