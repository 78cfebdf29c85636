//! The Grafana dashboard and the Prometheus alert rules in docs/ name only
//! metrics wsgate exports, and the dashboard has the structure Grafana
//! imports. (`promtool check rules` and `promtool test rules` check the
//! rules themselves in `.ci/run`.)

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// Every sample name a running proxy exports once each kind of event has
/// happened: a relayed message and close, a rejection, a refused reload, a
/// failed TLS handshake, a backend with `max_connections`.
async fn exported() -> HashSet<String> {
    let backend = echo_backend().await;
    let ca = TestCa::new();
    let cert = ca.issue("server", &["localhost"]);
    let toml = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"secure\"\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [[route]]\npath_prefix = \"/echo\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [{{ addr = \"{}\", max_connections = 10 }}]\n",
        cert.cert.display(),
        cert.key.display(),
        backend.addr
    );
    let proxy = start_proxy(&toml).await;
    let admin_addr = proxy.shared.admin_addr.unwrap();
    let mut ws = ws_connect(proxy.addr("main"), "/echo").await;
    ws.send(Message::text("hello")).await.unwrap();
    within(ws.next()).await.unwrap().unwrap();
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = within(ws.next()).await {}
    let refused = raw_request(proxy.addr("main"), upgrade_request("/none", "").as_bytes()).await;
    assert_eq!(refused.status, 404);
    assert_eq!(admin(admin_addr, "POST", "/reload").await.0, 400);
    // A TLS record whose handshake message is garbage.
    let garbage = [0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff];
    let _ = raw_request(proxy.addr("secure"), &garbage).await;
    for _ in 0..200 {
        let (_, text) = admin(admin_addr, "GET", "/metrics").await;
        let names: HashSet<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        let settled = ["wsgate_tls_handshake_failures_total", "wsgate_closes_total"]
            .iter()
            .all(|n| names.contains(*n));
        if settled {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the proxy never exported its TLS failure and close counters");
}

/// The `wsgate_*` metric names in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("wsgate_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.push(text[start..end].to_string());
        }
        i = end;
    }
    out
}

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Every query string in the dashboard: panel targets, variables and
/// annotations.
fn queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = variable["definition"].as_str() {
            out.push(q.to_string());
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
        if let Some(q) = annotation["expr"].as_str() {
            out.push(q.to_string());
        }
    }
    out
}

#[test]
fn the_grafana_dashboard_has_the_structure_grafana_imports() {
    let dashboard: Value = serde_json::from_str(&read("docs/grafana/wsgate.json")).unwrap();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(variables.contains(&"datasource") && variables.contains(&"pool"));
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut ids = HashSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(!title.is_empty());
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate id at {title}"
        );
        let grid = &panel["gridPos"];
        let (x, w, h) = (
            grid["x"].as_u64().unwrap(),
            grid["w"].as_u64().unwrap(),
            grid["h"].as_u64().unwrap(),
        );
        assert!(
            grid["y"].is_u64() && w > 0 && h > 0 && x + w <= 24,
            "{title}: {grid}"
        );
        let kind = panel["type"].as_str().unwrap();
        if kind == "row" {
            continue;
        }
        assert!(
            ["stat", "timeseries", "table", "gauge", "bargauge"].contains(&kind),
            "{title}: {kind}"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        let mut refs = HashSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().unwrap()),
                "{title}: duplicate refId"
            );
            assert!(
                !t["expr"].as_str().unwrap().trim().is_empty(),
                "{title}: empty query"
            );
        }
    }
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_name_only_exported_metrics() {
    let exported = exported().await;
    let dashboard: Value = serde_json::from_str(&read("docs/grafana/wsgate.json")).unwrap();
    let mut checked = 0;
    for query in queries(&dashboard) {
        let names = metric_names(&query);
        assert!(!names.is_empty(), "a query over no wsgate metric: {query}");
        for name in names {
            assert!(
                exported.contains(&name),
                "{name} (in {query}) is not exported"
            );
            checked += 1;
        }
    }
    for file in [
        "docs/prometheus/alerts.yml",
        "docs/prometheus/alerts_test.yml",
    ] {
        for name in metric_names(&read(file)) {
            assert!(
                exported.contains(&name),
                "{name} (in {file}) is not exported"
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} metric names found");
}

#[test]
fn every_alert_is_explained_in_the_operations_doc() {
    let rules = read("docs/prometheus/alerts.yml");
    let ops = read("docs/operations.md");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 5, "{alerts:?}");
    for alert in alerts {
        assert!(
            ops.contains(alert),
            "docs/operations.md does not explain {alert}"
        );
    }
}
