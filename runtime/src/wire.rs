//! Frames of the crid ⇄ crid-monitor protocol. Blocking I/O for the
//! monitor, async for crid.
//!
//! Version 1 frame: a 4-byte big-endian length, then that many bytes of
//! JSON. Version 2 frame: the length with its top bit ([`V2_FLAG`]) set,
//! then a body of a 4-byte JSON length, the JSON, and the message's bytes
//! (exec output) raw, each a 4-byte length and the bytes: JSON would carry
//! them as arrays of numbers, 3–4 bytes on the wire for each. A version 1
//! reader refuses a version 2 frame (too long) instead of misreading it;
//! the monitor answers each connection in the framing its request came in,
//! and crid uses version 2 framing only with monitors of version 2.

use std::io::{self, Read, Write};

use proto::monitor::{MAX_FRAME_BYTES, MonitorEvent, MonitorRequest, MonitorResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A short path to `name` in `dir`, through an open fd of the dir: unix
/// socket paths are limited to 108 bytes, pod state dirs need not be.
/// Keep the returned `File` open while the path is used.
pub fn short_path(
    dir: &std::path::Path,
    name: &str,
) -> io::Result<(std::fs::File, std::path::PathBuf)> {
    use std::os::fd::AsRawFd;
    let handle = std::fs::File::open(dir)?;
    let path = std::path::PathBuf::from(format!("/proc/self/fd/{}/{name}", handle.as_raw_fd()));
    Ok((handle, path))
}

/// The top bit of a version 2 frame's length word.
pub const V2_FLAG: u32 = 1 << 31;

/// How a frame is laid out (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    V1,
    V2,
}

/// A message that crosses in frames; one with bytes moves them out of its
/// JSON in version 2 frames.
pub trait Message: Serialize + DeserializeOwned + Sized {
    /// The message with its bytes left out, and those bytes; `None` when
    /// it carries none.
    fn detach(&self) -> Option<(Self, Vec<&[u8]>)> {
        None
    }

    /// Puts back what `detach` left out.
    fn attach(&mut self, attached: Vec<Vec<u8>>) -> io::Result<()> {
        if attached.is_empty() {
            Ok(())
        } else {
            Err(invalid("bytes attached to a message that has none"))
        }
    }
}

impl Message for MonitorRequest {}
impl Message for MonitorEvent {}

impl Message for MonitorResponse {
    fn detach(&self) -> Option<(Self, Vec<&[u8]>)> {
        if let MonitorResponse::AttachOutput { stderr, data } = self {
            let bare = MonitorResponse::AttachOutput {
                stderr: *stderr,
                data: Vec::new(),
            };
            return Some((bare, vec![data.as_slice()]));
        }
        let MonitorResponse::ExecResult {
            stdout,
            stderr,
            exit,
        } = self
        else {
            return None;
        };
        let bare = MonitorResponse::ExecResult {
            stdout: Vec::new(),
            stderr: Vec::new(),
            exit: *exit,
        };
        Some((bare, vec![stdout.as_slice(), stderr.as_slice()]))
    }

    fn attach(&mut self, attached: Vec<Vec<u8>>) -> io::Result<()> {
        match self {
            MonitorResponse::ExecResult { stdout, stderr, .. } if attached.len() == 2 => {
                let mut attached = attached.into_iter();
                *stdout = attached.next().unwrap_or_default();
                *stderr = attached.next().unwrap_or_default();
                Ok(())
            }
            MonitorResponse::AttachOutput { data, .. } if attached.len() == 1 => {
                *data = attached.into_iter().next().unwrap_or_default();
                Ok(())
            }
            _ if attached.is_empty() => Ok(()),
            _ => Err(invalid("bytes attached to a message that has none")),
        }
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn length_word(length: usize) -> io::Result<[u8; 4]> {
    u32::try_from(length)
        .ok()
        .filter(|&length| length <= MAX_FRAME_BYTES)
        .map(u32::to_be_bytes)
        .ok_or_else(|| invalid("frame too large"))
}

/// A message as a frame, ready to be written in one go (to several
/// subscribers, or without blocking).
pub fn encode_frame<T: Message>(message: &T, framing: Framing) -> io::Result<Vec<u8>> {
    if framing == Framing::V1 {
        let json = serde_json::to_vec(message).map_err(io::Error::other)?;
        let mut frame = Vec::with_capacity(4 + json.len());
        frame.extend_from_slice(&length_word(json.len())?);
        frame.extend_from_slice(&json);
        return Ok(frame);
    }
    let detached = message.detach();
    let (json, attached) = match &detached {
        Some((bare, attached)) => (
            serde_json::to_vec(bare).map_err(io::Error::other)?,
            attached.as_slice(),
        ),
        None => (
            serde_json::to_vec(message).map_err(io::Error::other)?,
            &[][..],
        ),
    };
    let body_length = 4 + json.len() + attached.iter().map(|bytes| 4 + bytes.len()).sum::<usize>();
    let mut frame = Vec::with_capacity(4 + body_length);
    let word = u32::from_be_bytes(length_word(body_length)?) | V2_FLAG;
    frame.extend_from_slice(&word.to_be_bytes());
    frame.extend_from_slice(&length_word(json.len())?);
    frame.extend_from_slice(&json);
    for bytes in attached {
        frame.extend_from_slice(&length_word(bytes.len())?);
        frame.extend_from_slice(bytes);
    }
    Ok(frame)
}

fn body_length(header: [u8; 4]) -> io::Result<(usize, Framing)> {
    let word = u32::from_be_bytes(header);
    let (length, framing) = if word & V2_FLAG == 0 {
        (word, Framing::V1)
    } else {
        (word & !V2_FLAG, Framing::V2)
    };
    if length > MAX_FRAME_BYTES {
        return Err(invalid(format!("frame of {length} bytes")));
    }
    Ok((length as usize, framing))
}

/// The next 4-byte length and that many bytes of `body`.
fn split_part(body: &[u8]) -> io::Result<(&[u8], &[u8])> {
    let (word, rest) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| invalid("truncated frame"))?;
    let length = u32::from_be_bytes(*word) as usize;
    if length > rest.len() {
        return Err(invalid("truncated frame"));
    }
    Ok(rest.split_at(length))
}

fn decode<T: Message>(body: &[u8], framing: Framing) -> io::Result<T> {
    let json_error = |e: serde_json::Error| invalid(e.to_string());
    if framing == Framing::V1 {
        return serde_json::from_slice(body).map_err(json_error);
    }
    let (json, mut rest) = split_part(body)?;
    let mut message: T = serde_json::from_slice(json).map_err(json_error)?;
    let mut attached = Vec::new();
    while !rest.is_empty() {
        let (bytes, after) = split_part(rest)?;
        attached.push(bytes.to_vec());
        rest = after;
    }
    message.attach(attached)?;
    Ok(message)
}

pub fn write_frame<T: Message>(
    writer: &mut impl Write,
    message: &T,
    framing: Framing,
) -> io::Result<()> {
    writer.write_all(&encode_frame(message, framing)?)
}

/// A message, and the framing it came in (the answer's).
pub fn read_frame<T: Message>(reader: &mut impl Read) -> io::Result<(T, Framing)> {
    let mut header = [0u8; 4];
    reader.read_exact(&mut header)?;
    let (length, framing) = body_length(header)?;
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok((decode(&body, framing)?, framing))
}

/// The first whole frame in `buffer`, taken out of it; `None` until one
/// has arrived. For readers that must not lose a half-read frame (a
/// subscription polled in a `select!`, the monitor's non-blocking reads).
pub fn take_frame<T: Message>(buffer: &mut Vec<u8>) -> io::Result<Option<(T, Framing)>> {
    let Some(header) = buffer.first_chunk::<4>() else {
        return Ok(None);
    };
    let (length, framing) = body_length(*header)?;
    if buffer.len() < 4 + length {
        return Ok(None);
    }
    let message = decode(&buffer[4..4 + length], framing)?;
    buffer.drain(..4 + length);
    Ok(Some((message, framing)))
}

pub async fn write_frame_async<T: Message>(
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    message: &T,
    framing: Framing,
) -> io::Result<()> {
    writer.write_all(&encode_frame(message, framing)?).await
}

pub async fn read_frame_async<T: Message>(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
) -> io::Result<T> {
    let mut header = [0u8; 4];
    reader.read_exact(&mut header).await?;
    let (length, framing) = body_length(header)?;
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    decode(&body, framing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::monitor::{ErrorKind, ExitStatus};

    #[test]
    fn frames_round_trip_in_both_framings() {
        let error = MonitorResponse::Error {
            kind: ErrorKind::NotFound,
            message: "x".into(),
        };
        for framing in [Framing::V1, Framing::V2] {
            let mut buffer = Vec::new();
            write_frame(&mut buffer, &MonitorRequest::Shutdown, framing).expect("write");
            write_frame(&mut buffer, &error, framing).expect("write");
            let mut reader = buffer.as_slice();
            assert_eq!(
                read_frame::<MonitorRequest>(&mut reader).expect("read"),
                (MonitorRequest::Shutdown, framing)
            );
            assert_eq!(
                read_frame::<MonitorResponse>(&mut reader).expect("read"),
                (error.clone(), framing)
            );
            assert!(reader.is_empty());
        }
    }

    fn exec_result(size: usize) -> MonitorResponse {
        MonitorResponse::ExecResult {
            stdout: (0..size).map(|i| (i % 251) as u8).collect(),
            stderr: b"warning\n\xff".to_vec(),
            exit: Some(ExitStatus::Exited(3)),
        }
    }

    #[test]
    fn exec_output_costs_its_own_size_in_version_2_frames() {
        const MIB: usize = 1024 * 1024;
        let result = exec_result(MIB);
        let v2 = encode_frame(&result, Framing::V2).expect("encode");
        assert!(
            v2.len() < MIB + 256,
            "1 MiB of output takes {} bytes",
            v2.len()
        );
        let (read, framing) = read_frame::<MonitorResponse>(&mut v2.as_slice()).expect("read");
        assert_eq!((read, framing), (result.clone(), Framing::V2));
        // What version 1 costs, and still reads.
        let v1 = encode_frame(&result, Framing::V1).expect("encode");
        assert!(v1.len() > 3 * MIB, "version 1: {} bytes", v1.len());
        let (read, framing) = read_frame::<MonitorResponse>(&mut v1.as_slice()).expect("read");
        assert_eq!((read, framing), (result, Framing::V1));
    }

    #[test]
    fn a_version_1_reader_refuses_a_version_2_frame() {
        let v2 = encode_frame(&exec_result(10), Framing::V2).expect("encode");
        let word = u32::from_be_bytes(v2[..4].try_into().expect("4 bytes"));
        // What a version 1 reader checks: the whole word against the limit.
        assert!(word > MAX_FRAME_BYTES);
    }

    #[test]
    fn oversized_truncated_and_misattached_frames_are_errors() {
        let mut huge = (MAX_FRAME_BYTES + 1).to_be_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(read_frame::<MonitorRequest>(&mut huge.as_slice()).is_err());
        let truncated = [0u8, 0, 0, 10, b'{'];
        assert!(read_frame::<MonitorRequest>(&mut truncated.as_slice()).is_err());
        let garbage = [0u8, 0, 0, 2, b'x', b'y'];
        assert!(read_frame::<MonitorRequest>(&mut garbage.as_slice()).is_err());
        // A v2 body whose JSON length runs past its end.
        let short = [0x80u8, 0, 0, 5, 0, 0, 0, 9, b'{'];
        assert!(read_frame::<MonitorRequest>(&mut short.as_slice()).is_err());
        // Bytes attached to a request, which has none.
        let mut request = encode_frame(&MonitorRequest::Status, Framing::V2).expect("encode");
        request.extend_from_slice(&[0, 0, 0, 1, b'x']);
        let length = u32::from_be_bytes(request[..4].try_into().expect("4 bytes")) + 5;
        request[..4].copy_from_slice(&length.to_be_bytes());
        assert!(read_frame::<MonitorRequest>(&mut request.as_slice()).is_err());
    }

    #[tokio::test]
    async fn async_and_blocking_frames_agree() {
        for framing in [Framing::V1, Framing::V2] {
            let mut buffer = Vec::new();
            write_frame_async(&mut buffer, &exec_result(100), framing)
                .await
                .expect("write");
            assert_eq!(
                read_frame::<MonitorResponse>(&mut buffer.as_slice()).expect("read"),
                (exec_result(100), framing)
            );
            let mut blocking = Vec::new();
            write_frame(&mut blocking, &MonitorRequest::Shutdown, framing).expect("write");
            let read: MonitorRequest = read_frame_async(&mut blocking.as_slice())
                .await
                .expect("read");
            assert_eq!(read, MonitorRequest::Shutdown);
        }
    }

    // Compatibility of the messages themselves, old and new.

    #[test]
    fn a_config_of_before_versions_is_version_1() {
        let old = r#"{"pod_id":"p","namespaces":{"net":true,"ipc":true,"uts":true,"pid":true},
            "hostname":null,"sysctls":[],"cgroup_procs":[]}"#;
        let config: proto::monitor::MonitorConfig = serde_json::from_str(old).expect("decode");
        assert_eq!(config.protocol, proto::monitor::FIRST_PROTOCOL_VERSION);
    }

    #[test]
    fn errors_of_version_1_and_of_newer_monitors_decode() {
        let v1: MonitorResponse =
            serde_json::from_str(r#"{"error":{"message":"gone"}}"#).expect("decode");
        assert_eq!(
            v1,
            MonitorResponse::Error {
                kind: ErrorKind::Unknown,
                message: "gone".into()
            }
        );
        let newer: MonitorResponse =
            serde_json::from_str(r#"{"error":{"kind":"quota_exceeded","message":"m"}}"#)
                .expect("decode");
        assert!(matches!(
            newer,
            MonitorResponse::Error {
                kind: ErrorKind::Unknown,
                ..
            }
        ));
        let typed = serde_json::to_string(&MonitorResponse::Error {
            kind: ErrorKind::NotFound,
            message: "m".into(),
        })
        .expect("decode");
        assert_eq!(typed, r#"{"error":{"kind":"not_found","message":"m"}}"#);
    }

    #[test]
    fn only_hello_subscribe_and_attached_exec_need_version_2() {
        assert_eq!(MonitorRequest::Subscribe.since(), 2);
        assert_eq!(MonitorRequest::Hello.since(), 2);
        let attached = MonitorRequest::ExecAttached(proto::monitor::ExecAttached {
            id: "c".into(),
            args: vec!["sh".into()],
            tty: true,
            stdin: true,
        });
        assert_eq!(attached.since(), 2);
        assert_eq!(attached.name(), "ExecAttached");
        assert_eq!(MonitorRequest::Containers.since(), 1);
        assert_eq!(MonitorRequest::Subscribe.name(), "Subscribe");
    }
}
