//! The crid-monitor process: one per pod, single-threaded, no async runtime,
//! so it may fork. It detaches from crid (its own session, reparented away
//! from crid) so a crid restart or crash leaves the pod running, becomes the
//! sub-reaper of everything it starts, starts the pod's pause process in the
//! pod's new namespaces, and then answers crid on `<pod dir>/monitor.sock`.
//!
//! Its own package, apart from `runtime` (crid's side), so the
//! multi-threaded crid cannot link its fork code (`sys`) and its size is
//! its own. It uses `runtime` for the spec helpers, cgroup reads and the
//! frame format; `runtime` never uses it.

mod confine;
mod containers;
pub mod crilog;
pub mod init;
mod loopback;
mod pause;
mod pty;
mod report;
mod sys;
mod userns;

pub use sys::{note_main_stack, release_idle_memory};

use std::ffi::CStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, dup2_stderr, dup2_stdin, dup2_stdout};
use proto::monitor::{
    CONFIG_FILE, ErrorKind, ExitStatus, MonitorConfig, MonitorEvent, MonitorRequest,
    MonitorResponse, MonitorStarted, PROBE_IDMAPPED_LAYERS, PROTOCOL_VERSION, SOCKET_FILE,
    Snapshot,
};
use runtime::wire::{Framing, encode_frame, short_path, take_frame};

use self::containers::{Client, Containers, OutputOwner, Reply};
use crate::sys::{Forked, exit_child, fork_single_threaded};

const LOG_FILE: &str = "monitor.log";
/// How long a connection may take to send its whole request, and a
/// blocking answer to be taken. Requests are read as they arrive, so a
/// client that says nothing never stalls the pod; it is dropped after this.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Unsent bytes a subscriber may fall behind by before it is dropped (it
/// subscribes again and starts from a fresh snapshot): the monitor never
/// waits for a subscriber, and never holds more than this for one.
const SUBSCRIBER_BACKLOG: usize = 1024 * 1024;

pub fn main() -> ExitCode {
    sys::note_main_stack();
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(PROBE_IDMAPPED_LAYERS)) {
        let Some(scratch) = args.next() else {
            eprintln!("{PROBE_IDMAPPED_LAYERS} needs a directory");
            return ExitCode::from(2);
        };
        return match userns::probe_idmapped_layers(Path::new(&scratch)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        };
    }
    let pod_dir = match pod_dir() {
        Ok(dir) => dir,
        Err(error) => {
            report_to_crid(&MonitorStarted::Failed {
                message: format!("the pod dir (crid-monitor's working directory): {error}"),
                sysctl: None,
            });
            return ExitCode::from(2);
        }
    };
    match launch(&pod_dir) {
        Ok(code) => code,
        Err(error) => {
            report_to_crid(&MonitorStarted::Failed {
                message: error.to_string(),
                sysctl: report::refused_sysctl(&error),
            });
            ExitCode::FAILURE
        }
    }
}

/// The pod's state dir: crid starts the monitor in it, so that its argv
/// (`crid-monitor`, and so the `/proc/<pid>/cmdline` of pause and of every
/// fork not yet exec'd, which a container sharing the pod's PID namespace
/// reads) names no host path. Taken before anything changes the cwd. An
/// argument, as crid gave it before, is still taken.
fn pod_dir() -> io::Result<PathBuf> {
    match std::env::args_os().nth(1) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => std::env::current_dir(),
    }
}

/// How a process ended, from what waitpid saw; None while it has not
/// (stopped, continued, still alive).
fn exit_status(status: WaitStatus) -> Option<ExitStatus> {
    match status {
        WaitStatus::Exited(_, code) => Some(ExitStatus::Exited(code)),
        WaitStatus::Signaled(_, signal, _) => Some(ExitStatus::Signaled(signal as i32)),
        _ => None,
    }
}

fn report_to_crid(started: &MonitorStarted) {
    if let Ok(line) = serde_json::to_string(started) {
        println!("{line}");
    }
}

/// The launcher forks the monitor proper and exits once it reports how the
/// pod's start went, so crid can reap the launcher and the monitor is
/// nobody's child that might go away.
fn launch(pod_dir: &Path) -> io::Result<ExitCode> {
    // Until they exec, pause, every container init and every exec process
    // are forks of this binary, so /proc/<pid>/exe of any of them is
    // crid-monitor itself (CVE-2019-5736: a container opens it and
    // overwrites the binary). Non-dumpable, /proc/<pid>/exe and fd/* are
    // only open to holders of CAP_SYS_PTRACE over the host; every fork
    // inherits this, and execve makes the container's own program dumpable
    // again.
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| io::Error::other(format!("prctl(PR_SET_DUMPABLE, 0): {e}")))?;
    let config: MonitorConfig = serde_json::from_slice(&fs::read(pod_dir.join(CONFIG_FILE))?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{CONFIG_FILE}: {e}")))?;
    // Still one thread: "0" moves it whole, without the global lock (see
    // runtime::cgroup::Hierarchy::join_files).
    for procs in &config.cgroup_procs {
        fs::write(procs, "0").map_err(|e| {
            io::Error::new(e.kind(), format!("joining cgroup {}: {e}", procs.display()))
        })?;
    }
    let (ready_read, ready_write) = nix::unistd::pipe()?;
    match fork_single_threaded()? {
        Forked::Parent(_) => {
            drop(ready_write);
            let mut report = String::new();
            File::from(ready_read).read_to_string(&mut report)?;
            let started: MonitorStarted =
                serde_json::from_str(report.trim()).unwrap_or(MonitorStarted::Failed {
                    message: format!("monitor exited before reporting: {report:?}"),
                    sysctl: None,
                });
            report_to_crid(&started);
            Ok(match started {
                MonitorStarted::Ready { .. } => ExitCode::SUCCESS,
                MonitorStarted::Failed { .. } => ExitCode::FAILURE,
            })
        }
        Forked::Child => {
            drop(ready_read);
            let code = match Monitor::start(pod_dir, &config) {
                Ok((monitor, listener)) => {
                    let ready = MonitorStarted::Ready {
                        monitor_pid: nix::unistd::getpid().as_raw(),
                        pause_pid: monitor.pause.as_raw(),
                    };
                    send_report(ready_write, &ready);
                    monitor.serve(listener)
                }
                Err(error) => {
                    send_report(
                        ready_write,
                        &MonitorStarted::Failed {
                            message: error.to_string(),
                            sysctl: report::refused_sysctl(&error),
                        },
                    );
                    1
                }
            };
            exit_child(code)
        }
    }
}

fn send_report(pipe: OwnedFd, started: &MonitorStarted) {
    let mut pipe = File::from(pipe);
    if let Ok(line) = serde_json::to_string(started) {
        let _ = pipe.write_all(line.as_bytes());
    }
}

struct Monitor {
    pod_dir: PathBuf,
    pause: Pid,
    pause_exit: Option<ExitStatus>,
    signals: SignalFd,
    containers: Containers,
    subscribers: Vec<Subscriber>,
    incoming: Vec<Incoming>,
}

/// A connection whose request has not fully arrived: read as it comes,
/// so a client that says nothing (or little) holds nothing up.
struct Incoming {
    stream: UnixStream,
    received: Vec<u8>,
    deadline: Instant,
}

impl Incoming {
    /// Reads what is there; the request once it is whole. EOF before that
    /// is an error.
    fn read(&mut self) -> io::Result<Option<(MonitorRequest, Framing)>> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed before a whole request",
                    ));
                }
                Ok(n) => {
                    self.received.extend_from_slice(&chunk[..n]);
                    if let Some(request) = take_frame(&mut self.received)? {
                        return Ok(Some(request));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// A whole request and the connection to answer it on.
struct Request {
    stream: UnixStream,
    request: MonitorRequest,
    framing: Framing,
}

/// A connection that asked for events: written without blocking, through
/// a bounded backlog.
struct Subscriber {
    stream: UnixStream,
    framing: Framing,
    unsent: Vec<u8>,
}

impl Subscriber {
    /// Queues `frame`; false if the subscriber fell too far behind.
    fn queue(&mut self, frame: &[u8]) -> bool {
        if self.unsent.len() + frame.len() > SUBSCRIBER_BACKLOG {
            return false;
        }
        self.unsent.extend_from_slice(frame);
        true
    }

    /// Writes what the socket takes now; false once the connection is
    /// gone.
    fn flush(&mut self) -> bool {
        crate::write_unsent(&mut self.stream, &mut self.unsent)
    }

    /// Reads (and ignores) what the subscriber sent; false once it closed.
    fn still_open(&mut self) -> bool {
        let mut scratch = [0u8; 512];
        loop {
            match self.stream.read(&mut scratch) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

impl Monitor {
    fn start(pod_dir: &Path, config: &MonitorConfig) -> io::Result<(Monitor, UnixListener)> {
        nix::unistd::setsid()?;
        nix::sys::prctl::set_child_subreaper(true)?;
        let name: &CStr = c"crid-monitor";
        nix::sys::prctl::set_name(name)?;
        // Nothing of the monitor may keep a mount busy or hold crid's stdio.
        // The log first: from then on its fds name the pod dir on the host
        // (its argv does not; the cwd did until here).
        redirect_stdio(&pod_dir.join(LOG_FILE))?;
        std::env::set_current_dir("/")?;

        // Signals arrive through the signalfd (and pause waits on them), so
        // they are blocked before anything is forked.
        let mut mask = SigSet::empty();
        for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
            mask.add(signal);
        }
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK)?;

        let socket_path = pod_dir.join(SOCKET_FILE);
        match fs::remove_file(&socket_path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let (_dir, short_socket_path) = short_path(pod_dir, SOCKET_FILE)?;
        let listener = UnixListener::bind(short_socket_path)?;

        let pause = pause::start(config, pod_dir)?;
        Ok((
            Monitor {
                pod_dir: pod_dir.to_path_buf(),
                pause,
                pause_exit: None,
                signals,
                containers: Containers::default(),
                subscribers: Vec::new(),
                incoming: Vec::new(),
            },
            listener,
        ))
    }

    /// Answers crid and copies container output until told to shut down;
    /// returns the exit code.
    fn serve(mut self, listener: UnixListener) -> i32 {
        loop {
            let incoming_deadline = self.incoming.iter().map(|i| i.deadline).min();
            let next_deadline = match (self.containers.next_deadline(), incoming_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = match next_deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    // Rounded up so a wake-up never comes before the deadline.
                    let millis = left.as_millis().saturating_add(1);
                    PollTimeout::try_from(millis.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let (signal_ready, client_ready, ready_outputs, ready_subscribers, ready_incoming) = {
                let outputs = self.containers.outputs();
                let mut fds = vec![
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                    PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                ];
                fds.extend(
                    outputs
                        .iter()
                        .map(|(_, fd)| PollFd::new(*fd, PollFlags::POLLIN)),
                );
                fds.extend(self.subscribers.iter().map(|s| {
                    let mut events = PollFlags::POLLIN;
                    if !s.unsent.is_empty() {
                        events |= PollFlags::POLLOUT;
                    }
                    PollFd::new(s.stream.as_fd(), events)
                }));
                fds.extend(
                    self.incoming
                        .iter()
                        .map(|i| PollFd::new(i.stream.as_fd(), PollFlags::POLLIN)),
                );
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(error) => {
                        eprintln!("crid-monitor: poll: {error}");
                        return 1;
                    }
                }
                // A hung-up pipe is readable too: the read sees EOF.
                let readable = |fd: &PollFd| {
                    fd.revents().is_some_and(|r| {
                        r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                    })
                };
                let ready_outputs: Vec<OutputOwner> = outputs
                    .iter()
                    .zip(&fds[2..])
                    .filter(|(_, fd)| readable(fd))
                    .map(|((owner, _), _)| owner.clone())
                    .collect();
                let woken = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                let subscribers_from = 2 + outputs.len();
                let incoming_from = subscribers_from + self.subscribers.len();
                let ready_subscribers: Vec<bool> = fds[subscribers_from..incoming_from]
                    .iter()
                    .map(woken)
                    .collect();
                let ready_incoming: Vec<bool> = fds[incoming_from..].iter().map(woken).collect();
                (
                    readable(&fds[0]),
                    readable(&fds[1]),
                    ready_outputs,
                    ready_subscribers,
                    ready_incoming,
                )
            };
            for owner in &ready_outputs {
                self.containers.drain(owner);
            }
            self.serve_subscribers(&ready_subscribers);
            if signal_ready && self.handle_signals() {
                return self.shut_down();
            }
            self.containers.expire();
            let requests = self.read_incoming(&ready_incoming);
            let handled_any = !requests.is_empty();
            for request in requests {
                match self.handle_request(request) {
                    Ok(true) => return self.shut_down(),
                    Ok(false) => {}
                    Err(error) => eprintln!("crid-monitor: client: {error}"),
                }
            }
            if handled_any {
                // A create or an exec is the deepest and largest work a
                // monitor does; what it touched is not kept for the pod's life.
                sys::release_idle_memory();
            }
            if client_ready && let Ok((stream, _)) = listener.accept() {
                match stream.set_nonblocking(true) {
                    Ok(()) => self.incoming.push(Incoming {
                        stream,
                        received: Vec::new(),
                        deadline: Instant::now() + CLIENT_TIMEOUT,
                    }),
                    Err(error) => eprintln!("crid-monitor: client: {error}"),
                }
            }
            self.publish();
        }
    }

    /// Subscribers the poll found ready: what they sent is dropped, what
    /// they can take is written, the closed ones go.
    fn serve_subscribers(&mut self, ready: &[bool]) {
        let mut index = 0;
        self.subscribers.retain_mut(|subscriber| {
            let was_ready = ready.get(index).copied().unwrap_or(false);
            index += 1;
            !was_ready || (subscriber.still_open() && subscriber.flush())
        });
    }

    /// Sends what happened since the last call to every subscriber.
    fn publish(&mut self) {
        let events = self.containers.take_events();
        if events.is_empty() {
            return;
        }
        self.subscribers.retain_mut(|subscriber| {
            for event in &events {
                let queued = encode_frame(event, subscriber.framing)
                    .is_ok_and(|frame| subscriber.queue(&frame));
                if !queued {
                    eprintln!("crid-monitor: dropping a subscriber that fell behind");
                    return false;
                }
            }
            subscriber.flush()
        });
    }

    /// Everything `Status` and `Containers` answer, and from now on every
    /// event, on `client`'s connection.
    fn subscribe(&mut self, client: Client) -> io::Result<()> {
        // Events of before the snapshot go to the earlier subscribers only.
        self.publish();
        let snapshot = MonitorResponse::Subscribed(Snapshot {
            version: PROTOCOL_VERSION,
            pause_pid: self.pause.as_raw(),
            pause_exit: self.pause_exit,
            containers: self.containers.states(),
        });
        client.stream.set_nonblocking(true)?;
        let mut subscriber = Subscriber {
            stream: client.stream,
            framing: client.framing,
            unsent: Vec::new(),
        };
        let frame = encode_frame(&snapshot, subscriber.framing)?;
        // The snapshot alone may exceed the backlog; it is sent anyway.
        subscriber.unsent = frame;
        if subscriber.flush() {
            self.subscribers.push(subscriber);
        }
        Ok(())
    }

    /// Reaps every exited child; true if asked to terminate.
    fn handle_signals(&mut self) -> bool {
        let mut terminate = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            if info.ssi_signo == Signal::SIGTERM as u32 || info.ssi_signo == Signal::SIGINT as u32 {
                terminate = true;
            }
        }
        self.reap();
        terminate
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let (Some(pid), Some(exit)) = (status.pid(), exit_status(status)) {
                        self.record_exit(pid, exit)
                    }
                }
            }
        }
    }

    fn record_exit(&mut self, pid: Pid, status: ExitStatus) {
        if self.containers.exited(pid, status) {
            return;
        }
        if pid == self.pause {
            eprintln!("crid-monitor: pause {pid} ended: {status:?}");
            self.pause_exit = Some(status);
            self.containers
                .push_event(MonitorEvent::PauseExited { status });
        }
    }

    /// Reads what the ready connections sent; returns the requests that
    /// are whole. Connections that closed, sent garbage, or said nothing
    /// whole in time are dropped (garbage is answered first).
    fn read_incoming(&mut self, ready: &[bool]) -> Vec<Request> {
        let now = Instant::now();
        let mut requests = Vec::new();
        let mut index = 0;
        self.incoming.retain_mut(|incoming| {
            let was_ready = ready.get(index).copied().unwrap_or(false);
            index += 1;
            if !was_ready {
                return incoming.deadline > now;
            }
            match incoming.read() {
                Ok(None) => incoming.deadline > now,
                Ok(Some((request, framing))) => {
                    match incoming.stream.try_clone().and_then(|stream| {
                        stream.set_nonblocking(false)?;
                        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
                        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
                        Ok(stream)
                    }) {
                        Ok(stream) => requests.push(Request {
                            stream,
                            request,
                            framing,
                        }),
                        Err(error) => eprintln!("crid-monitor: client: {error}"),
                    }
                    false
                }
                Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                    // A request of a newer crid, or garbage: said, not
                    // dropped silently.
                    let refusal = MonitorResponse::Error {
                        kind: ErrorKind::InvalidRequest,
                        message: format!("request not understood: {error}"),
                    };
                    if let Ok(frame) = encode_frame(&refusal, Framing::V1) {
                        let _ = incoming.stream.write(&frame);
                    }
                    false
                }
                Err(_) => false,
            }
        });
        requests
    }

    /// Answers one request (a subscriber keeps its connection); true if it
    /// was Shutdown.
    fn handle_request(&mut self, request: Request) -> io::Result<bool> {
        let Request {
            stream,
            request,
            framing,
        } = request;
        let mut client = Client { stream, framing };
        self.reap();
        let millis = Duration::from_millis;
        let reply = match request {
            MonitorRequest::Status => Reply::Now(MonitorResponse::Status {
                pause_pid: self.pause.as_raw(),
                pause_exit: self.pause_exit,
            }),
            MonitorRequest::Shutdown => {
                self.kill_pause();
                client.answer(&MonitorResponse::ShuttingDown)?;
                return Ok(true);
            }
            MonitorRequest::CreateContainer(create) => self.containers.create(create, &client),
            MonitorRequest::Placed => Reply::Now(MonitorResponse::Error {
                kind: ErrorKind::InvalidRequest,
                message: "Placed without a container waiting for it".into(),
            }),
            MonitorRequest::StartContainer { id } => self.containers.start(&id),
            MonitorRequest::Signal { id, signal } => self.containers.signal(&id, signal),
            MonitorRequest::Wait { id, timeout_ms } => {
                self.containers.wait(&id, millis(timeout_ms), &client)
            }
            MonitorRequest::RemoveContainer { id } => self.containers.remove(&id),
            MonitorRequest::Containers => {
                Reply::Now(MonitorResponse::Containers(self.containers.states()))
            }
            MonitorRequest::ReopenLog { id } => self.containers.reopen_log(&id),
            MonitorRequest::Exec {
                id,
                args,
                timeout_ms,
            } => self
                .containers
                .exec(&id, &args, millis(timeout_ms), &client),
            MonitorRequest::ExecAttached(exec) => self.containers.exec_attached(exec, &client),
            MonitorRequest::Attach { id } => self.containers.attach(&id, &client),
            MonitorRequest::AttachInput { .. }
            | MonitorRequest::AttachCloseStdin
            | MonitorRequest::AttachResize { .. } => Reply::Now(MonitorResponse::Error {
                kind: ErrorKind::InvalidRequest,
                message: "attach input without an attach on the connection".into(),
            }),
            MonitorRequest::Hello => Reply::Now(MonitorResponse::Hello {
                version: PROTOCOL_VERSION,
            }),
            MonitorRequest::Subscribe => {
                self.subscribe(client)?;
                return Ok(false);
            }
        };
        if let Reply::Now(response) = reply {
            client.answer(&response)?;
        }
        Ok(false)
    }

    /// Ends the pod: its containers first (their exits recorded), then pause.
    fn kill_pause(&mut self) {
        self.containers.kill_all();
        if self.pause_exit.is_none() {
            let _ = kill(self.pause, Signal::SIGKILL);
            self.pause_exit = waitpid(self.pause, None).ok().and_then(exit_status);
        }
        self.reap();
    }

    fn shut_down(mut self) -> i32 {
        self.kill_pause();
        // The subscribers learn how everything ended, as far as their
        // sockets take it now.
        self.publish();
        let _ = fs::remove_file(self.pod_dir.join(SOCKET_FILE));
        0
    }
}

fn redirect_stdio(log: &Path) -> io::Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let log = OpenOptions::new().create(true).append(true).open(log)?;
    dup2_stdin(&null)?;
    dup2_stdout(&null)?;
    dup2_stderr(&log)?;
    Ok(())
}

/// Writes what a non-blocking socket takes now of `unsent`, dropping what
/// went; false once the socket is gone.
fn write_unsent(stream: &mut impl Write, unsent: &mut Vec<u8>) -> bool {
    while !unsent.is_empty() {
        match stream.write(unsent) {
            Ok(0) => return false,
            Ok(n) => {
                unsent.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_that_does_not_read_is_dropped_not_waited_for() {
        let (ours, _never_read) = UnixStream::pair().expect("socketpair");
        ours.set_nonblocking(true).expect("nonblocking");
        let mut subscriber = Subscriber {
            stream: ours,
            framing: Framing::V2,
            unsent: Vec::new(),
        };
        let frame = vec![7u8; 64 * 1024];
        let mut queued = 0usize;
        // Each flush returns at once with what the socket did not take;
        // once the backlog is full, the subscriber is refused more.
        while subscriber.queue(&frame) {
            assert!(subscriber.flush(), "the peer is still there");
            queued += frame.len();
            assert!(
                queued < 64 * 1024 * 1024,
                "queued {queued} bytes without a limit"
            );
        }
        assert!(subscriber.unsent.len() <= SUBSCRIBER_BACKLOG);
        assert!(queued >= SUBSCRIBER_BACKLOG, "refused early: {queued}");
    }
}
