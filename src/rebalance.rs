//! Gradual rebalancing of long-lived connections (pool `rebalance`).
//!
//! WebSocket connections live for hours, so a backend that joins or comes
//! back stays nearly empty while the others stay full. Every tick, the
//! sans-io [`Planner`] compares each eligible backend's connections with
//! its weighted fair share of the pool's; when the pool holds at least
//! [`MIN_PER_BACKEND`] connections per backend on average and a backend
//! holds more than `(1 + tolerance)` times its share, it picks closes on
//! the most overloaded backends, as the token bucket of
//! `max_closes_per_second` allows. The task here asks that backend's newest
//! connection (in a sticky pool: the newest whose key now ranks another
//! backend first) to close with 1012, which tells the client to reconnect;
//! the balancer places the reconnect on an emptier backend. Connections
//! asked but not yet closed count as gone, so a slow close handshake does
//! not cause extra closes. docs/architecture.md describes the algorithm.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::debug;

use crate::balance::PoolBalancer;
use crate::config::{Balance, Rebalance};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Below this many connections per backend on average, a pool is left as
/// it is: a few connections cannot be balanced finely.
pub const MIN_PER_BACKEND: u64 = 10;

/// The shortest pause between two ticks.
const MIN_TICK: Duration = Duration::from_millis(10);

/// What the planner needs to know of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Its weight.
    pub weight: u32,
    /// Connections on it, not counting those asked to move.
    pub connections: u64,
    /// Up and not draining: it can take connections.
    pub eligible: bool,
}

/// The rebalancing state of one pool.
#[derive(Debug)]
pub struct Planner {
    settings: Rebalance,
    tokens: f64,
    at: Option<Instant>,
}

impl Planner {
    /// A planner with an empty bucket: the first close waits for a token.
    pub fn new(settings: Rebalance) -> Planner {
        Planner {
            settings,
            tokens: 0.0,
            at: None,
        }
    }

    /// How long to wait between ticks: one token's worth.
    pub fn tick(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.settings.max_closes_per_second).max(MIN_TICK)
    }

    /// The backends (indices into `loads`) to ask one connection each to
    /// move at `now`, most overloaded first; a backend may appear more
    /// than once. Empty when the pool is within tolerance, too small, or
    /// the bucket is empty.
    pub fn plan(&mut self, now: Instant, loads: &[Load]) -> Vec<usize> {
        let rate = self.settings.max_closes_per_second;
        let elapsed = self.at.map_or(0.0, |at| (now - at).as_secs_f64());
        self.at = Some(now);
        // At most one tick's worth at once, so closes never bunch up.
        let burst = (rate * self.tick().as_secs_f64()).max(1.0);
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        let mut excess = overload(loads, self.settings.tolerance);
        let mut picks = Vec::new();
        while self.tokens >= 1.0 {
            let Some((idx, left)) = excess
                .iter_mut()
                .enumerate()
                .filter(|(_, e)| **e > 0)
                .max_by_key(|(_, e)| **e)
            else {
                break;
            };
            *left -= 1;
            self.tokens -= 1.0;
            picks.push(idx);
        }
        picks
    }
}

/// For each backend, how many connections over `(1 + tolerance)` times its
/// weighted fair share it holds; all zero when the pool is too small to
/// balance. Ineligible backends take no share and are not closed on (a
/// draining backend's connections end by the drain).
pub fn overload(loads: &[Load], tolerance: f64) -> Vec<u64> {
    let eligible = loads.iter().filter(|l| l.eligible);
    let (count, total, weights) = eligible.fold((0u64, 0u64, 0u64), |(n, t, w), l| {
        (n + 1, t + l.connections, w + u64::from(l.weight))
    });
    if count < 2 || total < MIN_PER_BACKEND * count || weights == 0 {
        return vec![0; loads.len()];
    }
    loads
        .iter()
        .map(|l| {
            if !l.eligible {
                return 0;
            }
            let fair = total as f64 * f64::from(l.weight) / weights as f64;
            let allowed = ((1.0 + tolerance) * fair + 1e-9).floor() as u64;
            l.connections.saturating_sub(allowed)
        })
        .collect()
}

/// The running rebalancers of one snapshot; dropping this stops them.
#[derive(Debug, Default)]
pub struct Rebalancers {
    tasks: Vec<AbortHandle>,
}

impl Rebalancers {
    /// Starts a rebalancer for every pool of `snapshot` with `rebalance`.
    pub fn start(snapshot: &Arc<Snapshot>, metrics: Option<Arc<Metrics>>) -> Rebalancers {
        let tasks = (snapshot.config.pools.iter().enumerate())
            .filter_map(|(i, pool)| {
                let settings = pool.rebalance?;
                let task = tokio::spawn(run(snapshot.clone(), i, settings, metrics.clone()));
                Some(task.abort_handle())
            })
            .collect();
        Rebalancers { tasks }
    }
}

impl Drop for Rebalancers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn run(
    snapshot: Arc<Snapshot>,
    pool: usize,
    settings: Rebalance,
    metrics: Option<Arc<Metrics>>,
) {
    let name = snapshot.config.pools[pool].name.clone();
    let sticky = snapshot.config.pools[pool].balance == Balance::Sticky;
    let balancer = &snapshot.balancers[pool];
    let mut planner = Planner::new(settings);
    let mut next = Instant::now();
    loop {
        next += planner.tick();
        tokio::time::sleep_until(next).await;
        let now = Instant::now();
        for idx in planner.plan(now, &loads(balancer, now)) {
            let state = balancer.backend(idx).expect("index in range");
            // In a sticky pool only a connection whose key now ranks
            // another backend first moves; others would come straight back.
            let moved = state.move_newest(|key| match (sticky, key) {
                (true, Some(key)) => balancer.candidates(Some(key), now).first() != Some(&idx),
                _ => true,
            });
            if moved {
                debug!(pool = %name, backend = %state.addr(), "rebalance: asked the newest connection to move");
                if let Some(m) = &metrics {
                    m.admission.rebalance_closed(&name);
                }
            }
        }
    }
}

fn loads(balancer: &PoolBalancer, now: Instant) -> Vec<Load> {
    (0..balancer.len())
        .filter_map(|i| {
            let state = balancer.backend(i)?;
            let connections = state.active().saturating_sub(state.told_to_move());
            Some(Load {
                weight: balancer.weight(i),
                connections: u64::from(connections),
                eligible: state.is_up(now) && !state.is_draining(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
