//! The `idle` mode: open many connections, prove each one with a single
//! echoed message, then hold them all open without traffic.
//!
//! The watched processes' RSS is read before the first connection and once
//! all are open (after a settling pause), and a `ready` event is handed to
//! the caller at that moment, so that a script can take its own readings
//! too. The hold ends after the duration, or on SIGINT or SIGTERM; then
//! every connection is closed with a close handshake.

use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use super::client::Conn;
use super::codec::{self, Decoder, Event, OpCode, Role};
use super::payload::{Checker, Pattern, Verdict};
use super::stats::{self, ErrorCounts, Latency};
use super::{blank_report, close_handshake, count_close, Ctx, Report, Rng};

/// Size of the one message that proves a connection works end to end.
const PROBE_SIZE: usize = 64;

/// Connections being opened at once: enough to be quick, few enough that a
/// TLS proxy does not queue handshakes past the connect timeout.
const OPENING_AT_ONCE: usize = 64;

pub(super) async fn run(
    ctx: Rc<Ctx>,
    settle: Duration,
    mut on_ready: Box<dyn FnMut(&Value)>,
) -> Report {
    let mut params = Map::new();
    params.insert("settle_s".into(), json!(settle.as_secs_f64()));
    let mut report = blank_report(params);
    let pids = ctx.opts.pids.clone();
    let watched_rss = || {
        if pids.is_empty() {
            None
        } else {
            stats::sum_over(&pids, stats::rss_kib)
        }
    };
    report.watched_rss_before_kib = watched_rss();

    let pattern = Rc::new(Pattern::new(PROBE_SIZE));
    let upgrade = Rc::new(Latency::new());
    let gate = Rc::new(Semaphore::new(OPENING_AT_ONCE));
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<()>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let n = ctx.opts.connections;
    for id in 0..n {
        let (ctx, pattern, upgrade, gate) =
            (ctx.clone(), pattern.clone(), upgrade.clone(), gate.clone());
        let (opened_tx, mut stop_rx) = (opened_tx.clone(), stop_rx.clone());
        conns.spawn_local(async move {
            let permit = gate.acquire().await;
            let start = Instant::now();
            let opened = open_and_probe(&ctx, id, &pattern).await;
            drop(permit);
            // Dropping the sender without sending says "failed".
            let Some(mut conn) = opened else {
                return;
            };
            upgrade.record(start.elapsed());
            ctx.live.opened.set(ctx.live.opened.get() + 1);
            let _ = opened_tx.send(());
            drop(opened_tx);
            hold(&ctx, &mut conn, &mut stop_rx).await;
            if !*stop_rx.borrow() {
                return;
            }
            let mut rng = Rng(ctx.seed_for(u64::from(id)).rotate_left(17));
            let outcome = close_handshake(&mut conn, &mut rng, ctx.opts.timeout).await;
            count_close(&ctx.live.errors, outcome);
        });
    }
    drop(opened_tx);
    // Ends when every connection has either reported in or given up.
    while opened_rx.recv().await.is_some() {}

    tokio::time::sleep(settle).await;
    report.watched_rss_kib = watched_rss();
    let opened = ctx.live.opened.get();
    on_ready(&json!({
        "event": "ready",
        "opened": opened,
        "failed": u64::from(n) - opened,
        "watched_rss_before_kib": report.watched_rss_before_kib,
        "watched_rss_kib": report.watched_rss_kib,
    }));

    let held = Instant::now();
    tokio::select! {
        _ = tokio::time::sleep(ctx.opts.duration) => {}
        _ = shutdown_signal() => {}
    }
    report.window = held.elapsed();
    let _ = stop_tx.send(true);
    let drain = ctx.opts.timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    let left = conns.len() as u64;
    // Aborted tasks drop their state on their next poll, which this join
    // provides; their clones of the shared state go with it.
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    let timeouts = &ctx.live.errors.timeout;
    timeouts.set(timeouts.get() + left);
    drop(ctx);
    report.latencies.push((
        "upgrade",
        Rc::try_unwrap(upgrade).ok().expect("tasks are done"),
    ));
    report
}

/// SIGINT or SIGTERM; never resolves if the handlers cannot be installed.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Opens connection `id` and checks that one message comes back intact.
async fn open_and_probe(ctx: &Ctx, id: u32, pattern: &Pattern) -> Option<Conn> {
    let errors = &ctx.live.errors;
    let (mut conn, rest) = ctx.open(u64::from(id)).await?;
    let probe = async {
        let mut out = Vec::with_capacity(PROBE_SIZE + 14);
        let mut rng = Rng(ctx.seed_for(u64::from(id)));
        let mask = rng.mask();
        codec::put_header(
            &mut out,
            true,
            OpCode::Binary,
            Some(mask),
            PROBE_SIZE as u64,
        );
        let header = Pattern::header(id, 0);
        codec::put_masked(&mut out, &header, mask, 0);
        codec::put_masked(&mut out, pattern.filler(id, 0), mask, header.len());
        if conn.write_all(&out).await.is_err() || conn.flush().await.is_err() {
            return Err(&errors.closed);
        }
        let mut decoder = Decoder::new(Role::Client);
        let mut checker = Checker::new(id);
        let mut buf = vec![0u8; 1024.max(rest.len() + codec::MAX_PENDING)];
        buf[..rest.len()].copy_from_slice(&rest);
        let mut filled = rest.len();
        loop {
            let mut verdict = None;
            let mut closed = false;
            let used = decoder.decode(&mut buf[..filled], &mut |ev| match ev {
                Event::FrameStart {
                    opcode: OpCode::Text,
                    ..
                } => checker.spoil(),
                Event::Data(chunk) => checker.data(pattern, chunk),
                Event::FrameEnd { fin: true } if verdict.is_none() => {
                    verdict = Some(checker.end(pattern))
                }
                Event::Control {
                    opcode: OpCode::Close,
                    ..
                } => closed = true,
                _ => {}
            });
            match (used, verdict) {
                (Err(_), _) => return Err(&errors.protocol),
                (_, Some(Verdict::Intact(_))) => return Ok(()),
                (_, Some(Verdict::Mismatch(_))) => return Err(&errors.mismatch),
                (Ok(used), None) => {
                    if closed {
                        return Err(&errors.closed);
                    }
                    buf.copy_within(used..filled, 0);
                    filled -= used;
                }
            }
            match conn.read(&mut buf[filled..]).await {
                Ok(n) if n > 0 => filled += n,
                _ => return Err(&errors.closed),
            }
        }
    };
    match tokio::time::timeout(ctx.opts.timeout, probe).await {
        Ok(Ok(())) => Some(conn),
        Ok(Err(counter)) => {
            ErrorCounts::bump(counter);
            None
        }
        Err(_) => {
            ErrorCounts::bump(&errors.timeout);
            None
        }
    }
}

/// Holds an open connection until `stop` flips, answering pings; counts an
/// early end. Incoming data is not expected and is skipped.
async fn hold(ctx: &Ctx, conn: &mut Conn, stop: &mut watch::Receiver<bool>) {
    let errors = &ctx.live.errors;
    let mut decoder = Decoder::new(Role::Client);
    let mut buf = vec![0u8; 256];
    let mut filled = 0;
    let mut rng = Rng(ctx.seed.rotate_left(7) | 1);
    loop {
        let read = tokio::select! {
            r = conn.read(&mut buf[filled..]) => r,
            _ = stop.changed() => return,
        };
        match read {
            Ok(n) if n > 0 => filled += n,
            _ => {
                ErrorCounts::bump(&errors.closed);
                return;
            }
        }
        let mut pongs = Vec::new();
        let mut closed = false;
        let used = decoder.decode(&mut buf[..filled], &mut |ev| match ev {
            Event::Control {
                opcode: OpCode::Ping,
                payload,
            } => codec::put_frame(&mut pongs, OpCode::Pong, Some(rng.mask()), payload),
            Event::Control {
                opcode: OpCode::Close,
                ..
            } => closed = true,
            _ => {}
        });
        let Ok(used) = used else {
            ErrorCounts::bump(&errors.protocol);
            return;
        };
        buf.copy_within(used..filled, 0);
        filled -= used;
        if closed {
            ErrorCounts::bump(&errors.closed);
            return;
        }
        if !pongs.is_empty() && conn.write_all(&pongs).await.is_err() {
            ErrorCounts::bump(&errors.closed);
            return;
        }
    }
}
