//! Backend choice through the real proxy: least connections with weights,
//! sticky keys from query, header and cookie, agreement between two
//! instances, retries, health checks, caps.

mod common;

use std::collections::HashMap;

use common::*;
use futures_util::StreamExt;

async fn backends(names: &[&str]) -> Vec<NamedBackend> {
    let mut out = Vec::new();
    for n in names {
        out.push(NamedBackend::start(n).await);
    }
    out
}

/// Opens `n` connections one after another and keeps them open.
async fn hold(
    proxy: &Proxy,
    n: usize,
) -> Vec<(
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    String,
)> {
    let mut held = Vec::new();
    for _ in 0..n {
        let (ws, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
        held.push((ws, name));
    }
    held
}

fn names_of<T>(held: &[(T, String)]) -> Vec<String> {
    held.iter().map(|(_, n)| n.clone()).collect()
}

#[tokio::test]
async fn thirty_held_connections_over_three_equal_backends_are_10_10_10() {
    let b = backends(&["a", "b", "c"]).await;
    let proxy = start_proxy(&pool_config(
        &[(b[0].addr, 1), (b[1].addr, 1), (b[2].addr, 1)],
        "",
    ))
    .await;
    let held = hold(&proxy, 30).await;
    assert_eq!(tally(&names_of(&held), &["a", "b", "c"]), [10, 10, 10]);
}

#[tokio::test]
async fn weights_one_to_two_give_10_and_20() {
    let b = backends(&["light", "heavy"]).await;
    let proxy = start_proxy(&pool_config(&[(b[0].addr, 1), (b[1].addr, 2)], "")).await;
    let held = hold(&proxy, 30).await;
    assert_eq!(tally(&names_of(&held), &["light", "heavy"]), [10, 20]);
}

#[tokio::test]
async fn an_emptied_backend_takes_the_next_ten() {
    let b = backends(&["a", "b", "c"]).await;
    let proxy = start_proxy(&pool_config(
        &[(b[0].addr, 1), (b[1].addr, 1), (b[2].addr, 1)],
        "",
    ))
    .await;
    let mut held = hold(&proxy, 30).await;
    let mut kept = Vec::new();
    for (mut ws, name) in held.drain(..) {
        if name == "b" {
            ws.close(None).await.unwrap();
            while let Some(Ok(_)) = within(ws.next()).await {}
        } else {
            kept.push((ws, name));
        }
    }
    // The proxy frees a slot when its relay ends, a moment after the client
    // saw the close: wait for its own count to say so.
    proxy.wait_active("p", b[1].addr, 0).await;
    let mut fresh = Vec::new();
    for _ in 0..10 {
        fresh.push(connect_named(proxy.addr("main"), "/", &[]).await);
    }
    let names: Vec<String> = fresh.iter().map(|(_, n, _)| n.clone()).collect();
    assert_eq!(tally(&names, &["a", "b", "c"]), [0, 10, 0]);
}

#[tokio::test]
async fn a_thousand_concurrent_connects_over_four_backends_spread_evenly() {
    let b = backends(&["a", "b", "c", "d"]).await;
    let list: Vec<_> = b.iter().map(|x| (x.addr, 1)).collect();
    let proxy = start_proxy(&pool_config(&list, "")).await;
    let addr = proxy.addr("main");
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let mut done = done_rx.clone();
        tasks.spawn(async move {
            let (ws, name, _) = connect_named(addr, "/", &[]).await;
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let _ = done.wait_for(|d| *d).await;
                drop(ws);
                let _ = tx.send(());
            });
            (name, rx)
        });
    }
    let mut names = Vec::new();
    let mut releases = Vec::new();
    while let Some(r) = within(tasks.join_next()).await {
        let (name, rx) = r.unwrap();
        names.push(name);
        releases.push(rx);
    }
    done_tx.send(true).unwrap();
    for count in tally(&names, &["a", "b", "c", "d"]) {
        assert!(
            (225..=275).contains(&count),
            "{:?}",
            tally(&names, &["a", "b", "c", "d"])
        );
    }
}

async fn sticky_proxy(source: &str, name: &str, backends: &[NamedBackend]) -> Proxy {
    let list: Vec<_> = backends.iter().map(|x| (x.addr, 1)).collect();
    let extra =
        format!("balance = \"sticky\"\nsticky = {{ source = \"{source}\", name = \"{name}\" }}");
    start_proxy(&pool_config(&list, &extra)).await
}

#[tokio::test]
async fn the_same_query_key_reaches_the_same_backend_twenty_times() {
    let b = backends(&["a", "b", "c", "d"]).await;
    let proxy = sticky_proxy("query", "user", &b).await;
    let mut seen = HashMap::new();
    for user in ["alice", "bob", "carol"] {
        for _ in 0..20 {
            let (_ws, name, _) =
                connect_named(proxy.addr("main"), &format!("/?user={user}"), &[]).await;
            seen.entry(user).or_insert_with(Vec::new).push(name);
        }
    }
    for (user, names) in seen {
        assert!(names.iter().all(|n| n == &names[0]), "{user}: {names:?}");
    }
}

#[tokio::test]
async fn the_same_header_key_reaches_the_same_backend_twenty_times() {
    let b = backends(&["a", "b", "c"]).await;
    let proxy = sticky_proxy("header", "x-user-id", &b).await;
    let mut first = None;
    for _ in 0..20 {
        let (_ws, name, _) = connect_named(proxy.addr("main"), "/", &[("x-user-id", "42")]).await;
        assert_eq!(first.get_or_insert_with(|| name.clone()), &name);
    }
}

#[tokio::test]
async fn the_cookie_flow_sets_a_cookie_once_and_reconnects_stick() {
    let b = backends(&["a", "b", "c"]).await;
    let proxy = sticky_proxy("cookie", "wsgate_sticky", &b).await;
    let (_ws, first, headers) = connect_named(proxy.addr("main"), "/", &[]).await;
    let set = headers
        .get("set-cookie")
        .expect("the first 101 sets the cookie")
        .to_str()
        .unwrap()
        .to_string();
    assert!(set.starts_with("wsgate_sticky="), "{set}");
    assert!(
        set.contains("Path=/") && set.contains("HttpOnly") && !set.contains("Secure"),
        "{set}"
    );
    for b in &b {
        assert!(
            !set.contains(&b.addr.to_string()),
            "the cookie hides the address"
        );
    }
    let cookie = set.split(';').next().unwrap().to_string();
    for _ in 0..20 {
        let (_ws, name, headers) =
            connect_named(proxy.addr("main"), "/", &[("cookie", &cookie)]).await;
        assert_eq!(name, first);
        assert!(
            headers.get("set-cookie").is_none(),
            "a valid cookie is not set again"
        );
    }
    let (_ws, _, headers) = connect_named(
        proxy.addr("main"),
        "/",
        &[("cookie", "wsgate_sticky=forged")],
    )
    .await;
    assert!(
        headers.get("set-cookie").is_some(),
        "a forged cookie is treated as missing"
    );
}

#[tokio::test]
async fn two_instances_map_two_hundred_keys_alike() {
    let b = backends(&["a", "b", "c", "d", "e"]).await;
    let one = sticky_proxy("query", "k", &b).await;
    let two = sticky_proxy("query", "k", &b).await;
    let mut used = std::collections::HashSet::new();
    for key in 0..200 {
        let path = format!("/?k=key-{key}");
        let (_w1, n1, _) = connect_named(one.addr("main"), &path, &[]).await;
        let (_w2, n2, _) = connect_named(two.addr("main"), &path, &[]).await;
        assert_eq!(n1, n2, "key {key}");
        used.insert(n1);
    }
    assert_eq!(used.len(), 5, "keys spread over every backend");
}

#[tokio::test]
async fn a_killed_backend_is_skipped_without_client_failures_and_returns_after_a_check() {
    let mut b = backends(&["a", "b"]).await;
    let list: Vec<_> = b.iter().map(|x| (x.addr, 1)).collect();
    let check = "health_check = { kind = \"websocket\", path = \"/health\", interval = \"100ms\", timeout = \"100ms\" }";
    let proxy = start_proxy(&pool_config(&list, check)).await;
    let killed = b.remove(0);
    let addr = killed.addr;
    killed.kill().await;
    for _ in 0..20 {
        let (_ws, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
        assert_eq!(name, "b", "no client sees the dead backend");
    }
    let _back = NamedBackend::start_at("a", addr).await;
    // Bounded: interval + timeout is 200 ms; allow many of those.
    let mut returned = false;
    for _ in 0..100 {
        let (_ws, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
        if name == "a" {
            returned = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(returned, "the backend came back after a passing check");
}

#[tokio::test]
async fn all_backends_down_is_502_then_503() {
    let b = backends(&["a", "b"]).await;
    let list: Vec<_> = b.iter().map(|x| (x.addr, 1)).collect();
    let proxy = start_proxy(&pool_config(&list, "")).await;
    for backend in b {
        backend.kill().await;
    }
    let request = upgrade_request("/", "");
    let first = raw_request(proxy.addr("main"), request.as_bytes()).await;
    assert_eq!(first.status, 502, "both tried and failed: {}", first.body);
    let second = raw_request(proxy.addr("main"), request.as_bytes()).await;
    assert_eq!(second.status, 503, "both marked down: {}", second.body);
}

#[tokio::test]
async fn max_connections_is_a_hard_cap() {
    let b = backends(&["only"]).await;
    let toml = pool_config(&[(b[0].addr, 1)], "")
        .replace("weight = 1 }", "weight = 1, max_connections = 2 }");
    let proxy = start_proxy(&toml).await;
    let _held = hold(&proxy, 2).await;
    let answer = raw_request(proxy.addr("main"), upgrade_request("/", "").as_bytes()).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
}

#[tokio::test]
async fn sticky_failover_reissues_the_cookie_for_the_backend_that_served() {
    let mut b = backends(&["a", "b"]).await;
    let proxy = sticky_proxy("cookie", "wsgate_sticky", &b).await;
    let (ws, first, headers) = connect_named(proxy.addr("main"), "/", &[]).await;
    drop(ws);
    let cookie = |headers: &http::HeaderMap| {
        let set = headers.get("set-cookie")?.to_str().unwrap();
        Some(set.split(';').next().unwrap().to_string())
    };
    let old = cookie(&headers).expect("the first 101 sets the cookie");
    let at = b.iter().position(|x| x.name == first).unwrap();
    b.remove(at).kill().await;

    // The cookie's backend is gone: the client is served elsewhere and
    // told so, or it would flip back when the old backend recovers.
    let (_ws, second, headers) = connect_named(proxy.addr("main"), "/", &[("cookie", &old)]).await;
    assert_ne!(second, first);
    let new = cookie(&headers).expect("failover re-issues the cookie");
    assert_ne!(new, old);

    // The new cookie sticks and is not set again.
    let (_ws, third, headers) = connect_named(proxy.addr("main"), "/", &[("cookie", &new)]).await;
    assert_eq!(third, second);
    assert!(headers.get("set-cookie").is_none(), "{headers:?}");
}
