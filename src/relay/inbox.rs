//! A connection's inbox of pushed messages: what the publish API hands a
//! connection, and all the relay sees of it.
//!
//! Most connections never receive a push, so an inbox costs one small
//! allocation at the start and nothing per message: the queue itself is
//! created by the first push, and the relay looks at one atomic flag per
//! pass. A publisher that finds the queue full does not wait and does not
//! grow it: the inbox is marked overflowed and the relay closes the
//! connection with 1013 (Try Again Later), so memory stays bounded
//! whatever a slow client does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::Context;

use atomic_waker::AtomicWaker;
use bytes::Bytes;

/// A data message to inject towards the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// Binary (opcode 2) rather than text (opcode 1).
    pub binary: bool,
    /// The whole payload; text is valid UTF-8.
    pub payload: Bytes,
}

/// How much one inbox may hold before the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Messages waiting at most.
    pub messages: usize,
    /// Payload bytes waiting at most.
    pub bytes: usize,
}

impl Default for QueueLimits {
    /// 64 messages or 1 MiB, whichever is reached first.
    fn default() -> Self {
        QueueLimits {
            messages: 64,
            bytes: 1024 * 1024,
        }
    }
}

/// What became of a message offered to an inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued; the relay writes it at the next message boundary.
    Queued,
    /// The queue was full: the connection is being closed with 1013.
    Overflowed,
    /// The connection is closing or closed: nothing more is taken.
    Closed,
}

/// One connection's pushed messages, shared by the publishers and the
/// relay.
#[derive(Debug)]
pub struct Inbox {
    limits: QueueLimits,
    /// Set when a message is queued or the queue overflowed; the relay's
    /// cheap check.
    pending: AtomicBool,
    /// Set once the queue overflowed, for the relay to see while its pump
    /// is busy with an earlier message.
    overflow: AtomicBool,
    waker: AtomicWaker,
    /// `None` until the first push, and again once closed.
    queue: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    queue: Option<VecDeque<Pushed>>,
    bytes: usize,
    overflowed: bool,
    closed: bool,
}

impl Inbox {
    /// An empty inbox bounded by `limits`; no queue is allocated yet.
    pub fn new(limits: QueueLimits) -> Inbox {
        Inbox {
            limits,
            pending: AtomicBool::new(false),
            overflow: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            queue: Mutex::new(State::default()),
        }
    }

    /// Queues `message` behind the ones before it (publish order), or
    /// marks the inbox overflowed when it would pass the limits.
    pub fn offer(&self, message: Pushed) -> Offer {
        let mut state = self.queue.lock().expect("not poisoned");
        if state.closed || state.overflowed {
            return Offer::Closed;
        }
        let len = state.queue.as_ref().map_or(0, VecDeque::len);
        // One message alone is always taken, whatever its size (the
        // route's max_message_bytes bounds it): only a backlog overflows.
        let too_many = len + 1 > self.limits.messages;
        let too_big = len > 0 && state.bytes + message.payload.len() > self.limits.bytes;
        if too_many || too_big {
            state.overflowed = true;
            self.overflow.store(true, Ordering::Release);
            // What waits is never written now: release it at once.
            state.queue = None;
            state.bytes = 0;
            drop(state);
            self.wake();
            return Offer::Overflowed;
        }
        state.bytes += message.payload.len();
        state
            .queue
            .get_or_insert_with(VecDeque::new)
            .push_back(message);
        drop(state);
        self.wake();
        Offer::Queued
    }

    fn wake(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// The relay's check at each pass: true when a message or an overflow
    /// waits. Registers the task to be woken by the next push first, so
    /// that a push between the check and the task's sleep is not missed.
    pub(crate) fn poll_pending(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.pending.load(Ordering::Acquire)
    }

    /// What the relay does next: the next message, an overflow, or
    /// nothing.
    pub(crate) fn take(&self) -> Take {
        let mut state = self.queue.lock().expect("not poisoned");
        if state.overflowed {
            state.closed = true;
            self.pending.store(false, Ordering::Release);
            return Take::Overflowed;
        }
        let next = state.queue.as_mut().and_then(VecDeque::pop_front);
        match &next {
            Some(m) => state.bytes -= m.payload.len(),
            None => {
                // Drained: give the queue's memory back.
                state.queue = None;
                self.pending.store(false, Ordering::Release);
            }
        }
        match next {
            Some(m) => Take::Message(m),
            None => Take::Nothing,
        }
    }

    /// The connection is closing: later offers are refused and what waits
    /// is dropped.
    pub fn close(&self) {
        let mut state = self.queue.lock().expect("not poisoned");
        state.closed = true;
        state.queue = None;
        state.bytes = 0;
    }

    /// True once the queue overflowed.
    pub fn overflowed(&self) -> bool {
        self.overflow.load(Ordering::Acquire)
    }
}

/// The relay's next step for an inbox.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    Message(Pushed),
    Overflowed,
    Nothing,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Pushed {
        Pushed {
            binary: true,
            payload: Bytes::from(vec![0u8; n]),
        }
    }

    #[test]
    fn messages_come_out_in_order_and_the_queue_is_released_when_drained() {
        let inbox = Inbox::new(QueueLimits::default());
        assert!(inbox.queue.lock().unwrap().queue.is_none());
        assert_eq!(inbox.offer(msg(1)), Offer::Queued);
        assert_eq!(inbox.offer(msg(2)), Offer::Queued);
        assert!(inbox.pending.load(Ordering::Acquire));
        assert_eq!(inbox.take(), Take::Message(msg(1)));
        assert_eq!(inbox.take(), Take::Message(msg(2)));
        assert_eq!(inbox.take(), Take::Nothing);
        assert!(!inbox.pending.load(Ordering::Acquire));
        assert!(inbox.queue.lock().unwrap().queue.is_none());
    }

    #[test]
    fn the_message_limit_overflows_and_refuses_what_follows() {
        let inbox = Inbox::new(QueueLimits {
            messages: 2,
            bytes: 1 << 20,
        });
        assert_eq!(inbox.offer(msg(1)), Offer::Queued);
        assert_eq!(inbox.offer(msg(1)), Offer::Queued);
        assert_eq!(inbox.offer(msg(1)), Offer::Overflowed);
        assert_eq!(inbox.offer(msg(1)), Offer::Closed);
        assert_eq!(inbox.take(), Take::Overflowed);
        assert!(inbox.overflowed());
    }

    #[test]
    fn the_byte_limit_counts_payloads_waiting() {
        let inbox = Inbox::new(QueueLimits {
            messages: 64,
            bytes: 10,
        });
        assert_eq!(inbox.offer(msg(6)), Offer::Queued);
        assert_eq!(inbox.take(), Take::Message(msg(6)));
        assert_eq!(inbox.offer(msg(6)), Offer::Queued);
        assert_eq!(inbox.offer(msg(5)), Offer::Overflowed);
    }

    #[test]
    fn one_message_larger_than_the_byte_limit_is_taken_when_nothing_waits() {
        let inbox = Inbox::new(QueueLimits {
            messages: 64,
            bytes: 10,
        });
        assert_eq!(inbox.offer(msg(20)), Offer::Queued);
        assert_eq!(inbox.offer(msg(1)), Offer::Overflowed);
    }

    #[test]
    fn a_closed_inbox_takes_nothing() {
        let inbox = Inbox::new(QueueLimits::default());
        inbox.close();
        assert_eq!(inbox.offer(msg(1)), Offer::Closed);
    }
}
