//! Frames of the crid ⇄ crid-monitor protocol: a 4-byte big-endian length,
//! then that many bytes of JSON. Blocking I/O for the monitor, async for crid.

use std::io::{self, Read, Write};

use proto::monitor::MAX_FRAME_BYTES;
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

fn encode<T: Serialize>(message: &T) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    let length = u32::try_from(body.len())
        .ok()
        .filter(|&length| length <= MAX_FRAME_BYTES)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

fn body_length(header: [u8; 4]) -> io::Result<usize> {
    let length = u32::from_be_bytes(header);
    if length > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {length} bytes"),
        ));
    }
    Ok(length as usize)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> io::Result<T> {
    serde_json::from_slice(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub fn write_frame<T: Serialize>(writer: &mut impl Write, message: &T) -> io::Result<()> {
    writer.write_all(&encode(message)?)
}

pub fn read_frame<T: DeserializeOwned>(reader: &mut impl Read) -> io::Result<T> {
    let mut header = [0u8; 4];
    reader.read_exact(&mut header)?;
    let mut body = vec![0u8; body_length(header)?];
    reader.read_exact(&mut body)?;
    decode(&body)
}

pub async fn write_frame_async<T: Serialize>(
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    message: &T,
) -> io::Result<()> {
    writer.write_all(&encode(message)?).await
}

pub async fn read_frame_async<T: DeserializeOwned>(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
) -> io::Result<T> {
    let mut header = [0u8; 4];
    reader.read_exact(&mut header).await?;
    let mut body = vec![0u8; body_length(header)?];
    reader.read_exact(&mut body).await?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::monitor::{MonitorRequest, MonitorResponse};

    #[test]
    fn frames_round_trip() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &MonitorRequest::Shutdown).expect("write");
        write_frame(
            &mut buffer,
            &MonitorResponse::Error {
                message: "x".into(),
            },
        )
        .expect("write");
        let mut reader = buffer.as_slice();
        assert_eq!(
            read_frame::<MonitorRequest>(&mut reader).expect("read"),
            MonitorRequest::Shutdown
        );
        let response: MonitorResponse = read_frame(&mut reader).expect("read");
        assert_eq!(
            response,
            MonitorResponse::Error {
                message: "x".into()
            }
        );
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut huge = (MAX_FRAME_BYTES + 1).to_be_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(read_frame::<MonitorRequest>(&mut huge.as_slice()).is_err());
        let truncated = [0u8, 0, 0, 10, b'{'];
        assert!(read_frame::<MonitorRequest>(&mut truncated.as_slice()).is_err());
        let garbage = [0u8, 0, 0, 2, b'x', b'y'];
        assert!(read_frame::<MonitorRequest>(&mut garbage.as_slice()).is_err());
    }

    #[tokio::test]
    async fn async_and_blocking_frames_agree() {
        let mut buffer = Vec::new();
        write_frame_async(&mut buffer, &MonitorRequest::Status)
            .await
            .expect("write");
        assert_eq!(
            read_frame::<MonitorRequest>(&mut buffer.as_slice()).expect("read"),
            MonitorRequest::Status
        );
        let mut blocking = Vec::new();
        write_frame(&mut blocking, &MonitorRequest::Shutdown).expect("write");
        let read: MonitorRequest = read_frame_async(&mut blocking.as_slice())
            .await
            .expect("read");
        assert_eq!(read, MonitorRequest::Shutdown);
    }
}
