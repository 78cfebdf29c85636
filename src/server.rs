//! The running proxy: its listeners and their accept loops, the current
//! snapshot behind one `ArcSwap`, applying a new configuration in place,
//! and graceful shutdown.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::connection::{self, Accepted};
use crate::discovery::{self, Discovery};
use crate::health::HealthChecks;
use crate::metrics::Metrics;
use crate::relay::CLOSE_GRACE;
use crate::reload::ReloadError;
use crate::shutdown::{Drain, Tracker};
use crate::snapshot::{ListenerKey, Registry, Snapshot};
use crate::{admin, reload};

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("listener {name}: cannot bind {addr}: {source}")]
pub struct BindError {
    /// The listener's name (`admin` for the admin listener).
    pub name: String,
    /// The address it asked for.
    pub addr: SocketAddr,
    /// The operating system's reason.
    pub source: io::Error,
}

/// The running proxy. Cloning gives another handle to the same proxy.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

/// What every part of the running proxy shares.
pub struct Shared {
    /// The snapshot new connections use.
    pub current: ArcSwap<Snapshot>,
    /// Live backend state, outliving snapshots.
    pub registry: Registry,
    /// Open connections, from accept to close.
    pub tracker: Arc<Tracker>,
    /// `/readyz` answers 200 while this is true.
    pub ready: AtomicBool,
    /// The file reloads read; `None` for the built-in demo configuration.
    pub config_path: Option<PathBuf>,
    /// Where the admin listener is bound, if there is one.
    pub admin_addr: Option<SocketAddr>,
    /// Serialises reloads: one at a time, each against the last.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// Counters and histograms; kept only when there is an admin listener
    /// to expose them.
    pub metrics: Option<Arc<Metrics>>,
    /// What backend names resolved to, and the tasks resolving them.
    pub discovery: Discovery,
    /// Accept loops by listener key (configured address).
    listeners: Mutex<HashMap<ListenerKey, Bound>>,
    health: Mutex<HealthChecks>,
}

/// A bound listener and its accept loop.
struct Bound {
    local: SocketAddr,
    task: AbortHandle,
}

impl Server {
    /// Binds every listener (and the admin listener) of `config`, then
    /// starts serving. Binding comes first, so a port conflict is reported
    /// at start, not at first use. `config_path` is the file reloads read.
    pub async fn start(
        mut config: Config,
        config_path: Option<PathBuf>,
    ) -> Result<Server, BindError> {
        let mut sockets = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            sockets.push((ListenerKey::of(l), bind(&l.name, l.bind).await?));
        }
        let admin = match &config.admin {
            Some(a) => Some(bind("admin", a.bind).await?),
            None => None,
        };
        let metrics = admin.is_some().then(|| Arc::new(Metrics::new()));
        // Names resolve before the first snapshot, so that a pool of names
        // has its backends from the first connection on.
        let discovery = Discovery::default();
        discovery.resolve(&config, false, metrics.as_deref()).await;
        discovery.fill(&mut config);
        let registry = Registry::default();
        let snapshot = Snapshot::new(config, 1, &registry);
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(snapshot),
            registry,
            tracker: Arc::default(),
            ready: AtomicBool::new(false),
            config_path,
            admin_addr: admin.as_ref().and_then(|a| a.local_addr().ok()),
            reload_lock: tokio::sync::Mutex::new(()),
            metrics,
            discovery,
            listeners: Mutex::default(),
            health: Mutex::default(),
        });
        // Ready means bound and configured (contract), which is true from
        // here on; nothing can be asked before the listeners serve.
        shared.ready.store(true, Ordering::Release);
        for (key, socket) in sockets {
            shared.spawn_accept(key, socket);
        }
        *shared.health.lock().expect("not poisoned") = HealthChecks::start(&shared.current.load());
        discovery::start(&shared);
        if let Some(socket) = admin {
            tokio::spawn(admin::serve(socket, shared.clone()));
        }
        info!(version = 1, "configuration loaded");
        Ok(Server { shared })
    }

    /// The address the listener named `name` is bound to (useful with
    /// port 0).
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        let snapshot = self.shared.current.load();
        let listener = snapshot.config.listeners.iter().find(|l| l.name == name)?;
        let listeners = self.shared.listeners.lock().expect("not poisoned");
        listeners.get(&ListenerKey::of(listener)).map(|b| b.local)
    }

    /// Where the admin listener is bound.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared.admin_addr
    }

    /// What the parts of this proxy share.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Reloads the configuration file (see [`reload::reload`]).
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        reload::reload(&self.shared).await
    }

    /// Serves until `until` completes, then shuts down gracefully.
    pub async fn run(self, until: impl std::future::Future<Output = ()>) {
        until.await;
        self.shutdown().await;
    }

    /// Graceful shutdown: stop accepting and report not ready, let open
    /// connections run until the drain closes them (spread over the last
    /// quarter of `drain_timeout`), and return as soon as none is left.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        shared.ready.store(false, Ordering::Release);
        for (_, bound) in shared.listeners.lock().expect("not poisoned").drain() {
            bound.task.abort();
        }
        *shared.health.lock().expect("not poisoned") = HealthChecks::default();
        shared.discovery.stop();
        let timeout = shared.current.load().config.drain_timeout;
        shared.registry.drain_all(Drain::now(timeout));
        let open = shared.tracker.open();
        info!(open, drain_timeout = ?timeout, "shutting down: draining open connections");
        // A drained connection gets its close by the end of the drain and
        // then at most the close grace; past that, nothing is waited for.
        let limit = timeout + CLOSE_GRACE + Duration::from_secs(1);
        if tokio::time::timeout(limit, shared.tracker.wait_idle())
            .await
            .is_err()
        {
            warn!(
                open = shared.tracker.open(),
                "drain ended with connections still open"
            );
        }
    }
}

impl Shared {
    /// Starts the accept loop of the listener `key` names.
    fn spawn_accept(self: &Arc<Self>, key: ListenerKey, socket: TcpListener) {
        let bind = key.bind();
        let local = socket.local_addr().unwrap_or(bind);
        info!(%bind, %local, "listening");
        let task = tokio::spawn(accept_loop(key.clone(), socket, self.clone()));
        let mut listeners = self.listeners.lock().expect("not poisoned");
        listeners.insert(
            key,
            Bound {
                local,
                task: task.abort_handle(),
            },
        );
    }

    /// Makes `config` the running configuration: binds its new listeners
    /// (failing whole if one cannot be bound), swaps the snapshot, stops
    /// listeners it no longer has, restarts health checks and drains
    /// removed backends. Returns the new version.
    pub async fn apply(self: &Arc<Self>, mut config: Config) -> Result<u64, BindError> {
        let mut fresh = Vec::new();
        {
            let known: Vec<ListenerKey> = self
                .listeners
                .lock()
                .expect("not poisoned")
                .keys()
                .cloned()
                .collect();
            for l in &config.listeners {
                let key = ListenerKey::of(l);
                if !known.contains(&key) {
                    fresh.push((key, bind(&l.name, l.bind).await?));
                }
            }
        }
        let version = self.current.load().version + 1;
        // Every name keeps its last resolved set across the reload.
        self.discovery.retain(&config);
        self.discovery.fill(&mut config);
        let snapshot = self.install(config, version, SystemTime::now());
        for (key, socket) in fresh {
            self.spawn_accept(key, socket);
        }
        {
            let mut listeners = self.listeners.lock().expect("not poisoned");
            listeners.retain(|key, bound| {
                let keep = snapshot.listener(key).is_some();
                if !keep {
                    info!(bind = %key.bind(), "listener removed; its open connections continue");
                    bound.task.abort();
                }
                keep
            });
        }
        discovery::start(self);
        Ok(version)
    }

    /// Swaps in the snapshot of `config` (backends already filled in),
    /// restarts health checks and drains the backends it no longer has:
    /// what a reload and a change of a resolved name have in common.
    pub fn install(&self, config: Config, version: u64, loaded_at: SystemTime) -> Arc<Snapshot> {
        let drain = Drain::now(config.drain_timeout);
        let mut snapshot = Snapshot::new(config, version, &self.registry);
        snapshot.loaded_at = loaded_at;
        let snapshot = Arc::new(snapshot);
        self.current.store(snapshot.clone());
        *self.health.lock().expect("not poisoned") = HealthChecks::start(&snapshot);
        for (pool, addr) in self.registry.drain_removed(&snapshot.config, drain) {
            info!(%pool, backend = %addr, drain_timeout = ?drain.timeout, "backend removed: draining");
        }
        snapshot
    }
}

async fn bind(name: &str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        name: name.to_string(),
        addr,
        source,
    })
}

async fn accept_loop(key: ListenerKey, listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let accepted = Accepted {
                    peer,
                    listener: key.clone(),
                    snapshot: shared.current.load_full(),
                    guard: shared.tracker.enter(),
                    shared: shared.clone(),
                };
                tokio::spawn(connection::serve(stream, accepted));
            }
            Err(e) => {
                // Out of file descriptors and similar: back off briefly rather
                // than spin on an error that will repeat at once.
                error!(bind = %key.bind(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
