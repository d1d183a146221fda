//! A pod's own user namespace (CRI `userns_options` in mode POD).
//!
//! A user namespace's id maps are written from outside it, by a process
//! privileged over its parent namespace. So the monitor forks a short-lived
//! child that unshares a new user namespace and waits; the monitor writes
//! its `uid_map` and `gid_map`, keeps a descriptor of the namespace and
//! lets the child exit. Pause then enters the namespace first and makes the
//! pod's other namespaces inside it (so they belong to it), and each
//! container and exec of the pod enters it before its other namespaces.
//!
//! `setgroups` stays allowed: the maps are written by a process with
//! CAP_SETGID over the parent namespace, so the kernel does not need it
//! denied, and a container's init must set its supplementary groups.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{Gid, Pid, Uid, pipe2, setgroups, setresgid, setresuid};
use proto::monitor::{IdMapping, UserNamespaceMappings};
use runtime::container::ContainerDirs;
use runtime::spec::PodUserNamespace;

use crate::sys::{Forked, exit_child, fork_single_threaded};

/// Makes a new user namespace with `mappings` and returns a descriptor
/// of it. No process of it is left when this returns.
pub fn create(mappings: &UserNamespaceMappings) -> io::Result<OwnedFd> {
    let (ready_read, ready_write) = pipe2(OFlag::O_CLOEXEC)?;
    let (done_read, done_write) = pipe2(OFlag::O_CLOEXEC)?;
    match fork_single_threaded()? {
        Forked::Child => {
            drop((ready_read, done_write));
            let answer: &[u8] = match unshare(CloneFlags::CLONE_NEWUSER) {
                Ok(()) => b"u",
                Err(_) => b"e",
            };
            let _ = File::from(ready_write).write_all(answer);
            // Returns at EOF: the monitor has what it needs.
            let _ = File::from(done_read).read(&mut [0u8; 1]);
            exit_child(0)
        }
        Forked::Parent(child) => {
            drop((ready_write, done_read));
            let made = map_child(child, mappings, ready_read);
            if made.is_err() {
                let _ = kill(child, Signal::SIGKILL);
            }
            drop(done_write);
            let _ = waitpid(child, None);
            made
        }
    }
}

fn map_child(child: Pid, mappings: &UserNamespaceMappings, ready: OwnedFd) -> io::Result<OwnedFd> {
    let mut answer = [0u8; 1];
    match File::from(ready).read(&mut answer) {
        Ok(1) if answer == *b"u" => {}
        Ok(1) => return Err(io::Error::other("unshare(CLONE_NEWUSER) failed")),
        Ok(_) => return Err(io::Error::other("the user namespace child exited")),
        Err(error) => return Err(error),
    }
    for (file, mapping) in [("uid_map", mappings.uids), ("gid_map", mappings.gids)] {
        let path = format!("/proc/{child}/{file}");
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut map| map.write_all(mapping.map_line().as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("writing {path}: {e}")))?;
    }
    let path = format!("/proc/{child}/ns/user");
    let namespace =
        File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("opening {path}: {e}")))?;
    Ok(namespace.into())
}

/// Enters the user namespace `namespace` and becomes its root (uid and
/// gid 0 inside, no supplementary groups), as runc's init does: a process
/// that only joined keeps the host's ids, which the namespace does not map,
/// and anything it created would belong to the host's root.
pub fn join(namespace: BorrowedFd<'_>) -> io::Result<()> {
    setns(namespace.as_fd(), CloneFlags::CLONE_NEWUSER)
        .map_err(|e| io::Error::other(format!("joining the pod's user namespace: {e}")))?;
    let root = (Uid::from_raw(0), Gid::from_raw(0));
    setgroups(&[])
        .and_then(|()| setresgid(root.1, root.1, root.1))
        .and_then(|()| setresuid(root.0, root.0, root.0))
        .map_err(|e| io::Error::other(format!("becoming root in the pod's user namespace: {e}")))
}

/// Tries, in `scratch` (a dir of its own on the filesystem of crid's
/// layers), what a container's create does in a pod user namespace: an
/// overlay over a layer idmapped through a new user namespace, through the
/// very code crid uses. The mount is made in a mount namespace of this
/// process's own, so it goes when the probe exits.
pub fn probe_idmapped_layers(scratch: &Path) -> io::Result<()> {
    // One id is enough to say whether the kernel and filesystem take it.
    let nobody = IdMapping {
        container_id: 0,
        host_id: 65534,
        length: 1,
    };
    let mappings = UserNamespaceMappings {
        uids: nobody,
        gids: nobody,
    };
    let namespace = create(&mappings)?;
    crate::confine::private_mount_namespace()?;
    let layer = scratch.join("layer");
    std::fs::create_dir_all(&layer)?;
    let user = PodUserNamespace {
        path: PathBuf::from(format!("/proc/self/fd/{}", namespace.as_raw_fd())),
        mappings,
    };
    ContainerDirs::new(scratch, scratch, "probe")
        .mount_rootfs(&[layer], Some(&user))
        .map_err(|e| io::Error::other(e.to_string()))
}
