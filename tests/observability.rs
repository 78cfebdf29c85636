//! Metrics, /status and the access log, checked against a known amount of
//! traffic through the real proxy.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

fn with_admin(toml: &str) -> String {
    format!("[admin]\nbind = \"127.0.0.1:0\"\n\n{toml}")
}

async fn scrape(proxy: &Proxy) -> String {
    let (code, body) = admin(proxy.shared.admin_addr.unwrap(), "GET", "/metrics").await;
    assert_eq!(code, 200);
    body
}

/// Waits (bounded) until no relayed connection is open, so that every
/// connection has flushed its counts.
async fn settle(proxy: &Proxy) {
    for _ in 0..400 {
        let s = scrape(proxy).await;
        if sample(&s, "wsgate_connections_active", &[]) == 0.0 && proxy.shared.tracker.open() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("connections never settled");
}

#[tokio::test]
async fn metrics_count_exactly_what_crossed() {
    let backend = echo_backend().await;
    let proxy = start_proxy(&with_admin(&simple_config(&[backend.addr], ""))).await;
    let before = scrape(&proxy).await;
    assert_eq!(sample(&before, "wsgate_connections_total", &[]), 0.0);

    for _ in 0..3 {
        let mut ws = ws_connect(proxy.addr("main"), "/echo").await;
        for i in 0..5 {
            let text = format!("message-{i:02}");
            ws.send(Message::text(text.clone())).await.unwrap();
            assert_eq!(
                within(ws.next()).await.unwrap().unwrap(),
                Message::text(text)
            );
        }
        let frame = CloseFrame {
            code: 1000.into(),
            reason: "".into(),
        };
        ws.close(Some(frame)).await.unwrap();
        while let Some(Ok(_)) = within(ws.next()).await {}
    }
    assert_eq!(
        raw_request(
            proxy.addr("main"),
            upgrade_request("/nowhere", "").as_bytes()
        )
        .await
        .status,
        404
    );
    let no_upgrade = upgrade_request("/echo", "").replacen("Upgrade: websocket\r\n", "", 1);
    assert_eq!(
        raw_request(proxy.addr("main"), no_upgrade.as_bytes())
            .await
            .status,
        426
    );
    settle(&proxy).await;

    let after = scrape(&proxy).await;
    let backend_label = format!("backend=\"{}\"", backend.addr);
    assert_eq!(
        sample(
            &after,
            "wsgate_connections_total",
            &[&backend_label, r#"pool="p""#, r#"route="*/echo""#]
        ),
        3.0
    );
    let c2b = r#"direction="client_to_backend""#;
    let b2c = r#"direction="backend_to_client""#;
    assert_eq!(sample(&after, "wsgate_messages_total", &[c2b]), 15.0);
    assert_eq!(sample(&after, "wsgate_messages_total", &[b2c]), 15.0);
    // Per connection: five masked 10-byte text frames (2 + 4 + 10 bytes)
    // and a masked close with a code (2 + 4 + 2); back: five unmasked text
    // frames (2 + 10) and the close answer (2 + 2).
    assert_eq!(
        sample(&after, "wsgate_bytes_total", &[c2b]),
        3.0 * (5.0 * 16.0 + 8.0)
    );
    assert_eq!(
        sample(&after, "wsgate_bytes_total", &[b2c]),
        3.0 * (5.0 * 12.0 + 4.0)
    );
    assert_eq!(
        sample(
            &after,
            "wsgate_closes_total",
            &[r#"code="1000""#, r#"initiator="client""#]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &after,
            "wsgate_handshake_rejections_total",
            &[r#"status="404""#]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "wsgate_handshake_rejections_total",
            &[r#"status="426""#]
        ),
        1.0
    );
    assert_eq!(
        sample(&after, "wsgate_handshake_duration_seconds_count", &[]),
        3.0
    );
    assert_eq!(
        sample(&after, "wsgate_connection_duration_seconds_count", &[]),
        3.0
    );
    assert_eq!(sample(&after, "wsgate_backend_up", &[&backend_label]), 1.0);
    assert_eq!(
        sample(
            &after,
            "wsgate_backend_connections_active",
            &[&backend_label]
        ),
        0.0
    );
}

#[tokio::test]
async fn closes_are_counted_by_code_and_initiator() {
    let backend = echo_backend().await;
    let toml = simple_config(&[backend.addr], "[defaults]\nmax_message_bytes = 100\n");
    let proxy = start_proxy(&with_admin(&toml)).await;
    // The backend closes first with 1011.
    let mut ws = ws_connect(proxy.addr("main"), "/echo").await;
    ws.send(Message::text("close:1011")).await.unwrap();
    while let Some(Ok(_)) = within(ws.next()).await {}
    drop(ws);
    // The client breaks the size limit: the proxy closes with 1009.
    let mut ws = ws_connect(proxy.addr("main"), "/echo").await;
    ws.send(Message::binary(vec![0; 200])).await.unwrap();
    while let Some(Ok(_)) = within(ws.next()).await {}
    drop(ws);
    settle(&proxy).await;
    let s = scrape(&proxy).await;
    let backend_label = format!("backend=\"{}\"", backend.addr);
    assert_eq!(
        sample(
            &s,
            "wsgate_closes_total",
            &[r#"code="1011""#, r#"initiator="backend""#, &backend_label]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &s,
            "wsgate_closes_total",
            &[r#"code="1009""#, r#"initiator="client""#]
        ),
        1.0
    );
}

#[tokio::test]
async fn status_shows_a_backend_going_down_and_a_reload() {
    let up = NamedBackend::start("up").await;
    let doomed = NamedBackend::start("doomed").await;
    let dir = TempDir::new("status");
    let path = dir.0.join("wsgate.toml");
    let text = with_admin(&pool_config(
        &[(up.addr, 1), (doomed.addr, 2)],
        "health_check = { kind = \"tcp\", interval = \"100ms\", timeout = \"100ms\" }",
    ));
    std::fs::write(&path, &text).unwrap();
    let (proxy, server) = start_proxy_file(&path).await;
    let admin_addr = proxy.shared.admin_addr.unwrap();
    let doomed_addr = doomed.addr.to_string();
    let backend_up = |status: &serde_json::Value| {
        status["pools"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["addr"] == doomed_addr.as_str())
            .map(|b| b["up"] == true)
            .unwrap()
    };
    let (_, body) = admin(admin_addr, "GET", "/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["version"], 1);
    assert_eq!(status["listeners"][0]["tls"], false);
    assert_eq!(status["routes"][0]["path_prefix"], "/");
    assert_eq!(status["pools"][0]["balance"], "least_connections");
    assert_eq!(status["pools"][0]["backends"][1]["weight"], 2);
    assert!(status["loaded_at"].as_str().unwrap().ends_with('Z'));

    doomed.kill().await;
    let mut seen_down = false;
    for _ in 0..200 {
        let (_, body) = admin(admin_addr, "GET", "/status").await;
        if !backend_up(&serde_json::from_str(&body).unwrap()) {
            seen_down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_down, "the health check marked it down");
    let (_, scrape) = admin(admin_addr, "GET", "/metrics").await;
    assert_eq!(
        sample(
            &scrape,
            "wsgate_backend_up",
            &[&format!("backend=\"{doomed_addr}\"")]
        ),
        0.0
    );

    server.reload().await.unwrap();
    let (_, body) = admin(admin_addr, "GET", "/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["version"], 2);
    assert!(!backend_up(&status), "health state carries over a reload");
}

#[tokio::test]
async fn the_access_log_has_one_line_per_connection_and_rejection() {
    let backend = echo_backend().await;
    let dir = TempDir::new("access");
    let path = dir.0.join("wsgate.toml");
    std::fs::write(&path, simple_config(&[backend.addr], "")).unwrap();
    let mut bin = Binary::start(&["--config", path.to_str().unwrap(), "--log-format", "json"]);
    let line = bin.wait_line(&["listening", "local"]).await;
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr: std::net::SocketAddr = parsed["fields"]["local"].as_str().unwrap().parse().unwrap();

    let req = upgrade_request("/echo/room", "Sec-WebSocket-Protocol: chat\r\n");
    let (mut ws, answer) = RawWs::connect(addr, &req).await;
    assert_eq!(answer.status, 101);
    ws.send(true, 0x1, b"hello").await;
    ws.recv().await.unwrap();
    ws.send_close(1000, "bye").await;
    ws.recv_close().await.unwrap();
    assert!(ws.closed().await);
    assert_eq!(
        raw_request(addr, upgrade_request("/nowhere", "").as_bytes())
            .await
            .status,
        404
    );

    let closed = bin.wait_line(&["wsgate::access", "closed"]).await;
    let closed: serde_json::Value = serde_json::from_str(&closed).unwrap();
    let f = &closed["fields"];
    assert_eq!(f["listener"], "main");
    assert_eq!(f["host"], "localhost");
    assert_eq!(f["path"], "/echo/room");
    assert_eq!(f["route"], "*/echo");
    assert_eq!(f["backend"], backend.addr.to_string());
    assert_eq!(f["subprotocol"], "chat");
    assert_eq!(f["messages_in"], 1);
    assert_eq!(f["messages_out"], 1);
    assert_eq!(f["close_code"], 1000);
    assert_eq!(f["closed_by"], "client");
    assert!(f["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(f["duration_ms"].is_u64() && f["bytes_in"].as_u64().unwrap() > 0);

    let rejected = bin.wait_line(&["wsgate::access", "rejected"]).await;
    let rejected: serde_json::Value = serde_json::from_str(&rejected).unwrap();
    assert_eq!(rejected["fields"]["status"], 404);
    assert_eq!(rejected["fields"]["path"], "/nowhere");
    assert!(!rejected["fields"]["reason"].as_str().unwrap().is_empty());
}
