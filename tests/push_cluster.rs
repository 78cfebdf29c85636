//! Push across three wsgate processes sharing one real Redis (issue 19):
//! every message reaches each target exactly once and in order per
//! publisher, a killed instance's users leave the registry within the
//! heartbeat bound, and a Redis restart makes publishes answer 503 until
//! it is back while local delivery goes on.
//!
//! Needs `redis-server`: installed from Debian when missing (`tools` kit).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{raw_request, require_program, within, Binary, RawAnswer, RawWs, TempDir};
use tokio::net::TcpStream;
use tokio::time::Instant;

const TOKEN: &str = "cluster-token";
const HEARTBEAT_MS: u64 = 500;

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start_on(port: u16) -> Redis {
        require_program("redis-server", "redis-server");
        let mut redis = Redis {
            child: Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server on PATH (apt-get install redis-server)"),
            port,
        };
        // Ready once it accepts connections; bounded.
        for _ in 0..500 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        redis.stop();
        panic!("redis-server did not start");
    }

    async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Redis::start_on(port).await
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Instance {
    bin: Binary,
    proxy: SocketAddr,
    publish: SocketAddr,
}

async fn start_instance(dir: &TempDir, n: usize, backend: SocketAddr, redis: u16) -> Instance {
    let path = dir.0.join(format!("node{n}.toml"));
    std::fs::write(dir.0.join("token"), TOKEN).unwrap();
    let toml = format!(
        r#"
[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
path_prefix = "/"
pool = "p"
tags = {{ user = "query:user", channels = "query:channels" }}

[[pool]]
name = "p"
backends = [{{ addr = "{backend}" }}]

[publish]
bind = "127.0.0.1:0"
token = "file:token"
requests_per_second = 100000

[cluster]
redis = "redis://127.0.0.1:{redis}"
node_id = "node{n}"
heartbeat = "{HEARTBEAT_MS}ms"
"#
    );
    std::fs::write(&path, toml).unwrap();
    let mut bin = Binary::start(&["--config", path.to_str().unwrap()]);
    let proxy = bin.wait_addr(&["listening", "local="], "local").await;
    let publish = bin.wait_addr(&["publish API listening"], "addr").await;
    // Logged by a task of its own: before or after the listener's line.
    if !bin
        .lines()
        .iter()
        .any(|l| l.contains("subscribed to the cluster"))
    {
        bin.wait_line(&["subscribed to the cluster"]).await;
    }
    Instance {
        bin,
        proxy,
        publish,
    }
}

async fn publish(at: SocketAddr, json: &str) -> RawAnswer {
    let request = format!(
        "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    raw_request(at, request.as_bytes()).await
}

async fn connections(at: SocketAddr, user: &str) -> Option<usize> {
    let request = format!(
        "GET /connections?user={user} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_request(at, request.as_bytes()).await;
    if answer.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
    Some(v["connections"].as_array()?.len())
}

/// Polls (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 20 s");
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

const CLIENTS: usize = 300;
const USERS: usize = 100;
const CHANNELS: usize = 10;
const PUBLISHERS: usize = 4;
const PUBLISHES: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_deliver_exactly_once_in_order_and_survive_failures() {
    let mut redis = Redis::start().await;
    let backend = common::echo_backend().await;
    let dir = TempDir::new("push-cluster");
    let mut nodes = Vec::new();
    for n in 0..3 {
        nodes.push(start_instance(&dir, n, backend.addr, redis.port).await);
    }

    // 300 clients: user u(i % 100), channel c(i % 10), on instance i % 3.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let path = format!("/?user=u{}&channels=c{}", i % USERS, i % CHANNELS);
        let (ws, answer) =
            RawWs::connect(nodes[i % 3].proxy, &common::upgrade_request(&path, "")).await;
        assert_eq!(answer.status, 101);
        clients.push(ws);
    }
    for u in 0..USERS {
        let at = nodes[u % 3].publish;
        eventually("the registry lists every connection", async || {
            connections(at, &format!("u{u}")).await == Some(3)
        })
        .await;
    }

    // 1,000 publishes from 4 publishers, each one after the other, through
    // random instances.
    let mut rng = Lcg(19);
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); CLIENTS];
    let mut sequence = [0usize; PUBLISHERS];
    for _ in 0..PUBLISHES {
        let p = rng.below(PUBLISHERS);
        sequence[p] += 1;
        let text = format!("p{p}:{}", sequence[p]);
        let at = nodes[rng.below(3)].publish;
        let json = if rng.below(2) == 0 {
            let u = rng.below(USERS);
            for (i, e) in expected.iter_mut().enumerate() {
                if i % USERS == u {
                    e.push(text.clone());
                }
            }
            format!(r#"{{"to":{{"user":"u{u}"}},"text":"{text}"}}"#)
        } else {
            let c = rng.below(CHANNELS);
            for (i, e) in expected.iter_mut().enumerate() {
                if i % CHANNELS == c {
                    e.push(text.clone());
                }
            }
            format!(r#"{{"to":{{"channel":"c{c}"}},"text":"{text}"}}"#)
        };
        let answer = publish(at, &json).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    // A last message to everyone, then each client's list must match
    // exactly: nothing missing, nothing twice, per publisher in order.
    for c in 0..CHANNELS {
        let json = format!(r#"{{"to":{{"channel":"c{c}"}},"text":"end"}}"#);
        assert_eq!(publish(nodes[c % 3].publish, &json).await.status, 200);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        loop {
            let f = client.recv().await.expect("a message");
            let text = String::from_utf8(f.payload).unwrap();
            if text == "end" {
                break;
            }
            got.push(text);
        }
        let by_publisher = |list: &[String]| {
            let mut m: HashMap<String, Vec<String>> = HashMap::new();
            for t in list {
                m.entry(t.split(':').next().unwrap().to_string())
                    .or_default()
                    .push(t.clone());
            }
            m
        };
        let missing: Vec<_> = expected[i].iter().filter(|t| !got.contains(t)).collect();
        assert_eq!(
            got.len(),
            expected[i].len(),
            "client {i}: missing {missing:?}; got {got:?}"
        );
        assert_eq!(by_publisher(&got), by_publisher(&expected[i]), "client {i}");
    }

    // Redis goes away: cluster publishes answer 503, this instance's own
    // connections still get the message.
    redis.stop();
    let answer = publish(
        nodes[0].publish,
        r#"{"to":{"user":"u0"},"text":"while down"}"#,
    )
    .await;
    assert_eq!(answer.status, 503, "{answer:?}");
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        body["delivered"], 1,
        "u0 has one connection on node0: {body}"
    );
    assert_eq!(clients[0].recv().await.unwrap().payload, b"while down");
    // Back again: publishes work once the registry is rewritten.
    let _redis = Redis::start_on(redis.port).await;
    for u in [0, 1, 2] {
        let at = nodes[u].publish;
        eventually(
            "the registry is rewritten after Redis restarted",
            async || connections(at, &format!("u{u}")).await == Some(3),
        )
        .await;
    }
    let answer = publish(nodes[1].publish, r#"{"to":{"user":"u0"},"text":"back"}"#).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    for i in [0, 100, 200] {
        assert_eq!(clients[i].recv().await.unwrap().payload, b"back");
    }

    // kill -9 one instance: its users vanish from the registry within
    // three heartbeats (plus the polling's own slack).
    let killed = Instant::now();
    nodes[2].bin.signal("KILL");
    let at = nodes[0].publish;
    eventually(
        "the killed instance's connections leave the registry",
        async || connections(at, "u2").await == Some(2),
    )
    .await;
    let bound = Duration::from_millis(3 * HEARTBEAT_MS) + Duration::from_secs(2);
    assert!(killed.elapsed() < bound, "took {:?}", killed.elapsed());
    drop(within(async { nodes }).await);
}
