//! Push on one instance (issue 19): the publish API reaches a user, a
//! channel and a connection id; an injected message never lands inside a
//! fragmented message; it is sent uncompressed on permessage-deflate
//! connections; a client too slow for its pushes is closed with 1013 while
//! others keep receiving.

mod common;

use std::net::SocketAddr;

use common::{raw_request, within, RawAnswer, RawWs, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const TOKEN: &str = "test-token-1";

/// A backend that upgrades every connection (accepting permessage-deflate
/// when offered) and hands the test the frame-level peer with the request
/// head it received.
async fn recording_backend() -> (SocketAddr, mpsc::Receiver<(RawWs, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(512);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let key = header_of(&head, "sec-websocket-key").unwrap_or_default();
                let deflate = header_of(&head, "sec-websocket-extensions")
                    .is_some_and(|e| e.contains("permessage-deflate"));
                let ext = if deflate {
                    "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                } else {
                    ""
                };
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{ext}Sec-WebSocket-Accept: {}\r\n\r\n",
                    wsgate::handshake::accept_for(key.as_bytes())
                );
                stream.write_all(answer.as_bytes()).await.unwrap();
                let _ = tx.send((RawWs::server(stream, Vec::new()), head)).await;
            });
        }
    });
    (addr, rx)
}

fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// A proxy with a tagged route `/echo` and a publish listener.
struct Node {
    proxy: SocketAddr,
    publish: SocketAddr,
    _dir: TempDir,
}

async fn start_node(backend: SocketAddr, publish_extra: &str, route_extra: &str) -> Node {
    let dir = TempDir::new("push");
    std::fs::write(dir.0.join("token"), format!("{TOKEN}\n")).unwrap();
    let toml = format!(
        r#"
[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
path_prefix = "/echo"
pool = "p"
tags = {{ user = "header:X-User-Id", channels = "query:channels" }}
{route_extra}

[[pool]]
name = "p"
backends = [{{ addr = "{backend}" }}]

[publish]
bind = "127.0.0.1:0"
token = "file:token"
{publish_extra}
"#
    );
    let config = wsgate::config::parse(&toml, &dir.0, "test.toml").expect("valid");
    let server = wsgate::server::Server::start(config, None)
        .await
        .expect("binds");
    let proxy = server.local_addr("main").unwrap();
    let publish = wsgate::publish::start(&server)
        .await
        .expect("binds")
        .expect("configured");
    tokio::spawn(server.run(std::future::pending()));
    Node {
        proxy,
        publish,
        _dir: dir,
    }
}

/// A client of user `user` on `channels`, with its backend end and the
/// connection id the backend was told.
async fn connect(
    node: &Node,
    backends: &mut mpsc::Receiver<(RawWs, String)>,
    user: &str,
    channels: &str,
    extra: &str,
) -> (RawWs, RawWs, String) {
    let request = common::upgrade_request(
        &format!("/echo?channels={channels}"),
        &format!("X-User-Id: {user}\r\nX-Wsgate-Connection-Id: forged\r\n{extra}"),
    );
    let (client, answer) = RawWs::connect(node.proxy, &request).await;
    assert_eq!(answer.status, 101, "{answer:?}");
    let (backend, head) = within(backends.recv()).await.unwrap();
    let id = header_of(&head, "x-wsgate-connection-id").expect("connection id header");
    assert_ne!(id, "forged", "the client's copy is removed");
    assert_eq!(
        head.to_ascii_lowercase()
            .matches("x-wsgate-connection-id")
            .count(),
        1
    );
    (client, backend, id)
}

async fn post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
    token: &str,
) -> RawAnswer {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    raw_request(addr, &request).await
}

async fn publish(node: &Node, json: &str) -> serde_json::Value {
    let answer = post(
        node.publish,
        "/publish",
        "application/json",
        json.as_bytes(),
        TOKEN,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    serde_json::from_str(&answer.body).unwrap()
}

#[tokio::test]
async fn publish_reaches_a_user_a_channel_and_a_connection_id() {
    let (backend, mut backends) = recording_backend().await;
    let node = start_node(backend, "", "max_message_bytes = 1024").await;
    let (mut a, _a_backend, _a_id) = connect(&node, &mut backends, "42", "room,news", "").await;
    let (mut b, _b_backend, b_id) = connect(&node, &mut backends, "7", "room", "").await;

    let answer = publish(&node, r#"{"to":{"user":"42"},"text":"for 42"}"#).await;
    assert_eq!(answer["delivered"], 1);
    let got = a.recv().await.unwrap();
    assert_eq!(
        (got.fin, got.opcode, got.payload.as_slice()),
        (true, 1, &b"for 42"[..])
    );

    let answer = publish(&node, r#"{"to":{"channel":"room"},"text":"to the room"}"#).await;
    assert_eq!(answer["delivered"], 2);
    assert_eq!(a.recv().await.unwrap().payload, b"to the room");
    assert_eq!(b.recv().await.unwrap().payload, b"to the room");

    let json = format!(r#"{{"to":{{"connection":"{b_id}"}},"binary":"AAEC"}}"#);
    assert_eq!(publish(&node, &json).await["delivered"], 1);
    let got = b.recv().await.unwrap();
    assert_eq!((got.opcode, got.payload.as_slice()), (2, &[0u8, 1, 2][..]));

    // A raw body with the target in the query.
    let answer = post(node.publish, "/publish?user=7", "text/plain", b"raw", TOKEN).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(b.recv().await.unwrap().payload, b"raw");

    // Refusals, each with a reason.
    let wrong = post(node.publish, "/publish?user=7", "text/plain", b"x", "nope").await;
    assert_eq!(wrong.status, 401);
    let bad = post(
        node.publish,
        "/publish",
        "application/json",
        b"{\"to\":{}}",
        TOKEN,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("bad JSON"), "{}", bad.body);
    let big = vec![b'x'; 2048];
    let large = post(node.publish, "/publish?user=7", "text/plain", &big, TOKEN).await;
    assert_eq!(large.status, 413, "{large:?}");
    let kind = post(node.publish, "/publish?user=7", "image/png", b"x", TOKEN).await;
    assert_eq!(kind.status, 415);

    // The registry of this instance.
    let get = format!(
        "GET /connections?user=42 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let listed = raw_request(node.publish, get.as_bytes()).await;
    assert_eq!(listed.status, 200);
    let listed: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
    assert_eq!(listed["connections"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_injected_message_never_lands_inside_a_fragmented_one() {
    let (backend, mut backends) = recording_backend().await;
    let node = start_node(backend, "", "").await;
    let (mut client, mut backend, _) = connect(&node, &mut backends, "1", "", "").await;
    backend.send(false, 1, b"first half, ").await;
    let first = client.recv().await.unwrap();
    assert_eq!((first.fin, first.opcode), (false, 1));
    // Queued while the backend's message is open: it must wait.
    assert_eq!(
        publish(&node, r#"{"to":{"user":"1"},"text":"pushed"}"#).await["delivered"],
        1
    );
    backend.send(false, 0, b"more, ").await;
    backend.send(true, 0, b"end").await;
    backend.send(true, 1, b"next").await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let f = client.recv().await.unwrap();
        seen.push((f.fin, f.opcode, String::from_utf8(f.payload).unwrap()));
    }
    let pushed = seen.iter().position(|f| f.2 == "pushed").unwrap();
    let end = seen.iter().position(|f| f.2 == "end").unwrap();
    assert!(
        pushed > end,
        "pushed inside the fragmented message: {seen:?}"
    );
    assert_eq!(seen[pushed], (true, 1, "pushed".to_string()));
}

/// Reads one frame straight off the socket: its first byte and payload.
async fn raw_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (u8, Vec<u8>) {
    loop {
        if buf.len() >= 2 {
            let len7 = buf[1] & 0x7f;
            let (len, at) = match len7 {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (
                    u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n if n < 126 => (n as usize, 2),
                _ => (usize::MAX, 0),
            };
            if len != usize::MAX && buf.len() >= at + len {
                let first = buf[0];
                let payload = buf[at..at + len].to_vec();
                buf.drain(..at + len);
                return (first, payload);
            }
        }
        let mut chunk = [0u8; 4096];
        let n = within(stream.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The backend's side of permessage-deflate with context takeover (RFC
/// 7692): one compressor for the whole connection, each message flushed
/// and its trailing 00 00 ff ff removed.
fn deflate(c: &mut flate2::Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// The client's side: one decompressor for the whole connection.
fn inflate(d: &mut flate2::Decompress, data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(4096);
    d.decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync)
        .expect("valid DEFLATE data in context");
    out
}

#[tokio::test]
async fn pushed_messages_are_uncompressed_on_deflate_connections() {
    let (backend, mut backends) = recording_backend().await;
    let node = start_node(backend, "", "").await;
    let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let (client, mut backend, _) = connect(&node, &mut backends, "d", "", offer).await;
    let mut stream = client.stream;
    let mut buf = Vec::new();
    let mut compressor = flate2::Compress::new(flate2::Compression::default(), false);
    let mut decompressor = flate2::Decompress::new(false);
    for round in 0..3 {
        // A compressed message from the backend (RSV1 set), which later
        // ones refer back to: the client's inflater must see every one of
        // them and nothing else.
        let text = format!("the same words again and again, round {round}");
        let body = deflate(&mut compressor, text.as_bytes());
        let mut frame = vec![0xC1, body.len() as u8];
        frame.extend_from_slice(&body);
        backend.send_raw(&frame).await;
        let (first, payload) = raw_frame(&mut stream, &mut buf).await;
        assert_eq!(first, 0xC1);
        assert_eq!(inflate(&mut decompressor, &payload), text.as_bytes());
        let json = format!(r#"{{"to":{{"user":"d"}},"text":"plain {round}"}}"#);
        publish(&node, &json).await;
        let (first, payload) = raw_frame(&mut stream, &mut buf).await;
        assert_eq!(first, 0x81, "FIN, RSV1 clear, text");
        assert_eq!(payload, format!("plain {round}").as_bytes());
    }
}

#[tokio::test]
async fn a_slow_client_is_closed_with_1013_while_others_keep_receiving() {
    let (backend, mut backends) = recording_backend().await;
    let node = start_node(backend, "queue_messages = 4", "max_message_bytes = 262144").await;
    // The slow client reads nothing until the end, with a small window.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(node.proxy).await.unwrap();
    let request = common::upgrade_request("/echo?channels=all", "X-User-Id: slow\r\n");
    slow.write_all(request.as_bytes()).await.unwrap();
    let (mut slow_backend, _) = within(backends.recv()).await.unwrap();
    let (mut fast, _fast_backend, _) = connect(&node, &mut backends, "fast", "all", "").await;
    let reader = tokio::spawn(async move {
        let mut n = 0u32;
        while let Some(f) = fast.recv().await {
            if f.opcode == 2 {
                n += 1;
            }
            if f.payload == b"after" {
                return n;
            }
        }
        n
    });
    let chunk = base64_of(&vec![7u8; 64 * 1024]);
    let json = format!(r#"{{"to":{{"channel":"all"}},"binary":"{chunk}"}}"#);
    let mut overflowed = false;
    for _ in 0..2000 {
        let answer = publish(&node, &json).await;
        if answer["overflowed"] == 1 {
            overflowed = true;
            break;
        }
    }
    assert!(overflowed, "the slow client's queue never filled");
    // The slow client finally reads: its pushes, then 1013.
    let slow_reader = tokio::spawn(async move {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            slow.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let mut slow = RawWs::server(slow, Vec::new());
        slow.recv_close().await.map(|f| f.close_code())
    });
    // The backend of the slow client is told 1001.
    let close = slow_backend
        .recv_close()
        .await
        .expect("a close for the backend");
    assert_eq!(close.close_code(), 1001);
    assert_eq!(within(slow_reader).await.unwrap(), Some(1013));
    let answer = publish(&node, r#"{"to":{"channel":"all"},"text":"after"}"#).await;
    assert_eq!(answer["delivered"], 1, "only the fast client is left");
    assert!(within(reader).await.unwrap() > 0);
}

fn base64_of(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
