//! Exec, Attach and PortForward: each validates its request and stores it
//! with the streaming server, answering with the URL the client upgrades
//! to. [`Streaming`] is also what the sessions ask of crid (a connection
//! into a pod, a process in a container, a container's stdio).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use proto::cri;
use proto::monitor::ExecAttached;
use streaming::{ExecProcess, ExecRequest, PortForwardRequest, StreamRequest};

use crate::containers::ContainerController;
use crate::error::CridError;
use crate::objects::{ContainerRecord, PodPhase};
use crate::pods::PodController;

/// The streaming side of the runtime service: the token registry, and the
/// controllers the sessions use.
pub struct Streaming {
    requests: Arc<streaming::Requests>,
    pods: Arc<PodController>,
    containers: Arc<ContainerController>,
}

/// The token URL of `request`.
fn url_for(requests: &streaming::Requests, request: StreamRequest) -> Result<String, CridError> {
    requests.insert(request).map_err(|error| match error {
        streaming::StreamingError::TooManyPending(_) => {
            CridError::ResourceExhausted(error.to_string())
        }
        other => CridError::Internal(other.to_string()),
    })
}

impl Streaming {
    pub fn new(
        requests: Arc<streaming::Requests>,
        pods: Arc<PodController>,
        containers: Arc<ContainerController>,
    ) -> Streaming {
        Streaming {
            requests,
            pods,
            containers,
        }
    }

    pub fn requests(&self) -> Arc<streaming::Requests> {
        self.requests.clone()
    }

    /// The container `id` names, which must be running (containerd refuses
    /// the same, before a token is made).
    async fn running(&self, id: &str) -> Result<Arc<ContainerRecord>, CridError> {
        let container = self.containers.find_existing(id)?;
        let state = self.containers.observe_one(&container).await.state;
        if state != cri::ContainerState::ContainerRunning {
            return Err(CridError::FailedPrecondition(format!(
                "container {} is not running ({})",
                container.id,
                state.as_str_name()
            )));
        }
        Ok(container)
    }

    pub async fn port_forward(
        &self,
        request: cri::PortForwardRequest,
    ) -> Result<cri::PortForwardResponse, CridError> {
        let pod = self.pods.find(&request.pod_sandbox_id)?.ok_or_else(|| {
            CridError::NotFound(format!(
                "pod sandbox {:?} not found",
                request.pod_sandbox_id
            ))
        })?;
        if pod.phase != PodPhase::Ready {
            return Err(CridError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        let ports = request
            .port
            .iter()
            .enumerate()
            .map(|(index, port)| {
                u16::try_from(*port).ok().filter(|p| *p > 0).ok_or_else(|| {
                    CridError::invalid(
                        format!("port[{index}]"),
                        port.to_string(),
                        "must be a TCP port, 1 to 65535",
                    )
                })
            })
            .collect::<Result<Vec<u16>, CridError>>()?;
        let url = url_for(
            &self.requests,
            StreamRequest::PortForward(PortForwardRequest {
                pod_id: pod.id.clone(),
                ports,
            }),
        )?;
        Ok(cri::PortForwardResponse { url })
    }

    pub async fn exec(&self, request: cri::ExecRequest) -> Result<cri::ExecResponse, CridError> {
        let container = self.running(&request.container_id).await?;
        if request.cmd.is_empty() {
            return Err(CridError::invalid("cmd", "[]", "a command is required"));
        }
        check_stdio(request.tty, request.stdin, request.stdout, request.stderr)?;
        let url = url_for(
            &self.requests,
            StreamRequest::Exec(ExecRequest {
                container_id: container.id.clone(),
                cmd: request.cmd,
                tty: request.tty,
                stdin: request.stdin,
                stdout: request.stdout,
                stderr: request.stderr,
            }),
        )?;
        Ok(cri::ExecResponse { url })
    }

    pub async fn attach(
        &self,
        request: cri::AttachRequest,
    ) -> Result<cri::AttachResponse, CridError> {
        let container = self.running(&request.container_id).await?;
        check_stdio(request.tty, request.stdin, request.stdout, request.stderr)?;
        let url = url_for(
            &self.requests,
            StreamRequest::Attach(streaming::AttachRequest {
                container_id: container.id.clone(),
                tty: request.tty,
                stdin: request.stdin,
                stdout: request.stdout,
                stderr: request.stderr,
            }),
        )?;
        Ok(cri::AttachResponse { url })
    }
}

impl streaming::Backend for Streaming {
    async fn connect(&self, pod_id: &str, port: u16) -> io::Result<tokio::net::TcpStream> {
        let pod = self
            .pods
            .find(pod_id)
            .ok()
            .flatten()
            .filter(|pod| pod.phase == PodPhase::Ready)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("pod sandbox {pod_id} is gone or not ready"),
                )
            })?;
        match &pod.sandbox.netns {
            Some(netns) => streaming::netns::connect(netns, port).await,
            // A pod on the host's network: its localhost is the host's.
            None => tokio::net::TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("dial tcp4 127.0.0.1:{port}: {e}"))),
        }
    }

    async fn exec(&self, request: &ExecRequest) -> Result<ExecProcess, String> {
        let container = self
            .containers
            .find_existing(&request.container_id)
            .map_err(|error| error.to_string())?;
        let attached = self
            .containers
            .monitor(&container)
            .exec_attached(ExecAttached {
                id: container.id.clone(),
                args: request.cmd.clone(),
                tty: request.tty,
                stdin: request.stdin,
            })
            .await
            .map_err(|error| error.to_string())?;
        for fd in &attached.fds {
            set_nonblocking(fd).map_err(|e| format!("exec {}: {e}", attached.pid))?;
        }
        let expected = match (request.tty, request.stdin) {
            (true, _) => 1,
            (false, true) => 3,
            (false, false) => 2,
        };
        if attached.fds.len() != expected {
            // Dropping `attached` ends the process.
            return Err(format!(
                "the monitor sent {} descriptors for exec {}, not {expected}",
                attached.fds.len(),
                attached.pid
            ));
        }
        let mut fds = attached.fds.into_iter();
        let mut process = ExecProcess {
            stdin: None,
            stdout: None,
            stderr: None,
            terminal: None,
            exit: Box::pin(async move {
                attached
                    .ending
                    .wait()
                    .await
                    .map(|status| status.code())
                    .map_err(io::Error::other)
            }),
        };
        if request.tty {
            process.terminal = fds.next();
        } else {
            process.stdin = if request.stdin { fds.next() } else { None };
            process.stdout = fds.next();
            process.stderr = fds.next();
        }
        Ok(process)
    }

    async fn attach(
        &self,
        request: &streaming::AttachRequest,
    ) -> Result<streaming::AttachSession, String> {
        use proto::monitor::MonitorRequest;
        use streaming::{AttachInput, AttachOutput};
        let container = self
            .containers
            .find_existing(&request.container_id)
            .map_err(|error| error.to_string())?;
        let runtime::Attachment {
            output: mut from_monitor,
            input: mut to_monitor,
            ..
        } = self
            .containers
            .monitor(&container)
            .attach(&container.id)
            .await
            .map_err(|error| error.to_string())?;
        let (output_tx, output) = tokio::sync::mpsc::channel(64);
        let (input, mut input_rx) = tokio::sync::mpsc::channel::<AttachInput>(64);
        // Each pump ends with its session's side; the connection to the
        // monitor closes (detaching) once both have.
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = from_monitor.next() => event,
                    () = output_tx.closed() => return,
                };
                let event = match event {
                    Ok(runtime::AttachEvent::Output { stderr, data }) => AttachOutput::Output {
                        stderr,
                        data: data.into(),
                    },
                    Ok(runtime::AttachEvent::Ended(_)) => AttachOutput::Ended,
                    Err(error) => {
                        tracing::debug!(%error, "attach output ended");
                        return;
                    }
                };
                if output_tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(input) = input_rx.recv().await {
                let request = match input {
                    AttachInput::Data(data) => MonitorRequest::AttachInput {
                        data: data.to_vec(),
                    },
                    AttachInput::Close => MonitorRequest::AttachCloseStdin,
                    AttachInput::Resize { width, height } => {
                        MonitorRequest::AttachResize { width, height }
                    }
                };
                if to_monitor.send(&request).await.is_err() {
                    return;
                }
            }
        });
        Ok(streaming::AttachSession { output, input })
    }

    fn resize(&self, terminal: &OwnedFd, width: u16, height: u16) -> io::Result<()> {
        runtime::set_window_size(terminal.as_fd(), width, height)
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// The stdio an exec or attach asks for: at least one stream, and no
/// stderr beside a terminal (it has one output).
fn check_stdio(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<(), CridError> {
    if tty && stderr {
        return Err(CridError::invalid(
            "stderr",
            "true",
            "tty and stderr cannot both be true (a terminal has one output)",
        ));
    }
    if !(stdin || stdout || stderr) {
        return Err(CridError::invalid(
            "stdin",
            "false",
            "one of stdin, stdout and stderr must be true",
        ));
    }
    Ok(())
}
