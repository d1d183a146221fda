//! Port-forward over SPDY (`portforward.k8s.io`): the client opens a data
//! and an error stream per forwarded connection (headers `streamType`,
//! `port`, `requestID`); each complete pair is connected to
//! `127.0.0.1:port` in the pod. A pair that fails gets its error on its
//! error stream and is reset; the session goes on for the others.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use spdystream_rs::{Connection, RstStatus, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::server::STREAM_CREATION_TIMEOUT;
use crate::{Backend, PortForwardRequest};

const COPY_CHUNK: usize = 32 * 1024;

/// Half or all of a forwarded connection's streams.
#[derive(Default)]
struct Pair {
    data: Option<Arc<Stream>>,
    error: Option<Arc<Stream>>,
    deadline: Option<Instant>,
}

fn header<'a>(stream: &'a Stream, name: &str) -> Option<&'a str> {
    stream.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The pair a stream belongs to: its `requestID`, or for clients too old
/// to send one, the error stream's id (a data stream is opened just before
/// its error stream, so its id is 2 less).
fn request_id(header: Option<&str>, stream_id: u32, kind: &str) -> String {
    match header {
        Some(id) => id.to_string(),
        None if kind == "data" => stream_id.saturating_add(2).to_string(),
        None => stream_id.to_string(),
    }
}

pub(crate) async fn serve<B: Backend>(
    connection: &Connection,
    mut streams: mpsc::Receiver<Arc<Stream>>,
    request: PortForwardRequest,
    backend: Arc<B>,
) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let deadline = pairs.values().filter_map(|p| p.deadline).min();
        tokio::select! {
            stream = streams.recv() => {
                let Some(stream) = stream else { break };
                let kind = header(&stream, "streamtype").unwrap_or_default().to_string();
                if kind != "data" && kind != "error" {
                    tracing::debug!(stream_type = %kind, "port-forward: unknown stream type");
                    let _ = stream.reset(RstStatus::ProtocolError).await;
                    continue;
                }
                let id = request_id(header(&stream, "requestid"), stream.stream_id, &kind);
                let pair = pairs.entry(id.clone()).or_default();
                let slot = if kind == "data" { &mut pair.data } else { &mut pair.error };
                if slot.is_some() {
                    let _ = stream.reset(RstStatus::ProtocolError).await;
                    continue;
                }
                *slot = Some(stream);
                pair.deadline.get_or_insert(Instant::now() + STREAM_CREATION_TIMEOUT);
                let complete = pair.data.is_some() && pair.error.is_some();
                if complete && let Some(Pair { data: Some(data), error: Some(error), .. }) = pairs.remove(&id) {
                    let backend = backend.clone();
                    let pod_id = request.pod_id.clone();
                    forwards.spawn(async move { forward(data, error, &pod_id, backend).await });
                }
            }
            () = sleep_until(deadline) => {
                let now = Instant::now();
                let expired: Vec<String> = pairs
                    .iter()
                    .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in expired {
                    tracing::debug!(request_id = %id, "port-forward: the pair's other stream never came");
                    if let Some(pair) = pairs.remove(&id) {
                        for stream in [pair.data, pair.error].into_iter().flatten() {
                            let _ = stream.reset(RstStatus::Cancel).await;
                        }
                    }
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
            () = connection.wait_closed() => break,
        }
    }
    // Dropping the set aborts what still runs: its pod connections close.
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Connects one pair to its port in the pod and copies both ways until the
/// pod's side is done (or writing to it fails), as kubelet does.
async fn forward<B: Backend>(data: Arc<Stream>, error: Arc<Stream>, pod_id: &str, backend: Arc<B>) {
    let port = header(&data, "port").and_then(|p| p.parse::<u16>().ok());
    tracing::debug!(?port, "port-forward pair complete");
    let result = match port {
        Some(port) if port > 0 => backend
            .connect(pod_id, port)
            .await
            .map_err(|e| format!("error forwarding port {port} to pod {pod_id}: {e}")),
        _ => Err(format!(
            "invalid port header {:?} in a port-forward stream",
            header(&data, "port").unwrap_or_default()
        )),
    };
    let tcp = match result {
        Ok(tcp) => tcp,
        Err(message) => {
            tracing::info!(%message, "port-forward connection failed");
            let _ = error.write_data(Bytes::from(message), true).await;
            let _ = data.reset(RstStatus::Cancel).await;
            error.discard_incoming();
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let pod_to_client = async {
        // Read into a buffer whose filled part becomes the frame's payload
        // as it is: no copy; its memory is reused once the frame is out.
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(COPY_CHUNK);
            match from_pod.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if data.write_data(buf.split().freeze(), false).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    // Ends only when writing to the pod fails: the client's EOF just
    // half-closes the pod connection, whose answer still comes back.
    let client_to_pod = async {
        loop {
            match data.read_data().await {
                Ok(Some(bytes)) => {
                    if to_pod.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Ok(None) | Err(_) => {
                    let _ = to_pod.shutdown().await;
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    tokio::select! {
        () = pod_to_client => {}
        () = client_to_pod => {}
    }
    data.discard_incoming();
    error.discard_incoming();
    let _ = data.write_data(Bytes::new(), true).await;
    let _ = error.write_data(Bytes::new(), true).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_its_request_id_or_for_old_clients_its_stream_ids() {
        assert_eq!(request_id(Some("7"), 1, "data"), "7");
        assert_eq!(request_id(Some("7"), 3, "error"), "7");
        // Old clients: data on 1, its error on 3.
        assert_eq!(request_id(None, 1, "data"), request_id(None, 3, "error"));
        assert_ne!(request_id(None, 1, "data"), request_id(None, 5, "error"));
    }
}
