use std::time::Duration;

use tokio::time::Instant;

use super::{overload, Load, Planner};
use crate::config::Rebalance;

fn loads(counts: &[u64]) -> Vec<Load> {
    counts
        .iter()
        .map(|&connections| Load {
            weight: 1,
            connections,
            eligible: true,
        })
        .collect()
}

const SETTINGS: Rebalance = Rebalance {
    tolerance: 0.2,
    max_closes_per_second: 20.0,
};

#[test]
fn overload_is_what_passes_the_tolerance_over_the_fair_share() {
    // 300 on three: a fair share of 100, 120 allowed.
    assert_eq!(overload(&loads(&[150, 150, 0]), 0.2), [30, 30, 0]);
    assert_eq!(overload(&loads(&[120, 120, 60]), 0.2), [0, 0, 0]);
    // Weights: 1 and 2 of 300 are 100 and 200.
    let mut weighted = loads(&[150, 150]);
    weighted[1].weight = 2;
    assert_eq!(overload(&weighted, 0.2), [30, 0]);
}

#[test]
fn small_pools_and_ineligible_backends_are_left_alone() {
    // Under 10 per backend on average.
    assert_eq!(overload(&loads(&[25, 0, 0]), 0.2), [0, 0, 0]);
    let mut down = loads(&[150, 150, 0]);
    down[2].eligible = false;
    assert_eq!(
        overload(&down, 0.2),
        [0, 0, 0],
        "the empty one cannot take any"
    );
}

/// From 150/150/0, the planner asks exactly the 60 needed closes, on the
/// two full backends alike, at no more than 20 a second.
#[test]
fn closes_come_at_the_rate_until_within_tolerance() {
    let start = Instant::now();
    let mut planner = Planner::new(SETTINGS);
    let mut counts = [150u64, 150, 0];
    let mut per_second = [0u32; 10];
    let mut closes = 0;
    let tick = planner.tick();
    assert_eq!(tick, Duration::from_millis(50));
    for t in 0..200u32 {
        let now = start + tick * t;
        for idx in planner.plan(now, &loads(&counts)) {
            assert_ne!(idx, 2, "never on the under-loaded backend");
            counts[idx] -= 1;
            // The client reconnects to the emptiest backend.
            counts[2] += 1;
            closes += 1;
            per_second[(t / 20) as usize] += 1;
        }
    }
    assert_eq!(closes, 60, "{counts:?}");
    assert!(overload(&loads(&counts), 0.2).iter().all(|e| *e == 0));
    assert!(per_second.iter().all(|n| *n <= 20), "{per_second:?}");
}
