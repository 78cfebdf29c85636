//! PROXY protocol in (plain and TLS listeners, v1 and v2, LOCAL, TLVs,
//! refusals) and out (a backend reading the header), and trusted
//! forwarders, through the real proxy on loopback.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsgate::config::ProxyProtocol;
use wsgate::proxy_protocol::{self, Header, Parsed};

fn with_admin(toml: &str) -> String {
    format!("[admin]\nbind = \"127.0.0.1:0\"\n\n{toml}")
}

/// `simple_config` with `lines` added to the listener.
fn listener_config(backends: &[SocketAddr], lines: &str, pool_extra: &str) -> String {
    simple_config(backends, pool_extra).replacen(
        "bind = \"127.0.0.1:0\"\n",
        &format!("bind = \"127.0.0.1:0\"\n{lines}\n"),
        1,
    )
}

fn v1(source: &str, sport: u16) -> Vec<u8> {
    let family = if source.contains(':') { "TCP6" } else { "TCP4" };
    let dst = if source.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    format!("PROXY {family} {source} {dst} {sport} 80\r\n").into_bytes()
}

/// A v2 header; `addrs` is the address block, then a few TLVs follow.
fn v2(command: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
    let tlvs: &[u8] = &[
        0x01, 0x00, 0x02, b'h', b'2', 0xea, 0x00, 0x03, 0x01, b'v', b'p',
    ];
    let mut out = proxy_protocol::V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&((addrs.len() + tlvs.len()) as u16).to_be_bytes());
    out.extend_from_slice(addrs);
    out.extend_from_slice(tlvs);
    out
}

fn v2_tcp4(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut addrs = ip.to_vec();
    addrs.extend_from_slice(&[127, 0, 0, 1]);
    addrs.extend_from_slice(&port.to_be_bytes());
    addrs.extend_from_slice(&80u16.to_be_bytes());
    v2(1, 0x11, &addrs)
}

fn v2_tcp6(ip: &str, port: u16) -> Vec<u8> {
    let ip: std::net::Ipv6Addr = ip.parse().unwrap();
    let mut addrs = ip.octets().to_vec();
    addrs.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    addrs.extend_from_slice(&port.to_be_bytes());
    addrs.extend_from_slice(&80u16.to_be_bytes());
    v2(1, 0x21, &addrs)
}

/// Writes `preamble` and an upgrade request on `io`, returns the answer head.
async fn upgrade_over<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO, extra: &str) -> RawAnswer {
    io.write_all(upgrade_request("/echo", extra).as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = within(io.read(&mut byte)).await.unwrap();
        assert_eq!(n, 1, "closed before an answer: {buf:?}");
        buf.push(byte[0]);
    }
    parse_answer(&buf)
}

async fn proxied_upgrade(addr: SocketAddr, preamble: &[u8]) -> RawAnswer {
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    stream.write_all(preamble).await.unwrap();
    upgrade_over(&mut stream, "").await
}

/// Sends `preamble` and more, and expects the proxy to close without a
/// single byte of answer.
async fn closed_unanswered(addr: SocketAddr, preamble: &[u8]) {
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    stream.write_all(preamble).await.unwrap();
    let _ = stream
        .write_all(upgrade_request("/echo", "").as_bytes())
        .await;
    let mut out = Vec::new();
    let _ = within(stream.read_to_end(&mut out)).await;
    assert!(
        out.is_empty(),
        "answered: {:?}",
        String::from_utf8_lossy(&out)
    );
}

async fn scrape(proxy: &Proxy) -> String {
    let (code, body) = admin(proxy.shared.admin_addr.unwrap(), "GET", "/metrics").await;
    assert_eq!(code, 200);
    body
}

#[tokio::test]
async fn v1_and_v2_source_becomes_the_forwarded_address_on_a_plain_listener() {
    let backend = echo_backend().await;
    let toml = listener_config(&[backend.addr], "proxy_protocol = \"any\"", "");
    let proxy = start_proxy(&toml).await;
    let addr = proxy.addr("main");
    let cases: [(Vec<u8>, &str); 4] = [
        (v1("203.0.113.7", 5555), "203.0.113.7"),
        (v1("2001:db8::7", 5555), "2001:db8::7"),
        (v2_tcp4([198, 51, 100, 9], 4444), "198.51.100.9"),
        (v2_tcp6("2001:db8::9", 4444), "2001:db8::9"),
    ];
    for (preamble, expected) in cases {
        let answer = proxied_upgrade(addr, &preamble).await;
        assert_eq!(answer.status, 101);
        assert_eq!(
            backend.last_seen().header("x-forwarded-for"),
            Some(expected)
        );
    }
    // LOCAL (a balancer's health check) and v1 UNKNOWN: the peer stands.
    for preamble in [v2(0, 0x00, &[]), b"PROXY UNKNOWN\r\n".to_vec()] {
        let answer = proxied_upgrade(addr, &preamble).await;
        assert_eq!(answer.status, 101);
        assert_eq!(
            backend.last_seen().header("x-forwarded-for"),
            Some("127.0.0.1")
        );
    }
}

#[tokio::test]
async fn header_is_read_before_tls() {
    let ca = TestCa::new();
    let cert = ca.issue("server", &["localhost"]);
    let backend = echo_backend().await;
    let tls = format!(
        "proxy_protocol = \"any\"\ntls = {{ cert = \"{}\", key = \"{}\" }}",
        cert.cert.display(),
        cert.key.display()
    );
    let proxy = start_proxy(&listener_config(&[backend.addr], &tls, "")).await;
    let addr = proxy.addr("main");
    for (preamble, expected) in [
        (v1("203.0.113.8", 1000), "203.0.113.8"),
        (v2_tcp4([198, 51, 100, 10], 1000), "198.51.100.10"),
        (v2_tcp6("2001:db8::10", 1000), "2001:db8::10"),
        (v2(0, 0x11, &[0; 12]), "127.0.0.1"),
    ] {
        let mut tcp = within(TcpStream::connect(addr)).await.unwrap();
        tcp.write_all(&preamble).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(ca.client_config());
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = within(connector.connect(name, tcp))
            .await
            .expect("TLS after PROXY");
        let answer = upgrade_over(&mut tls, "").await;
        assert_eq!(answer.status, 101);
        assert_eq!(
            backend.last_seen().header("x-forwarded-for"),
            Some(expected)
        );
    }
}

#[tokio::test]
async fn bad_missing_and_untrusted_headers_close_without_an_answer() {
    let backend = echo_backend().await;
    let toml = format!(
        "{}\n[[listener]]\nname = \"v2only\"\nbind = \"127.0.0.1:0\"\nproxy_protocol = \"v2\"\n\n\
         [[listener]]\nname = \"guarded\"\nbind = \"127.0.0.1:0\"\nproxy_protocol = \"v1\"\n\
         proxy_protocol_from = [\"10.0.0.0/8\", \"fd00::/8\"]\n",
        listener_config(&[backend.addr], "proxy_protocol = \"v1\"", "")
    );
    let proxy = start_proxy(&with_admin(&toml)).await;
    let main = proxy.addr("main");
    closed_unanswered(main, b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n").await;
    closed_unanswered(main, b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n").await;
    closed_unanswered(main, b"").await; // a plain request: no header
    closed_unanswered(proxy.addr("v2only"), &v1("203.0.113.1", 1)).await;
    let mut bad_v2 = v2_tcp4([1, 2, 3, 4], 1);
    bad_v2[12] = 0x23; // command 3
    closed_unanswered(proxy.addr("v2only"), &bad_v2).await;
    closed_unanswered(proxy.addr("guarded"), &v1("203.0.113.1", 1)).await;
    assert_eq!(backend.connection_count(), 0, "no backend was contacted");
    let s = scrape(&proxy).await;
    let errors = |listener: &str, reason: &str| {
        sample(
            &s,
            "wsgate_proxy_protocol_errors_total",
            &[
                &format!("listener=\"{listener}\""),
                &format!("reason=\"{reason}\""),
            ],
        )
    };
    assert_eq!(errors("main", "malformed"), 2.0);
    assert_eq!(errors("main", "missing"), 1.0);
    assert_eq!(errors("v2only", "missing"), 1.0);
    assert_eq!(errors("v2only", "malformed"), 1.0);
    assert_eq!(errors("guarded", "untrusted"), 1.0);
}

#[tokio::test]
async fn proxy_source_is_the_sticky_client_ip() {
    let (a, b) = (echo_backend().await, echo_backend().await);
    let toml = listener_config(
        &[a.addr, b.addr],
        "proxy_protocol = \"v2\"",
        "balance = \"sticky\"\nsticky = { source = \"client_ip\" }",
    );
    let proxy = start_proxy(&toml).await;
    let addr = proxy.addr("main");
    let served_by = |before: (usize, usize)| {
        let after = (a.connection_count(), b.connection_count());
        if after.0 > before.0 {
            0
        } else {
            assert!(after.1 > before.1);
            1
        }
    };
    // One source, many TCP connections from the same test peer: one backend.
    let mut seen = Vec::new();
    for port in 0..6 {
        let before = (a.connection_count(), b.connection_count());
        assert_eq!(
            proxied_upgrade(addr, &v2_tcp4([203, 0, 113, 50], 1000 + port))
                .await
                .status,
            101
        );
        seen.push(served_by(before));
    }
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
    // Many sources from that same peer: both backends get some.
    let mut used = [false; 2];
    for last in 1..=24u8 {
        let before = (a.connection_count(), b.connection_count());
        assert_eq!(
            proxied_upgrade(addr, &v2_tcp4([198, 51, 100, last], 1))
                .await
                .status,
            101
        );
        used[served_by(before)] = true;
    }
    assert_eq!(used, [true, true]);
}

/// A backend that reads a PROXY header (any version) before the upgrade
/// request, records it, and answers 101.
async fn proxy_reading_backend() -> (SocketAddr, Arc<Mutex<Vec<Header>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let headers: Arc<Mutex<Vec<Header>>> = Arc::default();
    let seen = headers.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                let rest = loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    match proxy_protocol::parse(&buf, ProxyProtocol::Any) {
                        Ok(Parsed::Complete { header, len }) => {
                            seen.lock().unwrap().push(header);
                            break buf.split_off(len);
                        }
                        Ok(Parsed::Incomplete) => {}
                        Err(_) => return,
                    }
                };
                let mut head = rest;
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&chunk[..n]);
                }
                let text = String::from_utf8_lossy(&head);
                let key = text
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    wsgate::handshake::accept_for(key.as_bytes())
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.read(&mut chunk).await;
            });
        }
    });
    (addr, headers)
}

fn source_of(header: &Header) -> SocketAddr {
    match header {
        Header::Proxy { source, .. } => *source,
        Header::Local => panic!("a LOCAL header where a client's was due"),
    }
}

#[tokio::test]
async fn backends_get_the_client_address_in_v1_and_v2() {
    for version in ["v1", "v2"] {
        let (backend, headers) = proxy_reading_backend().await;
        let pool = format!("send_proxy_protocol = \"{version}\"");
        // Without PROXY in: the TCP peer and its port.
        let proxy = start_proxy(&simple_config(&[backend], &pool)).await;
        let mut stream = within(TcpStream::connect(proxy.addr("main")))
            .await
            .unwrap();
        let local = stream.local_addr().unwrap();
        assert_eq!(upgrade_over(&mut stream, "").await.status, 101);
        let header = headers.lock().unwrap().last().copied().unwrap();
        assert_eq!(source_of(&header), local);
        match header {
            Header::Proxy { destination, .. } => assert_eq!(destination, proxy.addr("main")),
            Header::Local => unreachable!(),
        }
        // With PROXY in: the balancer's client, port included.
        let toml = listener_config(&[backend], "proxy_protocol = \"v1\"", &pool);
        let proxy = start_proxy(&toml).await;
        let answer = proxied_upgrade(proxy.addr("main"), &v1("2001:db8::77", 6060)).await;
        assert_eq!(answer.status, 101);
        let header = headers.lock().unwrap().last().copied().unwrap();
        assert_eq!(source_of(&header), "[2001:db8::77]:6060".parse().unwrap());
    }
}

#[tokio::test]
async fn websocket_health_checks_send_a_local_header() {
    let (backend, headers) = proxy_reading_backend().await;
    let pool = "send_proxy_protocol = \"v2\"\nhealth_check = { kind = \"websocket\", path = \"/health\", interval = \"50ms\" }";
    let _proxy = start_proxy(&simple_config(&[backend], pool)).await;
    for _ in 0..1000 {
        if !headers.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(headers.lock().unwrap().first(), Some(&Header::Local));
}

#[tokio::test]
async fn trusted_forwarders_name_the_client() {
    let (backend, headers) = proxy_reading_backend().await;
    let pool = "send_proxy_protocol = \"v1\"";
    let chain = "X-Forwarded-For: 6.6.6.6, 203.0.113.9\r\nX-Forwarded-For: 127.0.0.5\r\n";
    // The test's peer (127.0.0.1) and the hop 127.0.0.5 are trusted: the
    // client is the right-most other entry.
    let toml = listener_config(&[backend], "trusted_proxies = [\"127.0.0.0/8\"]", pool);
    let proxy = start_proxy(&toml).await;
    let mut stream = within(TcpStream::connect(proxy.addr("main")))
        .await
        .unwrap();
    assert_eq!(upgrade_over(&mut stream, chain).await.status, 101);
    let header = headers.lock().unwrap().last().copied().unwrap();
    assert_eq!(source_of(&header), "203.0.113.9:0".parse().unwrap());
    // Not trusted: the peer is the client, whatever it claims.
    let proxy = start_proxy(&simple_config(&[backend], pool)).await;
    let mut stream = within(TcpStream::connect(proxy.addr("main")))
        .await
        .unwrap();
    let local = stream.local_addr().unwrap();
    assert_eq!(upgrade_over(&mut stream, chain).await.status, 101);
    let header = headers.lock().unwrap().last().copied().unwrap();
    assert_eq!(source_of(&header), local);
}

#[tokio::test]
async fn trusted_chain_is_history_in_the_forwarded_header() {
    let backend = echo_backend().await;
    let toml = listener_config(&[backend.addr], "trusted_proxies = [\"127.0.0.1\"]", "");
    let proxy = start_proxy(&toml).await;
    let mut stream = within(TcpStream::connect(proxy.addr("main")))
        .await
        .unwrap();
    let answer = upgrade_over(&mut stream, "X-Forwarded-For: 203.0.113.9\r\n").await;
    assert_eq!(answer.status, 101);
    assert_eq!(
        backend.last_seen().header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
}
