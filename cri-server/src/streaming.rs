//! Exec, Attach and PortForward: each validates its request and stores it
//! with the streaming server, answering with the URL the client upgrades
//! to; [`Sessions`] is what the sessions ask of crid (a connection into a
//! pod, a process in a container).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use proto::cri;
use streaming::{ExecProcess, PortForwardRequest, StreamRequest};

use crate::daemon::Daemon;
use crate::error::CridError;
use crate::pods::{self, PodPhase};

/// The token URL of `request`.
fn url_for(daemon: &Daemon, request: StreamRequest) -> Result<String, CridError> {
    daemon
        .streaming
        .insert(request)
        .map_err(|error| match error {
            streaming::StreamingError::TooManyPending(_) => {
                CridError::ResourceExhausted(error.to_string())
            }
            other => CridError::Internal(other.to_string()),
        })
}

pub async fn port_forward(
    daemon: Arc<Daemon>,
    request: cri::PortForwardRequest,
) -> Result<cri::PortForwardResponse, CridError> {
    let pod = pods::find(&daemon, &request.pod_sandbox_id)?.ok_or_else(|| {
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
        &daemon,
        StreamRequest::PortForward(PortForwardRequest {
            pod_id: pod.id.clone(),
            ports,
        }),
    )?;
    Ok(cri::PortForwardResponse { url })
}

/// What the streaming sessions do in crid's pods and containers.
pub struct Sessions {
    daemon: Arc<Daemon>,
}

impl Sessions {
    pub fn new(daemon: Arc<Daemon>) -> Sessions {
        Sessions { daemon }
    }
}

impl streaming::Backend for Sessions {
    async fn connect(&self, pod_id: &str, port: u16) -> io::Result<tokio::net::TcpStream> {
        let pod = pods::find(&self.daemon, pod_id)
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

    async fn exec(&self, request: &streaming::ExecRequest) -> Result<ExecProcess, String> {
        Err(format!(
            "exec in container {} over the streaming server is not implemented by crid yet",
            request.container_id
        ))
    }

    fn resize(
        &self,
        _terminal: &std::os::fd::OwnedFd,
        _width: u16,
        _height: u16,
    ) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "terminals are not implemented by crid yet",
        ))
    }
}
