use super::*;
use crate::config::{Backend, BackendEntry, HealthCheck, HealthCheckKind, Pool, Sticky, Target};
use std::collections::HashMap;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 9000))
}

fn pool(balance: Balance, source: Option<StickySource>, weights: &[u32]) -> Pool {
    let backends: Vec<Backend> = weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Backend {
            addr: addr(i),
            weight,
            max_connections: None,
            name: None,
        })
        .collect();
    Pool {
        name: "p".to_string(),
        balance,
        sticky: source.map(|source| Sticky {
            source,
            name: "k".to_string(),
            issue: true,
        }),
        send_proxy_protocol: None,
        hash_balance_factor: None,
        health_check: None,
        slow_start: Duration::ZERO,
        rebalance: None,
        entries: (backends.iter())
            .map(|b| BackendEntry {
                target: Target::Addr(b.addr),
                weight: b.weight,
                max_connections: None,
            })
            .collect(),
        backends,
        unresolved: Vec::new(),
        resolve_interval: std::time::Duration::from_secs(5),
        tls: None,
        max_idle_per_backend: 32,
    }
}

fn least(weights: &[u32]) -> Pool {
    pool(Balance::LeastConnections, None, weights)
}

fn sticky(weights: &[u32]) -> Pool {
    pool(Balance::Sticky, Some(StickySource::Header), weights)
}

fn build(pool: &Pool) -> PoolBalancer {
    let states = pool
        .backends
        .iter()
        .map(|b| Arc::new(BackendState::new(b.addr)))
        .collect();
    PoolBalancer::new(pool, states)
}

fn key(i: usize) -> Vec<u8> {
    format!("user-{i}").into_bytes()
}

/// The address a key is placed on when nothing is leased.
fn placement(b: &PoolBalancer, keys: usize, now: Instant) -> Vec<SocketAddr> {
    (0..keys)
        .map(|i| {
            let first = b.candidates(Some(&key(i)), now)[0];
            b.backend(first).expect("ranked").addr()
        })
        .collect()
}

/// Picks `n` times, leasing each first candidate and keeping the lease.
fn pick_and_hold(b: &PoolBalancer, n: usize, now: Instant) -> Vec<Lease> {
    (0..n)
        .map(|_| {
            let first = b.candidates(None, now)[0];
            b.lease(first).expect("no cap")
        })
        .collect()
}

fn actives(b: &PoolBalancer) -> Vec<u32> {
    (0..b.len())
        .map(|i| b.backend(i).map_or(0, |s| s.active()))
        .collect()
}

#[test]
fn siphash_matches_the_reference_vectors() {
    // Appendix A of the SipHash paper: key 00..0f, messages 00..(n-1).
    let key = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
    let msg: Vec<u8> = (0..64).collect();
    assert_eq!(siphash24(key, &msg[..0]), 0x726f_db47_dd0e_0e31);
    assert_eq!(siphash24(key, &msg[..15]), 0xa129_ca61_49be_45e5);
    // And std's own (deprecated) SipHash-2-4 for every length to 64.
    #[allow(deprecated)]
    for len in 0..=64 {
        use std::hash::Hasher;
        let mut std_sip = std::hash::SipHasher::new_with_keys(key.0, key.1);
        std_sip.write(&msg[..len]);
        assert_eq!(siphash24(key, &msg[..len]), std_sip.finish(), "len {len}");
    }
}

#[test]
fn backend_id_and_cookie_are_pinned() {
    // Changing these values breaks every sticky cookie in the field and
    // makes mixed versions place keys differently.
    let a: SocketAddr = "127.0.0.1:9001".parse().expect("address");
    assert_eq!(backend_id(&a), 0x12a8_3435_40fe_e724);
    assert_eq!(cookie_value(backend_id(&a)), "00d761d421050b6f");
}

#[test]
fn placement_is_pinned() {
    // The same guarantee for keys: an upgrade must not reshuffle them.
    let b = build(&sticky(&[1, 2, 3, 1, 1]));
    let order = b.candidates(Some(b"user-1"), Instant::now());
    assert_eq!(order, [2, 1, 4, 3, 0]);
}

#[test]
fn backend_id_depends_on_ip_port_and_scope() {
    let ids: Vec<u64> = [
        "127.0.0.1:9001",
        "127.0.0.1:9002",
        "127.0.0.2:9001",
        "[::1]:9001",
        "[::ffff:127.0.0.1]:9001",
        "[fe80::1%1]:9001",
        "[fe80::1%2]:9001",
    ]
    .iter()
    .map(|s| backend_id(&s.parse().expect("address")))
    .collect();
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn cookie_token_hides_the_address_and_maps_back() {
    let b = build(&pool(Balance::Sticky, Some(StickySource::Cookie), &[1; 5]));
    for idx in 0..b.len() {
        let state = b.backend(idx).map(Arc::clone).expect("backend");
        let token = cookie_value(state.id());
        assert_eq!(token.len(), 16);
        assert!(token.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(!token.contains("0a00"), "no address bytes: {token}");
        assert_ne!(token, format!("{:016x}", state.id()));
        assert_eq!(b.backend_for_token(token.as_bytes()), Some(idx));
        assert_eq!(b.backend_for_token(token.to_uppercase().as_bytes()), None);
        assert_eq!(b.backend_for_token(&token.as_bytes()[1..]), None);
    }
    assert_eq!(b.backend_for_token(b"0123456789abcdef"), None);
    assert_eq!(b.backend_for_token(b"+123456789abcdef"), None);
    assert_eq!(b.backend_for_token(b""), None);
    let elsewhere = cookie_value(backend_id(&addr(77)));
    assert_eq!(b.backend_for_token(elsewhere.as_bytes()), None);
}

#[test]
fn least_connections_30_picks_over_3_equal_backends_is_10_each() {
    let b = build(&least(&[1, 1, 1]));
    let _held = pick_and_hold(&b, 30, Instant::now());
    assert_eq!(actives(&b), [10, 10, 10]);
}

#[test]
fn least_connections_weights_1_2_get_10_and_20() {
    let b = build(&least(&[1, 2]));
    let _held = pick_and_hold(&b, 30, Instant::now());
    assert_eq!(actives(&b), [10, 20]);
}

#[test]
fn least_connections_1000_picks_over_4_is_250_each() {
    let b = build(&least(&[3, 3, 3, 3]));
    let _held = pick_and_hold(&b, 1000, Instant::now());
    assert_eq!(actives(&b), [250; 4]);
}

#[test]
fn simultaneous_picks_start_at_different_backends() {
    // Picks that all rank before any of them leases see equal counts.
    let b = build(&least(&[1, 1, 1]));
    let now = Instant::now();
    let mut firsts: Vec<usize> = (0..3).map(|_| b.candidates(None, now)[0]).collect();
    firsts.sort_unstable();
    assert_eq!(firsts, [0, 1, 2]);
}

#[test]
fn least_connections_ranks_every_backend_by_load_per_weight() {
    let b = build(&least(&[1, 2, 4]));
    let now = Instant::now();
    let _l: Vec<Lease> = [0, 1, 1, 1, 2, 2, 2, 2, 2, 2]
        .iter()
        .filter_map(|&i| b.lease(i))
        .collect();
    // Loads 1/1, 3/2, 6/4: idx 0 first, then 1 and 2 tied at 1.5.
    let order = b.candidates(None, now);
    assert_eq!(order[0], 0);
    assert_eq!(order.len(), 3);
}

#[test]
fn lease_counts_until_dropped() {
    let b = build(&least(&[1]));
    let first = b.lease(0).expect("lease");
    let second = b.lease(0).expect("lease");
    assert_eq!(actives(&b), [2]);
    drop(first);
    assert_eq!(actives(&b), [1]);
    assert_eq!(second.backend().addr(), addr(0));
    drop(second);
    assert_eq!(actives(&b), [0]);
    assert!(b.lease(7).is_none());
}

#[test]
fn backend_at_max_connections_is_neither_ranked_nor_leased() {
    let mut p = least(&[1, 1]);
    p.backends[0].max_connections = Some(2);
    let b = build(&p);
    let now = Instant::now();
    let held: Vec<Lease> = (0..2).filter_map(|_| b.lease(0)).collect();
    assert_eq!(held.len(), 2);
    assert!(b.lease(0).is_none());
    assert_eq!(b.candidates(None, now), [1]);
    drop(held);
    assert_eq!(b.candidates(None, now).len(), 2);
}

#[test]
fn failed_backend_without_health_check_returns_after_10s() {
    let b = build(&least(&[1, 1]));
    let t0 = Instant::now();
    b.mark_failed(0, t0);
    assert_eq!(b.candidates(None, t0), [1]);
    assert_eq!(b.candidates(None, t0 + Duration::from_secs(9)), [1]);
    assert_eq!(b.candidates(None, t0 + PASSIVE_DOWN).len(), 2);
}

#[test]
fn failed_backend_with_health_check_waits_for_mark_up() {
    let mut p = least(&[1, 1]);
    p.health_check = Some(HealthCheck {
        kind: HealthCheckKind::Tcp,
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
    });
    let b = build(&p);
    let t0 = Instant::now();
    b.mark_failed(1, t0);
    assert_eq!(b.candidates(None, t0 + Duration::from_secs(3600)), [0]);
    b.mark_up(1);
    assert_eq!(b.candidates(None, t0).len(), 2);
}

#[test]
fn dropping_the_health_check_lifts_its_down_marks() {
    let mut p = least(&[1, 1]);
    let states: Vec<Arc<BackendState>> = p
        .backends
        .iter()
        .map(|b| Arc::new(BackendState::new(b.addr)))
        .collect();
    let t0 = Instant::now();
    states[0].mark_down();
    states[1].mark_down_until(t0 + PASSIVE_DOWN);
    p.health_check = None;
    let b = PoolBalancer::new(&p, states);
    assert_eq!(b.candidates(None, t0), [0]);
    assert_eq!(b.candidates(None, t0 + PASSIVE_DOWN).len(), 2);
}

#[test]
fn draining_backend_gets_no_new_connections() {
    let b = build(&sticky(&[1, 1]));
    let now = Instant::now();
    b.set_draining(0, true);
    assert!(b.backend(0).is_some_and(|s| s.is_draining()));
    for i in 0..50 {
        assert_eq!(b.candidates(Some(&key(i)), now), [1]);
    }
    b.set_draining(0, false);
    assert_eq!(b.candidates(None, now).len(), 2);
}

#[test]
fn no_eligible_backend_gives_an_empty_order() {
    let b = build(&sticky(&[1, 1]));
    let now = Instant::now();
    b.mark_failed(0, now);
    b.mark_failed(1, now);
    assert!(b.candidates(Some(b"k"), now).is_empty());
    assert!(b.candidates(None, now).is_empty());
}

#[test]
fn sticky_shares_follow_weights_within_5_percent() {
    let weights = [1, 2, 3, 4, 10];
    let b = build(&sticky(&weights));
    let now = Instant::now();
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for a in placement(&b, 100_000, now) {
        *counts.entry(a).or_default() += 1;
    }
    let total: u32 = weights.iter().sum();
    for (i, &w) in weights.iter().enumerate() {
        let expected = 100_000.0 * f64::from(w) / f64::from(total);
        let got = counts.get(&addr(i)).copied().unwrap_or(0) as f64;
        assert!(
            (got - expected).abs() <= 0.05 * expected,
            "backend {i}: {got} keys, expected {expected}"
        );
    }
}

#[test]
fn sticky_removing_one_of_5_moves_at_most_a_quarter() {
    let now = Instant::now();
    let before = placement(&build(&sticky(&[1; 5])), 20_000, now);
    let mut p = sticky(&[1; 5]);
    p.backends.remove(2);
    let after = placement(&build(&p), 20_000, now);
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(moved <= 5_000, "{moved} of 20000 moved");
    // Exactly the removed backend's keys move, nothing else.
    for (a, b) in before.iter().zip(&after) {
        assert!(a == b || *a == addr(2));
    }
}

#[test]
fn sticky_adding_one_to_5_moves_at_most_a_quarter() {
    let now = Instant::now();
    let before = placement(&build(&sticky(&[1; 5])), 20_000, now);
    let after = placement(&build(&sticky(&[1; 6])), 20_000, now);
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(moved <= 5_000, "{moved} of 20000 moved");
    for (a, b) in before.iter().zip(&after) {
        assert!(a == b || *b == addr(5));
    }
}

#[test]
fn independently_built_balancers_place_10000_keys_alike() {
    let now = Instant::now();
    let one = build(&sticky(&[1, 2, 3, 1, 1, 5, 1]));
    // Another instance, its backends listed in another order.
    let mut p = sticky(&[1, 2, 3, 1, 1, 5, 1]);
    p.backends.reverse();
    let two = build(&p);
    assert_eq!(placement(&one, 10_000, now), placement(&two, 10_000, now));
}

#[test]
fn sticky_key_falls_to_its_next_backend_and_returns() {
    let b = build(&sticky(&[1; 4]));
    let t0 = Instant::now();
    let k = key(42);
    let ranking = b.candidates(Some(&k), t0);
    assert_eq!(ranking.len(), 4);
    assert_eq!(b.candidates(Some(&k), t0), ranking, "stable while healthy");
    b.mark_failed(ranking[0], t0);
    assert_eq!(b.candidates(Some(&k), t0), ranking[1..]);
    assert_eq!(b.candidates(Some(&k), t0 + PASSIVE_DOWN), ranking);
}

#[test]
fn sticky_without_key_is_least_connections() {
    let b = build(&sticky(&[1, 1, 1]));
    let now = Instant::now();
    let _l: Vec<Lease> = [0, 0, 2].iter().filter_map(|&i| b.lease(i)).collect();
    assert_eq!(b.candidates(None, now), [1, 2, 0]);
    assert_eq!(b.candidates(Some(b""), now), [1, 2, 0]);
}

#[test]
fn cookie_names_its_backend_first_then_ranks_the_token() {
    let b = build(&pool(Balance::Sticky, Some(StickySource::Cookie), &[1; 5]));
    let now = Instant::now();
    for idx in 0..b.len() {
        let token = b.backend(idx).map(|s| cookie_value(s.id())).expect("idx");
        let order = b.candidates(Some(token.as_bytes()), now);
        assert_eq!(order[0], idx);
        assert_eq!(order.len(), 5);
        // Down: the rest keeps the token's rendezvous order.
        b.mark_failed(idx, now);
        let without: Vec<usize> = order.iter().copied().filter(|&i| i != idx).collect();
        assert_eq!(b.candidates(Some(token.as_bytes()), now), without);
        b.mark_up(idx);
    }
}

#[test]
fn forged_cookie_is_treated_as_no_key() {
    let b = build(&pool(Balance::Sticky, Some(StickySource::Cookie), &[1; 3]));
    let now = Instant::now();
    let _l: Vec<Lease> = [0, 0, 1].iter().filter_map(|&i| b.lease(i)).collect();
    assert_eq!(b.candidates(Some(b"ffffffffffffffff"), now), [2, 1, 0]);
    assert_eq!(b.candidates(Some(b"127.0.0.1:9001"), now), [2, 1, 0]);
}

#[test]
fn load_bound_rounds_up_exactly() {
    // 1.1 × (9 + 1) = 11, which a float product would round up to 12.
    assert_eq!(load_bound(1_100_000, 9, 1, 1), 11);
    assert_eq!(load_bound(1_250_000, 3, 1, 4), 2);
    assert_eq!(load_bound(1_250_000, 0, 1, 4), 1);
    assert_eq!(load_bound(1_500_000, 99, 3, 4), 113);
}

#[test]
fn bounded_load_never_exceeds_the_factor() {
    let weights = [1, 1, 2, 4];
    let total_weight: u64 = 8;
    let factor = 1.25;
    let mut p = sticky(&weights);
    p.hash_balance_factor = Some(factor);
    let b = build(&p);
    let now = Instant::now();
    let mut held: Vec<Lease> = Vec::new();
    // Three hot keys would put everything on at most three backends.
    for step in 0..4000usize {
        let order = b.candidates(Some(&key(step % 3)), now);
        let first = order[0];
        let total: u64 = actives(&b).iter().map(|&a| u64::from(a)).sum();
        let bound = (factor * (total + 1) as f64 * f64::from(weights[first]) / total_weight as f64)
            .ceil() as u32;
        held.push(b.lease(first).expect("no cap"));
        assert!(actives(&b)[first] <= bound, "step {step}");
        // Connections end too, in an order unrelated to placement.
        if step % 7 == 3 {
            held.swap_remove((step * 31) % held.len());
        }
    }
}

#[test]
fn bounded_load_off_lets_a_hot_key_pile_up() {
    let b = build(&sticky(&[1, 1, 1, 1]));
    let now = Instant::now();
    let held: Vec<Lease> = (0..100)
        .filter_map(|_| b.lease(b.candidates(Some(b"hot"), now)[0]))
        .collect();
    assert_eq!(held.len(), 100);
    assert_eq!(actives(&b).iter().filter(|&&a| a == 100).count(), 1);
}

#[test]
fn max_connections_holds_under_concurrent_leasing() {
    const CAP: u32 = 64;
    let mut p = least(&[1]);
    p.backends[0].max_connections = Some(CAP);
    let b = build(&p);
    let barrier = std::sync::Barrier::new(4);
    let granted = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        for t in 0..4usize {
            let (b, barrier, granted) = (&b, &barrier, &granted);
            s.spawn(move || {
                let mut mine = Vec::new();
                barrier.wait();
                for i in 0..5_000usize {
                    if let Some(lease) = b.lease(0) {
                        granted.fetch_add(1, Ordering::Relaxed);
                        mine.push(lease);
                    }
                    assert!(actives(b)[0] <= CAP);
                    // Free some slots so that the others keep racing.
                    if (i + t) % 3 == 0 {
                        mine.pop();
                    }
                }
                mine.len()
            });
        }
    });
    assert_eq!(actives(&b), [0], "every slot returned");
    assert!(granted.load(Ordering::Relaxed) > CAP);

    // Nothing freed: exactly CAP leases are granted in total.
    let kept = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (b, kept) = (&b, &kept);
            s.spawn(move || {
                let mine: Vec<Lease> = (0..100).filter_map(|_| b.lease(0)).collect();
                if let Ok(mut k) = kept.lock() {
                    k.extend(mine);
                }
            });
        }
    });
    assert_eq!(kept.lock().map(|k| k.len()).unwrap_or(0), CAP as usize);
    assert_eq!(actives(&b), [CAP]);
}
