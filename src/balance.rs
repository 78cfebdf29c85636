//! Backend choice: live backend state and the two balancing algorithms.
//!
//! [`BackendState`] is the live side of a backend (connections, health,
//! draining). It is shared through an `Arc` and outlives configuration
//! snapshots: a reload keeps the state of every backend whose pool name and
//! address it keeps. [`PoolBalancer`] is built per snapshot from a
//! [`config::Pool`] and those states, and answers one question per
//! handshake: which backends to try, in which order. Nothing here is async;
//! decisions take `now` from the caller, so tests can move time at will.
//!
//! Contract, "Balancing": `least_connections` picks the fewest active
//! connections per unit of weight; `sticky` maps an affinity key to a backend
//! by consistent hashing that every instance computes alike; a refused
//! connect marks a backend down; `max_connections` is a hard cap, and
//! handshakes in flight count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::watch;

use crate::config::{self, Balance, StickySource};

mod roster;
use crate::shutdown::{Drain, DrainSignal};
pub use roster::{Enlisted, MoveOrder};

/// How long a backend that failed a connect stays down in a pool without a
/// health check (contract, "Balancing").
pub const PASSIVE_DOWN: Duration = Duration::from_secs(10);

/// Fixed SipHash keys. They must never change: the backend id, the cookie
/// token and the placement of every key derive from them, and all must agree
/// across instances, builds and reloads. One pair per use keeps the uses
/// independent of each other.
const ID_KEYS: (u64, u64) = (
    u64::from_le_bytes(*b"wsgate:b"),
    u64::from_le_bytes(*b"ackendid"),
);
const TOKEN_KEYS: (u64, u64) = (
    u64::from_le_bytes(*b"wsgate:c"),
    u64::from_le_bytes(*b"ookie-id"),
);
const KEY_KEYS: (u64, u64) = (
    u64::from_le_bytes(*b"wsgate:a"),
    u64::from_le_bytes(*b"ffinity!"),
);
const RANK_KEYS: (u64, u64) = (
    u64::from_le_bytes(*b"wsgate:r"),
    u64::from_le_bytes(*b"endezvou"),
);

const RAMP_KEYS: (u64, u64) = (
    u64::from_le_bytes(*b"wsgate:s"),
    u64::from_le_bytes(*b"lowstart"),
);

/// `down_until` value meaning "until a health check passes".
const UNTIL_CHECK: u64 = u64::MAX;

/// `up_since` value of a backend that has been up from the start: it does
/// not ramp.
const FROM_THE_START: u64 = u64::MAX;

/// The share of its weight a backend gets when it has just come up.
const RAMP_FLOOR: f64 = 0.1;

/// The stable identity of a backend: SipHash-2-4 with fixed keys over the
/// address's bytes (IP, port and, for IPv6, the scope id).
///
/// It is the same on every instance, build and reload, which is what lets
/// independent instances place sticky keys identically and lets a cookie
/// survive a restart. std's `DefaultHasher` promises none of that.
pub fn backend_id(addr: &SocketAddr) -> u64 {
    let mut buf = [0u8; 1 + 16 + 2 + 4];
    let len = match addr {
        SocketAddr::V4(a) => {
            buf[0] = 4;
            buf[1..5].copy_from_slice(&a.ip().octets());
            buf[5..7].copy_from_slice(&a.port().to_be_bytes());
            7
        }
        SocketAddr::V6(a) => {
            buf[0] = 6;
            buf[1..17].copy_from_slice(&a.ip().octets());
            buf[17..19].copy_from_slice(&a.port().to_be_bytes());
            buf[19..23].copy_from_slice(&a.scope_id().to_be_bytes());
            23
        }
    };
    siphash24(ID_KEYS, &buf[..len])
}

/// The sticky cookie's value for the backend with this id: 16 lower-case
/// hex digits of a keyed hash of the id.
///
/// It names the backend without revealing its address, and, like the id, is
/// the same everywhere. [`PoolBalancer::backend_for_token`] maps it back.
pub fn cookie_value(id: u64) -> String {
    format!("{:016x}", token_hash(id))
}

fn token_hash(id: u64) -> u64 {
    siphash24(TOKEN_KEYS, &id.to_le_bytes())
}

/// Parses exactly what [`cookie_value`] produces; anything else (other
/// lengths, upper case, signs) is not a token.
fn parse_token(token: &[u8]) -> Option<u64> {
    if token.len() != 16 {
        return None;
    }
    token.iter().try_fold(0u64, |acc, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u64::from(digit))
    })
}

/// The live state of one backend of one pool.
///
/// Shared as `Arc<BackendState>` between the snapshots that list the backend,
/// the health checker and every [`Lease`] on it.
#[derive(Debug)]
pub struct BackendState {
    addr: SocketAddr,
    id: u64,
    /// Origin of `down_until`, so that an instant fits in an atomic.
    epoch: Instant,
    /// Connections, handshakes in flight included; changed only by leases.
    active: AtomicU32,
    /// Nanoseconds after `epoch` until which the backend is down: 0 while
    /// up, [`UNTIL_CHECK`] until a health check passes. Up/down and "until
    /// when" share one word so a reader never sees one without the other.
    down_until: AtomicU64,
    draining: AtomicBool,
    /// Nanoseconds after `epoch` when the backend last came up (added by
    /// a reload, back from down or from draining), for slow start;
    /// [`FROM_THE_START`] when it has been up since the proxy started.
    up_since: AtomicU64,
    /// Relayed connections, for rebalancing.
    roster: roster::Roster,
    /// Announces a drain (removal by a reload, or shutdown) to the
    /// backend's open connections; `None` until one starts.
    drain: watch::Sender<Option<Drain>>,
    /// Proxied HTTP requests in flight (each also holds a lease).
    http_in_flight: AtomicU32,
    /// The last active health check, for the dashboard.
    last_check: Mutex<Option<CheckResult>>,
}

/// The outcome of one active health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// When it finished.
    pub at: Instant,
    /// Why it failed; `None` when it passed.
    pub error: Option<String>,
}

impl BackendState {
    /// A backend that is up, not draining and has no connections.
    pub fn new(addr: SocketAddr) -> BackendState {
        BackendState {
            addr,
            id: backend_id(&addr),
            epoch: Instant::now(),
            active: AtomicU32::new(0),
            down_until: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            up_since: AtomicU64::new(FROM_THE_START),
            roster: roster::Roster::default(),
            drain: watch::Sender::new(None),
            http_in_flight: AtomicU32::new(0),
            last_check: Mutex::new(None),
        }
    }

    /// The backend came up at `now` (a reload added it or lifted its
    /// drain): a pool with `slow_start` ramps its share from here.
    pub fn came_up(&self, now: Instant) {
        self.up_since.store(self.nanos(now), Ordering::Relaxed);
    }

    /// The share of its weight the backend gets at `now` under
    /// `slow_start`: from 10% when it came up, linearly to 100% after
    /// `slow_start`; 1.0 when it has been up longer, since the start, or
    /// slow start is off. A passive mark that expired counts as coming up
    /// when it expired.
    pub fn ramp(&self, now: Instant, slow_start: Duration) -> f64 {
        if slow_start.is_zero() {
            return 1.0;
        }
        let n = self.nanos(now);
        let mut since = self.up_since.load(Ordering::Relaxed);
        let until = self.down_until.load(Ordering::Relaxed);
        if until != 0 && until != UNTIL_CHECK && until <= n {
            since = if since == FROM_THE_START {
                until
            } else {
                since.max(until)
            };
        }
        if since == FROM_THE_START {
            return 1.0;
        }
        let t = n.saturating_sub(since) as f64 / slow_start.as_nanos() as f64;
        if t >= 1.0 {
            1.0
        } else {
            RAMP_FLOOR + (1.0 - RAMP_FLOOR) * t
        }
    }

    /// Proxied HTTP requests in flight on this backend.
    pub fn http_in_flight(&self) -> u32 {
        self.http_in_flight.load(Ordering::Relaxed)
    }

    /// A proxied HTTP request started on this backend.
    pub fn http_started(&self) {
        self.http_in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A proxied HTTP request on this backend ended.
    pub fn http_ended(&self) {
        self.http_in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The address connections go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The stable id, [`backend_id`] of the address; the sticky cookie is
    /// [`cookie_value`] of it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Open connections plus handshakes in flight.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether the backend may be tried at `now`: not marked down, or its
    /// passive mark has expired. What `/status` reports as `up`.
    pub fn is_up(&self, now: Instant) -> bool {
        let until = self.down_until.load(Ordering::Relaxed);
        until != UNTIL_CHECK && self.nanos(now) >= until
    }

    /// Whether the backend is draining (removed by a reload, or drained by
    /// an operator): it keeps its connections but gets no new ones.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts or stops draining; a backend that stops draining comes up
    /// now (slow start).
    pub fn set_draining(&self, draining: bool) {
        if self.draining.swap(draining, Ordering::Relaxed) && !draining {
            self.came_up(Instant::now());
        }
    }

    /// Records an active health check that finished now (`error` is
    /// `None` when it passed). Marking up or down stays with the caller.
    pub fn record_check(&self, error: Option<String>) {
        let result = CheckResult {
            at: Instant::now(),
            error,
        };
        *self.last_check.lock().expect("not poisoned") = Some(result);
    }

    /// The last active health check, if the pool has checks and one ran.
    pub fn last_check(&self) -> Option<CheckResult> {
        self.last_check.lock().expect("not poisoned").clone()
    }

    /// Announces `drain` to this backend's connections, unless one is
    /// announced already (the earlier order stands).
    pub fn announce_drain(&self, drain: Drain) {
        self.drain.send_if_modified(|current| {
            let unset = current.is_none();
            if unset {
                *current = Some(drain);
            }
            unset
        });
    }

    /// Withdraws the drain for connections made from now on (the backend
    /// came back); connections already told keep their close time.
    pub fn withdraw_drain(&self) {
        self.drain.send_replace(None);
    }

    /// What a connection to this backend watches for a drain.
    pub fn drain_signal(&self) -> DrainSignal {
        self.drain.subscribe()
    }

    /// Marks the backend up, e.g. after a passing health check; one that
    /// was down comes up now (slow start).
    pub fn mark_up(&self) {
        if self.down_until.swap(0, Ordering::Relaxed) != 0 {
            self.came_up(Instant::now());
        }
    }

    /// Marks the backend down until a health check passes ([`mark_up`]).
    ///
    /// [`mark_up`]: BackendState::mark_up
    pub fn mark_down(&self) {
        self.down_until.store(UNTIL_CHECK, Ordering::Relaxed);
    }

    /// Marks the backend down until `until`, after which it is eligible
    /// again without anyone calling [`mark_up`](BackendState::mark_up).
    pub fn mark_down_until(&self, until: Instant) {
        // Saturating keeps "until" from turning into "until a check".
        let nanos = self.nanos(until).min(UNTIL_CHECK - 1);
        self.down_until.store(nanos, Ordering::Relaxed);
    }

    /// Lifts a "until a health check passes" mark, leaving a timed one.
    fn clear_check_mark(&self) {
        let _ =
            self.down_until
                .compare_exchange(UNTIL_CHECK, 0, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn nanos(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX)
    }

    /// Takes a connection slot unless that would pass `max` (compare and
    /// swap, so concurrent handshakes can never overshoot the cap).
    fn try_lease(self: &Arc<Self>, max: Option<u32>) -> Option<Lease> {
        let max = max.unwrap_or(u32::MAX);
        // Relaxed: the counter publishes no other memory; the CAS alone
        // makes the check and the increment one step.
        self.active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Lease {
            backend: Arc::clone(self),
        })
    }
}

/// One connection slot on one backend, held from before the backend connect
/// until the relay ends; dropping it frees the slot.
///
/// Deliberately not `Clone`: each slot is counted exactly once.
#[derive(Debug)]
pub struct Lease {
    backend: Arc<BackendState>,
}

impl Lease {
    /// The backend this slot is on.
    pub fn backend(&self) -> &Arc<BackendState> {
        &self.backend
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One pool of one snapshot: its algorithm, its backends' weights and caps,
/// and their live states.
#[derive(Debug)]
pub struct PoolBalancer {
    balance: Balance,
    /// The sticky key is our own cookie token rather than client data (an
    /// application's cookie, `issue = false`, is hashed like a header).
    cookie_key: bool,
    /// `hash_balance_factor` in millionths, so bounds are exact integers.
    factor_millionths: Option<u64>,
    health_checked: bool,
    members: Vec<Member>,
    /// `(token_hash(id), index)`, sorted, for cookie look-ups.
    tokens: Vec<(u64, usize)>,
    /// Rotates least-connections ties so that a burst spreads evenly.
    rotation: AtomicUsize,
    /// Zero: off.
    slow_start: Duration,
    /// Draws for slow start in least-connections order, hashed into
    /// uniform numbers: deterministic, and independent between picks.
    ramp_draws: AtomicU64,
}

#[derive(Debug)]
struct Member {
    state: Arc<BackendState>,
    weight: u32,
    max_connections: Option<u32>,
}

/// A backend being ranked, with its load read once: sorting on live atomics
/// could see values change mid-sort.
struct Candidate {
    idx: usize,
    id: u64,
    active: u32,
    weight: u32,
    score: f64,
}

/// What a sticky key contributes to ranking.
struct Affinity {
    hash: u64,
    /// The backend a valid cookie names.
    preferred: Option<usize>,
}

impl PoolBalancer {
    /// Builds the balancer for `pool`; `states[i]` is the live state of
    /// `pool.backends[i]`.
    ///
    /// When the pool has no health check, a backend still marked "down until
    /// a check passes" by an earlier snapshot is marked up: nothing would
    /// ever lift that mark now, and if the backend is still down its next
    /// failed connect marks it down again, for [`PASSIVE_DOWN`].
    ///
    /// # Panics
    ///
    /// If `states` does not pair up with `pool.backends` by address: that is
    /// a bug in the caller, and balancing on the wrong states would
    /// silently break caps and health.
    pub fn new(pool: &config::Pool, states: Vec<Arc<BackendState>>) -> PoolBalancer {
        assert_eq!(pool.backends.len(), states.len(), "one state per backend");
        let members: Vec<Member> = pool
            .backends
            .iter()
            .zip(states)
            .map(|(backend, state)| {
                assert_eq!(backend.addr, state.addr(), "state of another backend");
                if pool.health_check.is_none() {
                    state.clear_check_mark();
                }
                Member {
                    state,
                    // Validation says at least 1; a 0 would make a loaded
                    // backend look idle to least connections.
                    weight: backend.weight.max(1),
                    max_connections: backend.max_connections,
                }
            })
            .collect();
        let mut tokens: Vec<(u64, usize)> = members
            .iter()
            .enumerate()
            .map(|(i, m)| (token_hash(m.state.id()), i))
            .collect();
        tokens.sort_unstable();
        PoolBalancer {
            balance: pool.balance,
            cookie_key: pool
                .sticky
                .as_ref()
                .is_some_and(|s| s.source == StickySource::Cookie && s.issue),
            // Below 1.0 the bounds could exclude every backend; validation
            // demands more than 1.0, the clamp keeps the promise regardless.
            factor_millionths: pool
                .hash_balance_factor
                .map(|f| ((f * 1_000_000.0).round() as u64).max(1_000_000)),
            health_checked: pool.health_check.is_some(),
            members,
            tokens,
            rotation: AtomicUsize::new(0),
            slow_start: pool.slow_start,
            ramp_draws: AtomicU64::new(0),
        }
    }

    /// The slow-start share of backend `idx` at `now` (1.0 when not
    /// ramping), for `/status`.
    pub fn ramp(&self, idx: usize, now: Instant) -> f64 {
        self.members
            .get(idx)
            .map_or(1.0, |m| m.state.ramp(now, self.slow_start))
    }

    /// Number of backends, eligible or not.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the pool has no backends (validation never lets that happen).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The weight of backend `idx` (0 when there is none).
    pub fn weight(&self, idx: usize) -> u32 {
        self.members.get(idx).map_or(0, |m| m.weight)
    }

    /// The live state of backend `idx`, for its address and cookie.
    pub fn backend(&self, idx: usize) -> Option<&Arc<BackendState>> {
        self.members.get(idx).map(|m| &m.state)
    }

    /// The backend a sticky cookie value names, if it names one of this
    /// pool's backends. The 101 sets the cookie only when this is `None`
    /// (contract: "only when the request carried no valid one").
    pub fn backend_for_token(&self, token: &[u8]) -> Option<usize> {
        let hash = parse_token(token)?;
        let at = self.tokens.partition_point(|&(h, _)| h < hash);
        match self.tokens.get(at) {
            Some(&(h, idx)) if h == hash => Some(idx),
            _ => None,
        }
    }

    /// The eligible backends, best first; the caller leases them in this
    /// order, moving on when a lease is refused or a connect fails. Empty
    /// means none is eligible (503).
    ///
    /// Eligible: up (or its passive mark expired by `now`), not draining,
    /// under its `max_connections`. `key` is the sticky pool's affinity key
    /// (for `source = "cookie"`, the cookie's value); it is ignored by
    /// `least_connections`, and a missing, empty or (for cookies) unknown key
    /// falls back to least-connections order. With `hash_balance_factor`,
    /// backends over their bound are left out of a keyed order.
    ///
    /// Returns a `Vec`: one small allocation per handshake, next to a TCP
    /// connect, buys freedom from any cap on pool size.
    pub fn candidates(&self, key: Option<&[u8]>, now: Instant) -> Vec<usize> {
        let mut list: Vec<Candidate> = self
            .members
            .iter()
            .enumerate()
            .filter_map(|(idx, m)| {
                let active = m.state.active();
                let eligible = m.state.is_up(now)
                    && !m.state.is_draining()
                    && m.max_connections.is_none_or(|max| active < max);
                eligible.then_some(Candidate {
                    idx,
                    id: m.state.id(),
                    active,
                    weight: m.weight,
                    score: 0.0,
                })
            })
            .collect();
        let affinity = match self.balance {
            Balance::LeastConnections => None,
            Balance::Sticky => key.and_then(|k| self.affinity(k)),
        };
        match &affinity {
            Some(affinity) => self.rank_sticky(&mut list, affinity),
            None => self.rank_least_connections(&mut list),
        }
        self.slow_start(&mut list, affinity.as_ref(), now);
        list.into_iter().map(|c| c.idx).collect()
    }

    /// Takes a connection slot on backend `idx`, or `None` when it is at its
    /// `max_connections` (another handshake got there first) or `idx` is
    /// not a backend of this pool.
    pub fn lease(&self, idx: usize) -> Option<Lease> {
        let m = self.members.get(idx)?;
        m.state.try_lease(m.max_connections)
    }

    /// Passive health: backend `idx` refused or timed out a connect at
    /// `now`. It stays down until a health check passes, or for
    /// [`PASSIVE_DOWN`] in a pool without health checks.
    pub fn mark_failed(&self, idx: usize, now: Instant) {
        if let Some(m) = self.members.get(idx) {
            if self.health_checked {
                m.state.mark_down();
            } else {
                m.state.mark_down_until(now + PASSIVE_DOWN);
            }
        }
    }

    /// Marks backend `idx` up (its health check passed).
    pub fn mark_up(&self, idx: usize) {
        if let Some(m) = self.members.get(idx) {
            m.state.mark_up();
        }
    }

    /// Starts or stops draining backend `idx`.
    pub fn set_draining(&self, idx: usize, draining: bool) {
        if let Some(m) = self.members.get(idx) {
            m.state.set_draining(draining);
        }
    }

    /// Slow start: a first choice that is ramping keeps its place with
    /// probability equal to its ramp (10% when it came up, 100% at the end
    /// of `slow_start`), else it goes second. So its share of the new
    /// connections it would have got grows linearly instead of all of them
    /// landing at once on a backend that least connections sees as empty.
    /// For a sticky key the draw is a hash of the key and the backend, so
    /// the choice is stable per key and only grows (a key it took keeps
    /// going there); a cookie naming the backend is always honoured.
    fn slow_start(&self, list: &mut [Candidate], affinity: Option<&Affinity>, now: Instant) {
        if self.slow_start.is_zero() || list.len() < 2 {
            return;
        }
        let first = &list[0];
        let ramp = self.members[first.idx].state.ramp(now, self.slow_start);
        if ramp >= 1.0 {
            return;
        }
        let draw = match affinity {
            Some(a) if a.preferred == Some(first.idx) => return,
            Some(a) => {
                let mut buf = [0u8; 16];
                buf[..8].copy_from_slice(&a.hash.to_le_bytes());
                buf[8..].copy_from_slice(&first.id.to_le_bytes());
                siphash24(RAMP_KEYS, &buf)
            }
            None => {
                let n = self.ramp_draws.fetch_add(1, Ordering::Relaxed);
                siphash24(RAMP_KEYS, &n.to_le_bytes())
            }
        };
        let u = (draw >> 11) as f64 / (1u64 << 53) as f64;
        if u >= ramp {
            list.swap(0, 1);
        }
    }

    fn affinity(&self, key: &[u8]) -> Option<Affinity> {
        // An empty header or parameter is no key: hashing it would send
        // every such client to one backend.
        if key.is_empty() {
            return None;
        }
        let preferred = if self.cookie_key {
            // A forged or stale token is treated as no key at all, so the
            // client is balanced and handed a valid cookie.
            Some(self.backend_for_token(key)?)
        } else {
            None
        };
        Some(Affinity {
            hash: siphash24(KEY_KEYS, key),
            preferred,
        })
    }

    /// Fewest `active / weight` first, compared as `a1 * w2` against
    /// `a2 * w1` so no float rounding decides. Ties go to the backend after
    /// a counter that advances on every pick, so simultaneous picks that see
    /// the same counts still start at different backends.
    fn rank_least_connections(&self, list: &mut [Candidate]) {
        let n = self.members.len().max(1);
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) % n;
        let turn = |idx: usize| (idx + n - start) % n;
        list.sort_unstable_by(|a, b| {
            let load_a = u64::from(a.active) * u64::from(b.weight);
            let load_b = u64::from(b.active) * u64::from(a.weight);
            load_a.cmp(&load_b).then(turn(a.idx).cmp(&turn(b.idx)))
        });
    }

    /// Weighted rendezvous (highest random weight) hashing.
    ///
    /// Each backend scores `-weight / ln(u)`, with `u` in (0, 1) a hash of
    /// the key and the backend's id; the highest score wins, and the full
    /// ranking is the retry order. `-ln(u) / weight` is exponentially
    /// distributed with rate `weight`, so the smallest of them (the highest
    /// score) falls on a backend with probability exactly `weight / total`.
    /// A key moves only when its winner leaves, or when a newcomer outscores
    /// it: about `weight / total` of the keys either way. Chosen over a hash
    /// ring because weights are exact without virtual nodes and the retry
    /// order comes for free; over jump hashing because backends are named
    /// by address, not numbered, and carry weights. The cost, one hash and
    /// one logarithm per backend per handshake, is small at pool sizes.
    /// Scores depend only on the key, ids and weights, never on file order;
    /// exact ties (practically impossible) go to the lower id. `ln` may
    /// differ in its last bit between C libraries; that could only reorder
    /// two scores within 2^-52 of each other, which no realistic key meets.
    /// The bounded
    /// load check comes last and also applies to a cookie's backend: an
    /// operator who set a factor prefers balance to stickiness.
    fn rank_sticky(&self, list: &mut Vec<Candidate>, affinity: &Affinity) {
        for c in list.iter_mut() {
            let mut buf = [0u8; 16];
            buf[..8].copy_from_slice(&affinity.hash.to_le_bytes());
            buf[8..].copy_from_slice(&c.id.to_le_bytes());
            let h = siphash24(RANK_KEYS, &buf);
            // The top 53 bits, centred in their interval: never 0 or 1.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            c.score = -f64::from(c.weight) / u.ln();
        }
        list.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        if let Some(pos) = affinity
            .preferred
            .and_then(|p| list.iter().position(|c| c.idx == p))
        {
            list[..=pos].rotate_right(1);
        }
        if let Some(factor) = self.factor_millionths {
            let total_active: u64 = list.iter().map(|c| u64::from(c.active)).sum();
            let total_weight: u64 = list.iter().map(|c| u64::from(c.weight)).sum();
            list.retain(|c| {
                u64::from(c.active) < load_bound(factor, total_active, c.weight, total_weight)
            });
        }
    }
}

/// Consistent hashing with bounded loads: the most connections a backend may
/// hold after taking one more, `ceil(factor * (total + 1) * weight /
/// total_weight)` with `factor` in millionths. A backend whose
/// `active + 1` would pass this is skipped, so none ever exceeds the factor
/// times its fair share; at least one backend is always under it, because
/// the bounds add up to at least `total + 1`. Integer arithmetic so that,
/// say, 1.1 × 10 is 11 and not 12 after rounding up a float error.
fn load_bound(factor_millionths: u64, total_active: u64, weight: u32, total_weight: u64) -> u64 {
    let num = u128::from(factor_millionths) * u128::from(total_active + 1) * u128::from(weight);
    let den = 1_000_000 * u128::from(total_weight.max(1));
    u64::try_from(num.div_ceil(den)).unwrap_or(u64::MAX)
}

/// SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF",
/// 2012) with the key `(k0, k1)`. Written out here because its output must
/// never change with a dependency or toolchain upgrade.
fn siphash24((k0, k1): (u64, u64), data: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut words = data.chunks_exact(8);
    for word in &mut words {
        let mut m = [0u8; 8];
        m.copy_from_slice(word);
        sip_compress(&mut v, u64::from_le_bytes(m));
    }
    // The last word: remaining bytes, with the length's low byte on top.
    let mut last = [0u8; 8];
    let rest = words.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[7] = data.len() as u8;
    sip_compress(&mut v, u64::from_le_bytes(last));
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Absorbs one message word with two rounds (the "2" of SipHash-2-4).
fn sip_compress(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    sip_round(v);
    sip_round(v);
    v[0] ^= m;
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod slow_start_tests;
