//! The roster of a backend's relayed connections, newest last, so that
//! rebalancing can ask the newest ones to move.
//!
//! A connection enlists when its relay starts and leaves when it ends
//! (one lock each time, never per message). Each entry keeps the
//! connection's sticky key, to tell whether it now belongs elsewhere, and
//! the signal that asks it to close.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

use super::BackendState;

/// Orders entries across all backends: a higher number is newer.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The relayed connections of one backend.
#[derive(Debug, Default)]
pub(super) struct Roster {
    entries: Mutex<BTreeMap<u64, Entry>>,
}

#[derive(Debug)]
struct Entry {
    key: Option<Box<[u8]>>,
    close: Arc<MoveOrder>,
    /// Asked to close, not ended yet.
    told: bool,
}

/// Rebalancing's request that one connection move elsewhere. The relay
/// polls it beside its sockets: a flag and a waker, so that an idle
/// connection keeps no future for it.
#[derive(Debug, Default)]
pub struct MoveOrder {
    given: AtomicBool,
    waker: AtomicWaker,
}

impl MoveOrder {
    /// Ready once the connection has been asked to move; registers the
    /// task to be woken then.
    pub fn poll_given(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.given.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Given between the check and the registration: seen now.
        if self.given.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Asks the connection to move.
    pub fn give(&self) {
        self.given.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// A connection's place on its backend's roster; leaving it when dropped.
#[derive(Debug)]
pub struct Enlisted {
    backend: Arc<BackendState>,
    seq: u64,
    /// Given when rebalancing asks the connection to move.
    pub close: Arc<MoveOrder>,
}

impl Drop for Enlisted {
    fn drop(&mut self) {
        self.backend.roster.lock().remove(&self.seq);
    }
}

impl Roster {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.lock().expect("roster lock is never poisoned")
    }
}

impl BackendState {
    /// Enlists a relayed connection with its sticky `key`, if any.
    pub fn enlist(self: &Arc<Self>, key: Option<&[u8]>) -> Enlisted {
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(MoveOrder::default());
        let entry = Entry {
            key: key.map(Box::from),
            close: close.clone(),
            told: false,
        };
        self.roster.lock().insert(seq, entry);
        Enlisted {
            backend: self.clone(),
            seq,
            close,
        }
    }

    /// Connections asked to move that have not ended yet.
    pub fn told_to_move(&self) -> u32 {
        let told = self.roster.lock().values().filter(|e| e.told).count();
        u32::try_from(told).unwrap_or(u32::MAX)
    }

    /// Asks the newest connection that `movable` accepts (given its sticky
    /// key) and that was not asked already to close; false when none is.
    pub fn move_newest(&self, movable: impl Fn(Option<&[u8]>) -> bool) -> bool {
        let mut roster = self.roster.lock();
        let newest = roster
            .values_mut()
            .rev()
            .find(|e| !e.told && movable(e.key.as_deref()));
        match newest {
            Some(entry) => {
                entry.told = true;
                entry.close.give();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_movable_connection_is_asked_once() {
        let state = Arc::new(BackendState::new(([10, 0, 0, 1], 9000).into()));
        let old = state.enlist(Some(b"stays"));
        let mid = state.enlist(Some(b"moves"));
        let new = state.enlist(Some(b"stays"));
        let movable = |key: Option<&[u8]>| key == Some(&b"moves"[..]);
        assert!(state.move_newest(movable));
        assert_eq!(state.told_to_move(), 1);
        assert!(!state.move_newest(movable), "asked already");
        assert!(state.move_newest(|_| true), "then the newest of all");
        drop((old, mid));
        assert_eq!(state.told_to_move(), 1, "the one that ended leaves");
        drop(new);
        assert_eq!(state.told_to_move(), 0);
    }

    #[test]
    fn a_move_order_is_seen_once_given_and_stays_given() {
        let state = Arc::new(BackendState::new(([10, 0, 0, 1], 9000).into()));
        let enlisted = state.enlist(None);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(enlisted.close.poll_given(&mut cx).is_pending());
        assert!(state.move_newest(|_| true));
        assert!(enlisted.close.poll_given(&mut cx).is_ready());
        assert!(enlisted.close.poll_given(&mut cx).is_ready());
    }
}
