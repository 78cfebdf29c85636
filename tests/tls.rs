//! wss:// termination: the chain verifies against a CA made in the test,
//! SNI picks the certificate, and non-TLS input gets a clear answer.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

fn tls_config(backend: std::net::SocketAddr, default: &Issued, second: &Issued) -> String {
    format!(
        r#"
[defaults]
# Room for a TLS handshake on a loaded machine; the stalled client waits it out.
handshake_timeout = "2s"

[[listener]]
name = "main"
bind = "127.0.0.1:0"
tls = {{ cert = "{}", key = "{}", sni = [ {{ server_names = ["second.test"], cert = "{}", key = "{}" }} ] }}

[[route]]
path_prefix = "/echo"
pool = "p"

[[pool]]
name = "p"
backends = [{{ addr = "{backend}" }}]
"#,
        default.cert.display(),
        default.key.display(),
        second.cert.display(),
        second.key.display()
    )
}

/// A test CA, two certificates (`localhost` by default, `second.test` by
/// SNI), an echo backend and the proxy's TLS listener in front of it.
struct TlsSetup {
    ca: TestCa,
    first: Issued,
    second: Issued,
    backend: Backend,
    proxy: Proxy,
}

impl TlsSetup {
    async fn start() -> TlsSetup {
        let ca = TestCa::new();
        let first = ca.issue("first", &["localhost"]);
        let second = ca.issue("second", &["second.test"]);
        let backend = echo_backend().await;
        let proxy = start_proxy(&tls_config(backend.addr, &first, &second)).await;
        TlsSetup {
            ca,
            first,
            second,
            backend,
            proxy,
        }
    }
}

#[tokio::test]
async fn echo_over_wss_with_sni_choosing_the_certificate() {
    let TlsSetup {
        ca,
        first,
        second,
        backend,
        proxy,
    } = TlsSetup::start().await;
    let addr = proxy.addr("main");

    for (name, expected) in [("localhost", &first), ("second.test", &second)] {
        let tls = ca.connect(addr, name).await;
        let (_, session) = tls.get_ref();
        let leaf = session.peer_certificates().unwrap()[0].as_ref().to_vec();
        assert_eq!(leaf, expected.der, "SNI {name} chose its certificate");
        assert_eq!(
            session.alpn_protocol(),
            None,
            "no ALPN offered, none chosen"
        );
        let url = format!("wss://{name}/echo");
        let (mut ws, _) = within(tokio_tungstenite::client_async(url, tls))
            .await
            .unwrap();
        ws.send(Message::text(format!("hello {name}")))
            .await
            .unwrap();
        let reply = within(ws.next()).await.unwrap().unwrap();
        assert_eq!(reply, Message::text(format!("hello {name}")));
    }
    assert_eq!(backend.last_seen().header("x-forwarded-proto"), Some("wss"));
}

#[tokio::test]
async fn alpn_http_1_1_is_offered() {
    // The setup is held whole: its proxy stops when dropped.
    let setup = TlsSetup::start().await;
    let (ca, proxy) = (&setup.ca, &setup.proxy);
    let mut config = (*ca.client_config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(proxy.addr("main"))
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = within(connector.connect(name, tcp)).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn plain_http_on_tls_listener_gets_400_and_stalled_tls_is_cut() {
    let setup = TlsSetup::start().await;
    let (ca, proxy, backend) = (&setup.ca, &setup.proxy, &setup.backend);
    let addr = proxy.addr("main");

    let answer = raw_request(addr, upgrade_request("/echo", "").as_bytes()).await;
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("TLS"), "{}", answer.body);

    // A client that starts a TLS record and never finishes it.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut rest = Vec::new();
    let n = within(stalled.read_to_end(&mut rest)).await.unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer after handshake_timeout");

    // The next client is served normally.
    let tls = ca.connect(addr, "localhost").await;
    let (mut ws, _) = within(tokio_tungstenite::client_async("wss://localhost/echo", tls))
        .await
        .unwrap();
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::binary(vec![1, 2, 3])
    );
    assert_eq!(backend.connection_count(), 1);
}
