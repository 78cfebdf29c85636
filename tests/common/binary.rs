//! The real `wsgate` binary as a child process, with its log collected.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The real binary, running; killed when dropped. Its stderr lines are
/// collected as they come.
pub struct Binary {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    seen: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Binary {
    /// Starts `wsgate` with `args`.
    pub fn start(args: &[&str]) -> Binary {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
        let store = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                store.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Binary { child, lines, seen }
    }

    /// Waits (bounded, generously: a child process on a loaded machine is
    /// slow) for a log line containing every one of `parts`. On failure the
    /// panic shows everything the process logged.
    pub async fn wait_line(&mut self, parts: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(line)) if parts.iter().all(|p| line.contains(p)) => return line,
                Ok(Some(_)) => {}
                Ok(None) => panic!(
                    "the process ended before logging {parts:?}:\n{}",
                    self.lines().join("\n")
                ),
                Err(_) => panic!(
                    "no line with {parts:?} in 30 s; the log so far:\n{}",
                    self.lines().join("\n")
                ),
            }
        }
    }

    /// The address logged after `key=` in the first line with `parts`.
    pub async fn wait_addr(&mut self, parts: &[&str], key: &str) -> SocketAddr {
        let line = self.wait_line(parts).await;
        let at = line.find(&format!("{key}=")).expect("key in line") + key.len() + 1;
        let rest = &line[at..];
        let text: String = rest
            .trim_start_matches('"')
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
            .collect();
        text.parse().unwrap_or_else(|_| panic!("address in {line}"))
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Sends a signal (`HUP`, `TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        for _ in 0..2000 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the process did not exit");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
