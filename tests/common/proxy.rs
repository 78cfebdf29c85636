//! The library's server in-process on loopback port 0, the configurations
//! the tests start it with, and the admin listener's client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use wsgate::server::Server;

use super::{parse_answer, within};

/// A running proxy; stops when dropped.
pub struct Proxy {
    addrs: Vec<(String, SocketAddr)>,
    /// The running proxy's shared parts (live state, metrics).
    pub shared: Arc<wsgate::server::Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl Proxy {
    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .expect("listener exists")
    }

    /// `ws://ADDR{path}` for the listener named `main`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr("main"), path)
    }
}

impl Proxy {
    /// Waits (bounded) until backend `addr` of pool `pool` has `n` active
    /// connections in the proxy's own count.
    pub async fn wait_active(&self, pool: &str, addr: SocketAddr, n: u32) {
        let state = self.shared.registry.get(pool, addr).expect("backend known");
        for _ in 0..1000 {
            if state.active() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "backend {addr} never reached {n} active connections (has {})",
            state.active()
        );
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the proxy on `toml` (relative paths against `base`).
pub async fn start_proxy_in(toml: &str, base: &Path) -> Proxy {
    let config = match wsgate::config::parse(toml, base, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("test configuration invalid: {e}\n{toml}"),
    };
    let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
    let server = Server::start(config, None).await.expect("binds");
    wsgate::admin::spawn(&server);
    let addrs = names
        .iter()
        .map(|n| (n.clone(), server.local_addr(n).unwrap()))
        .collect();
    let shared = server.shared().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Proxy {
        addrs,
        shared,
        stop: Some(stop),
    }
}

/// Starts the proxy on `toml`.
pub async fn start_proxy(toml: &str) -> Proxy {
    start_proxy_in(toml, Path::new(".")).await
}

/// A configuration with one plain listener `main` on port 0, a route
/// `/echo` to pool `p` of `backends`, and `extra` appended.
pub fn simple_config(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\npath_prefix = \"/echo\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\nbackends = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// A proxy config with listener `main` on port 0, route `/` to pool `p`
/// of `backends` (`addr`, weight), and `pool_extra` lines in the pool.
pub fn pool_config(backends: &[(SocketAddr, u32)], pool_extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(a, w)| format!("{{ addr = \"{a}\", weight = {w} }}"))
        .collect();
    format!(
        "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[[pool]]\nname = \"p\"\n{pool_extra}\nbackends = [{}]\n",
        list.join(", ")
    )
}

/// A plain HTTP/1.1 request to the admin listener; returns status and body.
pub async fn admin(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    within(stream.read_to_end(&mut out)).await.unwrap();
    let answer = parse_answer(&out);
    (answer.status, answer.body)
}

/// Asks the admin listener at `addr` for `path` until `done(status, body)`
/// holds, and returns that answer: readiness by state, not by log lines.
/// Bounded by `limit`; the panic shows the last answer.
pub async fn admin_until(
    addr: SocketAddr,
    method: &str,
    path: &str,
    limit: Duration,
    done: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (status, body) = admin(addr, method, path).await;
        if done(status, &body) {
            return (status, body);
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{method} {path} never satisfied the wait in {limit:?}; last answer {status}: {body}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample `name{labels}` in a Prometheus scrape (0 when
/// absent). `labels` is the exact label text, e.g. `status="404"`.
pub fn sample(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Starts the proxy on the configuration file at `path`, with reloads
/// reading that file.
pub async fn start_proxy_file(path: &Path) -> (Proxy, Server) {
    let config = match wsgate::config::load(path) {
        Ok(c) => c,
        Err(e) => panic!("test configuration invalid: {e}"),
    };
    let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
    let server = Server::start(config, Some(path.to_path_buf()))
        .await
        .expect("binds");
    wsgate::admin::spawn(&server);
    let addrs = names
        .iter()
        .map(|n| (n.clone(), server.local_addr(n).unwrap()))
        .collect();
    let shared = server.shared().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.clone().run(async move {
        let _ = stopped.await;
    }));
    let proxy = Proxy {
        addrs,
        shared,
        stop: Some(stop),
    };
    (proxy, server)
}

/// Writes `text` to `path` the way editors do: a temporary file renamed
/// over the original.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
