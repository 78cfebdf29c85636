//! Backends by name: a DNS server on loopback that each test controls
//! (a small UDP responder, so every answer is deterministic), backends on
//! 127.0.0.2, .3 and .4, and the proxy following the name through
//! additions, removals, SRV weights and silence, with no reload.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// The records of one name.
#[derive(Default, Clone)]
struct Records {
    a: Vec<Ipv4Addr>,
    /// (priority, weight, port, target)
    srv: Vec<(u16, u16, u16, String)>,
}

#[derive(Default)]
struct Zone {
    names: HashMap<String, Records>,
    /// Answer nothing at all, like a dead server.
    silent: bool,
}

/// A DNS server on 127.0.0.1 answering A, AAAA (always empty) and SRV
/// queries from a zone the test edits; unknown names get NXDOMAIN.
struct Dns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
}

impl Dns {
    async fn start() -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone: Arc<Mutex<Zone>> = Arc::default();
        let z = zone.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let answer = {
                    let zone = z.lock().unwrap();
                    if zone.silent {
                        continue;
                    }
                    answer(&buf[..n], &zone)
                };
                if let Some(answer) = answer {
                    let _ = socket.send_to(&answer, from).await;
                }
            }
        });
        Dns { addr, zone }
    }

    fn set_a(&self, name: &str, ips: &[[u8; 4]]) {
        let mut zone = self.zone.lock().unwrap();
        let records = zone.names.entry(name.to_string()).or_default();
        records.a = ips.iter().map(|ip| Ipv4Addr::from(*ip)).collect();
    }

    fn set_srv(&self, name: &str, records: &[(u16, u16, u16, &str)]) {
        let mut zone = self.zone.lock().unwrap();
        let entry = zone.names.entry(name.to_string()).or_default();
        entry.srv = (records.iter())
            .map(|(p, w, port, t)| (*p, *w, *port, t.to_string()))
            .collect();
    }

    fn remove(&self, name: &str) {
        self.zone.lock().unwrap().names.remove(name);
    }

    fn silence(&self) {
        self.zone.lock().unwrap().silent = true;
    }
}

/// Reads the question's name; returns it lower-case without the final dot
/// and the offset after it.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            return Some((labels.join(".").to_ascii_lowercase(), at));
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).to_string());
        at += len;
    }
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// The answer to one query (RFC 1035 section 4.1), TTL 0.
fn answer(query: &[u8], zone: &Zone) -> Option<Vec<u8>> {
    let (name, end) = read_name(query, 12)?;
    let qtype = u16::from_be_bytes([*query.get(end)?, *query.get(end + 1)?]);
    let question = query.get(12..end + 4)?;
    let records = zone.names.get(&name);
    let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
    if let Some(r) = records {
        match qtype {
            1 => answers.extend(r.a.iter().map(|ip| (1, ip.octets().to_vec()))),
            33 => {
                for (priority, weight, port, target) in &r.srv {
                    let mut data = Vec::new();
                    data.extend_from_slice(&priority.to_be_bytes());
                    data.extend_from_slice(&weight.to_be_bytes());
                    data.extend_from_slice(&port.to_be_bytes());
                    write_name(&mut data, target);
                    answers.push((33, data));
                }
            }
            _ => {}
        }
    }
    let rcode: u16 = if records.is_some() { 0 } else { 3 };
    let mut out = Vec::new();
    out.extend_from_slice(&query[0..2]);
    out.extend_from_slice(&(0x8580u16 | rcode).to_be_bytes()); // QR AA RD RA
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for (rtype, data) in answers {
        out.extend_from_slice(&[0xc0, 12]); // the question's name
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}

/// Named echo backends on 127.0.0.2, .3 and .4, all on one port, as pods
/// behind one Service would be.
async fn three_backends() -> (u16, Vec<NamedBackend>) {
    for _ in 0..20 {
        let first = NamedBackend::start_at("b2", "127.0.0.2:0".parse().unwrap()).await;
        let port = first.addr.port();
        let mut all = vec![first];
        for (name, ip) in [("b3", [127, 0, 0, 3]), ("b4", [127, 0, 0, 4])] {
            let addr = SocketAddr::from((ip, port));
            if std::net::TcpListener::bind(addr).is_err() {
                break;
            }
            all.push(NamedBackend::start_at(name, addr).await);
        }
        if all.len() == 3 {
            return (port, all);
        }
    }
    panic!("no port free on 127.0.0.2, .3 and .4 at once");
}

fn config(dns: &Dns, backends: &str, pool_extra: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[defaults]
drain_timeout = "2s"

[resolver]
nameservers = ["{}"]
timeout = "300ms"
attempts = 1

[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
pool = "p"

[[pool]]
name = "p"
resolve_interval = "1s"
backends = [{backends}]
{pool_extra}
"#,
        dns.addr
    )
}

/// `/status` of the proxy's admin listener, as JSON.
async fn status(proxy: &Proxy) -> serde_json::Value {
    let (code, body) = admin(proxy.shared.admin_addr.unwrap(), "GET", "/status").await;
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

/// The addresses of pool `p` that are not draining, sorted.
fn serving(status: &serde_json::Value) -> Vec<String> {
    let mut addrs: Vec<String> = status["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["draining"] == false)
        .map(|b| b["addr"].as_str().unwrap().to_string())
        .collect();
    addrs.sort();
    addrs
}

/// Polls `/status` (bounded) until `done` holds; returns how long it took.
async fn wait_status(proxy: &Proxy, done: impl Fn(&serde_json::Value) -> bool) -> Duration {
    let started = Instant::now();
    let mut last = serde_json::Value::Null;
    while started.elapsed() < LIMIT {
        last = status(proxy).await;
        if done(&last) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("status never reached the expected state; last:\n{last:#}");
}

fn at(port: u16, last: &[u8]) -> Vec<String> {
    last.iter().map(|n| format!("127.0.0.{n}:{port}")).collect()
}

#[tokio::test]
async fn a_name_is_followed_through_additions_and_removals_with_drains() {
    let dns = Dns::start().await;
    let (port, _backends) = three_backends().await;
    dns.set_a("chat.test", &[[127, 0, 0, 2], [127, 0, 0, 3]]);
    let proxy = start_proxy(&config(
        &dns,
        &format!("{{ addr = \"chat.test:{port}\" }}"),
        "",
    ))
    .await;
    assert_eq!(serving(&status(&proxy).await), at(port, &[2, 3]));
    let url = proxy.addr("main");

    // Two held connections spread over both addresses.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(connect_named(url, "/", &[]).await);
    }
    let mut names: Vec<&str> = held.iter().map(|(_, n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["b2", "b3"]);

    // A third address joins at the next resolution: within two intervals
    // (plus slack for a loaded machine).
    dns.set_a(
        "chat.test",
        &[[127, 0, 0, 2], [127, 0, 0, 3], [127, 0, 0, 4]],
    );
    let took = wait_status(&proxy, |s| serving(s) == at(port, &[2, 3, 4])).await;
    assert!(took < Duration::from_secs(2 + 3), "took {took:?}");
    let (mut third, name, _) = connect_named(url, "/", &[]).await;
    assert_eq!(name, "b4", "the idle newcomer gets the next connection");

    // Two addresses leave: their connections stay and echo while the
    // drain runs, then get 1001; new connections go to the one left.
    dns.set_a("chat.test", &[[127, 0, 0, 3]]);
    wait_status(&proxy, |s| serving(s) == at(port, &[3])).await;
    let status_now = status(&proxy).await;
    let draining = status_now["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["draining"] == true)
        .count();
    assert_eq!(draining, 2, "{status_now:#}");
    let (_, name, _) = connect_named(url, "/", &[]).await;
    assert_eq!(name, "b3");
    let on_b2 = held.iter_mut().find(|(_, n, _)| n == "b2").unwrap();
    within(on_b2.0.send(Message::text("still here")))
        .await
        .unwrap();
    let echo = within(on_b2.0.next()).await.unwrap().unwrap();
    assert_eq!(echo, Message::text("still here"));
    for ws in [&mut on_b2.0, &mut third] {
        let close = loop {
            match within(ws.next()).await {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close, got {other:?}"),
            }
        };
        assert_eq!(u16::from(close.unwrap().code), 1001);
    }
    // The connection on the address that stayed was never drained.
    let on_b3 = held.iter_mut().find(|(_, n, _)| n == "b3").unwrap();
    within(on_b3.0.send(Message::text("unaffected")))
        .await
        .unwrap();
    let echo = within(on_b3.0.next()).await.unwrap().unwrap();
    assert_eq!(echo, Message::text("unaffected"));

    let entries = &status(&proxy).await["pools"][0]["entries"];
    assert_eq!(entries[0]["addr"], format!("chat.test:{port}"));
    assert_eq!(entries[0]["addresses"], serde_json::json!(at(port, &[3])));
    assert!(entries[0]["resolved_at"].is_string());
}

#[tokio::test]
async fn srv_weights_hold_over_a_thousand_connections_and_priority_falls_back() {
    let dns = Dns::start().await;
    let (port, _backends) = three_backends().await;
    dns.set_srv(
        "_ws._tcp.chat.test",
        &[
            (10, 1, port, "a.test"),
            (10, 3, port, "b.test"),
            (20, 5, port, "c.test"),
        ],
    );
    dns.set_a("a.test", &[[127, 0, 0, 2]]);
    dns.set_a("b.test", &[[127, 0, 0, 3]]);
    dns.set_a("c.test", &[[127, 0, 0, 4]]);
    let sticky = "balance = \"sticky\"\nsticky = { source = \"header\", name = \"x-user\" }";
    let text = config(&dns, "{ srv = \"_ws._tcp.chat.test\" }", sticky);
    let proxy = start_proxy(&text).await;
    assert_eq!(serving(&status(&proxy).await), at(port, &[2, 3]));

    // Rendezvous hashing gives each key to a backend with probability
    // weight / total, here 1/4 and 3/4. Over 1000 fixed keys the count on
    // the first is binomial (mean 250, sd 13.7); the bounds are 7 sd wide,
    // and the keys are fixed, so the outcome never changes between runs.
    let mut tally: HashMap<String, usize> = HashMap::new();
    for i in 0..1000 {
        let key = format!("user-{i}");
        let (ws, name, _) = connect_named(proxy.addr("main"), "/", &[("x-user", &key)]).await;
        drop(ws);
        *tally.entry(name).or_default() += 1;
    }
    let on_a = tally.get("b2").copied().unwrap_or(0);
    let on_b = tally.get("b3").copied().unwrap_or(0);
    assert_eq!(on_a + on_b, 1000, "{tally:?}");
    assert!((150..=350).contains(&on_a), "{tally:?}");
    let entry = &status(&proxy).await["pools"][0]["backends"];
    let weights: Vec<u64> = (entry.as_array().unwrap().iter())
        .filter(|b| b["draining"] == false)
        .map(|b| b["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [1, 3]);

    // The first priority's targets stop resolving: the next one serves.
    dns.remove("a.test");
    dns.remove("b.test");
    wait_status(&proxy, |s| serving(s) == at(port, &[4])).await;
    let (_, name, _) = connect_named(proxy.addr("main"), "/", &[("x-user", "user-1")]).await;
    assert_eq!(name, "b4");
}

#[tokio::test]
async fn a_resolver_that_stops_answering_keeps_the_last_set() {
    let dns = Dns::start().await;
    let (port, _backends) = three_backends().await;
    dns.set_a("chat.test", &[[127, 0, 0, 2]]);
    let proxy = start_proxy(&config(
        &dns,
        &format!("{{ addr = \"chat.test:{port}\" }}"),
        "",
    ))
    .await;
    dns.silence();
    wait_status(&proxy, |s| s["pools"][0]["entries"][0]["error"].is_string()).await;
    assert_eq!(serving(&status(&proxy).await), at(port, &[2]));
    let (_, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
    assert_eq!(name, "b2");
    let (_, scrape) = admin(proxy.shared.admin_addr.unwrap(), "GET", "/metrics").await;
    let label = format!("name=\"chat.test:{port}\"");
    let errors = sample(
        &scrape,
        "wsgate_resolve_errors_total",
        &["pool=\"p\"", &label],
    );
    assert!(errors >= 1.0, "{scrape}");
    let labelled = format!("backend=\"127.0.0.2:{port}\"");
    let up = sample(
        &scrape,
        "wsgate_backend_up",
        &[&labelled, "name=\"chat.test\""],
    );
    assert_eq!(up, 1.0, "{scrape}");
}

#[tokio::test]
async fn an_unresolvable_name_at_startup_gives_503_naming_it_then_recovers() {
    let dns = Dns::start().await;
    let (port, _backends) = three_backends().await;
    let proxy = start_proxy(&config(
        &dns,
        &format!("{{ addr = \"chat.test:{port}\" }}"),
        "",
    ))
    .await;
    let answer = raw_request(proxy.addr("main"), upgrade_request("/", "").as_bytes()).await;
    assert_eq!(answer.status, 503);
    assert!(
        answer.body.contains(&format!("chat.test:{port}")),
        "{}",
        answer.body
    );
    dns.set_a("chat.test", &[[127, 0, 0, 3]]);
    wait_status(&proxy, |s| serving(s) == at(port, &[3])).await;
    let (_, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
    assert_eq!(name, "b3");
}

#[tokio::test]
async fn check_warns_about_names_that_do_not_resolve_and_passes() {
    let dns = Dns::start().await;
    dns.set_a("known.test", &[[127, 0, 0, 2]]);
    let dir = TempDir::new("discovery-check");
    let file = dir.0.join("wsgate.toml");
    let backends = "{ addr = \"known.test:9000\" }, { addr = \"missing.test:9000\" }";
    std::fs::write(&file, config(&dns, backends, "")).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning"), "{stderr}");
    assert!(stderr.contains("missing.test:9000"), "{stderr}");
    assert!(!stderr.contains("known.test"), "{stderr}");
}

#[tokio::test]
async fn names_and_addresses_mix_and_duplicates_count_once() {
    let dns = Dns::start().await;
    let (port, _backends) = three_backends().await;
    dns.set_a("chat.test", &[[127, 0, 0, 2], [127, 0, 0, 3]]);
    let backends = format!("{{ addr = \"127.0.0.2:{port}\" }}, {{ addr = \"chat.test:{port}\" }}");
    let proxy = start_proxy(&config(&dns, &backends, "")).await;
    let s = status(&proxy).await;
    assert_eq!(serving(&s), at(port, &[2, 3]));
    let names: Vec<&serde_json::Value> = (s["pools"][0]["backends"].as_array().unwrap().iter())
        .map(|b| &b["name"])
        .collect();
    assert_eq!(
        names,
        [&serde_json::Value::Null, &serde_json::json!("chat.test")]
    );
}

#[tokio::test]
async fn a_reload_keeps_the_last_resolved_set_and_live_state_survives() {
    let dns = Dns::start().await;
    let (port, _backends) = three_backends().await;
    dns.set_a("chat.test", &[[127, 0, 0, 2]]);
    let dir = TempDir::new("discovery-reload");
    let path = dir.0.join("wsgate.toml");
    let text = config(&dns, &format!("{{ addr = \"chat.test:{port}\" }}"), "");
    std::fs::write(&path, &text).unwrap();
    let (proxy, server) = start_proxy_file(&path).await;
    let (mut held, name, _) = connect_named(proxy.addr("main"), "/", &[]).await;
    assert_eq!(name, "b2");
    let b2: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    proxy.wait_active("p", b2, 1).await;

    // A new address joins by resolution: the held connection's backend
    // keeps its live state (its count) in the new snapshot.
    dns.set_a("chat.test", &[[127, 0, 0, 2], [127, 0, 0, 3]]);
    wait_status(&proxy, |s| serving(s) == at(port, &[2, 3])).await;
    assert_eq!(proxy.shared.registry.get("p", b2).unwrap().active(), 1);

    // The DNS server dies, then a reload rebuilds the pools: they keep the
    // last resolved set instead of starting empty.
    dns.silence();
    let version = server.reload().await.expect("the file is valid");
    assert_eq!(version, 2);
    assert_eq!(serving(&status(&proxy).await), at(port, &[2, 3]));
    assert_eq!(proxy.shared.registry.get("p", b2).unwrap().active(), 1);
    within(held.send(Message::text("after reload")))
        .await
        .unwrap();
    let echo = within(held.next()).await.unwrap().unwrap();
    assert_eq!(echo, Message::text("after reload"));
}
