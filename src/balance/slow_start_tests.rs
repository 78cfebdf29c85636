//! Slow start, with made-up instants: the ramp of a backend that came up,
//! and its share of new connections by least connections and by key.

use super::*;
use crate::config::{Backend, Pool, Sticky};

const SLOW: Duration = Duration::from_secs(30);

fn pool(balance: Balance) -> Pool {
    Pool {
        name: "p".to_string(),
        balance,
        sticky: (balance == Balance::Sticky).then(|| Sticky {
            source: StickySource::Header,
            name: "k".to_string(),
            issue: true,
        }),
        hash_balance_factor: None,
        health_check: None,
        send_proxy_protocol: None,
        slow_start: SLOW,
        rebalance: None,
        max_idle_per_backend: 32,
        entries: Vec::new(),
        backends: (0..3)
            .map(|i| Backend {
                addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 9000)),
                weight: 1,
                max_connections: None,
                name: None,
            })
            .collect(),
        unresolved: Vec::new(),
        resolve_interval: Duration::from_secs(5),
        tls: None,
    }
}

/// A balancer whose third backend came up at `at`.
fn build(balance: Balance, at: Instant) -> PoolBalancer {
    let pool = pool(balance);
    let states: Vec<Arc<BackendState>> = pool
        .backends
        .iter()
        .map(|b| Arc::new(BackendState::new(b.addr)))
        .collect();
    states[2].came_up(at);
    PoolBalancer::new(&pool, states)
}

#[test]
fn the_ramp_goes_from_10_to_100_percent_over_slow_start() {
    let state = BackendState::new(SocketAddr::from(([10, 0, 0, 1], 1)));
    let t0 = Instant::now();
    assert_eq!(state.ramp(t0, SLOW), 1.0, "up from the start: no ramp");
    state.came_up(t0);
    assert!((state.ramp(t0, SLOW) - 0.1).abs() < 1e-9);
    assert!((state.ramp(t0 + SLOW / 2, SLOW) - 0.55).abs() < 1e-9);
    assert_eq!(state.ramp(t0 + SLOW, SLOW), 1.0);
    assert_eq!(state.ramp(t0, Duration::ZERO), 1.0, "off");
}

#[test]
fn coming_back_from_down_restarts_the_ramp_once() {
    let state = BackendState::new(SocketAddr::from(([10, 0, 0, 1], 1)));
    let t0 = Instant::now();
    state.mark_up();
    assert_eq!(
        state.ramp(t0 + SLOW, SLOW),
        1.0,
        "a check passing on an up backend"
    );
    state.mark_down_until(t0 + Duration::from_secs(10));
    let back = t0 + Duration::from_secs(10);
    assert!(
        (state.ramp(back, SLOW) - 0.1).abs() < 1e-9,
        "the mark expired"
    );
    assert!(state.ramp(back + SLOW / 2, SLOW) < 0.6);
}

/// An empty backend that came up would be least connections' first choice
/// for every new connection; ramping, it keeps that place about 10% of the
/// time at first and 55% halfway.
#[test]
fn least_connections_share_follows_the_ramp() {
    let t0 = Instant::now();
    let b = build(Balance::LeastConnections, t0);
    let _held: Vec<Lease> = (0..20).map(|i| b.lease(i % 2).unwrap()).collect();
    for (at, expected) in [(t0, 0.1), (t0 + SLOW / 2, 0.55), (t0 + SLOW, 1.0)] {
        let first = (0..10_000)
            .filter(|_| b.candidates(None, at)[0] == 2)
            .count();
        let share = first as f64 / 10_000.0;
        assert!(
            (share - expected).abs() < 0.03,
            "{share} at ramp {expected}"
        );
    }
    // Passed over, it is still the next choice for a retry.
    let order = b.candidates(None, t0);
    assert!(order[..2].contains(&2));
}

/// Keys whose backend is ramping go there with the ramp's probability,
/// chosen per key: the same key always lands the same way, and a key the
/// backend took at 10% is still its own at 55%.
#[test]
fn sticky_keys_follow_the_ramp_stably() {
    let t0 = Instant::now();
    let b = build(Balance::Sticky, t0);
    let keys: Vec<Vec<u8>> = (0..30_000)
        .map(|i| format!("user-{i}").into_bytes())
        .collect();
    let on_new = |at: Instant| -> Vec<bool> {
        keys.iter()
            .map(|k| b.candidates(Some(k), at)[0] == 2)
            .collect()
    };
    let early = on_new(t0);
    assert_eq!(early, on_new(t0), "stable per key");
    let halfway = on_new(t0 + SLOW / 2);
    let done = on_new(t0 + SLOW);
    let share = |v: &[bool]| v.iter().filter(|x| **x).count() as f64 / v.len() as f64;
    // Its full share is a third of the keys.
    assert!(
        (share(&early) - 0.1 / 3.0).abs() < 0.01,
        "{}",
        share(&early)
    );
    assert!(
        (share(&halfway) - 0.55 / 3.0).abs() < 0.015,
        "{}",
        share(&halfway)
    );
    assert!((share(&done) - 1.0 / 3.0).abs() < 0.015, "{}", share(&done));
    let kept = early.iter().zip(&halfway).all(|(e, h)| !e || *h);
    assert!(kept, "a key the ramping backend took stays with it");
}
