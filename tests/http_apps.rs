//! HTTP beside WebSocket as applications use it: balancing and the sticky
//! cookie across polling requests and the upgrade, an application's own
//! cookie as the key, GraphQL-shaped and SignalR-shaped routes, metrics,
//! `/status`, and memory while huge bodies stream through the binary.

mod common;
mod http_kit;

use std::collections::HashSet;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http_kit::*;
use tokio_tungstenite::tungstenite::Message;

fn sticky_cookie_config(backends: &[std::net::SocketAddr], sticky: &str) -> String {
    http_config(
        backends,
        "",
        &format!("balance = \"sticky\"\nsticky = {sticky}"),
    )
}

#[tokio::test]
async fn the_first_answer_sets_the_sticky_cookie_and_later_requests_and_the_upgrade_follow_it() {
    let names = ["a", "b", "c"];
    let mut addrs = Vec::new();
    for n in names {
        addrs.push(http_backend(n).await.addr);
    }
    let proxy = start_proxy(&sticky_cookie_config(
        &addrs,
        "{ source = \"cookie\", name = \"lb\" }",
    ))
    .await;
    for _ in 0..6 {
        let mut c = Conn::open(proxy.addr("main")).await;
        c.send(get("/", "").as_bytes()).await;
        let first = c.response("GET").await.unwrap();
        let cookie = first.header("set-cookie").expect("a cookie").to_string();
        assert!(
            cookie.starts_with("lb=") && cookie.contains("Path=/; HttpOnly"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().unwrap().to_string();
        let pinned = first.header("x-backend").unwrap().to_string();
        for _ in 0..5 {
            c.send(get("/", &format!("Cookie: {pair}\r\n")).as_bytes())
                .await;
            let r = c.response("GET").await.unwrap();
            assert_eq!(r.header("x-backend"), Some(pinned.as_str()));
            assert_eq!(
                r.header("set-cookie"),
                None,
                "a valid cookie is not set again"
            );
        }
        let (_ws, name, headers) =
            connect_named(proxy.addr("main"), "/socket", &[("cookie", &pair)]).await;
        assert_eq!(
            name, pinned,
            "the upgrade reaches the polling requests' backend"
        );
        assert!(headers.get("set-cookie").is_none());
    }
}

#[tokio::test]
async fn an_application_cookie_is_hashed_and_wsgate_sets_none() {
    let mut addrs = Vec::new();
    for n in ["a", "b", "c"] {
        addrs.push(http_backend(n).await.addr);
    }
    let proxy = start_proxy(&sticky_cookie_config(
        &addrs,
        "{ source = \"cookie\", name = \"session\", issue = false }",
    ))
    .await;
    let mut c = Conn::open(proxy.addr("main")).await;
    c.send(get("/", "").as_bytes()).await;
    let r = c.response("GET").await.unwrap();
    assert_eq!(r.header("set-cookie"), None, "no cookie from wsgate");
    let mut spread = HashSet::new();
    for user in 0..24 {
        let cookie = format!("Cookie: theme=dark; session=user-{user}\r\n");
        c.send(get("/", &cookie).as_bytes()).await;
        let first = c.response("GET").await.unwrap();
        let backend = first.header("x-backend").unwrap().to_string();
        for _ in 0..3 {
            c.send(get("/", &cookie).as_bytes()).await;
            let again = c.response("GET").await.unwrap();
            assert_eq!(again.header("x-backend"), Some(backend.as_str()));
            assert_eq!(again.header("set-cookie"), None);
        }
        spread.insert(backend);
    }
    assert_eq!(spread.len(), 3, "keys spread over every backend");
}

#[tokio::test]
async fn a_request_in_flight_counts_as_an_active_connection() {
    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let proxy = start_proxy(&http_config(&[a.addr, b.addr], "", "")).await;
    let mut held = Conn::open(proxy.addr("main")).await;
    held.send(get("/hold?n=3000", "").as_bytes()).await;
    // Wait until the held request is in flight on one of the two.
    let states = [
        proxy.shared.registry.get("p", a.addr).unwrap(),
        proxy.shared.registry.get("p", b.addr).unwrap(),
    ];
    let mut busy = None;
    for _ in 0..1000 {
        busy = states.iter().position(|s| s.http_in_flight() == 1);
        if busy.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let busy = busy.expect("the held request is in flight");
    assert_eq!(states[busy].active(), 1);
    let other = ["a", "b"][1 - busy];
    for _ in 0..4 {
        let mut c = Conn::open(proxy.addr("main")).await;
        c.send(get("/", "").as_bytes()).await;
        let r = c.response("GET").await.unwrap();
        assert_eq!(r.header("x-backend"), Some(other));
    }
    let r = held.response("GET").await.unwrap();
    assert_eq!(r.text(), format!("held by {}", ["a", "b"][busy]));
}

#[tokio::test]
async fn a_graphql_route_takes_queries_as_posts_and_subscriptions_as_upgrades_on_one_path() {
    let b = http_backend("gql").await;
    let toml = format!(
        "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\npath_prefix = \"/graphql\"\npool = \"api\"\nhttp = \"proxy\"\n\n[[pool]]\nname = \"api\"\nbackends = [{{ addr = \"{}\" }}]\n",
        b.addr
    );
    let proxy = start_proxy(&toml).await;
    let mut c = Conn::open(proxy.addr("main")).await;
    let query = "{\"query\":\"{ hello }\"}";
    c.send(
        format!(
            "POST /graphql HTTP/1.1\r\nHost: api.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{query}",
            query.len()
        )
        .as_bytes(),
    )
    .await;
    let r = c.response("POST").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("hello") && r.text().contains("gql"),
        "{}",
        r.text()
    );
    let (mut ws, name, _) = connect_named(
        proxy.addr("main"),
        "/graphql",
        &[("sec-websocket-protocol", "graphql-transport-ws")],
    )
    .await;
    assert_eq!(name, "gql");
    ws.send(Message::text("{\"type\":\"connection_init\"}"))
        .await
        .unwrap();
    let echoed = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed.to_text().unwrap(), "{\"type\":\"connection_init\"}");
}

#[tokio::test]
async fn a_signalr_style_negotiate_post_then_websocket_reach_the_same_backend() {
    let mut addrs = Vec::new();
    for n in ["a", "b", "c"] {
        addrs.push(http_backend(n).await.addr);
    }
    let proxy = start_proxy(&sticky_cookie_config(
        &addrs,
        "{ source = \"cookie\", name = \"affinity\" }",
    ))
    .await;
    for _ in 0..6 {
        let mut c = Conn::open(proxy.addr("main")).await;
        c.send(b"POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n\r\n")
            .await;
        let r = c.response("POST").await.unwrap();
        let token = r.text();
        let owner = token
            .split("token-")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .unwrap()
            .to_string();
        let cookie = r.header("set-cookie").unwrap();
        let pair = cookie.split(';').next().unwrap();
        let (_ws, name, _) = connect_named(
            proxy.addr("main"),
            &format!("/hub?id=token-{owner}"),
            &[("cookie", pair)],
        )
        .await;
        assert_eq!(name, owner);
    }
}

#[tokio::test]
async fn requests_are_counted_in_metrics_and_in_flight_shows_in_status() {
    let b = http_backend("a").await;
    let toml = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        http_config(&[b.addr], "", "")
    );
    let proxy = start_proxy(&toml).await;
    let admin_addr = proxy.shared.admin_addr.unwrap();
    let mut c = Conn::open(proxy.addr("main")).await;
    for _ in 0..3 {
        c.send(get("/", "").as_bytes()).await;
        c.response("GET").await.unwrap();
    }
    let mut held = Conn::open(proxy.addr("main")).await;
    held.send(get("/hold?n=2000", "").as_bytes()).await;
    let mut in_flight = false;
    for _ in 0..500 {
        let (_, status) = admin(admin_addr, "GET", "/status").await;
        if status.contains("\"http_in_flight\":1") {
            in_flight = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(in_flight, "/status shows the held request");
    let (_, metrics) = admin(admin_addr, "GET", "/metrics").await;
    assert!(
        metrics.contains("wsgate_http_requests_total{pool=\"p\",code=\"200\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("wsgate_http_requests_in_flight{pool=\"p\"} 1"));
    assert!(metrics.contains("wsgate_http_request_duration_seconds_count{pool=\"p\"} 3"));
    held.response("GET").await.unwrap();
}

#[tokio::test]
async fn over_tls_the_backend_is_told_https_and_the_sticky_cookie_is_secure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = http_backend("a").await;
    let ca = TestCa::new();
    let cert = ca.issue("server", &["localhost"]);
    let toml = format!(
        "[defaults]\nhandshake_timeout = \"5s\"\n\n[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n\n[[route]]\npath_prefix = \"/\"\npool = \"p\"\nhttp = \"proxy\"\n\n[[pool]]\nname = \"p\"\nbalance = \"sticky\"\nsticky = {{ source = \"cookie\" }}\nbackends = [{{ addr = \"{}\" }}]\n",
        cert.cert.display(),
        cert.key.display(),
        b.addr
    );
    let proxy = start_proxy(&toml).await;
    let mut tls = ca.connect(proxy.addr("main"), "localhost").await;
    tls.write_all(b"GET /headers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    // The answer is complete whether or not a close_notify ends it.
    let _ = within(tls.read_to_end(&mut out)).await;
    let answer = parse_answer(&out);
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.contains("x-forwarded-proto: https\n"),
        "{}",
        answer.body
    );
    let cookie = answer.header("set-cookie").unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
}
