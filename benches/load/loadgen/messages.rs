//! The `rtt` and `throughput` modes: echoed messages over long-lived
//! connections.
//!
//! Each connection has a writer task and a reader task. The writer is fed
//! commands through a channel: in `rtt` mode by the pacing thread (open
//! loop: the schedule never waits for replies), in `throughput` mode by the
//! reader, which hands back one send per echo so that `in_flight` messages
//! stay unanswered. The writer sends whatever is due in one write, and
//! records each message's scheduled and actual send time; the reader checks
//! every echo byte for byte and measures its round trip from both.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

use serde_json::{json, Map};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinSet;
use tokio::time::timeout_at;

use super::client::{ConnRead, ConnWrite};
use super::codec::{self, Decoder, Event, OpCode, Role};
use super::payload::{Checker, Pattern, Verdict};
use super::stats::{ErrorCounts, Latency};
use super::{blank_report, in_window, CpuMark, Ctx, Report, Rng};

/// How sends are scheduled.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pace {
    /// Open loop at this many messages per second in total.
    Rate(f64),
    /// Closed loop with this many messages in flight per connection.
    InFlight(u32),
}

/// What the writer is asked to do.
enum Cmd {
    /// Send the next message; `due` is when it was scheduled.
    Message { due: Instant },
    /// Answer a ping.
    Pong(Vec<u8>),
    /// The window is over: send a close frame and stop.
    Finish,
}

/// One message on its way, as the reader needs to see it.
struct InFlight {
    due: Instant,
    sent: Instant,
}

/// What a connection's reader and writer share.
struct Shared {
    id: u32,
    in_flight: RefCell<VecDeque<InFlight>>,
    close_sent: Cell<bool>,
    /// The write half once the writer is done. Dropping a plain write half
    /// shuts down the sending side, and a proxy may take that FIN as the
    /// end of the whole connection and drop echoes still on their way, so
    /// it lives until the reader has seen the server close (RFC 6455
    /// section 7.1.1: the server closes TCP first).
    parked: RefCell<Option<ConnWrite>>,
}

/// The run's clock and fixed inputs, shared by all tasks.
struct Plan {
    pace: Pace,
    pattern: Pattern,
    window: (Instant, Instant),
    /// Every wait ends by then: the window's end plus the drain time.
    deadline: Instant,
    rtt_due: Latency,
    rtt_sent: Latency,
}

/// The most bytes the writer gathers into one write.
const BATCH_BYTES: usize = 256 * 1024;

/// Read buffer size: a few TCP segments of 16 KiB messages at a time.
const READ_BYTES: usize = 64 * 1024;

pub(super) async fn run(ctx: Rc<Ctx>, size: usize, pace: Pace) -> Report {
    let mut params = Map::new();
    params.insert("size".into(), json!(size));
    match pace {
        Pace::Rate(rate) => params.insert("rate".into(), json!(rate)),
        Pace::InFlight(n) => params.insert("in_flight".into(), json!(n)),
    };
    let mut report = blank_report(params);

    // Open every connection first, a bounded number at a time, so that
    // connection setup stays out of the window.
    let mut opening = JoinSet::new();
    let gate = Rc::new(tokio::sync::Semaphore::new(64));
    for id in 0..u64::from(ctx.opts.connections) {
        let (ctx, gate) = (ctx.clone(), gate.clone());
        opening.spawn_local(async move {
            let _permit = gate.acquire().await.ok()?;
            ctx.open(id)
                .await
                .map(|(conn, rest)| (id as u32, conn, rest))
        });
    }
    let mut conns = Vec::new();
    while let Some(done) = opening.join_next().await {
        if let Ok(Some(c)) = done {
            conns.push(c);
        }
    }
    conns.sort_by_key(|c| c.0);
    if conns.is_empty() {
        return report;
    }

    let o = &ctx.opts;
    let t0 = Instant::now();
    let window = (t0 + o.warmup, t0 + o.warmup + o.duration);
    let plan = Rc::new(Plan {
        pace,
        pattern: Pattern::new(size),
        window,
        deadline: window.1 + o.timeout,
        rtt_due: Latency::new(),
        rtt_sent: Latency::new(),
    });

    let mut tasks = JoinSet::new();
    let mut senders = Vec::new();
    for (id, conn, rest) in conns {
        let (tx, rx) = unbounded_channel();
        let shared = Rc::new(Shared {
            id,
            in_flight: RefCell::new(VecDeque::new()),
            close_sent: Cell::new(false),
            parked: RefCell::new(None),
        });
        let (r, w) = conn.split();
        let rng = Rng(ctx.seed_for(u64::from(id)));
        tasks.spawn_local(writer(
            ctx.clone(),
            plan.clone(),
            shared.clone(),
            w,
            rx,
            rng,
        ));
        tasks.spawn_local(reader(
            ctx.clone(),
            plan.clone(),
            shared,
            r,
            rest,
            tx.clone(),
        ));
        senders.push(tx);
    }

    let pacer = match pace {
        Pace::Rate(rate) => {
            let end = window.1;
            Some(std::thread::spawn(move || {
                pace_open_loop(senders, t0, rate, end)
            }))
        }
        Pace::InFlight(n) => {
            for tx in &senders {
                for _ in 0..n {
                    let _ = tx.send(Cmd::Message { due: t0 });
                }
            }
            tasks.spawn_local(async move {
                tokio::time::sleep_until(window.1).await;
                for tx in &senders {
                    let _ = tx.send(Cmd::Finish);
                }
            });
            None
        }
    };

    let pids = o.pids.clone();
    let marks = tokio::task::spawn_local(async move {
        tokio::time::sleep_until(window.0).await;
        let start = CpuMark::now(&pids);
        tokio::time::sleep_until(window.1).await;
        (start, CpuMark::now(&pids))
    });
    while tasks.join_next().await.is_some() {}
    if let Ok((start, end)) = marks.await {
        CpuMark::fill(start, end, &mut report);
    }
    if let Some(pacer) = pacer {
        // It returned at the window's end, before the drain.
        let _ = pacer.join();
    }

    report.window = window.1 - window.0;
    let plan = Rc::try_unwrap(plan).ok().expect("tasks are done");
    // In closed loop a message is "due" when the previous echo frees its
    // slot, which says nothing new; only the open loop keeps both.
    if let Pace::Rate(_) = pace {
        report.latencies.push(("rtt_scheduled", plan.rtt_due));
    }
    report.latencies.push(("rtt_sent", plan.rtt_sent));
    report
}

/// The open-loop schedule: message k is due at `t0 + k / rate`, on
/// connection `k mod n`, whatever the replies do. Runs on its own thread:
/// `thread::sleep` wakes within the kernel's timer slack (about 50 µs),
/// where Tokio's timer would round up to the next millisecond and add that
/// to every round trip measured from the schedule.
fn pace_open_loop(senders: Vec<UnboundedSender<Cmd>>, t0: Instant, rate: f64, end: Instant) {
    let period_ns = 1e9 / rate;
    let mut k: u64 = 0;
    loop {
        let due = t0 + Duration::from_nanos((k as f64 * period_ns) as u64);
        if due >= end {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let _ = senders[(k % senders.len() as u64) as usize].send(Cmd::Message { due });
        k += 1;
    }
    for tx in &senders {
        let _ = tx.send(Cmd::Finish);
    }
}

async fn writer(
    ctx: Rc<Ctx>,
    plan: Rc<Plan>,
    shared: Rc<Shared>,
    mut w: ConnWrite,
    mut rx: UnboundedReceiver<Cmd>,
    mut rng: Rng,
) {
    let size = plan.pattern.size();
    let mut out = Vec::with_capacity(BATCH_BYTES + size + 14);
    let mut dues: Vec<Instant> = Vec::new();
    let mut seq: u64 = 0;
    let live = &ctx.live;
    loop {
        let Ok(Some(first)) = timeout_at(plan.deadline, rx.recv()).await else {
            break;
        };
        let mut next = Some(first);
        let mut finish = false;
        while let Some(cmd) = next {
            match cmd {
                Cmd::Message { due } => {
                    let mask = rng.mask();
                    codec::put_header(&mut out, true, OpCode::Binary, Some(mask), size as u64);
                    let header = Pattern::header(shared.id, seq);
                    codec::put_masked(&mut out, &header, mask, 0);
                    codec::put_masked(
                        &mut out,
                        plan.pattern.filler(shared.id, seq),
                        mask,
                        header.len(),
                    );
                    dues.push(due);
                    seq += 1;
                }
                Cmd::Pong(payload) => {
                    codec::put_frame(&mut out, OpCode::Pong, Some(rng.mask()), &payload)
                }
                Cmd::Finish => {
                    codec::put_frame(
                        &mut out,
                        OpCode::Close,
                        Some(rng.mask()),
                        &1000u16.to_be_bytes(),
                    );
                    shared.close_sent.set(true);
                    finish = true;
                    break;
                }
            }
            if out.len() >= BATCH_BYTES {
                break;
            }
            next = rx.try_recv().ok();
        }
        // Nothing else runs on this thread until the write yields, so the
        // reader cannot see an echo before its entry is queued.
        let sent = Instant::now();
        {
            let mut in_flight = shared.in_flight.borrow_mut();
            for &due in &dues {
                let counted = match plan.pace {
                    Pace::Rate(_) => due,
                    Pace::InFlight(_) => sent,
                };
                if in_window(counted, plan.window) {
                    live.sent.set(live.sent.get() + 1);
                    live.sent_bytes.set(live.sent_bytes.get() + size as u64);
                }
                in_flight.push_back(InFlight { due, sent });
            }
        }
        dues.clear();
        let wrote = timeout_at(plan.deadline, async {
            w.write_all(&out).await?;
            w.flush().await
        })
        .await;
        out.clear();
        // A failed write ends the writer; the reader sees the same broken
        // connection and counts it once.
        if finish || !matches!(wrote, Ok(Ok(()))) {
            break;
        }
    }
    *shared.parked.borrow_mut() = Some(w);
}

async fn reader(
    ctx: Rc<Ctx>,
    plan: Rc<Plan>,
    shared: Rc<Shared>,
    mut r: ConnRead,
    rest: Vec<u8>,
    tx: UnboundedSender<Cmd>,
) {
    let errors = &ctx.live.errors;
    let live = &ctx.live;
    let size = plan.pattern.size() as u64;
    let mut buf = vec![0u8; READ_BYTES.max(rest.len() + codec::MAX_PENDING)];
    buf[..rest.len()].copy_from_slice(&rest);
    let mut filled = rest.len();
    let mut decoder = Decoder::new(Role::Client);
    let mut checker = Checker::new(shared.id);
    let mut got_close = false;
    let mut ended_early = false;
    loop {
        let now = Instant::now();
        let decoded = decoder.decode(&mut buf[..filled], &mut |ev| match ev {
            Event::FrameStart { opcode, .. } => {
                if opcode == OpCode::Text {
                    checker.spoil();
                }
            }
            Event::Data(chunk) => checker.data(&plan.pattern, chunk),
            Event::FrameEnd { fin: false } => {}
            Event::FrameEnd { fin: true } => {
                let verdict = checker.end(&plan.pattern);
                let Some(sent) = shared.in_flight.borrow_mut().pop_front() else {
                    // An echo of something never sent.
                    ErrorCounts::bump(&errors.mismatch);
                    return;
                };
                match verdict {
                    Verdict::Intact(_) => {
                        let counted = match plan.pace {
                            Pace::Rate(_) => sent.due,
                            Pace::InFlight(_) => now,
                        };
                        if in_window(counted, plan.window) {
                            live.received.set(live.received.get() + 1);
                            live.received_bytes.set(live.received_bytes.get() + size);
                            plan.rtt_due.record(now - sent.due);
                            plan.rtt_sent.record(now - sent.sent);
                        }
                    }
                    Verdict::Mismatch(_) => ErrorCounts::bump(&errors.mismatch),
                }
                if let Pace::InFlight(_) = plan.pace {
                    if now < plan.window.1 {
                        let _ = tx.send(Cmd::Message { due: now });
                    }
                }
            }
            Event::Control { opcode, payload } => match opcode {
                OpCode::Ping => {
                    let _ = tx.send(Cmd::Pong(payload.to_vec()));
                }
                OpCode::Close => {
                    got_close = true;
                    ended_early = !shared.close_sent.get();
                }
                _ => {}
            },
        });
        match decoded {
            Ok(used) => {
                buf.copy_within(used..filled, 0);
                filled -= used;
            }
            Err(_) => {
                ErrorCounts::bump(&errors.protocol);
                break;
            }
        }
        if got_close {
            if ended_early {
                ErrorCounts::bump(&errors.closed);
            } else {
                // The server closes TCP after its close frame (RFC 6455
                // section 7.1.1); wait for that, within the deadline.
                let mut sink = [0u8; 512];
                let eof = timeout_at(plan.deadline, async {
                    while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
                });
                if eof.await.is_err() {
                    ErrorCounts::bump(&errors.timeout);
                }
            }
            break;
        }
        match timeout_at(plan.deadline, r.read(&mut buf[filled..])).await {
            Ok(Ok(n)) if n > 0 => filled += n,
            Ok(_) => {
                ErrorCounts::bump(&errors.closed);
                break;
            }
            Err(_) => {
                // Nothing in flight: only the close answer is missing.
                if shared.in_flight.borrow().is_empty() {
                    ErrorCounts::bump(&errors.timeout);
                }
                break;
            }
        }
    }
    let lost = shared.in_flight.borrow().len() as u64;
    errors.lost.set(errors.lost.get() + lost);
    shared.parked.borrow_mut().take();
}
