//! Hot reload through the real proxy: every trigger, what survives, what
//! is refused, and backend draining.

mod common;

use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A configuration with listener `main` and admin on port 0, one route per
/// `(path_prefix, pool)`, one pool per `(name, backends)`, then `extra`.
fn config(routes: &[(&str, &str)], pools: &[(&str, &[SocketAddr])], extra: &str) -> String {
    let mut out = String::from(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n",
    );
    for (prefix, pool) in routes {
        out.push_str(&format!(
            "\n[[route]]\npath_prefix = \"{prefix}\"\npool = \"{pool}\"\n"
        ));
    }
    for (name, backends) in pools {
        let list: Vec<String> = backends
            .iter()
            .map(|a| format!("{{ addr = \"{a}\" }}"))
            .collect();
        out.push_str(&format!(
            "\n[[pool]]\nname = \"{name}\"\nbackends = [{}]\n",
            list.join(", ")
        ));
    }
    out.push_str(extra);
    out
}

async fn echo_once(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::text(text)
    );
}

async fn status(proxy: &Proxy) -> serde_json::Value {
    let (code, body) = admin(proxy.shared.admin_addr.unwrap(), "GET", "/status").await;
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

/// Waits (bounded) until /status reports `version`.
async fn wait_version(proxy: &Proxy, version: u64) {
    for _ in 0..400 {
        if status(proxy).await["version"] == version {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("version {version} never reached: {}", status(proxy).await);
}

#[tokio::test]
async fn post_reload_switches_new_connections_and_leaves_open_ones_alone() {
    let a = NamedBackend::start("a").await;
    let b = NamedBackend::start("b").await;
    let dir = TempDir::new("reload-post");
    let path = dir.0.join("wsgate.toml");
    std::fs::write(&path, config(&[("/", "pa")], &[("pa", &[a.addr])], "")).unwrap();
    let (proxy, _server) = start_proxy_file(&path).await;
    let (mut open, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
    assert_eq!(name, "a");

    std::fs::write(
        &path,
        config(&[("/", "pb")], &[("pa", &[a.addr]), ("pb", &[b.addr])], ""),
    )
    .unwrap();
    let (code, body) = admin(proxy.shared.admin_addr.unwrap(), "POST", "/reload").await;
    assert_eq!((code, body.trim()), (200, r#"{"version":2}"#));
    let (_new, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
    assert_eq!(name, "b", "new connections use the new table at once");
    echo_once(&mut open, "the open connection is untouched").await;

    // A reload of an unchanged file still counts and bumps the version.
    let (code, body) = admin(proxy.shared.admin_addr.unwrap(), "POST", "/reload").await;
    assert_eq!((code, body.trim()), (200, r#"{"version":3}"#));
}

#[tokio::test]
async fn an_atomic_rename_is_seen_by_the_watcher() {
    let a = NamedBackend::start("a").await;
    let b = NamedBackend::start("b").await;
    let dir = TempDir::new("reload-rename");
    let path = dir.0.join("wsgate.toml");
    std::fs::write(&path, config(&[("/", "pa")], &[("pa", &[a.addr])], "")).unwrap();
    let (proxy, _server) = start_proxy_file(&path).await;
    wsgate::reload::watch_file(proxy.shared.clone()).expect("watching");
    write_atomically(&path, &config(&[("/", "pb")], &[("pb", &[b.addr])], ""));
    wait_version(&proxy, 2).await;
    let (_ws, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
    assert_eq!(name, "b");
}

#[tokio::test]
async fn a_busy_folder_does_not_hold_back_a_reload() {
    let a = NamedBackend::start("a").await;
    let b = NamedBackend::start("b").await;
    let dir = TempDir::new("reload-busy");
    let path = dir.0.join("wsgate.toml");
    std::fs::write(&path, config(&[("/", "pa")], &[("pa", &[a.addr])], "")).unwrap();
    let (proxy, _server) = start_proxy_file(&path).await;
    wsgate::reload::watch_file(proxy.shared.clone()).expect("watching");
    // A log file beside the configuration, written every 50 ms for as long
    // as the test runs (bounded: 30 s at most).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = std::thread::spawn({
        let stop = stop.clone();
        let log = dir.0.join("access.log");
        move || {
            for i in 0..600 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::fs::write(&log, format!("line {i}\n")).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    write_atomically(&path, &config(&[("/", "pb")], &[("pb", &[b.addr])], ""));
    wait_version(&proxy, 2).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let (_ws, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
    assert_eq!(name, "b");
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_seen_by_the_watcher() {
    let a = NamedBackend::start("a").await;
    let b = NamedBackend::start("b").await;
    let dir = TempDir::new("reload-configmap");
    // The layout Kubernetes mounts: wsgate.toml -> ..data/wsgate.toml,
    // ..data -> a timestamped folder, swapped by renaming a new link.
    let first = dir.0.join("..2026_01");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(
        first.join("wsgate.toml"),
        config(&[("/", "pa")], &[("pa", &[a.addr])], ""),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_01", dir.0.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/wsgate.toml", dir.0.join("wsgate.toml")).unwrap();
    let path = dir.0.join("wsgate.toml");
    let (proxy, _server) = start_proxy_file(&path).await;
    wsgate::reload::watch_file(proxy.shared.clone()).expect("watching");

    let second = dir.0.join("..2026_02");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(
        second.join("wsgate.toml"),
        config(&[("/", "pb")], &[("pb", &[b.addr])], ""),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_02", dir.0.join("..data_tmp")).unwrap();
    std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
    wait_version(&proxy, 2).await;
    let (_ws, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
    assert_eq!(name, "b");
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let a = NamedBackend::start("a").await;
    let dir = TempDir::new("reload-sighup");
    let path = dir.0.join("wsgate.toml");
    std::fs::write(&path, config(&[("/", "pa")], &[("pa", &[a.addr])], "")).unwrap();
    let mut bin = Binary::start(&["--config", path.to_str().unwrap()]);
    let admin_addr = bin.wait_addr(&["admin listening"], "addr").await;
    // Ready by state: serving and watching, in whichever order it got there.
    admin_until(admin_addr, "GET", "/readyz", CHILD_LIMIT, |code, _| {
        code == 200
    })
    .await;
    bin.wait_line(&["watching the configuration file"]).await;
    bin.signal("HUP");
    admin_until(admin_addr, "GET", "/status", CHILD_LIMIT, |code, body| {
        code == 200 && body.contains(r#""version":2"#)
    })
    .await;
    bin.wait_line(&["configuration reloaded", "version=2"])
        .await;
}

#[tokio::test]
async fn invalid_files_are_refused_whole_and_the_running_configuration_stays() {
    let a = NamedBackend::start("a").await;
    let dir = TempDir::new("reload-invalid");
    let path = dir.0.join("wsgate.toml");
    let good = config(&[("/", "pa")], &[("pa", &[a.addr])], "");
    std::fs::write(&path, &good).unwrap();
    let (proxy, _server) = start_proxy_file(&path).await;
    let admin_addr = proxy.shared.admin_addr.unwrap();
    let (mut open, _, _) = connect_named(proxy.addr("main"), "/", &[]).await;

    let broken = [
        ("syntax error", good.replace("name = \"pa\"", "name = \"pa")),
        ("unknown key", good.replace("[[pool]]", "[[pool]]\nbalnce = \"sticky\"")),
        ("dangling pool", good.replace("pool = \"pa\"", "pool = \"nowhere\"")),
        (
            "missing certificate",
            good.replace(
                "bind = \"127.0.0.1:0\"\n\n[[route]]",
                "bind = \"127.0.0.1:0\"\ntls = { cert = \"missing.pem\", key = \"missing.key\" }\n\n[[route]]",
            ),
        ),
    ];
    for (what, text) in &broken {
        std::fs::write(&path, text).unwrap();
        let (code, body) = admin(admin_addr, "POST", "/reload").await;
        assert_eq!(code, 400, "{what}: {body}");
        let errors: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            !errors["errors"].as_array().unwrap().is_empty(),
            "{what}: {body}"
        );
        let (_ws, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
        assert_eq!(name, "a", "{what}: old routing still serves");
        echo_once(&mut open, what).await;
    }
    let (_, body) = admin(admin_addr, "POST", "/reload").await;
    assert!(body.contains("line"), "errors name their line: {body}");
    assert_eq!(status(&proxy).await["version"], 1);
    let (_, scrape) = admin(admin_addr, "GET", "/metrics").await;
    assert_eq!(
        sample(
            &scrape,
            "wsgate_config_reloads_total",
            &[r#"result="failure""#]
        ),
        5.0
    );
    assert_eq!(
        sample(
            &scrape,
            "wsgate_config_reloads_total",
            &[r#"result="success""#]
        ),
        0.0
    );
}

#[tokio::test]
async fn fifty_streams_survive_a_hundred_reloads_without_gaps_and_new_connections_follow() {
    let a = NamedBackend::start("a").await;
    let b = NamedBackend::start("b").await;
    let c = NamedBackend::start("c").await;
    let dir = TempDir::new("reload-traffic");
    let path = dir.0.join("wsgate.toml");
    let table = |round: usize| {
        let new_pool = if round % 2 == 0 { "pa" } else { "pb" };
        let extra_backends: Vec<SocketAddr> = if round % 3 == 0 {
            vec![c.addr]
        } else {
            vec![c.addr, b.addr]
        };
        let limit = if round % 2 == 0 { 65536 } else { 4096 };
        config(
            &[("/stream", "pa"), ("/new", new_pool), ("/other", "pc")],
            &[
                ("pa", &[a.addr]),
                ("pb", &[b.addr]),
                ("pc", &extra_backends),
            ],
            &format!("\n[defaults]\nmax_message_bytes = {limit}\n"),
        )
    };
    std::fs::write(&path, table(0)).unwrap();
    let (proxy, server) = start_proxy_file(&path).await;
    let addr = proxy.addr("main");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut streams = tokio::task::JoinSet::new();
    for id in 0..50u32 {
        let stop = stop_rx.clone();
        let (mut ws, name, _) = connect_named(addr, "/stream", &[]).await;
        assert_eq!(name, "a");
        streams.spawn(async move {
            let mut seq = 0u64;
            while !*stop.borrow() && seq < 100_000 {
                let text = format!("{id}:{seq}");
                ws.send(Message::text(text.clone())).await.expect("send");
                match within(ws.next()).await {
                    Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), text, "in order, intact"),
                    other => panic!("stream {id} broke at {seq}: {other:?}"),
                }
                seq += 1;
            }
            seq
        });
    }
    for round in 1..=100 {
        std::fs::write(&path, table(round)).unwrap();
        assert_eq!(server.reload().await.expect("valid"), round as u64 + 1);
        let (_ws, name, _) = connect_named(addr, "/new", &[]).await;
        assert_eq!(
            name,
            if round % 2 == 0 { "a" } else { "b" },
            "round {round}"
        );
    }
    stop_tx.send(true).unwrap();
    let mut total = 0;
    while let Some(r) = within(streams.join_next()).await {
        let sent = r.expect("no stream failed");
        assert!(sent > 0);
        total += sent;
    }
    assert!(total >= 50);
}

#[tokio::test]
async fn a_removed_backend_drains_with_closes_spread_over_the_last_quarter() {
    let a = NamedBackend::start("a").await;
    let b = NamedBackend::start("b").await;
    let dir = TempDir::new("reload-drain");
    let path = dir.0.join("wsgate.toml");
    let drain = "\n[defaults]\ndrain_timeout = \"2s\"\n";
    std::fs::write(
        &path,
        config(&[("/", "p")], &[("p", &[a.addr, b.addr])], drain),
    )
    .unwrap();
    let (proxy, server) = start_proxy_file(&path).await;
    let mut on_b = Vec::new();
    let mut on_a = Vec::new();
    for _ in 0..40 {
        let (ws, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
        if name == "b" {
            on_b.push(ws)
        } else {
            on_a.push(ws)
        }
    }
    assert_eq!((on_a.len(), on_b.len()), (20, 20));

    std::fs::write(&path, config(&[("/", "p")], &[("p", &[a.addr])], drain)).unwrap();
    let started = Instant::now();
    server.reload().await.unwrap();
    let pool = &status(&proxy).await["pools"][0]["backends"];
    let draining: Vec<_> = pool
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["draining"] == true)
        .collect();
    assert_eq!(draining.len(), 1, "{pool}");
    assert_eq!(draining[0]["addr"], b.addr.to_string());
    let (_ws, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
    assert_eq!(name, "a", "no new connection reaches a draining backend");

    // Each connection timed by its own task, so that a close read late is
    // not mistaken for a close sent late.
    let mut waiters = tokio::task::JoinSet::new();
    for mut ws in on_b {
        waiters.spawn(async move {
            match within(ws.next()).await {
                Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
                other => panic!("expected a 1001 close, got {other:?}"),
            }
            started.elapsed()
        });
    }
    let mut closes = Vec::new();
    while let Some(r) = within(waiters.join_next()).await {
        closes.push(r.unwrap());
    }
    closes.sort();
    let (first, last) = (closes[0], closes[closes.len() - 1]);
    assert!(
        first >= Duration::from_millis(1450),
        "not before the last quarter: {first:?}"
    );
    // The drain is 2 s; the bound is generous because a loaded machine
    // delays when a close is read, not when it is sent.
    assert!(
        last <= Duration::from_secs(5),
        "by the end of the drain: {last:?}"
    );
    assert!(
        last - first >= Duration::from_millis(150),
        "spread, not at one instant: {closes:?}"
    );
    for ws in on_a.iter_mut() {
        echo_once(ws, "a keeps going").await;
    }
}

#[tokio::test]
async fn listeners_are_added_and_removed_and_unchanged_ones_keep_their_socket() {
    let a = NamedBackend::start("a").await;
    let dir = TempDir::new("reload-listeners");
    let path = dir.0.join("wsgate.toml");
    let one = config(&[("/", "p")], &[("p", &[a.addr])], "");
    std::fs::write(&path, &one).unwrap();
    let (proxy, server) = start_proxy_file(&path).await;
    let main = proxy.addr("main");

    let two = one.replace(
        "\n[[route]]",
        "\n[[listener]]\nname = \"second\"\nbind = \"127.0.0.1:0\"\n\n[[route]]",
    );
    std::fs::write(&path, &two).unwrap();
    server.reload().await.unwrap();
    assert_eq!(server.local_addr("main"), Some(main), "same socket");
    let second = server.local_addr("second").expect("new listener bound");
    let (_ws, name, _) = connect_named(second, "/", &[]).await;
    assert_eq!(name, "a");
    let (_ws, name, _) = connect_named(main, "/", &[]).await;
    assert_eq!(name, "a");

    std::fs::write(&path, &one).unwrap();
    server.reload().await.unwrap();
    assert!(server.local_addr("second").is_none());
    // The accept loop is stopped and its socket closed: connects are refused.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(second).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused);
}

#[tokio::test]
async fn a_new_certificate_takes_effect_on_reload() {
    let a = NamedBackend::start("a").await;
    let ca = TestCa::new();
    let first = ca.issue("first", &["localhost"]);
    let second = ca.issue("second", &["localhost"]);
    let dir = TempDir::new("reload-cert");
    let path = dir.0.join("wsgate.toml");
    let tls = |issued: &Issued| {
        config(&[("/", "p")], &[("p", &[a.addr])], "").replace(
            "name = \"main\"\nbind = \"127.0.0.1:0\"\n",
            &format!(
                "name = \"main\"\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
                issued.cert.display(),
                issued.key.display()
            ),
        )
    };
    std::fs::write(&path, tls(&first)).unwrap();
    let (proxy, server) = start_proxy_file(&path).await;
    let leaf = |s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        s.get_ref().1.peer_certificates().unwrap()[0]
            .as_ref()
            .to_vec()
    };
    assert_eq!(
        leaf(&ca.connect(proxy.addr("main"), "localhost").await),
        first.der
    );
    std::fs::write(&path, tls(&second)).unwrap();
    server.reload().await.unwrap();
    assert_eq!(
        leaf(&ca.connect(proxy.addr("main"), "localhost").await),
        second.der
    );
}
