//! A peer that resets its connection while the proxy is not reading from
//! it, because the other side does not read and so pushes back: the proxy
//! must notice at once, not at the idle timeout, and count the close as
//! that peer's (contract: "client connection lost without a close frame:
//! close 1001 to the backend at once"; the backend's loss, 1014 to the
//! client).

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough that only the reset, not the idle timer nor a keepalive
/// ping meeting the dead socket, can end the connection within the test's
/// waits.
const DEFAULTS: &str = "idle_timeout = \"300s\"\nping_interval = \"0s\"\n\
                        max_frame_bytes = 1073741824\nmax_message_bytes = 1073741824";

/// Starts one frame of 1 GiB and writes its payload until the stream stops
/// taking it (every buffer between it and the stuck reader is full).
async fn fill<S: AsyncWrite + Unpin>(stream: &mut S, masked: bool) {
    let len: u64 = 1 << 30;
    let mut header = vec![0x82, if masked { 0x80 | 127 } else { 127 }];
    header.extend_from_slice(&len.to_be_bytes());
    if masked {
        header.extend_from_slice(&[1, 2, 3, 4]);
    }
    within(stream.write_all(&header)).await.unwrap();
    let chunk = vec![0x5a; 64 * 1024];
    // At most 512 MiB: far more than any loopback buffers hold.
    for _ in 0..8192 {
        let wrote = tokio::time::timeout(Duration::from_millis(500), stream.write(&chunk)).await;
        match wrote {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => panic!("the proxy closed the stream while it was filled"),
            Err(_) => return,
        }
    }
    panic!("the stream never pushed back");
}

/// Resets the connection: RST instead of FIN.
fn reset(stream: TcpStream) {
    stream.set_zero_linger().unwrap();
    drop(stream);
}

/// Waits (bounded, far below the idle timeout) until no relayed
/// connection is open; returns the scrape then.
async fn ended(proxy: &Proxy) -> String {
    for _ in 0..3000 {
        if proxy.shared.tracker.open() == 0 {
            let (status, scrape) = admin(proxy.shared.admin_addr.unwrap(), "GET", "/metrics").await;
            assert_eq!(status, 200);
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the connection was not ended after the reset");
}

/// Waits for the connection to end, then checks that it was counted once
/// as closed with `code` by `initiator`.
async fn assert_ended_as(proxy: &Proxy, code: &str, initiator: &str) {
    let scrape = ended(proxy).await;
    let code = format!("code=\"{code}\"");
    let initiator = format!("initiator=\"{initiator}\"");
    let counted = sample(&scrape, "wsgate_closes_total", &[&code, &initiator]);
    assert_eq!(counted, 1.0, "{scrape}");
}

async fn setup() -> (Proxy, RawWs, RawWs) {
    let (addr, mut accepted) = raw_backend().await;
    let toml = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        simple_config(&[addr], &format!("[defaults]\n{DEFAULTS}\n"))
    );
    let proxy = start_proxy(&toml).await;
    let (client, answer) = RawWs::connect(proxy.addr("main"), &upgrade_request("/echo", "")).await;
    assert_eq!(answer.status, 101);
    let backend = within(accepted.recv()).await.expect("backend connection");
    (proxy, client, backend)
}

#[tokio::test]
async fn client_reset_behind_a_stuck_backend_closes_at_once_as_the_clients() {
    let (proxy, mut client, mut backend) = setup().await;
    fill(&mut client.stream, true).await;
    reset(client.stream);
    assert_ended_as(&proxy, "1001", "client").await;
    // The backend, reading again, finds its connection closed; a close
    // frame, if the frame in progress ended, says 1001.
    let mut frames = 0;
    while let Some(frame) = backend.recv().await {
        frames += 1;
        if frame.opcode == 0x8 {
            assert_eq!(frame.close_code(), 1001);
        }
        assert!(frames < 100_000);
    }
}

#[tokio::test]
async fn backend_reset_behind_a_stuck_client_closes_at_once_as_the_backends() {
    let (proxy, client, mut backend) = setup().await;
    fill(&mut backend.stream, false).await;
    reset(backend.stream);
    assert_ended_as(&proxy, "1014", "backend").await;
    drop(client);
}

/// The same over TLS: the proxy watches the TCP socket under the client's
/// TLS session, so a reset is seen although rustls holds the stream.
#[tokio::test]
async fn client_reset_over_tls_behind_a_stuck_backend_closes_at_once() {
    let ca = TestCa::new();
    let cert = ca.issue("server", &["localhost"]);
    let (addr, mut accepted) = raw_backend().await;
    let toml = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n[defaults]\n{DEFAULTS}\n\n\
         [[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [[route]]\npath_prefix = \"/echo\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [{{ addr = \"{addr}\" }}]\n",
        cert.cert.display(),
        cert.key.display(),
    );
    let proxy = start_proxy(&toml).await;
    let mut tls = ca.connect(proxy.addr("main"), "localhost").await;
    within(tls.write_all(upgrade_request("/echo", "").as_bytes()))
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(within(tls.read(&mut byte)).await.unwrap(), 1);
        head.push(byte[0]);
        assert!(head.len() < 4096);
    }
    assert_eq!(parse_answer(&head).status, 101);
    let _backend = within(accepted.recv()).await.expect("backend connection");

    fill(&mut tls, true).await;
    let (tcp, _) = tls.into_inner();
    reset(tcp);
    assert_ended_as(&proxy, "1001", "client").await;
}
