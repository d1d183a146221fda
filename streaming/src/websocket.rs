//! Exec and attach over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`,
//! `v4.base64.channel.k8s.io`, `channel.k8s.io`, `base64.channel.k8s.io`):
//! every message carries one channel's bytes behind a channel byte (0
//! stdin, 1 stdout, 2 stderr, 3 error, 4 resize); the base64 protocols
//! send text, the channel as an ASCII digit and the bytes in base64. v5's
//! `[255, channel]` closes a channel (stdin's EOF).

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, coding::CloseCode};

use crate::remotecommand::{self, Ends, Input, Outcome, Output};
use crate::{AttachRequest, AttachSession, Backend, ExecProcess, ExecRequest};

/// A task that ends with its handle (a session dropped half-way, by its
/// idle timeout, takes its reader along).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Started {
    Exec(ExecProcess),
    Attach(AttachSession),
}

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` says the client closed that channel.
const CLOSE: u8 = 255;

/// The exec subprotocols, in no order: the client's order picks.
pub(crate) const EXEC_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// How a negotiated subprotocol frames messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    base64: bool,
    /// 5, 4, or 1 (plain-text errors).
    version: u32,
}

impl Framing {
    pub(crate) fn of(protocol: &str) -> Framing {
        Framing {
            base64: protocol.contains("base64"),
            version: remotecommand::version(protocol),
        }
    }

    fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut text = String::from(char::from(b'0' + channel));
            text.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
            Message::text(text)
        } else {
            let mut bytes = Vec::with_capacity(data.len() + 1);
            bytes.push(channel);
            bytes.extend_from_slice(data);
            Message::binary(bytes)
        }
    }

    /// A client message's channel and bytes; None for what is not one.
    fn decode(self, message: Message) -> Option<(u8, Vec<u8>)> {
        match message {
            Message::Binary(bytes) if !self.base64 => {
                let (&channel, data) = bytes.split_first()?;
                Some((channel, data.to_vec()))
            }
            Message::Text(text) if self.base64 => {
                let (first, data) = text.as_bytes().split_first()?;
                let channel = first.checked_sub(b'0')?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .ok()?;
                Some((channel, data))
            }
            _ => None,
        }
    }
}

/// stdin or resize, fed by the reader task.
struct WsInput(Mutex<mpsc::Receiver<Bytes>>);

impl Input for WsInput {
    async fn next(&self) -> Option<Bytes> {
        self.0.lock().await.recv().await
    }
    fn discard(&self) {
        if let Ok(mut receiver) = self.0.try_lock() {
            receiver.close();
        }
    }
}

/// stdout or stderr, through the writer task.
struct WsOutput {
    channel: u8,
    framing: Framing,
    messages: mpsc::Sender<Message>,
}

impl Output for WsOutput {
    async fn send(&self, data: Bytes, _fin: bool) -> bool {
        // A channel's end is the connection's: nothing to send for it.
        if data.is_empty() {
            return true;
        }
        self.messages
            .send(self.framing.encode(self.channel, &data))
            .await
            .is_ok()
    }
}

/// A close with 1000 (normal closure): the only close client-go takes
/// for the end of a session's streams (a WebSocket executor's channels, a
/// port-forward tunnel); any other code fails them.
pub(crate) fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Sends `outgoing` until its senders are gone, then closes the
/// connection with 1000 (normal closure): client-go reads a channel to its
/// end only then, and any other close (a bare close frame is 1005, "no
/// status") fails every channel, the error channel's status included.
async fn write_all<S>(mut sink: S, mut outgoing: mpsc::Receiver<Message>)
where
    S: futures_util::Sink<Message> + Unpin,
{
    while let Some(message) = outgoing.recv().await {
        if sink.send(message).await.is_err() {
            return;
        }
    }
    if sink.send(normal_close()).await.is_ok() {
        let _ = sink.close().await;
    }
}

/// What a WebSocket session runs.
pub(crate) enum Session {
    Exec(ExecRequest),
    Attach(AttachRequest),
}

pub(crate) async fn serve<B: Backend, IO>(
    io: IO,
    framing: Framing,
    session: Session,
    backend: Arc<B>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (stdin_wanted, stdout_wanted, stderr_wanted, tty) = match &session {
        Session::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
        Session::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
    };
    let socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (sink, mut source) = socket.split();
    let (messages, outgoing) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(write_all(sink, outgoing));
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(64);
    let (resize_tx, resize_rx) = mpsc::channel::<Bytes>(8);
    // Ends when the client closes or goes away, or with the session.
    let mut reader = AbortOnDrop(tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        while let Some(Ok(message)) = source.next().await {
            if message.is_close() {
                return;
            }
            let Some((channel, data)) = framing.decode(message) else {
                continue;
            };
            match channel {
                STDIN => {
                    if let Some(stdin) = &stdin_tx {
                        let _ = stdin.send(Bytes::from(data)).await;
                    }
                }
                RESIZE => {
                    let _ = resize_tx.send(Bytes::from(data)).await;
                }
                CLOSE if framing.version >= 5 && data.first() == Some(&STDIN) => {
                    stdin_tx = None;
                }
                _ => {}
            }
        }
    }));
    let error = |outcome: Outcome| {
        let messages = messages.clone();
        async move {
            if let Some(message) = remotecommand::outcome_message(&outcome, framing.version) {
                let _ = messages
                    .send(framing.encode(ERROR, message.as_bytes()))
                    .await;
            }
        }
    };
    let (stdin, resize) = (
        WsInput(Mutex::new(stdin_rx)),
        WsInput(Mutex::new(resize_rx)),
    );
    let output = |channel| WsOutput {
        channel,
        framing,
        messages: messages.clone(),
    };
    let (stdout, stderr) = (output(STDOUT), output(STDERR));
    let ends = || Ends {
        stdin: stdin_wanted.then_some(&stdin),
        resize: (tty && framing.version >= 4).then_some(&resize),
        stdout: stdout_wanted.then_some(&stdout),
        stderr: (stderr_wanted && !tty).then_some(&stderr),
    };
    let started = match &session {
        Session::Exec(request) => backend.exec(request).await.map(Started::Exec),
        Session::Attach(request) => backend.attach(request).await.map(Started::Attach),
    };
    match started {
        Err(message) => error(Outcome::Failed(message)).await,
        Ok(started) => {
            let outcome = async {
                match started {
                    Started::Exec(process) => {
                        remotecommand::run(ends(), process, backend.as_ref()).await
                    }
                    Started::Attach(attached) => {
                        remotecommand::run_attached(ends(), attached).await
                    }
                }
            };
            tokio::select! {
                outcome = outcome => error(outcome).await,
                // The client went away: dropping the process ends it.
                _ = &mut reader.0 => {}
            }
        }
    }
    // The writer closes the connection once every sender is gone, the
    // outputs' too: one left alive would hold the close (and the client's
    // end of the session) until the grace ran out.
    drop((reader, stdout, stderr, messages));
    let _ = tokio::time::timeout(crate::server::CLOSE_GRACE, writer).await;
}

/// The legacy WebSocket port-forward (`v4.channel.k8s.io`,
/// `v4.base64.channel.k8s.io`, `portforward.k8s.io`): the request's ports
/// get a data channel (2i) and an error channel (2i + 1) each, whose first
/// message is the port as a little-endian u16; the client's bytes on a
/// data channel go to that port in the pod, the pod's come back on it.
pub(crate) const PORTFORWARD_LEGACY_PROTOCOLS: [&str; 3] = [
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "portforward.k8s.io",
];

pub(crate) async fn port_forward<B: Backend, IO>(
    io: IO,
    framing: Framing,
    request: crate::PortForwardRequest,
    backend: Arc<B>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (sink, mut source) = socket.split();
    let (messages, outgoing) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(write_all(sink, outgoing));
    let mut to_pod = Vec::new();
    let mut copies = tokio::task::JoinSet::new();
    for (index, port) in request.ports.iter().enumerate() {
        let (data, error) = (
            u8::try_from(2 * index).unwrap_or(u8::MAX),
            u8::try_from(2 * index + 1).unwrap_or(u8::MAX),
        );
        for channel in [data, error] {
            let _ = messages
                .send(framing.encode(channel, &port.to_le_bytes()))
                .await;
        }
        match backend.connect(&request.pod_id, *port).await {
            Ok(tcp) => {
                let (mut from_pod, write) = tcp.into_split();
                to_pod.push(Some(write));
                let messages = messages.clone();
                copies.spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    while let Ok(n) = from_pod.read(&mut buf).await {
                        if n == 0
                            || messages
                                .send(framing.encode(data, &buf[..n]))
                                .await
                                .is_err()
                        {
                            break;
                        }
                    }
                });
            }
            Err(e) => {
                to_pod.push(None);
                let message = format!(
                    "error forwarding port {port} to pod {}: {e}",
                    request.pod_id
                );
                let _ = messages
                    .send(framing.encode(error, message.as_bytes()))
                    .await;
            }
        }
    }
    // Until the client closes (or goes away).
    while let Some(Ok(message)) = source.next().await {
        if message.is_close() {
            break;
        }
        let Some((channel, data)) = framing.decode(message) else {
            continue;
        };
        let index = usize::from(channel / 2);
        if channel % 2 == 0
            && let Some(Some(pod)) = to_pod.get_mut(index)
            && pod.write_all(&data).await.is_err()
        {
            to_pod[index] = None;
        }
    }
    // Waited for: each copy holds a sender the writer waits out.
    copies.shutdown().await;
    drop(to_pod);
    drop(messages);
    let _ = tokio::time::timeout(crate::server::CLOSE_GRACE, writer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_frame_as_binary_or_base64_text() {
        let binary = Framing::of("v5.channel.k8s.io");
        assert_eq!(binary.version, 5);
        let message = binary.encode(STDOUT, b"hi");
        assert_eq!(message, Message::binary(vec![1, b'h', b'i']));
        assert_eq!(binary.decode(message), Some((STDOUT, b"hi".to_vec())));

        let text = Framing::of("base64.channel.k8s.io");
        assert_eq!(text.version, 1);
        let message = text.encode(STDERR, b"hi");
        assert_eq!(message, Message::text("2aGk="));
        assert_eq!(text.decode(message), Some((STDERR, b"hi".to_vec())));
        assert_eq!(text.decode(Message::binary(vec![0, 1])), None);
        assert_eq!(Framing::of("v4.base64.channel.k8s.io").version, 4);
    }

    #[tokio::test]
    async fn the_writer_ends_with_a_normal_close_once_its_senders_are_gone() {
        let (ours, theirs) = tokio::io::duplex(1024);
        let server = WebSocketStream::from_raw_socket(ours, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(theirs, Role::Client, None).await;
        let (sink, _source) = server.split();
        let (messages, outgoing) = mpsc::channel(4);
        let writer = tokio::spawn(write_all(sink, outgoing));
        let status = Framing::of("v5.channel.k8s.io").encode(ERROR, b"{}");
        messages.send(status.clone()).await.expect("send");
        drop(messages);
        let received = client.next().await.expect("a message").expect("read");
        assert_eq!(received, status);
        match client.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("expected a normal close, got {other:?}"),
        }
        writer.await.expect("writer");
    }
}
