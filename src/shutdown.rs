//! Draining: the count of open connections that graceful shutdown waits
//! for, and the moment each connection is closed when a drain (shutdown or
//! the removal of its backend) runs out of patience.
//!
//! Closing thousands of connections at one instant makes every client
//! reconnect at once. So a drained connection is not closed at the end of
//! `drain_timeout` but at a moment of its own in the last quarter of it
//! (contract, "Hot reload"): the reconnects arrive spread over that quarter.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// A drain order: connections it covers close within `timeout` of `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// When the drain began.
    pub(crate) start: Instant,
    /// The configuration's `drain_timeout` at that moment.
    pub(crate) timeout: Duration,
}

impl Drain {
    /// A drain starting now.
    pub(crate) fn now(timeout: Duration) -> Drain {
        Drain {
            start: Instant::now(),
            timeout,
        }
    }

    /// The moment a connection drawing `seed` closes: spread evenly over the
    /// last quarter of the drain.
    pub(crate) fn close_time(&self, seed: u64) -> Instant {
        let quarter = self.timeout / 4;
        let share = (seed >> 11) as f64 / (1u64 << 53) as f64;
        self.start + (self.timeout - quarter) + quarter.mul_f64(share)
    }
}

/// Announces drains: `None` until one starts.
pub type DrainSignal = watch::Receiver<Option<Drain>>;

/// Resolves, once `signal` announces a drain, to the moment this
/// connection must close. Boxed because the relay keeps it for the whole
/// connection and polls it beside its sockets.
pub(crate) fn close_time(mut signal: DrainSignal) -> Pin<Box<dyn Future<Output = Instant> + Send>> {
    let seed = next_seed();
    Box::pin(async move {
        // Copied out at once: the guard must not live across an await.
        let announced = signal.wait_for(Option::is_some).await.map(|d| *d);
        match announced {
            Ok(drain) => drain.expect("waited for Some").close_time(seed),
            // The sender is gone: no drain will come.
            Err(_) => std::future::pending().await,
        }
    })
}

/// A per-connection pseudo-random number (splitmix64 over a counter):
/// only spread matters, not unpredictability.
fn next_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);
    let mut z = COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Counts connections from accept to close.
#[derive(Debug, Default)]
pub struct Tracker {
    open: AtomicUsize,
    idle: Notify,
    /// Set when shutdown begins: kept-alive HTTP connections close once
    /// their request in flight, if any, is answered.
    stopping: AtomicBool,
    stop: Notify,
}

impl Tracker {
    /// Counts one more connection until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> Guard {
        self.open.fetch_add(1, Ordering::Relaxed);
        Guard(self.clone())
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Shutdown has begun: connections between HTTP requests close now,
    /// the others after the request they are answering.
    pub fn stop_keepalive(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify_waiters();
    }

    /// Returns once [`Tracker::stop_keepalive`] was called.
    pub async fn keepalive_stopped(&self) {
        loop {
            let notified = self.stop.notified();
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Returns once no connection is open.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One counted connection.
#[derive(Debug)]
pub struct Guard(Arc<Tracker>);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_times_fill_the_last_quarter() {
        let drain = Drain::now(Duration::from_secs(40));
        let times: Vec<Duration> = (0..1000)
            .map(|_| drain.close_time(next_seed()) - drain.start)
            .collect();
        assert!(times
            .iter()
            .all(|t| *t >= Duration::from_secs(30) && *t < Duration::from_secs(40)));
        let early = times
            .iter()
            .filter(|t| **t < Duration::from_secs(35))
            .count();
        assert!(
            (400..600).contains(&early),
            "{early} of 1000 in the first half of the quarter"
        );
    }

    #[tokio::test]
    async fn tracker_wakes_when_the_last_connection_ends() {
        let tracker = Arc::new(Tracker::default());
        let a = tracker.enter();
        let b = tracker.enter();
        let waiter = tokio::spawn({
            let tracker = tracker.clone();
            async move { tracker.wait_idle().await }
        });
        drop(a);
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
