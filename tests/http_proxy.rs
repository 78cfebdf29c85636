//! Plain HTTP beside WebSocket (issue 12), over real sockets: hop-by-hop
//! and forwarding headers, streamed bodies, keep-alive on both sides,
//! pipelining, 100-continue, HEAD, trailers, limits, failures, smuggling
//! attempts, balancing and the sticky cookie.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A hyper HTTP/1.1 backend that answers by path; counts its connections.
struct HttpBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into()).boxed()
}

fn query_n(req: &Request<Incoming>) -> u64 {
    req.uri()
        .query()
        .and_then(|q| q.strip_prefix("n="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `n` bytes in 64 KiB chunks, made as they are asked for.
fn stream_of(n: u64) -> TestBody {
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
    StreamBody::new(stream).boxed()
}

async fn answer(name: &'static str, req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_string();
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
            let mut res =
                Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
            res.headers_mut()
                .insert("trailer", "x-checksum".parse().unwrap());
            res
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

async fn http_backend(name: &'static str) -> HttpBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service =
                    service_fn(
                        move |req| async move { Ok::<_, Infallible>(answer(name, req).await) },
                    );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    HttpBackend { addr, connections }
}

/// One listener `main`, a route `/` with `http = "proxy"` (plus
/// `route_extra`) to pool `p` of `backends` (plus `pool_extra`).
fn http_config(backends: &[SocketAddr], route_extra: &str, pool_extra: &str) -> String {
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
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that reads whole responses and keeps what follows.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: within(TcpStream::connect(addr)).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        within(self.stream.write_all(bytes)).await.unwrap();
    }

    /// Reads more; false at EOF or on a reset.
    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0u8; 65536];
        match within(self.stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
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

    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    async fn fields(&mut self) -> Option<Vec<(String, String)>> {
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
    async fn response(&mut self, method: &str) -> Option<Resp> {
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
    async fn closed(&mut self) -> bool {
        !self.fill().await
    }
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{extra}\r\n")
}

#[tokio::test]
async fn a_route_without_http_proxy_answers_426_saying_how_to_enable_it() {
    let b = http_backend("a").await;
    let proxy = start_proxy(&simple_config(&[b.addr], "")).await;
    let answer = raw_request(proxy.addr("main"), get("/echo", "").as_bytes()).await;
    assert_eq!(answer.status, 426);
    assert!(answer.body.contains("http = \"proxy\""), "{}", answer.body);
    assert_eq!(b.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn hop_by_hop_fields_go_forwarding_fields_come_and_host_passes() {
    let b = http_backend("a").await;
    let proxy = start_proxy(&http_config(&[b.addr], "", "")).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(
        get(
            "/headers?q=1",
            "Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers, deflate\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: gopher\r\nX-App: yes\r\n",
        )
        .as_bytes(),
    )
    .await;
    let r = c.response("GET").await.unwrap();
    assert_eq!(r.status, 200);
    let seen = r.text();
    assert!(seen.starts_with("GET /headers?q=1\n"), "{seen}");
    for gone in ["x-secret", "keep-alive", "proxy-connection", "connection:"] {
        assert!(!seen.contains(gone), "{gone} reached the backend:\n{seen}");
    }
    assert!(seen.contains("host: app.test\n"), "{seen}");
    assert!(seen.contains("te: trailers\n"), "{seen}");
    assert!(
        seen.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("x-forwarded-host: app.test\n"), "{seen}");
    assert!(seen.contains("x-app: yes\n"), "{seen}");

    c.send(get("/hop", "").as_bytes()).await;
    let r = c.response("GET").await.unwrap();
    assert_eq!(r.header("x-app"), Some("kept"));
    assert_eq!(r.header("x-internal"), None);
    assert_eq!(r.header("keep-alive"), None);
}

#[tokio::test]
async fn an_upgrade_to_another_protocol_is_proxied_as_a_plain_request() {
    let b = http_backend("a").await;
    let proxy = start_proxy(&http_config(&[b.addr], "", "")).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(
        get(
            "/headers",
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        )
        .as_bytes(),
    )
    .await;
    let r = c.response("GET").await.unwrap();
    assert_eq!(r.status, 200);
    let seen = r.text();
    assert!(!seen.contains("upgrade"), "{seen}");
    assert!(!seen.contains("http2-settings"), "{seen}");
}

#[tokio::test]
async fn keep_alive_reuses_both_connections_and_pipelined_requests_answer_in_order() {
    let b = http_backend("a").await;
    let proxy = start_proxy(&http_config(&[b.addr], "", "")).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    for _ in 0..5 {
        c.send(get("/", "").as_bytes()).await;
        let r = c.response("GET").await.unwrap();
        assert_eq!(r.text(), "hello from a");
    }
    assert_eq!(
        b.connections.load(Ordering::SeqCst),
        1,
        "one pooled backend connection"
    );
    // Three requests in one write: three answers, in order.
    let mut burst = String::new();
    for path in ["/headers?n=1", "/download?n=10", "/headers?n=3"] {
        burst.push_str(&get(path, ""));
    }
    c.send(burst.as_bytes()).await;
    let first = c.response("GET").await.unwrap();
    assert!(first.text().starts_with("GET /headers?n=1"));
    let second = c.response("GET").await.unwrap();
    assert_eq!(second.body, vec![b'x'; 10]);
    let third = c.response("GET").await.unwrap();
    assert!(third.text().starts_with("GET /headers?n=3"));
}

#[tokio::test]
async fn an_idle_client_connection_closes_after_keepalive_timeout() {
    let b = http_backend("a").await;
    let config = http_config(&[b.addr], "", "").replace(
        "bind = \"127.0.0.1:0\"\n",
        "bind = \"127.0.0.1:0\"\nkeepalive_timeout = \"1s\"\n",
    );
    let proxy = start_proxy(&config).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(get("/", "").as_bytes()).await;
    assert_eq!(c.response("GET").await.unwrap().status, 200);
    assert!(c.closed().await, "closed after keepalive_timeout");
}

#[tokio::test]
async fn expect_100_continue_head_204_and_chunked_trailers() {
    let b = http_backend("a").await;
    let proxy = start_proxy(&http_config(&[b.addr], "", "")).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = c.line().await.unwrap();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    assert!(c.fields().await.unwrap().is_empty());
    c.send(b"hello").await;
    let r = c.response("POST").await.unwrap();
    assert_eq!(r.text(), "received 5 ");

    c.send(b"HEAD /download?n=1000 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let r = c.response("HEAD").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    c.send(get("/204", "").as_bytes()).await;
    let r = c.response("GET").await.unwrap();
    assert_eq!(r.status, 204);

    // Trailers both ways: the client asks for them with TE: trailers.
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 42\r\n\r\n",
    )
    .await;
    let r = c.response("POST").await.unwrap();
    assert_eq!(r.text(), "received 3 x-sum=42");
    c.send(get("/trailers", "TE: trailers\r\n").as_bytes())
        .await;
    let r = c.response("GET").await.unwrap();
    assert_eq!(r.text(), "part one,part two");
    assert_eq!(
        r.trailers,
        vec![("x-checksum".to_string(), "abc123".to_string())]
    );
    // Still one connection to the backend after all of that.
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn request_body_over_the_limit_is_413() {
    let b = http_backend("a").await;
    let proxy = start_proxy(&http_config(&[b.addr], "max_request_body_bytes = 1000", "")).await;
    // Content-Length says so: refused before the backend is contacted.
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let r = c.response("POST").await.unwrap();
    assert_eq!(r.status, 413);
    assert!(r.text().contains("max_request_body_bytes"), "{}", r.text());
    assert_eq!(b.connections.load(Ordering::SeqCst), 0);
    // Chunked: counted on the way, the backend request aborted.
    let mut c = Conn::open(proxy.addr("main")).await;
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'y'; 512]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    c.send(&req).await;
    let r = c.response("POST").await.unwrap();
    assert_eq!(r.status, 413);
    // Within the limit it passes.
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000\r\n\r\n")
        .await;
    c.send(&[b'z'; 1000]).await;
    assert_eq!(c.response("POST").await.unwrap().text(), "received 1000 ");
}

#[tokio::test]
async fn no_backend_reachable_is_502_none_eligible_is_503_a_silent_one_is_504() {
    let dead = closed_port().await;
    let proxy = start_proxy(&http_config(&[dead], "", "")).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(get("/", "").as_bytes()).await;
    let r = c.response("GET").await.unwrap();
    assert_eq!(r.status, 502);
    assert!(!r.text().contains(&dead.port().to_string()), "{}", r.text());
    // Now marked down: nothing eligible.
    c.send(get("/", "").as_bytes()).await;
    let r = c.response("GET").await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "no backend available\n");

    let b = http_backend("a").await;
    let proxy = start_proxy(&http_config(&[b.addr], "response_timeout = \"300ms\"", "")).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(get("/slow", "").as_bytes()).await;
    let r = c.response("GET").await.unwrap();
    assert_eq!(r.status, 504);
    assert!(r.text().contains("response_timeout"), "{}", r.text());
}

#[tokio::test]
async fn a_refused_backend_passes_the_request_to_the_next() {
    let dead = closed_port().await;
    let b = http_backend("a").await;
    let proxy = start_proxy(&http_config(&[dead, b.addr], "", "")).await;
    for _ in 0..4 {
        let mut c = Conn::open(proxy.addr("main")).await;
        c.send(get("/", "").as_bytes()).await;
        assert_eq!(c.response("GET").await.unwrap().text(), "hello from a");
    }
}

/// A backend that answers each connection's requests as `script` says,
/// reading each request head first.
async fn raw_http_backend(script: fn(usize) -> Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
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

#[tokio::test]
async fn a_malformed_answer_is_502_and_a_backend_dying_mid_body_closes_the_client() {
    let (addr, _) = raw_http_backend(|_| b"HTTP/1.1 ok?\r\n\r\n".to_vec()).await;
    let proxy = start_proxy(&http_config(&[addr], "", "")).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(get("/", "").as_bytes()).await;
    let r = c.response("GET").await.unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), "malformed response from backend\n");

    let (addr, _) = raw_http_backend(|_| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly twenty bytes...".to_vec()
    })
    .await;
    let proxy = start_proxy(&http_config(&[addr], "", "")).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(get("/", "").as_bytes()).await;
    // The head passed; the body cannot be finished, so the connection ends.
    let status = c.line().await.unwrap();
    assert!(status.contains(" 200 "), "{status}");
    let fields = c.fields().await.unwrap();
    assert!(fields.contains(&("content-length".to_string(), "100".to_string())));
    while c.fill().await {}
    assert!(c.buf.len() < 100, "never a whole body");
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_retried_on_a_fresh_one() {
    // Every connection answers once, announcing keep-alive, then closes.
    let (addr, count) = raw_http_backend(|n| {
        format!("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nconn-{n}").into_bytes()
    })
    .await;
    let proxy = start_proxy(&http_config(&[addr], "", "")).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(get("/", "").as_bytes()).await;
    assert_eq!(c.response("GET").await.unwrap().text(), "conn-0");
    // The backend has closed the first connection by now, or will have
    // when the proxy writes to it: either way the client sees an answer.
    c.send(get("/", "").as_bytes()).await;
    assert_eq!(c.response("GET").await.unwrap().text(), "conn-1");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn smuggling_attempts_get_400_and_a_closed_connection() {
    let b = http_backend("a").await;
    let proxy = start_proxy(&http_config(&[b.addr], "", "")).await;
    // Content-Length and Transfer-Encoding together.
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /headers HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let r = c.response("POST").await.unwrap();
    assert_eq!(r.status, 400);
    assert!(c.closed().await);
    // An invalid chunk size.
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
        .await;
    let r = c.response("POST").await.unwrap();
    assert_eq!(r.status, 400);
    assert!(c.closed().await);
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let b = http_backend("a").await;
    let proxy = start_proxy(&http_config(&[b.addr], "", "")).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    let size: u64 = 64 * 1024 * 1024;
    c.send(
        format!("POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: {size}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let chunk = vec![b'u'; 1024 * 1024];
    for _ in 0..size / chunk.len() as u64 {
        c.send(&chunk).await;
    }
    assert_eq!(
        c.response("POST").await.unwrap().text(),
        format!("received {size} ")
    );
    c.send(get(&format!("/download?n={size}"), "").as_bytes())
        .await;
    let r = c.response("GET").await.unwrap();
    assert_eq!(r.body.len() as u64, size);
}
