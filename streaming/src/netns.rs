//! Connections made inside a pod's network namespace.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::CloneFlags;

/// How long a connect inside the pod may take (a local connect is
/// accepted or refused at once; a full backlog can make it wait).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP connection to `127.0.0.1:port` inside the network namespace at
/// `netns` (a pinned namespace file). The socket is made on a thread of its
/// own that joins the namespace and ends right after, so no thread of the
/// daemon's pools ever changes namespace; the socket stays in the pod's.
pub async fn connect(netns: &Path, port: u16) -> io::Result<tokio::net::TcpStream> {
    let netns: PathBuf = netns.to_path_buf();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("crid-netns-connect".into())
        .spawn(move || {
            let _ = sender.send(connect_in(&netns, port));
        })?;
    let stream = receiver
        .await
        .map_err(|_| io::Error::other("the netns connect thread ended without an answer"))??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

fn connect_in(netns: &Path, port: u16) -> io::Result<std::net::TcpStream> {
    let namespace = std::fs::File::open(netns).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("opening network namespace {}: {e}", netns.display()),
        )
    })?;
    nix::sched::setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(|e| {
        io::Error::other(format!(
            "joining network namespace {}: {e}",
            netns.display()
        ))
    })?;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    std::net::TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
        .map_err(|e| io::Error::new(e.kind(), format!("dial tcp4 {address}: {e}")))
}
