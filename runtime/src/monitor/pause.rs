//! The built-in pause: a fork of the monitor that never execs, so it costs
//! only the pages it dirties. It creates the pod's namespaces, applies the
//! pod's hostname and namespaced sysctls inside them, and then waits for
//! signals; as PID 1 of a pod PID namespace it reaps zombies.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use proto::monitor::MonitorConfig;

use crate::sys::{Forked, close_inherited_fds, exit_child, fork_single_threaded};

/// Starts pause and returns its pid once its namespaces are set up.
pub fn start(config: &MonitorConfig) -> io::Result<Pid> {
    let (report_read, report_write) = nix::unistd::pipe()?;
    let child = match fork_single_threaded()? {
        Forked::Child => {
            drop(report_read);
            let kept = close_inherited_fds(&[report_write.as_raw_fd()]);
            let mut report = File::from(report_write);
            match kept.and_then(|()| enter_namespaces(config)) {
                Ok(Forked::Child) => {
                    // The pod's PID 1 (or pause in shared host PID): report
                    // done by closing the pipe, then wait forever.
                    drop(report);
                    run()
                }
                Ok(Forked::Parent(pause)) => {
                    // The intermediate of a new PID namespace: its child is
                    // pause; tell the monitor which pid that is.
                    let _ = write!(report, "pid {}", pause.as_raw());
                    exit_child(0)
                }
                Err(error) => {
                    let _ = write!(report, "error {error}");
                    exit_child(1)
                }
            }
        }
        Forked::Parent(child) => child,
    };
    drop(report_write);
    let mut report = String::new();
    File::from(report_read).read_to_string(&mut report)?;
    if let Some(message) = report.strip_prefix("error ") {
        let _ = waitpid(child, None);
        return Err(io::Error::other(format!("pause: {message}")));
    }
    match report.strip_prefix("pid ") {
        // A new PID namespace: the child was the intermediate; reap it.
        Some(pid) => {
            let _ = waitpid(child, None);
            pid.trim()
                .parse()
                .map(Pid::from_raw)
                .map_err(|_| io::Error::other(format!("pause reported {report:?}")))
        }
        None if report.is_empty() => Ok(child),
        None => Err(io::Error::other(format!("pause reported {report:?}"))),
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
        std::fs::write(&path, value)
            .map_err(|e| io::Error::other(format!("sysctl {key}={value}: {e}")))?;
    }
    if ns.pid {
        fork_single_threaded()
    } else {
        Ok(Forked::Child)
    }
}

/// Pause proper: sleeps in sigwait. SIGTERM/SIGINT end it; SIGCHLD reaps
/// (only PID 1 of a pod PID namespace gets orphans to reap).
fn run() -> ! {
    let name: &CStr = c"pause";
    let _ = nix::sys::prctl::set_name(name);
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None);
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
