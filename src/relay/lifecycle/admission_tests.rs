//! The lifecycle's admission rules: the client's message rate and the
//! route's `max_lifetime`, with made-up instants.

use std::time::Duration;

use tokio::time::Instant;

use super::{Due, Lifecycle, Order, Orders, Pace};
use crate::close::{CloseCode, CloseInfo, Initiator};
use crate::config::{Limits, OnMessageRate};

const MS: Duration = Duration::from_millis(1);

fn rated(per_second: u32, burst: u32, on: OnMessageRate) -> Limits {
    Limits {
        max_messages_per_second: Some(per_second),
        message_burst: Some(burst),
        on_message_rate: on,
        // No keepalive pings: these tests follow the rate timers alone.
        ping_interval: Duration::ZERO,
        ..Limits::default()
    }
}

#[test]
fn without_a_rate_there_is_no_budget() {
    let now = Instant::now();
    let mut life = Lifecycle::new(Limits::default(), false, now);
    assert_eq!(life.client_messages(1_000_000, now), Pace::Budget(None));
}

#[test]
fn slow_allows_the_tokens_left_and_wakes_for_the_next() {
    let start = Instant::now();
    let mut life = Lifecycle::new(rated(100, 10, OnMessageRate::Slow), false, start);
    assert_eq!(life.client_messages(0, start), Pace::Budget(Some(10)));
    assert_eq!(life.client_messages(9, start), Pace::Budget(Some(10)));
    // The tenth empties the bucket: the next token is back in 10 ms.
    assert_eq!(life.client_messages(10, start), Pace::Budget(Some(10)));
    assert_eq!(life.next_deadline(), start + 10 * MS);
    assert_eq!(
        life.client_messages(10, start + 9 * MS),
        Pace::Budget(Some(10))
    );
    assert_eq!(
        life.client_messages(10, start + 10 * MS),
        Pace::Budget(Some(11))
    );
    assert_eq!(
        life.client_messages(10, start + 55 * MS),
        Pace::Budget(Some(15))
    );
}

/// Over a simulated minute, a client that always has messages ready gets
/// through at the rate.
#[test]
fn slow_holds_a_greedy_client_to_the_rate() {
    let start = Instant::now();
    let mut life = Lifecycle::new(rated(100, 100, OnMessageRate::Slow), false, start);
    let (mut now, mut sent) = (start, 0u64);
    while now < start + Duration::from_secs(60) {
        match life.client_messages(sent, now) {
            Pace::Budget(Some(budget)) if budget > sent => sent = budget,
            Pace::Budget(Some(_)) => now = life.next_deadline(),
            other => panic!("{other:?}"),
        }
    }
    // 60 s at 100/s plus the first burst.
    assert!((6_095..=6_101).contains(&sent), "{sent} messages");
}

#[test]
fn close_closes_1008_to_the_client_and_1001_to_the_backend() {
    let start = Instant::now();
    let mut life = Lifecycle::new(rated(100, 10, OnMessageRate::Close), false, start);
    assert_eq!(life.client_messages(10, start), Pace::Budget(Some(11)));
    let expected = Orders {
        client_to_backend: Order {
            close: Some((CloseCode::GOING_AWAY, "message rate")),
            ..Order::default()
        },
        backend_to_client: Order {
            close: Some((CloseCode::POLICY_VIOLATION, "message rate")),
            ..Order::default()
        },
    };
    assert_eq!(life.client_messages(11, start + MS), Pace::Close(expected));
    let close = CloseInfo {
        code: CloseCode::POLICY_VIOLATION,
        initiator: Initiator::Client,
    };
    assert_eq!(life.close(), Some(close));
    assert_eq!(life.client_messages(50, start + 2 * MS), Pace::Budget(None));
}

#[test]
fn max_lifetime_closes_1001_both_ways() {
    let start = Instant::now();
    let limits = Limits {
        idle_timeout: Duration::from_secs(3600),
        ping_interval: Duration::ZERO,
        ..Limits::default()
    };
    let mut life = Lifecycle::new(limits, false, start);
    life.end_of_life(start + Duration::from_secs(60));
    assert_eq!(life.next_deadline(), start + Duration::from_secs(60));
    let early = life.on_timer(start + Duration::from_secs(59));
    assert_eq!(early.due, None);
    let tick = life.on_timer(start + Duration::from_secs(60));
    assert_eq!(
        tick.due,
        Some(Due::CloseBoth(CloseCode::GOING_AWAY, "max lifetime"))
    );
    assert_eq!(life.close().map(|c| c.initiator), Some(Initiator::Proxy));
}
