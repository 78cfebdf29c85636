//! The running configuration: one immutable snapshot built from a validated
//! [`Config`], read once per connection. Live backend state lives outside it
//! so that it survives a reload.

use std::sync::Arc;

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
}

impl Snapshot {
    /// Builds the runtime view of `config`. Validation has already checked
    /// every reference, so nothing here can fail.
    pub fn new(config: Config, version: u64) -> Snapshot {
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
        Snapshot {
            version,
            config,
            routes,
            route_pool,
            tls,
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
