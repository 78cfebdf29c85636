//! Loopback backends: a recording echo backend, scripted raw answers, a
//! frame-level backend and named backends that can be killed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{within, RawWs};

/// What a backend saw of one upgrade request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Request target.
    pub uri: String,
    /// Headers, names lower-case, in order.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A tungstenite echo backend that records what it saw.
#[derive(Clone)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Upgrade requests seen.
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    /// Binds a fresh loopback port for a recording backend.
    async fn bind() -> (Backend, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = Backend {
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
            seen: Arc::default(),
        };
        (backend, listener)
    }

    /// TCP connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The most recent upgrade request.
    pub fn last_seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

/// Starts an echo backend. It picks the first subprotocol offered and
/// answers `x-test-ext` when offered, so negotiation can be checked.
pub async fn echo_backend() -> Backend {
    let (backend, listener) = Backend::bind().await;
    let b = backend.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            b.connections.fetch_add(1, Ordering::SeqCst);
            let seen = b.seen.clone();
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)] // tungstenite's callback signature
                let callback = |req: &Request, mut res: Response| {
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(n, v)| {
                            (n.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                        })
                        .collect();
                    seen.lock().unwrap().push(Seen {
                        uri: req.uri().to_string(),
                        headers,
                    });
                    if let Some(p) = req.headers().get("sec-websocket-protocol") {
                        let first = p
                            .to_str()
                            .unwrap()
                            .split(',')
                            .next()
                            .unwrap()
                            .trim()
                            .to_string();
                        res.headers_mut()
                            .insert("sec-websocket-protocol", first.parse().unwrap());
                    }
                    if let Some(e) = req.headers().get("sec-websocket-extensions") {
                        if e.to_str().unwrap().contains("x-test-ext") {
                            res.headers_mut()
                                .insert("sec-websocket-extensions", "x-test-ext".parse().unwrap());
                        }
                    }
                    Ok(res)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(ref t) if t.starts_with("close:") => {
                            // "close:CODE" asks the backend to close first.
                            let code: u16 = t[6..].parse().unwrap_or(1000);
                            let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
                                code: code.into(),
                                reason: "backend says bye".into(),
                            };
                            let _ = ws.close(Some(frame)).await;
                            while let Some(Ok(_)) = ws.next().await {}
                            return;
                        }
                        Message::Text(_) | Message::Binary(_) => {
                            let Ok(()) = ws.send(msg).await else { return };
                        }
                        Message::Close(_) => {
                            // tungstenite queued the close reply; send it.
                            let _ = ws.flush().await;
                            while let Some(Ok(_)) = ws.next().await {}
                            return;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    backend
}

/// A TCP listener that answers each connection with `answer` (raw bytes
/// after reading the request head), counting connections.
pub async fn scripted_backend(answer: fn(&str) -> String) -> Backend {
    let (backend, listener) = Backend::bind().await;
    let b = backend.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            b.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let key = read_key(&mut stream).await;
                let _ = stream.write_all(answer(&key).as_bytes()).await;
                let mut sink = [0u8; 1024];
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    backend
}

/// Sockets bound by [`closed_port`] and kept bound, not listening, so that
/// no listener started later in the same process is given their port: a
/// proxy under test that got it would connect to itself instead of being
/// refused.
static CLOSED_PORTS: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());

/// An address nothing listens on and nothing else in this process can bind
/// until [`release_closed_port`]: connecting to it is refused.
pub async fn closed_port() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    CLOSED_PORTS.lock().unwrap().push(socket);
    addr
}

/// Frees a port of [`closed_port`] so that a test can listen on it.
pub fn release_closed_port(addr: SocketAddr) {
    CLOSED_PORTS
        .lock()
        .unwrap()
        .retain(|socket| socket.local_addr().ok() != Some(addr));
}

/// Reads a request head and returns its `Sec-WebSocket-Key` (empty when
/// there is none).
async fn read_key(stream: &mut TcpStream) -> String {
    let head = read_until_head_end(stream).await;
    head.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

async fn read_until_head_end(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A backend that completes each upgrade and hands the connection to the
/// test as a frame-level peer, to send and observe exact frames.
pub async fn raw_backend() -> (SocketAddr, tokio::sync::mpsc::Receiver<RawWs>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let key = read_key(&mut stream).await;
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                wsgate::handshake::accept_for(key.as_bytes())
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
            if tx.send(RawWs::server(stream, Vec::new())).await.is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// A backend that greets each connection with its name, then echoes;
/// `kill` closes its listener and every connection it has.
pub struct NamedBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it answers first on every connection.
    pub name: String,
    task: tokio::task::JoinHandle<()>,
}

impl NamedBackend {
    /// Starts one on a fresh port.
    pub async fn start(name: &str) -> NamedBackend {
        Self::start_at(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts one on `addr` (to bring a killed backend back).
    pub async fn start_at(name: &str, addr: SocketAddr) -> NamedBackend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let greeting = name.to_string();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let greeting = greeting.clone();
                connections.spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    if ws.send(Message::text(greeting)).await.is_err() {
                        return;
                    }
                    while let Some(Ok(msg)) = ws.next().await {
                        match msg {
                            Message::Text(_) | Message::Binary(_) => {
                                let Ok(()) = ws.send(msg).await else { return };
                            }
                            Message::Close(_) => {
                                let _ = ws.flush().await;
                                return;
                            }
                            _ => {}
                        }
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        NamedBackend {
            addr,
            name: name.to_string(),
            task,
        }
    }

    /// Stops accepting and drops every connection, like a crashed process.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Connects through the proxy with extra request headers; returns the
/// socket, the backend's name and the 101's headers.
pub async fn connect_named(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (WebSocketStream<TcpStream>, String, http::HeaderMap) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let stream = within(TcpStream::connect(addr)).await.unwrap();
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (mut ws, response) = within(tokio_tungstenite::client_async(request, stream))
        .await
        .expect("upgrade succeeds");
    let name = match within(ws.next()).await {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("expected the backend's name, got {other:?}"),
    };
    (ws, name, response.headers().clone())
}

/// How many of `names` are each of `expected`, in that order.
pub fn tally(names: &[String], expected: &[&str]) -> Vec<usize> {
    expected
        .iter()
        .map(|e| names.iter().filter(|n| n == e).count())
        .collect()
}
