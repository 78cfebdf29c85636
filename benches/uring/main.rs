//! `uring`: a minimal single-threaded WebSocket relay for plain ws, built
//! twice over the same per-message work so that only the I/O mechanism
//! differs: `--engine uring` drives one io_uring (multishot accept,
//! multishot receive into a registered ring of provided buffers, sends
//! straight from those buffers) and `--engine epoll` runs the same steps on
//! Tokio's current-thread runtime (readiness through epoll, the way wsgate's
//! relay reads and writes).
//!
//! ```text
//! cargo bench --bench uring -- --engine uring --listen 127.0.0.1:18110 --backend 127.0.0.1:18100
//! cargo bench --bench uring -- --report results.jsonl --syscalls syscalls.txt
//! benches/uring/compare.sh --quick
//! ```
//!
//! Per connection both engines read the client's upgrade request (up to
//! 16 KiB), connect to the backend, forward the request, relay the answer,
//! and from then on relay bytes both ways: one read, every frame header of
//! what was read examined by wsgate's own per-direction state machine
//! ([`DirectionState`], the one the product's relay runs), one write of the
//! bytes as read. Nothing is unmasked or copied between the read and the
//! write; the product does the same. There is no routing, no timers, no
//! pings and no access log: what is measured is the cost of a crossing.
//!
//! This is an experiment for docs/benchmarks.md ("io_uring experiment"),
//! not part of wsgate.

mod poll;
mod report;
mod ring;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use wsgate::relay::state::{Direction, DirectionState, Rules, Step, Violation};

/// The longest upgrade request or answer taken; longer ones end the
/// connection (wsgate's default header limit).
pub const MAX_HEAD: usize = 16 * 1024;

/// The size of one read. wsgate reads into a 64 KiB per-thread buffer;
/// the messages of this comparison are 64 bytes, so any size from a few
/// KiB up reads them whole, and 16 KiB keeps the io_uring buffer ring small.
pub const READ_LEN: usize = 16 * 1024;

/// Connections open at once; more are closed as they arrive.
pub const MAX_CONNECTIONS: usize = 4096;

#[derive(Parser)]
#[command(
    name = "uring",
    about = "A minimal ws relay on io_uring or epoll, for the io_uring experiment"
)]
struct Cli {
    /// Ignored: `cargo bench` adds it to the arguments.
    #[arg(long, hide = true)]
    bench: bool,
    /// The I/O mechanism.
    #[arg(long, value_enum)]
    engine: Option<Engine>,
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:18110")]
    listen: SocketAddr,
    /// The WebSocket backend every connection is relayed to.
    #[arg(long, default_value = "127.0.0.1:18100")]
    backend: SocketAddr,
    /// Stop accepting after this many connections in all; the process
    /// ends once they have closed (0: accept until stopped).
    #[arg(long, default_value_t = 0)]
    max_accepts: u64,
    /// io_uring only: after a turn that submitted sends, wait up to this
    /// long for one more completion than the sends' own before handling
    /// them (0: return at the first completion; see ring.rs).
    #[arg(long, default_value_t = 500)]
    batch_wait_us: u32,
    /// Instead of relaying: print compare.sh's table from this file of
    /// the load generator's JSON lines.
    #[arg(long, conflicts_with = "engine")]
    report: Option<PathBuf>,
    /// With --report: the list of strace passes (see report.rs).
    #[arg(long, requires = "report")]
    syscalls: Option<PathBuf>,
}

/// Which loop relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// One io_uring: completions, no readiness.
    Uring,
    /// Tokio's current-thread runtime: readiness through epoll.
    Epoll,
}

/// What both engines are started with.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The backend every connection goes to.
    pub backend: SocketAddr,
    /// Accept at most this many connections in all, then stop once they
    /// are closed; `u64::MAX` for no limit.
    pub max_accepts: u64,
    /// io_uring only: how long a turn that submitted sends may wait for
    /// the next event before handling the sends' completions alone.
    pub batch_wait_us: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(results) = &cli.report {
        return match report::run(results, cli.syscalls.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("uring: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // A plain `cargo bench` runs every bench without arguments; this one
    // needs an engine, so it steps aside instead of failing.
    let Some(engine) = cli.engine else {
        eprintln!(
            "uring: no --engine given, nothing to do (see `cargo bench --bench uring -- --help`)"
        );
        return ExitCode::SUCCESS;
    };
    let settings = Settings {
        listen: cli.listen,
        backend: cli.backend,
        max_accepts: if cli.max_accepts == 0 {
            u64::MAX
        } else {
            cli.max_accepts
        },
        batch_wait_us: cli.batch_wait_us,
    };
    let result = match engine {
        Engine::Uring => ring::run(settings),
        Engine::Epoll => poll::run(settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uring ({engine:?}): {e}");
            ExitCode::FAILURE
        }
    }
}

/// The rules wsgate applies by default: 1 MiB frames and messages, no
/// compression negotiated (the load generator offers none).
pub fn rules() -> Rules {
    Rules {
        max_frame_bytes: 1024 * 1024,
        max_message_bytes: 1024 * 1024,
        deflate: false,
    }
}

/// The two directions' states of a new connection: client to backend
/// first.
pub fn states() -> [DirectionState; 2] {
    [
        DirectionState::new(Direction::ClientToBackend, rules()),
        DirectionState::new(Direction::BackendToClient, rules()),
    ]
}

/// Where the head of an HTTP message ends (just past the blank line), if
/// `buf` holds all of it.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// True when an HTTP answer's head says 101 Switching Protocols.
pub fn switches(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.1 101 ")
}

/// Lets `state` examine one read's bytes, frame header by frame header,
/// as wsgate's relay does before it writes them. The bytes are written on
/// unchanged whatever the state held back: this relay sends no frames of
/// its own (no pings, so no pong of its own to drop), and what the state
/// holds back of a header split across reads is the same bytes, released
/// in order.
pub fn examine(state: &mut DirectionState, mut input: &[u8]) -> Result<(), Violation> {
    // Every turn takes at least one byte or releases what was held, so the
    // input's length (plus one release per header) bounds the loop.
    for _ in 0..=2 * input.len() + 2 {
        let held = state.pending().len();
        if held > 0 {
            state.consume_pending(held);
        }
        if input.is_empty() {
            return Ok(());
        }
        match state.advance(input) {
            Step::Forward(n) | Step::Consumed(n) => input = &input[n..],
            Step::Violation(v) => return Err(v),
        }
    }
    unreachable!("the state takes a byte or releases its hold on every turn")
}
