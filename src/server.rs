//! Listeners and their accept loops.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::config::Config;
use crate::connection::{self, Accepted};
use crate::health::HealthChecks;
use crate::snapshot::{Registry, Snapshot};

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("listener {name}: cannot bind {addr}: {source}")]
pub struct BindError {
    /// The listener's name.
    pub name: String,
    /// The address it asked for.
    pub addr: SocketAddr,
    /// The operating system's reason.
    pub source: io::Error,
}

/// The proxy with its listeners bound, ready to run.
pub struct Server {
    current: Arc<ArcSwap<Snapshot>>,
    listeners: Vec<(Arc<str>, TcpListener)>,
    registry: Arc<Registry>,
}

impl Server {
    /// Binds every listener of `config`. Binding happens before anything is
    /// served, so a port conflict is reported at start, not at first use.
    pub async fn bind(config: Config) -> Result<Server, BindError> {
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let socket = TcpListener::bind(l.bind)
                .await
                .map_err(|source| BindError {
                    name: l.name.clone(),
                    addr: l.bind,
                    source,
                })?;
            listeners.push((Arc::from(l.name.as_str()), socket));
        }
        let registry = Arc::new(Registry::default());
        let snapshot = Arc::new(Snapshot::new(config, 1, &registry));
        Ok(Server {
            current: Arc::new(ArcSwap::from(snapshot)),
            listeners,
            registry,
        })
    }

    /// The address a listener is bound to (useful with port 0).
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| &**n == name)
            .and_then(|(_, l)| l.local_addr().ok())
    }

    /// Live backend state, shared with every snapshot this server builds.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let _health = HealthChecks::start(&self.current.load());
        let _registry = self.registry;
        let mut tasks = tokio::task::JoinSet::new();
        for (name, listener) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                info!(listener = %name, %addr, "listening");
            }
            tasks.spawn(accept_loop(name, listener, self.current.clone()));
        }
        shutdown.await;
        tasks.abort_all();
    }
}

async fn accept_loop(name: Arc<str>, listener: TcpListener, current: Arc<ArcSwap<Snapshot>>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let accepted = Accepted {
                    peer,
                    listener: name.clone(),
                    snapshot: current.load_full(),
                };
                tokio::spawn(connection::serve(stream, accepted));
            }
            Err(e) => {
                // Out of file descriptors and similar: back off briefly rather
                // than spin on an error that will repeat at once.
                error!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
