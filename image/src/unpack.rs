//! Safe layer unpacking.
//!
//! The tar crate only parses; every file system operation is ours. Each
//! entry's parent directory is resolved through a `pathrs::Root` opened on
//! the layer directory with `RESOLVE_NO_SYMLINKS`, so resolution can neither
//! leave the directory nor pass through any symlink (one planted by an
//! earlier entry included). The entry itself is then created relative to that
//! directory fd with a single path component and `O_NOFOLLOW` /
//! `AT_SYMLINK_NOFOLLOW` semantics. Names with `..` or a leading `/` are
//! refused before any of that. Whiteouts become overlayfs whiteouts because a
//! layer directory is an overlay lower dir: `.wh.NAME` is a 0/0 character
//! device `NAME`, `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its dir.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pathrs::flags::ResolverFlags;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

const OPAQUE_MARKER: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const COPY_BUF: usize = 256 * 1024;
/// The longest file name Linux file systems take (ext4, xfs, btrfs,
/// overlayfs' upper dirs).
const NAME_MAX: usize = 255;

/// Why a layer could not be applied.
#[derive(Debug)]
pub(crate) enum UnpackError {
    /// The layer tried to reach outside its directory.
    Unsafe { path: String, reason: String },
    /// A malformed or unsupported entry.
    Bad { path: String, reason: String },
    /// Reading the (decompressed) stream failed: network, decompression or
    /// a broken tar.
    Read(io::Error),
    /// A local file system operation failed.
    Io { path: String, source: io::Error },
}

impl std::fmt::Display for UnpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnpackError::Unsafe { path, reason } => write!(f, "unsafe entry {path:?}: {reason}"),
            UnpackError::Bad { path, reason } => write!(f, "bad entry {path:?}: {reason}"),
            UnpackError::Read(e) => write!(f, "reading layer: {e}"),
            UnpackError::Io { path, source } => write!(f, "writing {path:?}: {source}"),
        }
    }
}

type Result<T, E = UnpackError> = std::result::Result<T, E>;

/// Counts of what was written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub file_bytes: u64,
}

/// Applies the tar stream `reader` to the existing, empty directory `dest`.
/// On error `dest` may hold a partial tree: the caller removes it.
pub(crate) fn unpack_layer<R: Read>(reader: R, dest: &Path) -> Result<UnpackStats> {
    let io_err = |source| UnpackError::Io {
        path: dest.display().to_string(),
        source,
    };
    let root = pathrs::Root::open(dest)
        .map_err(|e| io_err(pathrs_to_io(&e)))?
        .with_resolver_flags(ResolverFlags::NO_SYMLINKS);
    let root_fd = root.as_fd().try_clone_to_owned().map_err(io_err)?;
    let mut u = Unpacker {
        root,
        root_fd: Arc::new(root_fd),
        cache: None,
        dir_times: Vec::new(),
        buf: vec![0; COPY_BUF],
        stats: UnpackStats::default(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(UnpackError::Read)?;
    for entry in entries {
        let mut entry = entry.map_err(UnpackError::Read)?;
        u.entry(&mut entry)?;
        u.stats.entries += 1;
    }
    u.finish_dir_times()?;
    Ok(u.stats)
}

struct Unpacker {
    root: pathrs::Root,
    root_fd: Arc<OwnedFd>,
    /// The last parent directory resolved (tar entries come grouped by
    /// directory); dropped whenever something is removed.
    cache: Option<(PathBuf, Arc<OwnedFd>)>,
    /// Directory mtimes, set at the end because creating children changes them.
    dir_times: Vec<(PathBuf, u64)>,
    buf: Vec<u8>,
    stats: UnpackStats,
}

struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Splits a tar name into plain components; `..` and absolute names are
/// refused. An empty result is the layer root.
fn sanitize(raw: &[u8]) -> std::result::Result<Vec<&OsStr>, String> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path".to_string());
    }
    if raw.contains(&0) {
        return Err("NUL byte in path".to_string());
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path has a '..' component".to_string()),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn pathrs_to_io(e: &pathrs::error::Error) -> io::Error {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(Some(n)) => io::Error::from_raw_os_error(n),
        _ => io::Error::other(e.to_string()),
    }
}

fn errno_of(e: &pathrs::error::Error) -> Option<i32> {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(n) => n,
        pathrs::error::ErrorKind::SafetyViolation => Some(libc_exdev()),
        _ => None,
    }
}

fn libc_exdev() -> i32 {
    Errno::XDEV.raw_os_error()
}

fn ts(secs: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

impl Unpacker {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let shown = lossy(&raw);
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let comps = sanitize(&raw).map_err(|reason| UnpackError::Unsafe {
            path: shown.clone(),
            reason,
        })?;
        if let Some(long) = comps.iter().find(|c| c.len() > NAME_MAX) {
            return Err(UnpackError::Bad {
                path: shown.clone(),
                reason: format!(
                    "a name of {} bytes; no file system here takes more than {NAME_MAX}",
                    long.len()
                ),
            });
        }
        let Some((name, parent_comps)) = comps.split_last() else {
            // The layer root itself ("./"): its attributes are not ours to change.
            return Ok(());
        };
        let name: &OsStr = name;
        if parent_comps
            .iter()
            .any(|c| c.as_bytes().starts_with(WHITEOUT_META_PREFIX.as_bytes()))
        {
            // Inside AUFS metadata (.wh..wh.plnk/...): not content.
            return Ok(());
        }
        let parent: PathBuf = parent_comps.iter().collect();
        let rel = parent.join(name);
        let name_bytes = name.as_bytes();

        if let Some(target) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&shown, &parent, name_bytes, target);
        }

        let meta = self.meta(entry, &shown)?;
        let pfd = self.parent(&parent, &shown, true)?;
        let ioe = |source: io::Error| UnpackError::Io {
            path: shown.clone(),
            source,
        };
        match kind {
            EntryType::Directory => {
                let kept = self.clear(&pfd, &rel, name, true, &shown)?;
                if !kept {
                    rfs::mkdirat(&*pfd, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| ioe(e.into()))?;
                }
                let dfd = rfs::openat(
                    &*pfd,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| ioe(e.into()))?;
                rfs::fchown(&dfd, Some(uid(meta.uid)), Some(gid(meta.gid)))
                    .map_err(|e| ioe(e.into()))?;
                rfs::fchmod(&dfd, Mode::from_raw_mode(meta.mode)).map_err(|e| ioe(e.into()))?;
                self.set_xattrs_fd(&dfd, &meta, &shown)?;
                self.dir_times.push((rel, meta.mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.clear(&pfd, &rel, name, false, &shown)?;
                let fd = rfs::openat(
                    &*pfd,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| ioe(e.into()))?;
                let mut file = std::fs::File::from(fd);
                loop {
                    let n = match entry.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(UnpackError::Read(e)),
                    };
                    file.write_all(&self.buf[..n]).map_err(ioe)?;
                    self.stats.file_bytes += n as u64;
                }
                rfs::fchown(&file, Some(uid(meta.uid)), Some(gid(meta.gid)))
                    .map_err(|e| ioe(e.into()))?;
                rfs::fchmod(&file, Mode::from_raw_mode(meta.mode)).map_err(|e| ioe(e.into()))?;
                self.set_xattrs_fd(&file, &meta, &shown)?;
                rfs::futimens(&file, &ts(meta.mtime)).map_err(|e| ioe(e.into()))?;
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| UnpackError::Bad {
                    path: shown.clone(),
                    reason: "symlink without a target".to_string(),
                })?;
                // A PAX linkpath or GNU long link can be empty; symlinkat
                // refuses that with ENOENT, which would read as our failure.
                if target.is_empty() {
                    return Err(UnpackError::Bad {
                        path: shown.clone(),
                        reason: "symlink with an empty target".to_string(),
                    });
                }
                // The target is only data: it is never followed while unpacking.
                let target = OsStr::from_bytes(&target).to_owned();
                self.clear(&pfd, &rel, name, false, &shown)?;
                rfs::symlinkat(&*target, &*pfd, name).map_err(|e| ioe(e.into()))?;
                self.finish_special(&pfd, name, &meta, &shown, true)?;
            }
            EntryType::Link => {
                let raw_target = entry.link_name_bytes().ok_or_else(|| UnpackError::Bad {
                    path: shown.clone(),
                    reason: "hard link without a target".to_string(),
                })?;
                let shown_target = lossy(&raw_target);
                let tcomps = sanitize(&raw_target).map_err(|reason| UnpackError::Unsafe {
                    path: shown.clone(),
                    reason: format!("hard link target {shown_target:?}: {reason}"),
                })?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(UnpackError::Bad {
                        path: shown.clone(),
                        reason: "hard link to the layer root".to_string(),
                    });
                };
                if tcomps == comps {
                    return Err(UnpackError::Bad {
                        path: shown.clone(),
                        reason: "hard link to itself".to_string(),
                    });
                }
                let tparent: PathBuf = tparent.iter().collect();
                let missing = || UnpackError::Bad {
                    path: shown.clone(),
                    reason: format!(
                        "hard link target {shown_target:?} does not exist in this layer"
                    ),
                };
                let tfd = match self.parent(&tparent, &shown, false) {
                    Err(UnpackError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        return Err(missing());
                    }
                    tfd => tfd?,
                };
                let tname: &OsStr = tname;
                match rfs::statat(&*tfd, tname, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        return Err(UnpackError::Bad {
                            path: shown.clone(),
                            reason: format!("hard link target {shown_target:?} is a directory"),
                        });
                    }
                    Ok(_) => {}
                    Err(Errno::NOENT) => return Err(missing()),
                    Err(e) => return Err(ioe(e.into())),
                }
                self.clear(&pfd, &rel, name, false, &shown)?;
                rfs::linkat(&*tfd, tname, &*pfd, name, AtFlags::empty())
                    .map_err(|e| ioe(e.into()))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (ft, dev) = match kind {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let h = entry.header();
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rfs::makedev(major, minor))
                    }
                };
                self.clear(&pfd, &rel, name, false, &shown)?;
                rfs::mknodat(&*pfd, name, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| ioe(e.into()))?;
                self.finish_special(&pfd, name, &meta, &shown, false)?;
            }
            other => {
                return Err(UnpackError::Bad {
                    path: shown,
                    reason: format!("unsupported tar entry type {other:?}"),
                });
            }
        }
        Ok(())
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Meta> {
        let bad = |what: &str, e: &dyn std::fmt::Display| UnpackError::Bad {
            path: shown.to_string(),
            reason: format!("bad {what}: {e}"),
        };
        let h = entry.header();
        let id = |v: u64, what: &str| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v != u32::MAX)
                .ok_or_else(|| bad(what, &v))
        };
        let uid = id(h.uid().map_err(|e| bad("uid", &e))?, "uid")?;
        let gid = id(h.gid().map_err(|e| bad("gid", &e))?, "gid")?;
        let mode = h.mode().map_err(|e| bad("mode", &e))? & 0o7777;
        let mtime = h.mtime().map_err(|e| bad("mtime", &e))?;
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(UnpackError::Read)? {
            for ext in exts {
                let ext = ext.map_err(UnpackError::Read)?;
                let Ok(key) = ext.key() else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            mtime,
            xattrs,
        })
    }

    /// Returns an O_PATH fd of directory `parent` (relative to the layer
    /// root), creating it (0755) if `create` and it is missing.
    fn parent(&mut self, parent: &Path, shown: &str, create: bool) -> Result<Arc<OwnedFd>> {
        if parent.as_os_str().is_empty() {
            return Ok(self.root_fd.clone());
        }
        if let Some((p, fd)) = &self.cache
            && p == parent
        {
            return Ok(fd.clone());
        }
        let handle = match self.root.resolve(parent) {
            Ok(h) => h,
            Err(e) if create && errno_of(&e) == Some(Errno::NOENT.raw_os_error()) => self
                .root
                .mkdir_all(parent, &std::fs::Permissions::from_mode(0o755))
                .map_err(|e| self.diagnose(parent, shown, &e))?,
            Err(e) => return Err(self.diagnose(parent, shown, &e)),
        };
        let fd = OwnedFd::from(handle);
        let st = rfs::fstat(&fd).map_err(|e| UnpackError::Io {
            path: shown.to_string(),
            source: e.into(),
        })?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(UnpackError::Bad {
                path: shown.to_string(),
                reason: format!("parent {:?} is not a directory", parent.display()),
            });
        }
        let fd = Arc::new(fd);
        self.cache = Some((parent.to_path_buf(), fd.clone()));
        Ok(fd)
    }

    /// Explains why resolving `parent` failed: walks it one component at a
    /// time without following anything.
    fn diagnose(&self, parent: &Path, shown: &str, err: &pathrs::error::Error) -> UnpackError {
        let mut cur: Arc<OwnedFd> = self.root_fd.clone();
        let mut so_far = PathBuf::new();
        for comp in parent.components() {
            let comp = comp.as_os_str();
            so_far.push(comp);
            match rfs::statat(&*cur, comp, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Symlink => {
                        let target = rfs::readlinkat(&*cur, comp, Vec::new())
                            .map(|t| lossy(t.as_bytes()))
                            .unwrap_or_default();
                        return UnpackError::Unsafe {
                            path: shown.to_string(),
                            reason: format!(
                                "goes through symlink {:?} (-> {target:?}); entries may not be written through symlinks",
                                so_far.display()
                            ),
                        };
                    }
                    FileType::Directory => {
                        match rfs::openat(
                            &*cur,
                            comp,
                            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        ) {
                            Ok(fd) => cur = Arc::new(fd),
                            Err(_) => break,
                        }
                    }
                    _ => {
                        return UnpackError::Bad {
                            path: shown.to_string(),
                            reason: format!("parent {:?} is not a directory", so_far.display()),
                        };
                    }
                },
                Err(_) => break,
            }
        }
        if errno_of(err) == Some(Errno::LOOP.raw_os_error()) || errno_of(err) == Some(libc_exdev())
        {
            return UnpackError::Unsafe {
                path: shown.to_string(),
                reason: format!(
                    "resolving {:?} would leave the layer: {err}",
                    parent.display()
                ),
            };
        }
        UnpackError::Io {
            path: shown.to_string(),
            source: pathrs_to_io(err),
        }
    }

    /// Removes whatever is at `name` in `pfd`, unless it is a directory and
    /// `keep_dir` (a directory entry over an existing directory only updates
    /// its attributes). Returns whether a directory was kept.
    fn clear(
        &mut self,
        pfd: &OwnedFd,
        rel: &Path,
        name: &OsStr,
        keep_dir: bool,
        shown: &str,
    ) -> Result<bool> {
        let ioe = |source: io::Error| UnpackError::Io {
            path: shown.to_string(),
            source,
        };
        match rfs::statat(pfd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(ioe(e.into())),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                if keep_dir {
                    return Ok(true);
                }
                self.cache = None;
                self.root
                    .remove_all(rel)
                    .map_err(|e| ioe(pathrs_to_io(&e)))?;
                Ok(false)
            }
            Ok(_) => {
                rfs::unlinkat(pfd, name, AtFlags::empty()).map_err(|e| ioe(e.into()))?;
                Ok(false)
            }
        }
    }

    fn whiteout(&mut self, shown: &str, parent: &Path, name: &[u8], target: &[u8]) -> Result<()> {
        let ioe = |source: io::Error| UnpackError::Io {
            path: shown.to_string(),
            source,
        };
        if name == OPAQUE_MARKER.as_bytes() {
            let dfd = self.parent(parent, shown, true)?;
            let dir = rfs::openat(
                &*dfd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| ioe(e.into()))?;
            rfs::fsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(|e| ioe(e.into()))?;
            return Ok(());
        }
        if name.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
            // Other AUFS metadata (.wh..wh.plnk, ...): not content.
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(UnpackError::Unsafe {
                path: shown.to_string(),
                reason: "whiteout of an invalid name".to_string(),
            });
        }
        let target = OsStr::from_bytes(target);
        let pfd = self.parent(parent, shown, true)?;
        self.clear(&pfd, &parent.join(target), target, false, shown)?;
        rfs::mknodat(
            &*pfd,
            target,
            FileType::CharacterDevice,
            Mode::empty(),
            rfs::makedev(0, 0),
        )
        .map_err(|e| ioe(e.into()))?;
        Ok(())
    }

    /// Ownership, mode, xattrs and mtime of a just-created symlink, device or
    /// fifo `name` in `pfd`.
    fn finish_special(
        &self,
        pfd: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        shown: &str,
        symlink: bool,
    ) -> Result<()> {
        let ioe = |source: io::Error| UnpackError::Io {
            path: shown.to_string(),
            source,
        };
        rfs::chownat(
            pfd,
            name,
            Some(uid(meta.uid)),
            Some(gid(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| ioe(e.into()))?;
        if !symlink {
            // mknod applied the umask; the inode is ours and not a symlink.
            rfs::chmodat(pfd, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(|e| ioe(e.into()))?;
        }
        if !meta.xattrs.is_empty() {
            // There is no fsetxattr for an inode we cannot open; go through
            // the directory fd's magic link so the path cannot be redirected.
            let path = PathBuf::from(format!("/proc/self/fd/{}", fd_num(pfd))).join(name);
            for (k, v) in &meta.xattrs {
                if skip_xattr(k) {
                    continue;
                }
                match rfs::lsetxattr(&path, k.as_str(), v, XattrFlags::empty()) {
                    Ok(()) => {}
                    Err(Errno::NOTSUP | Errno::PERM) => {
                        tracing::debug!(
                            entry = shown,
                            xattr = k.as_str(),
                            "xattr not supported here, skipped"
                        );
                    }
                    Err(e) => return Err(ioe(e.into())),
                }
            }
        }
        rfs::utimensat(pfd, name, &ts(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| ioe(e.into()))?;
        Ok(())
    }

    fn set_xattrs_fd(&self, fd: impl AsFd, meta: &Meta, shown: &str) -> Result<()> {
        for (k, v) in &meta.xattrs {
            if skip_xattr(k) {
                continue;
            }
            match rfs::fsetxattr(&fd, k.as_str(), v, XattrFlags::empty()) {
                Ok(()) => {}
                Err(Errno::NOTSUP) => {
                    tracing::debug!(
                        entry = shown,
                        xattr = k.as_str(),
                        "xattr not supported here, skipped"
                    );
                }
                // A name or value no file system takes (a malformed
                // security.capability, an oversized value): the layer's fault.
                Err(e @ (Errno::INVAL | Errno::RANGE | Errno::TOOBIG)) => {
                    return Err(UnpackError::Bad {
                        path: shown.to_string(),
                        reason: format!("xattr {k:?} refused: {e}"),
                    });
                }
                Err(e) => {
                    return Err(UnpackError::Io {
                        path: format!("{shown} (xattr {k})"),
                        source: e.into(),
                    });
                }
            }
        }
        Ok(())
    }

    fn finish_dir_times(&mut self) -> Result<()> {
        let times = std::mem::take(&mut self.dir_times);
        // Deepest (latest) first, so setting a child does not disturb its parent.
        for (rel, mtime) in times.iter().rev() {
            let shown = rel.display().to_string();
            let (Some(name), Some(parent)) = (rel.file_name(), rel.parent()) else {
                continue;
            };
            let pfd = match self.parent(parent, &shown, false) {
                Ok(fd) => fd,
                // Removed or replaced by a later entry: nothing to do.
                Err(_) => continue,
            };
            match rfs::statat(&*pfd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    rfs::utimensat(&*pfd, name, &ts(*mtime), AtFlags::SYMLINK_NOFOLLOW).map_err(
                        |e| UnpackError::Io {
                            path: shown.clone(),
                            source: e.into(),
                        },
                    )?;
                }
                _ => continue,
            }
        }
        Ok(())
    }
}

/// overlayfs interprets `trusted.overlay.*` itself; a layer must not set
/// them (only our own opaque marker does).
fn skip_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.")
}

fn uid(v: u32) -> rfs::Uid {
    rfs::Uid::from_raw(v)
}

fn gid(v: u32) -> rfs::Gid {
    rfs::Gid::from_raw(v)
}

fn fd_num(fd: &OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}
