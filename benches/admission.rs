//! The per-client limiter under a flood of distinct addresses: a million
//! clients, each opening and closing one connection, 20,000 a second of
//! simulated time. Reports the time per connection and, printed once, the
//! most entries the table held (it must stay near one second's worth of
//! arrivals, whatever the number of addresses).
//!
//! Run with `cargo bench --bench admission`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::time::Instant;
use wsgate::admission::per_client::{ClientKey, Table};
use wsgate::config::{PerClient, Rate};

const CLIENTS: u32 = 1_000_000;

fn flood(limits: &PerClient) -> usize {
    let (mut table, start) = (Table::default(), Instant::now());
    let mut most = 0;
    for i in 0..CLIENTS {
        let now = start + Duration::from_micros(50 * u64::from(i));
        let key = ClientKey::of(IpAddr::V4(Ipv4Addr::from(i)));
        let _ = black_box(table.open(key, limits, now));
        table.close(key, now);
        most = most.max(table.len());
    }
    most
}

fn per_client(c: &mut Criterion) {
    let limits = PerClient {
        max_connections: Some(100),
        rate: Some(Rate {
            per_second: 10.0,
            burst: 20,
        }),
        exempt: Vec::new(),
    };
    println!("most entries held: {}", flood(&limits));
    let mut group = c.benchmark_group("per_client");
    group.throughput(Throughput::Elements(u64::from(CLIENTS)));
    group.sample_size(10);
    group.bench_function("million_distinct_addresses", |b| b.iter(|| flood(&limits)));
    group.finish();
}

criterion_group!(benches, per_client);
criterion_main!(benches);
