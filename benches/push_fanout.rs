//! `push_fanout`: one publish to a channel that many connections listen to;
//! how long until the last of them has it.
//!
//! ```text
//! cargo bench --bench push_fanout -- --url ws://127.0.0.1:18030/ -c 9000 \
//!     --publish 127.0.0.1:18040 --token s3cret
//! ```
//!
//! Connections are spread round robin over every `--url` (one per wsgate
//! instance) and join channel `--channel` through the query
//! (`tags = { channels = "query:channels" }` on the route). Once all are
//! upgraded and `--settle` has passed (the cluster registry is written
//! within a heartbeat), one message is published to the first `--publish`
//! address. Prints one JSON line: the connections, the publish's answer
//! time, the time of the first and the last delivery, and deliveries per
//! second. `benches/push/fanout.sh` runs it against one node and three.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

struct Args {
    urls: Vec<String>,
    connections: usize,
    publish: SocketAddr,
    token: String,
    channel: String,
    size: usize,
    settle: Duration,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        urls: Vec::new(),
        connections: 9000,
        publish: "127.0.0.1:18040".parse().unwrap(),
        token: String::new(),
        channel: "bench".to_string(),
        size: 64,
        settle: Duration::from_secs(1),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--bench" => {}
            "--url" => args.urls.push(value()?),
            "-c" | "--connections" => {
                args.connections = value()?.parse().map_err(|e| format!("{e}"))?
            }
            "--publish" => args.publish = value()?.parse().map_err(|e| format!("{e}"))?,
            "--token" => args.token = value()?,
            "--channel" => args.channel = value()?,
            "--size" => args.size = value()?.parse().map_err(|e| format!("{e}"))?,
            "--settle" => {
                args.settle = humantime::parse_duration(&value()?).map_err(|e| format!("{e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.urls.is_empty() {
        return Err("give at least one --url".to_string());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("push_fanout: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for i in 0..args.connections {
        let url = format!(
            "{}?channels={}",
            args.urls[i % args.urls.len()],
            args.channel
        );
        let (tx, ready_tx) = (tx.clone(), ready_tx.clone());
        tokio::spawn(async move {
            let Ok((ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
                eprintln!("push_fanout: connection {i} failed");
                return;
            };
            let _ = ready_tx.send(());
            let (_sink, mut stream) = ws.split();
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Text(_) | Message::Binary(_)) {
                    let _ = tx.send(Instant::now());
                    return;
                }
            }
        });
    }
    drop((tx, ready_tx));
    for _ in 0..args.connections {
        if ready_rx.recv().await.is_none() {
            eprintln!("push_fanout: not every connection was upgraded");
            return ExitCode::FAILURE;
        }
    }
    tokio::time::sleep(args.settle).await;
    let started = Instant::now();
    let body = format!(
        r#"{{"to":{{"channel":"{}"}},"text":"{}"}}"#,
        args.channel,
        "x".repeat(args.size)
    );
    let answer = match post(args.publish, &args.token, &body).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("push_fanout: publish failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let answered = started.elapsed();
    let mut first = None;
    let mut last = started;
    let mut received = 0usize;
    while received < args.connections {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(at)) => {
                first.get_or_insert(at);
                last = last.max(at);
                received += 1;
            }
            _ => break,
        }
    }
    let last_ms = last.duration_since(started).as_secs_f64() * 1e3;
    let first_ms = first.map_or(0.0, |f| f.duration_since(started).as_secs_f64() * 1e3);
    let rate = received as f64 / (last_ms / 1e3).max(1e-9);
    println!(
        "{{\"connections\":{},\"received\":{received},\"publish_answer_ms\":{:.2},\"first_ms\":{first_ms:.2},\"last_ms\":{last_ms:.2},\"deliveries_per_s\":{rate:.0},\"answer\":{}}}",
        args.connections,
        answered.as_secs_f64() * 1e3,
        answer.trim()
    );
    if received == args.connections {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One `POST /publish`; the answer's body.
async fn post(addr: SocketAddr, token: &str, body: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "POST /publish HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out
        .split_once("\r\n\r\n")
        .map_or(out.clone(), |(_, b)| b.to_string()))
}
