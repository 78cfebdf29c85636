//! Running out of file descriptors (docs/operations.md, "File
//! descriptors"): the real binary under a low `RLIMIT_NOFILE` (set with
//! util-linux's `prlimit`). A connect that fails for want of a descriptor
//! is the proxy's shortage, not the backend's: the client gets 503 with a
//! reason and the backend stays up; the admin listener still answers at
//! the limit; once descriptors are free, connections succeed at once.

mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};

/// The descriptor limit of the proxy under test: room for its own
/// (runtime, listeners, signals, watcher, reserve) and a dozen or so
/// proxied connections.
const NOFILE: u32 = 64;

/// `wsgate` run through `prlimit`; killed when dropped.
struct Limited {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Limited {
    fn start(config: &str) -> Option<Limited> {
        let limit = format!("--nofile={NOFILE}:{NOFILE}");
        let mut child = Command::new("prlimit")
            .args([
                &limit,
                "--",
                env!("CARGO_BIN_EXE_wsgate"),
                "--config",
                config,
            ])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let stderr = child.stderr.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let store = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                store.lock().unwrap().push(line);
            }
        });
        Some(Limited { child, lines })
    }

    /// Waits (bounded) for the address after `key=` in a line with `part`.
    async fn addr(&self, part: &str, key: &str) -> SocketAddr {
        for _ in 0..3000 {
            let found = self.lines.lock().unwrap().iter().find_map(|line| {
                if !line.contains(part) {
                    return None;
                }
                let at = line.find(&format!("{key}="))? + key.len() + 1;
                let text: String = line[at..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                text.parse().ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {part:?} line: {}", self.log());
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a connection attempt through the proxy went.
enum Outcome {
    Open(Box<tokio_tungstenite::WebSocketStream<TcpStream>>),
    Refused(u16, String),
}

async fn attempt(addr: SocketAddr) -> Outcome {
    let stream = within(TcpStream::connect(addr)).await.unwrap();
    match tokio_tungstenite::client_async(format!("ws://{addr}/"), stream).await {
        Ok((mut ws, _)) => {
            match within(ws.next()).await {
                Some(Ok(Message::Text(_))) => {}
                other => panic!("expected the backend's greeting, got {other:?}"),
            }
            Outcome::Open(Box::new(ws))
        }
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Outcome::Refused(response.status().as_u16(), body)
        }
        Err(e) => panic!("unexpected failure: {e}"),
    }
}

async fn backend_up(admin_addr: SocketAddr) -> serde_json::Value {
    let (code, body) = admin(admin_addr, "GET", "/status").await;
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    status["pools"][0]["backends"][0]["up"].clone()
}

#[tokio::test]
async fn descriptor_exhaustion_answers_503_keeps_backends_up_and_admin_answering() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux prlimit is not installed");
        return;
    }
    let backend = NamedBackend::start("a").await;
    let dir = TempDir::new("descriptors");
    let path = dir.0.join("wsgate.toml");
    std::fs::write(
        &path,
        format!(
            "[admin]\nbind = \"127.0.0.1:0\"\n\n[defaults]\nhandshake_timeout = \"60s\"\n\n[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[[pool]]\nname = \"p\"\nbackends = [{{ addr = \"{}\" }}]\n",
            backend.addr
        ),
    )
    .unwrap();
    let started = tokio::time::Instant::now();
    let proxy = Limited::start(path.to_str().unwrap()).expect("prlimit runs");
    let listener = proxy.addr("listening", "local").await;
    let admin_addr = proxy.addr("admin listening", "addr").await;
    assert_eq!(backend_up(admin_addr).await, true);

    // Idle clients hold a single descriptor each in the proxy (they send
    // nothing): one is added to fill a descriptor a refusal gave back, one
    // is closed to free exactly one.
    let mut idle = vec![within(TcpStream::connect(listener)).await.unwrap()];
    let mut open = Vec::new();
    let mut refusal = None;
    let mut checked_at_limit = false;
    for _ in 0..2 * NOFILE {
        let mut next = tokio::spawn(attempt(listener));
        let outcome = match tokio::time::timeout(Duration::from_secs(5), &mut next).await {
            Ok(done) => done.unwrap(),
            Err(_) => {
                // Left in the backlog: the proxy has no descriptor to
                // accept it. The admin listener must answer now.
                if !checked_at_limit {
                    assert_eq!(admin(admin_addr, "GET", "/healthz").await.0, 200);
                    assert_eq!(backend_up(admin_addr).await, true, "{}", proxy.log());
                    checked_at_limit = true;
                }
                if refusal.is_some() {
                    next.abort();
                    break;
                }
                // Free one descriptor: the client gets in, and its connect
                // to the backend finds none.
                idle.pop();
                within(next).await.unwrap()
            }
        };
        match outcome {
            Outcome::Open(ws) => open.push(ws),
            Outcome::Refused(status, body) => {
                assert_eq!(status, 503, "{body}");
                assert!(body.contains("local resources"), "{body}");
                refusal = Some(body);
                // Take back the descriptor the refusal freed, so that the
                // next client waits at the limit.
                idle.push(within(TcpStream::connect(listener)).await.unwrap());
            }
        }
        if refusal.is_some() && checked_at_limit {
            break;
        }
    }
    assert!(refusal.is_some(), "no refusal: {}", proxy.log());
    assert!(
        checked_at_limit,
        "the limit was never reached: {}",
        proxy.log()
    );
    assert_eq!(backend_up(admin_addr).await, true, "{}", proxy.log());
    drop(idle);

    // Failed accepts are logged at most once per 5 s per listener (two
    // listeners here), not once per retry.
    let lines = proxy
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("accept failed") || l.contains("not accepting"))
        .count();
    let bound = 2 * (started.elapsed().as_secs() / 5 + 1) as usize;
    assert!(
        lines <= bound,
        "{lines} accept lines (at most {bound}): {}",
        proxy.log()
    );

    // Free everything: the next connection succeeds at once.
    drop(open);
    let mut freed = false;
    for _ in 0..500 {
        let (_, body) = admin(admin_addr, "GET", "/status").await;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        if status["connections_open"] == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "connections never closed: {}", proxy.log());
    match within(attempt(listener)).await {
        Outcome::Open(_) => {}
        Outcome::Refused(status, body) => panic!("refused after freeing: {status} {body}"),
    }
    assert_eq!(backend_up(admin_addr).await, true);
}
