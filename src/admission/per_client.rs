//! The per-client limiter, sans-io: open connections and a token bucket of
//! new connections per client, with `now` passed in.
//!
//! A client is an IPv4 address or an IPv6 /64 (one subscriber's usual
//! allocation, so that a host cannot dodge its limit by cycling addresses
//! within its own network). An entry exists only while its client has a
//! connection open or pending, or its bucket is still refilling: a client
//! with a full bucket and nothing open is the same as one never seen, so
//! its entry is dropped. Memory then follows the clients active in the
//! last few seconds, never the number of distinct addresses ever seen.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{PerClient, Rate};

/// How often entries whose buckets have refilled are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Which client a connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 address (IPv4-mapped IPv6 addresses included).
    V4(u32),
    /// The /64 an IPv6 address lies in.
    V6(u64),
}

impl ClientKey {
    /// The client `ip` belongs to.
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => ClientKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Why a client's new connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It holds `max_connections` already.
    Connections,
    /// Its bucket is empty; a token is back after this long.
    Rate(Duration),
}

/// One client's state.
#[derive(Debug)]
struct Client {
    /// Connections open or pending.
    open: u32,
    /// Tokens in the bucket at `at`.
    tokens: f64,
    at: Instant,
    /// When the bucket is full again if nothing more is taken.
    full_at: Instant,
}

/// Every client with something open, pending or refilling.
#[derive(Debug, Default)]
pub struct Table {
    clients: HashMap<ClientKey, Client>,
    next_sweep: Option<Instant>,
}

impl Table {
    /// Counts a new connection of `key` if `limits` allow it.
    pub fn open(
        &mut self,
        key: ClientKey,
        limits: &PerClient,
        now: Instant,
    ) -> Result<(), Refused> {
        self.sweep(now);
        let fresh = Client {
            open: 0,
            tokens: limits.rate.map_or(0.0, |r| f64::from(r.burst)),
            at: now,
            full_at: now,
        };
        let client = self.clients.entry(key).or_insert(fresh);
        let refused = admit(client, limits, now);
        if refused.is_err() && client.open == 0 && client.full_at <= now {
            self.clients.remove(&key);
        }
        refused
    }

    /// A connection of `key` ended.
    pub fn close(&mut self, key: ClientKey, now: Instant) {
        if let Some(client) = self.clients.get_mut(&key) {
            client.open = client.open.saturating_sub(1);
            if client.open == 0 && client.full_at <= now {
                self.clients.remove(&key);
            }
        }
        self.sweep(now);
    }

    /// Clients with an entry now.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client has an entry.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The entries' allocated room, for the memory tests.
    pub fn capacity(&self) -> usize {
        self.clients.capacity()
    }

    /// Drops the entries of clients with nothing open whose buckets are
    /// full, at most once per [`SWEEP_EVERY`], and gives back the table's
    /// room when it has emptied out.
    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        self.next_sweep = Some(now + SWEEP_EVERY);
        self.clients.retain(|_, c| c.open > 0 || c.full_at > now);
        if self.clients.capacity() > 4 * self.clients.len() + 64 {
            self.clients.shrink_to(2 * self.clients.len());
        }
    }
}

fn admit(client: &mut Client, limits: &PerClient, now: Instant) -> Result<(), Refused> {
    if limits.max_connections.is_some_and(|max| client.open >= max) {
        return Err(Refused::Connections);
    }
    if let Some(rate) = limits.rate {
        refill(client, rate, now);
        // The epsilon absorbs rounding: ten tenths of a token are a token.
        if client.tokens < 1.0 - 1e-9 {
            let wait = (1.0 - client.tokens) / rate.per_second;
            return Err(Refused::Rate(Duration::from_secs_f64(wait)));
        }
        client.tokens = (client.tokens - 1.0).max(0.0);
        let missing = f64::from(rate.burst) - client.tokens;
        client.full_at = now + Duration::from_secs_f64(missing / rate.per_second);
    }
    client.open += 1;
    Ok(())
}

fn refill(client: &mut Client, rate: Rate, now: Instant) {
    let elapsed = now.saturating_duration_since(client.at).as_secs_f64();
    client.tokens = (client.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
    client.at = now;
}

#[cfg(test)]
mod tests;
