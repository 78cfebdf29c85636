//! The running proxy: its listeners and their accept loops, the current
//! snapshot behind one `ArcSwap`, applying a new configuration in place,
//! and graceful shutdown. What connections read lives in [`Runtime`];
//! the admin listener and the reload triggers are wired by the caller
//! (`main`), which keeps this module below them.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{error, info, warn};

use crate::admission::Gate;
use crate::config::{self, Config, ConfigError};
use crate::connection::{self, Accepted};
use crate::discovery::Discovery;
use crate::health::HealthChecks;
use crate::metrics::Metrics;
use crate::push::Hub;
use crate::rebalance::Rebalancers;
use crate::relay::inbox::QueueLimits;
use crate::relay::CLOSE_GRACE;
use crate::runtime::Runtime;
use crate::shutdown::Drain;
use crate::snapshot::{ListenerKey, Registry, Snapshot};

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

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The proxy runs the built-in demo configuration: there is no file.
    #[error("no configuration file to reload (the demo runs its built-in configuration)")]
    NoFile,
    /// The file could not be read or is invalid.
    #[error("{0}")]
    Invalid(ConfigError),
    /// A new or moved listener could not be bound.
    #[error("{0}")]
    Bind(BindError),
}

impl ReloadError {
    /// One line per problem, for the log and `POST /reload`.
    pub fn messages(&self) -> Vec<String> {
        match self {
            ReloadError::Invalid(e) => e.messages(),
            other => vec![other.to_string()],
        }
    }
}

/// Reload attempts remembered for the admin dashboard.
pub const RELOADS_KEPT: usize = 10;

/// One reload attempt: when it ran, and its new version or its problems.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadRecord {
    /// When it finished.
    pub at: SystemTime,
    /// The new version, or one line per problem.
    pub result: Result<u64, Vec<String>>,
}

/// What every part of the control plane shares. It reads as the
/// [`Runtime`] it holds, which is all that connections are given.
pub struct Shared {
    runtime: Arc<Runtime>,
    /// `/readyz` answers 200 while this is true.
    pub(crate) ready: AtomicBool,
    /// The file reloads read; `None` for the built-in demo configuration.
    pub(crate) config_path: Option<PathBuf>,
    /// Where the admin listener is bound, if there is one.
    pub admin_addr: Option<SocketAddr>,
    /// Serialises reloads: one at a time, each against the last.
    reload_lock: tokio::sync::Mutex<()>,
    /// The last [`RELOADS_KEPT`] reload attempts, oldest first.
    reloads: Mutex<VecDeque<ReloadRecord>>,
    /// The bound admin socket until the admin listener takes it.
    admin_socket: Mutex<Option<TcpListener>>,
    /// Descriptors held back so that the admin listener still accepts
    /// when the process runs out (see [`FdReserve`]).
    pub(crate) reserve: FdReserve,
    /// Accept loops by listener key (configured address).
    listeners: Mutex<HashMap<ListenerKey, Bound>>,
    health: Mutex<HealthChecks>,
    /// What backend names resolved to, and the tasks resolving them.
    pub(crate) discovery: Arc<Discovery>,
    /// Told by those tasks when a name's set of addresses changed.
    names_changed: mpsc::UnboundedSender<()>,
    rebalancers: Mutex<Rebalancers>,
}

impl Deref for Shared {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        &self.runtime
    }
}

/// A bound listener and its accept loop.
struct Bound {
    local: SocketAddr,
    task: AbortHandle,
}

impl Server {
    /// Binds every listener (and the admin listener) of `config`, then
    /// starts serving the proxy's listeners. Binding comes first, so a port
    /// conflict is reported at start, not at first use. The admin socket
    /// waits for [`Server::take_admin_socket`]. `config_path` is the file
    /// reloads read.
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
        let discovery = Arc::new(Discovery::default());
        discovery.resolve(&config, false, metrics.as_deref()).await;
        discovery.fill(&mut config);
        let registry = Registry::default();
        let queue = config
            .publish
            .as_ref()
            .map_or_else(QueueLimits::default, |p| QueueLimits {
                messages: p.queue_messages,
                bytes: p.queue_bytes,
            });
        let node = config.cluster.as_ref().map(|c| c.node_id.as_str());
        let hub = Arc::new(Hub::new(node, queue));
        let snapshot = Snapshot::new(config, 1, &registry);
        let runtime = Arc::new(Runtime {
            current: ArcSwap::from_pointee(snapshot),
            registry,
            tracker: Arc::default(),
            metrics,
            forwarder: crate::auth::forward::Forwarder::new(),
            hub,
            http: Arc::default(),
        });
        let (names_changed, changes) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            runtime,
            ready: AtomicBool::new(false),
            config_path,
            admin_addr: admin.as_ref().and_then(|a| a.local_addr().ok()),
            reload_lock: tokio::sync::Mutex::new(()),
            reloads: Mutex::default(),
            reserve: FdReserve::new(),
            admin_socket: Mutex::new(admin),
            listeners: Mutex::default(),
            health: Mutex::default(),
            discovery,
            names_changed,
            rebalancers: Mutex::default(),
        });
        // Ready means bound and configured (contract), which is true from
        // here on; nothing can be asked before the listeners serve.
        shared.ready.store(true, Ordering::Release);
        for (key, socket) in sockets {
            shared.spawn_accept(key, socket);
        }
        *shared.health.lock().expect("not poisoned") = HealthChecks::start(&shared.current.load());
        shared.resolve_every_interval();
        tokio::spawn(follow_names(Arc::downgrade(&shared), changes));
        *shared.rebalancers.lock().expect("not poisoned") =
            Rebalancers::start(&shared.current.load_full(), shared.metrics.clone());
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

    /// What the parts of this proxy share.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The bound admin socket, once: whoever serves the admin listener
    /// takes it.
    pub(crate) fn take_admin_socket(&self) -> Option<TcpListener> {
        self.shared
            .admin_socket
            .lock()
            .expect("not poisoned")
            .take()
    }

    /// Reloads the configuration file (see [`Shared::reload`]).
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        self.shared.reload().await
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
        *shared.rebalancers.lock().expect("not poisoned") = Rebalancers::default();
        let timeout = shared.current.load().config.drain_timeout;
        shared.registry.drain_all(Drain::now(timeout));
        shared.tracker.stop_keepalive();
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
    /// Loads the configuration file and makes it the running
    /// configuration: the one path that a file change, SIGHUP and
    /// `POST /reload` all take. Validation is exactly `wsgate check`'s; an
    /// invalid file is refused whole and the running configuration stays.
    /// Reloads run one at a time; each is counted and logged with its
    /// version or its errors.
    pub(crate) async fn reload(self: &Arc<Self>) -> Result<u64, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let result = self.apply_file().await;
        {
            let mut reloads = self.reloads.lock().expect("not poisoned");
            if reloads.len() == RELOADS_KEPT {
                reloads.pop_front();
            }
            reloads.push_back(ReloadRecord {
                at: SystemTime::now(),
                result: result.as_ref().map(|v| *v).map_err(ReloadError::messages),
            });
        }
        match &result {
            Ok(version) => {
                if let Some(m) = &self.metrics {
                    m.reload(true);
                }
                info!(version, "configuration reloaded");
            }
            Err(e) => {
                if let Some(m) = &self.metrics {
                    m.reload(false);
                }
                error!(errors = ?e.messages(), "configuration reload refused; the running configuration stays");
            }
        }
        result
    }

    /// The last reload attempts, oldest first.
    pub fn recent_reloads(&self) -> Vec<ReloadRecord> {
        let reloads = self.reloads.lock().expect("not poisoned");
        reloads.iter().cloned().collect()
    }

    async fn apply_file(self: &Arc<Self>) -> Result<u64, ReloadError> {
        let path = self.config_path.as_deref().ok_or(ReloadError::NoFile)?;
        let config = config::load(path).map_err(ReloadError::Invalid)?;
        // New names resolve before the swap; known ones keep their last set.
        let metrics = self.metrics.as_deref();
        self.discovery.resolve(&config, true, metrics).await;
        self.apply(config).await.map_err(ReloadError::Bind)
    }

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
    async fn apply(self: &Arc<Self>, mut config: Config) -> Result<u64, BindError> {
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
        self.resolve_every_interval();
        Ok(version)
    }

    /// Swaps in the snapshot of `config` (backends already filled in),
    /// restarts health checks and rebalancers, and drains the backends it
    /// no longer has: what a reload and a change of a resolved name have in
    /// common.
    fn install(&self, config: Config, version: u64, loaded_at: SystemTime) -> Arc<Snapshot> {
        let drain = Drain::now(config.drain_timeout);
        let mut snapshot = Snapshot::new(config, version, &self.registry);
        snapshot.loaded_at = loaded_at;
        let snapshot = Arc::new(snapshot);
        self.current.store(snapshot.clone());
        *self.health.lock().expect("not poisoned") = HealthChecks::start(&snapshot);
        *self.rebalancers.lock().expect("not poisoned") =
            Rebalancers::start(&snapshot, self.metrics.clone());
        for (pool, addr) in self.registry.drain_removed(&snapshot.config, drain) {
            info!(%pool, backend = %addr, drain_timeout = ?drain.timeout, "backend removed: draining");
        }
        snapshot
    }

    /// (Re)starts the resolution of the running configuration's names.
    fn resolve_every_interval(&self) {
        let snapshot = self.current.load();
        let (metrics, changed) = (self.metrics.clone(), self.names_changed.clone());
        self.discovery.start(&snapshot.config, metrics, changed);
    }

    /// Installs the running configuration again with the names' current
    /// sets: same version, new backends, removed addresses drained. Under
    /// the reload lock, so that a reload and this never interleave.
    async fn refresh_names(&self) {
        let _one_at_a_time = self.reload_lock.lock().await;
        let current = self.current.load_full();
        let mut config = current.config.clone();
        self.discovery.fill(&mut config);
        self.install(config, current.version, current.loaded_at);
    }
}

/// Rebuilds the snapshot whenever a resolution changed a name's set, until
/// the proxy is gone. A burst of changes is one rebuild.
async fn follow_names(shared: Weak<Shared>, mut changes: mpsc::UnboundedReceiver<()>) {
    while changes.recv().await.is_some() {
        while changes.try_recv().is_ok() {}
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.refresh_names().await;
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
    let mut backoff = AcceptBackoff::new(key.bind());
    // Admission state lives as long as the listener's socket, across reloads.
    let gate = Arc::new(Gate::default());
    let local = listener
        .local_addr()
        .ok()
        .filter(|addr| !addr.ip().is_unspecified());
    loop {
        // Public listeners leave the last descriptors to the admin
        // listener: at the limit, clients wait in the backlog instead.
        if !shared.reserve.refill() {
            backoff.reserve_short().await;
            continue;
        }
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff.succeeded();
                let accepted = Accepted {
                    peer,
                    local,
                    listener: key.clone(),
                    snapshot: shared.current.load_full(),
                    guard: shared.tracker.enter(),
                    runtime: shared.runtime.clone(),
                    gate: gate.clone(),
                };
                tokio::spawn(connection::serve(stream, accepted));
            }
            Err(e) => backoff.failed(&e).await,
        }
    }
}

/// How an accept loop waits after a failed `accept` (out of descriptors,
/// mostly): the error repeats at once, so retrying at once only spins.
/// The pause doubles from 10 ms to 1 s while failures continue, and the
/// error is logged at most once per [`ACCEPT_LOG_EVERY`] with the number
/// of failures since the last line.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    bind: SocketAddr,
    pause: Duration,
    failures: u64,
    last_log: Option<tokio::time::Instant>,
}

/// The shortest interval between two "accept failed" lines of one listener.
pub(crate) const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);
const PAUSE_MIN: Duration = Duration::from_millis(10);
const PAUSE_MAX: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    /// A backoff for the listener bound to `bind`.
    pub(crate) fn new(bind: SocketAddr) -> AcceptBackoff {
        AcceptBackoff {
            bind,
            pause: PAUSE_MIN,
            failures: 0,
            last_log: None,
        }
    }

    /// An accept worked: the next failure pauses briefly again.
    pub(crate) fn succeeded(&mut self) {
        self.pause = PAUSE_MIN;
    }

    /// An accept failed with `e`: logs (rate-limited) and pauses.
    pub(crate) async fn failed(&mut self, e: &io::Error) {
        if let Some(failures) = self.due(tokio::time::Instant::now()) {
            error!(bind = %self.bind, error = %e, failures, "accept failed");
        }
        self.pause().await;
    }

    /// The descriptor reserve is not whole: logs (rate-limited) and pauses
    /// instead of accepting.
    pub(crate) async fn reserve_short(&mut self) {
        if let Some(failures) = self.due(tokio::time::Instant::now()) {
            warn!(bind = %self.bind, failures, "descriptors nearly exhausted: not accepting until some are free");
        }
        self.pause().await;
    }

    /// Counts a failure at `now`; the count since the last line when a
    /// line is due.
    fn due(&mut self, now: tokio::time::Instant) -> Option<u64> {
        self.failures += 1;
        let due = self
            .last_log
            .is_none_or(|last| now.duration_since(last) >= ACCEPT_LOG_EVERY);
        if !due {
            return None;
        }
        self.last_log = Some(now);
        Some(std::mem::take(&mut self.failures))
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(PAUSE_MAX);
    }
}

/// A few descriptors (of `/dev/null`) held back for the admin listener.
///
/// At the descriptor limit an orchestrator's health probe must still get
/// an answer, or it restarts the process and cuts every connection. Public
/// accept loops accept only while the reserve is whole, so they stop just
/// before the limit; the admin listener, when its accept fails for want of
/// a descriptor, gives the reserve back and accepts with it. Backend
/// connects can still take the last descriptors; those fail with 503 and
/// leave the backend up.
#[derive(Debug)]
pub(crate) struct FdReserve {
    held: Mutex<Vec<std::fs::File>>,
}

/// Descriptors in the reserve.
const RESERVE: usize = 4;

impl FdReserve {
    fn new() -> FdReserve {
        let reserve = FdReserve {
            held: Mutex::new(Vec::with_capacity(RESERVE)),
        };
        reserve.refill();
        reserve
    }

    /// Takes back what was given away, as far as descriptors allow;
    /// whether the reserve is whole.
    pub(crate) fn refill(&self) -> bool {
        let mut held = self.held.lock().expect("not poisoned");
        while held.len() < RESERVE {
            match std::fs::File::open("/dev/null") {
                Ok(f) => held.push(f),
                Err(_) => return false,
            }
        }
        true
    }

    /// Gives every reserved descriptor back to the process; whether there
    /// were any.
    pub(crate) fn release(&self) -> bool {
        let mut held = self.held.lock().expect("not poisoned");
        let had = !held.is_empty();
        held.clear();
        had
    }
}

/// Whether an I/O error means the process (or the system) has no
/// descriptor to spare.
pub(crate) fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failed_accepts_pause_and_log_once_per_interval() {
        let mut backoff = AcceptBackoff::new("127.0.0.1:1".parse().unwrap());
        let start = tokio::time::Instant::now();
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        for _ in 0..20 {
            backoff.failed(&e).await;
        }
        // 10 ms doubling to 1 s: 10+20+...+640 ms, then 1 s each.
        let slept = start.elapsed();
        assert!(slept >= Duration::from_secs(14), "{slept:?}");
        backoff.succeeded();
        let before = tokio::time::Instant::now();
        backoff.failed(&e).await;
        assert_eq!(before.elapsed(), PAUSE_MIN);
    }

    #[test]
    fn the_failure_log_is_rate_limited_and_counts_what_it_skipped() {
        let mut backoff = AcceptBackoff::new("127.0.0.1:1".parse().unwrap());
        let t0 = tokio::time::Instant::now();
        assert_eq!(backoff.due(t0), Some(1));
        let lines = (1..100u32)
            .filter_map(|i| backoff.due(t0 + Duration::from_millis(50) * i))
            .collect::<Vec<_>>();
        // 99 failures over 4.95 s: none logged.
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(backoff.due(t0 + ACCEPT_LOG_EVERY), Some(100));
    }
}
