//! A client of the CRI streaming server as client-go speaks to it: the URL
//! an Exec, Attach or PortForward RPC returns, upgraded to SPDY/3.1, with
//! its streams opened in client-go's order. The streaming tests and
//! cri-bench both use it, so both runtimes meet the same client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use http::HeaderMap;
use spdystream_rs::frame::{DATA_FLAG_FIN, DataFrame, FLAG_FIN, Frame, PingFrame, SynStreamFrame};
use spdystream_rs::framer::Framer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// A bound for waits on the server, not an expectation.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// client-go's offer for exec and attach, newest first.
pub const REMOTECOMMAND_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// The server's answer to an upgrade request, and the connection.
pub struct Upgrade {
    pub status: u16,
    pub head: String,
    pub stream: TcpStream,
}

impl Upgrade {
    /// The values of header `name` in the answer.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

/// The `host:port` and path of a streaming URL; only 127.0.0.1 is dialed.
pub fn host_and_path(url: &str) -> Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("not an absolute http URL: {url}"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    ensure!(
        host.starts_with("127.0.0.1:"),
        "the streaming server is not on 127.0.0.1: {url}"
    );
    Ok((host, path))
}

/// POSTs an SPDY upgrade to `url` offering `protocols` (none: no header).
pub async fn upgrade(url: &str, protocols: &[&str]) -> Result<Upgrade> {
    let (host, path) = host_and_path(url)?;
    let mut stream = TcpStream::connect(host)
        .await
        .with_context(|| format!("connect to {host}"))?;
    // As Go's dialer: small frames (SYN_STREAMs, stdin) go out at once
    // instead of waiting for the ACK of the one before.
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for protocol in protocols {
        request.push_str(&format!("X-Stream-Protocol-Version: {protocol}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .context("send the upgrade request")?;
    // Byte by byte: what follows the head is SPDY.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(PATIENCE, stream.read_u8())
            .await
            .map_err(|_| anyhow!("no answer to the upgrade within {PATIENCE:?}"))?
            .context("read the upgrade answer")?;
        head.push(byte);
    }
    let head = String::from_utf8(head).context("the answer's head is not text")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status code in {head:?}"))?;
    Ok(Upgrade {
        status,
        head,
        stream,
    })
}

/// What arrived on one stream.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// The bytes, unless the stream was opened with [`Spdy::open_forward_counting`].
    pub data: Vec<u8>,
    /// How many bytes arrived.
    pub len: usize,
    pub fin: bool,
    pub reset: bool,
    /// Counts the bytes without keeping them.
    discard: bool,
}

type Writer = Box<dyn AsyncWrite + Send + Unpin>;
type Reader = Box<dyn AsyncRead + Send + Unpin>;
type StreamMap = Arc<Mutex<HashMap<u32, Received>>>;
/// The ids of the PINGs that arrived, in order.
type Pings = Arc<Mutex<Vec<u32>>>;

/// The client side of an SPDY connection: frames are read by a task of its
/// own into per-stream [`Received`]s; dropping it closes the connection.
pub struct Spdy {
    writer: tokio::sync::Mutex<Framer<Writer, tokio::io::Empty>>,
    next_id: AtomicU32,
    streams: StreamMap,
    pings: Pings,
    changed: Arc<Notify>,
    reader: tokio::task::JoinHandle<()>,
}

impl Spdy {
    pub fn new(stream: impl AsyncRead + AsyncWrite + Send + 'static) -> Spdy {
        let (read, write) = tokio::io::split(stream);
        // Buffered: the framer reads each frame's header and body apart.
        let read: Reader = Box::new(BufReader::with_capacity(64 * 1024, read));
        let write: Writer = Box::new(write);
        let streams = StreamMap::default();
        let pings = Pings::default();
        let changed = Arc::new(Notify::new());
        let reader = tokio::spawn(read_frames(
            read,
            streams.clone(),
            pings.clone(),
            changed.clone(),
        ));
        Spdy {
            writer: tokio::sync::Mutex::new(Framer::new(write, tokio::io::empty())),
            next_id: AtomicU32::new(1),
            streams,
            pings,
            changed,
            reader,
        }
    }

    /// Opens a stream with `headers`; its id.
    pub async fn open(&self, headers: &[(&str, &str)]) -> Result<u32> {
        self.open_stream(headers, false).await
    }

    async fn open_stream(&self, headers: &[(&str, &str)], discard: bool) -> Result<u32> {
        let id = self.next_id.fetch_add(2, Ordering::SeqCst);
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("header name {name:?}"))?,
                value
                    .parse()
                    .with_context(|| format!("header value {value:?}"))?,
            );
        }
        self.lock_streams()?.insert(
            id,
            Received {
                discard,
                ..Received::default()
            },
        );
        self.writer
            .lock()
            .await
            .write_frame(&Frame::SynStream(SynStreamFrame {
                stream_id: id,
                associated_stream_id: 0,
                priority: 0,
                headers: map,
                flags: 0,
            }))
            .await
            .with_context(|| format!("SYN_STREAM {id}"))?;
        Ok(id)
    }

    /// Opens a port-forward pair as client-go does: the error stream, then
    /// the data stream. Their ids, in that order.
    pub async fn open_forward(&self, port: u16, request: u32) -> Result<(u32, u32)> {
        self.forward_pair(port, request, false).await
    }

    /// As [`Spdy::open_forward`], but what arrives on the data stream is
    /// only counted: for bulk transfers.
    pub async fn open_forward_counting(&self, port: u16, request: u32) -> Result<(u32, u32)> {
        self.forward_pair(port, request, true).await
    }

    async fn forward_pair(&self, port: u16, request: u32, discard: bool) -> Result<(u32, u32)> {
        let (port, request) = (port.to_string(), request.to_string());
        let headers = |kind| {
            [
                ("streamtype", kind),
                ("port", port.as_str()),
                ("requestid", request.as_str()),
            ]
        };
        let error = self.open_stream(&headers("error"), false).await?;
        let data = self.open_stream(&headers("data"), discard).await?;
        Ok((error, data))
    }

    /// Sends `data` on stream `id`, with FIN if `fin`.
    pub async fn send(&self, id: u32, data: &[u8], fin: bool) -> Result<()> {
        self.writer
            .lock()
            .await
            .write_frame(&Frame::Data(DataFrame {
                stream_id: id,
                flags: if fin { DATA_FLAG_FIN } else { 0 },
                data: Bytes::copy_from_slice(data),
            }))
            .await
            .with_context(|| format!("DATA on stream {id}"))
    }

    /// Sends a PING with `id` (odd, as a client's are: client-go pings
    /// every 5 s) and waits until the server echoes it; fails after
    /// [`PATIENCE`].
    pub async fn ping(&self, id: u32) -> Result<()> {
        self.writer
            .lock()
            .await
            .write_frame(&Frame::Ping(PingFrame { id }))
            .await
            .with_context(|| format!("PING {id}"))?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pings()?.contains(&id) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "PING {id} not echoed within {PATIENCE:?}"
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }

    /// The ids of the PINGs that arrived so far: echoes of the client's
    /// (odd) and the server's own (even).
    pub fn pings(&self) -> Result<Vec<u32>> {
        self.pings
            .lock()
            .map(|pings| pings.clone())
            .map_err(|_| anyhow!("the SPDY reader panicked"))
    }

    /// Waits until what arrived on `id` satisfies `done`; fails after
    /// [`PATIENCE`].
    pub async fn until(&self, id: u32, done: impl Fn(&Received) -> bool) -> Result<Received> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so no change slips between.
            notified.as_mut().enable();
            let now = self.lock_streams()?.get(&id).cloned().unwrap_or_default();
            if done(&now) {
                return Ok(now);
            }
            ensure!(
                Instant::now() < deadline,
                "stream {id} never got there within {PATIENCE:?}: fin {}, reset {}, {} bytes: {:?}",
                now.fin,
                now.reset,
                now.len,
                String::from_utf8_lossy(&now.data)
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }

    /// What arrived on `id` once it ended (FIN, reset, or the connection
    /// closed).
    pub async fn ended(&self, id: u32) -> Result<Received> {
        self.until(id, |r| r.fin || r.reset).await
    }

    fn lock_streams(&self) -> Result<std::sync::MutexGuard<'_, HashMap<u32, Received>>> {
        self.streams
            .lock()
            .map_err(|_| anyhow!("the SPDY reader panicked"))
    }
}

impl Drop for Spdy {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_frames(read: Reader, streams: StreamMap, pings: Pings, changed: Arc<Notify>) {
    let mut framer = Framer::new(tokio::io::sink(), read);
    loop {
        let frame = framer.read_frame().await;
        {
            let Ok(mut streams) = streams.lock() else {
                return;
            };
            match frame {
                Ok(Frame::Data(data)) => {
                    let entry = streams.entry(data.stream_id).or_default();
                    entry.len += data.data.len();
                    if !entry.discard {
                        entry.data.extend_from_slice(&data.data);
                    }
                    entry.fin |= data.flags & DATA_FLAG_FIN != 0;
                }
                Ok(Frame::SynReply(reply)) => {
                    streams.entry(reply.stream_id).or_default().fin |= reply.flags & FLAG_FIN != 0;
                }
                Ok(Frame::RstStream(reset)) => {
                    streams.entry(reset.stream_id).or_default().reset = true;
                }
                Ok(Frame::Ping(ping)) => {
                    if let Ok(mut pings) = pings.lock() {
                        pings.push(ping.id);
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    // The server closed: nothing more comes on any stream.
                    for received in streams.values_mut() {
                        received.fin = true;
                    }
                    drop(streams);
                    changed.notify_waiters();
                    return;
                }
            }
        }
        changed.notify_waiters();
    }
}

/// Which streams of an exec or attach session to open, as in its request
/// (stdout is always opened).
#[derive(Clone, Copy, Debug, Default)]
pub struct Streams {
    pub tty: bool,
    pub stdin: bool,
    pub stderr: bool,
}

/// The streams of an exec or attach session.
pub struct Remotecommand {
    pub spdy: Spdy,
    /// What the server chose of [`REMOTECOMMAND_PROTOCOLS`].
    pub protocol: String,
    pub error: u32,
    pub stdin: Option<u32>,
    pub stdout: u32,
    pub stderr: Option<u32>,
    pub resize: Option<u32>,
}

impl Remotecommand {
    /// The status (v4's JSON) on the error stream, once the session ended.
    pub async fn status(&self) -> Result<serde_json::Value> {
        let error = self.spdy.ended(self.error).await?;
        serde_json::from_slice(&error.data).with_context(|| {
            format!(
                "the error stream holds no status: {:?}",
                String::from_utf8_lossy(&error.data)
            )
        })
    }
}

/// An exec or attach URL upgraded with client-go's offer, and its streams
/// opened in client-go's order.
pub async fn remotecommand(url: &str, streams: Streams) -> Result<Remotecommand> {
    let session = upgrade(url, REMOTECOMMAND_PROTOCOLS).await?;
    ensure!(
        session.status == 101,
        "the upgrade was refused: {}",
        session.head
    );
    let protocol = match &session.header("x-stream-protocol-version")[..] {
        [one] if REMOTECOMMAND_PROTOCOLS.contains(&one.as_str()) => one.clone(),
        other => bail!("the server chose {other:?}: {}", session.head),
    };
    let spdy = Spdy::new(session.stream);
    let error = spdy.open(&[("streamtype", "error")]).await?;
    let stdin = if streams.stdin {
        Some(spdy.open(&[("streamtype", "stdin")]).await?)
    } else {
        None
    };
    let stdout = spdy.open(&[("streamtype", "stdout")]).await?;
    let stderr = if streams.stderr {
        Some(spdy.open(&[("streamtype", "stderr")]).await?)
    } else {
        None
    };
    let resize = if streams.tty {
        Some(spdy.open(&[("streamtype", "resize")]).await?)
    } else {
        None
    };
    Ok(Remotecommand {
        spdy,
        protocol,
        error,
        stdin,
        stdout,
        stderr,
        resize,
    })
}

/// A port-forward URL upgraded to `portforward.k8s.io`.
pub async fn port_forward(url: &str) -> Result<Spdy> {
    let session = upgrade(url, &[PORT_FORWARD_PROTOCOL]).await?;
    ensure!(
        session.status == 101,
        "the upgrade was refused: {}",
        session.head
    );
    let chosen = session.header("x-stream-protocol-version");
    ensure!(
        chosen == [PORT_FORWARD_PROTOCOL],
        "the server chose {chosen:?}: {}",
        session.head
    );
    Ok(Spdy::new(session.stream))
}
