//! Bodies stream through the real binary without being held: an upload and
//! a download, each far larger than any buffer, move the proxy's peak
//! resident memory by less than 8 MiB.

mod common;
mod http_kit;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;
use http_kit::*;

/// The binary on a configuration file; killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

async fn upload_then_download(c: &mut Conn, size: u64) {
    c.send(
        format!("POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: {size}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let chunk = vec![b'u'; 1024 * 1024];
    for _ in 0..size / chunk.len() as u64 {
        c.send(&chunk).await;
    }
    let r = c.response("POST").await.unwrap();
    assert_eq!(r.text(), format!("received {size} "));
    // The download is read and dropped chunk by chunk: the test must not
    // hold it either.
    c.send(get(&format!("/download?n={size}"), "").as_bytes())
        .await;
    let status = c.line().await.unwrap();
    assert!(status.contains(" 200 "), "{status}");
    let fields = c.fields().await.unwrap();
    let chunked = fields
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v == "chunked");
    let mut got = 0u64;
    if chunked {
        loop {
            let size_line = c.line().await.unwrap();
            let n = u64::from_str_radix(size_line.trim(), 16).unwrap();
            if n == 0 {
                c.fields().await.unwrap();
                break;
            }
            c.exact(n as usize + 2).await.unwrap();
            got += n;
        }
    } else {
        let n: u64 = fields
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap();
        while got < n {
            let take = (n - got).min(1024 * 1024);
            c.exact(take as usize).await.unwrap();
            got += take;
        }
    }
    assert_eq!(got, size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_upload_and_download_move_peak_memory_by_less_than_8_mib() {
    let backend = http_backend("a").await;
    let dir = TempDir::new("http-memory");
    let path = dir.0.join("wsgate.toml");
    std::fs::write(&path, http_config(&[backend.addr], "", "")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let running = Running(child);
    let pid = running.0.id();
    let found = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref().take(100).map_while(Result::ok) {
            if let Some(at) = line.find("local=") {
                let addr: String = line[at + 6..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                // Keep draining so the process never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                return addr.parse::<std::net::SocketAddr>().ok();
            }
        }
        None
    });
    let addr = within(found)
        .await
        .unwrap()
        .expect("the listener's address");

    let mut c = Conn::open(addr).await;
    // Warm up: buffers and connections reach their steady size.
    upload_then_download(&mut c, 16 * 1024 * 1024).await;
    let before = status_kib(pid, "VmHWM:");
    upload_then_download(&mut c, 256 * 1024 * 1024).await;
    let after = status_kib(pid, "VmHWM:");
    assert!(
        after - before < 8 * 1024,
        "peak RSS grew by {} KiB (from {before} KiB)",
        after - before
    );
}
