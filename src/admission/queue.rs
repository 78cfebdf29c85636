//! The admit queue, sans-io: upgrades pass at no more than a rate, in the
//! order they arrived; one that would wait longer than the queue allows
//! is refused.
//!
//! Each upgrade is given a time slot: the later of now and the slot after
//! the last one given, slots `1 / rate` apart. Waiting until one's slot is
//! being in the queue; slots are handed out in arrival order, so the queue
//! is FIFO without holding a list of who waits. A refused upgrade takes no
//! slot.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Admit;

/// The next free slot of one listener's admit queue.
#[derive(Debug, Default)]
pub struct Queue {
    next_slot: Option<Instant>,
}

/// The queue's answer to an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Go on now.
    Now,
    /// Wait until then.
    At(Instant),
    /// The wait would pass `queue`; the queue empties after this long.
    Full(Duration),
}

impl Queue {
    /// A slot for an upgrade arriving at `now`.
    pub fn slot(&mut self, admit: &Admit, now: Instant) -> Slot {
        let at = self.next_slot.map_or(now, |next| next.max(now));
        let wait = at - now;
        if wait > admit.queue {
            return Slot::Full(wait);
        }
        self.next_slot = Some(at + Duration::from_secs_f64(1.0 / admit.per_second));
        if wait.is_zero() {
            Slot::Now
        } else {
            Slot::At(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(per_second: f64, queue_ms: u64) -> Admit {
        Admit {
            per_second,
            queue: Duration::from_millis(queue_ms),
        }
    }

    #[test]
    fn below_the_rate_nothing_waits() {
        let (mut q, start) = (Queue::default(), Instant::now());
        let a = admit(10.0, 1000);
        for i in 0..5 {
            assert_eq!(
                q.slot(&a, start + Duration::from_millis(100 * i)),
                Slot::Now
            );
        }
    }

    #[test]
    fn a_burst_is_spaced_in_order_and_the_overflow_refused() {
        let (mut q, now) = (Queue::default(), Instant::now());
        let a = admit(10.0, 500);
        assert_eq!(q.slot(&a, now), Slot::Now);
        for i in 1..=5 {
            assert_eq!(
                q.slot(&a, now),
                Slot::At(now + Duration::from_millis(100 * i))
            );
        }
        // The seventh would wait 600 ms, over the 500 ms queue.
        assert_eq!(q.slot(&a, now), Slot::Full(Duration::from_millis(600)));
        // A refusal takes no slot: after 100 ms the next one fits again.
        let later = now + Duration::from_millis(100);
        assert_eq!(
            q.slot(&a, later),
            Slot::At(now + Duration::from_millis(600))
        );
    }

    #[test]
    fn a_storm_passes_at_the_rate() {
        let (mut q, now) = (Queue::default(), Instant::now());
        let a = admit(1000.0, 5000);
        let slots: Vec<Slot> = (0..5000).map(|_| q.slot(&a, now)).collect();
        assert!(slots.iter().all(|s| !matches!(s, Slot::Full(_))));
        let last = match slots[4999] {
            Slot::At(at) => at - now,
            other => panic!("{other:?}"),
        };
        assert!(last >= Duration::from_millis(4990) && last <= Duration::from_millis(5000));
    }
}
