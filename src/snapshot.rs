//! The running configuration: one immutable snapshot built from a validated
//! [`Config`], read once per connection. Live backend state lives outside it
//! so that it survives a reload.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::balance::{BackendState, PoolBalancer};
use crate::config::{self, Config};
use crate::route::RouteTable;
use crate::shutdown::{Drain, DrainSignal};

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
    pub fn new(config: Config, version: u64, registry: &Registry) -> Snapshot {
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
    pub fn listener(&self, key: &ListenerKey) -> Option<(usize, &config::Listener)> {
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
    pub fn of(listener: &config::Listener) -> ListenerKey {
        ListenerKey {
            bind: listener.bind,
            ephemeral_name: (listener.bind.port() == 0).then(|| listener.name.clone()),
        }
    }

    /// The configured address.
    pub fn bind(&self) -> SocketAddr {
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
    entries: Mutex<HashMap<(String, SocketAddr), Entry>>,
    /// Set by graceful shutdown: every backend drains, including any a
    /// reload adds while the shutdown runs.
    shutdown: Mutex<Option<Drain>>,
}

#[derive(Debug)]
struct Entry {
    state: Arc<BackendState>,
    drain: watch::Sender<Option<Drain>>,
    /// Drained through the admin API while still configured: stays
    /// draining across reloads that keep it, until released.
    held: bool,
}

impl Entry {
    fn new(addr: SocketAddr, shutdown: Option<Drain>) -> Entry {
        Entry {
            state: Arc::new(BackendState::new(addr)),
            drain: watch::Sender::new(shutdown),
            held: false,
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, SocketAddr), Entry>> {
        self.entries
            .lock()
            .expect("registry lock is never poisoned")
    }

    /// The states of `pool`'s backends, in its order; new backends get a
    /// fresh state, and a draining one that came back stops draining for
    /// new connections.
    pub fn states_for(&self, pool: &config::Pool) -> Vec<Arc<BackendState>> {
        let shutdown = *self.shutdown.lock().expect("not poisoned");
        let mut entries = self.lock();
        pool.backends
            .iter()
            .map(|b| {
                let key = (pool.name.clone(), b.addr);
                let entry = entries
                    .entry(key)
                    .or_insert_with(|| Entry::new(b.addr, shutdown));
                if entry.state.is_draining() && shutdown.is_none() && !entry.held {
                    entry.state.set_draining(false);
                    entry.drain = watch::Sender::new(None);
                }
                entry.state.clone()
            })
            .collect()
    }

    /// The live state of `addr` in pool `pool`, if a snapshot ever had it.
    pub fn get(&self, pool: &str, addr: SocketAddr) -> Option<Arc<BackendState>> {
        self.lock()
            .get(&(pool.to_string(), addr))
            .map(|e| e.state.clone())
    }

    /// Graceful shutdown: announces `drain` to the connections of every
    /// backend, now and later.
    pub fn drain_all(&self, drain: Drain) {
        *self.shutdown.lock().expect("not poisoned") = Some(drain);
        for entry in self.lock().values() {
            entry.drain.send_if_modified(|current| {
                let unset = current.is_none();
                if unset {
                    *current = Some(drain);
                }
                unset
            });
        }
    }

    /// Announces a drain of backend `addr` of `pool` to its connections.
    pub fn drain_signal(&self, pool: &str, addr: SocketAddr) -> DrainSignal {
        match self.lock().get(&(pool.to_string(), addr)) {
            Some(entry) => entry.drain.subscribe(),
            None => watch::Sender::new(*self.shutdown.lock().expect("not poisoned")).subscribe(),
        }
    }

    /// Drains every backend `config` no longer has, and forgets drained
    /// backends whose connections have all ended. Returns the backends
    /// that started draining now.
    pub fn drain_removed(&self, config: &Config, drain: Drain) -> Vec<(String, SocketAddr)> {
        let kept: HashSet<(&str, SocketAddr)> = config
            .pools
            .iter()
            .flat_map(|p| p.backends.iter().map(move |b| (p.name.as_str(), b.addr)))
            .collect();
        let mut entries = self.lock();
        entries.retain(|(pool, addr), e| {
            let idle = e.state.is_draining() && e.state.active() == 0;
            !idle || (e.held && kept.contains(&(pool.as_str(), *addr)))
        });
        let mut started = Vec::new();
        for ((pool, addr), entry) in entries.iter_mut() {
            if kept.contains(&(pool.as_str(), *addr)) {
                continue;
            }
            // Removed from the file: an admin drain becomes a removal.
            entry.held = false;
            if entry.state.is_draining() {
                continue;
            }
            entry.state.set_draining(true);
            entry.drain.send_replace(Some(drain));
            started.push((pool.clone(), *addr));
        }
        started
    }

    /// Drains backend `addr` of `pool` exactly as a reload that removes it
    /// would (its connections close by the end of `drain`, spread over the
    /// last quarter), but keeps it in the pool, draining, across reloads
    /// that keep it, until [`Registry::release_drained`]. Returns whether
    /// a drain started now (false: unknown, or draining already).
    pub fn hold_drained(&self, pool: &str, addr: SocketAddr, drain: Drain) -> bool {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(&(pool.to_string(), addr)) else {
            return false;
        };
        entry.held = true;
        if entry.state.is_draining() {
            return false;
        }
        entry.state.set_draining(true);
        entry.drain.send_replace(Some(drain));
        true
    }

    /// Returns a backend drained by [`Registry::hold_drained`] to service,
    /// as a reload that adds it back would: new connections may go to it.
    /// Connections that were open during the drain were already told when
    /// to close and keep that moment. Returns whether it was held. Does
    /// nothing during shutdown, or to a backend a reload removed.
    pub fn release_drained(&self, pool: &str, addr: SocketAddr) -> bool {
        let shutdown = *self.shutdown.lock().expect("not poisoned");
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(&(pool.to_string(), addr)) else {
            return false;
        };
        let held = std::mem::replace(&mut entry.held, false);
        if held && shutdown.is_none() {
            entry.state.set_draining(false);
            entry.drain = watch::Sender::new(None);
        }
        held
    }

    /// Whether backend `addr` of `pool` is drained through the admin API.
    pub fn is_held(&self, pool: &str, addr: SocketAddr) -> bool {
        self.lock()
            .get(&(pool.to_string(), addr))
            .is_some_and(|e| e.held)
    }

    /// Backends of `pool` that are draining because a reload removed
    /// them, with their live state.
    pub fn draining(&self, pool: &str) -> Vec<Arc<BackendState>> {
        self.lock()
            .iter()
            .filter(|((p, _), e)| p == pool && e.state.is_draining() && !e.held)
            .map(|(_, e)| e.state.clone())
            .collect()
    }
}
