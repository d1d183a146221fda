//! Exec over SPDY (remotecommand `channel.k8s.io` v1 to v4): the client
//! opens one stream per channel (header `streamType`: `error`, `stdin`,
//! `stdout`, `stderr`, `resize`); the server copies between them and the
//! process, and ends with the outcome on the error stream (v4: a JSON
//! `Status`; older versions: plain text, nothing on success).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use spdystream_rs::{Connection, Stream};
use tokio::sync::mpsc;

use std::os::fd::OwnedFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::fdio;
use crate::server::STREAM_CREATION_TIMEOUT;
use crate::{Backend, ExecRequest};

const COPY_CHUNK: usize = 32 * 1024;
/// How long output may still come after the process exited (a child it
/// left behind can hold its stdout open forever).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// The streams of a session, as the client opened them.
#[derive(Default)]
struct Channels {
    error: Option<Arc<Stream>>,
    stdin: Option<Arc<Stream>>,
    stdout: Option<Arc<Stream>>,
    stderr: Option<Arc<Stream>>,
    resize: Option<Arc<Stream>>,
}

/// Which streams a session waits for before it starts.
#[derive(Debug, Clone, Copy)]
struct Expected {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    resize: bool,
}

impl Channels {
    /// The client's ends of what it opened, for the copy loops.
    fn ends(&self) -> Ends<'_, Arc<Stream>, Arc<Stream>> {
        Ends {
            stdin: self.stdin.as_ref(),
            resize: self.resize.as_ref(),
            stdout: self.stdout.as_ref(),
            stderr: self.stderr.as_ref(),
        }
    }

    fn complete(&self, expected: Expected) -> bool {
        self.error.is_some()
            && (!expected.stdin || self.stdin.is_some())
            && (!expected.stdout || self.stdout.is_some())
            && (!expected.stderr || self.stderr.is_some())
            && (!expected.resize || self.resize.is_some())
    }

    fn take(&mut self, stream: Arc<Stream>) {
        let kind = stream
            .headers
            .get("streamtype")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let slot = match kind {
            "error" => &mut self.error,
            "stdin" => &mut self.stdin,
            "stdout" => &mut self.stdout,
            "stderr" => &mut self.stderr,
            "resize" => &mut self.resize,
            _ => {
                tracing::debug!(stream_type = %kind, "exec: unknown stream type");
                stream.discard_incoming();
                return;
            }
        };
        if slot.is_none() {
            *slot = Some(stream);
        } else {
            stream.discard_incoming();
        }
    }

    /// Waits for the expected streams; None when the client did not open
    /// them in time or went away (whatever came is returned for the error).
    async fn gather(
        streams: &mut mpsc::Receiver<Arc<Stream>>,
        expected: Expected,
    ) -> Result<Channels, Channels> {
        let mut channels = Channels::default();
        let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
        while !channels.complete(expected) {
            match tokio::time::timeout_at(deadline, streams.recv()).await {
                Ok(Some(stream)) => channels.take(stream),
                Ok(None) | Err(_) => return Err(channels),
            }
        }
        Ok(channels)
    }
}

/// The protocol's number: 4 for `v4.channel.k8s.io`, 1 for `channel.k8s.io`.
pub(crate) fn version(protocol: &str) -> u32 {
    protocol
        .strip_prefix('v')
        .and_then(|p| p.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// How a session ended, as its error stream says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Exited(i32),
    Failed(String),
}

/// The error stream's message; None: nothing to say (success before v4).
pub(crate) fn outcome_message(outcome: &Outcome, version: u32) -> Option<String> {
    if version >= 4 {
        let status = match outcome {
            Outcome::Exited(0) => serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            }),
            Outcome::Exited(code) => serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failed(message) => serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": "InternalError", "code": 500,
            }),
        };
        return Some(status.to_string());
    }
    match outcome {
        Outcome::Exited(0) => None,
        Outcome::Exited(code) => Some(format!(
            "command terminated with non-zero exit code: exit status {code}"
        )),
        Outcome::Failed(message) => Some(message.clone()),
    }
}

async fn report(error: Option<&Arc<Stream>>, outcome: &Outcome, version: u32) {
    let Some(error) = error else { return };
    if let Some(message) = outcome_message(outcome, version) {
        let _ = error.write_data(Bytes::from(message), false).await;
    }
    let _ = error.write_data(Bytes::new(), true).await;
}

/// The streams an exec or attach session asked for (`stdio`: stdin,
/// stdout, stderr, tty), once the client has opened them; None when it did
/// not in time (said on the error stream). Streams opened later are not
/// part of the session.
async fn open_channels(
    mut streams: mpsc::Receiver<Arc<Stream>>,
    (stdin, stdout, stderr, tty): (bool, bool, bool, bool),
    version: u32,
) -> Option<Channels> {
    let expected = Expected {
        stdin,
        stdout,
        stderr: stderr && !tty,
        // Resize streams came with v3.
        resize: tty && version >= 3,
    };
    match Channels::gather(&mut streams, expected).await {
        Ok(channels) => {
            tokio::spawn(async move {
                while let Some(stream) = streams.recv().await {
                    stream.discard_incoming();
                }
            });
            Some(channels)
        }
        Err(partial) => {
            let outcome =
                Outcome::Failed("timed out waiting for the client to create streams".into());
            report(partial.error.as_ref(), &outcome, version).await;
            None
        }
    }
}

/// Runs an exec session on an upgraded connection.
pub(crate) async fn exec<B: Backend>(
    connection: &Connection,
    streams: mpsc::Receiver<Arc<Stream>>,
    request: ExecRequest,
    protocol: &str,
    backend: Arc<B>,
) {
    let version = version(protocol);
    let stdio = (request.stdin, request.stdout, request.stderr, request.tty);
    let Some(channels) = open_channels(streams, stdio, version).await else {
        return;
    };
    let process = match backend.exec(&request).await {
        Ok(process) => process,
        Err(message) => {
            report(channels.error.as_ref(), &Outcome::Failed(message), version).await;
            return;
        }
    };
    let outcome = tokio::select! {
        outcome = run(channels.ends(), process, backend.as_ref()) => outcome,
        // The client went away: dropping the process ends it.
        () = connection.wait_closed() => return,
    };
    report(channels.error.as_ref(), &outcome, version).await;
}

/// A channel from the client (stdin, resize), over either transport.
pub(crate) trait Input: Send + Sync {
    /// The next bytes; None at the client's EOF.
    fn next(&self) -> impl Future<Output = Option<Bytes>> + Send;
    /// Nobody reads it any more.
    fn discard(&self);
}

/// A channel to the client (stdout, stderr); `fin` ends it.
pub(crate) trait Output: Send + Sync {
    /// False once the client cannot take it.
    fn send(&self, data: Bytes, fin: bool) -> impl Future<Output = bool> + Send;
}

impl Input for Arc<Stream> {
    async fn next(&self) -> Option<Bytes> {
        self.read_data().await.ok().flatten()
    }
    fn discard(&self) {
        self.discard_incoming();
    }
}

impl Output for Arc<Stream> {
    async fn send(&self, data: Bytes, fin: bool) -> bool {
        self.write_data(data, fin).await.is_ok()
    }
}

/// The client's side of a session's channels.
pub(crate) struct Ends<'a, I, O> {
    pub stdin: Option<&'a I>,
    pub resize: Option<&'a I>,
    pub stdout: Option<&'a O>,
    pub stderr: Option<&'a O>,
}

/// Copies between the streams and the process until it exits and its
/// output is drained.
pub(crate) async fn run<B: Backend, I: Input, O: Output>(
    channels: Ends<'_, I, O>,
    process: crate::ExecProcess,
    backend: &B,
) -> Outcome {
    let crate::ExecProcess {
        stdin,
        stdout,
        stderr,
        terminal,
        mut exit,
    } = process;
    let watched = (|| {
        // With a terminal, its master is input and output at once.
        let (input, output) = match terminal.as_ref() {
            Some(master) => (Some(master.try_clone()?), Some(master.try_clone()?)),
            None => (stdin, stdout),
        };
        Ok::<_, std::io::Error>((
            input.map(fdio::writer).transpose()?,
            output.map(fdio::reader).transpose()?,
            stderr.map(fdio::reader).transpose()?,
        ))
    })();
    let Ok((input, output, stderr)) = watched else {
        return Outcome::Failed("cannot watch the exec's stdio".into());
    };
    let stdin_copy = async {
        match (channels.stdin, input) {
            // A pipe's write end closes at the end of this arm: the
            // process sees EOF (a terminal's master stays open in `output`).
            (Some(from), Some(mut to)) => copy_in(from, &mut to).await,
            (Some(from), None) => from.discard(),
            (None, _) => {}
        }
        std::future::pending::<()>().await
    };
    let resizes = async {
        if let (Some(resize), Some(terminal)) = (channels.resize, terminal.as_ref()) {
            follow_resizes(resize, terminal, backend).await;
        }
        std::future::pending::<()>().await
    };
    let outputs = async {
        tokio::join!(
            copy_out(output, channels.stdout),
            copy_out(stderr, channels.stderr),
        );
    };
    tokio::pin!(outputs, stdin_copy, resizes);
    let mut outputs_done = false;
    let exit_code = loop {
        tokio::select! {
            code = &mut exit => break code,
            () = &mut outputs, if !outputs_done => outputs_done = true,
            () = &mut stdin_copy => {}
            () = &mut resizes => {}
        }
    };
    if !outputs_done {
        let _ = tokio::time::timeout(OUTPUT_GRACE, &mut outputs).await;
    }
    for output in [channels.stdout, channels.stderr].into_iter().flatten() {
        output.send(Bytes::new(), true).await;
    }
    match exit_code {
        Ok(code) => Outcome::Exited(code),
        Err(error) => Outcome::Failed(format!("waiting for the exec to end: {error}")),
    }
}

/// Attach over SPDY: as exec, with the container's own stdio.
pub(crate) async fn attach<B: Backend>(
    connection: &Connection,
    streams: mpsc::Receiver<Arc<Stream>>,
    request: crate::AttachRequest,
    protocol: &str,
    backend: Arc<B>,
) {
    let version = version(protocol);
    let stdio = (request.stdin, request.stdout, request.stderr, request.tty);
    let Some(channels) = open_channels(streams, stdio, version).await else {
        return;
    };
    let session = match backend.attach(&request).await {
        Ok(session) => session,
        Err(message) => {
            report(channels.error.as_ref(), &Outcome::Failed(message), version).await;
            return;
        }
    };
    let outcome = tokio::select! {
        outcome = run_attached(channels.ends(), session) => outcome,
        // The client went away: dropping the session detaches.
        () = connection.wait_closed() => return,
    };
    report(channels.error.as_ref(), &outcome, version).await;
}

/// Copies between the client's channels and an attached container until
/// it exits.
pub(crate) async fn run_attached<I: Input, O: Output>(
    channels: Ends<'_, I, O>,
    session: crate::AttachSession,
) -> Outcome {
    use crate::{AttachInput, AttachOutput};
    let crate::AttachSession { mut output, input } = session;
    let resize_input = input.clone();
    let stdin_copy = async {
        if let Some(from) = channels.stdin {
            while let Some(bytes) = from.next().await {
                if input.send(AttachInput::Data(bytes)).await.is_err() {
                    break;
                }
            }
            let _ = input.send(AttachInput::Close).await;
        }
        std::future::pending::<()>().await
    };
    let resizes = async {
        if let Some(resize) = channels.resize {
            let mut pending = Vec::new();
            while let Some(bytes) = resize.next().await {
                pending.extend_from_slice(&bytes);
                let (sizes, used) = parse_sizes(&pending);
                pending.drain(..used);
                for size in sizes {
                    let size = AttachInput::Resize {
                        width: size.width,
                        height: size.height,
                    };
                    if resize_input.send(size).await.is_err() {
                        break;
                    }
                }
            }
        }
        std::future::pending::<()>().await
    };
    let outputs = async {
        while let Some(event) = output.recv().await {
            match event {
                AttachOutput::Output { stderr, data } => {
                    let to = if stderr {
                        channels.stderr
                    } else {
                        channels.stdout
                    };
                    if let Some(to) = to {
                        to.send(data, false).await;
                    }
                }
                AttachOutput::Ended => return true,
            }
        }
        false
    };
    let ended = tokio::select! {
        ended = outputs => ended,
        () = stdin_copy => false,
        () = resizes => false,
    };
    for output in [channels.stdout, channels.stderr].into_iter().flatten() {
        output.send(Bytes::new(), true).await;
    }
    if ended {
        // As kubelet: the container's end ends the attach, successfully.
        Outcome::Exited(0)
    } else {
        Outcome::Failed("the container's monitor ended the attach session".into())
    }
}

/// Client → process, until the client's EOF (a terminal stays open for
/// output then; the caller closes a pipe).
async fn copy_in(from: &impl Input, to: &mut pipe::Sender) {
    while let Some(bytes) = from.next().await {
        if to.write_all(&bytes).await.is_err() {
            from.discard();
            return;
        }
    }
}

/// Process → client, then FIN. Without a stream (the client asked for
/// none) the output is read and dropped, so the process never blocks.
async fn copy_out(from: Option<pipe::Receiver>, to: Option<&impl Output>) {
    let Some(mut from) = from else { return };
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(to) = to {
                    // A client that stopped reading still drains the pipe.
                    to.send(Bytes::copy_from_slice(&buf[..n]), false).await;
                }
            }
        }
    }
    if let Some(to) = to {
        to.send(Bytes::new(), true).await;
    }
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
struct TerminalSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Sizes from the resize stream: a sequence of JSON objects, split across
/// frames as it happens.
async fn follow_resizes<B: Backend>(resize: &impl Input, terminal: &OwnedFd, backend: &B) {
    let mut pending = Vec::new();
    while let Some(bytes) = resize.next().await {
        pending.extend_from_slice(&bytes);
        let (sizes, used) = parse_sizes(&pending);
        pending.drain(..used);
        for size in sizes {
            if let Err(error) = backend.resize(terminal, size.width, size.height) {
                tracing::debug!(%error, "exec: resizing the terminal failed");
            }
        }
        if pending.len() > 64 * 1024 {
            tracing::debug!("exec: resize stream is not JSON sizes; ignored");
            resize.discard();
            return;
        }
    }
}

/// The whole sizes at the start of `bytes`, and how many bytes they took.
fn parse_sizes(bytes: &[u8]) -> (Vec<TerminalSize>, usize) {
    let mut sizes = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<TerminalSize>();
    let mut used = 0;
    loop {
        match stream.next() {
            Some(Ok(size)) => {
                sizes.push(size);
                used = stream.byte_offset();
            }
            Some(Err(e)) if e.is_eof() => break,
            // Garbage: skipped, so one bad object does not stop the rest.
            Some(Err(_)) => {
                used = bytes.len();
                break;
            }
            None => {
                used = bytes.len();
                break;
            }
        }
    }
    (sizes, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v4_status_carries_the_exit_code_as_a_cause() {
        let message = outcome_message(&Outcome::Exited(3), 4).expect("v4 says it");
        let status: serde_json::Value = serde_json::from_str(&message).expect("json");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        let success = outcome_message(&Outcome::Exited(0), 4).expect("v4 says it");
        let status: serde_json::Value = serde_json::from_str(&success).expect("json");
        assert_eq!(status["status"], "Success");
        assert_eq!(outcome_message(&Outcome::Exited(0), 3), None);
        assert!(
            outcome_message(&Outcome::Exited(2), 2)
                .expect("text")
                .contains("non-zero exit code")
        );
    }

    #[test]
    fn sizes_split_across_frames_are_put_together() {
        let all = br#"{"Width":80,"Height":24}{"Width":100,"#;
        let (sizes, used) = parse_sizes(all);
        assert_eq!(
            sizes,
            vec![TerminalSize {
                width: 80,
                height: 24
            }]
        );
        let mut rest = all[used..].to_vec();
        rest.extend_from_slice(br#""Height":50}"#);
        let (sizes, used) = parse_sizes(&rest);
        assert_eq!(
            sizes,
            vec![TerminalSize {
                width: 100,
                height: 50
            }]
        );
        assert_eq!(used, rest.len());
    }

    #[test]
    fn protocol_versions_are_numbered() {
        assert_eq!(version("v4.channel.k8s.io"), 4);
        assert_eq!(version("v2.channel.k8s.io"), 2);
        assert_eq!(version("channel.k8s.io"), 1);
    }
}
