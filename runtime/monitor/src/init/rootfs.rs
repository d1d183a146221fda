//! The container's root filesystem, set up by its init in its new mount
//! namespace, in runc's order: propagation of `/`, the rootfs bound onto
//! itself, the spec's mounts (destinations resolved inside the rootfs, so
//! an image's symlinks cannot send a mount outside it), `/dev` devices and
//! links, masked and read-only paths, pivot_root, and a read-only `/`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, fchmodat, fstat, fstatat, makedev, mknodat, umask,
};
use nix::sys::statfs::{PROC_SUPER_MAGIC, SYSFS_MAGIC, fstatfs};
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::unistd::{
    Gid, Uid, UnlinkatFlags, chdir, fchdir, fchownat, pivot_root, symlinkat, unlinkat,
};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, LinuxNamespaceType, Mount, Spec};
use pathrs::flags::OpenFlags;
use pathrs::{Handle, Root};
use proto::monitor::{CgroupV1Mount, CgroupView};
use std::os::unix::fs::PermissionsExt;

use super::context;

/// Character devices every container gets in its `/dev` tmpfs (Linux's
/// fixed numbers, the same as the host's), mode 0666.
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The usual `/dev` links (runc's), created in that tmpfs.
const DEV_LINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("/proc/kcore", "core"),
    ("pts/ptmx", "ptmx"),
];

/// Sets up `bundle/rootfs` as the root of this (new) mount namespace.
pub(super) fn prepare(bundle: &Path, spec: &Spec, view: &CgroupView) -> io::Result<()> {
    // Devices and mount points get exactly the modes asked for.
    umask(Mode::empty());
    let rootfs = context(bundle.join("rootfs").canonicalize(), || {
        format!("rootfs {}", bundle.join("rootfs").display())
    })?;
    let linux = spec.linux().as_ref();
    let propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        None => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        Some(name) => match parse_options(&[name.to_owned()]).propagation {
            Some(flags) => flags,
            None => return Err(invalid(format!("rootfsPropagation {name:?}"))),
        },
    };
    // Nothing mounted or unmounted from here on may reach the host (or,
    // with rshared, only what should).
    mount_at("/", None, None, propagation, "setting the propagation of /")?;
    // pivot_root refuses a new root whose parent mount is shared.
    let parent = mount_point_of(&rootfs)?;
    mount_at(
        &parent,
        None,
        None,
        MsFlags::MS_PRIVATE,
        "making the rootfs's parent mount private",
    )?;
    mount_at(
        &rootfs,
        Some(&rootfs),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        "binding the rootfs onto itself",
    )?;

    let root = context(Root::open(&rootfs), || {
        format!("opening rootfs {}", rootfs.display())
    })?;
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    for m in mounts {
        mount_one(&root, m, view).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "mounting {} at {}: {e}",
                    m.typ().as_deref().unwrap_or("bind"),
                    m.destination().display()
                ),
            )
        })?;
    }
    let own_dev = mounts
        .iter()
        .any(|m| clean(m.destination()) == Path::new("/dev") && !parse_options(options(m)).bind);
    if own_dev {
        let in_user_namespace = linux
            .and_then(|l| l.namespaces().as_deref())
            .unwrap_or_default()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User);
        populate_dev(&root, in_user_namespace)?;
        for device in linux
            .and_then(|l| l.devices().as_deref())
            .unwrap_or_default()
        {
            create_device(&root, device)?;
        }
    }
    if let Some(linux) = linux {
        let masked = linux.masked_paths().as_deref().unwrap_or_default();
        if !masked.is_empty() {
            let null = host_dev_null()?;
            for path in masked {
                mask(&root, Path::new(path), &null)?;
            }
        }
        for path in linux.readonly_paths().as_deref().unwrap_or_default() {
            make_read_only(&root, Path::new(path))?;
        }
    }
    // A missing working directory is made (root's, 0755), as runc makes
    // it: images often name one they do not ship. Resolved beneath the
    // root, after the mounts, so it lands in a volume mounted there.
    if let Some(process) = spec.process() {
        mkdir_in(&root, process.cwd())?;
    }
    drop(root);

    pivot_into(&rootfs)?;
    if linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .is_some()
    {
        // The propagation asked for applies to the new `/` (runc too).
        mount_at("/", None, None, propagation, "setting rootfsPropagation")?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        remount_read_only("/", MsFlags::MS_BIND)?;
    }
    Ok(())
}

/// The OCI mount options of a mount.
fn options(m: &Mount) -> &[String] {
    m.options().as_deref().unwrap_or_default()
}

/// An OCI mount's options as mount(2) understands them.
#[derive(Debug, PartialEq)]
struct Options {
    flags: MsFlags,
    /// `rprivate`, `rslave`…: applied by a second mount(2) call.
    propagation: Option<MsFlags>,
    bind: bool,
    /// `rro`: read-only down the whole tree (mount_setattr).
    recursive_read_only: bool,
    /// Everything else (`mode=755`, `size=…`) goes to the filesystem.
    data: Vec<String>,
}

fn parse_options(options: &[String]) -> Options {
    let mut parsed = Options {
        flags: MsFlags::empty(),
        propagation: None,
        bind: false,
        recursive_read_only: false,
        data: Vec::new(),
    };
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                parsed.bind = true;
                (MsFlags::MS_BIND, MsFlags::empty())
            }
            "rbind" => {
                parsed.bind = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
            }
            "rro" => {
                parsed.recursive_read_only = true;
                (MsFlags::MS_RDONLY, MsFlags::empty())
            }
            "rrw" => (MsFlags::empty(), MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let kind = match option.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                let recursive = if option.starts_with('r') {
                    MsFlags::MS_REC
                } else {
                    MsFlags::empty()
                };
                parsed.propagation = Some(kind | recursive);
                continue;
            }
            _ => {
                parsed.data.push(option.clone());
                continue;
            }
        };
        parsed.flags = (parsed.flags | set) & !clear;
    }
    parsed
}

fn mount_one(root: &Root, m: &Mount, view: &CgroupView) -> io::Result<()> {
    let options = parse_options(options(m));
    let destination = m.destination();
    let typ = m.typ().as_deref().unwrap_or("bind");
    if options.bind || typ == "bind" {
        return bind(root, m, &options);
    }
    if typ == "cgroup" {
        return match view {
            CgroupView::V1 { hierarchies } => cgroup_v1(root, destination, &options, hierarchies),
            CgroupView::V2 => {
                let target = mkdir_in(root, destination)?;
                let flags = options.flags;
                mount_at(
                    fd_path(&target),
                    Some(Path::new("cgroup2")),
                    Some("cgroup2"),
                    flags,
                    "",
                )
            }
        };
    }
    let target = mkdir_in(root, destination)?;
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let data = options.data.join(",");
    context(
        mount(
            Some(&source),
            fd_path(&target).as_path(),
            Some(typ),
            options.flags,
            Some(data.as_str()).filter(|d| !d.is_empty()),
        ),
        || format!("mount(source {}, data {data:?})", source.display()),
    )?;
    if let Some(propagation) = options.propagation {
        let mounted = resolve(root, destination)?;
        mount_at(
            fd_path(&mounted),
            None,
            None,
            propagation,
            "setting propagation",
        )?;
    }
    Ok(())
}

/// A bind mount of a host path: the destination is created as a dir or an
/// empty file to match the source, then flags, propagation and `rro`.
fn bind(root: &Root, m: &Mount, options: &Options) -> io::Result<()> {
    let destination = m.destination();
    let source = m
        .source()
        .as_deref()
        .ok_or_else(|| invalid("a bind mount without a source".into()))?;
    let is_dir = context(std::fs::metadata(source), || {
        format!("source {}", source.display())
    })?
    .is_dir();
    let target = if is_dir {
        mkdir_in(root, destination)?
    } else {
        file_in(root, destination)?
    };
    let flags = MsFlags::MS_BIND | (options.flags & MsFlags::MS_REC);
    context(
        mount(
            Some(source),
            fd_path(&target).as_path(),
            None::<&str>,
            flags,
            None::<&str>,
        ),
        || format!("bind from {}", source.display()),
    )?;
    let mounted = resolve(root, destination)?;
    let path = fd_path(&mounted);
    // Flags of a bind only take effect on a remount.
    let extra = options.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    if options.recursive_read_only {
        context(
            crate::sys::make_read_only_recursively(mounted.as_fd()),
            || "making it read-only recursively (mount_setattr)".into(),
        )?;
    } else if extra.contains(MsFlags::MS_RDONLY) {
        remount_read_only(&path, MsFlags::MS_BIND | extra)?;
    } else if !extra.is_empty() {
        mount_at(
            &path,
            None,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
            "remounting",
        )?;
    }
    if let Some(propagation) = options.propagation {
        mount_at(&path, None, None, propagation, "setting propagation")?;
    }
    Ok(())
}

/// v1: runc's view: a tmpfs holding a bind of the container's own cgroup
/// dir per hierarchy (plus alias links for co-mounted controllers), all
/// read-only unless the mount is `rw`.
fn cgroup_v1(
    root: &Root,
    destination: &Path,
    options: &Options,
    hierarchies: &[CgroupV1Mount],
) -> io::Result<()> {
    let target = mkdir_in(root, destination)?;
    let tmpfs_flags = options.flags & !MsFlags::MS_RDONLY;
    context(
        mount(
            Some("tmpfs"),
            fd_path(&target).as_path(),
            Some("tmpfs"),
            tmpfs_flags,
            Some("mode=755"),
        ),
        || "tmpfs".into(),
    )?;
    let tmpfs = resolve(root, destination)?;
    for hierarchy in hierarchies {
        let name = Path::new(&hierarchy.name);
        if name.components().count() != 1
            || !matches!(name.components().next(), Some(Component::Normal(_)))
        {
            return Err(invalid(format!(
                "cgroup hierarchy name {:?}",
                hierarchy.name
            )));
        }
        let dir = mkdir_in(root, &destination.join(name))?;
        context(
            mount(
                Some(&hierarchy.host_dir),
                fd_path(&dir).as_path(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            ),
            || format!("binding {}", hierarchy.host_dir.display()),
        )?;
        let bound = resolve(root, &destination.join(name))?;
        let flags = MsFlags::MS_BIND | options.flags;
        if options.flags.contains(MsFlags::MS_RDONLY) {
            remount_read_only(fd_path(&bound), flags)?;
        } else {
            mount_at(
                fd_path(&bound),
                None,
                None,
                flags | MsFlags::MS_REMOUNT,
                "remounting",
            )?;
        }
        for alias in hierarchy.aliases.iter().filter(|a| **a != hierarchy.name) {
            if alias.is_empty() || alias.contains('/') || alias == "." || alias == ".." {
                return Err(invalid(format!("cgroup alias {alias:?}")));
            }
            context(symlinkat(name, tmpfs.as_fd(), alias.as_str()), || {
                format!("linking {alias} -> {}", hierarchy.name)
            })?;
        }
    }
    if options.flags.contains(MsFlags::MS_RDONLY) {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | tmpfs_flags;
        context(
            mount(
                None::<&str>,
                fd_path(&tmpfs).as_path(),
                None::<&str>,
                flags,
                Some("mode=755"),
            ),
            || "remounting the tmpfs read-only".into(),
        )?;
    }
    Ok(())
}

/// The default devices and links in the container's own `/dev` tmpfs. In
/// a user namespace mknod is refused, so the host's nodes are bound onto
/// empty files instead (as runc does).
fn populate_dev(root: &Root, in_user_namespace: bool) -> io::Result<()> {
    let dev = resolve(root, Path::new("/dev"))?;
    let mode = Mode::from_bits_truncate(0o666);
    for &(name, major, minor) in DEVICES {
        if in_user_namespace {
            let source = host_device(name, major, minor)?;
            let target = file_in(root, &Path::new("/dev").join(name))?;
            let source = PathBuf::from(format!("/proc/self/fd/{}", source.as_raw_fd()));
            context(
                mount(
                    Some(&source),
                    fd_path(&target).as_path(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                ),
                || format!("binding the host's /dev/{name}"),
            )?;
            continue;
        }
        context(
            mknodat(
                dev.as_fd(),
                name,
                SFlag::S_IFCHR,
                mode,
                makedev(major, minor),
            ),
            || format!("creating /dev/{name}"),
        )?;
        // Also when a umask other than 0 was in effect.
        context(
            fchmodat(dev.as_fd(), name, mode, FchmodatFlags::NoFollowSymlink),
            || format!("chmod /dev/{name}"),
        )?;
    }
    for &(target, name) in DEV_LINKS {
        match unlinkat(dev.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(error) => return Err(io::Error::other(format!("removing /dev/{name}: {error}"))),
        }
        context(symlinkat(target, dev.as_fd(), name), || {
            format!("linking /dev/{name} -> {target}")
        })?;
    }
    Ok(())
}

/// A `linux.devices` node (a privileged container's host devices), made
/// in the container's own `/dev` tmpfs. One that is already there (the
/// defaults of [`populate_dev`], with the same fixed numbers) is kept.
fn create_device(root: &Root, device: &LinuxDevice) -> io::Result<()> {
    let path = device.path();
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(invalid(format!("device path {}", path.display())));
    };
    if !path.starts_with("/dev") || path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(format!(
            "device path {} is not under /dev",
            path.display()
        )));
    }
    let dir = mkdir_in(root, parent)?;
    match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(_) => return Ok(()),
        Err(nix::errno::Errno::ENOENT) => {}
        Err(error) => return Err(io::Error::other(format!("{}: {error}", path.display()))),
    }
    let kind = match device.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(invalid(format!("device {} of type a", path.display())));
        }
    };
    let number = |n: i64| {
        u64::try_from(n).map_err(|_| invalid(format!("device {} number {n}", path.display())))
    };
    let mode = Mode::from_bits_truncate(device.file_mode().unwrap_or(0o666) as libc::mode_t);
    let dev = makedev(number(device.major())?, number(device.minor())?);
    context(mknodat(dir.as_fd(), name, kind, mode, dev), || {
        format!("creating device {}", path.display())
    })?;
    context(
        fchownat(
            dir.as_fd(),
            name,
            device.uid().map(Uid::from_raw),
            device.gid().map(Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ),
        || format!("chown device {}", path.display()),
    )
}

/// The host's `/dev/null` (this is before pivot_root), opened without
/// following links and checked to be the null device: the source of every
/// masking bind is this fd, never a path looked up again (the 2025 runc
/// masked-path CVEs bound whatever a raced `/dev/null` pointed to, such as
/// a writable /proc file, over the masked path).
fn host_dev_null() -> io::Result<OwnedFd> {
    host_device("null", 1, 3)
}

/// The host's `/dev/<name>`, opened without following links and checked to
/// be the character device `major:minor`.
fn host_device(name: &str, major: u64, minor: u64) -> io::Result<OwnedFd> {
    let path = Path::new("/dev").join(name);
    let fd = context(
        nix::fcntl::open(
            &path,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ),
        || format!("opening the host's {}", path.display()),
    )?;
    let stat = context(fstat(&fd), || format!("fstat {}", path.display()))?;
    let is_char = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    if !is_char || stat.st_rdev != makedev(major, minor) {
        return Err(io::Error::other(format!(
            "the host's {} is not char device {major}:{minor}; refusing to bind it",
            path.display()
        )));
    }
    Ok(fd)
}

/// Hides `path`: `null` bound over a file, an empty read-only tmpfs over a
/// directory. A path the container does not have is skipped. The target is
/// the fd pathrs resolved inside the root (mount(2) on /proc/self/fd/N
/// acts on that very inode); under /proc or /sys it must still be on the
/// container's procfs or sysfs, not on something a racing symlink or
/// another mount put there.
fn mask(root: &Root, path: &Path, null: &OwnedFd) -> io::Result<()> {
    let Some(handle) = resolve_if_exists(root, path)? else {
        return Ok(());
    };
    check_kernel_fs(path, &handle)?;
    let target = fd_path(&handle);
    let is_dir = context(fstat(handle.as_fd()), || {
        format!("masking {}", path.display())
    })?;
    let is_dir = SFlag::from_bits_truncate(is_dir.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    let result = if is_dir {
        mount(
            Some("tmpfs"),
            target.as_path(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        let source = PathBuf::from(format!("/proc/self/fd/{}", null.as_raw_fd()));
        mount(
            Some(&source),
            target.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    context(result, || format!("masking {}", path.display()))
}

/// A masked or read-only path under /proc (/sys) must resolve to a file of
/// procfs (sysfs): those are the kernel interfaces the lists protect.
fn check_kernel_fs(path: &Path, handle: &Handle) -> io::Result<()> {
    let expected = if path.starts_with("/proc") {
        (PROC_SUPER_MAGIC, "procfs")
    } else if path.starts_with("/sys") {
        (SYSFS_MAGIC, "sysfs")
    } else {
        return Ok(());
    };
    let fs = context(fstatfs(handle.as_fd()), || {
        format!("statfs {}", path.display())
    })?;
    if fs.filesystem_type() != expected.0 {
        return Err(io::Error::other(format!(
            "{} resolved to a file outside the container's {}; refusing to mount over it",
            path.display(),
            expected.1
        )));
    }
    Ok(())
}

/// Binds `path` onto itself read-only. A missing one is skipped.
fn make_read_only(root: &Root, path: &Path) -> io::Result<()> {
    let Some(handle) = resolve_if_exists(root, path)? else {
        return Ok(());
    };
    check_kernel_fs(path, &handle)?;
    let target = fd_path(&handle);
    mount_at(
        &target,
        Some(&target),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        &format!("binding {} onto itself", path.display()),
    )?;
    let mounted = resolve(root, path)?;
    remount_read_only(fd_path(&mounted), MsFlags::MS_BIND | MsFlags::MS_REC)
}

/// Remounts the mount at `path` read-only, keeping the flags the kernel
/// locks on it (a remount that drops nosuid/nodev/noexec is refused).
fn remount_read_only(path: impl AsRef<Path>, flags: MsFlags) -> io::Result<()> {
    let path = path.as_ref();
    let stat = context(statvfs(path), || format!("statfs {}", path.display()))?;
    let mut kept = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if stat.flags().contains(fs) {
            kept |= ms;
        }
    }
    let flags = flags | kept | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount_at(path, None, None, flags, "remounting read-only")
}

/// pivot_root into `rootfs` and detach the old root.
pub(crate) fn pivot_into(rootfs: &Path) -> io::Result<()> {
    let old_root = context(File::open("/"), || "opening the old root".into())?;
    context(chdir(rootfs), || format!("chdir {}", rootfs.display()))?;
    // Stacks the old root under the new one: no put_old dir needed.
    context(pivot_root(".", "."), || "pivot_root".into())?;
    // "." is still the new root's own mount here (a lookup of "." crosses
    // no mount): made a slave it would take every mount of the container
    // along, and a BIDIRECTIONAL volume would stop propagating to the
    // host. The old root, stacked on top, is reached through its own fd.
    context(fchdir(&old_root), || "fchdir to the old root".into())?;
    drop(old_root);
    // A slave first, so detaching the old root cannot propagate to the
    // host when `/` was shared.
    mount_at(
        ".",
        None,
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "making the old root a slave",
    )?;
    context(umount2(".", MntFlags::MNT_DETACH), || {
        "detaching the old root".into()
    })?;
    context(chdir("/"), || "chdir /".into())
}

/// mount(2) with a message naming what it was for.
fn mount_at(
    target: impl AsRef<Path>,
    source: Option<&Path>,
    fstype: Option<&str>,
    flags: MsFlags,
    what: &str,
) -> io::Result<()> {
    let target = target.as_ref();
    context(mount(source, target, fstype, flags, None::<&str>), || {
        format!("{what} ({})", target.display())
    })
}

/// The mount point (from mountinfo) of the mount that holds `path`.
fn mount_point_of(path: &Path) -> io::Result<PathBuf> {
    let mounts = runtime::mountinfo::parse(&std::fs::read_to_string("/proc/self/mountinfo")?);
    runtime::mountinfo::holding(&mounts, path)
        .map(|mount| mount.mount_point.clone())
        .ok_or_else(|| io::Error::other(format!("no mount holds {}", path.display())))
}

/// `/proc/self/fd/N` of a handle: mount(2) follows it to the very inode
/// the handle was resolved to inside the root.
fn fd_path(handle: &Handle) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", handle.as_fd().as_raw_fd()))
}

fn resolve(root: &Root, path: &Path) -> io::Result<Handle> {
    root.resolve(path)
        .map_err(|e| pathrs_error(&e, format!("resolving {}", path.display())))
}

fn resolve_if_exists(root: &Root, path: &Path) -> io::Result<Option<Handle>> {
    match root.resolve(path) {
        Ok(handle) => Ok(Some(handle)),
        Err(e)
            if matches!(
                e.kind(),
                pathrs::error::ErrorKind::OsError(Some(libc::ENOENT))
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(pathrs_error(&e, format!("resolving {}", path.display()))),
    }
}

/// The directory `path` inside the root, created (0755) where missing.
fn mkdir_in(root: &Root, path: &Path) -> io::Result<Handle> {
    root.mkdir_all(path, &std::fs::Permissions::from_mode(0o755))
        .map_err(|e| pathrs_error(&e, format!("creating directory {}", path.display())))
}

/// The file `path` inside the root, created empty (0644) where missing.
fn file_in(root: &Root, path: &Path) -> io::Result<Handle> {
    if let Some(handle) = resolve_if_exists(root, path)? {
        return Ok(handle);
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    mkdir_in(root, parent)?;
    let created = root.create_file(
        path,
        OpenFlags::O_CREAT | OpenFlags::O_EXCL | OpenFlags::O_WRONLY,
        &std::fs::Permissions::from_mode(0o644),
    );
    match created {
        Ok(_) => {}
        // Created meanwhile by an earlier mount: fine.
        Err(e)
            if matches!(
                e.kind(),
                pathrs::error::ErrorKind::OsError(Some(libc::EEXIST))
            ) => {}
        Err(e) => {
            return Err(pathrs_error(
                &e,
                format!("creating file {}", path.display()),
            ));
        }
    }
    resolve(root, path)
}

fn pathrs_error(error: &pathrs::error::Error, what: String) -> io::Error {
    let message = format!("{what}: {error}");
    match error.kind() {
        pathrs::error::ErrorKind::OsError(Some(errno)) => {
            io::Error::new(io::Error::from_raw_os_error(errno).kind(), message)
        }
        _ => io::Error::other(message),
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// A destination without `.` components and trailing slashes.
fn clean(path: &Path) -> PathBuf {
    path.components().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Options {
        parse_options(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let parsed = opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(parsed.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(parsed.data, ["mode=755", "size=65536k"]);
        assert_eq!(parsed.propagation, None);
        assert!(!parsed.bind);

        let parsed = opts(&["rbind", "rslave", "ro"]);
        assert!(parsed.bind);
        assert_eq!(
            parsed.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(
            parsed.propagation,
            Some(MsFlags::MS_SLAVE | MsFlags::MS_REC)
        );

        let parsed = opts(&["ro", "rw", "private"]);
        assert_eq!(parsed.flags, MsFlags::empty());
        assert_eq!(parsed.propagation, Some(MsFlags::MS_PRIVATE));

        let parsed = opts(&["rbind", "rprivate", "rro"]);
        assert!(parsed.recursive_read_only);
        assert!(parsed.flags.contains(MsFlags::MS_RDONLY));
    }
}
