//! Helpers for the HTTP proxying tests: an HTTP/1.1 backend (hyper) that
//! answers by path and upgrades WebSocket requests, a raw scripted backend,
//! and a client connection that reads whole responses off a kept-alive
//! connection.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

use crate::common::within;

pub type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A hyper HTTP/1.1 backend that answers by path; counts its connections.
pub struct HttpBackend {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Connections ended so far (either side closed).
    pub closed: Arc<AtomicUsize>,
}

impl HttpBackend {
    /// Waits (bounded) until `n` connections have ended.
    pub async fn wait_closed(&self, n: usize) {
        for _ in 0..1000 {
            if self.closed.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{n} backend connections never closed");
    }
}

pub fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into()).boxed()
}

pub fn query_n(req: &Request<Incoming>) -> u64 {
    req.uri()
        .query()
        .and_then(|q| q.strip_prefix("n="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `n` bytes in 64 KiB chunks, made as they are asked for.
pub fn stream_of(n: u64) -> TestBody {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            (left > 0).then(|| {
                let take = left.min(chunk.len() as u64) as usize;
                (
                    Ok::<_, Infallible>(Frame::data(chunk.slice(..take))),
                    left - take as u64,
                )
            })
        }
    });
    BodyExt::boxed(StreamBody::new(stream))
}

pub async fn answer(name: &'static str, req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_string();
    let upgrade = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if upgrade {
        return websocket(name, req);
    }
    match path.as_str() {
        "/headers" => {
            let mut text = format!("{} {}\n", req.method(), req.uri());
            for (n, v) in req.headers() {
                text.push_str(&format!("{}: {}\n", n, v.to_str().unwrap_or("?")));
            }
            Response::new(full(text))
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total = 0u64;
            let mut trailers = String::new();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return Response::new(full("broken"));
                };
                if let Some(d) = frame.data_ref() {
                    total += d.len() as u64;
                }
                if let Some(t) = frame.trailers_ref() {
                    for (n, v) in t {
                        trailers.push_str(&format!("{n}={}", v.to_str().unwrap()));
                    }
                }
            }
            Response::new(full(format!("received {total} {trailers}")))
        }
        "/download" => Response::new(stream_of(query_n(&req))),
        "/trailers" => {
            let frames = vec![
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"part one,"))),
                Ok(Frame::data(Bytes::from_static(b"part two"))),
                Ok(Frame::trailers({
                    let mut t = http::HeaderMap::new();
                    t.insert("x-checksum", "abc123".parse().unwrap());
                    t
                })),
            ];
            let mut res = Response::new(BodyExt::boxed(StreamBody::new(
                futures_util::stream::iter(frames),
            )));
            res.headers_mut()
                .insert("trailer", "x-checksum".parse().unwrap());
            res
        }
        "/graphql" => {
            let query =
                String::from_utf8_lossy(&req.into_body().collect().await.unwrap().to_bytes())
                    .into_owned();
            Response::new(full(format!(
                "{{\"data\":{{\"echo\":{query:?},\"by\":\"{name}\"}}}}"
            )))
        }
        "/hub/negotiate" => {
            let text = format!(
                "{{\"connectionToken\":\"token-{name}\",\"negotiateVersion\":1,\"availableTransports\":[{{\"transport\":\"WebSockets\"}}]}}"
            );
            Response::new(full(text))
        }
        "/hold" => {
            // Holds the answer until told, like a long-poll.
            let ms = query_n(&req);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full(format!("held by {name}")))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Response::new(full("late"))
        }
        "/204" => {
            let mut res = Response::new(full(""));
            *res.status_mut() = http::StatusCode::NO_CONTENT;
            res
        }
        "/close" => {
            let mut res = Response::new(full("bye"));
            res.headers_mut()
                .insert("connection", "close".parse().unwrap());
            res
        }
        "/ka2" => {
            let mut res = Response::new(full("short keep-alive"));
            res.headers_mut()
                .insert("keep-alive", "timeout=2".parse().unwrap());
            res
        }
        "/hop" => {
            let mut res = Response::new(full("hop"));
            let h = res.headers_mut();
            h.insert("connection", "x-internal".parse().unwrap());
            h.insert("x-internal", "secret".parse().unwrap());
            h.insert("keep-alive", "timeout=30".parse().unwrap());
            h.insert("x-app", "kept".parse().unwrap());
            res
        }
        _ => {
            let mut res = Response::new(full(format!("hello from {name}")));
            res.headers_mut().insert("x-backend", name.parse().unwrap());
            if path == "/session" {
                res.headers_mut()
                    .insert("set-cookie", format!("session={name}").parse().unwrap());
            }
            res
        }
    }
}

/// Answers a WebSocket upgrade with a 101, then sends the backend's name
/// and echoes every message.
fn websocket(name: &'static str, mut req: Request<Incoming>) -> Response<TestBody> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let protocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|p| p.to_str().ok())
        .and_then(|p| p.split(',').next())
        .map(|p| p.trim().to_string());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        if ws.send(Message::text(name)).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    let mut res = Response::new(full(""));
    *res.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("connection", "upgrade".parse().unwrap());
    h.insert(
        "sec-websocket-accept",
        wsgate::rfc6455::accept_for(&key).parse().unwrap(),
    );
    if let Some(p) = protocol {
        h.insert("sec-websocket-protocol", p.parse().unwrap());
    }
    res
}

pub async fn http_backend(name: &'static str) -> HttpBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let ended = closed.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let ended = ended.clone();
            tokio::spawn(async move {
                let service =
                    service_fn(
                        move |req| async move { Ok::<_, Infallible>(answer(name, req).await) },
                    );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    HttpBackend {
        addr,
        connections,
        closed,
    }
}

/// One listener `main`, a route `/` with `http = "proxy"` (plus
/// `route_extra`) to pool `p` of `backends` (plus `pool_extra`).
pub fn http_config(backends: &[SocketAddr], route_extra: &str, pool_extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\npath_prefix = \"/\"\npool = \"p\"\nhttp = \"proxy\"\n{route_extra}\n\n[[pool]]\nname = \"p\"\nbackends = [{}]\n{pool_extra}\n",
        list.join(", ")
    )
}

/// A response read off a kept-alive connection.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that reads whole responses and keeps what follows.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: within(TcpStream::connect(addr)).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        within(self.stream.write_all(bytes)).await.unwrap();
    }

    /// Reads more; false at EOF or on a reset.
    pub async fn fill(&mut self) -> bool {
        let mut chunk = vec![0u8; 65536];
        match within(self.stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    pub async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return Some(line);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    pub async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    pub async fn fields(&mut self) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Some(out);
            }
            let (n, v) = line.split_once(':')?;
            out.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }

    /// Reads one response to a request with method `method`; `None` when
    /// the connection ends first.
    pub async fn response(&mut self, method: &str) -> Option<Resp> {
        let mut status_line = self.line().await?;
        let mut status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = self.fields().await?;
        while (100..200).contains(&status) {
            status_line = self.line().await?;
            status = status_line.split(' ').nth(1)?.parse().ok()?;
            headers = self.fields().await?;
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        if method == "HEAD" || status == 204 || status == 304 {
            return Some(resp);
        }
        if resp.header("transfer-encoding") == Some("chunked") {
            loop {
                let size = usize::from_str_radix(self.line().await?.trim(), 16).ok()?;
                if size == 0 {
                    resp.trailers = self.fields().await?;
                    return Some(resp);
                }
                let data = self.exact(size + 2).await?;
                resp.body.extend_from_slice(&data[..size]);
            }
        }
        match resp.header("content-length") {
            Some(n) => {
                let n: usize = n.parse().ok()?;
                resp.body = self.exact(n).await?;
            }
            None => while self.fill().await {},
        }
        Some(resp)
    }

    /// Whether the proxy closed the connection (EOF or reset) within the
    /// test limit, with nothing more to read.
    pub async fn closed(&mut self) -> bool {
        !self.fill().await
    }
}

pub fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{extra}\r\n")
}

/// A backend that answers each connection's requests as `script` says,
/// reading each request head first.
pub async fn raw_http_backend(script: fn(usize) -> Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                while !buf.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => buf.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = stream.write_all(&script(n)).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, count)
}
