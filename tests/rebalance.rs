//! Gradual rebalancing over real sockets: 300 connections on two backends,
//! a third added by reload; the proxy moves the newest connections of the
//! full backends with 1012, at no more than the configured rate, until
//! every backend is within tolerance, and touches nothing on the new one.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const RATE: usize = 50;

fn config(backends: &[&NamedBackend]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ addr = \"{}\" }}", b.addr))
        .collect();
    format!(
        "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nrebalance = {{ tolerance = 0.2, max_closes_per_second = {RATE} }}\n\
         backends = [{}]\n",
        list.join(", ")
    )
}

/// A client that reconnects whenever the proxy closes it with 1012, and
/// reports each such close with the backend it was on.
async fn client(addr: std::net::SocketAddr, moved: mpsc::UnboundedSender<(Instant, String)>) {
    let (mut ws, mut name, _) = connect_named(addr, "/", &[]).await;
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) if u16::from(frame.code) == 1012 => {
                let _ = moved.send((Instant::now(), name.clone()));
                drop(ws);
                (ws, name, _) = connect_named(addr, "/", &[]).await;
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_third_backend_is_filled_by_moving_the_newest_connections() {
    let (a, b, c) = (
        NamedBackend::start("a").await,
        NamedBackend::start("b").await,
        NamedBackend::start("c").await,
    );
    let dir = TempDir::new("rebalance");
    let path = dir.0.join("wsgate.toml");
    std::fs::write(&path, config(&[&a, &b])).unwrap();
    let (proxy, server) = start_proxy_file(&path).await;
    let (tx, mut moved) = mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for _ in 0..300 {
        clients.push(tokio::spawn(client(proxy.addr("main"), tx.clone())));
    }
    let active = |addr| {
        proxy
            .shared
            .registry
            .get("p", addr)
            .map_or(0, |s| s.active())
    };
    for _ in 0..2000 {
        if active(a.addr) + active(b.addr) == 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!((active(a.addr), active(b.addr)), (150, 150));
    write_atomically(&path, &config(&[&a, &b, &c]));
    server.reload().await.expect("valid");
    let started = Instant::now();
    // 60 moves at 50 a second: about 1.2 s; bounded at 10 s.
    let mut settled = false;
    for _ in 0..1000 {
        let (na, nb, nc) = (active(a.addr), active(b.addr), active(c.addr));
        if na <= 120 && nb <= 120 && na + nb + nc == 300 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        settled,
        "not within tolerance: {} {} {}",
        active(a.addr),
        active(b.addr),
        active(c.addr)
    );
    let elapsed = started.elapsed();
    // Nothing more moves once within tolerance.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closes = Vec::new();
    while let Ok(close) = moved.try_recv() {
        closes.push(close);
    }
    // 150/150/0 to 120/120/60 needs exactly 60.
    assert!((60..=66).contains(&closes.len()), "{} closes", closes.len());
    assert!(
        closes.iter().all(|(_, name)| name != "c"),
        "a connection on the new backend moved"
    );
    for (i, (at, _)) in closes.iter().enumerate() {
        let in_a_second = closes[i..]
            .iter()
            .take_while(|(later, _)| *later - *at < Duration::from_secs(1))
            .count();
        // The rate, plus one for a tick landing on the window's edge.
        assert!(
            in_a_second <= RATE + 1,
            "{in_a_second} closes within a second"
        );
    }
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    for client in clients {
        client.abort();
    }
}
