//! Locks down a helper process of the monitor that never execs and that a
//! container may see (pause, PID 1 of a pod's shared PID namespace) or
//! that sits in a container's cgroup (the holder). Such a process is a
//! fork of crid-monitor: without this it keeps the host's root, every
//! capability and the monitor's descriptors, and a container process with
//! CAP_SYS_PTRACE in the same PID namespace reaches all of it through
//! `/proc/<pid>/root` or by ptrace.
//!
//! What is left afterwards: an empty, read-only tmpfs as root and cwd in a
//! mount namespace of its own, uid and gid 65535 (the pause image's), no
//! supplementary groups, no capability in any set (bounding, permitted,
//! effective, inheritable, ambient), `no_new_privs`, non-dumpable, a
//! seccomp filter that kills the process on any syscall but the few it
//! names, and no descriptor but those it keeps. Its environment is empty
//! because crid starts crid-monitor with an empty one.

use std::io;
use std::os::fd::RawFd;
use std::path::Path;

use caps::CapSet;
use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

use super::init::{context, pivot_into};
use crate::sys::close_all_fds;

/// The uid and gid a confined helper runs as: the pause image's user.
pub const CONFINED_ID: u32 = 65535;

/// Syscalls every confined helper makes after the filter is loaded: a
/// return from a signal handler, the restart of an interrupted wait, and
/// its end.
const ALWAYS_ALLOWED: [&str; 4] = ["rt_sigreturn", "restart_syscall", "exit", "exit_group"];

/// Confines the calling process (see the module docs). `mount_point` is
/// any existing directory: the empty root is mounted over it, in the new
/// mount namespace only. `keep` are the descriptors it goes on using;
/// `syscalls` what it calls from here on, besides [`ALWAYS_ALLOWED`];
/// `ids` the uid and gid it becomes ([`CONFINED_ID`] unless its user
/// namespace does not map that). On error the process is half confined
/// and must exit.
pub fn confine(
    mount_point: &Path,
    keep: &[RawFd],
    syscalls: &[&str],
    ids: (u32, u32),
) -> io::Result<()> {
    // Built first, while memory may still be allocated freely and a bad
    // name is a clear error rather than a killed process.
    let filter = allow_list(syscalls)?;
    context(close_all_fds(keep), || {
        "closing inherited descriptors".into()
    })?;
    empty_root(mount_point)?;
    drop_privileges(ids)?;
    context(nix::sys::prctl::set_no_new_privs(), || {
        "setting no_new_privs".into()
    })?;
    // setresuid resets it to the system's suid_dumpable; keep it off.
    context(nix::sys::prctl::set_dumpable(false), || {
        "PR_SET_DUMPABLE 0".into()
    })?;
    // What the setup touched is not kept for the pod's life; the filter
    // would refuse the syscalls afterwards.
    crate::sys::release_idle_memory();
    context(filter.load(), || "loading the seccomp filter".into())
}

fn allow_list(syscalls: &[&str]) -> io::Result<ScmpFilterContext> {
    let mut filter = context(ScmpFilterContext::new(ScmpAction::KillProcess), || {
        "creating the seccomp filter".into()
    })?;
    for name in ALWAYS_ALLOWED.iter().chain(syscalls) {
        let syscall = context(ScmpSyscall::from_name(name), || {
            format!("seccomp: syscall {name}")
        })?;
        context(filter.add_rule(ScmpAction::Allow, syscall), || {
            format!("seccomp: allowing {name}")
        })?;
    }
    Ok(filter)
}

/// A mount namespace of this process's own, from which nothing mounted or
/// unmounted propagates back to the host.
pub fn private_mount_namespace() -> io::Result<()> {
    context(unshare(CloneFlags::CLONE_NEWNS), || {
        "unshare(CLONE_NEWNS)".into()
    })?;
    context(
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
        || "making / private".into(),
    )
}

/// A mount namespace of its own whose root is an empty read-only tmpfs:
/// nothing of the host's filesystem is reachable from it any more.
fn empty_root(mount_point: &Path) -> io::Result<()> {
    private_mount_namespace()?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    context(
        mount(
            Some("none"),
            mount_point,
            Some("tmpfs"),
            flags,
            Some("mode=0555,size=4k"),
        ),
        || format!("mounting the empty root on {}", mount_point.display()),
    )?;
    pivot_into(mount_point)
}

/// Every capability set emptied and root given up for the pause user.
fn drop_privileges((uid, gid): (u32, u32)) -> io::Result<()> {
    // The bounding set first: dropping from it needs CAP_SETPCAP.
    context(caps::clear(None, CapSet::Bounding), || {
        "clearing the bounding set".into()
    })?;
    context(caps::clear(None, CapSet::Ambient), || {
        "clearing the ambient set".into()
    })?;
    let id = (Uid::from_raw(uid), Gid::from_raw(gid));
    context(setgroups(&[]), || "setgroups []".into())?;
    context(setresgid(id.1, id.1, id.1), || format!("setresgid {gid}"))?;
    // Leaving uid 0 clears permitted and effective; inheritable stays.
    context(setresuid(id.0, id.0, id.0), || format!("setresuid {uid}"))?;
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        context(caps::clear(None, set), || {
            format!("clearing the {set:?} set")
        })?;
    }
    Ok(())
}
