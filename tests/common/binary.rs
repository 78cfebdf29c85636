//! The real `wsgate` binary as a child process, with its log collected.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a wait on a child process may take: generous, because a child
/// process on a loaded machine is slow to start and to log.
pub const CHILD_LIMIT: Duration = Duration::from_secs(30);

/// The real binary, running; killed when dropped. Its stderr lines are
/// collected as they come.
pub struct Binary {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// One message per line collected, to wake a waiting test.
    arrived: tokio::sync::mpsc::UnboundedReceiver<()>,
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
        let (tx, arrived) = tokio::sync::mpsc::unbounded_channel();
        let store = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                store.lock().unwrap().push(line);
                let _ = tx.send(());
            }
        });
        Binary {
            child,
            lines,
            arrived,
        }
    }

    /// Waits (bounded by [`CHILD_LIMIT`]) until the process has logged a
    /// line containing every one of `parts`, and returns the first such
    /// line. Every line logged so far counts, whatever came before or after
    /// it: tasks log in no fixed order, so waits must not depend on one. On
    /// failure the panic shows everything the process logged.
    pub async fn wait_line(&mut self, parts: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + CHILD_LIMIT;
        loop {
            if let Some(line) = self.find_line(parts) {
                return line;
            }
            match tokio::time::timeout_at(deadline, self.arrived.recv()).await {
                Ok(Some(())) => {}
                // The reader stores a line before announcing it, so once it
                // has ended the store is complete.
                Ok(None) => match self.find_line(parts) {
                    Some(line) => return line,
                    None => panic!(
                        "the process ended before logging {parts:?}:\n{}",
                        self.lines().join("\n")
                    ),
                },
                Err(_) => panic!(
                    "no line with {parts:?} in {CHILD_LIMIT:?}; the log so far:\n{}",
                    self.lines().join("\n")
                ),
            }
        }
    }

    /// Like [`Binary::wait_line`], but `None` when the process ends without
    /// logging such a line, for tests that accept either outcome.
    pub async fn wait_line_or_exit(&mut self, parts: &[&str]) -> Option<String> {
        let deadline = tokio::time::Instant::now() + CHILD_LIMIT;
        loop {
            if let Some(line) = self.find_line(parts) {
                return Some(line);
            }
            match tokio::time::timeout_at(deadline, self.arrived.recv()).await {
                Ok(Some(())) => {}
                Ok(None) => return self.find_line(parts),
                Err(_) => panic!(
                    "no line with {parts:?} in {CHILD_LIMIT:?}; the log so far:\n{}",
                    self.lines().join("\n")
                ),
            }
        }
    }

    /// The first line logged so far that contains every one of `parts`.
    fn find_line(&self, parts: &[&str]) -> Option<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|line| parts.iter().all(|p| line.contains(p)))
            .cloned()
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

    /// Waits (bounded by [`CHILD_LIMIT`]) for the process to exit; its
    /// exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + CHILD_LIMIT;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the process did not exit in {CHILD_LIMIT:?}; its log:\n{}",
            self.lines().join("\n")
        );
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
