//! The `handshake` mode: workers that connect, upgrade and close, over and
//! over, as fast as the other side lets them.
//!
//! A cycle is TCP connect, TLS (for `wss://`, always a full handshake: the
//! client keeps no sessions), the upgrade, then a close handshake that ends
//! with the server closing TCP. Two latencies are kept: to the 101 answer,
//! and for the whole cycle.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

use serde_json::Map;
use tokio::task::JoinSet;

use super::stats::Latency;
use super::{blank_report, close_handshake, count_close, in_window, CpuMark, Ctx, Report, Rng};

/// Pause after a failed attempt, so that a refused port does not turn the
/// worker into a busy loop.
const BACKOFF: Duration = Duration::from_millis(10);

pub(super) async fn run(ctx: Rc<Ctx>) -> Report {
    let mut report = blank_report(Map::new());
    let o = &ctx.opts;
    let t0 = Instant::now();
    let window = (t0 + o.warmup, t0 + o.warmup + o.duration);
    let upgrade = Rc::new(Latency::new());
    let cycle = Rc::new(Latency::new());
    let next_id = Rc::new(Cell::new(0u64));

    let mut workers = JoinSet::new();
    for _ in 0..o.connections {
        let (ctx, upgrade, cycle, next_id) =
            (ctx.clone(), upgrade.clone(), cycle.clone(), next_id.clone());
        workers.spawn_local(async move {
            let live = &ctx.live;
            // Bounded by time: no cycle starts after the window.
            while Instant::now() < window.1 {
                let id = next_id.get();
                next_id.set(id + 1);
                let start = Instant::now();
                let Some((mut conn, _)) = ctx.open(id).await else {
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                };
                let upgraded = Instant::now();
                let mut rng = Rng(ctx.seed_for(id));
                let outcome = close_handshake(&mut conn, &mut rng, ctx.opts.timeout).await;
                let done = Instant::now();
                if !count_close(&ctx.live.errors, outcome) {
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
                if in_window(done, window) {
                    live.cycles.set(live.cycles.get() + 1);
                    upgrade.record(upgraded - start);
                    cycle.record(done - start);
                }
            }
        });
    }

    let pids = o.pids.clone();
    let marks = tokio::task::spawn_local(async move {
        tokio::time::sleep_until(window.0).await;
        let start = CpuMark::now(&pids);
        tokio::time::sleep_until(window.1).await;
        (start, CpuMark::now(&pids))
    });
    while workers.join_next().await.is_some() {}
    if let Ok((start, end)) = marks.await {
        CpuMark::fill(start, end, &mut report);
    }
    report.window = window.1 - window.0;
    drop(ctx);
    let unwrap = |l: Rc<Latency>| Rc::try_unwrap(l).ok().expect("workers are done");
    report.latencies.push(("upgrade", unwrap(upgrade)));
    report.latencies.push(("cycle", unwrap(cycle)));
    report
}
