//! Backends by name: the `addr = "name:port"` and `srv = "..."` entries of
//! pools, resolved when a configuration loads and every `resolve_interval`.
//!
//! What each entry last resolved to is kept here, keyed by pool name and
//! entry, so that it outlives snapshots: a reload keeps the last good set
//! of every entry it still has, and a failed resolution keeps it too.
//! [`Discovery::fill`] writes the sets into a configuration's pools; the
//! snapshot built from that configuration is what connections see. When a
//! resolution changes a set, the tasks of [`Discovery::start`] say so, and
//! the server builds the next snapshot from the running configuration and
//! installs it exactly as a reload does (one swap; removed addresses
//! drain), under the reload lock so that a reload and that never interleave.
//!
//! This is control plane: the data path reads only the snapshot.

mod resolver;
mod srv;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{info, warn};

pub use resolver::{LookupError, Resolver};
pub use srv::SrvRecord;

use crate::config::{self, Backend, Config, Target};
use crate::metrics::Metrics;

/// An entry of one pool: what a resolved set belongs to.
type EntryKey = (String, Target);

/// One address an entry resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    addr: SocketAddr,
    /// From the SRV record; `None`: the entry's own weight.
    weight: Option<u32>,
    /// The name the address is an A or AAAA record of.
    name: Arc<str>,
}

#[derive(Debug, Default)]
struct EntryState {
    /// The last good set; `None` until the first success.
    found: Option<Vec<Found>>,
    /// When `found` was last confirmed or replaced.
    resolved_at: Option<SystemTime>,
    /// The error of the last attempt, while failing.
    failing: Option<String>,
}

/// What `/status` shows of one entry.
#[derive(Debug, Clone)]
pub struct EntryStatus {
    /// The entry as written: `name:port` or the SRV name.
    pub entry: String,
    /// `true` for an SRV entry.
    pub srv: bool,
    /// The addresses of the last good resolution.
    pub addresses: Vec<SocketAddr>,
    /// When that resolution was last confirmed.
    pub resolved_at: Option<SystemTime>,
    /// Why the last attempt failed, while it fails.
    pub error: Option<String>,
}

/// Resolved sets of every pool's name entries, the DNS client, and the
/// tasks that resolve again every `resolve_interval`.
#[derive(Default)]
pub struct Discovery {
    entries: Mutex<HashMap<EntryKey, EntryState>>,
    resolver: Mutex<Option<(config::Resolver, Arc<Resolver>)>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Discovery {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<EntryKey, EntryState>> {
        self.entries
            .lock()
            .expect("discovery lock is never poisoned")
    }

    /// The DNS client for `settings`, built again when they change.
    fn resolver(&self, settings: &config::Resolver) -> Result<Arc<Resolver>, String> {
        let mut current = self.resolver.lock().expect("not poisoned");
        if let Some((s, r)) = current.as_ref().filter(|(s, _)| s == settings) {
            let _ = s;
            return Ok(r.clone());
        }
        let resolver = Arc::new(
            Resolver::new(settings)
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?,
        );
        *current = Some((settings.clone(), resolver.clone()));
        Ok(resolver)
    }

    /// Resolves the name entries of every pool of `config`; with
    /// `only_new`, just those never resolved (a reload keeps the sets it
    /// already has). All at once, so a dead DNS server costs one timeout.
    pub async fn resolve(&self, config: &Config, only_new: bool, metrics: Option<&Metrics>) {
        let wanted: Vec<(String, Target)> = {
            let entries = self.entries();
            names(config)
                .filter(|key| {
                    !only_new || entries.get(key).is_none_or(|state| state.found.is_none())
                })
                .collect()
        };
        self.resolve_entries(&config.resolver, wanted, metrics)
            .await;
    }

    /// Resolves `wanted` and records the outcomes; returns whether any set
    /// changed.
    async fn resolve_entries(
        &self,
        settings: &config::Resolver,
        wanted: Vec<EntryKey>,
        metrics: Option<&Metrics>,
    ) -> bool {
        if wanted.is_empty() {
            return false;
        }
        let resolver = match self.resolver(settings) {
            Ok(r) => Some(r),
            Err(reason) => {
                warn!(%reason, "backend names cannot be resolved");
                None
            }
        };
        let mut lookups = JoinSet::new();
        for key in wanted {
            let resolver = resolver.clone();
            lookups.spawn(async move {
                let outcome = match resolver {
                    Some(r) => lookup(&r, &key.1).await.map_err(|e| e.to_string()),
                    None => Err("no DNS configuration".to_string()),
                };
                (key, outcome)
            });
        }
        let mut changed = false;
        while let Some(joined) = lookups.join_next().await {
            let Ok((key, outcome)) = joined else {
                continue;
            };
            changed |= self.record(key, outcome, metrics);
        }
        changed
    }

    /// Records one resolution: a success replaces the set, a failure keeps
    /// it. Logs only when the entry's state changes; every failure counts.
    fn record(
        &self,
        (pool, target): EntryKey,
        outcome: Result<Vec<Found>, String>,
        metrics: Option<&Metrics>,
    ) -> bool {
        let mut entries = self.entries();
        let state = entries.entry((pool.clone(), target.clone())).or_default();
        match outcome {
            Ok(found) => {
                if let Some(error) = state.failing.take() {
                    info!(%pool, entry = %target, previous_error = %error, "backend name resolves again");
                }
                state.resolved_at = Some(SystemTime::now());
                if state.found.as_ref() == Some(&found) {
                    return false;
                }
                let addresses: Vec<String> = found.iter().map(|f| f.addr.to_string()).collect();
                info!(%pool, entry = %target, ?addresses, "backend name resolved");
                state.found = Some(found);
                true
            }
            Err(error) => {
                if let Some(m) = metrics {
                    m.resolve_failed(&pool, &target.to_string());
                }
                if state.failing.is_none() {
                    match &state.found {
                        Some(found) => {
                            warn!(%pool, entry = %target, %error, kept = found.len(), "cannot resolve backend name: keeping the last addresses")
                        }
                        None => {
                            warn!(%pool, entry = %target, %error, "cannot resolve backend name: no backends from it until it resolves")
                        }
                    }
                }
                state.failing = Some(error);
                false
            }
        }
    }

    /// Forgets the entries `config` no longer has.
    pub fn retain(&self, config: &Config) {
        let kept: Vec<EntryKey> = names(config).collect();
        self.entries().retain(|key, _| kept.contains(key));
    }

    /// Writes every pool's backends: its addresses as written, then the
    /// last good set of each name entry, in entry order, each address
    /// once; names never resolved go to `unresolved`.
    pub fn fill(&self, config: &mut Config) {
        let entries = self.entries();
        for pool in &mut config.pools {
            let mut backends: Vec<Backend> = Vec::new();
            let mut unresolved = Vec::new();
            for entry in &pool.entries {
                let found = match &entry.target {
                    Target::Addr(addr) => vec![Found {
                        addr: *addr,
                        weight: None,
                        name: Arc::from(""),
                    }],
                    target => {
                        let key = (pool.name.clone(), target.clone());
                        match entries.get(&key).and_then(|s| s.found.clone()) {
                            Some(found) => found,
                            None => {
                                unresolved.push(target.to_string());
                                Vec::new()
                            }
                        }
                    }
                };
                for f in found {
                    if backends.iter().any(|b| b.addr == f.addr) {
                        continue;
                    }
                    backends.push(Backend {
                        addr: f.addr,
                        weight: f.weight.unwrap_or(entry.weight),
                        max_connections: entry.max_connections,
                        name: (!f.name.is_empty()).then_some(f.name),
                    });
                }
            }
            pool.backends = backends;
            pool.unresolved = unresolved;
        }
    }

    /// The name entries of `pool` with what they resolved to.
    pub fn status(&self, pool: &config::Pool) -> Vec<EntryStatus> {
        let entries = self.entries();
        pool.entries
            .iter()
            .filter(|e| e.target.name().is_some())
            .map(|e| {
                let state = entries.get(&(pool.name.clone(), e.target.clone()));
                let found = state.and_then(|s| s.found.as_ref());
                EntryStatus {
                    entry: e.target.to_string(),
                    srv: matches!(e.target, Target::Srv(_)),
                    addresses: found
                        .map(|f| f.iter().map(|f| f.addr).collect())
                        .unwrap_or_default(),
                    resolved_at: state.and_then(|s| s.resolved_at),
                    error: state.and_then(|s| s.failing.clone()),
                }
            })
            .collect()
    }

    /// Stops resolving (shutdown).
    pub fn stop(&self) {
        for task in self.tasks.lock().expect("not poisoned").drain(..) {
            task.abort();
        }
    }
}

/// The name entries of every pool of `config`.
fn names(config: &Config) -> impl Iterator<Item = EntryKey> + '_ {
    config.pools.iter().flat_map(|p| {
        (p.entries.iter())
            .filter(|e| e.target.name().is_some())
            .map(|e| (p.name.clone(), e.target.clone()))
    })
}

/// One resolution of `target`: its addresses, or for SRV the targets of the
/// lowest priority that has any address, with the records' ports and
/// weights. Sorted, so that an unchanged answer compares equal.
async fn lookup(resolver: &Resolver, target: &Target) -> Result<Vec<Found>, LookupError> {
    let mut found = match target {
        Target::Addr(addr) => vec![Found {
            addr: *addr,
            weight: None,
            name: Arc::from(""),
        }],
        Target::Name { host, port } => {
            let name: Arc<str> = Arc::from(host.as_str());
            (resolver.addresses(host).await?.into_iter())
                .map(|ip| Found {
                    addr: SocketAddr::new(ip, *port),
                    weight: None,
                    name: name.clone(),
                })
                .collect()
        }
        Target::Srv(name) => {
            let mut chosen = Vec::new();
            for group in srv::priority_groups(resolver.srv(name).await?) {
                for record in group {
                    // A target that does not resolve is left out; its group
                    // is used if any other target resolves.
                    let Ok(ips) = resolver.addresses(&record.target).await else {
                        continue;
                    };
                    let target: Arc<str> = Arc::from(record.target.as_str());
                    chosen.extend(ips.into_iter().map(|ip| Found {
                        addr: SocketAddr::new(ip, record.port),
                        weight: Some(srv::backend_weight(record.weight)),
                        name: target.clone(),
                    }));
                }
                if !chosen.is_empty() {
                    break;
                }
            }
            chosen
        }
    };
    found.sort_by_key(|f| f.addr);
    found.dedup_by_key(|f| f.addr);
    match found.is_empty() {
        true => Err(LookupError::Empty),
        false => Ok(found),
    }
}

impl Discovery {
    /// Starts one task per pool of `config` with name entries, resolving
    /// them every `resolve_interval` and telling `changed` when a set
    /// changed; stops the tasks of the previous configuration.
    pub fn start(
        self: &Arc<Self>,
        config: &Config,
        metrics: Option<Arc<Metrics>>,
        changed: mpsc::UnboundedSender<()>,
    ) {
        let mut tasks = self.tasks.lock().expect("not poisoned");
        for task in tasks.drain(..) {
            task.abort();
        }
        for pool in &config.pools {
            let wanted: Vec<EntryKey> = (pool.entries.iter())
                .filter(|e| e.target.name().is_some())
                .map(|e| (pool.name.clone(), e.target.clone()))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let task = tokio::spawn(every_interval(
                self.clone(),
                config.resolver.clone(),
                wanted,
                pool.resolve_interval,
                metrics.clone(),
                changed.clone(),
            ));
            tasks.push(task.abort_handle());
        }
    }
}

async fn every_interval(
    discovery: Arc<Discovery>,
    settings: config::Resolver,
    wanted: Vec<EntryKey>,
    interval: Duration,
    metrics: Option<Arc<Metrics>>,
    changed: mpsc::UnboundedSender<()>,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let metrics = metrics.as_deref();
        if discovery
            .resolve_entries(&settings, wanted.clone(), metrics)
            .await
            && changed.send(()).is_err()
        {
            return;
        }
    }
}

/// `wsgate check`: the names of `config` that do not resolve from here,
/// one line each. Warnings only: the checking machine may not see the
/// production DNS.
pub async fn check_names(config: &Config) -> Vec<String> {
    let resolver = match Resolver::new(&config.resolver) {
        Ok(r) => Arc::new(r),
        Err(e) => return vec![format!("cannot read the system's DNS configuration: {e}")],
    };
    let mut lookups = JoinSet::new();
    for (pool, target) in names(config) {
        let resolver = resolver.clone();
        lookups.spawn(async move {
            let outcome = lookup(&resolver, &target).await;
            (pool, target, outcome)
        });
    }
    let mut warnings = Vec::new();
    while let Some(Ok((pool, target, outcome))) = lookups.join_next().await {
        if let Err(e) = outcome {
            warnings.push(format!(
                "pool {pool:?}: {target} does not resolve from here ({e}); the pool will have \
                 no backends from it until it does"
            ));
        }
    }
    warnings.sort();
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        let text = r#"
[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
pool = "p"

[[pool]]
name = "p"
backends = [
  { addr = "10.0.0.1:9000" },
  { addr = "chat.internal:9000", weight = 3 },
  { srv = "_ws._tcp.chat.internal" },
]
"#;
        crate::config::parse(text, Path::new("."), "t").unwrap()
    }

    fn found(addr: &str, weight: Option<u32>, name: &str) -> Found {
        Found {
            addr: addr.parse().unwrap(),
            weight,
            name: Arc::from(name),
        }
    }

    #[test]
    fn fill_lists_addresses_then_names_each_address_once() {
        let discovery = Discovery::default();
        let mut config = config();
        discovery.fill(&mut config);
        let pool = &config.pools[0];
        assert_eq!(pool.backends.len(), 1);
        assert_eq!(
            pool.unresolved,
            ["chat.internal:9000", "_ws._tcp.chat.internal"]
        );

        let name = ("p".to_string(), pool.entries[1].target.clone());
        let srv = ("p".to_string(), pool.entries[2].target.clone());
        let resolved = vec![
            found("10.0.0.1:9000", None, "chat.internal"),
            found("10.0.0.2:9000", None, "chat.internal"),
        ];
        assert!(discovery.record(name.clone(), Ok(resolved.clone()), None));
        assert!(
            !discovery.record(name.clone(), Ok(resolved), None),
            "same set"
        );
        let targets = vec![found("10.0.0.3:7000", Some(5), "a.chat.internal")];
        assert!(discovery.record(srv, Ok(targets), None));
        discovery.fill(&mut config);
        let pool = &config.pools[0];
        let backends: Vec<(String, u32, Option<&str>)> = (pool.backends.iter())
            .map(|b| (b.addr.to_string(), b.weight, b.name.as_deref()))
            .collect();
        assert_eq!(
            backends,
            [
                ("10.0.0.1:9000".to_string(), 1, None),
                ("10.0.0.2:9000".to_string(), 3, Some("chat.internal")),
                ("10.0.0.3:7000".to_string(), 5, Some("a.chat.internal")),
            ]
        );
        assert!(pool.unresolved.is_empty());
    }

    #[test]
    fn a_failure_keeps_the_last_set_and_is_shown_until_a_success() {
        let discovery = Discovery::default();
        let config = config();
        let name = ("p".to_string(), config.pools[0].entries[1].target.clone());
        let set = vec![found("10.0.0.2:9000", None, "chat.internal")];
        discovery.record(name.clone(), Ok(set), None);
        assert!(!discovery.record(name.clone(), Err("timed out".into()), None));
        let status = discovery.status(&config.pools[0]);
        assert_eq!(status[0].addresses, ["10.0.0.2:9000".parse().unwrap()]);
        assert_eq!(status[0].error.as_deref(), Some("timed out"));
        let set = vec![found("10.0.0.2:9000", None, "chat.internal")];
        discovery.record(name, Ok(set), None);
        assert_eq!(discovery.status(&config.pools[0])[0].error, None);
    }
}
