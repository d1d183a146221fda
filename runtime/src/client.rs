//! crid's side of the monitor: start one for a pod, then talk to it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proto::monitor::{
    CONFIG_FILE, ErrorKind, ExecAttached, ExitStatus, FIRST_PROTOCOL_VERSION, MonitorConfig,
    MonitorEvent, MonitorRequest, MonitorResponse, MonitorStarted, SOCKET_FILE, Snapshot,
};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::UnixStream;

use crate::wire::{Framing, read_frame_async, short_path, take_frame, write_frame_async};

/// Bounds, not expectations: a monitor that takes longer is broken.
const START_TIMEOUT: Duration = Duration::from_secs(30);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot start crid-monitor {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("crid-monitor for {pod_dir} failed: {message}")]
    Failed {
        pod_dir: PathBuf,
        message: String,
        /// The sysctl the pod's namespaces refused, if that is why.
        sysctl: Option<String>,
    },
    #[error("crid-monitor for {pod_dir} did not answer within {timeout:?}")]
    Timeout { pod_dir: PathBuf, timeout: Duration },
    #[error("crid-monitor for {pod_dir} is unreachable: {source}")]
    Unreachable {
        pod_dir: PathBuf,
        source: std::io::Error,
    },
    #[error("crid-monitor config {path}: {source}")]
    Config {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The monitor refused the request; `kind` says why (`Unknown` from
    /// monitors of protocol version 1).
    #[error("crid-monitor for {pod_dir}: {message}")]
    Refused {
        pod_dir: PathBuf,
        kind: ErrorKind,
        message: String,
    },
    /// The pod's monitor was started by an older crid and does not know
    /// the request; it would drop the connection on it.
    #[error(
        "the monitor of pod dir {pod_dir} speaks protocol version {monitor_version}, \
         older than {request} needs; recreate the pod for it"
    )]
    Unsupported {
        pod_dir: PathBuf,
        request: &'static str,
        monitor_version: u32,
    },
    #[error("crid-monitor for {pod_dir} answered {request} with {response}")]
    Unexpected {
        pod_dir: PathBuf,
        request: &'static str,
        response: String,
    },
}

/// What a started monitor reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedMonitor {
    pub monitor_pid: i32,
    pub pause_pid: i32,
}

/// Talks to the monitor of the pod whose state dir is `pod_dir`, in the
/// protocol version that monitor was started with.
#[derive(Debug, Clone)]
pub struct MonitorClient {
    pod_dir: PathBuf,
    /// The monitor's protocol version, from its `monitor.json`, once read
    /// (shared by clones).
    version: Arc<OnceLock<u32>>,
}

/// What `monitor.json` says of the version; everything else in it is the
/// monitor's business.
#[derive(serde::Deserialize)]
struct ConfigVersion {
    #[serde(default = "first_protocol_version")]
    protocol: u32,
}

fn first_protocol_version() -> u32 {
    FIRST_PROTOCOL_VERSION
}

impl MonitorClient {
    pub fn new(pod_dir: &Path) -> MonitorClient {
        MonitorClient {
            pod_dir: pod_dir.to_path_buf(),
            version: Arc::default(),
        }
    }

    /// The protocol version the pod's monitor was started with: what its
    /// `monitor.json` says (a config without it is version 1's).
    pub async fn protocol_version(&self) -> Result<u32, MonitorError> {
        if let Some(version) = self.version.get() {
            return Ok(*version);
        }
        let path = self.pod_dir.join(CONFIG_FILE);
        let config_error = |source| MonitorError::Config {
            path: path.clone(),
            source,
        };
        let json = tokio::fs::read(&path).await.map_err(config_error)?;
        let config: ConfigVersion = serde_json::from_slice(&json)
            .map_err(|e| config_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        Ok(*self.version.get_or_init(|| config.protocol))
    }

    /// The framing to send `request` in: version 2 framing to monitors
    /// that read it, so exec output comes back as raw bytes. Requests that
    /// every version knows and that carry no bytes skip reading the
    /// version.
    async fn framing_for(&self, request: &MonitorRequest) -> Result<Framing, MonitorError> {
        let needs_version = request.since() > FIRST_PROTOCOL_VERSION
            || matches!(request, MonitorRequest::Exec { .. });
        if !needs_version {
            return Ok(Framing::V1);
        }
        let version = self.protocol_version().await?;
        if version < request.since() {
            return Err(MonitorError::Unsupported {
                pod_dir: self.pod_dir.clone(),
                request: request.name(),
                monitor_version: version,
            });
        }
        Ok(if version >= 2 {
            Framing::V2
        } else {
            Framing::V1
        })
    }

    fn refused(&self, kind: ErrorKind, message: String) -> MonitorError {
        MonitorError::Refused {
            pod_dir: self.pod_dir.clone(),
            kind,
            message,
        }
    }

    fn unexpected(&self, request: &MonitorRequest, response: &MonitorResponse) -> MonitorError {
        MonitorError::Unexpected {
            pod_dir: self.pod_dir.clone(),
            request: request.name(),
            response: format!("{response:?}"),
        }
    }

    /// Asks the monitor for its version (a version 2 monitor; older ones
    /// are `Unsupported` without asking).
    pub async fn hello(&self) -> Result<u32, MonitorError> {
        match self.request(&MonitorRequest::Hello).await? {
            MonitorResponse::Hello { version } => Ok(version),
            other => Err(self.unexpected(&MonitorRequest::Hello, &other)),
        }
    }

    /// Subscribes to the monitor's events: the snapshot it answers with,
    /// then every event, in order, until the connection ends (the monitor
    /// exited, or this subscriber fell too far behind: subscribe again).
    pub async fn subscribe(&self) -> Result<Subscription, MonitorError> {
        let request = MonitorRequest::Subscribe;
        let framing = self.framing_for(&request).await?;
        let exchange = async {
            let (_dir, socket) = short_path(&self.pod_dir, SOCKET_FILE)?;
            let mut stream = UnixStream::connect(socket).await?;
            write_frame_async(&mut stream, &request, framing).await?;
            let response = read_frame_async::<MonitorResponse>(&mut stream).await?;
            Ok::<_, std::io::Error>((stream, response))
        };
        let (stream, response) = self.bounded(REQUEST_TIMEOUT, exchange).await?;
        match response {
            MonitorResponse::Subscribed(snapshot) => Ok(Subscription {
                pod_dir: self.pod_dir.clone(),
                stream,
                received: Vec::new(),
                snapshot,
            }),
            MonitorResponse::Error { kind, message } => Err(self.refused(kind, message)),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    async fn bounded<T>(
        &self,
        timeout: Duration,
        exchange: impl Future<Output = std::io::Result<T>>,
    ) -> Result<T, MonitorError> {
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(MonitorError::Timeout {
                pod_dir: self.pod_dir.clone(),
                timeout,
            }),
            Ok(Err(source)) => Err(MonitorError::Unreachable {
                pod_dir: self.pod_dir.clone(),
                source,
            }),
            Ok(Ok(value)) => Ok(value),
        }
    }

    /// Writes the monitor's config into the pod dir and starts `binary`
    /// in it, returning once pause runs in its namespaces. The
    /// launcher process exits (and is reaped here); the monitor detaches.
    pub async fn start(
        &self,
        binary: &Path,
        config: &MonitorConfig,
    ) -> Result<StartedMonitor, MonitorError> {
        let config_path = self.pod_dir.join(CONFIG_FILE);
        let json = serde_json::to_vec(config).map_err(|e| MonitorError::Config {
            path: config_path.clone(),
            source: std::io::Error::other(e),
        })?;
        tokio::fs::write(&config_path, json)
            .await
            .map_err(|source| MonitorError::Config {
                path: config_path.clone(),
                source,
            })?;
        let launcher = tokio::process::Command::new(binary)
            // No path in argv: pause and every fork of the monitor that has
            // not exec'd show it as /proc/<pid>/cmdline to the pod. The
            // monitor takes its pod dir from its working directory.
            .arg0("crid-monitor")
            .current_dir(&self.pod_dir)
            // Nothing of crid's environment is the monitor's business, and
            // pause, a fork that never execs, shows the monitor's
            // environment in /proc/<pid>/environ to its pod.
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| MonitorError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })?;
        let output = tokio::time::timeout(START_TIMEOUT, launcher.wait_with_output())
            .await
            .map_err(|_| MonitorError::Timeout {
                pod_dir: self.pod_dir.clone(),
                timeout: START_TIMEOUT,
            })?
            .map_err(|source| MonitorError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        match serde_json::from_str::<MonitorStarted>(stdout.trim()) {
            Ok(MonitorStarted::Ready {
                monitor_pid,
                pause_pid,
            }) => {
                let _ = self.version.set(config.protocol);
                Ok(StartedMonitor {
                    monitor_pid,
                    pause_pid,
                })
            }
            Ok(MonitorStarted::Failed { message, sysctl }) => Err(MonitorError::Failed {
                pod_dir: self.pod_dir.clone(),
                message,
                sysctl,
            }),
            Err(_) => Err(self.failed(format!(
                "exit {}, stdout {stdout:?}, stderr {:?}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))),
        }
    }

    fn failed(&self, message: String) -> MonitorError {
        MonitorError::Failed {
            pod_dir: self.pod_dir.clone(),
            message,
            sysctl: None,
        }
    }

    /// A request the monitor may answer with `Place` first (a
    /// CreateContainer with `placed_by_crid`): `place` gets the pids to put
    /// into the container's cgroup. Its error is returned inside once the
    /// monitor has ended that create (it reaps the unplaced init).
    pub async fn request_placing<E>(
        &self,
        request: &MonitorRequest,
        place: impl AsyncFnOnce(Vec<i32>) -> Result<(), E>,
    ) -> Result<Result<MonitorResponse, E>, MonitorError> {
        let framing = self.framing_for(request).await?;
        let exchange = async {
            let (_dir, socket) = short_path(&self.pod_dir, SOCKET_FILE)?;
            let mut stream = UnixStream::connect(socket).await?;
            write_frame_async(&mut stream, request, framing).await?;
            let response = read_frame_async::<MonitorResponse>(&mut stream).await?;
            let MonitorResponse::Place { pids } = response else {
                return Ok(Ok(response));
            };
            match place(pids).await {
                Ok(()) => {
                    write_frame_async(&mut stream, &MonitorRequest::Placed, framing).await?;
                    read_frame_async::<MonitorResponse>(&mut stream)
                        .await
                        .map(Ok)
                }
                Err(error) => {
                    // EOF instead of Placed; its answer says the init is gone.
                    tokio::io::AsyncWriteExt::shutdown(&mut stream).await?;
                    let _ = read_frame_async::<MonitorResponse>(&mut stream).await;
                    Ok(Err(error))
                }
            }
        };
        match self.bounded(REQUEST_TIMEOUT, exchange).await? {
            Ok(MonitorResponse::Error { kind, message }) => Err(self.refused(kind, message)),
            result => Ok(result),
        }
    }

    /// Starts `exec` with its stdio handed to crid (`ExecAttached`): the
    /// descriptors, and the connection that says how it ended. Dropping
    /// the [`ExecEnding`] before that kills the process.
    pub async fn exec_attached(&self, exec: ExecAttached) -> Result<AttachedExec, MonitorError> {
        let request = MonitorRequest::ExecAttached(exec);
        let framing = self.framing_for(&request).await?;
        let exchange = async {
            let (_dir, socket) = short_path(&self.pod_dir, SOCKET_FILE)?;
            let mut stream = UnixStream::connect(socket).await?;
            write_frame_async(&mut stream, &request, framing).await?;
            let mut received = Vec::new();
            let mut fds = Vec::new();
            loop {
                if let Some((response, _)) = take_frame::<MonitorResponse>(&mut received)? {
                    return Ok((stream, received, fds, response));
                }
                let mut chunk = [0u8; 4096];
                let (read, more) = stream
                    .async_io(Interest::READABLE, || {
                        crate::sys::recv_with_fds(std::os::fd::AsFd::as_fd(&stream), &mut chunk)
                    })
                    .await?;
                if read == 0 && more.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the monitor closed the connection without an answer",
                    ));
                }
                received.extend_from_slice(&chunk[..read]);
                fds.extend(more);
            }
        };
        let (stream, received, fds, response) = self.bounded(REQUEST_TIMEOUT, exchange).await?;
        match response {
            MonitorResponse::ExecStarted { pid } => Ok(AttachedExec {
                pid,
                fds,
                ending: ExecEnding {
                    pod_dir: self.pod_dir.clone(),
                    stream,
                    received,
                },
            }),
            MonitorResponse::Error { kind, message } => Err(self.refused(kind, message)),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    /// Attaches to a running container's stdio (`Attach`): its output
    /// from now on, and a way to send it input. Dropping both halves
    /// detaches.
    pub async fn attach(&self, id: &str) -> Result<Attachment, MonitorError> {
        let request = MonitorRequest::Attach { id: id.to_string() };
        let framing = self.framing_for(&request).await?;
        let exchange = async {
            let (_dir, socket) = short_path(&self.pod_dir, SOCKET_FILE)?;
            let mut stream = UnixStream::connect(socket).await?;
            write_frame_async(&mut stream, &request, framing).await?;
            let mut received = Vec::new();
            loop {
                if let Some((response, _)) = take_frame::<MonitorResponse>(&mut received)? {
                    return Ok((stream, received, response));
                }
                if stream.read_buf(&mut received).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the monitor closed the connection without an answer",
                    ));
                }
            }
        };
        let (stream, received, response) = self.bounded(REQUEST_TIMEOUT, exchange).await?;
        match response {
            MonitorResponse::Attached { tty } => {
                let (read, write) = stream.into_split();
                Ok(Attachment {
                    tty,
                    output: AttachOutput {
                        pod_dir: self.pod_dir.clone(),
                        read,
                        received,
                    },
                    input: AttachInput { write, framing },
                })
            }
            MonitorResponse::Error { kind, message } => Err(self.refused(kind, message)),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    pub async fn request(&self, request: &MonitorRequest) -> Result<MonitorResponse, MonitorError> {
        self.request_within(request, REQUEST_TIMEOUT).await
    }

    /// A request the monitor answers later (Wait, Exec): `timeout` bounds
    /// the whole exchange.
    pub async fn request_within(
        &self,
        request: &MonitorRequest,
        timeout: Duration,
    ) -> Result<MonitorResponse, MonitorError> {
        let framing = self.framing_for(request).await?;
        let exchange = async {
            let (_dir, socket) = short_path(&self.pod_dir, SOCKET_FILE)?;
            let mut stream = UnixStream::connect(socket).await?;
            write_frame_async(&mut stream, request, framing).await?;
            read_frame_async::<MonitorResponse>(&mut stream).await
        };
        match self.bounded(timeout, exchange).await? {
            MonitorResponse::Error { kind, message } => Err(self.refused(kind, message)),
            response => Ok(response),
        }
    }
}

/// A monitor's events, as they happen, after the snapshot of where the pod
/// stood when they began.
#[derive(Debug)]
pub struct Subscription {
    pod_dir: PathBuf,
    stream: UnixStream,
    /// Bytes of frames not yet whole.
    received: Vec<u8>,
    snapshot: Snapshot,
}

impl Subscription {
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The next event. Cancel-safe (a `select!` may drop it half-way: what
    /// was read stays buffered). An error ends the subscription: the
    /// monitor exited, or disconnected a subscriber that fell behind.
    pub async fn next(&mut self) -> Result<MonitorEvent, MonitorError> {
        let ended = |source| MonitorError::Unreachable {
            pod_dir: self.pod_dir.clone(),
            source,
        };
        loop {
            if let Some((event, _)) = take_frame(&mut self.received).map_err(ended)? {
                return Ok(event);
            }
            match self.stream.read_buf(&mut self.received).await {
                Ok(0) => {
                    return Err(ended(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the monitor ended the subscription",
                    )));
                }
                Ok(_) => {}
                Err(error) => return Err(ended(error)),
            }
        }
    }
}

/// An exec whose stdio crid holds (see [`MonitorClient::exec_attached`]).
#[derive(Debug)]
pub struct AttachedExec {
    pub pid: i32,
    /// As the monitor sent them: a tty's master; or stdin's write end (if
    /// asked for), stdout's and stderr's read ends.
    pub fds: Vec<std::os::fd::OwnedFd>,
    pub ending: ExecEnding,
}

/// The monitor's connection of an attached exec: it says how the exec
/// ended; closing it first (dropping this) makes the monitor kill it.
#[derive(Debug)]
pub struct ExecEnding {
    pod_dir: PathBuf,
    stream: UnixStream,
    /// Bytes of frames not yet whole.
    received: Vec<u8>,
}

impl ExecEnding {
    /// How the exec ended.
    pub async fn wait(mut self) -> Result<ExitStatus, MonitorError> {
        let ended = |pod_dir: &Path, source| MonitorError::Unreachable {
            pod_dir: pod_dir.to_path_buf(),
            source,
        };
        loop {
            match take_frame::<MonitorResponse>(&mut self.received) {
                Err(error) => return Err(ended(&self.pod_dir, error)),
                Ok(Some((MonitorResponse::ExecEnded { exit }, _))) => return Ok(exit),
                Ok(Some((other, _))) => {
                    return Err(MonitorError::Unexpected {
                        pod_dir: self.pod_dir.clone(),
                        request: "ExecAttached",
                        response: format!("{other:?}"),
                    });
                }
                Ok(None) => {}
            }
            match self.stream.read_buf(&mut self.received).await {
                Ok(0) => {
                    return Err(ended(
                        &self.pod_dir,
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the monitor ended without saying how the exec ended",
                        ),
                    ));
                }
                Ok(_) => {}
                Err(error) => return Err(ended(&self.pod_dir, error)),
            }
        }
    }
}

/// An attach session with a container's stdio.
#[derive(Debug)]
pub struct Attachment {
    pub tty: bool,
    pub output: AttachOutput,
    pub input: AttachInput,
}

/// What an attached container writes, as it comes.
#[derive(Debug)]
pub struct AttachOutput {
    pod_dir: PathBuf,
    read: tokio::net::unix::OwnedReadHalf,
    received: Vec<u8>,
}

/// One piece of an attached container's output, or its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachEvent {
    Output { stderr: bool, data: Vec<u8> },
    Ended(ExitStatus),
}

impl AttachOutput {
    /// The next output. Cancel-safe (what was read stays buffered).
    pub async fn next(&mut self) -> Result<AttachEvent, MonitorError> {
        loop {
            let taken = take_frame::<MonitorResponse>(&mut self.received).map_err(|source| {
                MonitorError::Unreachable {
                    pod_dir: self.pod_dir.clone(),
                    source,
                }
            })?;
            match taken {
                Some((MonitorResponse::AttachOutput { stderr, data }, _)) => {
                    return Ok(AttachEvent::Output { stderr, data });
                }
                Some((MonitorResponse::AttachEnded { exit }, _)) => {
                    return Ok(AttachEvent::Ended(exit));
                }
                Some((other, _)) => {
                    return Err(MonitorError::Unexpected {
                        pod_dir: self.pod_dir.clone(),
                        request: "Attach",
                        response: format!("{other:?}"),
                    });
                }
                None => {}
            }
            let read = self.read.read_buf(&mut self.received).await;
            let source = match read {
                Ok(0) => std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the monitor ended the attach session",
                ),
                Ok(_) => continue,
                Err(error) => error,
            };
            return Err(MonitorError::Unreachable {
                pod_dir: self.pod_dir.clone(),
                source,
            });
        }
    }
}

/// Input for an attached container.
#[derive(Debug)]
pub struct AttachInput {
    write: tokio::net::unix::OwnedWriteHalf,
    framing: Framing,
}

impl AttachInput {
    /// Sends `AttachInput`, `AttachCloseStdin` or `AttachResize`.
    pub async fn send(&mut self, request: &MonitorRequest) -> std::io::Result<()> {
        write_frame_async(&mut self.write, request, self.framing).await
    }
}
