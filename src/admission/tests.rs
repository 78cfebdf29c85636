use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Gate, Refusal};
use crate::config::{Cidr, ListenerAdmission, PerClient};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn listener_cap_counts_tickets_and_frees_on_drop() {
    let gate = Arc::new(Gate::default());
    let limits = ListenerAdmission {
        max_connections: Some(2),
        ..Default::default()
    };
    let now = Instant::now();
    let a = gate.enter(ip("10.0.0.1"), &limits, now).unwrap();
    let _b = gate.enter(ip("10.0.0.2"), &limits, now).unwrap();
    let refused = gate.enter(ip("10.0.0.3"), &limits, now).unwrap_err();
    assert_eq!(refused, Refusal::ListenerFull);
    assert_eq!(refused.retry_after(), 5);
    drop(a);
    assert!(gate.enter(ip("10.0.0.3"), &limits, now).is_ok());
}

#[test]
fn exempt_clients_skip_the_per_client_limits() {
    let gate = Arc::new(Gate::default());
    let limits = ListenerAdmission {
        per_client: Some(PerClient {
            max_connections: Some(1),
            rate: None,
            exempt: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        }),
        ..Default::default()
    };
    let now = Instant::now();
    let _held: Vec<_> = (0..3)
        .map(|_| gate.enter(ip("10.1.2.3"), &limits, now).unwrap())
        .collect();
    let _one = gate.enter(ip("192.0.2.1"), &limits, now).unwrap();
    let refused = gate.enter(ip("192.0.2.1"), &limits, now).unwrap_err();
    assert_eq!(refused, Refusal::ClientConnections);
}

#[tokio::test]
async fn past_max_pending_the_oldest_pending_is_dropped() {
    let gate = Arc::new(Gate::default());
    let limits = ListenerAdmission {
        max_pending_handshakes: Some(2),
        ..Default::default()
    };
    let now = Instant::now();
    let oldest = gate.enter(ip("10.0.0.1"), &limits, now).unwrap();
    let mut done = gate.enter(ip("10.0.0.2"), &limits, now).unwrap();
    done.head_read();
    let second = gate.enter(ip("10.0.0.3"), &limits, now).unwrap();
    // Two pending (oldest, second): a third drops the oldest.
    let _third = gate.enter(ip("10.0.0.4"), &limits, now).unwrap();
    tokio::time::timeout(Duration::from_secs(5), oldest.dropped_signal().notified())
        .await
        .expect("the oldest pending connection is told to go");
    let not_yet = tokio::time::timeout(
        Duration::from_millis(10),
        second.dropped_signal().notified(),
    )
    .await;
    assert!(not_yet.is_err(), "the newer pending one stays");
    assert_eq!(gate.open(), 4, "a dropped connection counts until it ends");
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    assert_eq!(
        Refusal::ClientRate(Duration::from_millis(100)).retry_after(),
        1
    );
    assert_eq!(
        Refusal::QueueFull(Duration::from_millis(2100)).retry_after(),
        3
    );
    assert_eq!(Refusal::QueueFull(Duration::ZERO).retry_after(), 1);
}
