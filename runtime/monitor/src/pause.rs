//! The built-in pause: a fork of the monitor that never execs, so it costs
//! only the pages it dirties. It creates the pod's namespaces, applies the
//! pod's hostname and namespaced sysctls inside them, and then waits for
//! signals; as PID 1 of a pod PID namespace it reaps zombies. Before it
//! waits it is confined: a container sharing its PID namespace finds
//! nothing of the host or of crid in it.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use proto::monitor::MonitorConfig;

use super::confine::{CONFINED_ID, confine};
use crate::report::{Reporting, SysctlRefused, fork_reporting, refused_sysctl};
use crate::sys::{Forked, close_inherited_fds, exit_child, fork_single_threaded};

/// What pause calls once confined: sigwait, waitpid, and the close of its
/// report pipe (std checks a descriptor with fcntl before it closes it).
const PAUSE_SYSCALLS: [&str; 4] = ["rt_sigtimedwait", "wait4", "close", "fcntl"];

/// Starts pause and returns its pid once its namespaces are set up and it
/// is confined (see [`confine`]); its empty root is mounted over
/// `pod_dir`, in its own mount namespace only.
pub fn start(config: &MonitorConfig, pod_dir: &Path) -> io::Result<Pid> {
    // Made first: the pod's other namespaces are made inside it.
    let user_namespace = config
        .user_namespace
        .as_ref()
        .map(crate::userns::create)
        .transpose()
        .map_err(|error| io::Error::other(format!("pause: the pod's user namespace: {error}")))?;
    match fork_reporting(config.namespaces.pid)? {
        Reporting::Child(mut report) => {
            let mut keep = vec![report.raw_fd()];
            keep.extend(user_namespace.as_ref().map(AsRawFd::as_raw_fd));
            let kept = close_inherited_fds(&keep);
            let joined = kept.and_then(|()| match &user_namespace {
                Some(namespace) => crate::userns::join(namespace.as_fd()),
                None => Ok(()),
            });
            match joined.and_then(|()| enter_namespaces(config)) {
                Ok(Forked::Child) => {
                    // The pod's PID 1 (or pause in shared host PID):
                    // confined, it reports done by closing the pipe, then
                    // waits forever.
                    let signals = waited_signals();
                    let ready = block(&signals).and_then(|()| {
                        confine(
                            pod_dir,
                            &[report.raw_fd()],
                            &PAUSE_SYSCALLS,
                            confined_ids(config),
                        )
                    });
                    match ready {
                        Ok(()) => {
                            drop(report);
                            run(&signals)
                        }
                        Err(error) => report.fail(&error),
                    }
                }
                // The intermediate of a new PID namespace: its child is
                // pause; it tells the monitor which pid that is.
                Ok(Forked::Parent(pause)) => report.intermediate_done(pause),
                Err(error) => report.fail(&error),
            }
        }
        // A failed pause in a new PID namespace exits on its own; the
        // monitor, its sub-reaper, reaps it. A refused sysctl keeps its
        // type (and key) for crid.
        Reporting::Parent(spawned) => spawned.until_closed().map_err(|error| {
            if refused_sysctl(&error).is_some() {
                error
            } else {
                io::Error::other(format!("pause: {error}"))
            }
        }),
    }
}

/// The ids pause runs as: the pause image's (65535), or in a pod user
/// namespace whose ranges are shorter, the last id each maps.
fn confined_ids(config: &MonitorConfig) -> (u32, u32) {
    let last = |length: u32| CONFINED_ID.min(length.saturating_sub(1));
    match &config.user_namespace {
        Some(mappings) => (last(mappings.uids.length), last(mappings.gids.length)),
        None => (CONFINED_ID, CONFINED_ID),
    }
}

/// In the forked child: unshare the pod's namespaces, set hostname and
/// sysctls. With a new PID namespace the process that unshares is not in it,
/// so it forks once more: that child is PID 1 there and becomes pause.
fn enter_namespaces(config: &MonitorConfig) -> io::Result<Forked> {
    let mut flags = CloneFlags::empty();
    let ns = config.namespaces;
    for (wanted, flag) in [
        (ns.net, CloneFlags::CLONE_NEWNET),
        (ns.ipc, CloneFlags::CLONE_NEWIPC),
        (ns.uts, CloneFlags::CLONE_NEWUTS),
        (ns.pid, CloneFlags::CLONE_NEWPID),
    ] {
        if wanted {
            flags |= flag;
        }
    }
    unshare(flags).map_err(|e| io::Error::other(format!("unshare({flags:?}): {e}")))?;
    if ns.net {
        super::loopback::bring_up()
            .map_err(|e| io::Error::other(format!("bringing lo up: {e}")))?;
    }
    if let Some(hostname) = config.hostname.as_deref().filter(|_| ns.uts) {
        nix::unistd::sethostname(hostname)
            .map_err(|e| io::Error::other(format!("sethostname {hostname:?}: {e}")))?;
    }
    for (key, value) in &config.sysctls {
        // /proc/sys/net and the IPC sysctls are those of the writer's
        // namespaces, which are now the pod's.
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| {
            io::Error::other(SysctlRefused {
                key: key.clone(),
                message: format!(
                    "linux.sysctls[{key}]: the pod's namespaces refuse {value:?}: {e}"
                ),
            })
        })?;
    }
    if ns.pid {
        fork_single_threaded()
    } else {
        Ok(Forked::Child)
    }
}

fn waited_signals() -> SigSet {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    signals
}

/// Blocked, so that sigwait takes them; named "pause" for ps. Both before
/// the seccomp filter, which allows neither.
fn block(signals: &SigSet) -> io::Result<()> {
    let name: &CStr = c"pause";
    let _ = nix::sys::prctl::set_name(name);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(signals), None).map_err(io::Error::from)
}

/// Pause proper: sleeps in sigwait. SIGTERM/SIGINT end it; SIGCHLD reaps
/// (only PID 1 of a pod PID namespace gets orphans to reap). Only
/// [`PAUSE_SYSCALLS`] may be made here.
fn run(signals: &SigSet) -> ! {
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
                    waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG))
                {}
            }
            Ok(_) => exit_child(0),
            Err(_) => {}
        }
    }
}
