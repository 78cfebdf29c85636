//! The load generator's core: modes, connections, checks and counts.
//!
//! Everything runs on one thread (a current-thread Tokio runtime and a
//! `LocalSet`), because the benchmark gives the generator one core that it
//! shares with the echo backend; only the `rtt` mode adds a pacing thread,
//! which sleeps with sub-millisecond precision where Tokio's timer wheel
//! rounds to whole milliseconds.
//!
//! A run: open the connections, run the mode for a warm-up and then the
//! measured window, drain (every message sent must come back, every
//! connection is closed with a close handshake), and return a [`Report`].

pub mod client;
pub mod codec;
pub mod echo;
pub mod payload;
pub mod stats;

mod churn;
mod idle;
mod messages;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use client::{Conn, ConnectError, Target};
use codec::{Decoder, Event, OpCode, Role};
use stats::{ErrorCounts, Latency, Live};

/// What every mode needs.
pub struct Options {
    /// Where to connect.
    pub target: Target,
    /// TLS settings, required for `wss://` targets.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Connections (rtt, throughput, idle) or concurrent workers (handshake).
    pub connections: u32,
    /// The measured window (idle: how long to hold the connections).
    pub duration: Duration,
    /// Load before the measured window starts, not counted.
    pub warmup: Duration,
    /// Loopback source addresses to spread connections over (0: let the
    /// kernel choose).
    pub sources: u32,
    /// Processes whose CPU time (and RSS, in idle mode) the report covers.
    pub pids: Vec<u32>,
    /// Limit for one connect + TLS + upgrade, and for one close handshake;
    /// also the drain time after the window.
    pub timeout: Duration,
}

/// The load pattern.
pub enum Mode {
    /// Open loop: `rate` messages of `size` bytes per second in total,
    /// spread evenly over the connections; round trips measured from the
    /// scheduled and from the actual send time.
    Rtt {
        /// Message size in bytes.
        size: usize,
        /// Messages per second, all connections together.
        rate: f64,
    },
    /// Closed loop: each connection keeps `in_flight` messages unanswered.
    Throughput {
        /// Message size in bytes.
        size: usize,
        /// Messages in flight per connection.
        in_flight: u32,
    },
    /// Connect, upgrade and close, as fast as the workers can.
    Handshake,
    /// Open the connections, then hold them.
    Idle {
        /// Pause between the last connection opening and the RSS reading.
        settle: Duration,
        /// Called once with `{"event": "ready", ...}` when all are open.
        on_ready: Box<dyn FnMut(&Value)>,
    },
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Rtt { .. } => "rtt",
            Mode::Throughput { .. } => "throughput",
            Mode::Handshake => "handshake",
            Mode::Idle { .. } => "idle",
        }
    }
}

/// The outcome of a run.
pub struct Report {
    /// `rtt`, `throughput`, `handshake` or `idle`.
    pub mode: &'static str,
    /// The parameters the run used.
    pub params: Map<String, Value>,
    /// Length of the measured window actually covered.
    pub window: Duration,
    /// Counters and errors.
    pub live: Live,
    /// Latency histograms by name.
    pub latencies: Vec<(&'static str, Latency)>,
    /// CPU time of the watched processes over the window, in µs.
    pub watched_cpu_us: Option<u64>,
    /// RSS of the watched processes before any connection opened, in KiB.
    pub watched_rss_before_kib: Option<u64>,
    /// RSS of the watched processes with all connections open (idle).
    pub watched_rss_kib: Option<u64>,
    /// The generator's own CPU time over the window, in µs.
    pub self_cpu_us: Option<u64>,
}

impl Report {
    /// The whole report as one JSON object.
    pub fn to_json(&self) -> Value {
        let secs = self.window.as_secs_f64().max(1e-9);
        let l = &self.live;
        let mb = |bytes: u64| bytes as f64 / secs / 1e6;
        let errors: Map<String, Value> = l
            .errors
            .by_name()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .chain([("total".to_string(), json!(l.errors.total()))])
            .collect();
        let latency: Map<String, Value> = self
            .latencies
            .iter()
            .map(|(k, h)| (k.to_string(), h.to_json()))
            .collect();
        json!({
            "mode": self.mode,
            "params": self.params,
            "window_s": (secs * 1000.0).round() / 1000.0,
            "counts": {
                "sent": l.sent.get(),
                "received": l.received.get(),
                "sent_bytes": l.sent_bytes.get(),
                "received_bytes": l.received_bytes.get(),
                "cycles": l.cycles.get(),
                "opened": l.opened.get(),
            },
            "rates": {
                "sent_per_s": l.sent.get() as f64 / secs,
                "received_per_s": l.received.get() as f64 / secs,
                "sent_mb_per_s": mb(l.sent_bytes.get()),
                "received_mb_per_s": mb(l.received_bytes.get()),
                "cycles_per_s": l.cycles.get() as f64 / secs,
            },
            "errors": errors,
            "first_failure": l.first_failure.borrow().clone(),
            "latency_us": latency,
            "watched": {
                "cpu_us": self.watched_cpu_us,
                "rss_before_kib": self.watched_rss_before_kib,
                "rss_kib": self.watched_rss_kib,
            },
            "self_cpu_us": self.self_cpu_us,
        })
    }

    /// A few readable lines for a person watching the run.
    pub fn summary(&self) -> String {
        let secs = self.window.as_secs_f64().max(1e-9);
        let l = &self.live;
        let mut out = format!("{} over {:.2} s", self.mode, secs);
        match self.mode {
            "rtt" | "throughput" => {
                out += &format!(
                    "\n  messages: {} sent, {} echoed intact ({:.0}/s); {:.2} MB/s each way",
                    l.sent.get(),
                    l.received.get(),
                    l.received.get() as f64 / secs,
                    l.received_bytes.get() as f64 / secs / 1e6
                )
            }
            "handshake" => {
                out += &format!(
                    "\n  cycles: {} ({:.0}/s)",
                    l.cycles.get(),
                    l.cycles.get() as f64 / secs
                )
            }
            _ => out += &format!("\n  connections open: {}", l.opened.get()),
        }
        for (name, h) in &self.latencies {
            if let Value::Object(p) = h.to_json() {
                out += &format!(
                    "\n  {name:<14} µs: p50 {} p99 {} p99.9 {} max {} (n={})",
                    p["p50"], p["p99"], p["p999"], p["max"], p["count"]
                );
            }
        }
        if let Some(cpu) = self.watched_cpu_us {
            out += &format!("\n  watched processes: {:.3} s CPU", cpu as f64 / 1e6);
        }
        if let (Some(before), Some(after)) = (self.watched_rss_before_kib, self.watched_rss_kib) {
            out += &format!("\n  watched RSS: {before} KiB before, {after} KiB open");
        }
        let errors: Vec<String> = l
            .errors
            .by_name()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        out += &format!(
            "\n  errors: {}",
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            }
        );
        if let Some(first) = l.first_failure.borrow().as_ref() {
            out += &format!("\n  first failure: {first}");
        }
        out
    }
}

/// Runs one mode to completion on a fresh single-threaded runtime.
pub fn run(opts: Options, mode: Mode) -> Result<Report, String> {
    if opts.target.tls && opts.tls.is_none() {
        return Err("wss:// needs a TLS configuration".to_string());
    }
    if opts.connections == 0 {
        return Err("at least one connection is needed".to_string());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    let name = mode.name();
    let ctx = Rc::new(Ctx::new(opts));
    let mut report = local.block_on(&runtime, async {
        match mode {
            Mode::Rtt { size, rate } => {
                messages::run(ctx.clone(), size, messages::Pace::Rate(rate)).await
            }
            Mode::Throughput { size, in_flight } => {
                messages::run(ctx.clone(), size, messages::Pace::InFlight(in_flight)).await
            }
            Mode::Handshake => churn::run(ctx.clone()).await,
            Mode::Idle { settle, on_ready } => idle::run(ctx.clone(), settle, on_ready).await,
        }
    });
    report.mode = name;
    // Tasks still pending (none, when every wait is bounded as it should
    // be) hold the context; dropping the set releases them.
    drop(local);
    let ctx = Rc::try_unwrap(ctx).map_err(|_| "a task outlived the run".to_string())?;
    report.live = ctx.live;
    let o = &ctx.opts;
    report.params.insert("url".into(), json!(o.target.url));
    report
        .params
        .insert("connections".into(), json!(o.connections));
    report
        .params
        .insert("duration_s".into(), json!(o.duration.as_secs_f64()));
    report
        .params
        .insert("warmup_s".into(), json!(o.warmup.as_secs_f64()));
    report.params.insert("pids".into(), json!(o.pids));
    Ok(report)
}

/// A fresh report with nothing measured yet; modes fill in what they know.
fn blank_report(params: Map<String, Value>) -> Report {
    Report {
        mode: "",
        params,
        window: Duration::ZERO,
        live: Live::default(),
        latencies: Vec::new(),
        watched_cpu_us: None,
        watched_rss_before_kib: None,
        watched_rss_kib: None,
        self_cpu_us: None,
    }
}

/// State shared by every task of a run.
struct Ctx {
    opts: Options,
    connector: Option<TlsConnector>,
    live: Live,
    seed: u64,
}

impl Ctx {
    fn new(opts: Options) -> Ctx {
        let connector = opts.tls.clone().map(TlsConnector::from);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Ctx {
            opts,
            connector,
            live: Live::default(),
            seed,
        }
    }

    fn errors(&self) -> &ErrorCounts {
        &self.live.errors
    }

    /// A per-connection pseudo-random seed (for keys and masks).
    fn seed_for(&self, id: u64) -> u64 {
        (self.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
    }

    /// Opens connection `id`, counting any failure by kind.
    async fn open(&self, id: u64) -> Option<(Conn, Vec<u8>)> {
        let o = &self.opts;
        let source = o.target.source_for(id, o.sources);
        let attempt = client::connect(
            &o.target,
            self.connector.as_ref(),
            source,
            self.seed_for(id),
        );
        let e = self.errors();
        let failed = match tokio::time::timeout(o.timeout, attempt).await {
            Ok(Ok(opened)) => return Some(opened),
            Ok(Err(failure)) => failure,
            Err(_) => {
                ErrorCounts::bump(&e.timeout);
                self.live.note_failure("connect + upgrade timed out");
                return None;
            }
        };
        ErrorCounts::bump(match failed {
            ConnectError::Tcp(_) => &e.connect,
            ConnectError::Tls(_) => &e.tls,
            ConnectError::Upgrade(_) => &e.upgrade,
        });
        self.live.note_failure(failed);
        None
    }
}

/// A small xorshift generator for masking keys: masks must vary (RFC 6455
/// section 5.3) but need not be cryptographic for a benchmark.
struct Rng(u64);

impl Rng {
    fn mask(&mut self) -> [u8; 4] {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 as u32).to_ne_bytes()
    }
}

/// Reads the watched processes' CPU time and the generator's own.
#[derive(Clone, Copy)]
struct CpuMark {
    watched: Option<u64>,
    own: Option<u64>,
}

impl CpuMark {
    fn now(pids: &[u32]) -> CpuMark {
        CpuMark {
            watched: if pids.is_empty() {
                None
            } else {
                stats::sum_over(pids, stats::cpu_us)
            },
            own: stats::cpu_us(std::process::id()),
        }
    }

    /// Fills the report's CPU figures with the time between two marks.
    fn fill(start: CpuMark, end: CpuMark, report: &mut Report) {
        report.watched_cpu_us = end.watched.zip(start.watched).map(|(b, a)| b - a);
        report.self_cpu_us = end.own.zip(start.own).map(|(b, a)| b - a);
    }
}

/// How a close handshake this side started ended.
enum CloseOutcome {
    /// The server answered with a close frame and closed TCP.
    Clean,
    /// The connection ended without a close frame, or with an error.
    Broken,
    /// A frame that breaks RFC 6455 arrived.
    Protocol,
    /// No answer within the limit.
    TimedOut,
}

/// Sends a close frame (1000) and waits for the server's close frame and
/// its TCP close (RFC 6455 section 7.1.1: the server closes TCP first).
/// Data frames still arriving are ignored. Bounded by `limit`.
async fn close_handshake(conn: &mut Conn, rng: &mut Rng, limit: Duration) -> CloseOutcome {
    let attempt = async {
        let mut out = Vec::with_capacity(8);
        codec::put_frame(
            &mut out,
            OpCode::Close,
            Some(rng.mask()),
            &1000u16.to_be_bytes(),
        );
        if conn.write_all(&out).await.is_err() || conn.flush().await.is_err() {
            return CloseOutcome::Broken;
        }
        let mut decoder = Decoder::new(Role::Client);
        let mut buf = vec![0u8; 4096];
        let mut filled = 0;
        let mut got_close = false;
        loop {
            match conn.read(&mut buf[filled..]).await {
                Ok(0) if got_close => return CloseOutcome::Clean,
                Ok(0) | Err(_) => return CloseOutcome::Broken,
                Ok(n) if !got_close => filled += n,
                Ok(_) => continue,
            }
            let used = decoder.decode(&mut buf[..filled], &mut |ev| {
                if let Event::Control {
                    opcode: OpCode::Close,
                    ..
                } = ev
                {
                    got_close = true;
                }
            });
            match used {
                Ok(used) => {
                    buf.copy_within(used..filled, 0);
                    filled -= used;
                }
                Err(_) => return CloseOutcome::Protocol,
            }
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or(CloseOutcome::TimedOut)
}

/// Counts a close handshake's outcome; true when it was clean.
fn count_close(errors: &ErrorCounts, outcome: CloseOutcome) -> bool {
    match outcome {
        CloseOutcome::Clean => return true,
        CloseOutcome::Broken => ErrorCounts::bump(&errors.closed),
        CloseOutcome::Protocol => ErrorCounts::bump(&errors.protocol),
        CloseOutcome::TimedOut => ErrorCounts::bump(&errors.timeout),
    }
    false
}

/// Whether `t` falls in the measured window `[start, end)`.
fn in_window(t: Instant, window: (Instant, Instant)) -> bool {
    t >= window.0 && t < window.1
}
