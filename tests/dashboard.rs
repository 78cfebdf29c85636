//! The admin dashboard over real sockets: the page and its assets, the
//! event stream and its viewer limit, drain and undrain by the admin API.

mod common;
mod http_kit;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn with_admin(toml: &str) -> String {
    format!("[admin]\nbind = \"127.0.0.1:0\"\n\n{toml}")
}

/// An admin request with extra header lines; returns the whole answer.
async fn request(addr: SocketAddr, method: &str, path: &str, headers: &str) -> RawAnswer {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\ncontent-length: 0\r\n{headers}\r\n"
    );
    raw_request(addr, req.as_bytes()).await
}

/// A viewer of `/events`: the stream and what was read but not used yet.
struct Events {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Events {
    /// Opens the stream; returns the answer head when it is not a 200.
    async fn open(addr: SocketAddr) -> Result<Events, String> {
        let mut stream = within(TcpStream::connect(addr)).await.unwrap();
        stream
            .write_all(b"GET /events HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut events = Events {
            stream,
            buf: Vec::new(),
        };
        let head = events.read_until(b"\r\n\r\n").await;
        if head.starts_with("HTTP/1.1 200") {
            assert!(
                head.to_ascii_lowercase().contains("text/event-stream"),
                "{head}"
            );
            Ok(events)
        } else {
            let mut rest = std::mem::take(&mut events.buf);
            let _ = within(events.stream.read_to_end(&mut rest)).await;
            Err(format!("{head}{}", String::from_utf8_lossy(&rest)))
        }
    }

    async fn read_until(&mut self, end: &[u8]) -> String {
        loop {
            if let Some(at) = self.buf.windows(end.len()).position(|w| w == end) {
                let out: Vec<u8> = self.buf.drain(..at + end.len()).collect();
                return String::from_utf8_lossy(&out).into_owned();
            }
            let mut chunk = [0u8; 16384];
            let n = within(self.stream.read(&mut chunk)).await.unwrap();
            assert!(n > 0, "event stream ended");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next document (the body is chunked; one chunk holds one event).
    async fn next(&mut self) -> Value {
        let _ = self.read_until(b"data: ").await;
        let json = self.read_until(b"\n\n").await;
        serde_json::from_str(json.trim_end()).expect("each event is one JSON document")
    }

    /// Reads documents until `check` accepts one (bounded).
    async fn until(&mut self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..30 {
            let doc = self.next().await;
            if check(&doc) {
                return doc;
            }
        }
        panic!("the dashboard never showed {what}");
    }
}

fn backend<'a>(doc: &'a Value, pool: &str, addr: SocketAddr) -> &'a Value {
    doc["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .and_then(|p| {
            p["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["addr"] == addr.to_string())
        })
        .unwrap_or_else(|| panic!("no backend {addr} of {pool} in {doc}"))
}

#[tokio::test]
async fn the_page_and_its_assets_come_from_the_binary() {
    let b = echo_backend().await;
    let proxy = start_proxy(&with_admin(&simple_config(&[b.addr], ""))).await;
    let admin = proxy.shared.admin_addr.unwrap();
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let answer = request(admin, "GET", path, "").await;
        assert_eq!(answer.status, 200, "{path}");
        assert!(answer.header("content-type").unwrap().starts_with(kind));
        let csp = answer.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    }
    let page = request(admin, "GET", "/", "").await;
    assert!(page.body.contains("/dashboard.js"));
    assert_eq!(request(admin, "POST", "/", "").await.status, 405);
    assert_eq!(request(admin, "GET", "/nope", "").await.status, 404);
}

#[tokio::test]
async fn events_follow_traffic_and_record_reloads() {
    let b = echo_backend().await;
    let toml = with_admin(&simple_config(
        &[b.addr],
        "[[route]]\npath_prefix = \"/small\"\npool = \"p\"\nmax_message_bytes = 16\n",
    ));
    let proxy = start_proxy(&toml).await;
    let admin = proxy.shared.admin_addr.unwrap();
    let mut events = Events::open(admin).await.unwrap();
    let first = events.next().await;
    assert_eq!(first["version"], 1);
    assert_eq!(first["totals"]["open"], 0);

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(ws_connect(proxy.addr("main"), "/echo").await);
    }
    let doc = events
        .until("3 open connections", |d| d["totals"]["open"] == 3)
        .await;
    assert_eq!(backend(&doc, "p", b.addr)["active"], 3);
    let route = doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "*/echo")
        .unwrap();
    assert_eq!(route["active"], 3.0);
    for mut c in clients {
        c.close(None).await.unwrap();
        while let Some(Ok(_)) = within(c.next()).await {}
    }
    events
        .until("0 open connections", |d| d["totals"]["open"] == 0)
        .await;

    // A message over the route's limit: 1009 in the close panel.
    let mut small = ws_connect(proxy.addr("main"), "/small").await;
    small.send(Message::text("x".repeat(64))).await.unwrap();
    while let Some(Ok(_)) = within(small.next()).await {}
    let doc = events
        .until("a 1009 close", |d| {
            d["closes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["code"] == 1009)
        })
        .await;
    assert!(doc["history"]["open"].as_array().unwrap().len() >= 2);

    // A rejection by status, and a refused reload (no file behind this proxy).
    assert_eq!(
        raw_request(proxy.addr("main"), upgrade_request("/none", "").as_bytes())
            .await
            .status,
        404
    );
    assert_eq!(request(admin, "POST", "/reload", "").await.status, 400);
    let doc = events
        .until("the rejection and the reload", |d| {
            !d["rejections"].as_array().unwrap().is_empty()
                && !d["reloads"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(doc["rejections"][0]["status"], 404);
    assert_eq!(doc["reloads"][0]["ok"], false);
    assert!(doc["reloads"][0]["errors"][0]
        .as_str()
        .unwrap()
        .contains("no configuration file"));
    assert!(doc["totals"]["http_per_s"].is_null() || doc["totals"]["http_per_s"].is_number());
}

#[tokio::test]
async fn the_seventeenth_viewer_gets_503_with_a_reason() {
    let b = echo_backend().await;
    let proxy = start_proxy(&with_admin(&simple_config(&[b.addr], ""))).await;
    let admin = proxy.shared.admin_addr.unwrap();
    let mut viewers = Vec::new();
    for _ in 0..16 {
        viewers.push(Events::open(admin).await.unwrap());
    }
    let refused = Events::open(admin).await.err().expect("17th refused");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many dashboard viewers"), "{refused}");
    // A viewer that leaves frees its seat once the proxy notices, at its
    // next document (once a second).
    drop(viewers.pop());
    let mut again = None;
    for _ in 0..50 {
        match Events::open(admin).await {
            Ok(events) => {
                again = Some(events);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut again = again.expect("a seat is free again");
    again.next().await;
}

#[tokio::test]
async fn drain_by_the_admin_api_works_like_removal_and_undrain_restores() {
    let b1 = echo_backend().await;
    let b2 = echo_backend().await;
    let toml = with_admin(&simple_config(
        &[b1.addr, b2.addr],
        "[defaults]\ndrain_timeout = \"1s\"\n",
    ));
    let proxy = start_proxy(&toml).await;
    let admin = proxy.shared.admin_addr.unwrap();
    let mut on_b1 = Vec::new();
    for _ in 0..4 {
        on_b1.push(ws_connect(proxy.addr("main"), "/echo").await);
    }
    proxy.wait_active("p", b1.addr, 2).await;

    let path = format!("/backends/p/{}/drain", b1.addr);
    let answer = request(admin, "POST", &path, "").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["draining"], true);
    let (_, status) = admin_get(admin, "/status").await;
    let drained = backend(&status, "p", b1.addr);
    assert_eq!(drained["draining"], true);
    assert_eq!(drained["drained_by_admin"], true);

    // New connections avoid it; its open ones get 1001 within drain_timeout.
    for _ in 0..4 {
        on_b1.push(ws_connect(proxy.addr("main"), "/echo").await);
    }
    proxy.wait_active("p", b2.addr, 6).await;
    proxy.wait_active("p", b1.addr, 0).await;
    // Those on the drained backend got 1001; the others still echo.
    let mut closed = 0;
    for mut c in on_b1.drain(..4) {
        let _ = c.send(Message::text("still there?")).await;
        match within(c.next()).await {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 1001);
                closed += 1;
            }
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "still there?"),
            other => panic!("neither an echo nor a close: {other:?}"),
        }
    }
    assert_eq!(closed, 2);

    // Undrain: back in service; new connections may go there again.
    let answer = request(
        admin,
        "POST",
        &format!("/backends/p/{}/undrain", b1.addr),
        "",
    )
    .await;
    assert_eq!(answer.status, 200);
    let (_, status) = admin_get(admin, "/status").await;
    assert_eq!(backend(&status, "p", b1.addr)["draining"], false);
    let mut fresh = Vec::new();
    for _ in 0..2 {
        fresh.push(ws_connect(proxy.addr("main"), "/echo").await);
    }
    proxy.wait_active("p", b1.addr, 2).await;

    // Percent-encoded addresses work; unknown ones and wrong methods do not.
    let encoded = format!(
        "/backends/p/{}/drain",
        b1.addr.to_string().replace(':', "%3A")
    );
    assert_eq!(request(admin, "POST", &encoded, "").await.status, 200);
    assert_eq!(
        request(admin, "POST", "/backends/p/127.0.0.1:1/drain", "")
            .await
            .status,
        404
    );
    assert_eq!(
        request(admin, "POST", "/backends/nope/127.0.0.1:1/drain", "")
            .await
            .status,
        404
    );
    assert_eq!(
        request(admin, "POST", "/backends/p/not-an-addr/drain", "")
            .await
            .status,
        400
    );
    assert_eq!(request(admin, "GET", &path, "").await.status, 405);
}

async fn admin_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let answer = request(addr, "GET", path, "").await;
    (answer.status, serde_json::from_str(&answer.body).unwrap())
}

#[tokio::test]
async fn http_requests_fill_the_optional_http_slot() {
    let backend = http_kit::http_backend("a").await;
    let proxy = start_proxy(&with_admin(&http_kit::http_config(&[backend.addr], "", ""))).await;
    let admin = proxy.shared.admin_addr.unwrap();
    let mut events = Events::open(admin).await.unwrap();
    let first = events.next().await;
    assert!(first["pools"][0]["http_per_s"].is_null() || first["totals"]["http_per_s"].is_number());
    let close = "Connection: close\r\n";
    for _ in 0..3 {
        let answer = raw_request(proxy.addr("main"), http_kit::get("/", close).as_bytes()).await;
        assert_eq!(answer.status, 200);
    }
    let doc = events
        .until("HTTP requests", |d| {
            d["history"]["http_per_s"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v.as_f64().is_some_and(|r| r > 0.0))
        })
        .await;
    assert!(doc["totals"]["http_per_s"].is_number());
    assert!(doc["pools"][0]["http_per_s"].is_number());
}
