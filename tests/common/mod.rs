//! Shared test harness: the real proxy on loopback port 0, recording
//! backends, and a raw frame-level WebSocket peer for exact wire checks.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use wsgate::server::Server;

/// Every wait in the tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Awaits `fut` for at most [`LIMIT`].
pub async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("test step timed out")
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    addrs: Vec<(String, SocketAddr)>,
    /// The running proxy's shared parts (live state, metrics).
    pub shared: Arc<wsgate::server::Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl Proxy {
    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .expect("listener exists")
    }

    /// `ws://ADDR{path}` for the listener named `main`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr("main"), path)
    }
}

impl Proxy {
    /// Waits (bounded) until backend `addr` of pool `pool` has `n` active
    /// connections in the proxy's own count.
    pub async fn wait_active(&self, pool: &str, addr: SocketAddr, n: u32) {
        let state = self.shared.registry.get(pool, addr).expect("backend known");
        for _ in 0..1000 {
            if state.active() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "backend {addr} never reached {n} active connections (has {})",
            state.active()
        );
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the proxy on `toml` (relative paths against `base`).
pub async fn start_proxy_in(toml: &str, base: &Path) -> Proxy {
    let config = match wsgate::config::parse(toml, base, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("test configuration invalid: {e}\n{toml}"),
    };
    let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
    let server = Server::start(config, None).await.expect("binds");
    wsgate::admin::spawn(&server);
    let addrs = names
        .iter()
        .map(|n| (n.clone(), server.local_addr(n).unwrap()))
        .collect();
    let shared = server.shared().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Proxy {
        addrs,
        shared,
        stop: Some(stop),
    }
}

/// Starts the proxy on `toml`.
pub async fn start_proxy(toml: &str) -> Proxy {
    start_proxy_in(toml, Path::new(".")).await
}

/// A configuration with one plain listener `main` on port 0, a route
/// `/echo` to pool `p` of `backends`, and `extra` appended.
pub fn simple_config(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\npath_prefix = \"/echo\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\nbackends = [{}]\n{extra}\n",
        list.join(", ")
    )
}

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

/// An address nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
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

/// A raw HTTP exchange: what came back before the connection closed.
#[derive(Debug)]
pub struct RawAnswer {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl RawAnswer {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` bytes and reads the answer until the proxy closes.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> RawAnswer {
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    within(stream.read_to_end(&mut out)).await.unwrap();
    parse_answer(&out)
}

/// Parses an HTTP/1.1 response head and body.
pub fn parse_answer(bytes: &[u8]) -> RawAnswer {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawAnswer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A valid upgrade request for `path`, with `extra` header lines.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Connects a tungstenite client to `ws://{addr}{path}`.
pub async fn ws_connect(addr: SocketAddr, path: &str) -> WebSocketStream<TcpStream> {
    let stream = within(TcpStream::connect(addr)).await.unwrap();
    let url = format!("ws://{addr}{path}");
    let (ws, _) = within(tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgrade succeeds");
    ws
}

/// One frame as seen on the wire (payload unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// FIN bit.
    pub fin: bool,
    /// Opcode.
    pub opcode: u8,
    /// Whether it arrived masked.
    pub masked: bool,
    /// Payload, unmasked.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame (1005 when it has none).
    pub fn close_code(&self) -> u16 {
        if self.payload.len() >= 2 {
            u16::from_be_bytes([self.payload[0], self.payload[1]])
        } else {
            1005
        }
    }
}

/// A frame-level WebSocket peer: sends exactly the frames it is told to.
pub struct RawWs {
    /// The connection.
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Whether frames it sends are masked (a client's are).
    pub mask: bool,
}

impl RawWs {
    /// Upgrades a client connection to `addr` with `request`; returns the
    /// peer and the proxy's answer head.
    pub async fn connect(addr: SocketAddr, request: &str) -> (RawWs, RawAnswer) {
        let mut stream = within(TcpStream::connect(addr)).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = within(stream.read(&mut chunk)).await.unwrap();
            assert!(
                n > 0,
                "closed before an answer: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let answer = parse_answer(&buf[..head_end]);
        buf.drain(..head_end);
        (
            RawWs {
                stream,
                buf,
                mask: true,
            },
            answer,
        )
    }

    /// Wraps an already upgraded server-side connection.
    pub fn server(stream: TcpStream, leftover: Vec<u8>) -> RawWs {
        RawWs {
            stream,
            buf: leftover,
            mask: false,
        }
    }

    /// Sends one frame with `len` encoded minimally.
    pub async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let bytes = encode_frame(fin, opcode, payload, self.mask);
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends a close frame with `code` and `reason`.
    pub async fn send_close(&mut self, code: u16, reason: &str) {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        self.send(true, 0x8, &p).await;
    }

    /// The next frame, or `None` when the connection ends first.
    pub async fn recv(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = decode_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = within(self.stream.read(&mut chunk)).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until a close arrives; returns it.
    pub async fn recv_close(&mut self) -> Option<RawFrame> {
        for _ in 0..10_000 {
            let f = self.recv().await?;
            if f.opcode == 0x8 {
                return Some(f);
            }
        }
        None
    }

    /// Whether the peer closed the TCP connection (reads to EOF).
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        for _ in 0..10_000 {
            match within(self.stream.read(&mut chunk)).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
        false
    }
}

/// Encodes one frame; masked with a fixed key when `mask`.
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let m = if mask { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if mask {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Decodes one whole frame from the front of `buf`.
pub fn decode_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let key = if masked {
        let k: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        k
    } else {
        [0; 4]
    };
    let payload: Vec<u8> = buf
        .get(at..at + len)?
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    let frame = RawFrame {
        fin: buf[0] & 0x80 != 0,
        opcode: buf[0] & 0x0f,
        masked,
        payload,
    };
    Some((frame, at + len))
}

/// A temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh folder under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("wsgate-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test certificate authority that issues server certificates into a
/// temporary folder.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// The folder certificates are written to.
    pub dir: TempDir,
}

/// A certificate issued by [`TestCa`].
pub struct Issued {
    /// PEM chain file.
    pub cert: PathBuf,
    /// PEM key file.
    pub key: PathBuf,
    /// The leaf in DER, to compare with what a client received.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A fresh CA.
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wsgate test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
            dir: TempDir::new("pki"),
        }
    }

    /// Issues a server certificate for `names`, written as `{stem}.pem` and
    /// `{stem}.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = self.dir.0.join(format!("{stem}.pem"));
        let key_path = self.dir.0.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            cert: cert_path,
            key: key_path,
            der: cert.der().to_vec(),
        }
    }

    /// A client configuration trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// Connects over TLS to `addr` with SNI `name`, verifying the chain.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        name: &str,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = within(TcpStream::connect(addr)).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(self.client_config());
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        within(connector.connect(server_name, tcp))
            .await
            .expect("TLS handshake succeeds")
    }
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

/// A proxy in front of a raw backend with `defaults` (TOML lines for the
/// `[defaults]` table); returns the client and backend ends of one
/// connection.
pub async fn raw_pair(defaults: &str) -> (Proxy, RawWs, RawWs) {
    let (addr, mut accepted) = raw_backend().await;
    let toml = simple_config(&[addr], &format!("[defaults]\n{defaults}\n"));
    let proxy = start_proxy(&toml).await;
    let (client, answer) = RawWs::connect(proxy.addr("main"), &upgrade_request("/echo", "")).await;
    assert_eq!(answer.status, 101);
    let backend = within(accepted.recv()).await.expect("backend connection");
    (proxy, client, backend)
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

/// A proxy config with listener `main` on port 0, route `/` to pool `p`
/// of `backends` (`addr`, weight), and `pool_extra` lines in the pool.
pub fn pool_config(backends: &[(SocketAddr, u32)], pool_extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(a, w)| format!("{{ addr = \"{a}\", weight = {w} }}"))
        .collect();
    format!(
        "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[[pool]]\nname = \"p\"\n{pool_extra}\nbackends = [{}]\n",
        list.join(", ")
    )
}

/// How many of `names` are each of `expected`, in that order.
pub fn tally(names: &[String], expected: &[&str]) -> Vec<usize> {
    expected
        .iter()
        .map(|e| names.iter().filter(|n| n == e).count())
        .collect()
}

/// A plain HTTP/1.1 request to the admin listener; returns status and body.
pub async fn admin(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    within(stream.read_to_end(&mut out)).await.unwrap();
    let answer = parse_answer(&out);
    (answer.status, answer.body)
}

/// The value of the sample `name{labels}` in a Prometheus scrape (0 when
/// absent). `labels` is the exact label text, e.g. `status="404"`.
pub fn sample(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Starts the proxy on the configuration file at `path`, with reloads
/// reading that file.
pub async fn start_proxy_file(path: &Path) -> (Proxy, Server) {
    let config = match wsgate::config::load(path) {
        Ok(c) => c,
        Err(e) => panic!("test configuration invalid: {e}"),
    };
    let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
    let server = Server::start(config, Some(path.to_path_buf()))
        .await
        .expect("binds");
    wsgate::admin::spawn(&server);
    let addrs = names
        .iter()
        .map(|n| (n.clone(), server.local_addr(n).unwrap()))
        .collect();
    let shared = server.shared().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.clone().run(async move {
        let _ = stopped.await;
    }));
    let proxy = Proxy {
        addrs,
        shared,
        stop: Some(stop),
    };
    (proxy, server)
}

/// Writes `text` to `path` the way editors do: a temporary file renamed
/// over the original.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The real binary, running; killed when dropped. Its stderr lines are
/// collected as they come.
pub struct Binary {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    seen: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Binary {
    /// Starts `wsgate` with `args`.
    pub fn start(args: &[&str]) -> Binary {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
        let store = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                store.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Binary { child, lines, seen }
    }

    /// Waits (bounded, generously: a child process on a loaded machine is
    /// slow) for a log line containing every one of `parts`. On failure the
    /// panic shows everything the process logged.
    pub async fn wait_line(&mut self, parts: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(line)) if parts.iter().all(|p| line.contains(p)) => return line,
                Ok(Some(_)) => {}
                Ok(None) => panic!(
                    "the process ended before logging {parts:?}:\n{}",
                    self.lines().join("\n")
                ),
                Err(_) => panic!(
                    "no line with {parts:?} in 30 s; the log so far:\n{}",
                    self.lines().join("\n")
                ),
            }
        }
    }

    /// The address logged after `key=` in the first line with `parts`.
    pub async fn wait_addr(&mut self, parts: &[&str], key: &str) -> SocketAddr {
        let line = self.wait_line(parts).await;
        let at = line.find(&format!("{key}=")).expect("key in line") + key.len() + 1;
        let rest = &line[at..];
        let text: String = rest
            .trim_start_matches('"')
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
            .collect();
        text.parse().unwrap_or_else(|_| panic!("address in {line}"))
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Sends a signal (`HUP`, `TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        for _ in 0..2000 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the process did not exit");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
