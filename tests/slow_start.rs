//! Slow start over real sockets: a backend a reload adds takes a ramping
//! share of new connections instead of all of them, and `/status` shows
//! the share.

mod common;

use common::*;

fn config(backends: &[&NamedBackend]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ addr = \"{}\" }}", b.addr))
        .collect();
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n\
         [[route]]\npool = \"p\"\n\n[[pool]]\nname = \"p\"\nslow_start = \"1h\"\nbackends = [{}]\n",
        list.join(", ")
    )
}

/// Two backends hold 40 connections; a third is added by reload. Least
/// connections alone would send it every new connection until it caught
/// up (about 80 of the next 200); ramping from 10%, it takes about 20.
/// The draws are a hashed counter, so the count is the same on every run;
/// the bound is four standard deviations of a fair 10% coin either way.
#[tokio::test]
async fn a_backend_added_by_reload_ramps_from_ten_percent() {
    let (a, b, c) = (
        NamedBackend::start("a").await,
        NamedBackend::start("b").await,
        NamedBackend::start("c").await,
    );
    let dir = TempDir::new("slow-start");
    let path = dir.0.join("wsgate.toml");
    std::fs::write(&path, config(&[&a, &b])).unwrap();
    let (proxy, server) = start_proxy_file(&path).await;
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(connect_named(proxy.addr("main"), "/", &[]).await);
    }
    write_atomically(&path, &config(&[&a, &b, &c]));
    server.reload().await.expect("valid");
    let mut names = Vec::new();
    for _ in 0..200 {
        let (ws, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
        names.push(name);
        held.push((ws, String::new(), http::HeaderMap::new()));
    }
    let on_c = names.iter().filter(|n| *n == "c").count();
    assert!((5..=45).contains(&on_c), "{on_c} of 200 on the new backend");
    let admin_addr = proxy.shared.admin_addr.expect("admin listener");
    let (status, body) = admin(admin_addr, "GET", "/status").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let backends = json["pools"][0]["backends"].as_array().unwrap();
    let share = |addr: std::net::SocketAddr| {
        let b = backends
            .iter()
            .find(|b| b["addr"] == addr.to_string())
            .unwrap();
        b["slow_start_share"].as_f64().unwrap()
    };
    assert_eq!(share(a.addr), 1.0);
    let ramping = share(c.addr);
    assert!((0.1..0.11).contains(&ramping), "{ramping}");
}
