//! A real socket.io v4 application behind wsgate: three Node.js socket.io
//! servers in one pool, 50 socket.io-client clients with the default
//! transports (long-polling first, then the upgrade to WebSocket), each
//! emitting 100 acknowledged events.
//!
//! With a sticky cookie pool every event is acknowledged and every client
//! upgrades; with least connections the polling requests of one session
//! land on servers that do not know it, and socket.io says "Session ID
//! unknown": stickiness is what makes it work.
//!
//! The fixture is `tests/socketio/` (package.json and package-lock.json);
//! The test installs it with `npm ci` on first use (`.ci/run` does so
//! beforehand). Node.js and npm must be on PATH.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::*;

/// The fixture's folder, installed from its lockfile on first use so that
/// `cargo test` works from a clean clone (Node.js and npm must be on PATH).
fn fixture() -> PathBuf {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/socketio");
    let installed = |dir: &PathBuf| {
        dir.join("node_modules/socket.io").is_dir()
            && dir.join("node_modules/socket.io-client").is_dir()
    };
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if !installed(&dir) {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .status()
            .expect("npm on PATH (Node.js 18 or newer)");
        assert!(status.success(), "`npm ci --prefix tests/socketio` failed");
    }
    assert!(installed(&dir), "the socket.io fixture is not installed");
    dir
}

/// The three socket.io servers; killed when dropped.
struct Servers {
    child: Child,
    ports: Vec<u16>,
    output: std::sync::mpsc::Receiver<String>,
}

impl Servers {
    fn start() -> Servers {
        let mut child = Command::new("node")
            .arg("servers.js")
            .current_dir(fixture())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node on PATH");
        let stdout = child.stdout.take().unwrap();
        let (tx, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let first = output
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the servers print their ports");
        let ports = first
            .strip_prefix("ports ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect();
        Servers {
            child,
            ports,
            output,
        }
    }

    /// Every line the servers printed since the ports.
    fn lines(&self) -> Vec<String> {
        self.output.try_iter().collect()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the clients against `url` and returns their JSON summary.
async fn run_clients(url: String, clients: u32, events: u32) -> serde_json::Value {
    let dir = fixture();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("clients.js")
            .arg(url)
            .arg(clients.to_string())
            .arg(events.to_string())
            .current_dir(dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("node on PATH")
    });
    // The script reports by its own 20 s deadline; this one only guards
    // against a hung process.
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), out)
        .await
        .expect("the clients finish")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn config(ports: &[u16], balance: &str) -> String {
    let list: Vec<String> = ports
        .iter()
        .map(|p| format!("{{ addr = \"127.0.0.1:{p}\" }}"))
        .collect();
    format!(
        "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\npath_prefix = \"/socket.io\"\npool = \"io\"\nhttp = \"proxy\"\n\n[[pool]]\nname = \"io\"\n{balance}\nbackends = [{}]\n",
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_socketio_clients_in_a_sticky_cookie_pool_are_all_acknowledged_and_upgraded() {
    let servers = Servers::start();
    let proxy = start_proxy(&config(
        &servers.ports,
        "balance = \"sticky\"\nsticky = { source = \"cookie\", name = \"io_sticky\" }",
    ))
    .await;
    let url = format!("http://{}", proxy.addr("main"));
    let result = run_clients(url, 50, 100).await;
    assert_eq!(result["acked"], 5000, "{result}\n{:?}", servers.lines());
    assert_eq!(result["upgraded"], 50, "{result}");
    assert_eq!(result["errors"].as_array().unwrap().len(), 0, "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_clients_with_least_connections_fail_with_session_id_unknown() {
    let servers = Servers::start();
    let proxy = start_proxy(&config(&servers.ports, "balance = \"least_connections\"")).await;
    let url = format!("http://{}", proxy.addr("main"));
    let result = run_clients(url, 50, 100).await;
    assert!(
        result["acked"].as_u64().unwrap() < 5000,
        "without stickiness some session must break: {result}"
    );
    let lines = servers.lines();
    assert!(
        lines.iter().any(|l| l.contains("Session ID unknown")),
        "socket.io says why: {lines:?}\n{result}"
    );
}
