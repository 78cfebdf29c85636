//! Messages through the real proxy: sizes around every length encoding,
//! fragments, control frames, closes both ways, and many connections at once.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

async fn setup() -> (Proxy, Backend) {
    let backend = echo_backend().await;
    let toml = simple_config(
        &[backend.addr],
        "[defaults]\nmax_message_bytes = 2097152\nmax_frame_bytes = 2097152\n",
    );
    (start_proxy(&toml).await, backend)
}

#[tokio::test]
async fn messages_of_every_length_encoding_text_and_binary() {
    let (proxy, _backend) = setup().await;
    let mut ws = ws_connect(proxy.addr("main"), "/echo").await;
    for len in [0usize, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
        let binary: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        ws.send(Message::binary(binary.clone())).await.unwrap();
        assert_eq!(
            within(ws.next()).await.unwrap().unwrap(),
            Message::binary(binary),
            "binary {len}"
        );
        let text: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(
            within(ws.next()).await.unwrap().unwrap(),
            Message::text(text),
            "text {len}"
        );
    }
}

#[tokio::test]
async fn fragmented_message_with_a_ping_between_fragments() {
    let (proxy, _backend) = setup().await;
    let (mut ws, answer) = RawWs::connect(proxy.addr("main"), &upgrade_request("/echo", "")).await;
    assert_eq!(answer.status, 101);
    ws.send(false, 0x1, b"hel").await;
    ws.send(false, 0x0, b"lo ").await;
    ws.send(true, 0x9, b"are you there").await;
    ws.send(true, 0x0, b"world").await;
    let pong = ws.recv().await.unwrap();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (0xA, &b"are you there"[..])
    );
    assert!(!pong.masked, "frames to the client are not masked");
    let msg = ws.recv().await.unwrap();
    assert_eq!(
        (msg.opcode, msg.fin, msg.payload.as_slice()),
        (0x1, true, &b"hello world"[..])
    );
}

#[tokio::test]
async fn close_code_and_reason_from_the_client_reach_the_backend_and_back() {
    let (proxy, _backend) = setup().await;
    let (mut ws, _) = RawWs::connect(proxy.addr("main"), &upgrade_request("/echo", "")).await;
    ws.send_close(4000, "client done").await;
    let close = ws.recv_close().await.expect("close answered");
    assert_eq!(close.close_code(), 4000);
    assert_eq!(&close.payload[2..], b"client done");
    assert!(ws.closed().await);
}

#[tokio::test]
async fn close_code_and_reason_from_the_backend_reach_the_client() {
    let (proxy, _backend) = setup().await;
    let (mut ws, _) = RawWs::connect(proxy.addr("main"), &upgrade_request("/echo", "")).await;
    ws.send(true, 0x1, b"close:4321").await;
    let close = ws.recv_close().await.expect("backend's close");
    assert_eq!(close.close_code(), 4321);
    assert_eq!(&close.payload[2..], b"backend says bye");
    ws.send_close(4321, "").await;
    assert!(ws.closed().await);
}

#[tokio::test]
async fn two_hundred_connections_keep_every_message_intact_and_in_order() {
    let (proxy, _backend) = setup().await;
    let addr = proxy.addr("main");
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..200u32 {
        tasks.spawn(async move {
            let mut ws = ws_connect(addr, "/echo").await;
            for seq in 0..100u32 {
                ws.send(Message::text(format!(
                    "{c}:{seq}:{}",
                    "x".repeat((seq * 7 % 300) as usize)
                )))
                .await
                .unwrap();
            }
            for seq in 0..100u32 {
                let expected = format!("{c}:{seq}:{}", "x".repeat((seq * 7 % 300) as usize));
                assert_eq!(
                    within(ws.next()).await.unwrap().unwrap(),
                    Message::text(expected)
                );
            }
            ws.close(None).await.unwrap();
        });
    }
    while let Some(r) = within(tasks.join_next()).await {
        r.unwrap();
    }
}
