//! Plain HTTP beside WebSocket (issue 12), over real sockets: hop-by-hop
//! and forwarding headers, streamed bodies, keep-alive on both sides,
//! pipelining, 100-continue, HEAD, trailers, limits, failures, smuggling
//! attempts, balancing and the sticky cookie.

mod common;
mod http_kit;

use std::sync::atomic::Ordering;

use common::*;
use http_kit::*;

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
    // With a body: counted from the body's end.
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(b"POST /slow HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    assert_eq!(c.response("POST").await.unwrap().status, 504);
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

#[tokio::test]
async fn shutdown_closes_kept_alive_connections_between_requests() {
    let b = http_backend("a").await;
    let proxy = start_proxy(&http_config(&[b.addr], "", "")).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(get("/", "").as_bytes()).await;
    assert_eq!(c.response("GET").await.unwrap().status, 200);
    let tracker = proxy.shared.tracker.clone();
    drop(proxy);
    assert!(c.closed().await, "closed at once, not after drain_timeout");
    for _ in 0..1000 {
        if tracker.open() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{} connections still open", tracker.open());
}

#[tokio::test]
async fn a_backend_connection_closes_when_the_backend_says_so() {
    let b = http_backend("a").await;
    let proxy = start_proxy(&http_config(&[b.addr], "", "")).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    // Connection: close: not pooled, the next request opens another.
    c.send(get("/close", "").as_bytes()).await;
    assert_eq!(c.response("GET").await.unwrap().text(), "bye");
    b.wait_closed(1).await;
    // Keep-Alive: timeout=2: pooled, and closed by the proxy before then.
    c.send(get("/ka2", "").as_bytes()).await;
    assert_eq!(c.response("GET").await.unwrap().status, 200);
    assert_eq!(b.connections.load(Ordering::SeqCst), 2);
    b.wait_closed(2).await;
    // The client's connection is untouched by either.
    c.send(get("/", "").as_bytes()).await;
    assert_eq!(c.response("GET").await.unwrap().text(), "hello from a");
    assert_eq!(b.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn max_idle_per_backend_zero_opens_a_connection_per_request() {
    let b = http_backend("a").await;
    let proxy = start_proxy(&http_config(&[b.addr], "", "max_idle_per_backend = 0")).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    for _ in 0..3 {
        c.send(get("/", "").as_bytes()).await;
        assert_eq!(c.response("GET").await.unwrap().status, 200);
    }
    assert_eq!(b.connections.load(Ordering::SeqCst), 3);
}
