use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tokio::time::Instant;

use super::{ClientKey, Refused, Table};
use crate::config::{PerClient, Rate};

fn limits(max: Option<u32>, rate: Option<(f64, u32)>) -> PerClient {
    PerClient {
        max_connections: max,
        rate: rate.map(|(per_second, burst)| Rate { per_second, burst }),
        exempt: Vec::new(),
    }
}

fn v4(n: u32) -> ClientKey {
    ClientKey::of(IpAddr::V4(Ipv4Addr::from(n)))
}

#[test]
fn ipv6_clients_are_their_64() {
    let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
    let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(ClientKey::of(a.into()), ClientKey::of(b.into()));
    assert_ne!(ClientKey::of(a.into()), ClientKey::of(c.into()));
    let mapped: Ipv6Addr = "::ffff:10.1.2.3".parse().unwrap();
    assert_eq!(
        ClientKey::of(mapped.into()),
        ClientKey::of("10.1.2.3".parse().unwrap())
    );
}

#[test]
fn connection_cap_counts_open_ones_and_frees_on_close() {
    let (mut table, now) = (Table::default(), Instant::now());
    let l = limits(Some(2), None);
    assert_eq!(table.open(v4(1), &l, now), Ok(()));
    assert_eq!(table.open(v4(1), &l, now), Ok(()));
    assert_eq!(table.open(v4(1), &l, now), Err(Refused::Connections));
    assert_eq!(
        table.open(v4(2), &l, now),
        Ok(()),
        "another client is apart"
    );
    table.close(v4(1), now);
    assert_eq!(table.open(v4(1), &l, now), Ok(()));
    for _ in 0..2 {
        table.close(v4(1), now);
    }
    table.close(v4(2), now);
    assert!(table.is_empty(), "nothing open and no bucket: no state");
}

#[test]
fn bucket_allows_the_burst_then_the_rate() {
    let (mut table, start) = (Table::default(), Instant::now());
    let l = limits(None, Some((10.0, 20)));
    for _ in 0..20 {
        assert_eq!(table.open(v4(7), &l, start), Ok(()));
    }
    match table.open(v4(7), &l, start) {
        Err(Refused::Rate(wait)) => assert_eq!(wait, Duration::from_millis(100)),
        other => panic!("expected a rate refusal, got {other:?}"),
    }
    // One token every 100 ms: 10 in the next second, no more.
    let mut admitted = 0;
    for ms in (10..=1000).step_by(10) {
        let now = start + Duration::from_millis(ms);
        if table.open(v4(7), &l, now).is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
}

#[test]
fn idle_clients_are_forgotten_once_their_bucket_is_full() {
    let (mut table, start) = (Table::default(), Instant::now());
    let l = limits(Some(5), Some((10.0, 20)));
    table.open(v4(1), &l, start).unwrap();
    table.close(v4(1), start);
    assert_eq!(table.len(), 1, "the bucket is still refilling");
    let later = start + Duration::from_secs(3);
    table.open(v4(2), &l, later).unwrap();
    table.close(v4(2), later);
    assert_eq!(table.len(), 1, "client 1 is gone, client 2 refills");
}

/// A million distinct addresses, each opening and closing a connection,
/// 20,000 per second: the table holds only the last second or so of them.
#[test]
fn memory_does_not_grow_with_distinct_addresses() {
    let (mut table, start) = (Table::default(), Instant::now());
    let l = limits(Some(100), Some((10.0, 20)));
    let (mut most, mut most_room) = (0, 0);
    for i in 0..1_000_000u32 {
        let now = start + Duration::from_micros(50 * u64::from(i));
        // Half the addresses are IPv6, each in a /64 of its own.
        let key = if i % 2 == 0 {
            v4(i)
        } else {
            ClientKey::of(IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64)))
        };
        table.open(key, &l, now).unwrap();
        table.close(key, now);
        most = most.max(table.len());
        most_room = most_room.max(table.capacity());
    }
    // An entry refills in 100 ms and sweeps run every second: at most
    // 1.1 s of arrivals (22,000) are held at once.
    assert!(most <= 23_000, "{most} entries at most");
    assert!(most_room <= 4 * 23_000 + 64, "room for {most_room} entries");
    let end = start + Duration::from_secs(60);
    table.close(v4(0), end);
    assert!(table.is_empty(), "all gone once their buckets refilled");
    assert!(table.capacity() <= 64, "the room is given back");
}
