//! The real binary: `wsgate check` on good and bad files, `--version`, and
//! `wsgate demo`: its configuration on port 0, and the command itself on
//! ws://127.0.0.1:8080/echo, or naming the address a running demo holds;
//! the same report of every configuration problem from `POST /reload`.

mod common;

use std::process::Command;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

fn check(text: &str) -> (bool, String) {
    let dir = TempDir::new("check");
    let path = dir.0.join("wsgate.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_accepts_the_example_configuration() {
    let (ok, out) = check(include_str!("../config.example.toml"));
    assert!(ok, "{out}");
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn check_reports_a_syntax_error_with_its_line() {
    let (ok, out) = check("[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:1\n");
    assert!(!ok);
    assert!(out.contains("line 3"), "{out}");
}

#[test]
fn check_reports_an_unknown_key() {
    let bad = include_str!("../config.example.toml").replacen(
        "\n[[pool]]\n",
        "\n[[pool]]\nbalnce = \"sticky\"\n",
        1,
    );
    let (ok, out) = check(&bad);
    assert!(!ok);
    assert!(out.contains("balnce"), "{out}");
    assert!(out.contains("line"), "{out}");
}

#[test]
fn check_reports_every_dangling_reference() {
    let text = r#"
[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
path_prefix = "/a"
pool = "missing"

[[route]]
listener = "nope"
path_prefix = "/b"
pool = "p"

[[pool]]
name = "p"
backends = [{ addr = "127.0.0.1:9" }]
"#;
    let (ok, out) = check(text);
    assert!(!ok);
    assert!(
        out.contains("route[0].pool") && out.contains("missing"),
        "{out}"
    );
    assert!(
        out.contains("route[1].listener") && out.contains("nope"),
        "{out}"
    );
    assert!(out.contains("line 8") && out.contains("line 11"), "{out}");
}

/// A misspelt key, a size with a unit, a duration without one and a route
/// naming a missing pool.
const FOUR_PROBLEMS: &str = r#"[admin]
bind = "127.0.0.1:0"

[defaults]
idle_timeout = 30

[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
path_prefix = "/"
pool = "chats"
max_mesage_bytes = 1024
max_frame_bytes = "64KiB"

[[pool]]
name = "chat"
backends = [{ addr = "127.0.0.1:9" }]
"#;

/// Each problem of `FOUR_PROBLEMS` as `line N: key path: hint`.
const FOUR_PROBLEMS_REPORTED: [&str; 4] = [
    "line 5: defaults.idle_timeout: 30 has no unit; durations are strings with a unit: \"30s\"",
    "line 13: route[0].pool: no pool is named \"chats\"; the pools are: chat",
    "line 14: route[0].max_mesage_bytes: unknown key `max_mesage_bytes`; did you mean `max_message_bytes`?",
    "line 15: route[0].max_frame_bytes: \"64KiB\" is a string; sizes are whole bytes: 65536",
];

#[test]
fn check_reports_every_problem_of_a_file_at_once() {
    let (ok, out) = check(FOUR_PROBLEMS);
    assert!(!ok, "{out}");
    assert!(out.contains("has 4 problem(s)"), "{out}");
    for reported in FOUR_PROBLEMS_REPORTED {
        assert!(out.contains(reported), "{reported}\nnot in:\n{out}");
    }
}

#[tokio::test]
async fn post_reload_answers_every_problem_of_a_file_at_once() {
    let dir = TempDir::new("reload-every-problem");
    let path = dir.0.join("wsgate.toml");
    let good = FOUR_PROBLEMS
        .replace("idle_timeout = 30", "idle_timeout = \"30s\"")
        .replace("pool = \"chats\"", "pool = \"chat\"")
        .replace("max_mesage_bytes", "max_message_bytes")
        .replace("\"64KiB\"", "65536");
    std::fs::write(&path, &good).unwrap();
    let (proxy, _server) = start_proxy_file(&path).await;
    std::fs::write(&path, FOUR_PROBLEMS).unwrap();
    let (code, body) = admin(proxy.shared.admin_addr.unwrap(), "POST", "/reload").await;
    assert_eq!(code, 400, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let errors: Vec<&str> = (answer["errors"].as_array().unwrap().iter())
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 4, "{body}");
    for (error, reported) in errors.iter().zip(FOUR_PROBLEMS_REPORTED) {
        assert!(error.contains(reported), "{reported}\nnot in:\n{error}");
    }
}

#[test]
fn check_on_a_missing_file_fails_with_the_path() {
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/wsgate.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/wsgate.toml"));
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo"));
}

/// The addresses the built-in example (and so `wsgate demo`) uses.
const DEMO_ADDRS: [&str; 4] = [
    "127.0.0.1:8080",
    "127.0.0.1:9001",
    "127.0.0.1:9002",
    "127.0.0.1:9900",
];

/// What `wsgate demo` runs, the built-in example with echo backends on its
/// backend addresses, moved to port 0 so that it runs beside a user's own
/// demo on the fixed addresses.
#[tokio::test]
async fn demo_configuration_echoes_on_echo() {
    let example = wsgate::config::EXAMPLE;
    for addr in DEMO_ADDRS {
        assert!(example.contains(addr), "the example uses {addr}");
    }
    let mut toml = example
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9900", "127.0.0.1:0");
    for fixed in ["127.0.0.1:9001", "127.0.0.1:9002"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        toml = toml.replace(fixed, &listener.local_addr().unwrap().to_string());
        tokio::spawn(wsgate::echo::serve(listener));
    }
    let proxy = start_proxy(&toml).await;
    let mut ws = ws_connect(proxy.addr("public"), "/echo").await;
    ws.send(Message::text("hello demo")).await.unwrap();
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::text("hello demo")
    );
    // The page a browser gets at http://127.0.0.1:8080/, proxied as HTTP.
    let page = raw_request(
        proxy.addr("public"),
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("new WebSocket("), "{}", page.body);
}

/// The README's first command, on the documented fixed addresses. When
/// they are taken (a user's demo is running) it must say which one and exit
/// 1; otherwise it must echo on ws://127.0.0.1:8080/echo.
#[tokio::test]
async fn demo_echoes_on_the_documented_address_or_names_the_busy_one() {
    let mut bin = Binary::start(&["demo"]);
    match bin
        .wait_line_or_exit(&["listening", "local=127.0.0.1:8080"])
        .await
    {
        Some(_) => {
            let mut ws = ws_connect("127.0.0.1:8080".parse().unwrap(), "/echo").await;
            ws.send(Message::text("hello demo")).await.unwrap();
            assert_eq!(
                within(ws.next()).await.unwrap().unwrap(),
                Message::text("hello demo")
            );
        }
        None => {
            let log = bin.lines().join("\n");
            assert_eq!(bin.exit_code().await, Some(1), "{log}");
            assert!(
                log.contains("in use") && DEMO_ADDRS.iter().any(|a| log.contains(a)),
                "a busy address is named: {log}"
            );
        }
    }
}
