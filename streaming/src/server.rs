//! The HTTP side: routes `/{exec,attach,portforward}/TOKEN` (GET and
//! POST), negotiates the stream protocol, upgrades to SPDY/3.1 and hands
//! the connection to the session of the token's request.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use spdystream_rs::{Connection, Stream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::idle::{Activity, Watched};
use crate::{Backend, Limits, Requests, StreamRequest, StreamingError};

pub(crate) const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";
/// What remotecommand over SPDY speaks, newest first (v5 is WebSocket's).
pub(crate) const REMOTECOMMAND_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
const PORTFORWARD_PROTOCOLS: [&str; 1] = ["portforward.k8s.io"];
/// How long a session's client gets to open the streams it needs.
pub(crate) const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a finished session waits for its client to close.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Binds the server's socket (port 0: any free one) and makes the token
/// registry that hands out URLs to it.
pub fn bind(address: SocketAddr) -> Result<(std::net::TcpListener, Requests), StreamingError> {
    let bind_error = |source| StreamingError::Bind { address, source };
    let listener = std::net::TcpListener::bind(address).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, Requests::new(base_url(local))))
}

/// The URL base clients reach `local` by: a wildcard address is reached on
/// loopback.
fn base_url(local: SocketAddr) -> String {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, local.port()))
}

/// Serves streaming sessions on `listener` until the task is dropped.
pub async fn serve<B: Backend>(
    listener: std::net::TcpListener,
    requests: Arc<Requests>,
    backend: Arc<B>,
    limits: Limits,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let sessions = Arc::new(Semaphore::new(limits.max_sessions));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of fds and the like: the next accept may work.
                tracing::warn!(%error, "streaming server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let requests = requests.clone();
        let backend = backend.clone();
        let sessions = sessions.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let requests = requests.clone();
                let backend = backend.clone();
                let session = Session {
                    permits: sessions.clone(),
                    idle_timeout: limits.idle_timeout,
                };
                async move { Ok::<_, Infallible>(route(request, &requests, backend, session)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "streaming connection ended");
            }
        });
    }
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What a session may take: a place among the sessions, and its idle
/// time.
struct Session {
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
}

/// A running session's place, and what its connection did last.
struct Place {
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    activity: Activity,
}

impl Place {
    fn watch<IO>(&self, io: IO) -> Watched<IO> {
        Watched::new(io, self.activity.clone())
    }

    /// Runs `session` until it ends or its connection idles.
    async fn bound(&self, session: impl Future<Output = ()>) {
        tokio::select! {
            () = session => {}
            () = self.activity.idle_for(self.idle_timeout) => {
                tracing::info!(timeout = ?self.idle_timeout, "streaming session idle; closed");
            }
        }
    }
}

fn route<B: Backend>(
    request: Request<Incoming>,
    requests: &Requests,
    backend: Arc<B>,
    session: Session,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and POST\n");
    }
    let path = request.uri().path().trim_start_matches('/');
    let Some((kind, token)) = path.split_once('/') else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    if !matches!(kind, "exec" | "attach" | "portforward") || token.contains('/') {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    let Ok(permit) = session.permits.try_acquire_owned() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many streaming sessions; try again later\n",
        );
    };
    let place = Place {
        _permit: permit,
        idle_timeout: session.idle_timeout,
        activity: Activity::new(),
    };
    let Some(stream_request) = requests.take(kind, token) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("{kind} token unknown, used or expired\n"),
        );
    };
    if has_token(request.headers(), UPGRADE, "websocket") {
        return websocket_upgrade(request, stream_request, backend, place);
    }
    let headers = request.headers();
    if !has_token(headers, CONNECTION, "upgrade") || !has_token(headers, UPGRADE, "spdy/3.1") {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request (Connection: Upgrade, Upgrade: SPDY/3.1)\n",
        );
    }
    let supported: &[&str] = match stream_request {
        StreamRequest::PortForward(_) => &PORTFORWARD_PROTOCOLS,
        _ => &REMOTECOMMAND_PROTOCOLS,
    };
    let protocol = match negotiate(headers, supported) {
        Negotiated::Missing => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("unable to upgrade: {PROTOCOL_HEADER} is required\n"),
            );
        }
        Negotiated::NoMatch(offered) => {
            let mut response = plain(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}\n"
                ),
            );
            for accepted in supported {
                response
                    .headers_mut()
                    .append(ACCEPTED_HEADER, HeaderValue::from_static(accepted));
            }
            return response;
        }
        Negotiated::Chosen(protocol) => protocol,
    };
    let upgrade = hyper::upgrade::on(request);
    tracing::debug!(protocol, "streaming upgrade accepted");
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = place.watch(TokioIo::new(upgraded));
                run_spdy(io, stream_request, protocol, backend, &place).await
            }
            Err(error) => tracing::debug!(%error, "streaming upgrade failed"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert(PROTOCOL_HEADER, HeaderValue::from_static(protocol));
    response
}

/// The WebSocket upgrade (RFC 6455) with the subprotocol the client
/// offered first among those served; for exec and attach none offered is
/// `channel.k8s.io`.
fn websocket_upgrade<B: Backend>(
    request: Request<Incoming>,
    stream_request: StreamRequest,
    backend: Arc<B>,
    place: Place,
) -> Response<Full<Bytes>> {
    let headers = request.headers();
    let Some(key) = headers.get("sec-websocket-key") else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    if !has_token(headers, CONNECTION, "upgrade") {
        return plain(StatusCode::BAD_REQUEST, "missing Connection: Upgrade\n");
    }
    let offered: Vec<&str> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let supported: &[&'static str] = match stream_request {
        StreamRequest::Exec(_) => &crate::websocket::EXEC_PROTOCOLS,
        StreamRequest::PortForward(_) => &[
            crate::tunnel::PORTFORWARD_PROTOCOL,
            crate::websocket::PORTFORWARD_LEGACY_PROTOCOLS[0],
            crate::websocket::PORTFORWARD_LEGACY_PROTOCOLS[1],
            crate::websocket::PORTFORWARD_LEGACY_PROTOCOLS[2],
        ],
        StreamRequest::Attach(_) => &crate::websocket::EXEC_PROTOCOLS,
    };
    let chosen = offered
        .iter()
        .find_map(|o| supported.iter().find(|p| **p == *o).copied());
    // Exec without a subprotocol is channel.k8s.io; port-forward needs its own.
    let defaulted = !matches!(stream_request, StreamRequest::PortForward(_)) && offered.is_empty();
    if chosen.is_none() && !defaulted {
        return plain(
            StatusCode::BAD_REQUEST,
            format!(
                "unable to negotiate a WebSocket subprotocol: client offers {offered:?}, server speaks {supported:?}\n"
            ),
        );
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(request);
    tracing::debug!(protocol = ?chosen, "WebSocket upgrade accepted");
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => place.watch(TokioIo::new(upgraded)),
            Err(error) => {
                tracing::debug!(%error, "streaming upgrade failed");
                return;
            }
        };
        match stream_request {
            StreamRequest::Exec(exec) => {
                let framing = crate::websocket::Framing::of(chosen.unwrap_or("channel.k8s.io"));
                let session = crate::websocket::Session::Exec(exec);
                place
                    .bound(crate::websocket::serve(upgraded, framing, session, backend))
                    .await
            }
            StreamRequest::Attach(attach) => {
                let framing = crate::websocket::Framing::of(chosen.unwrap_or("channel.k8s.io"));
                let session = crate::websocket::Session::Attach(attach);
                place
                    .bound(crate::websocket::serve(upgraded, framing, session, backend))
                    .await
            }
            StreamRequest::PortForward(forward)
                if chosen != Some(crate::tunnel::PORTFORWARD_PROTOCOL) =>
            {
                let framing = crate::websocket::Framing::of(chosen.unwrap_or("v4.channel.k8s.io"));
                place
                    .bound(crate::websocket::port_forward(
                        upgraded, framing, forward, backend,
                    ))
                    .await
            }
            request => {
                let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    upgraded,
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                let tunnel = crate::tunnel::Tunnel::new(socket);
                run_spdy(tunnel, request, PORTFORWARD_PROTOCOLS[0], backend, &place).await
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", accept);
    }
    if let Some(protocol) = chosen {
        headers.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
    }
    response
}

/// Whether a comma-separated header lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[derive(Debug, PartialEq, Eq)]
enum Negotiated {
    Missing,
    NoMatch(Vec<String>),
    Chosen(&'static str),
}

/// The first protocol of the client's (in its order) that the server
/// speaks, as Kubernetes' handshake picks it.
fn negotiate(headers: &HeaderMap, supported: &[&'static str]) -> Negotiated {
    let offered: Vec<String> = headers
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Negotiated::Missing;
    }
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
        .map_or(Negotiated::NoMatch(offered), Negotiated::Chosen)
}

/// Serves the SPDY connection: every stream the client opens is accepted
/// and handed to the session, in order.
async fn run_spdy<B: Backend, IO>(
    io: IO,
    request: StreamRequest,
    protocol: &'static str,
    backend: Arc<B>,
    place: &Place,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Bounded: a client that opens streams faster than the session takes
    // them waits (each handler task holds its stream until then).
    let (streams_tx, streams) = mpsc::channel::<Arc<Stream>>(64);
    let served = Connection::serve(io, move |stream| {
        let streams_tx = streams_tx.clone();
        Box::pin(async move {
            tracing::debug!(id = stream.stream_id, headers = ?stream.headers, "SPDY stream opened");
            if stream.send_reply(HeaderMap::new(), false).await.is_ok() {
                let _ = streams_tx.send(stream).await;
            }
        })
    })
    .await;
    let connection = match served {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%error, "SPDY connection failed");
            return;
        }
    };
    let session = async {
        match request {
            StreamRequest::PortForward(request) => {
                crate::portforward::serve(&connection, streams, request, backend).await
            }
            StreamRequest::Exec(request) => {
                crate::remotecommand::exec(&connection, streams, request, protocol, backend).await
            }
            StreamRequest::Attach(request) => {
                crate::remotecommand::attach(&connection, streams, request, protocol, backend).await
            }
        }
    };
    place.bound(session).await;
    connection.finish(CLOSE_GRACE).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offering(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(PROTOCOL_HEADER, HeaderValue::from_str(v).expect("value"));
        }
        headers
    }

    #[test]
    fn the_clients_first_protocol_the_server_speaks_wins() {
        let client_go = offering(&[
            "v5.channel.k8s.io",
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
            "channel.k8s.io",
        ]);
        assert_eq!(
            negotiate(&client_go, &REMOTECOMMAND_PROTOCOLS),
            Negotiated::Chosen("v4.channel.k8s.io")
        );
        let old = offering(&["channel.k8s.io, v2.channel.k8s.io"]);
        assert_eq!(
            negotiate(&old, &REMOTECOMMAND_PROTOCOLS),
            Negotiated::Chosen("channel.k8s.io")
        );
        assert_eq!(
            negotiate(&offering(&["portforward.k8s.io"]), &PORTFORWARD_PROTOCOLS),
            Negotiated::Chosen("portforward.k8s.io")
        );
        assert_eq!(
            negotiate(&offering(&["v5.channel.k8s.io"]), &REMOTECOMMAND_PROTOCOLS),
            Negotiated::NoMatch(vec!["v5.channel.k8s.io".into()])
        );
        assert_eq!(
            negotiate(&HeaderMap::new(), &REMOTECOMMAND_PROTOCOLS),
            Negotiated::Missing
        );
    }

    #[test]
    fn a_wildcard_address_is_reached_on_loopback() {
        assert_eq!(
            base_url("0.0.0.0:1234".parse().expect("addr")),
            "http://127.0.0.1:1234"
        );
        assert_eq!(
            base_url("[::]:1234".parse().expect("addr")),
            "http://[::1]:1234"
        );
        assert_eq!(
            base_url("127.0.0.1:99".parse().expect("addr")),
            "http://127.0.0.1:99"
        );
    }
}
