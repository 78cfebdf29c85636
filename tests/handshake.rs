//! The contract's handshake table, row by row, through the real proxy:
//! exact status, a non-empty reason, the headers 426 requires, and no
//! backend contact for any rejected request.

mod common;

use common::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A proxy in front of one recording echo backend; the route `/echo`
/// allows only `https://good.example` as Origin when `origins` is set.
async fn setup(origins: bool) -> (Proxy, Backend) {
    let backend = echo_backend().await;
    let mut toml = simple_config(&[backend.addr], "");
    if origins {
        toml = toml.replace(
            "pool = \"p\"\n\n[[pool]]",
            "pool = \"p\"\nallowed_origins = [\"https://good.example\"]\n\n[[pool]]",
        );
    }
    (start_proxy(&toml).await, backend)
}

async fn rejected(request: &str, status: u16) -> RawAnswer {
    let (proxy, backend) = setup(true).await;
    let answer = raw_request(proxy.addr("main"), request.as_bytes()).await;
    assert_eq!(
        answer.status, status,
        "request:\n{request}\nanswer: {answer:?}"
    );
    assert!(!answer.body.trim().is_empty(), "a reason is given");
    assert!(answer.body.len() < 1024);
    assert_eq!(backend.connection_count(), 0, "no backend was contacted");
    answer
}

#[tokio::test]
async fn head_over_max_header_bytes_is_431() {
    let big = format!("X-Big: {}\r\n", "a".repeat(20_000));
    rejected(&upgrade_request("/echo", &big), 431).await;
}

#[tokio::test]
async fn too_many_headers_is_431() {
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    rejected(&upgrade_request("/echo", &many), 431).await;
}

#[tokio::test]
async fn no_route_is_404() {
    rejected(&upgrade_request("/nowhere", ""), 404).await;
    // Whole segments only: /echoes is not under /echo.
    rejected(&upgrade_request("/echoes", ""), 404).await;
}

#[tokio::test]
async fn not_get_is_405() {
    let req = upgrade_request("/echo", "").replacen("GET", "POST", 1);
    rejected(&req, 405).await;
}

#[tokio::test]
async fn http_1_0_is_400() {
    let req = upgrade_request("/echo", "").replacen("HTTP/1.1", "HTTP/1.0", 1);
    rejected(&req, 400).await;
}

#[tokio::test]
async fn missing_host_is_400() {
    let req = upgrade_request("/echo", "").replacen("Host: localhost\r\n", "", 1);
    rejected(&req, 400).await;
}

#[tokio::test]
async fn no_upgrade_websocket_is_426_with_upgrade_header() {
    let req = upgrade_request("/echo", "").replacen("Upgrade: websocket\r\n", "", 1);
    let answer = rejected(&req, 426).await;
    assert_eq!(answer.header("upgrade"), Some("websocket"));
    let req = upgrade_request("/echo", "").replacen("Upgrade: websocket", "Upgrade: h2c", 1);
    rejected(&req, 426).await;
}

#[tokio::test]
async fn connection_without_upgrade_token_is_400() {
    let req =
        upgrade_request("/echo", "").replacen("Connection: Upgrade", "Connection: keep-alive", 1);
    rejected(&req, 400).await;
}

#[tokio::test]
async fn bad_or_missing_key_is_400() {
    let req = upgrade_request("/echo", "").replacen(KEY, "c2hvcnQ=", 1);
    rejected(&req, 400).await;
    let req =
        upgrade_request("/echo", "").replacen(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "", 1);
    rejected(&req, 400).await;
}

#[tokio::test]
async fn wrong_or_missing_version_is_426_with_version_header() {
    let req = upgrade_request("/echo", "").replacen("Version: 13", "Version: 8", 1);
    let answer = rejected(&req, 426).await;
    assert_eq!(answer.header("sec-websocket-version"), Some("13"));
    let req = upgrade_request("/echo", "").replacen("Sec-WebSocket-Version: 13\r\n", "", 1);
    rejected(&req, 426).await;
}

#[tokio::test]
async fn origin_not_allowed_is_403() {
    rejected(
        &upgrade_request("/echo", "Origin: https://evil.example\r\n"),
        403,
    )
    .await;
}

#[tokio::test]
async fn allowed_origin_and_no_origin_pass() {
    let (proxy, _backend) = setup(true).await;
    for extra in ["Origin: https://good.example\r\n", ""] {
        let (_ws, answer) =
            RawWs::connect(proxy.addr("main"), &upgrade_request("/echo", extra)).await;
        assert_eq!(answer.status, 101, "{extra:?}");
    }
}

#[tokio::test]
async fn accepted_variants_of_connection_and_upgrade() {
    let (proxy, backend) = setup(false).await;
    let req = upgrade_request("/echo", "")
        .replacen("Connection: Upgrade", "Connection: keep-alive, Upgrade", 1)
        .replacen("Upgrade: websocket", "Upgrade: WebSocket", 1);
    let (mut ws, answer) = RawWs::connect(proxy.addr("main"), &req).await;
    assert_eq!(answer.status, 101);
    assert_eq!(
        answer.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "the accept is correct for the client's key"
    );
    ws.send(true, 0x1, b"hi").await;
    let echoed = within(ws.recv()).await.expect("echo");
    assert_eq!(echoed.payload, b"hi");
    assert_eq!(backend.connection_count(), 1);
}

#[tokio::test]
async fn unreachable_backend_is_502() {
    let closed = closed_port().await;
    let proxy = start_proxy(&simple_config(&[closed], "")).await;
    let answer = raw_request(proxy.addr("main"), upgrade_request("/echo", "").as_bytes()).await;
    assert_eq!(answer.status, 502);
    assert!(answer.body.contains("unreachable"), "{}", answer.body);
}

#[tokio::test]
async fn backend_with_wrong_accept_is_502() {
    let backend = scripted_backend(|_| {
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n\r\n".into()
    })
    .await;
    let proxy = start_proxy(&simple_config(&[backend.addr], "")).await;
    let answer = raw_request(proxy.addr("main"), upgrade_request("/echo", "").as_bytes()).await;
    assert_eq!(answer.status, 502);
    assert!(answer.body.contains("Accept"), "{}", answer.body);
}

#[tokio::test]
async fn backend_choosing_unoffered_subprotocol_is_502() {
    let backend = scripted_backend(|key| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
            wsgate::rfc6455::accept_for(key.as_bytes())
        )
    })
    .await;
    let proxy = start_proxy(&simple_config(&[backend.addr], "")).await;
    let req = upgrade_request("/echo", "Sec-WebSocket-Protocol: chat\r\n");
    let answer = raw_request(proxy.addr("main"), req.as_bytes()).await;
    assert_eq!(answer.status, 502);
}

#[tokio::test]
async fn first_reachable_backend_is_used() {
    let closed = closed_port().await;
    let backend = echo_backend().await;
    let proxy = start_proxy(&simple_config(&[closed, backend.addr], "")).await;
    let (_ws, answer) = RawWs::connect(proxy.addr("main"), &upgrade_request("/echo", "")).await;
    assert_eq!(answer.status, 101);
}

#[tokio::test]
async fn subprotocol_extension_and_forwarding_headers_reach_the_backend() {
    let (proxy, backend) = setup(false).await;
    let req = upgrade_request(
        "/echo/room?id=7",
        "Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Extensions: x-test-ext; p=1\r\nX-Forwarded-For: 203.0.113.9\r\n",
    );
    let (_ws, answer) = RawWs::connect(proxy.addr("main"), &req).await;
    assert_eq!(answer.status, 101);
    assert_eq!(answer.header("sec-websocket-protocol"), Some("chat"));
    assert_eq!(
        answer.header("sec-websocket-extensions"),
        Some("x-test-ext")
    );
    let seen = backend.last_seen();
    assert_eq!(seen.uri, "/echo/room?id=7");
    assert_eq!(seen.header("host"), Some("localhost"));
    assert_eq!(
        seen.header("sec-websocket-protocol"),
        Some("chat, superchat")
    );
    assert_eq!(
        seen.header("sec-websocket-extensions"),
        Some("x-test-ext; p=1")
    );
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("ws"));
    assert_eq!(seen.header("x-forwarded-host"), Some("localhost"));
}

#[tokio::test]
async fn hostile_input_is_closed_and_the_next_client_is_served() {
    let (proxy, _backend) = setup(false).await;
    let addr = proxy.addr("main");
    // Garbage bytes.
    let answer = raw_request(addr, b"\x00\x01\x02garbage\r\n\r\n").await;
    assert_eq!(answer.status, 400);
    // A TLS ClientHello on a plain listener.
    let answer = raw_request(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").await;
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("TLS"));
    // Still serving.
    let (_ws, answer) = RawWs::connect(addr, &upgrade_request("/echo", "")).await;
    assert_eq!(answer.status, 101);
}

#[tokio::test]
async fn a_request_that_never_completes_times_out_with_408() {
    let backend = echo_backend().await;
    let toml = simple_config(
        &[backend.addr],
        "[defaults]\nhandshake_timeout = \"300ms\"\n",
    );
    let proxy = start_proxy(&toml).await;
    let started = tokio::time::Instant::now();
    let answer = raw_request(proxy.addr("main"), b"GET /echo HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(answer.status, 408);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let (_ws, answer) = RawWs::connect(proxy.addr("main"), &upgrade_request("/echo", "")).await;
    assert_eq!(answer.status, 101);
    assert_eq!(backend.connection_count(), 1);
}

/// One request to a proxy in front of `backends`; the raw answer.
async fn through(backends: &[std::net::SocketAddr], request: &str) -> RawAnswer {
    let proxy = start_proxy(&simple_config(backends, "")).await;
    raw_request(proxy.addr("main"), request.as_bytes()).await
}

#[tokio::test]
async fn backend_refusal_is_passed_on_without_hop_by_hop_headers() {
    let backend = scripted_backend(|_| {
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"chat\"\r\nX-App: yes\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\nUpgrade: h2c\r\nContent-Length: 14\r\n\r\nlog in, please".into()
    })
    .await;
    let proxy = start_proxy(&simple_config(&[backend.addr], "")).await;
    for round in 1..=2 {
        let answer = raw_request(proxy.addr("main"), upgrade_request("/echo", "").as_bytes()).await;
        assert_eq!(answer.status, 401, "round {round}: {answer:?}");
        assert_eq!(
            answer.header("www-authenticate"),
            Some("Bearer realm=\"chat\"")
        );
        assert_eq!(answer.header("x-app"), Some("yes"));
        assert_eq!(answer.header("content-length"), Some("14"));
        assert_eq!(answer.body, "log in, please");
        for hop in [
            "x-hop",
            "keep-alive",
            "proxy-connection",
            "trailer",
            "upgrade",
        ] {
            assert_eq!(answer.header(hop), None, "{hop} is hop-by-hop: {answer:?}");
        }
        // Not marked down: the second round reaches the backend again
        // instead of getting 503.
        assert_eq!(backend.connection_count(), round);
    }
}

#[tokio::test]
async fn backend_refusal_is_not_retried_on_another_backend() {
    let refuse = |_: &str| {
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n".into()
    };
    let one = scripted_backend(refuse).await;
    let two = scripted_backend(refuse).await;
    let answer = through(&[one.addr, two.addr], &upgrade_request("/echo", "")).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert_eq!(answer.body, "");
    assert_eq!(one.connection_count() + two.connection_count(), 1);
}

#[tokio::test]
async fn chunked_refusal_body_is_passed_on_whole() {
    let backend = scripted_backend(|_| {
        "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n6\r\nnot on\r\n9;ext=1\r\n this map\r\n0\r\nX-Trailer: t\r\n\r\n".into()
    })
    .await;
    let answer = through(&[backend.addr], &upgrade_request("/echo", "")).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(answer.header("transfer-encoding"), None);
    assert_eq!(answer.header("content-type"), Some("text/plain"));
    assert_eq!(answer.body, "not on this map");
}

#[tokio::test]
async fn bodiless_refusal_needs_no_backend_close() {
    // The scripted backend keeps its connection open: a 204 without
    // Content-Length must not wait for the end of a body it cannot have.
    let backend =
        scripted_backend(|_| "HTTP/1.1 204 No Content\r\nX-Why: quiet\r\n\r\n".into()).await;
    let answer = through(&[backend.addr], &upgrade_request("/echo", "")).await;
    assert_eq!(answer.status, 204, "{answer:?}");
    assert_eq!(answer.header("x-why"), Some("quiet"));
}

#[tokio::test]
async fn refusal_body_over_64_kib_is_cut_and_the_connection_closed() {
    let backend = scripted_backend(|_| {
        format!(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 100000\r\n\r\n{}",
            "x".repeat(100_000)
        )
    })
    .await;
    let answer = through(&[backend.addr], &upgrade_request("/echo", "")).await;
    assert_eq!(answer.status, 404);
    // The declared length stays, so the client sees the answer is cut.
    assert_eq!(answer.header("content-length"), Some("100000"));
    assert_eq!(answer.body.len(), 64 * 1024);
}

#[tokio::test]
async fn no_answer_made_by_the_proxy_names_a_backend_address() {
    let closed = closed_port().await;
    let wrong_accept = scripted_backend(|_| {
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n\r\n".into()
    })
    .await;
    let garbage = scripted_backend(|_| "HTTP/9 what\r\n\r\n".into()).await;
    let unfinished =
        scripted_backend(|_| "HTTP/1.1 401 Unauthorized\r\nContent-Length: 10\r\n\r\nabc".into())
            .await;
    for (addr, timeout) in [
        (closed, ""),
        (wrong_accept.addr, ""),
        (garbage.addr, ""),
        (unfinished.addr, "[defaults]\nconnect_timeout = \"300ms\"\n"),
    ] {
        let proxy = start_proxy(&simple_config(&[addr], timeout)).await;
        let answer = raw_request(proxy.addr("main"), upgrade_request("/echo", "").as_bytes()).await;
        assert_eq!(answer.status, 502, "{addr}: {answer:?}");
        let text = format!("{:?}{}", answer.headers, answer.body);
        assert!(!text.contains(&addr.to_string()), "{text}");
        assert!(!text.contains(&addr.port().to_string()), "{text}");
    }
}

#[tokio::test]
async fn upgrade_with_a_body_is_400() {
    let req = upgrade_request("/echo", "Content-Length: 6\r\n") + "abcdef";
    let answer = rejected(&req, 400).await;
    assert!(answer.body.contains("body"), "{}", answer.body);
    let req = upgrade_request("/echo", "Transfer-Encoding: chunked\r\n") + "0\r\n\r\n";
    rejected(&req, 400).await;
    // An empty body is no body.
    let (proxy, _backend) = setup(false).await;
    let req = upgrade_request("/echo", "Content-Length: 0\r\n");
    let (_ws, answer) = RawWs::connect(proxy.addr("main"), &req).await;
    assert_eq!(answer.status, 101);
}

#[tokio::test]
async fn duplicate_host_or_origin_is_400() {
    let answer = rejected(&upgrade_request("/echo", "Host: other\r\n"), 400).await;
    assert!(answer.body.contains("Host"), "{}", answer.body);
    let two = "Origin: https://good.example\r\nOrigin: https://evil.example\r\n";
    let answer = rejected(&upgrade_request("/echo", two), 400).await;
    assert!(answer.body.contains("Origin"), "{}", answer.body);
}

#[tokio::test]
async fn two_content_lengths_get_a_reason_and_are_counted() {
    let backend = echo_backend().await;
    let toml = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        simple_config(&[backend.addr], "")
    );
    let proxy = start_proxy(&toml).await;
    let req = upgrade_request("/echo", "Content-Length: 0\r\nContent-Length: 5\r\n");
    let answer = raw_request(proxy.addr("main"), req.as_bytes()).await;
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("Content-Length"), "{}", answer.body);
    // Counted where the access-log line is written.
    let (_, scrape) = admin(proxy.shared.admin_addr.unwrap(), "GET", "/metrics").await;
    assert_eq!(
        sample(
            &scrape,
            "wsgate_handshake_rejections_total",
            &["status=\"400\""]
        ),
        1.0
    );
    assert_eq!(backend.connection_count(), 0);
}

#[tokio::test]
async fn bare_lf_line_endings_are_400_at_once() {
    let backend = echo_backend().await;
    let toml = simple_config(&[backend.addr], "[defaults]\nhandshake_timeout = \"60s\"\n");
    let proxy = start_proxy(&toml).await;
    let req = upgrade_request("/echo", "").replace("\r\n", "\n");
    // `raw_request` gives up long before the 60 s handshake_timeout.
    let answer = raw_request(proxy.addr("main"), req.as_bytes()).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains("LF"), "{}", answer.body);
}
