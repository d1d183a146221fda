//! crid's streaming server: what `Exec`, `Attach` and `PortForward` hand
//! out. Each RPC stores its request under a single-use token
//! ([`Requests`]) and answers with an absolute URL
//! `http://127.0.0.1:PORT/{exec,attach,portforward}/TOKEN`; the client
//! (crictl, or kubelet's proxy) then upgrades an HTTP request to that URL
//! to SPDY/3.1 (or, for exec, WebSocket) and runs the session over it
//! ([`serve`]).
//!
//! The crate knows no CRI types and runs nothing itself: the daemon
//! implements [`Backend`] (open a port in a pod, start a process in a
//! container) and this crate speaks the Kubernetes streaming protocols
//! over what the backend returns.

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;

mod fdio;
mod idle;
pub mod netns;
mod portforward;
mod remotecommand;
mod requests;
mod server;
mod tunnel;
mod websocket;

pub use requests::{Requests, TOKEN_TTL};
pub use server::{bind, serve};

/// The server's bounds on sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A session whose connection carries nothing for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// Sessions at once; more upgrades get 503.
    pub max_sessions: usize,
}

/// A boxed future of the backend (what outlives the call that made it).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// More requests wait for their client than [`requests::MAX_PENDING`].
    #[error("{0} streaming requests are waiting for their clients already; try again later")]
    TooManyPending(usize),
    #[error("no random bytes for a streaming token: {0}")]
    Random(String),
    #[error("the streaming server cannot be set up on {address}: {source}")]
    Bind {
        address: std::net::SocketAddr,
        source: io::Error,
    },
}

/// A command to run in a container, as `Exec` asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// An attach to a container's own stdio, as `Attach` asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// Port-forwarding into a pod, as `PortForward` asked for it. The client
/// names the port of each connection; `ports` is what the RPC listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    pub pod_id: String,
    pub ports: Vec<u16>,
}

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRequest {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl StreamRequest {
    /// The URL path segment of its kind.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamRequest::Exec(_) => "exec",
            StreamRequest::Attach(_) => "attach",
            StreamRequest::PortForward(_) => "portforward",
        }
    }
}

/// A process started for an exec session. Its descriptors are
/// non-blocking, the session's own (nothing else holds the other end's
/// copies it needs for EOF). Dropping `exit` before it resolves ends the
/// process: a session whose client went away leaves nothing running.
pub struct ExecProcess {
    /// The write end of its stdin (None: it got none, or `terminal` is it).
    pub stdin: Option<OwnedFd>,
    /// The read end of its stdout (None with a terminal).
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// The pty master of a tty exec: stdin, output and resize at once.
    pub terminal: Option<OwnedFd>,
    /// Resolves to the exit code (128 + signal for a killed process).
    pub exit: BoxFuture<io::Result<i32>>,
}

/// What an attached container writes, or that it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachOutput {
    Output { stderr: bool, data: bytes::Bytes },
    Ended,
}

/// What an attach session sends the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachInput {
    Data(bytes::Bytes),
    /// The client's stdin ended.
    Close,
    Resize {
        width: u16,
        height: u16,
    },
}

/// A session attached to a container's stdio. Dropping it detaches; the
/// container goes on.
pub struct AttachSession {
    pub output: tokio::sync::mpsc::Receiver<AttachOutput>,
    pub input: tokio::sync::mpsc::Sender<AttachInput>,
}

/// What the daemon does for the streaming sessions.
pub trait Backend: Send + Sync + 'static {
    /// A TCP connection to `127.0.0.1:port` inside the pod's network
    /// namespace.
    fn connect(
        &self,
        pod_id: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<tokio::net::TcpStream>> + Send;

    /// Starts `request.cmd` in the container; the error says why not.
    fn exec(
        &self,
        request: &ExecRequest,
    ) -> impl Future<Output = Result<ExecProcess, String>> + Send;

    /// Attaches to the container's own stdio; the error says why not.
    fn attach(
        &self,
        request: &AttachRequest,
    ) -> impl Future<Output = Result<AttachSession, String>> + Send;

    /// Sets the window size of an exec's terminal.
    fn resize(&self, terminal: &OwnedFd, width: u16, height: u16) -> io::Result<()>;
}
