//! The streaming server as crictl and kubelet use it: the URL an RPC
//! returns, upgraded to SPDY/3.1, with port-forward connections into a
//! pod's own network namespace and exec sessions in a container. The
//! client is e2e's own (`e2e::spdy`, also cri-bench's), not crid's server
//! code.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use e2e::spdy::{self, PATIENCE, Received, Remotecommand, Spdy, Streams, upgrade};
use proto::cri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A pod with its own network namespace (on a bridge of this test's own).
async fn pod_with_network(world: &World, name: &str) -> String {
    let mut config = world.pod_config(name, cri::NamespaceMode::Container);
    if let Some(options) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        options.network = cri::NamespaceMode::Pod.into();
    }
    world
        .rt()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id
}

/// Waits until `port` listens in the container's network namespace.
async fn listening(world: &World, container: &str, port: u16) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let table = world.sh(container, "busybox netstat -ltn").await;
        if table.contains(&format!(":{port} ")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on {port}: {table}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn port_forward_url(world: &World, pod: &str, ports: Vec<i32>) -> String {
    world
        .rt()
        .await
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: ports,
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url
}

/// Bytes that show where a copy went wrong.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + u64::from(seed)) as u8)
        .collect()
}

#[tokio::test]
async fn port_forward_serves_concurrent_connections_into_the_pod_and_survives_a_refused_port() {
    let world = World::new().await;
    world.env.bridge_network("cridst1", "10.251.61.0/24");
    let pod = pod_with_network(&world, "forward").await;
    // An echo server for every connection (-ll: persistent, one cat each).
    let echo = world
        .run(
            &pod,
            "echo",
            &["busybox", "nc", "-ll", "-p", "9000", "-e", "/bin/cat"],
        )
        .await;
    listening(&world, &echo, 9000).await;

    let url = port_forward_url(&world, &pod, vec![9000]).await;
    assert!(url.starts_with("http://127.0.0.1:"), "absolute URL: {url}");
    assert!(url.contains("/portforward/"), "{url}");
    // The upgrade to portforward.k8s.io, checked by the client.
    let spdy = spdy::port_forward(&url)
        .await
        .expect("port-forward session");

    // As client-go opens them: the error stream, then the data stream.
    let mut pairs = Vec::new();
    for (request, port) in [(0, 9000), (1, 9000), (2, 9999)] {
        pairs.push(
            spdy.open_forward(port, request)
                .await
                .expect("open streams"),
        );
    }
    // Nothing listens on 9999: its pair alone fails, with the reason.
    let (refused_error, refused_data) = pairs[2];
    let refused = spdy.ended(refused_error).await.expect("stream end");
    let message = String::from_utf8_lossy(&refused.data).to_string();
    assert!(
        message.contains("9999") && message.contains("refused"),
        "{message:?}"
    );
    assert!(
        spdy.ended(refused_data).await.expect("stream end").reset,
        "the data stream is reset"
    );

    // Both others echo more than the server's per-stream buffer, at once.
    let size = 3 * 1024 * 1024;
    let sent = [pattern(1, size), pattern(2, size)];
    for chunk in 0..size / 16384 {
        for (index, (_, data)) in pairs[..2].iter().enumerate() {
            let bytes = &sent[index][chunk * 16384..(chunk + 1) * 16384];
            spdy.send(*data, bytes, false).await.expect("send");
        }
    }
    // client-go's keep-alive PINGs (odd ids, every 5 s) are echoed, also
    // while data flows; kubelet's and containerd's servers send none of
    // their own, and neither does crid.
    spdy.ping(1).await.expect("PING echoed");
    for (_, data) in &pairs[..2] {
        spdy.send(*data, b"", true).await.expect("send");
    }
    for (index, (error, data)) in pairs[..2].iter().enumerate() {
        let echoed = spdy.ended(*data).await.expect("stream end");
        assert!(!echoed.reset, "pair {index} reset");
        assert_eq!(echoed.data.len(), size, "pair {index} echoed all");
        assert!(echoed.data == sent[index], "pair {index} echoed in order");
        let error = spdy.ended(*error).await.expect("stream end");
        assert!(
            error.data.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&error.data)
        );
    }

    // A connection whose client vanishes mid-stream is closed in the pod.
    let (_, data) = spdy.open_forward(9000, 3).await.expect("open streams");
    spdy.send(data, b"half", false).await.expect("send");
    spdy.until(data, |r| r.data == b"half")
        .await
        .expect("stream");
    assert!(established(&world, &echo).await > 0);
    drop(spdy);
    let deadline = Instant::now() + PATIENCE;
    while established(&world, &echo).await > 0 {
        assert!(Instant::now() < deadline, "the pod connection stayed open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The same through WebSocket: SPDY in binary messages, as client-go's
    // WebSocket port-forward dials it.
    let url = port_forward_url(&world, &pod, vec![9000]).await;
    let spdy = Spdy::new(websocket_tunnel(&url).await);
    let (error, data) = spdy.open_forward(9000, 0).await.expect("open streams");
    let sent = pattern(3, 512 * 1024);
    for chunk in sent.chunks(16384) {
        spdy.send(data, chunk, false).await.expect("send");
    }
    spdy.ping(1).await.expect("PING echoed through WebSocket");
    spdy.send(data, b"", true).await.expect("send");
    let echoed = spdy.ended(data).await.expect("stream end");
    assert!(echoed.data == sent, "echoed {} bytes", echoed.data.len());
    assert!(spdy.ended(error).await.expect("stream end").data.is_empty());
    let (refused_error, _) = spdy.open_forward(9999, 1).await.expect("open streams");
    let refused = spdy.ended(refused_error).await.expect("stream end");
    assert!(
        String::from_utf8_lossy(&refused.data).contains("refused"),
        "{refused:?}"
    );
    drop(spdy);

    // The legacy WebSocket form: a data and an error channel per port of
    // the request, each opened with the port (little-endian u16).
    let url = port_forward_url(&world, &pod, vec![9000, 9999]).await;
    let mut socket = websocket(&url, "v4.channel.k8s.io").await;
    let mut got: HashMap<u8, Vec<u8>> = HashMap::new();
    let mut firsts: HashMap<u8, Vec<u8>> = HashMap::new();
    let mut sent = false;
    loop {
        let echoed = got.get(&0).is_some_and(|d| d == b"legacy");
        let refused = got
            .get(&3)
            .is_some_and(|d| String::from_utf8_lossy(d).contains("refused"));
        if echoed && refused {
            break;
        }
        if firsts.contains_key(&0) && !sent {
            use futures_util::SinkExt;
            socket
                .send(tokio_tungstenite::tungstenite::Message::binary(
                    b"\x00legacy".to_vec(),
                ))
                .await
                .expect("send");
            sent = true;
        }
        let (channel, data) = next_binary(&mut socket).await;
        if let std::collections::hash_map::Entry::Vacant(first) = firsts.entry(channel) {
            first.insert(data);
        } else {
            got.entry(channel).or_default().extend(data);
        }
    }
    assert_eq!(firsts[&0], 9000u16.to_le_bytes());
    assert_eq!(firsts[&1], 9000u16.to_le_bytes());
    assert_eq!(firsts[&2], 9999u16.to_le_bytes());
    assert_eq!(firsts[&3], 9999u16.to_le_bytes());
    drop(socket);
    world.finish(&[&pod]).await;
}

type WebSocket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket connection to `url` speaking `protocol`.
async fn websocket(url: &str, protocol: &str) -> WebSocket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url
        .replace("http://", "ws://")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        protocol.parse().expect("protocol"),
    );
    let host = url["http://".len()..].split('/').next().expect("host");
    let tcp = TcpStream::connect(host).await.expect("connect");
    let (socket, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("WebSocket upgrade");
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
    socket
}

/// The next binary message's channel and bytes.
async fn next_binary(socket: &mut WebSocket) -> (u8, Vec<u8>) {
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a message in time")
            .expect("the connection is open")
            .expect("a message");
        if let tokio_tungstenite::tungstenite::Message::Binary(bytes) = message {
            let (channel, data) = bytes.split_first().expect("channel byte");
            return (*channel, data.to_vec());
        }
    }
}

/// A WebSocket connection to `url` with the port-forward tunnel protocol,
/// as a byte stream (binary messages in, binary messages out).
async fn websocket_tunnel(url: &str) -> tokio::io::DuplexStream {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let mut request = url
        .replace("http://", "ws://")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "SPDY/3.1+portforward.k8s.io".parse().expect("protocol"),
    );
    let host = url["http://".len()..].split('/').next().expect("host");
    let tcp = TcpStream::connect(host).await.expect("connect");
    let (socket, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("WebSocket upgrade");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "SPDY/3.1+portforward.k8s.io"
    );
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (mut sink, mut source) = socket.split();
    let (mut from_client, mut to_client) = tokio::io::split(theirs);
    tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Binary(bytes) if to_client.write_all(&bytes).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_client.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });
    ours
}

/// TCP connections established in the container's network namespace.
async fn established(world: &World, container: &str) -> usize {
    world
        .sh(container, "busybox netstat -tn")
        .await
        .lines()
        .filter(|l| l.contains("ESTABLISHED"))
        .count()
}

#[tokio::test]
async fn tokens_are_single_use_and_the_upgrade_is_negotiated() {
    let world = World::new().await;
    let pod = world.pod("tokens").await;

    let url = port_forward_url(&world, &pod, vec![80]).await;
    let (base, _token) = url.rsplit_once('/').expect("a token");
    let unknown = format!("{base}/nosuchtoken");
    assert_eq!(
        upgrade(&unknown, &["portforward.k8s.io"])
            .await
            .expect("upgrade")
            .status,
        404
    );

    // No protocol header: 400, and the token is spent.
    assert_eq!(upgrade(&url, &[]).await.expect("upgrade").status, 400);
    assert_eq!(
        upgrade(&url, &["portforward.k8s.io"])
            .await
            .expect("upgrade")
            .status,
        404
    );

    // Nothing in common: 403 naming what the server accepts.
    let url = port_forward_url(&world, &pod, vec![80]).await;
    let refused = upgrade(&url, &["v4.channel.k8s.io"])
        .await
        .expect("upgrade");
    assert_eq!(refused.status, 403, "{}", refused.head);
    assert_eq!(
        refused.header("x-accepted-stream-protocol-versions"),
        vec!["portforward.k8s.io"]
    );

    // A good upgrade uses its token up.
    let url = port_forward_url(&world, &pod, vec![80]).await;
    let first = upgrade(&url, &["portforward.k8s.io"])
        .await
        .expect("upgrade");
    assert_eq!(first.status, 101);
    assert_eq!(
        upgrade(&url, &["portforward.k8s.io"])
            .await
            .expect("upgrade")
            .status,
        404
    );
    drop(first);

    // A token of one kind is no good for another.
    let url = port_forward_url(&world, &pod, vec![80]).await;
    let as_exec = url.replace("/portforward/", "/exec/");
    assert_eq!(
        upgrade(&as_exec, &["v4.channel.k8s.io"])
            .await
            .expect("upgrade")
            .status,
        404
    );

    // Requests are validated before a token is made.
    let mut rt = world.rt().await;
    let status = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![70000],
        })
        .await
        .expect_err("port out of range");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("port[0]"), "{}", status.message());
    let status = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "nosuchpod".into(),
            port: vec![80],
        })
        .await
        .expect_err("unknown pod");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    world.finish(&[&pod]).await;
}

/// Exec's URL upgraded with client-go's offer, and its streams opened in
/// client-go's order.
async fn exec(
    world: &World,
    container: &str,
    cmd: &[&str],
    tty: bool,
    stdin: bool,
) -> Remotecommand {
    let url = world
        .rt()
        .await
        .exec(cri::ExecRequest {
            container_id: container.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .expect("Exec")
        .into_inner()
        .url;
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/exec/"),
        "{url}"
    );
    remotecommand(&url, tty, stdin).await
}

/// The library's client with client-go's streams for `tty` and `stdin`;
/// crid speaks v4 over SPDY (v5 is WebSocket's).
async fn remotecommand(url: &str, tty: bool, stdin: bool) -> Remotecommand {
    let streams = Streams {
        tty,
        stdin,
        stderr: !tty,
    };
    let session = spdy::remotecommand(url, streams)
        .await
        .expect("exec session");
    assert_eq!(session.protocol, "v4.channel.k8s.io");
    session
}

#[tokio::test]
async fn exec_relays_stdio_and_reports_the_exit_code() {
    let world = World::new().await;
    let pod = world.pod("exec").await;
    let ctr = world.run(&pod, "sleeper", &["sleep", "3600"]).await;

    // stdin to the process, its stdout and stderr apart, its exit code.
    let session = exec(
        &world,
        &ctr,
        &[
            "sh",
            "-c",
            "read line; echo got:$line; echo oops >&2; exit 3",
        ],
        false,
        true,
    )
    .await;
    let stdin = session.stdin.expect("stdin");
    session
        .spdy
        .send(stdin, b"hello\n", false)
        .await
        .expect("send");
    let stdout = session
        .spdy
        .ended(session.stdout)
        .await
        .expect("stream end");
    assert_eq!(String::from_utf8_lossy(&stdout.data), "got:hello\n");
    let stderr = session
        .spdy
        .ended(session.stderr.expect("stderr"))
        .await
        .expect("stream end");
    assert_eq!(String::from_utf8_lossy(&stderr.data), "oops\n");
    let status = session.status().await.expect("status");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");

    // The client's EOF is the process's: cat ends, with success.
    let session = exec(&world, &ctr, &["cat"], false, true).await;
    let stdin = session.stdin.expect("stdin");
    let big = pattern(7, 1024 * 1024);
    for chunk in big.chunks(16384) {
        session.spdy.send(stdin, chunk, false).await.expect("send");
    }
    session.spdy.send(stdin, b"", true).await.expect("send");
    let stdout = session
        .spdy
        .ended(session.stdout)
        .await
        .expect("stream end");
    assert!(stdout.data == big, "cat echoed {} bytes", stdout.data.len());
    assert_eq!(session.status().await.expect("status")["status"], "Success");

    // A command that cannot run says why on the error stream.
    let session = exec(&world, &ctr, &["/no/such/binary"], false, false).await;
    let status = session.status().await.expect("status");
    assert_eq!(status["status"], "Failure", "{status}");

    // Requests are validated before a token is made.
    let mut rt = world.rt().await;
    for (request, field) in [
        (
            cri::ExecRequest {
                container_id: ctr.clone(),
                cmd: vec![],
                stdout: true,
                ..Default::default()
            },
            "cmd",
        ),
        (
            cri::ExecRequest {
                container_id: ctr.clone(),
                cmd: vec!["true".into()],
                tty: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            },
            "stderr",
        ),
    ] {
        let status = rt.exec(request).await.expect_err(field);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    let status = rt
        .exec(cri::ExecRequest {
            container_id: "nosuchcontainer".into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("unknown container");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    // Nothing runs in a stopped container.
    world.stop(&ctr, 0).await;
    let status = rt
        .exec(cri::ExecRequest {
            container_id: ctr.clone(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("stopped container");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn exec_with_a_tty_follows_resizes() {
    let world = World::new().await;
    let pod = world.pod("tty").await;
    let ctr = world.run(&pod, "sleeper", &["sleep", "3600"]).await;
    let script = "while :; do s=$(stty size); [ \"$s\" = '40 100' ] && break; sleep 0.05; done; \
                  echo size:$s; [ -t 0 ] && echo terminal; echo name:$(tty); exit 0";
    let session = exec(&world, &ctr, &["sh", "-c", script], true, true).await;
    session
        .spdy
        .send(
            session.resize.expect("resize"),
            br#"{"Width":100,"Height":40}"#,
            false,
        )
        .await
        .expect("send");
    let stdout = session
        .spdy
        .ended(session.stdout)
        .await
        .expect("stream end");
    let text = String::from_utf8_lossy(&stdout.data);
    assert!(text.contains("size:40 100"), "{text:?}");
    assert!(text.contains("terminal"), "{text:?}");
    // A terminal of the container's own devpts, so the container can name
    // it (ttyname), as with runc: one of the host's is "not a tty" there.
    assert!(text.contains("name:/dev/pts/"), "{text:?}");
    assert_eq!(session.status().await.expect("status")["status"], "Success");
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn an_exec_whose_client_vanishes_is_killed() {
    let world = World::new().await;
    let pod = world.pod("vanish").await;
    let ctr = world.run(&pod, "sleeper", &["sleep", "3600"]).await;
    let session = exec(
        &world,
        &ctr,
        &["sh", "-c", "echo up; exec sleep 7777"],
        false,
        true,
    )
    .await;
    session
        .spdy
        .until(session.stdout, |r| r.data == b"up\n")
        .await
        .expect("stream");
    assert!(world.sh(&ctr, "ps").await.contains("sleep 7777"));
    drop(session);
    let deadline = Instant::now() + PATIENCE;
    while world.sh(&ctr, "ps").await.contains("sleep 7777") {
        assert!(Instant::now() < deadline, "the exec outlived its session");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world.finish(&[&pod]).await;
}

/// What a WebSocket exec session sent, per channel, until it closed.
async fn websocket_exec(
    world: &World,
    container: &str,
    cmd: &[&str],
    protocol: &str,
    stdin: &[Vec<u8>],
) -> HashMap<u8, Vec<u8>> {
    let url = world
        .rt()
        .await
        .exec(cri::ExecRequest {
            container_id: container.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: false,
            stdin: !stdin.is_empty(),
            stdout: true,
            stderr: true,
        })
        .await
        .expect("Exec")
        .into_inner()
        .url;
    websocket_session(&url, protocol, stdin).await
}

/// What a WebSocket session at `url` sent, per channel, until it closed;
/// `stdin` is sent first, as binary messages or in base64. As client-go's
/// heartbeat, the client pings; as client-go's reader, it takes a channel
/// (the error channel's status too) as whole only at a normal close.
async fn websocket_session(url: &str, protocol: &str, stdin: &[Vec<u8>]) -> HashMap<u8, Vec<u8>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let mut request = url
        .replace("http://", "ws://")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        protocol.parse().expect("protocol"),
    );
    let host = url["http://".len()..].split('/').next().expect("host");
    let tcp = TcpStream::connect(host).await.expect("connect");
    let (mut socket, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("WebSocket upgrade");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        protocol,
        "negotiated"
    );
    socket
        .send(Message::Ping(Bytes::new()))
        .await
        .expect("ping");
    let base64 = protocol.contains("base64");
    for message in stdin {
        let message = if base64 {
            use base64::Engine;
            let (channel, data) = message.split_first().expect("channel");
            Message::text(format!(
                "{}{}",
                char::from(b'0' + channel),
                base64::engine::general_purpose::STANDARD.encode(data)
            ))
        } else {
            Message::binary(message.clone())
        };
        socket.send(message).await.expect("send");
    }
    let mut channels: HashMap<u8, Vec<u8>> = HashMap::new();
    let close = loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("the session ends in time");
        let (channel, data) = match message {
            Some(Ok(Message::Binary(bytes))) => {
                let (channel, data) = bytes.split_first().expect("channel byte");
                (*channel, data.to_vec())
            }
            Some(Ok(Message::Text(text))) => {
                use base64::Engine;
                let (channel, data) = text.as_bytes().split_first().expect("channel");
                let data = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .expect("base64");
                (channel - b'0', data)
            }
            Some(Ok(Message::Close(frame))) => break frame,
            None | Some(Err(_)) => break None,
            Some(Ok(_)) => continue,
        };
        channels.entry(channel).or_default().extend(data);
    };
    // client-go fails every channel on any other end ("close 1005 (no
    // status)" for a bare close frame), losing the exit status.
    assert_eq!(
        close.map(|frame| frame.code),
        Some(CloseCode::Normal),
        "the server ends the session with a normal close; channels: {channels:?}"
    );
    channels
}

#[tokio::test]
async fn exec_over_websocket_speaks_v5_and_base64() {
    let world = World::new().await;
    let pod = world.pod("websocket").await;
    let ctr = world.run(&pod, "sleeper", &["sleep", "3600"]).await;

    // v5 (crictl -r websocket): stdin, its CLOSE as EOF, the exit code.
    let channels = websocket_exec(
        &world,
        &ctr,
        &["sh", "-c", "cat; echo oops >&2; exit 5"],
        "v5.channel.k8s.io",
        &[b"\x00hello ".to_vec(), b"\x00world".to_vec(), vec![255, 0]],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&channels[&1]), "hello world");
    assert_eq!(String::from_utf8_lossy(&channels[&2]), "oops\n");
    let status: serde_json::Value = serde_json::from_slice(&channels[&3]).expect("status");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "5");

    // base64 text messages, v4's JSON success.
    let channels = websocket_exec(
        &world,
        &ctr,
        &["echo", "plain"],
        "v4.base64.channel.k8s.io",
        &[],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&channels[&1]), "plain\n");
    let status: serde_json::Value = serde_json::from_slice(&channels[&3]).expect("status");
    assert_eq!(status["status"], "Success", "{status}");
    world.finish(&[&pod]).await;
}

/// critest's exec specs over WebSocket as client-go's executor runs them:
/// v5 alone offered, no stdin, or a terminal whose stdin the client keeps
/// open; the session ends with the process, its status on the error
/// channel and a normal close.
#[tokio::test]
async fn exec_over_websocket_ends_with_the_process_as_client_go_expects() {
    let world = World::new().await;
    let pod = world.pod("wsclientgo").await;
    let ctr = world.run(&pod, "sleeper", &["sleep", "3600"]).await;
    for (tty, stdin) in [(false, false), (true, true)] {
        let url = world
            .rt()
            .await
            .exec(cri::ExecRequest {
                container_id: ctr.clone(),
                cmd: vec!["echo".into(), "hello".into()],
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            })
            .await
            .expect("Exec")
            .into_inner()
            .url;
        let channels = websocket_session(&url, "v5.channel.k8s.io", &[]).await;
        let stdout = String::from_utf8_lossy(&channels[&1]);
        // A terminal turns the newline into CRLF.
        assert_eq!(stdout.trim_end(), "hello", "tty={tty}");
        assert!(!channels.contains_key(&2), "tty={tty}: {channels:?}");
        let status: serde_json::Value = serde_json::from_slice(&channels[&3]).expect("status");
        assert_eq!(status["status"], "Success", "tty={tty}: {status}");
    }
    world.finish(&[&pod]).await;
}

async fn attach(world: &World, container: &str) -> Remotecommand {
    let url = world
        .rt()
        .await
        .attach(cri::AttachRequest {
            container_id: container.into(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .expect("Attach")
        .into_inner()
        .url;
    assert!(url.contains("/attach/"), "{url}");
    remotecommand(&url, false, true).await
}

#[tokio::test]
async fn attachers_share_the_containers_stdio_and_detach_without_stopping_it() {
    let world = World::new().await;
    let pod = world.pod("attach").await;
    let mut config = world.container_config(
        "reader",
        &[
            "sh",
            "-c",
            "while read line; do echo seen:$line; echo err:$line >&2; done",
        ],
    );
    config.stdin = true;
    let ctr = world.run_config(&pod, config).await;

    let first = attach(&world, &ctr).await;
    let second = attach(&world, &ctr).await;
    let first_stdin = first.stdin.expect("stdin");
    // Both attached (the second sees what the first's input made).
    let deadline = Instant::now() + PATIENCE;
    loop {
        first
            .spdy
            .send(first_stdin, b"sync\n", false)
            .await
            .expect("send");
        let seen = second
            .spdy
            .until(second.stdout, |_| true)
            .await
            .expect("stream")
            .data
            .windows(9)
            .any(|w| w == b"seen:sync");
        if seen {
            break;
        }
        assert!(Instant::now() < deadline, "the second attacher saw nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first
        .spdy
        .send(first_stdin, b"one\n", false)
        .await
        .expect("send");
    for session in [&first, &second] {
        let contains = |r: &Received, what: &[u8]| r.data.windows(what.len()).any(|w| w == what);
        session
            .spdy
            .until(session.stdout, |r| contains(r, b"seen:one\n"))
            .await
            .expect("stream");
        session
            .spdy
            .until(session.stderr.expect("stderr"), |r| {
                contains(r, b"err:one\n")
            })
            .await
            .expect("stream");
    }

    // The first detaches: the container goes on, the second still talks.
    drop(first);
    let second_stdin = second.stdin.expect("stdin");
    second
        .spdy
        .send(second_stdin, b"two\n", false)
        .await
        .expect("send");
    second
        .spdy
        .until(second.stdout, |r| {
            r.data.windows(9).any(|w| w == b"seen:two\n")
        })
        .await
        .expect("stream");
    let (status, _) = world.status(&ctr).await;
    assert_eq!(status.state(), cri::ContainerState::ContainerRunning);
    let log = std::fs::read_to_string(world.log_file("attach", "reader")).expect("log");
    assert!(
        log.contains("seen:one") && log.contains("seen:two"),
        "{log}"
    );

    // Its end ends the attach, successfully.
    world.stop(&ctr, 0).await;
    let stdout = second.spdy.ended(second.stdout).await.expect("stream end");
    assert!(!stdout.reset);
    assert_eq!(second.status().await.expect("status")["status"], "Success");
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn idle_sessions_are_closed_and_sessions_are_capped() {
    let world = World::with_config("[streaming]\nidle_timeout = \"1s\"\nmax_sessions = 1\n").await;
    let pod = world.pod("limits").await;

    let url = port_forward_url(&world, &pod, vec![80]).await;
    let session = upgrade(&url, &["portforward.k8s.io"])
        .await
        .expect("upgrade");
    assert_eq!(session.status, 101);
    // One session at a time: the next upgrade is refused while it lasts.
    let url = port_forward_url(&world, &pod, vec![80]).await;
    assert_eq!(
        upgrade(&url, &["portforward.k8s.io"])
            .await
            .expect("upgrade")
            .status,
        503
    );

    // A session that carries nothing is closed by the server.
    let mut stream = session.stream;
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("the server closes an idle session")
        .expect("read");
    drop(stream);
    // Its place is free again, once the server has let go of it (a 503
    // leaves the token unused).
    let url = port_forward_url(&world, &pod, vec![80]).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = upgrade(&url, &["portforward.k8s.io"])
            .await
            .expect("upgrade")
            .status;
        if status == 101 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            Instant::now() < deadline,
            "the idle session's place stayed taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn attach_over_websocket_closes_a_stdin_once_containers_stdin() {
    let world = World::new().await;
    let pod = world.pod("wsattach").await;
    let mut config = world.container_config(
        "reader",
        &[
            "sh",
            "-c",
            "while read line; do echo seen:$line; done; echo bye",
        ],
    );
    config.stdin = true;
    config.stdin_once = true;
    let ctr = world.run_config(&pod, config).await;
    let url = world
        .rt()
        .await
        .attach(cri::AttachRequest {
            container_id: ctr.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .expect("Attach")
        .into_inner()
        .url;
    // v5: the line, then CLOSE of stdin, which ends the container (stdin_once).
    let channels = websocket_session(
        &url,
        "v5.channel.k8s.io",
        &[b"\x00hi\n".to_vec(), vec![255, 0]],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&channels[&1]), "seen:hi\nbye\n");
    let status: serde_json::Value = serde_json::from_slice(&channels[&3]).expect("status");
    assert_eq!(status["status"], "Success", "{status}");
    assert_eq!(world.wait_exited(&ctr).await.exit_code, 0);
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn attach_to_a_tty_container_resizes_it_and_types_into_it() {
    let world = World::new().await;
    let pod = world.pod("ttyattach").await;
    let mut config = world.container_config(
        "term",
        &[
            "sh",
            "-c",
            "while :; do s=$(stty size); [ \"$s\" = '30 90' ] && break; sleep 0.05; done; \
             echo size:$s; read x; echo got:$x",
        ],
    );
    config.stdin = true;
    config.tty = true;
    let ctr = world.run_config(&pod, config).await;
    let url = world
        .rt()
        .await
        .attach(cri::AttachRequest {
            container_id: ctr.clone(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        })
        .await
        .expect("Attach")
        .into_inner()
        .url;
    let session = remotecommand(&url, true, true).await;
    session
        .spdy
        .send(
            session.resize.expect("resize"),
            br#"{"Width":90,"Height":30}"#,
            false,
        )
        .await
        .expect("send");
    let contains = |r: &Received, what: &[u8]| r.data.windows(what.len()).any(|w| w == what);
    session
        .spdy
        .until(session.stdout, |r| contains(r, b"size:30 90"))
        .await
        .expect("stream");
    session
        .spdy
        .send(session.stdin.expect("stdin"), b"typed\n", false)
        .await
        .expect("send");
    let stdout = session
        .spdy
        .ended(session.stdout)
        .await
        .expect("stream end");
    assert!(
        contains(&stdout, b"got:typed"),
        "{:?}",
        String::from_utf8_lossy(&stdout.data)
    );
    assert_eq!(session.status().await.expect("status")["status"], "Success");
    world.finish(&[&pod]).await;
}
