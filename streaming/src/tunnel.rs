//! SPDY tunnelled in WebSocket (`SPDY/3.1+portforward.k8s.io`, what
//! client-go's WebSocket port-forward dials): the bytes of the SPDY
//! connection travel in binary messages, in order.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

pub(crate) const PORTFORWARD_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// A WebSocket connection read and written as a byte stream.
pub(crate) struct Tunnel<S> {
    socket: WebSocketStream<S>,
    /// What is left of the last binary message.
    unread: Bytes,
    /// Whether shutting down queued the normal close already.
    close_queued: bool,
}

impl<S> Tunnel<S> {
    pub(crate) fn new(socket: WebSocketStream<S>) -> Tunnel<S> {
        Tunnel {
            socket,
            unread: Bytes::new(),
            close_queued: false,
        }
    }
}

fn io_error(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(error) => error,
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Tunnel<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.unread.is_empty() {
            match ready!(Pin::new(&mut self.socket).poll_next(cx)) {
                Some(Ok(Message::Binary(bytes))) => self.unread = bytes,
                // Pings are answered by tungstenite; text is not SPDY.
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
            }
        }
        let n = self.unread.len().min(buf.remaining());
        buf.put_slice(&self.unread[..n]);
        self.unread.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Tunnel<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let socket = Pin::new(&mut self.socket);
        ready!(socket.poll_ready(cx)).map_err(io_error)?;
        Pin::new(&mut self.socket)
            .start_send(Message::binary(buf.to_vec()))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // client-go's tunnel reads only a normal close as EOF (a bare
        // close frame is an error). Once the peer closed, tungstenite has
        // answered it and refuses more: nothing to add then.
        if !self.close_queued {
            if ready!(Pin::new(&mut self.socket).poll_ready(cx)).is_ok() {
                let _ = Pin::new(&mut self.socket).start_send(crate::websocket::normal_close());
            }
            self.close_queued = true;
        }
        Pin::new(&mut self.socket).poll_close(cx).map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    #[tokio::test]
    async fn shutting_the_tunnel_down_closes_it_normally() {
        let (ours, theirs) = tokio::io::duplex(1024);
        let server = WebSocketStream::from_raw_socket(ours, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(theirs, Role::Client, None).await;
        let mut tunnel = Tunnel::new(server);
        tunnel.write_all(b"spdy").await.expect("write");
        tunnel.shutdown().await.expect("shutdown");
        let received = client.next().await.expect("a message").expect("read");
        assert_eq!(received, Message::binary(b"spdy".to_vec()));
        match client.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("expected a normal close, got {other:?}"),
        }
    }
}
