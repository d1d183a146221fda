//! The monitor's containers: their inits, their output (copied into the CRI
//! log), their exits (written durably into the bundle), crid's waiters, and
//! exec sessions. Everything here runs on the monitor's one thread, driven
//! by its poll loop: no call blocks except on a process SIGKILLed just before.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use proto::monitor::{
    ContainerCreate, ContainerExit, ContainerState, EXIT_FILE, ErrorKind, ExecAttached, ExitStatus,
    LogFile, MonitorEvent, MonitorRequest, MonitorResponse,
};
use runtime::wire::{Framing, encode_frame, read_frame, take_frame, write_frame};

use super::init::{self, ChildStdio, CreatedInit, InitStdio};
use crate::crilog::{CriLog, Stream};

/// Output an exec session keeps per stream; the rest is read and dropped
/// (and the cut said in stderr). kubelet's figure (dockershim kept 16 MiB
/// per stream; CRI-O does too).
const MAX_EXEC_OUTPUT: usize = 16 * 1024 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// Where a readable descriptor belongs (poll bookkeeping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputOwner {
    Container(String),
    Exec(Pid),
    /// crid's connection of an attached exec (watched for its close).
    AttachedExec(Pid),
    /// crid's connection of an attach session.
    Attacher(u64),
    /// A create in progress (crid's connection or the init's reports).
    Creating(String),
}

/// What a request handler does with the client's connection.
pub enum Reply {
    Now(MonitorResponse),
    /// Kept; answered when the container exits or the exec ends.
    Later,
}

struct Output {
    stream: Stream,
    file: File,
}

/// crid's connection, kept to answer later, in the framing it asked in.
pub struct Client {
    pub stream: UnixStream,
    pub framing: Framing,
}

impl Client {
    pub fn answer(&mut self, response: &MonitorResponse) -> io::Result<()> {
        write_frame(&mut self.stream, response, self.framing)
    }

    fn try_clone(&self) -> io::Result<Client> {
        Ok(Client {
            stream: self.stream.try_clone()?,
            framing: self.framing,
        })
    }
}

struct Waiter {
    client: Client,
    deadline: Instant,
}

struct Container {
    create: ContainerCreate,
    spec: Spec,
    /// Of the init and every exec ([`init::environment`]).
    env: Vec<CString>,
    pid: Pid,
    /// Until started.
    init: Option<CreatedInit>,
    /// Until the exit is recorded (placed containers only).
    holder: Option<init::Holder>,
    started_at: i64,
    exit: Option<ContainerExit>,
    oom_baseline: u64,
    outputs: Vec<Output>,
    log: Option<CriLog>,
    /// The write end of the container's stdin (non-blocking; a tty's
    /// master), held for attach.
    stdin: Option<OwnedFd>,
    waiters: Vec<Waiter>,
    attachers: Vec<Attacher>,
}

/// Unsent output an attacher may fall behind by before it is dropped (the
/// container never waits for an attacher; its log is written regardless).
const ATTACHER_BACKLOG: usize = 1024 * 1024;
/// How soon the poll loop retries an attacher's unsent output.
const ATTACHER_RETRY: Duration = Duration::from_millis(20);

/// crid's connection of one attach session.
struct Attacher {
    token: u64,
    stream: UnixStream,
    framing: Framing,
    unsent: Vec<u8>,
    received: Vec<u8>,
}

impl Attacher {
    /// Queues `response`; false if the attacher fell too far behind.
    fn queue(&mut self, response: &MonitorResponse) -> bool {
        match encode_frame(response, self.framing) {
            Ok(frame) if self.unsent.len() + frame.len() <= ATTACHER_BACKLOG => {
                self.unsent.extend_from_slice(&frame);
                true
            }
            _ => false,
        }
    }

    /// Writes what the socket takes now; false once it is gone.
    fn flush(&mut self) -> bool {
        crate::write_unsent(&mut self.stream, &mut self.unsent)
    }

    /// The requests that arrived whole; None once crid closed (detached).
    fn read(&mut self) -> Option<Vec<MonitorRequest>> {
        let mut chunk = [0u8; 4096];
        let mut open = true;
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        let mut requests = Vec::new();
        while let Ok(Some((request, _))) = take_frame::<MonitorRequest>(&mut self.received) {
            requests.push(request);
        }
        open.then_some(requests)
    }
}

/// An exec whose stdio crid holds: the monitor keeps crid's connection,
/// to say how it ended, or to kill it when crid hangs up first.
struct AttachedExec {
    pid: Pid,
    client: Client,
    /// crid hung up; the process was killed and waits to be reaped.
    abandoned: bool,
}

struct ExecSession {
    pid: Pid,
    outputs: Vec<Output>,
    stdout: CappedOutput,
    stderr: CappedOutput,
    client: Client,
    deadline: Option<Instant>,
    timed_out: bool,
}

/// One stream of an exec: the first [`MAX_EXEC_OUTPUT`] bytes, and how
/// many more were dropped.
#[derive(Default)]
struct CappedOutput {
    kept: Vec<u8>,
    dropped: u64,
}

impl CappedOutput {
    fn push(&mut self, data: &[u8]) {
        let room = MAX_EXEC_OUTPUT.saturating_sub(self.kept.len());
        let (keep, drop) = data.split_at(data.len().min(room));
        self.kept.extend_from_slice(keep);
        self.dropped += drop.len() as u64;
    }

    /// The line that says a stream was cut, if it was.
    fn notice(&self, stream: &str) -> Option<String> {
        (self.dropped > 0).then(|| {
            format!(
                "crid: exec {stream} truncated at {MAX_EXEC_OUTPUT} bytes ({} more bytes dropped)\n",
                self.dropped
            )
        })
    }
}

/// An exec's output as crid gets it: a cut stream says so at the end of
/// stderr (as a line of its own).
fn exec_output(stdout: CappedOutput, stderr: CappedOutput) -> (Vec<u8>, Vec<u8>) {
    let notices: String = [stdout.notice("stdout"), stderr.notice("stderr")]
        .into_iter()
        .flatten()
        .collect();
    let mut err = stderr.kept;
    if !notices.is_empty() && !err.is_empty() && !err.ends_with(b"\n") {
        err.push(b'\n');
    }
    err.extend_from_slice(notices.as_bytes());
    (stdout.kept, err)
}

/// How long a create waits at `Place` for crid's `Placed`.
const PLACE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a container is made of besides its init, gathered before the fork.
struct Parts {
    create: ContainerCreate,
    spec: Spec,
    env: Vec<CString>,
    log: Option<CriLog>,
    outputs: Vec<Output>,
    stdin: Option<OwnedFd>,
    /// A tty container's: where its init sends the pty master
    /// ([`InitStdio::Terminal`]), taken by [`Parts::take_terminal`].
    console: Option<OwnedFd>,
    oom_baseline: u64,
}

impl Parts {
    fn prepare(create: ContainerCreate) -> io::Result<(Parts, InitStdio)> {
        let config_path = create.bundle.join("config.json");
        let spec: Spec = serde_json::from_slice(&fs::read(&config_path)?).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", config_path.display()),
            )
        })?;
        let env = init::environment(&create, &spec)?;
        let log = log_file(&create)?.as_ref().map(CriLog::open).transpose()?;
        let StdioEnds {
            child: stdio,
            outputs,
            stdin,
            console,
        } = container_stdio(&create)?;
        let oom_baseline = create
            .oom_events
            .as_deref()
            .map(oom_kills)
            .unwrap_or_default();
        let parts = Parts {
            create,
            spec,
            env,
            log,
            outputs,
            stdin,
            console,
            oom_baseline,
        };
        Ok((parts, stdio))
    }

    /// A tty container's init is ready, so it has sent its pty master
    /// (before `Ready`): the master becomes the container's output, and its
    /// stdin if asked for.
    fn take_terminal(&mut self) -> io::Result<()> {
        let Some(console) = self.console.take() else {
            return Ok(());
        };
        let mut byte = [0u8; 1];
        let (_, mut fds) = runtime::sys::recv_with_fds(console.as_fd(), &mut byte)
            .map_err(|e| io::Error::other(format!("receiving the container's terminal: {e}")))?;
        let master = match (fds.pop(), fds.is_empty()) {
            (Some(master), true) => master,
            _ => {
                return Err(io::Error::other(
                    "the container init did not send one terminal",
                ));
            }
        };
        set_nonblocking_cloexec(&master)?;
        // Attach writes a tty's stdin to its master.
        if self.create.stdin {
            self.stdin = Some(master.try_clone()?);
        }
        self.outputs = vec![Output {
            stream: Stream::Stdout,
            file: File::from(master),
        }];
        Ok(())
    }
}

/// A create in progress: its init forked, answered once the init is set
/// up (or has failed), while the monitor goes on with everything else.
struct Creating {
    parts: Parts,
    init: init::ForkedInit,
    client: Client,
    stage: Stage,
    /// Only crid's `Placed` is waited for with a deadline; an init's setup
    /// is the monitor's own work (and crid removes a create it gave up on).
    deadline: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The init waits at its gate for crid's `Placed` (on `client`).
    Placing,
    /// The init sets itself up and reports (on its report pipe).
    SettingUp,
}

impl Creating {
    /// What the poll loop watches for this create's next step.
    fn fd(&self) -> BorrowedFd<'_> {
        match self.stage {
            Stage::Placing => self.client.stream.as_fd(),
            Stage::SettingUp => self.init.reports_fd(),
        }
    }

    /// Ends the create and tells crid why; `kill`: kill what of it runs
    /// rather than let it fail on its own.
    fn end(self, why: io::Error, kill: bool) {
        let Creating {
            init, mut client, ..
        } = self;
        let error = if kill {
            init.kill(why)
        } else {
            init.abandon(why)
        };
        let _ = client.answer(&MonitorResponse::Error {
            kind: ErrorKind::CreateFailed,
            message: error.to_string(),
        });
    }
}

#[derive(Default)]
pub struct Containers {
    table: BTreeMap<String, Container>,
    creating: Vec<Creating>,
    execs: Vec<ExecSession>,
    attached: Vec<AttachedExec>,
    /// The last attach session's token.
    attacher_tokens: u64,
    /// What happened since the monitor last published it.
    events: Vec<MonitorEvent>,
}

/// Where the container's log goes. A crid older than `log` (downgraded
/// while this monitor ran) sends only the joined `log_path`: its file name
/// is then resolved beneath its parent, the most of it that can be
/// confined.
fn log_file(create: &ContainerCreate) -> io::Result<Option<LogFile>> {
    let Some(path) = create.log_path.as_deref().filter(|_| create.log.is_none()) else {
        return Ok(create.log.clone());
    };
    match (path.parent(), path.file_name()) {
        (Some(directory), Some(name)) if runtime::spec::is_clean_absolute(path) => {
            Ok(Some(LogFile {
                directory: directory.to_path_buf(),
                relative: name.into(),
            }))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("log path {}: must be absolute without '..'", path.display()),
        )),
    }
}

fn error(kind: ErrorKind, message: impl Into<String>) -> Reply {
    Reply::Now(MonitorResponse::Error {
        kind,
        message: message.into(),
    })
}

fn not_found(id: &str) -> Reply {
    error(ErrorKind::NotFound, format!("container {id} not found"))
}

impl Containers {
    /// Every descriptor the poll loop should watch, with its owner.
    pub fn outputs(&self) -> Vec<(OutputOwner, BorrowedFd<'_>)> {
        let containers = self.table.iter().flat_map(|(id, c)| {
            c.outputs
                .iter()
                .map(move |o| (OutputOwner::Container(id.clone()), o.file.as_fd()))
        });
        let execs = self.execs.iter().flat_map(|e| {
            e.outputs
                .iter()
                .map(move |o| (OutputOwner::Exec(e.pid), o.file.as_fd()))
        });
        let creating = self
            .creating
            .iter()
            .map(|c| (OutputOwner::Creating(c.parts.create.id.clone()), c.fd()));
        let attached = self
            .attached
            .iter()
            .filter(|a| !a.abandoned)
            .map(|a| (OutputOwner::AttachedExec(a.pid), a.client.stream.as_fd()));
        let attachers = self.table.values().flat_map(|c| {
            c.attachers
                .iter()
                .map(|a| (OutputOwner::Attacher(a.token), a.stream.as_fd()))
        });
        containers
            .chain(execs)
            .chain(creating)
            .chain(attached)
            .chain(attachers)
            .collect()
    }

    /// How long the poll loop may sleep before a deadline passes.
    pub fn next_deadline(&self) -> Option<Instant> {
        let waits = self
            .table
            .values()
            .flat_map(|c| c.waiters.iter().map(|w| w.deadline));
        let execs = self.execs.iter().filter_map(|e| e.deadline);
        let creating = self.creating.iter().filter_map(|c| c.deadline);
        let behind = self
            .table
            .values()
            .flat_map(|c| &c.attachers)
            .any(|a| !a.unsent.is_empty())
            .then(|| Instant::now() + ATTACHER_RETRY);
        waits.chain(execs).chain(creating).chain(behind).min()
    }

    /// Forks the container's init and answers once it is set up; a create
    /// that crid places (`placed_by_crid`) first asks for that on `client`
    /// with `Place`. Meanwhile the monitor serves everything else (see
    /// [`Containers::create_progress`]).
    pub fn create(&mut self, create: ContainerCreate, client: &Client) -> Reply {
        let id = create.id.clone();
        if self.table.contains_key(&id) || self.creating.iter().any(|c| c.parts.create.id == id) {
            return error(
                ErrorKind::AlreadyExists,
                format!("container {id} exists already"),
            );
        }
        let forked = Parts::prepare(create).and_then(|(parts, stdio)| {
            let forked = init::fork_init(&parts.create, &parts.spec, &parts.env, stdio)?;
            Ok((parts, forked))
        });
        let (parts, forked) = match forked {
            Ok(forked) => forked,
            Err(e) => return error(ErrorKind::CreateFailed, e.to_string()),
        };
        let to_place = forked.to_place();
        let kept = client.try_clone().and_then(|mut client| {
            if let Some((pid, holder)) = to_place {
                let pids = vec![pid.as_raw(), holder.as_raw()];
                client.answer(&MonitorResponse::Place { pids })?;
            }
            Ok(client)
        });
        let client = match kept {
            Ok(client) => client,
            Err(e) => return error(ErrorKind::CreateFailed, forked.abandon(e).to_string()),
        };
        let (stage, deadline) = match to_place {
            Some(_) => (Stage::Placing, Some(Instant::now() + PLACE_TIMEOUT)),
            None => (Stage::SettingUp, None),
        };
        self.creating.push(Creating {
            parts,
            init: forked,
            client,
            stage,
            deadline,
        });
        Reply::Later
    }

    /// The next step of the create of `id`, whose descriptor is readable:
    /// crid's `Placed` lets the init go on (anything else, or EOF, ends the
    /// create); the init's reports say it is set up (answered `Created`)
    /// or failed.
    fn create_progress(&mut self, id: &str) {
        let Some(index) = self.creating.iter().position(|c| c.parts.create.id == id) else {
            return;
        };
        let creating = &mut self.creating[index];
        let progress = match creating.stage {
            Stage::Placing => match read_frame::<MonitorRequest>(&mut creating.client.stream) {
                Ok((MonitorRequest::Placed, _)) => creating.init.release().map(|()| {
                    creating.stage = Stage::SettingUp;
                    creating.deadline = None;
                    false
                }),
                Ok((other, _)) => Err(io::Error::other(format!(
                    "crid answered Place with {}",
                    other.name()
                ))),
                Err(e) => Err(io::Error::other(format!(
                    "crid did not place the init: {e}"
                ))),
            },
            Stage::SettingUp => match creating.init.progress() {
                Ok(true) => creating.parts.take_terminal().map(|()| true),
                other => other,
            },
        };
        match progress {
            Ok(false) => {}
            Ok(true) => {
                let Creating {
                    parts,
                    init,
                    mut client,
                    ..
                } = self.creating.swap_remove(index);
                let pid = self.insert(parts, init.into_created());
                let _ = client.answer(&MonitorResponse::Created { pid: pid.as_raw() });
            }
            Err(why) => self.creating.swap_remove(index).end(why, false),
        }
    }

    /// Records a container whose init is set up.
    fn insert(&mut self, parts: Parts, mut init: init::CreatedInit) -> Pid {
        let pid = init.pid;
        let holder = init.holder.take();
        let Parts {
            create,
            spec,
            env,
            log,
            outputs,
            stdin,
            console: _,
            oom_baseline,
        } = parts;
        self.table.insert(
            create.id.clone(),
            Container {
                create,
                spec,
                env,
                pid,
                init: Some(init),
                holder,
                started_at: 0,
                exit: None,
                oom_baseline,
                outputs,
                log,
                stdin,
                waiters: Vec::new(),
                attachers: Vec::new(),
            },
        );
        pid
    }

    pub fn start(&mut self, id: &str) -> Reply {
        let Some(container) = self.table.get_mut(id) else {
            return not_found(id);
        };
        if container.exit.is_some() {
            return error(ErrorKind::NotRunning, format!("container {id} has exited"));
        }
        let Some(init) = container.init.take() else {
            return error(
                ErrorKind::NotRunning,
                format!("container {id} was started already"),
            );
        };
        match init.start() {
            Ok(()) => {
                container.started_at = runtime::now_nanos();
                self.events.push(MonitorEvent::ContainerStarted {
                    id: id.to_string(),
                    started_at: container.started_at,
                });
                Reply::Now(MonitorResponse::Started {
                    started_at: container.started_at,
                })
            }
            Err(e) => error(ErrorKind::StartFailed, e.to_string()),
        }
    }

    pub fn signal(&mut self, id: &str, signal: i32) -> Reply {
        let Some(container) = self.table.get(id) else {
            return not_found(id);
        };
        let signal = match Signal::try_from(signal) {
            Ok(signal) => signal,
            Err(_) => {
                return error(
                    ErrorKind::InvalidRequest,
                    format!("{signal} is not a signal"),
                );
            }
        };
        if container.exit.is_none()
            && let Err(e) = kill(container.pid, signal)
        {
            return error(ErrorKind::Internal, format!("signalling {id}: {e}"));
        }
        Reply::Now(MonitorResponse::Done)
    }

    pub fn wait(&mut self, id: &str, timeout: Duration, client: &Client) -> Reply {
        let Some(container) = self.table.get_mut(id) else {
            return not_found(id);
        };
        if let Some(exit) = container.exit {
            return Reply::Now(MonitorResponse::Exited(exit));
        }
        if timeout.is_zero() {
            return Reply::Now(MonitorResponse::StillRunning);
        }
        match client.try_clone() {
            Ok(client) => {
                container.waiters.push(Waiter {
                    client,
                    deadline: Instant::now() + timeout,
                });
                Reply::Later
            }
            Err(e) => error(ErrorKind::Internal, e.to_string()),
        }
    }

    pub fn remove(&mut self, id: &str) -> Reply {
        if let Some(index) = self.creating.iter().position(|c| c.parts.create.id == id) {
            // crid gave up on the create (it timed out) and rolls back.
            let why = io::Error::other(format!("container {id} was removed while being created"));
            self.creating.swap_remove(index).end(why, true);
        }
        if self.table.contains_key(id) {
            self.kill_and_reap(id);
            self.table.remove(id);
        }
        Reply::Now(MonitorResponse::Done)
    }

    pub fn states(&self) -> Vec<ContainerState> {
        self.table
            .iter()
            .map(|(id, c)| ContainerState {
                id: id.clone(),
                pid: c.pid.as_raw(),
                started_at: c.started_at,
                exit: c.exit,
            })
            .collect()
    }

    /// Something that happened outside the containers (pause's end).
    pub fn push_event(&mut self, event: MonitorEvent) {
        self.events.push(event);
    }

    /// What happened since the last call, in order.
    pub fn take_events(&mut self) -> Vec<MonitorEvent> {
        std::mem::take(&mut self.events)
    }

    pub fn reopen_log(&mut self, id: &str) -> Reply {
        let Some(container) = self.table.get_mut(id) else {
            return not_found(id);
        };
        if container.exit.is_some() {
            return error(
                ErrorKind::NotRunning,
                format!("container {id} is not running"),
            );
        }
        match container.log.as_mut().map(CriLog::reopen) {
            Some(Err(e)) => error(
                ErrorKind::Internal,
                format!("reopening the log of {id}: {e}"),
            ),
            _ => Reply::Now(MonitorResponse::Done),
        }
    }

    pub fn exec(&mut self, id: &str, args: &[String], timeout: Duration, client: &Client) -> Reply {
        let Some(container) = self.table.get(id) else {
            return not_found(id);
        };
        if container.exit.is_some() || container.init.is_some() {
            return error(
                ErrorKind::NotRunning,
                format!("container {id} is not running"),
            );
        }
        if args.is_empty() {
            return error(ErrorKind::InvalidRequest, "exec needs a command");
        }
        let session = (|| {
            let stdin = OwnedFd::from(File::open("/dev/null")?);
            let (stdio, outputs) = output_pipes(stdin)?;
            let pid = init::exec(
                container.pid,
                &container.spec,
                &container.env,
                args,
                &container.create.cgroup_procs,
                stdio,
            )?;
            Ok::<_, io::Error>(ExecSession {
                pid,
                outputs,
                stdout: CappedOutput::default(),
                stderr: CappedOutput::default(),
                client: client.try_clone()?,
                deadline: (!timeout.is_zero()).then(|| Instant::now() + timeout),
                timed_out: false,
            })
        })();
        match session {
            Ok(session) => {
                self.execs.push(session);
                Reply::Later
            }
            Err(e) => error(ErrorKind::ExecFailed, format!("exec in {id}: {e}")),
        }
    }

    /// Attaches crid's connection to a running container's stdio (see
    /// `MonitorRequest::Attach`).
    pub fn attach(&mut self, id: &str, client: &Client) -> Reply {
        let token = self.attacher_tokens + 1;
        let Some(container) = self.table.get_mut(id) else {
            return not_found(id);
        };
        if container.exit.is_some() || container.init.is_some() {
            return error(
                ErrorKind::NotRunning,
                format!("container {id} is not running"),
            );
        }
        let attacher = (|| {
            let mut client = client.try_clone()?;
            client.answer(&MonitorResponse::Attached {
                tty: container.create.tty,
            })?;
            client.stream.set_nonblocking(true)?;
            Ok::<_, io::Error>(Attacher {
                token,
                stream: client.stream,
                framing: client.framing,
                unsent: Vec::new(),
                received: Vec::new(),
            })
        })();
        match attacher {
            Ok(attacher) => {
                self.attacher_tokens = token;
                container.attachers.push(attacher);
            }
            Err(e) => eprintln!("crid-monitor: attaching to {id}: {e}"),
        }
        Reply::Later
    }

    /// What an attacher sent (stdin, its end, a resize), and what it can
    /// take of its backlog; a closed one is detached.
    fn serve_attacher(&mut self, token: u64) {
        let Some(container) = self
            .table
            .values_mut()
            .find(|c| c.attachers.iter().any(|a| a.token == token))
        else {
            return;
        };
        let Some(index) = container.attachers.iter().position(|a| a.token == token) else {
            return;
        };
        let Some(requests) = container.attachers[index].read() else {
            container.attachers.swap_remove(index);
            return;
        };
        for request in requests {
            match request {
                MonitorRequest::AttachInput { data } => {
                    // Non-blocking: input a container does not read now is
                    // dropped rather than stall the pod's monitor.
                    if let Some(stdin) = container.stdin.as_ref() {
                        let mut rest = data.as_slice();
                        while !rest.is_empty() {
                            match nix::unistd::write(stdin, rest) {
                                Ok(n) => rest = &rest[n..],
                                Err(nix::errno::Errno::EINTR) => {}
                                Err(e) => {
                                    eprintln!(
                                        "crid-monitor: stdin of {}: {} bytes dropped: {e}",
                                        container.create.id,
                                        rest.len()
                                    );
                                    break;
                                }
                            }
                        }
                    }
                }
                MonitorRequest::AttachCloseStdin if container.create.stdin_once => {
                    container.stdin = None;
                }
                MonitorRequest::AttachResize { width, height } => {
                    if container.create.tty
                        && let Some(master) = container.outputs.first()
                        && let Err(e) = runtime::set_window_size(master.file.as_fd(), width, height)
                    {
                        eprintln!("crid-monitor: resizing {}: {e}", container.create.id);
                    }
                }
                _ => {}
            }
        }
        if !container.attachers[index].flush() {
            container.attachers.swap_remove(index);
        }
    }

    /// Starts an exec whose stdio goes to crid: the descriptors crid keeps
    /// travel with the `ExecStarted` answer (SCM_RIGHTS); the monitor
    /// keeps none of them, so crid's closing stdin is the process's EOF.
    pub fn exec_attached(&mut self, exec: ExecAttached, client: &Client) -> Reply {
        let id = exec.id.as_str();
        let Some(container) = self.table.get(id) else {
            return not_found(id);
        };
        if container.exit.is_some() || container.init.is_some() {
            return error(
                ErrorKind::NotRunning,
                format!("container {id} is not running"),
            );
        }
        if exec.args.is_empty() {
            return error(ErrorKind::InvalidRequest, "exec needs a command");
        }
        let started = (|| {
            let (stdio, for_crid) = attached_stdio(&exec, container.pid)?;
            let pid = init::exec(
                container.pid,
                &container.spec,
                &container.env,
                &exec.args,
                &container.create.cgroup_procs,
                stdio,
            )?;
            Ok::<_, io::Error>((pid, for_crid))
        })();
        let (pid, for_crid) = match started {
            Ok(started) => started,
            Err(e) => return error(ErrorKind::ExecFailed, format!("exec in {id}: {e}")),
        };
        let client = match client.try_clone() {
            Ok(client) => client,
            Err(e) => {
                kill_exec(pid);
                return error(ErrorKind::Internal, format!("exec in {id}: {e}"));
            }
        };
        let sent = encode_frame(
            &MonitorResponse::ExecStarted { pid: pid.as_raw() },
            client.framing,
        )
        .and_then(|frame| runtime::sys::send_with_fds(client.stream.as_fd(), &frame, &for_crid));
        // The monitor's copies go: crid holds the only ones now.
        drop(for_crid);
        if let Err(e) = sent.and_then(|()| client.stream.set_nonblocking(true)) {
            eprintln!("crid-monitor: handing exec {pid} to crid: {e}");
            kill_exec(pid);
            let _ = client.stream.shutdown(std::net::Shutdown::Both);
        }
        self.attached.push(AttachedExec {
            pid,
            client,
            abandoned: false,
        });
        Reply::Later
    }

    /// Copies what is readable on `owner`'s descriptors (or takes crid's
    /// answer to a `Place`).
    pub fn drain(&mut self, owner: &OutputOwner) {
        match owner {
            OutputOwner::Creating(id) => self.create_progress(id),
            OutputOwner::Container(id) => {
                if let Some(c) = self.table.get_mut(id) {
                    let log = &mut c.log;
                    let attachers = &mut c.attachers;
                    c.outputs.retain_mut(|o| {
                        let open = copy_available(o, |stream, data| {
                            if let Some(log) = log.as_mut()
                                && let Err(e) = log.write(stream, data, SystemTime::now())
                            {
                                eprintln!("crid-monitor: log of {id}: {e}");
                            }
                            let output = MonitorResponse::AttachOutput {
                                stderr: stream == Stream::Stderr,
                                data: data.to_vec(),
                            };
                            attachers.retain_mut(|a| a.queue(&output));
                        });
                        // A stream at EOF ends its pending partial line.
                        if !open && let Some(log) = log.as_mut() {
                            let _ = log.finish(o.stream, SystemTime::now());
                        }
                        open
                    });
                    c.attachers.retain_mut(Attacher::flush);
                }
            }
            OutputOwner::Attacher(token) => self.serve_attacher(*token),
            OutputOwner::AttachedExec(pid) => {
                if let Some(a) = self.attached.iter_mut().find(|a| a.pid == *pid)
                    && !connection_open(&mut a.client.stream)
                {
                    // crid's session ended first: so does the process.
                    a.abandoned = true;
                    kill_exec(a.pid);
                }
            }
            OutputOwner::Exec(pid) => {
                if let Some(e) = self.execs.iter_mut().find(|e| e.pid == *pid) {
                    let (stdout, stderr) = (&mut e.stdout, &mut e.stderr);
                    e.outputs.retain_mut(|o| {
                        copy_available(o, |stream, data| match stream {
                            Stream::Stdout => stdout.push(data),
                            Stream::Stderr => stderr.push(data),
                        })
                    });
                }
            }
        }
    }

    /// Acts on passed deadlines: waiters get `StillRunning`, execs are
    /// killed, creates that crid did not place end.
    pub fn expire(&mut self) {
        let now = Instant::now();
        let (due, waiting): (Vec<Creating>, Vec<Creating>) = self
            .creating
            .drain(..)
            .partition(|c| c.deadline.is_some_and(|d| d <= now));
        self.creating = waiting;
        for creating in due {
            creating.end(io::Error::other("crid did not answer Place in time"), false);
        }
        for c in self.table.values_mut() {
            let (due, waiting): (Vec<Waiter>, Vec<Waiter>) =
                c.waiters.drain(..).partition(|w| w.deadline <= now);
            c.waiters = waiting;
            for mut w in due {
                let _ = w.client.answer(&MonitorResponse::StillRunning);
            }
        }
        for e in &mut self.execs {
            if !e.timed_out && e.deadline.is_some_and(|d| d <= now) {
                e.timed_out = true;
                // The exec leads its own session: its children go with it.
                let _ = nix::sys::signal::killpg(e.pid, Signal::SIGKILL);
                let _ = kill(e.pid, Signal::SIGKILL);
            }
        }
    }

    /// A reaped child: true if it was one of ours.
    pub fn exited(&mut self, pid: Pid, status: ExitStatus) -> bool {
        if let Some(id) = self
            .table
            .iter()
            .find(|(_, c)| c.pid == pid && c.exit.is_none())
            .map(|(id, _)| id.clone())
        {
            self.record_exit(&id, status);
            return true;
        }
        if let Some(index) = self.attached.iter().position(|a| a.pid == pid) {
            let mut attached = self.attached.swap_remove(index);
            if !attached.abandoned {
                let ended = MonitorResponse::ExecEnded { exit: status };
                // Blocking again for the one small frame (bounded by the
                // connection's write timeout).
                let answered = attached
                    .client
                    .stream
                    .set_nonblocking(false)
                    .and_then(|()| attached.client.answer(&ended));
                if let Err(e) = answered {
                    eprintln!("crid-monitor: telling crid exec {pid} ended: {e}");
                }
            }
            return true;
        }
        if self.execs.iter().any(|e| e.pid == pid) {
            self.drain(&OutputOwner::Exec(pid));
        }
        if let Some(index) = self.execs.iter().position(|e| e.pid == pid) {
            let mut session = self.execs.swap_remove(index);
            let (stdout, stderr) = exec_output(
                std::mem::take(&mut session.stdout),
                std::mem::take(&mut session.stderr),
            );
            let response = MonitorResponse::ExecResult {
                stdout,
                stderr,
                exit: (!session.timed_out).then_some(status),
            };
            if let Err(e) = session.client.answer(&response) {
                eprintln!("crid-monitor: answering exec {pid}: {e}");
            }
            return true;
        }
        false
    }

    fn record_exit(&mut self, id: &str, status: ExitStatus) {
        // Output written just before the exit belongs in the log first.
        self.drain(&OutputOwner::Container(id.to_string()));
        let Some(c) = self.table.get_mut(id) else {
            return;
        };
        let oom_killed = c
            .create
            .oom_events
            .as_deref()
            .is_some_and(|file| oom_kills(file) > c.oom_baseline);
        let exit = ContainerExit {
            status,
            finished_at: runtime::now_nanos(),
            oom_killed,
        };
        c.exit = Some(exit);
        c.init = None;
        // Its OOM count is read: the cgroup may go now.
        c.holder = None;
        if let Err(e) = write_exit_file(&c.create.bundle, &exit) {
            eprintln!("crid-monitor: recording the exit of {id}: {e}");
        }
        for mut w in c.waiters.drain(..) {
            let _ = w.client.answer(&MonitorResponse::Exited(exit));
        }
        for mut attacher in c.attachers.drain(..) {
            // As much as the socket takes now; the rest is lost with it.
            if attacher.queue(&MonitorResponse::AttachEnded { exit: status }) {
                attacher.flush();
            }
        }
        self.events.push(MonitorEvent::ContainerExited {
            id: id.to_string(),
            exit,
        });
    }

    fn kill_and_reap(&mut self, id: &str) {
        let Some(c) = self.table.get(id) else {
            return;
        };
        if c.exit.is_some() {
            return;
        }
        let pid = c.pid;
        let _ = kill(pid, Signal::SIGKILL);
        let status = waitpid(pid, None)
            .ok()
            .and_then(crate::exit_status)
            .unwrap_or(ExitStatus::Signaled(Signal::SIGKILL as i32));
        self.record_exit(id, status);
    }

    /// The pod goes away: every container is killed and its exit recorded.
    pub fn kill_all(&mut self) {
        for creating in std::mem::take(&mut self.creating) {
            creating.end(io::Error::other("the pod is shutting down"), true);
        }
        for attached in &self.attached {
            kill_exec(attached.pid);
        }
        let ids: Vec<String> = self.table.keys().cloned().collect();
        for id in ids {
            self.kill_and_reap(&id);
        }
    }
}

/// The container's stdio: pipes whose child ends go to the init and whose
/// read ends the monitor watches, or for a tty a socket the init sends its
/// pty master on ([`InitStdio::Terminal`]). Also the write end of stdin
/// (for attach) and the monitor's end of that socket.
fn container_stdio(create: &ContainerCreate) -> io::Result<StdioEnds> {
    if create.tty {
        let (ours, theirs) = UnixStream::pair()?;
        return Ok(StdioEnds {
            child: InitStdio::Terminal(theirs.into()),
            outputs: Vec::new(),
            stdin: None,
            console: Some(ours.into()),
        });
    }
    let (stdin_child, stdin_keep) = if create.stdin {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        set_nonblocking_cloexec(&write)?;
        (read, Some(write))
    } else {
        (OwnedFd::from(File::open("/dev/null")?), None)
    };
    let (stdio, outputs) = output_pipes(stdin_child)?;
    Ok(StdioEnds {
        child: stdio.into(),
        outputs,
        stdin: stdin_keep,
        console: None,
    })
}

/// What [`container_stdio`] makes: the init's ends, and the monitor's.
struct StdioEnds {
    child: InitStdio,
    outputs: Vec<Output>,
    stdin: Option<OwnedFd>,
    console: Option<OwnedFd>,
}

/// The child's stdio of an attached exec, and the ends crid gets: a pty's
/// master, or stdin's write end (if asked for) then stdout's and
/// stderr's read ends.
fn attached_stdio(exec: &ExecAttached, init: Pid) -> io::Result<(ChildStdio, Vec<OwnedFd>)> {
    if exec.tty {
        let (master, slave) = container_pty(init)?;
        let stdio = ChildStdio {
            stdin: slave.try_clone()?,
            stdout: slave.try_clone()?,
            stderr: slave,
        };
        return Ok((stdio, vec![master]));
    }
    let mut for_crid = Vec::new();
    let stdin = if exec.stdin {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        for_crid.push(write);
        read
    } else {
        OwnedFd::from(File::open("/dev/null")?)
    };
    let (stdout_read, stdout_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (stderr_read, stderr_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    for_crid.extend([stdout_read, stderr_read]);
    let stdio = ChildStdio {
        stdin,
        stdout: stdout_write,
        stderr: stderr_write,
    };
    Ok((stdio, for_crid))
}

/// A pty of the container's own devpts ([`crate::pty`]), reached through
/// its init's root.
fn container_pty(init: Pid) -> io::Result<(OwnedFd, OwnedFd)> {
    let root = nix::fcntl::open(
        format!("/proc/{init}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    crate::pty::open_beneath(root.as_fd())
}

/// Whether crid still holds the (non-blocking) connection: what it sends
/// is ignored, EOF or an error means it is gone.
fn connection_open(stream: &mut UnixStream) -> bool {
    let mut scratch = [0u8; 256];
    loop {
        match stream.read(&mut scratch) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Kills an exec and what it started: it leads its own session.
fn kill_exec(pid: Pid) {
    let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
    let _ = kill(pid, Signal::SIGKILL);
}

/// A stdout and a stderr pipe: the write ends (with `stdin`) for the child,
/// the read ends for the monitor's poll loop.
fn output_pipes(stdin: OwnedFd) -> io::Result<(ChildStdio, Vec<Output>)> {
    let (stdout_read, stdout_write) = pipe_nonblocking_read()?;
    let (stderr_read, stderr_write) = pipe_nonblocking_read()?;
    Ok((
        ChildStdio {
            stdin,
            stdout: stdout_write,
            stderr: stderr_write,
        },
        vec![
            Output {
                stream: Stream::Stdout,
                file: File::from(stdout_read),
            },
            Output {
                stream: Stream::Stderr,
                file: File::from(stderr_read),
            },
        ],
    ))
}

fn pipe_nonblocking_read() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    set_nonblocking_cloexec(&read)?;
    Ok((read, write))
}

fn set_nonblocking_cloexec(fd: &OwnedFd) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    fcntl(fd, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// Reads until the pipe is empty; false once it is at EOF (or broken).
fn copy_available(output: &mut Output, mut sink: impl FnMut(Stream, &[u8])) -> bool {
    let mut buffer = vec![0u8; READ_CHUNK];
    loop {
        match output.file.read(&mut buffer) {
            Ok(0) => return false,
            Ok(n) => sink(output.stream, &buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EIO: a pty whose last slave closed.
            Err(_) => return false,
        }
    }
}

/// The kernel's OOM-kill count in the file (0 when unreadable: no memory
/// controller means no OOM kill to report).
fn oom_kills(file: &Path) -> u64 {
    runtime::cgroup::oom_kills(file).unwrap_or(0)
}

/// The exit record, durably: temp file, fsync, rename, fsync of the dir.
fn write_exit_file(bundle: &Path, exit: &ContainerExit) -> io::Result<()> {
    let json = serde_json::to_vec(exit).map_err(io::Error::other)?;
    let temp = bundle.join(format!("{EXIT_FILE}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    file.write_all(&json)?;
    file.sync_all()?;
    fs::rename(&temp, bundle.join(EXIT_FILE))?;
    File::open(bundle)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::PathBuf;

    use super::*;

    /// A CreateContainer as crid sends it, with `log` and `log_path` as given.
    fn create(log: serde_json::Value, log_path: serde_json::Value) -> ContainerCreate {
        let mut json = serde_json::json!({
            "id": "c1",
            "bundle": "/run/crid/containers/c1",
            "cgroup_procs": [],
            "oom_events": null,
            "cgroup_view": "v2",
            "log_path": log_path,
            "stdin": false,
            "stdin_once": false,
            "tty": false,
        });
        if !log.is_null() {
            json["log"] = log;
        }
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn exec_output_is_capped_per_stream_and_the_cut_is_said_in_stderr() {
        let (mut out, mut err) = (CappedOutput::default(), CappedOutput::default());
        out.push(&vec![b'o'; MAX_EXEC_OUTPUT - 1]);
        out.push(b"xyz");
        err.push(b"oops");
        let (stdout, stderr) = exec_output(out, err);
        assert_eq!(stdout.len(), MAX_EXEC_OUTPUT);
        assert!(stdout.ends_with(b"ox"));
        let stderr = String::from_utf8(stderr).unwrap();
        assert!(
            stderr.starts_with("oops\ncrid: exec stdout truncated"),
            "{stderr}"
        );
        assert!(stderr.contains("(2 more bytes dropped)"), "{stderr}");

        let (stdout, stderr) = exec_output(CappedOutput::default(), CappedOutput::default());
        assert!(stdout.is_empty() && stderr.is_empty());
    }

    #[test]
    fn the_log_is_resolved_beneath_its_directory_also_for_an_older_crid() {
        // This crid's request: `log` wins over the joined path.
        let new = create(
            serde_json::json!({"directory": "/var/log/pods/p", "relative": "app/0.log"}),
            "/var/log/pods/p/app/0.log".into(),
        );
        let want = LogFile {
            directory: PathBuf::from("/var/log/pods/p"),
            relative: PathBuf::from("app/0.log"),
        };
        assert_eq!(log_file(&new).unwrap(), Some(want));

        // An older crid's request has only `log_path`: its file name
        // beneath its parent.
        let old = create(serde_json::Value::Null, "/var/log/pods/p/app/0.log".into());
        assert_eq!(old.log, None);
        assert_eq!(
            log_file(&old).unwrap(),
            Some(LogFile {
                directory: PathBuf::from("/var/log/pods/p/app"),
                relative: PathBuf::from("0.log"),
            })
        );
        let climbing = create(
            serde_json::Value::Null,
            "/var/log/pods/p/../../../tmp/x.log".into(),
        );
        let e = log_file(&climbing).unwrap_err();
        assert!(e.to_string().contains("/tmp/x.log"), "{e}");
        let relative = create(serde_json::Value::Null, "x.log".into());
        assert!(log_file(&relative).is_err());

        // No log at all: output is dropped.
        let none = create(serde_json::Value::Null, serde_json::Value::Null);
        assert_eq!(log_file(&none).unwrap(), None);
    }
}
