//! What a run counts and measures, and the `/proc` readings of the
//! processes under test.
//!
//! The generator runs on one thread, so the live counters are `Cell`s shared
//! through an `Rc`: no atomics, no locks on the hot path.

use std::cell::{Cell, RefCell};
use std::fs;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Live counters of one run; only events inside the measured window count,
/// except errors, which count whenever they happen.
#[derive(Debug, Default)]
pub struct Live {
    /// Data messages written.
    pub sent: Cell<u64>,
    /// Data messages echoed back intact.
    pub received: Cell<u64>,
    /// Payload bytes written.
    pub sent_bytes: Cell<u64>,
    /// Payload bytes echoed back intact.
    pub received_bytes: Cell<u64>,
    /// Completed connect + upgrade + close cycles (handshake mode).
    pub cycles: Cell<u64>,
    /// Connections upgraded and verified with one echo (idle mode).
    pub opened: Cell<u64>,
    /// Error counts.
    pub errors: ErrorCounts,
    /// The first connection failure, spelled out, to tell why at a glance.
    pub first_failure: RefCell<Option<String>>,
}

impl Live {
    /// Keeps `failure` if it is the run's first.
    pub fn note_failure(&self, failure: impl std::fmt::Display) {
        let mut first = self.first_failure.borrow_mut();
        if first.is_none() {
            *first = Some(failure.to_string());
        }
    }
}

/// Error counters, one per kind of failure.
#[derive(Debug, Default)]
pub struct ErrorCounts {
    /// TCP connect (or source bind) failed.
    pub connect: Cell<u64>,
    /// TLS handshake failed.
    pub tls: Cell<u64>,
    /// The upgrade answer was not a valid 101.
    pub upgrade: Cell<u64>,
    /// The connection ended before the client closed it: a close frame
    /// from the other side, EOF or reset.
    pub closed: Cell<u64>,
    /// An echoed message differed from the one sent.
    pub mismatch: Cell<u64>,
    /// Messages sent but never echoed by the end of the drain.
    pub lost: Cell<u64>,
    /// Invalid frames from the server.
    pub protocol: Cell<u64>,
    /// A connect, upgrade or close handshake ran out of time.
    pub timeout: Cell<u64>,
}

impl ErrorCounts {
    /// Adds one to `counter`.
    pub fn bump(counter: &Cell<u64>) {
        counter.set(counter.get() + 1);
    }

    /// Every counter by name, in report order.
    pub fn by_name(&self) -> [(&'static str, u64); 8] {
        [
            ("connect", self.connect.get()),
            ("tls", self.tls.get()),
            ("upgrade", self.upgrade.get()),
            ("closed", self.closed.get()),
            ("mismatch", self.mismatch.get()),
            ("lost", self.lost.get()),
            ("protocol", self.protocol.get()),
            ("timeout", self.timeout.get()),
        ]
    }

    /// The sum of all counters.
    pub fn total(&self) -> u64 {
        self.by_name().iter().map(|(_, n)| n).sum()
    }
}

/// A latency histogram in nanoseconds, 3 significant digits, up to a minute.
pub struct Latency(RefCell<Histogram<u64>>);

impl Latency {
    /// An empty histogram.
    pub fn new() -> Latency {
        Latency(RefCell::new(
            Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
        ))
    }

    /// Records one sample; values past a minute are clamped.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.0.borrow_mut().saturating_record(ns);
    }

    /// Percentiles in microseconds, or `null` when empty.
    pub fn to_json(&self) -> Value {
        let h = self.0.borrow();
        if h.is_empty() {
            return Value::Null;
        }
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        json!({
            "count": h.len(),
            "min": us(h.min()),
            "p50": us(h.value_at_quantile(0.50)),
            "p90": us(h.value_at_quantile(0.90)),
            "p99": us(h.value_at_quantile(0.99)),
            "p999": us(h.value_at_quantile(0.999)),
            "max": us(h.max()),
            "mean": (h.mean() / 100.0).round() / 10.0,
        })
    }
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

/// CPU time (user + system) of a process, in microseconds, from
/// `/proc/PID/stat` fields 14 and 15 (all threads included).
pub fn cpu_us(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the
    // fields after its closing parenthesis are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / clock_ticks())
}

/// Resident set size of a process in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The kernel's clock tick (`USER_HZ`), which `/proc/PID/stat` times use,
/// read from the auxiliary vector (`AT_CLKTCK`); 100 when not found, which
/// is its value on every mainstream Linux architecture.
fn clock_ticks() -> u64 {
    const AT_CLKTCK: u64 = 17;
    let Ok(auxv) = fs::read("/proc/self/auxv") else {
        return 100;
    };
    auxv.chunks_exact(16)
        .find_map(|pair| {
            let key = u64::from_ne_bytes(pair[..8].try_into().ok()?);
            let value = u64::from_ne_bytes(pair[8..].try_into().ok()?);
            (key == AT_CLKTCK && value > 0).then_some(value)
        })
        .unwrap_or(100)
}

/// Sums a reading over several processes (for example nginx's master and
/// worker); `None` when any of them cannot be read.
pub fn sum_over(pids: &[u32], read: fn(u32) -> Option<u64>) -> Option<u64> {
    pids.iter().map(|&p| read(p)).sum()
}
