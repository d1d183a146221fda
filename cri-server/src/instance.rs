//! One crid per root, state dir and socket: directory locks that name their
//! holder, and a CRI socket that replaces a stale one but never a live one.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

const LOCK_FILE: &str = "crid.lock";
/// The CRI socket is for root (and a group root chooses) only.
const SOCKET_MODE: u32 = 0o660;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("{dir} is in use by another crid ({holder}); stop it first")]
    DirInUse { dir: PathBuf, holder: String },
    #[error("socket {path} is in use by {holder}; stop it or choose another --listen")]
    SocketInUse { path: PathBuf, holder: String },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstanceError {
    let path = path.to_path_buf();
    move |source| InstanceError::Io { what, path, source }
}

/// Creates `dir` (and parents) with `mode` if missing.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), InstanceError> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io_error("cannot create directory", dir))
}

/// An exclusive lock on a crid directory, held for the daemon's lifetime; the
/// kernel drops it when the process dies, so a crash never leaves it stale.
pub struct DirLock {
    _lock: Flock<File>,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, InstanceError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error("cannot open lock file", &path))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                // Best effort: the holder may be between lock and write.
                let _ = file.read_to_string(&mut pid);
                let holder = describe_pid(pid.trim().parse().ok());
                return Err(InstanceError::DirInUse {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err((_, errno)) => return Err(io_error("cannot lock", &path)(errno.into())),
        };
        let write_pid = |file: &mut File| -> io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(format!("{}\n", std::process::id()).as_bytes())
        };
        write_pid(&mut lock).map_err(io_error("cannot write lock file", &path))?;
        Ok(DirLock { _lock: lock })
    }
}

fn describe_pid(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => match fs::read_to_string(format!("/proc/{pid}/comm")) {
            Ok(comm) => format!("pid {pid} ({})", comm.trim()),
            Err(_) => format!("pid {pid}"),
        },
        None => "unknown pid".to_string(),
    }
}

/// The bound CRI socket. `remove` deletes the socket file only if it is still
/// the one this process bound.
pub struct BoundSocket {
    pub listener: UnixListener,
    path: PathBuf,
    inode: (u64, u64),
}

impl BoundSocket {
    /// Binds `path` with mode 0660. A stale socket (nobody accepts on it) is
    /// replaced; a live one is refused, naming the process that holds it.
    pub fn bind(path: &Path) -> Result<BoundSocket, InstanceError> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        ensure_dir(parent, 0o711)?;
        // Serialise check-then-bind against another crid starting at the same
        // moment on the same socket, so neither removes the other's socket.
        let parent_dir = File::open(parent).map_err(io_error("cannot open", parent))?;
        let _guard = Flock::lock(parent_dir, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_error("cannot lock", parent)(errno.into()))?;

        match fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(InstanceError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => {
                    let holder =
                        socket_holder(path).unwrap_or_else(|| "another process".to_string());
                    return Err(InstanceError::SocketInUse {
                        path: path.to_path_buf(),
                        holder,
                    });
                }
                Err(_) => {
                    tracing::info!(path = %path.display(), "replacing stale socket");
                    fs::remove_file(path).map_err(io_error("cannot remove stale socket", path))?;
                }
            },
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => return Err(io_error("cannot inspect", path)(error)),
        }

        let listener = UnixListener::bind(path).map_err(io_error("cannot bind", path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(io_error("cannot set mode of", path))?;
        listener
            .set_nonblocking(true)
            .map_err(io_error("cannot configure", path))?;
        let meta = fs::metadata(path).map_err(io_error("cannot inspect", path))?;
        Ok(BoundSocket {
            listener,
            path: path.to_path_buf(),
            inode: (meta.dev(), meta.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file if it is still ours (not replaced meanwhile).
    pub fn remove_file(&self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.inode);
        if ours && let Err(error) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove socket");
        }
    }
}

/// Finds the process listening on the unix socket bound at `path`, from
/// /proc/net/unix (socket inode) and /proc/*/fd (who has that inode open).
fn socket_holder(path: &Path) -> Option<String> {
    let table = fs::read_to_string("/proc/net/unix").ok()?;
    let path = path.to_str()?;
    // Accepted connections carry the listener's path too: only the listening
    // socket has __SO_ACCEPTCON in its flags.
    const ACCEPTING: u32 = 0x10000;
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path
        let listening = fields
            .get(3)
            .and_then(|flags| u32::from_str_radix(flags, 16).ok())
            .is_some_and(|f| f & ACCEPTING != 0);
        (fields.len() == 8 && fields[7] == path && listening).then(|| fields[6].to_string())
    })?;
    let target = format!("socket:[{inode}]");
    for process in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let holds_it = fds.flatten().any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str())
        });
        if holds_it {
            return Some(describe_pid(Some(pid)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_dir_names_its_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = DirLock::acquire(dir.path()).expect("first lock");
        let error = DirLock::acquire(dir.path())
            .err()
            .expect("second lock refused");
        let message = error.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
    }

    #[test]
    fn a_lock_is_free_again_after_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(DirLock::acquire(dir.path()).expect("first lock"));
        DirLock::acquire(dir.path()).expect("lock again");
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("crid.sock");
        drop(UnixListener::bind(&path).expect("stale socket"));
        let bound = BoundSocket::bind(&path).expect("stale replaced");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);

        let error = BoundSocket::bind(&path).err().expect("live socket refused");
        let message = error.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );

        bound.remove_file();
        assert!(!path.exists());
    }

    #[test]
    fn a_regular_file_is_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("crid.sock");
        fs::write(&path, "data").expect("write");
        assert!(matches!(
            BoundSocket::bind(&path),
            Err(InstanceError::NotASocket { .. })
        ));
        assert_eq!(fs::read_to_string(&path).expect("read"), "data");
    }

    #[test]
    fn remove_leaves_a_socket_that_replaced_ours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("crid.sock");
        let bound = BoundSocket::bind(&path).expect("bind");
        fs::remove_file(&path).expect("remove");
        let _other = UnixListener::bind(&path).expect("other socket");
        bound.remove_file();
        assert!(path.exists(), "removed someone else's socket");
    }
}
