//! The real binary: `wsgate check` on good and bad files, `--version`, and
//! `wsgate demo` answering on ws://127.0.0.1:8080/echo; the same report of
//! every configuration problem from `POST /reload`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

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

/// Kills the child when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's first command. It uses the example's fixed addresses
/// (127.0.0.1:8080, 9001, 9002, 9900): the one test that cannot use port 0,
/// because those addresses are what it checks.
#[tokio::test]
async fn demo_echoes_on_the_documented_address() {
    let mut child = Command::new(BIN)
        .arg("demo")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _running = Running(child);
    // Ready once the proxy's listener logs that it listens.
    let ready = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        for _ in 0..100 {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening") && line.contains("8080") => {
                    // Keep draining so the child never blocks on a full pipe.
                    std::thread::spawn(move || for _ in lines {});
                    return true;
                }
                Some(Ok(_)) => {}
                _ => return false,
            }
        }
        false
    });
    assert!(
        within(ready).await.unwrap(),
        "demo started listening on 8080"
    );
    let addr = "127.0.0.1:8080".parse().unwrap();
    let mut ws = ws_connect(addr, "/echo").await;
    ws.send(Message::text("hello demo")).await.unwrap();
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::text("hello demo")
    );
}
