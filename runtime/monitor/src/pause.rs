//! The built-in pause: a fork of the monitor that never execs, so it costs
//! only the pages it dirties. It creates the pod's namespaces, applies the
//! pod's hostname and namespaced sysctls inside them, and then waits for
//! signals; as PID 1 of a pod PID namespace it reaps zombies. Before it
//! waits it is confined: a container sharing its PID namespace finds
//! nothing of the host or of crid in it.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use proto::monitor::MonitorConfig;

use super::confine::confine;
use crate::sys::{Forked, close_inherited_fds, exit_child, fork_single_threaded};

/// What pause calls once confined: sigwait, waitpid, and the close of its
/// report pipe (std checks a descriptor with fcntl before it closes it).
const PAUSE_SYSCALLS: [&str; 4] = ["rt_sigtimedwait", "wait4", "close", "fcntl"];

/// Starts pause and returns its pid once its namespaces are set up and it
/// is confined (see [`confine`]); its empty root is mounted over
/// `pod_dir`, in its own mount namespace only.
pub fn start(config: &MonitorConfig, pod_dir: &Path) -> io::Result<Pid> {
    let (report_read, report_write) = nix::unistd::pipe()?;
    let child = match fork_single_threaded()? {
        Forked::Child => {
            drop(report_read);
            let kept = close_inherited_fds(&[report_write.as_raw_fd()]);
            let mut report = File::from(report_write);
            match kept.and_then(|()| enter_namespaces(config)) {
                Ok(Forked::Child) => {
                    // The pod's PID 1 (or pause in shared host PID):
                    // confined, it reports done by closing the pipe, then
                    // waits forever.
                    let signals = waited_signals();
                    let ready = block(&signals)
                        .and_then(|()| confine(pod_dir, &[report.as_raw_fd()], &PAUSE_SYSCALLS));
                    match ready {
                        Ok(()) => {
                            drop(report);
                            run(&signals)
                        }
                        Err(error) => {
                            let _ = writeln!(report, "error {error}");
                            exit_child(1)
                        }
                    }
                }
                Ok(Forked::Parent(pause)) => {
                    // The intermediate of a new PID namespace: its child is
                    // pause; tell the monitor which pid that is.
                    let _ = writeln!(report, "pid {}", pause.as_raw());
                    exit_child(0)
                }
                Err(error) => {
                    match refused_sysctl(&error) {
                        Some(key) => {
                            let _ = writeln!(report, "sysctl {key} {error}");
                        }
                        None => {
                            let _ = writeln!(report, "error {error}");
                        }
                    }
                    exit_child(1)
                }
            }
        }
        Forked::Parent(child) => child,
    };
    drop(report_write);
    let mut report = String::new();
    File::from(report_read).read_to_string(&mut report)?;
    // Lines from the intermediate (its pid) and from pause (its error).
    let mut pause = None;
    let mut failure = None;
    let mut sysctl = None;
    for line in report.lines() {
        match (line.strip_prefix("pid "), line.strip_prefix("error ")) {
            (Some(pid), _) => match pid.trim().parse() {
                Ok(pid) => pause = Some(Pid::from_raw(pid)),
                Err(_) => failure = Some(format!("pause reported {line:?}")),
            },
            (None, Some(message)) => failure = Some(message.to_string()),
            (None, None) => match line.strip_prefix("sysctl ").and_then(|l| l.split_once(' ')) {
                Some((key, message)) => {
                    sysctl = Some(key.to_string());
                    failure = Some(message.to_string());
                }
                None => failure = Some(format!("pause reported {line:?}")),
            },
        }
    }
    // The child has exited unless it is pause itself and well.
    if pause.is_some() || failure.is_some() {
        let _ = waitpid(child, None);
    }
    match (failure, pause) {
        (None, pause) => Ok(pause.unwrap_or(child)),
        (Some(message), pause) => {
            // A failed pause in a new PID namespace exits on its own; the
            // monitor, its sub-reaper, reaps it.
            if let Some(pause) = pause {
                let _ = waitpid(pause, None);
            }
            let message = format!("pause: {message}");
            Err(match sysctl {
                Some(key) => io::Error::other(SysctlRefused { key, message }),
                None => io::Error::other(message),
            })
        }
    }
}

/// A sysctl of the pod that its namespaces refused (absent there, not
/// writable, or a value the kernel rejects): the request's fault.
#[derive(Debug)]
struct SysctlRefused {
    key: String,
    message: String,
}

impl std::fmt::Display for SysctlRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SysctlRefused {}

/// The key of the sysctl `error` says was refused, if that is what it is.
pub fn refused_sysctl(error: &io::Error) -> Option<String> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<SysctlRefused>())
        .map(|refused| refused.key.clone())
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
