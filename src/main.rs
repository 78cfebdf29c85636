//! The `wsgate` command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing::{error, info, warn};

use wsgate::config::{self, Config};
use wsgate::server::Server;
use wsgate::{admin, reload};

/// A reverse proxy and load balancer for WebSocket traffic.
#[derive(Debug, Parser)]
#[command(
    name = "wsgate",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Configuration file to run with.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format on stderr; the level comes from RUST_LOG.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N", global = true)]
    workers: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
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
    Demo,
    /// Run only a WebSocket echo backend (for tests and benchmarks).
    Echo {
        /// Address to listen on; repeat for several.
        #[arg(long, value_name = "ADDR", required = true)]
        bind: Vec<SocketAddr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Demo) => match demo_config() {
            Ok(config) => run(config, None, cli.workers, true),
            Err(e) => fail(&e),
        },
        Some(Command::Echo { bind }) => echo(bind, cli.workers),
        None => match cli.config {
            Some(path) => match config::load(&path) {
                Ok(config) => run(config, Some(path), cli.workers, false),
                Err(e) => fail(&e),
            },
            None => {
                eprintln!("wsgate: no configuration; use --config FILE, `wsgate demo`, or --help");
                ExitCode::from(2)
            }
        },
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: journald, files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
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

fn run(config: Config, path: Option<PathBuf>, workers: Option<usize>, with_echo: bool) -> ExitCode {
    runtime(workers).block_on(async move {
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
        // The control plane around the proxy: the admin listener and the
        // reload triggers.
        admin::spawn(&server);
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
