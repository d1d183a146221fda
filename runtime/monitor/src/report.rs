//! How a forked child talks back to the monitor: pause, a container's init,
//! an exec process and a holder are all forked by [`fork_reporting`], which
//! gives the child a report pipe (O_CLOEXEC) and the monitor its other end.
//!
//! The child writes JSON lines ([`Report`]): the intermediate of a PID
//! namespace says which pid the real child got, an init says `Ready` once
//! its rootfs is set up, and any failure is one `Error` line before the
//! child exits. A child that is done closes the pipe: by exec (the pipe is
//! O_CLOEXEC) or by dropping its [`Reporter`] (pause, a holder), so EOF
//! after no error means success.
//!
//! Only the single-threaded monitor forks (see [`crate::sys`]).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{Pid, pipe2};
use serde::{Deserialize, Serialize};

use crate::sys::{Forked, exit_child, fork_single_threaded};

/// One line on a report pipe.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Report {
    /// From the intermediate: the (host) pid of the real child.
    Pid(i32),
    /// From the init: rootfs done, waiting for the start byte.
    Ready,
    /// Something the monitor should log, not fail on.
    Warning(String),
    Error(String),
    /// A sysctl of the pod that its namespaces refuse (absent there, not
    /// writable, a value the kernel rejects): the request's fault, so crid
    /// answers InvalidArgument naming the key.
    SysctlRefused {
        key: String,
        message: String,
    },
}

/// The error of a [`Report::SysctlRefused`], on both sides of the pipe.
#[derive(Debug)]
pub(crate) struct SysctlRefused {
    pub(crate) key: String,
    pub(crate) message: String,
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

/// The two sides of [`fork_reporting`].
pub(crate) enum Reporting {
    /// In the monitor: the child, and what it reports.
    Parent(Spawned),
    /// In the child: its end of the report pipe.
    Child(Reporter),
}

/// Forks a child with a report pipe. `forks_again`: the child is only the
/// intermediate of a PID namespace, whose own child reports [`Report::Pid`].
pub(crate) fn fork_reporting(forks_again: bool) -> io::Result<Reporting> {
    let (report_read, report_write) = pipe2(OFlag::O_CLOEXEC)?;
    Ok(match fork_single_threaded()? {
        Forked::Child => {
            drop(report_read);
            Reporting::Child(Reporter(File::from(report_write)))
        }
        Forked::Parent(child) => {
            drop(report_write);
            Reporting::Parent(Spawned {
                child,
                child_reaped: false,
                pid: (!forks_again).then_some(child),
                reports: Reports(BufReader::new(File::from(report_read))),
            })
        }
    })
}

/// The processes of one fork as the monitor knows them so far.
pub(crate) struct Spawned {
    /// The forked child (the intermediate, with a PID namespace).
    pub(crate) child: Pid,
    /// The child was the intermediate of a PID namespace and is reaped.
    child_reaped: bool,
    /// The real child, once known.
    pub(crate) pid: Option<Pid>,
    pub(crate) reports: Reports,
}

impl Spawned {
    pub(crate) fn intermediate_done(&mut self, grandchild: i32) {
        // It exits right after saying so; once reaped, its child is ours.
        let _ = waitpid(self.child, None);
        self.child_reaped = true;
        self.pid = Some(Pid::from_raw(grandchild));
    }

    /// Reads the reports until the child closes its pipe: then the real
    /// child's pid; or the error it reported, with nothing of it left.
    pub(crate) fn until_closed(mut self) -> io::Result<Pid> {
        loop {
            match self.reports.next() {
                Ok(Some(Report::Pid(grandchild))) => self.intermediate_done(grandchild),
                Ok(Some(Report::Ready | Report::Warning(_))) => {}
                Ok(Some(Report::Error(message))) => {
                    return Err(self.reap(io::Error::other(message), false));
                }
                Ok(Some(Report::SysctlRefused { key, message })) => {
                    let error = io::Error::other(SysctlRefused { key, message });
                    return Err(self.reap(error, false));
                }
                Ok(None) => match self.pid {
                    Some(pid) => return Ok(pid),
                    None => {
                        let error = io::Error::other("the process ended without reporting");
                        return Err(self.reap(error, false));
                    }
                },
                Err(error) => return Err(self.reap(error, true)),
            }
        }
    }

    /// On failure: waits until every writer is gone (EOF; they exit after
    /// an error), then reaps the child and the real child, so nothing of
    /// it is left. `kill_first`: the reports cannot be trusted (not an
    /// orderly error), so kill what is known first.
    pub(crate) fn reap(mut self, error: io::Error, kill_first: bool) -> io::Error {
        let live = |s: &Spawned| {
            let child = (!s.child_reaped).then_some(s.child);
            let pid = s.pid.filter(|&pid| Some(pid) != child);
            [child, pid].into_iter().flatten().collect::<Vec<_>>()
        };
        if kill_first {
            for pid in live(&self) {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        while let Ok(Some(report)) = self.reports.next() {
            if let Report::Pid(grandchild) = report {
                if kill_first {
                    let _ = kill(Pid::from_raw(grandchild), Signal::SIGKILL);
                }
                self.intermediate_done(grandchild);
            }
        }
        for pid in live(&self) {
            let _ = waitpid(pid, None);
        }
        error
    }
}

/// The monitor's end of a report pipe.
pub(crate) struct Reports(BufReader<File>);

impl Reports {
    /// Readable when the child has reported (or closed the pipe).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }

    /// The next report, `None` at EOF. Warnings go to the monitor's stderr
    /// (its log) and are returned too.
    pub(crate) fn next(&mut self) -> io::Result<Option<Report>> {
        let mut line = Vec::new();
        if self.0.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        parse_report(&line).map(Some)
    }

    /// The reports that have arrived, with one read that does not block
    /// once poll found the pipe readable (nothing has been read through the
    /// buffer before, so it is empty and `fill_buf` reads). A line cut
    /// short waits in `partial`. `None` at EOF.
    pub(crate) fn take_available(
        &mut self,
        partial: &mut Vec<u8>,
    ) -> io::Result<Option<Vec<Report>>> {
        let available = self.0.fill_buf()?;
        if available.is_empty() {
            return Ok(None);
        }
        partial.extend_from_slice(available);
        let read = available.len();
        self.0.consume(read);
        let mut reports = Vec::new();
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            reports.push(parse_report(&line)?);
        }
        Ok(Some(reports))
    }
}

fn parse_report(line: &[u8]) -> io::Result<Report> {
    let report: Report = serde_json::from_slice(line.trim_ascii_end()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "container process report {:?}: {e}",
                String::from_utf8_lossy(line)
            ),
        )
    })?;
    if let Report::Warning(message) = &report {
        eprintln!("crid-monitor: {message}");
    }
    Ok(report)
}

/// The child's end of a report pipe. Dropping it (or exec) tells the
/// monitor the child is done.
pub(crate) struct Reporter(File);

impl Reporter {
    pub(crate) fn send(&mut self, report: &Report) {
        if let Ok(mut line) = serde_json::to_string(report) {
            line.push('\n');
            // Nothing to do if the monitor is gone.
            let _ = self.0.write_all(line.as_bytes());
        }
    }

    pub(crate) fn warn(&mut self, message: String) {
        self.send(&Report::Warning(message));
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub(crate) fn fail(&mut self, error: &io::Error) -> ! {
        let report = match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<SysctlRefused>())
        {
            Some(refused) => Report::SysctlRefused {
                key: refused.key.clone(),
                message: refused.message.clone(),
            },
            None => Report::Error(error.to_string()),
        };
        self.send(&report);
        exit_child(127)
    }

    /// The intermediate of a PID namespace: says which pid its child got,
    /// and exits.
    pub(crate) fn intermediate_done(&mut self, pid: Pid) -> ! {
        self.send(&Report::Pid(pid.as_raw()));
        exit_child(0)
    }
}
