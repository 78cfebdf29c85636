//! The running configuration: one immutable snapshot built from a validated
//! [`Config`], read once per connection. Live backend state lives outside it
//! so that it survives a reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::balance::{BackendState, PoolBalancer};
use crate::config::{self, Config};
use crate::route::RouteTable;

/// Everything a new connection needs to be routed, built once per
/// configuration load.
#[derive(Debug)]
pub struct Snapshot {
    /// Bumped on every successful load; the first is 1.
    pub version: u64,
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
        let route_pool = config
            .routes
            .iter()
            .map(|r| {
                config
                    .pools
                    .iter()
                    .position(|p| p.name == r.pool)
                    .expect("validation checked every route's pool")
            })
            .collect();
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
            config,
            routes,
            route_pool,
            tls,
            balancers,
        }
    }

    /// The listener named `name`, with its index.
    pub fn listener(&self, name: &str) -> Option<(usize, &config::Listener)> {
        self.config
            .listeners
            .iter()
            .enumerate()
            .find(|(_, l)| l.name == name)
    }
}

/// Live backend state by pool name and address. A snapshot borrows the
/// states of its pools from here, so that active counts and health carry
/// over to the next snapshot for every backend both configurations have.
#[derive(Debug, Default)]
pub struct Registry {
    states: Mutex<HashMap<(String, SocketAddr), Arc<BackendState>>>,
}

impl Registry {
    /// The states of `pool`'s backends, in its order; new backends get a
    /// fresh state.
    pub fn states_for(&self, pool: &config::Pool) -> Vec<Arc<BackendState>> {
        let mut states = self.states.lock().expect("registry lock is never poisoned");
        pool.backends
            .iter()
            .map(|b| {
                states
                    .entry((pool.name.clone(), b.addr))
                    .or_insert_with(|| Arc::new(BackendState::new(b.addr)))
                    .clone()
            })
            .collect()
    }

    /// The live state of `addr` in pool `pool`, if a snapshot ever had it.
    pub fn get(&self, pool: &str, addr: SocketAddr) -> Option<Arc<BackendState>> {
        let states = self.states.lock().expect("registry lock is never poisoned");
        states.get(&(pool.to_string(), addr)).cloned()
    }
}
