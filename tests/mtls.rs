//! TLS to backends (verified against a private CA for the backend's name,
//! a client certificate presented) and client certificates on listeners
//! (required, checked, and named to the backend in headers a client cannot
//! forge). Certificates come from a CA made with rcgen in each test.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One upgrade a TLS backend saw: its headers and the client certificate.
type Upgrade = (Vec<(String, String)>, Option<CertificateDer<'static>>);

/// What a TLS backend saw: TCP connections, upgrades with their headers,
/// and the client certificate of each upgrade.
#[derive(Clone, Default)]
struct Seen {
    connections: Arc<AtomicUsize>,
    upgrades: Arc<Mutex<Vec<Upgrade>>>,
}

/// A wss:// echo backend serving `cert`; with `client_ca`, it requires a
/// client certificate from that CA.
async fn tls_backend(cert: &Issued, client_ca: Option<&TestCa>) -> (SocketAddr, Seen) {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()),
                provider(),
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(
            vec![CertificateDer::from(cert.der.clone())],
            PrivateKeyDer::try_from(cert.key_der.clone()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            s.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = tls.get_ref().1.peer_certificates().map(|c| c[0].clone());
                #[allow(clippy::result_large_err)] // tungstenite's callback signature
                let callback = |req: &Request, res: Response| {
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    s.upgrades.lock().unwrap().push((headers, peer));
                    Ok(res)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tls, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let Ok(()) = ws.send(msg).await else { return };
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn pool_tls_config(backends: &[SocketAddr], tls: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\npath_prefix = \"/echo\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\nbackends = [{}]\ntls = {tls}\n",
        list.join(", ")
    )
}

async fn echo_once(url: &str) {
    let (mut ws, _) = within(tokio_tungstenite::connect_async(url))
        .await
        .expect("upgrade through the proxy");
    within(ws.send(Message::text("over tls"))).await.unwrap();
    let reply = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(reply, Message::text("over tls"));
}

#[tokio::test]
async fn backend_tls_verifies_the_backend_against_the_pool_ca() {
    let ca = TestCa::named("backend-ca");
    let cert = ca.issue_with_subject("backend", &["backend.test"], "backend");
    let (addr, seen) = tls_backend(&cert, None).await;
    let tls = format!(
        "{{ ca = \"{}\", server_name = \"backend.test\" }}",
        ca.pem.display()
    );
    let proxy = start_proxy(&pool_tls_config(&[addr], &tls)).await;
    echo_once(&proxy.url("/echo")).await;
    assert_eq!(seen.upgrades.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn backend_with_a_certificate_for_another_name_is_skipped_and_marked_down() {
    let ca = TestCa::named("backend-ca");
    let wrong = ca.issue_with_subject("wrong", &["other.test"], "wrong");
    let right = ca.issue_with_subject("right", &["backend.test"], "right");
    let (wrong_addr, wrong_seen) = tls_backend(&wrong, None).await;
    let (right_addr, right_seen) = tls_backend(&right, None).await;
    let tls = format!(
        "{{ ca = \"{}\", server_name = \"backend.test\" }}",
        ca.pem.display()
    );
    let proxy = start_proxy(&pool_tls_config(&[wrong_addr, right_addr], &tls)).await;
    // Least connections rotates its first choice, so one of the first two
    // handshakes tries the wrong backend first; every one still succeeds.
    for _ in 0..4 {
        echo_once(&proxy.url("/echo")).await;
    }
    assert!(wrong_seen.connections.load(Ordering::SeqCst) >= 1);
    assert!(wrong_seen.upgrades.lock().unwrap().is_empty());
    assert_eq!(right_seen.upgrades.lock().unwrap().len(), 4);
    let state = proxy.shared.registry.get("p", wrong_addr).unwrap();
    assert!(!state.is_up(tokio::time::Instant::now()), "marked down");
}

#[tokio::test]
async fn backend_tls_presents_the_pool_client_certificate() {
    let ca = TestCa::named("backend-ca");
    let cert = ca.issue_with_subject("backend", &["backend.test"], "backend");
    let client = ca.issue_with_subject("client", &["proxy.test"], "wsgate");
    let (addr, seen) = tls_backend(&cert, Some(&ca)).await;
    let tls = format!(
        "{{ ca = \"{}\", server_name = \"backend.test\", cert = \"{}\", key = \"{}\" }}",
        ca.pem.display(),
        client.cert.display(),
        client.key.display()
    );
    let proxy = start_proxy(&pool_tls_config(&[addr], &tls)).await;
    echo_once(&proxy.url("/echo")).await;
    let upgrades = seen.upgrades.lock().unwrap();
    assert_eq!(upgrades[0].1.as_deref(), Some(client.der.as_slice()));
}

#[tokio::test]
async fn backend_demanding_a_client_certificate_refuses_a_pool_without_one() {
    let ca = TestCa::named("backend-ca");
    let cert = ca.issue_with_subject("backend", &["backend.test"], "backend");
    let (addr, seen) = tls_backend(&cert, Some(&ca)).await;
    let tls = format!(
        "{{ ca = \"{}\", server_name = \"backend.test\" }}",
        ca.pem.display()
    );
    let proxy = start_proxy(&pool_tls_config(&[addr], &tls)).await;
    let answer = raw_request(proxy.addr("main"), upgrade_request("/echo", "").as_bytes()).await;
    assert_eq!(answer.status, 502);
    assert!(seen.upgrades.lock().unwrap().is_empty());
}

/// A wss:// listener asking for client certificates from `client_ca`,
/// in front of the recording plain echo backend.
fn listener_config(server: &Issued, client_ca: &TestCa, mode: &str, backend: SocketAddr) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\", client_auth = \"{mode}\" }}\n\n[[route]]\npath_prefix = \"/echo\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\nbackends = [{{ addr = \"{backend}\" }}]\n",
        server.cert.display(),
        server.key.display(),
        client_ca.pem.display()
    )
}

/// Connects to the proxy over TLS (trusting `server_ca`), presenting
/// `client` when given, and sends an upgrade with forged identity headers.
async fn wss_upgrade(
    addr: SocketAddr,
    server_ca: &TestCa,
    client: Option<&Issued>,
) -> Result<(), String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(server_ca.roots());
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(c.der.clone())],
                PrivateKeyDer::try_from(c.key_der.clone()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = within(TcpStream::connect(addr)).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    let tls = within(connector.connect(name, tcp))
        .await
        .map_err(|e| e.to_string())?;
    let mut request = "wss://localhost/echo".into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("x-client-cert-subject", "CN=admin".parse().unwrap());
    headers.insert("x-client-cert-sha256", "00ff".parse().unwrap());
    let (mut ws, _) = within(tokio_tungstenite::client_async(request, tls))
        .await
        .map_err(|e| e.to_string())?;
    within(ws.send(Message::text("hi"))).await.unwrap();
    within(ws.next())
        .await
        .unwrap()
        .map_err(|e| e.to_string())?;
    Ok(())
}

struct ListenerSetup {
    server_ca: TestCa,
    client_ca: TestCa,
    backend: Backend,
    proxy: Proxy,
}

async fn listener_setup(mode: &str) -> ListenerSetup {
    let server_ca = TestCa::named("server-ca");
    let client_ca = TestCa::named("client-ca");
    let server = server_ca.issue_with_subject("server", &["localhost"], "localhost");
    let backend = echo_backend().await;
    let proxy = start_proxy(&listener_config(&server, &client_ca, mode, backend.addr)).await;
    ListenerSetup {
        server_ca,
        client_ca,
        backend,
        proxy,
    }
}

/// Waits (bounded) until the proxy has counted `n` failed TLS handshakes:
/// under TLS 1.3 the client may see the refusal before the proxy counts it.
async fn wait_tls_failures(proxy: &Proxy, n: f64) {
    let admin_addr = proxy.shared.admin_addr.unwrap();
    let mut counted = 0.0;
    for _ in 0..200 {
        let (_, scrape) = admin(admin_addr, "GET", "/metrics").await;
        counted = sample(&scrape, "wsgate_tls_handshake_failures_total", &[]);
        if counted == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{counted} failed TLS handshakes counted, expected {n}");
}

#[tokio::test]
async fn required_client_certificate_missing_fails_the_tls_handshake() {
    let s = listener_setup("require").await;
    let result = wss_upgrade(s.proxy.addr("main"), &s.server_ca, None).await;
    assert!(result.is_err(), "no certificate, no upgrade");
    assert_eq!(s.backend.connection_count(), 0);
    wait_tls_failures(&s.proxy, 1.0).await;
}

#[tokio::test]
async fn client_certificate_from_an_unknown_ca_fails_the_tls_handshake() {
    let s = listener_setup("require").await;
    let stranger =
        TestCa::named("stranger-ca").issue_with_subject("device", &["device.test"], "device-9");
    let result = wss_upgrade(s.proxy.addr("main"), &s.server_ca, Some(&stranger)).await;
    assert!(result.is_err(), "unknown CA, no upgrade");
    assert_eq!(s.backend.connection_count(), 0);
    wait_tls_failures(&s.proxy, 1.0).await;
}

#[tokio::test]
async fn valid_client_certificate_is_named_to_the_backend_and_forgeries_are_dropped() {
    let s = listener_setup("require").await;
    let device = s
        .client_ca
        .issue_with_subject("device", &["device.test"], "device-7");
    wss_upgrade(s.proxy.addr("main"), &s.server_ca, Some(&device))
        .await
        .expect("a valid certificate upgrades");
    let seen = s.backend.last_seen();
    let all = |name: &str| -> Vec<String> {
        (seen.headers.iter())
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(all("x-client-cert-subject"), ["CN=device-7,O=Test Org"]);
    let digest = ring::digest::digest(&ring::digest::SHA256, device.der.as_ref());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(all("x-client-cert-sha256"), [hex]);
}

#[tokio::test]
async fn optional_client_certificate_absent_forwards_no_identity_headers() {
    let s = listener_setup("optional").await;
    wss_upgrade(s.proxy.addr("main"), &s.server_ca, None)
        .await
        .expect("optional: no certificate is fine");
    let seen = s.backend.last_seen();
    assert_eq!(seen.header("x-client-cert-subject"), None);
    assert_eq!(seen.header("x-client-cert-sha256"), None);
}

#[tokio::test]
async fn forged_identity_headers_never_reach_the_backend_on_a_plain_listener() {
    let backend = echo_backend().await;
    let proxy = start_proxy(&simple_config(&[backend.addr], "")).await;
    let request = upgrade_request(
        "/echo",
        "X-Client-Cert-Subject: CN=admin\r\nx-client-cert-sha256: 00ff\r\n",
    );
    let (_ws, answer) = RawWs::connect(proxy.addr("main"), &request).await;
    assert_eq!(answer.status, 101);
    let seen = backend.last_seen();
    assert_eq!(seen.header("x-client-cert-subject"), None);
    assert_eq!(seen.header("x-client-cert-sha256"), None);
}

#[tokio::test]
async fn websocket_health_checks_of_a_tls_pool_go_over_tls_and_verify() {
    let ca = TestCa::named("backend-ca");
    let wrong = ca.issue_with_subject("wrong", &["other.test"], "wrong");
    let right = ca.issue_with_subject("right", &["backend.test"], "right");
    let (wrong_addr, _) = tls_backend(&wrong, None).await;
    let (right_addr, right_seen) = tls_backend(&right, None).await;
    let tls = format!(
        "{{ ca = \"{}\", server_name = \"backend.test\" }}\nhealth_check = {{ kind = \"websocket\", path = \"/health\", interval = \"100ms\" }}",
        ca.pem.display()
    );
    let proxy = start_proxy(&pool_tls_config(&[wrong_addr, right_addr], &tls)).await;
    let registry = &proxy.shared.registry;
    let (wrong_state, right_state) = (
        registry.get("p", wrong_addr).unwrap(),
        registry.get("p", right_addr).unwrap(),
    );
    for _ in 0..200 {
        let checked = !right_seen.upgrades.lock().unwrap().is_empty();
        if checked && !wrong_state.is_up(tokio::time::Instant::now()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let seen = right_seen.upgrades.lock().unwrap().clone();
    assert!(seen.iter().any(|(h, _)| h
        .iter()
        .any(|(n, v)| n == "user-agent" && v == "wsgate-health-check")));
    assert!(
        !wrong_state.is_up(tokio::time::Instant::now()),
        "failed verification: down"
    );
    assert!(right_state.is_up(tokio::time::Instant::now()));
}

/// A wss:// backend that answers any plain HTTP request with 200 and the
/// request head it received as the body.
async fn tls_http_backend(cert: &Issued) -> SocketAddr {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der.clone())],
            PrivateKeyDer::try_from(cert.key_der.clone()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    head.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.write_all(&head).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn proxied_http_reaches_a_tls_pool_and_never_carries_forged_identity() {
    let ca = TestCa::named("backend-ca");
    let cert = ca.issue_with_subject("backend", &["backend.test"], "backend");
    let addr = tls_http_backend(&cert).await;
    let tls = format!(
        "{{ ca = \"{}\", server_name = \"backend.test\" }}",
        ca.pem.display()
    );
    let text = pool_tls_config(&[addr], &tls)
        .replace("pool = \"p\"\n", "pool = \"p\"\nhttp = \"proxy\"\n");
    let proxy = start_proxy(&text).await;
    let request = "GET /echo/page HTTP/1.1\r\nHost: localhost\r\nX-Client-Cert-Subject: CN=admin\r\nConnection: close\r\n\r\n";
    let answer = raw_request(proxy.addr("main"), request.as_bytes()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.starts_with("GET /echo/page"), "{}", answer.body);
    assert!(
        !answer.body.to_ascii_lowercase().contains("x-client-cert"),
        "{}",
        answer.body
    );
}
