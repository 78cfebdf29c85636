//! `load`: the WebSocket load generator behind wsgate's benchmarks.
//!
//! ```text
//! cargo bench --bench load -- rtt --url ws://127.0.0.1:8080/echo --rate 5000 --size 64
//! cargo bench --bench load -- throughput --url wss://localhost:8443/ --ca cert.pem
//! cargo bench --bench load -- handshake --url ws://127.0.0.1:8080/
//! cargo bench --bench load -- idle --url ws://127.0.0.1:8080/ --connections 9000
//! cargo bench --bench load -- echo --bind 127.0.0.1:9001
//! ```
//!
//! Each run prints one JSON line on stdout and a readable summary on
//! stderr; `docs/benchmarks.md` explains every field.

mod loadgen;
mod report;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};

use loadgen::client::{self, Target};
use loadgen::{Mode, Options};

#[derive(Parser)]
#[command(
    name = "load",
    about = "WebSocket load generator and echo backend for wsgate's benchmarks"
)]
struct Cli {
    /// Ignored: `cargo bench` adds it to the arguments.
    #[arg(long, global = true, hide = true)]
    bench: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Fixed total message rate (open loop); round-trip time histograms.
    Rtt {
        #[command(flatten)]
        common: Common,
        /// Message size in bytes (at least 12).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Messages per second, all connections together.
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
    },
    /// Each connection keeps a number of messages in flight (closed loop).
    Throughput {
        #[command(flatten)]
        common: Common,
        /// Message size in bytes (at least 12).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Unanswered messages per connection.
        #[arg(long, short = 'w', default_value_t = 16)]
        in_flight: u32,
    },
    /// Connect, upgrade and close as fast as possible.
    Handshake {
        #[command(flatten)]
        common: Common,
    },
    /// Open connections and hold them (until the duration or a signal).
    Idle {
        #[command(flatten)]
        common: Common,
        /// Pause after the last connection opens before reading RSS.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        settle: Duration,
    },
    /// A WebSocket echo backend on each address.
    Echo {
        /// Address to listen on (repeatable).
        #[arg(long, required = true)]
        bind: Vec<SocketAddr>,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Turns the JSON lines of a benchmark run into the results section of
    /// docs/benchmarks.md.
    Report(report::ReportArgs),
}

/// Options every load mode takes.
#[derive(Args)]
struct Common {
    /// ws://HOST:PORT/PATH or wss://HOST:PORT/PATH (SNI from HOST).
    #[arg(long)]
    url: String,
    /// PEM file of certificates to trust for wss://.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Accept any certificate for wss://.
    #[arg(long)]
    insecure: bool,
    /// Connections (handshake: concurrent workers). Default per mode:
    /// rtt 50, throughput 8, handshake 8, idle 1000.
    #[arg(long, short = 'c')]
    connections: Option<u32>,
    /// The measured window (idle: how long to hold).
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load before the measured window, not counted.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Loopback source addresses (127.0.0.1 upwards) to spread connections
    /// over; 0 lets the kernel choose.
    #[arg(long, default_value_t = 64)]
    sources: u32,
    /// A process whose CPU time (and RSS, idle) to report (repeatable;
    /// summed).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Limit for one connect + upgrade and for one close handshake; also
    /// the drain time after the window.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// KEY=VALUE copied into the JSON line under "labels" (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Exit with a failure when any error was counted or nothing got
    /// through (for probes in scripts).
    #[arg(long)]
    check: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s}: expected KEY=VALUE"))
}

/// Upper bounds that keep every run finite and every buffer sane.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
const MAX_SIZE: usize = 64 * 1024 * 1024;
const MAX_CONNECTIONS: u32 = 200_000;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A plain `cargo bench` runs every bench without arguments; this one
    // only makes sense with a mode, so it steps aside instead of failing.
    let Some(command) = cli.command else {
        eprintln!("load: no mode given, nothing to do (see `cargo bench --bench load -- --help`)");
        return ExitCode::SUCCESS;
    };
    let result = match command {
        Command::Echo { bind, workers } => echo(&bind, workers),
        Command::Report(args) => report::run(&args),
        Command::Rtt { common, size, rate } => {
            if !(rate > 0.0 && rate <= 10_000_000.0) {
                Err("--rate must be above 0 and at most 10,000,000".to_string())
            } else {
                load(common, 50, Some(size), |size| Mode::Rtt { size, rate })
            }
        }
        Command::Throughput {
            common,
            size,
            in_flight,
        } => {
            if !(1..=100_000).contains(&in_flight) {
                Err("--in-flight must be 1 to 100,000".to_string())
            } else {
                load(common, 8, Some(size), |size| Mode::Throughput {
                    size,
                    in_flight,
                })
            }
        }
        Command::Handshake { common } => load(common, 8, None, |_| Mode::Handshake),
        Command::Idle { common, settle } => load(common, 1000, None, |_| Mode::Idle {
            settle: settle.min(MAX_DURATION),
            on_ready: Box::new(|event: &Value| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{event}");
                let _ = out.flush();
            }),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one load mode and prints its JSON line and summary.
fn load(
    common: Common,
    default_connections: u32,
    size: Option<usize>,
    mode: impl FnOnce(usize) -> Mode,
) -> Result<(), String> {
    let size = size.unwrap_or(loadgen::payload::HEADER_LEN);
    if !(loadgen::payload::HEADER_LEN..=MAX_SIZE).contains(&size) {
        return Err(format!("--size must be 12 to {MAX_SIZE} bytes"));
    }
    let connections = common.connections.unwrap_or(default_connections);
    if !(1..=MAX_CONNECTIONS).contains(&connections) {
        return Err(format!("--connections must be 1 to {MAX_CONNECTIONS}"));
    }
    for (name, d) in [
        ("--duration", common.duration),
        ("--warmup", common.warmup),
        ("--timeout", common.timeout),
    ] {
        if d > MAX_DURATION {
            return Err(format!("{name} is over 24 hours"));
        }
    }
    let target = Target::parse(&common.url)?;
    let tls = if target.tls {
        Some(client::tls_config(common.ca.as_deref(), common.insecure)?)
    } else {
        None
    };
    let options = Options {
        target,
        tls,
        connections,
        duration: common.duration,
        warmup: common.warmup,
        sources: common.sources,
        pids: common.pids,
        timeout: common.timeout,
    };
    let report = loadgen::run(options, mode(size))?;
    let mut json = report.to_json();
    let labels: Map<String, Value> = common
        .labels
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    json["labels"] = Value::Object(labels);
    println!("{json}");
    eprintln!("{}", report.summary());
    let live = &report.live;
    let through = live.received.get() + live.cycles.get() + live.opened.get();
    if common.check && (live.errors.total() > 0 || through == 0) {
        return Err("check failed: errors counted or nothing got through".to_string());
    }
    Ok(())
}

/// Runs the echo backend until the process is stopped.
fn echo(binds: &[SocketAddr], workers: usize) -> Result<(), String> {
    let runtime = match workers {
        0 => return Err("--workers must be at least 1".to_string()),
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut servers = tokio::task::JoinSet::new();
        for addr in binds {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            eprintln!("load echo: listening on {addr}");
            servers.spawn(loadgen::echo::serve(listener));
        }
        tokio::select! {
            _ = servers.join_next() => Err("an accept loop ended".to_string()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
