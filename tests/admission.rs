//! Admission control over real sockets: per-client limits (cap, rate,
//! exempt ranges, IPv4 addresses and IPv6 /64s), the listener's
//! `max_connections` and `max_pending_handshakes`, and the admit queue.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// A proxy with listener `main` on `bind` carrying `listener_extra`, a
/// route `/echo` to an echo backend, and an admin listener.
async fn proxy(bind: &str, listener_extra: &str) -> (Proxy, Backend) {
    let backend = echo_backend().await;
    let toml = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"main\"\nbind = \"{bind}\"\n{listener_extra}\n\n\
         [[route]]\npath_prefix = \"/echo\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\nbackends = [{{ addr = \"{}\" }}]\n",
        backend.addr
    );
    (start_proxy(&toml).await, backend)
}

async fn scrape(proxy: &Proxy) -> String {
    let admin_addr = proxy.shared.admin_addr.expect("admin listener");
    admin(admin_addr, "GET", "/metrics").await.1
}

fn rejections(scrape: &str, reason: &str) -> f64 {
    let reason = format!("reason=\"{reason}\"");
    sample(scrape, "wsgate_admission_rejections_total", &[&reason])
}

/// An upgrade request from a socket bound to `from` (any port).
async fn request_from(from: &str, to: SocketAddr) -> RawAnswer {
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let mut stream = within(socket.connect(to)).await.unwrap();
    stream
        .write_all(upgrade_request("/echo", "").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    // The proxy keeps an upgraded connection open: read the head only.
    let head_end = |b: &[u8]| b.windows(4).any(|w| w == b"\r\n\r\n");
    let mut buf = [0u8; 1024];
    while !head_end(&out) {
        match within(stream.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    if parse_answer(&out).status != 101 {
        let _ = within(stream.read_to_end(&mut out)).await;
    }
    parse_answer(&out)
}

async fn echo_once(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    within(ws.send(Message::text("still here"))).await.unwrap();
    match within(ws.next()).await {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "still here"),
        other => panic!("expected the echo, got {other:?}"),
    }
}

#[tokio::test]
async fn per_client_connection_cap_answers_429_with_retry_after() {
    let (proxy, _b) = proxy("127.0.0.1:0", "per_client = { max_connections = 2 }").await;
    let addr = proxy.addr("main");
    let mut held = vec![
        ws_connect(addr, "/echo").await,
        ws_connect(addr, "/echo").await,
    ];
    let answer = raw_request(addr, upgrade_request("/echo", "").as_bytes()).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert_eq!(answer.body, "too many connections from this client\n");
    for ws in &mut held {
        echo_once(ws).await;
    }
    assert_eq!(
        rejections(&scrape(&proxy).await, "per_client_connections"),
        1.0
    );
    // A closed connection gives its place back.
    drop(held.pop());
    let mut again = None;
    for _ in 0..200 {
        let answer = request_from("127.0.0.1", addr).await;
        if answer.status == 101 {
            again = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(again.is_some(), "the freed place was never given back");
}

#[tokio::test]
async fn per_client_rate_answers_429_with_the_wait_until_a_token() {
    let extra = "per_client = { handshakes_per_second = 0.1, burst = 2 }";
    let (proxy, _b) = proxy("127.0.0.1:0", extra).await;
    let addr = proxy.addr("main");
    let _held = [
        ws_connect(addr, "/echo").await,
        ws_connect(addr, "/echo").await,
    ];
    let answer = raw_request(addr, upgrade_request("/echo", "").as_bytes()).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.body, "too many new connections from this client\n");
    // One token per 10 s, the bucket emptied just now.
    let retry: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    assert!((8..=10).contains(&retry), "Retry-After {retry}");
    assert_eq!(rejections(&scrape(&proxy).await, "per_client_rate"), 1.0);
}

#[tokio::test]
async fn exempt_ranges_and_other_addresses_are_not_limited() {
    let extra = "per_client = { max_connections = 1, exempt = [\"127.0.0.2/32\"] }";
    let (proxy, _b) = proxy("127.0.0.1:0", extra).await;
    let addr = proxy.addr("main");
    let _one = request_from("127.0.0.1", addr).await;
    assert_eq!(request_from("127.0.0.1", addr).await.status, 429);
    // Another IPv4 address is another client; an exempt one has no cap.
    assert_eq!(request_from("127.0.0.3", addr).await.status, 101);
    for _ in 0..3 {
        assert_eq!(request_from("127.0.0.2", addr).await.status, 101);
    }
}

#[tokio::test]
async fn ipv6_clients_are_grouped_by_their_64() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    let (proxy, _b) = proxy("[::1]:0", "per_client = { max_connections = 1 }").await;
    let addr = proxy.addr("main");
    let _one = request_from("::1", addr).await;
    let answer = request_from("::1", addr).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("5"));
}

#[tokio::test]
async fn listener_max_connections_answers_503_and_leaves_open_ones_alone() {
    let (proxy, _b) = proxy("127.0.0.1:0", "max_connections = 2").await;
    let addr = proxy.addr("main");
    let mut held = vec![
        ws_connect(addr, "/echo").await,
        ws_connect(addr, "/echo").await,
    ];
    let answer = raw_request(addr, upgrade_request("/echo", "").as_bytes()).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert_eq!(answer.body, "too many connections on this listener\n");
    for ws in &mut held {
        echo_once(ws).await;
    }
    assert_eq!(rejections(&scrape(&proxy).await, "max_connections"), 1.0);
}

#[tokio::test]
async fn past_max_pending_handshakes_the_oldest_pending_is_dropped() {
    let (proxy, _b) = proxy("127.0.0.1:0", "max_pending_handshakes = 2").await;
    let addr = proxy.addr("main");
    // Two silent connections pend; each is known to the proxy once a
    // partial request has been echoed by nothing, so wait on the counter.
    let mut oldest = within(TcpStream::connect(addr)).await.unwrap();
    oldest.write_all(b"GET /echo HTTP/1.1\r\n").await.unwrap();
    let mut second = within(TcpStream::connect(addr)).await.unwrap();
    second.write_all(b"GET /echo HTTP/1.1\r\n").await.unwrap();
    // Until the proxy has accepted both, the third may drop either; the
    // tracker counts accepted connections.
    for _ in 0..1000 {
        if proxy.shared.tracker.open() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _third = within(TcpStream::connect(addr)).await.unwrap();
    let mut buf = [0u8; 64];
    let n = within(oldest.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(
        n, 0,
        "the oldest pending connection is closed without an answer"
    );
    // The second still pends: finishing its request upgrades it.
    let rest = "Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    second.write_all(rest.as_bytes()).await.unwrap();
    let n = within(second.read(&mut buf)).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let metrics = scrape(&proxy).await;
    assert_eq!(rejections(&metrics, "max_pending_handshakes"), 1.0);
}

/// Upgrades above the admit rate wait and go on in arrival order, spaced
/// by the rate; one that would wait past `queue` gets 503.
#[tokio::test]
async fn admit_queue_passes_in_order_at_the_rate_and_sheds_past_queue() {
    let extra = "admit = { handshakes_per_second = 2, queue = \"2s\" }";
    let (proxy, _b) = proxy("127.0.0.1:0", extra).await;
    let addr = proxy.addr("main");
    let start = Instant::now();
    let mut clients = Vec::new();
    for i in 0..6u32 {
        clients.push(tokio::spawn(async move {
            let answer = request_from("127.0.0.1", addr).await;
            (i, answer, Instant::now())
        }));
        // Arrivals 40 ms apart fix their order; all six arrive well
        // within the first 500 ms slot.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let mut done = Vec::new();
    for c in clients {
        done.push(within(c).await.unwrap());
    }
    // Slots at 0, 0.5, 1, 1.5 and 2 s; the sixth would wait 2.5 s > 2 s.
    let admitted: Vec<_> = done.iter().filter(|(_, a, _)| a.status == 101).collect();
    assert_eq!(
        admitted.len(),
        5,
        "{:?}",
        done.iter().map(|d| d.1.status).collect::<Vec<_>>()
    );
    let shed = &done[5].1;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.body, "too many upgrades waiting; try again later\n");
    let retry: u64 = shed.header("retry-after").unwrap().parse().unwrap();
    assert!((2..=3).contains(&retry), "Retry-After {retry}");
    for pair in admitted.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(a.0 < b.0 && a.2 < b.2, "admitted out of order");
        let gap = b.2 - a.2;
        assert!(
            gap >= Duration::from_millis(300),
            "gap {gap:?} under the rate"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    let metrics = scrape(&proxy).await;
    assert_eq!(rejections(&metrics, "admit_queue"), 1.0);
    assert_eq!(
        sample(
            &metrics,
            "wsgate_admit_queue_length",
            &["listener=\"main\""]
        ),
        0.0
    );
    assert_eq!(
        sample(&metrics, "wsgate_admit_queue_wait_seconds_count", &[]),
        4.0
    );
}
