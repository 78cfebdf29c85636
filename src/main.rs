//! The `wsgate` command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing::{error, info, warn};

use wsgate::config::{self, Config};
use wsgate::server::Server;
use wsgate::{admin, publish, reload};

mod logging;

/// Shown under every command's `--help`: what the environment, the signals
/// and the docs offer, which no flag says.
const AFTER_LONG_HELP: &str = "\
Environment:
  RUST_LOG    log level or filter (tracing EnvFilter syntax), e.g. info,
              debug or info,wsgate::access=warn; default info. An invalid
              value is reported on stderr and the default used.
  NO_COLOR    set: no colours even on a terminal.

Signals:
  SIGHUP           reload the configuration (as a file change or
                   POST /reload on the admin listener do)
  SIGTERM, SIGINT  graceful shutdown: listeners close, open connections
                   drain for up to drain_timeout; a second one exits at once

Docs: README.md and docs/ (configuration.md, operations.md) in the source
distribution; config.example.toml shows every key.";

/// A reverse proxy and load balancer for WebSocket traffic.
#[derive(Debug, Parser)]
#[command(
    name = "wsgate",
    version,
    about,
    long_about = "A reverse proxy and load balancer for WebSocket traffic.\n\n\
                  `wsgate --config FILE` runs the proxy with FILE and logs to stderr; \
                  the subcommands check a file, run the demo, probe a running \
                  instance's readiness, or run an echo backend.",
    after_long_help = AFTER_LONG_HELP,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Configuration file to run with.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    run: RunOptions,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Flags of the commands that run a server.
#[derive(Debug, Args)]
struct RunOptions {
    /// Log format on stderr; the level comes from RUST_LOG.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and exit: 0 when valid, 1 with every
    /// problem listed otherwise.
    Check {
        /// The file to check.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the built-in example configuration with echo backends on its
    /// backend addresses: ws://127.0.0.1:8080/echo answers at once.
    #[command(after_long_help = AFTER_LONG_HELP)]
    Demo {
        /// Run this file instead of the built-in example, still with echo
        /// backends on its backend addresses (the container image's default).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        run: RunOptions,
    },
    /// Ask a running wsgate whether it is ready (GET /readyz on its admin
    /// listener): exit 0 when it answers 200, 1 otherwise. For container
    /// health checks.
    Health {
        /// The admin listener's address; an unspecified address (0.0.0.0,
        /// [::]) is reached on loopback.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9900")]
        admin: String,
        /// Give up on a step (connect, send, read) after this long.
        #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Run only a WebSocket echo backend (for tests and benchmarks).
    Echo {
        /// Address to listen on; repeat for several.
        #[arg(long, value_name = "ADDR", required = true)]
        bind: Vec<SocketAddr>,
        #[command(flatten)]
        run: RunOptions,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Health { admin, timeout }) => health(&admin, timeout),
        Some(Command::Demo { config, run: opts }) => {
            // Kept until the command returns: dropping it writes the lines
            // still queued.
            let _log = init_logging(opts.log_format);
            let loaded = match &config {
                Some(path) => config::load(path),
                None => demo_config(),
            };
            match loaded {
                Ok(loaded) => run(loaded, config, opts.workers, true),
                Err(e) => fail(&e),
            }
        }
        Some(Command::Echo { bind, run: opts }) => {
            // Kept until the command returns: dropping it writes the lines
            // still queued.
            let _log = init_logging(opts.log_format);
            echo(bind, opts.workers)
        }
        None => match cli.config {
            Some(path) => {
                let _log = init_logging(cli.run.log_format);
                match config::load(&path) {
                    Ok(config) => run(config, Some(path), cli.run.workers, false),
                    Err(e) => fail(&e),
                }
            }
            None => {
                eprintln!("wsgate: no configuration; use --config FILE, `wsgate demo`, or --help");
                ExitCode::from(2)
            }
        },
    }
}

fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = logging::filter_from_env();
    // Colour only on a terminal: journald, files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    // Workers queue their lines; a thread writes them (wsgate::log_writer).
    let (writer, guard) = wsgate::log_writer::stderr();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.fmt_fields(logging::Logfmt).init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

/// `wsgate health`: one GET /readyz, answered 200 or not; `timeout` bounds
/// each step (connect, send, every read).
fn health(admin: &str, timeout: Duration) -> ExitCode {
    match probe_ready(admin, timeout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("wsgate health: {admin}: {why}");
            ExitCode::FAILURE
        }
    }
}

fn probe_ready(admin: &str, timeout: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream, ToSocketAddrs};

    let mut addr = admin
        .to_socket_addrs()
        .map_err(|e| format!("not an address: {e}"))?
        .next()
        .ok_or("the name has no address")?;
    // The admin listener bound to every interface answers on loopback too.
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect: {e}"))?;
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("cannot send the request: {e}"))?;
    // The status line is all that matters; the body is a few bytes.
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| format!("cannot read: {e}"))?;
    while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or("");
    match status_line.split(' ').nth(1) {
        Some("200") => Ok(()),
        Some(_) => Err(format!("not ready: {status_line}")),
        None => Err("no HTTP answer".to_string()),
    }
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(c) => {
            // Names that do not resolve here are warnings, not errors: this
            // machine may not see the production DNS.
            let warnings = runtime(Some(1)).block_on(wsgate::discovery::check_names(&c));
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            println!(
                "{}: OK ({} listener(s), {} route(s), {} pool(s){})",
                path.display(),
                c.listeners.len(),
                c.routes.len(),
                c.pools.len(),
                match warnings.len() {
                    0 => String::new(),
                    n => format!(", {n} warning(s)"),
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &config::ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::FAILURE
}

fn demo_config() -> Result<Config, config::ConfigError> {
    config::parse(config::EXAMPLE, Path::new("."), "<built-in example>")
}

fn runtime(workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n.max(1));
    }
    builder
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

/// Keeps a timer due within the next second at all times.
///
/// Tokio's time driver wakes the I/O driver (an eventfd write, then an
/// `epoll_wait` that returns at once) whenever a timer is set earlier
/// than the driver's next planned wake-up, even when the thread setting
/// it is the one that would be woken. Each connection sets a handshake
/// timer and an idle timer; on a quiet proxy nothing earlier is pending,
/// so every new connection paid two wake-ups it did not need. With this
/// tick pending, the planned wake-up is never more than a second away and
/// timers of a second or more are set without waking anything; the cost
/// is one wake-up a second.
async fn timer_horizon() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

fn run(config: Config, path: Option<PathBuf>, workers: Option<usize>, with_echo: bool) -> ExitCode {
    runtime(workers).block_on(async move {
        tokio::spawn(timer_horizon());
        // Handlers first: a signal that arrives once the listeners are up
        // must find them installed, not the default action.
        let mut stops = StopSignals::install();
        let hangups = reload::Hangups::install();
        if with_echo {
            let addrs: Vec<SocketAddr> = config
                .pools
                .iter()
                .flat_map(|p| p.backends.iter().map(|b| b.addr))
                .collect();
            for addr in addrs {
                let listener = match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        error!(%addr, error = %e, "cannot bind the demo's echo backend");
                        return ExitCode::FAILURE;
                    }
                };
                info!(%addr, "echo backend listening");
                tokio::spawn(wsgate::echo::serve(listener));
            }
        }
        let watch = path.is_some();
        let server = match Server::start(config, path).await {
            Ok(s) => s,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        // The control plane around the proxy: the admin listener, the
        // publish API (and cluster) and the reload triggers.
        admin::spawn(&server);
        if let Err(e) = publish::start(&server).await {
            error!("{e}");
            return ExitCode::FAILURE;
        }
        tokio::spawn(reload::on_sighup(hangups, server.shared().clone()));
        if watch {
            reload::watch_file(server.shared().clone());
        }
        stops.next().await;
        info!("stop signal received; a second one exits at once");
        tokio::select! {
            _ = server.shutdown() => {
                info!("stopped");
                ExitCode::SUCCESS
            }
            _ = stops.next() => {
                warn!("second stop signal: exiting now");
                std::process::exit(1);
            }
        }
    })
}

fn echo(binds: Vec<SocketAddr>, workers: Option<usize>) -> ExitCode {
    runtime(workers).block_on(async move {
        for addr in binds {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    info!(%addr, "echo backend listening");
                    tokio::spawn(wsgate::echo::serve(l));
                }
                Err(e) => {
                    error!(%addr, error = %e, "cannot bind");
                    return ExitCode::FAILURE;
                }
            }
        }
        StopSignals::install().next().await;
        ExitCode::SUCCESS
    })
}

/// SIGTERM and SIGINT, listened for from the moment they are installed.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> StopSignals {
        use tokio::signal::unix::{signal, SignalKind};
        StopSignals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler installs"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler installs"),
        }
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
