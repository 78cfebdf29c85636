//! The running configuration: one immutable snapshot built from a validated
//! [`Config`], read once per connection. Live backend state lives outside it
//! so that it survives a reload.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::time::Instant;

use crate::balance::{BackendState, PoolBalancer};
use crate::config::{self, Config};
use crate::route::RouteTable;
use crate::shutdown::Drain;

/// Everything a new connection needs to be routed, built once per
/// configuration load.
#[derive(Debug)]
pub struct Snapshot {
    /// Bumped on every successful load; the first is 1.
    pub version: u64,
    /// When this configuration was loaded.
    pub loaded_at: SystemTime,
    /// The validated configuration this was built from.
    pub config: Config,
    /// Route lookup over `config.routes`.
    pub routes: RouteTable,
    /// For each route (same index), the index of its pool in `config.pools`.
    pub route_pool: Vec<usize>,
    /// For each listener (same index as `config.listeners`), its TLS
    /// configuration when it is a wss:// listener.
    pub tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    /// For each pool (same index as `config.pools`), its balancer over the
    /// live backend states.
    pub balancers: Vec<PoolBalancer>,
}

impl Snapshot {
    /// Builds the runtime view of `config`. Validation has already checked
    /// every reference, so nothing here can fail.
    pub(crate) fn new(config: Config, version: u64, registry: &Registry) -> Snapshot {
        let routes = RouteTable::new(&config.routes);
        let route_pool = config.routes.iter().map(|r| r.pool_index).collect();
        let tls = config
            .listeners
            .iter()
            .map(|l| l.tls.as_ref().map(crate::tls::server_config))
            .collect();
        let balancers = config
            .pools
            .iter()
            .map(|pool| PoolBalancer::new(pool, registry.states_for(pool)))
            .collect();
        registry
            .started
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Snapshot {
            version,
            loaded_at: SystemTime::now(),
            config,
            routes,
            route_pool,
            tls,
            balancers,
        }
    }

    /// The listener `key` names, with its index.
    pub(crate) fn listener(&self, key: &ListenerKey) -> Option<(usize, &config::Listener)> {
        self.config
            .listeners
            .iter()
            .enumerate()
            .find(|(_, l)| ListenerKey::of(l) == *key)
    }
}

/// What identifies a listener across reloads: its configured address, so
/// that renaming it keeps its socket. Several listeners may ask for port 0
/// (any free port); those are told apart by name as well.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    bind: SocketAddr,
    ephemeral_name: Option<String>,
}

impl ListenerKey {
    /// The key of a configured listener.
    pub(crate) fn of(listener: &config::Listener) -> ListenerKey {
        ListenerKey {
            bind: listener.bind,
            ephemeral_name: (listener.bind.port() == 0).then(|| listener.name.clone()),
        }
    }

    /// The configured address.
    pub(crate) fn bind(&self) -> SocketAddr {
        self.bind
    }
}

/// Live backend state by pool name and address. A snapshot borrows the
/// states of its pools from here, so that active counts and health carry
/// over to the next snapshot for every backend both configurations have.
/// A backend a reload removes stays here, draining, until its last
/// connection ends.
#[derive(Debug, Default)]
pub struct Registry {
    entries: Mutex<HashMap<(String, SocketAddr), Arc<BackendState>>>,
    /// Set by graceful shutdown: every backend drains, including any a
    /// reload adds while the shutdown runs.
    shutdown: Mutex<Option<Drain>>,
    /// Backends drained through the admin API while still configured: they
    /// stay draining across reloads that keep them, until released. Locked
    /// before `entries` wherever both are.
    held: Mutex<HashSet<(String, SocketAddr)>>,
    /// A first snapshot was built: backends added from now on come up
    /// (slow start).
    started: std::sync::atomic::AtomicBool,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, SocketAddr), Arc<BackendState>>> {
        self.entries
            .lock()
            .expect("registry lock is never poisoned")
    }

    /// The states of `pool`'s backends, in its order; new backends get a
    /// fresh state, and a draining one that came back stops draining for
    /// new connections.
    pub(crate) fn states_for(&self, pool: &config::Pool) -> Vec<Arc<BackendState>> {
        let shutdown = *self.shutdown.lock().expect("not poisoned");
        let held = self.held.lock().expect("not poisoned");
        let started = self.started.load(std::sync::atomic::Ordering::Relaxed);
        let mut entries = self.lock();
        pool.backends
            .iter()
            .map(|b| {
                let key = (pool.name.clone(), b.addr);
                let hold = held.contains(&key);
                let state = entries.entry(key).or_insert_with(|| {
                    let state = Arc::new(BackendState::new(b.addr));
                    if let Some(drain) = shutdown {
                        state.announce_drain(drain);
                    }
                    // Added by a reload: it comes up now (slow start). The
                    // first configuration's backends start together.
                    if started {
                        state.came_up(Instant::now());
                    }
                    state
                });
                if state.is_draining() && shutdown.is_none() && !hold {
                    state.set_draining(false);
                    state.withdraw_drain();
                }
                state.clone()
            })
            .collect()
    }

    /// The live state of `addr` in pool `pool`, if a snapshot ever had it.
    pub fn get(&self, pool: &str, addr: SocketAddr) -> Option<Arc<BackendState>> {
        self.lock().get(&(pool.to_string(), addr)).cloned()
    }

    /// Graceful shutdown: announces `drain` to the connections of every
    /// backend, now and later.
    pub(crate) fn drain_all(&self, drain: Drain) {
        *self.shutdown.lock().expect("not poisoned") = Some(drain);
        for state in self.lock().values() {
            state.announce_drain(drain);
        }
    }

    /// Drains every backend `config` no longer has, and forgets drained
    /// backends whose connections have all ended. Returns the backends
    /// that started draining now.
    pub(crate) fn drain_removed(&self, config: &Config, drain: Drain) -> Vec<(String, SocketAddr)> {
        let kept: HashSet<(&str, SocketAddr)> = config
            .pools
            .iter()
            .flat_map(|p| p.backends.iter().map(move |b| (p.name.as_str(), b.addr)))
            .collect();
        let mut held = self.held.lock().expect("not poisoned");
        // Removed from the file: a hand drain becomes an ordinary removal.
        held.retain(|(pool, addr)| kept.contains(&(pool.as_str(), *addr)));
        let mut entries = self.lock();
        entries.retain(|key, state| {
            !(state.is_draining() && state.active() == 0) || held.contains(key)
        });
        let mut started = Vec::new();
        for ((pool, addr), state) in entries.iter() {
            if kept.contains(&(pool.as_str(), *addr)) || state.is_draining() {
                continue;
            }
            state.set_draining(true);
            state.announce_drain(drain);
            started.push((pool.clone(), *addr));
        }
        started
    }

    /// Drains backend `addr` of `pool` exactly as a reload that removes it
    /// would (its connections close by the end of `drain`, spread over the
    /// last quarter), but keeps it in the pool, draining, across reloads
    /// that keep it, until [`Registry::release_drained`]. Returns whether
    /// a drain started now (false: unknown, or draining already).
    pub(crate) fn hold_drained(&self, pool: &str, addr: SocketAddr, drain: Drain) -> bool {
        let key = (pool.to_string(), addr);
        let mut held = self.held.lock().expect("not poisoned");
        let entries = self.lock();
        let Some(state) = entries.get(&key) else {
            return false;
        };
        held.insert(key);
        if state.is_draining() {
            return false;
        }
        state.set_draining(true);
        state.announce_drain(drain);
        true
    }

    /// Returns a backend drained by [`Registry::hold_drained`] to service,
    /// as a reload that adds it back would: new connections may go to it.
    /// Connections that were open during the drain were already told when
    /// to close and keep that moment. Returns whether it was held. During
    /// a shutdown it stays draining.
    pub(crate) fn release_drained(&self, pool: &str, addr: SocketAddr) -> bool {
        let shutdown = *self.shutdown.lock().expect("not poisoned");
        let key = (pool.to_string(), addr);
        let mut held = self.held.lock().expect("not poisoned");
        let entries = self.lock();
        let was_held = held.remove(&key);
        if let (true, Some(state), None) = (was_held, entries.get(&key), shutdown) {
            state.set_draining(false);
            state.withdraw_drain();
        }
        was_held
    }

    /// Whether backend `addr` of `pool` is drained through the admin API.
    pub(crate) fn is_held(&self, pool: &str, addr: SocketAddr) -> bool {
        let held = self.held.lock().expect("not poisoned");
        held.contains(&(pool.to_string(), addr))
    }

    /// Backends of `pool` that are draining because a reload removed
    /// them, with their live state.
    pub(crate) fn draining(&self, pool: &str) -> Vec<Arc<BackendState>> {
        let held = self.held.lock().expect("not poisoned");
        self.lock()
            .iter()
            .filter(|(key, state)| key.0 == pool && state.is_draining() && !held.contains(*key))
            .map(|(_, state)| state.clone())
            .collect()
    }
}
