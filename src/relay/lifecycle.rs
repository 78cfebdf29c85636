//! The lifecycle of one relayed connection, sans-io: the idle and ping
//! timers, the drain deadline, the close rules of the contract's relay
//! table, the 5 s close-handshake wait, and when the connection is done.
//!
//! The relay tells it what happened (traffic, a close frame passing, an
//! event of a pump, a drain) with the time it happened, asks it when to
//! wake next, and carries out what it answers. It holds no socket, reads no
//! clock and allocates nothing, so every rule is unit-tested with made-up
//! instants.

use std::time::Duration;

use tokio::time::Instant;

use super::pump::Event;
use super::state::Direction;
use crate::close::{CloseCode, CloseInfo, Initiator};
use crate::config::{Limits, MessageRate, OnMessageRate};

/// After the first close frame, how long the other side has to answer
/// before the TCP connections are closed anyway (contract: 5 s).
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How often a connection with traffic adds its counts to the shared
/// metrics; between flushes it counts alone.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// What the connection tells one direction's pump to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Order {
    /// Send the proxy's close this way, unless a close already went.
    pub close: Option<(CloseCode, &'static str)>,
    /// The destination is gone: drop what waits for it.
    pub destination_gone: bool,
    /// Stop reading the source.
    pub stop_reading: bool,
}

/// Orders for both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Orders {
    /// For the client-to-backend pump (it writes to the backend).
    pub client_to_backend: Order,
    /// For the backend-to-client pump (it writes to the client).
    pub backend_to_client: Order,
}

impl Orders {
    fn of(dir: Direction, this: Order, other: Order) -> Orders {
        match dir {
            Direction::ClientToBackend => Orders {
                client_to_backend: this,
                backend_to_client: other,
            },
            Direction::BackendToClient => Orders {
                client_to_backend: other,
                backend_to_client: this,
            },
        }
    }
}

/// What a timer that fired asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    /// Add the counts to the shared metrics.
    pub flush: bool,
    /// A rule that came due.
    pub due: Option<Due>,
}

/// A timer rule that came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Close both ways with this code and reason (idle, ping, drain).
    CloseBoth(CloseCode, &'static str),
    /// Ping the client: it was silent for `ping_interval`.
    Ping,
    /// The client's token expired: close 1008 to the client and 1001 to
    /// the backend, each told in its own terms.
    TokenExpired,
}

/// What the done rules need to know of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    /// A close went this way (relayed or the proxy's) and nothing waits to
    /// be written after it.
    pub close_delivered: bool,
    /// Writing the destination failed.
    pub destination_gone: bool,
    /// The source's own close frame passed this way.
    pub close_passed: bool,
    /// The source is no longer read (EOF, error, or told to stop).
    pub source_ended: bool,
    /// The proxy's own close went this way.
    pub sealed: bool,
}

/// The timers and close rules of one connection.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    limits: Limits,
    last_activity: Instant,
    last_client_activity: Instant,
    /// Bytes seen so far per direction (client to backend, backend to
    /// client); a change is activity.
    seen: [u64; 2],
    /// When the proxy's ping went out, while its answer is awaited.
    ping_sent: Option<Instant>,
    /// Since when the connection is closing (first close frame, a lost
    /// side, or the proxy's decision); the grace period counts from here.
    closing_since: Option<Instant>,
    close: Option<CloseInfo>,
    /// When a drain wants this connection closed.
    drain_at: Option<Instant>,
    /// When the client's token expires (route `auth`, `on_expiry = "close"`).
    expires_at: Option<Instant>,
    /// Traffic is flushed to metrics.
    metered: bool,
    /// When the counts are next added to the metrics (set by traffic).
    flush_at: Option<Instant>,
    /// When the route's `max_lifetime` ends this connection.
    end_of_life: Option<Instant>,
    /// The client's message bucket, when the route limits its rate.
    bucket: Option<Bucket>,
}

/// A token bucket of client-to-backend data messages.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: MessageRate,
    /// Below zero only with `"close"`, which then closes.
    tokens: f64,
    at: Instant,
    /// Messages counted so far.
    seen: u64,
    /// While the budget is spent: when the next token is back.
    resume_at: Option<Instant>,
}

/// What the client's message rate allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Data messages from the client that may have passed in all; `None`:
    /// no limit. Past it, its side is not read until the lifecycle's next
    /// deadline.
    Budget(Option<u64>),
    /// Over the rate with `"close"`: carry these orders out.
    Close(Orders),
}

impl Lifecycle {
    /// A connection relayed from `now` under the route's `limits`;
    /// `metered` when its traffic goes to metrics.
    pub fn new(limits: Limits, metered: bool, now: Instant) -> Lifecycle {
        Lifecycle {
            limits,
            last_activity: now,
            last_client_activity: now,
            seen: [0; 2],
            ping_sent: None,
            closing_since: None,
            close: None,
            drain_at: None,
            expires_at: None,
            metered,
            flush_at: None,
            end_of_life: None,
            bucket: limits.message_rate().map(|rate| Bucket {
                rate,
                tokens: f64::from(rate.burst),
                at: now,
                seen: 0,
                resume_at: None,
            }),
        }
    }

    /// The connection is closed with 1001 "max lifetime" both ways at
    /// `at` (the relay spreads the route's `max_lifetime` per connection).
    pub fn end_of_life(&mut self, at: Instant) {
        self.end_of_life = Some(at);
    }

    /// The client has sent `messages` data messages by `now`: how many may
    /// have passed in all. Messages take tokens as their final frame
    /// passes. With `"slow"`, the client's side is read only while a token
    /// is left (TCP pushes back on the client, nothing is lost); with
    /// `"close"`, a message past the bucket closes 1008 to the client and
    /// 1001 to the backend.
    pub fn client_messages(&mut self, messages: u64, now: Instant) -> Pace {
        let Some(b) = &mut self.bucket else {
            return Pace::Budget(None);
        };
        if self.closing_since.is_some() {
            return Pace::Budget(None);
        }
        let per_second = f64::from(b.rate.per_second);
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_second).min(f64::from(b.rate.burst));
        b.at = now;
        b.tokens -= messages.saturating_sub(b.seen) as f64;
        b.seen = messages;
        b.resume_at = None;
        match b.rate.on_exceed {
            OnMessageRate::Close if b.tokens < 0.0 => {
                self.record(CloseCode::POLICY_VIOLATION, Initiator::Client);
                self.closing_since = Some(now);
                let to_backend = Order {
                    close: Some((CloseCode::GOING_AWAY, "message rate")),
                    ..Order::default()
                };
                let to_client = Order {
                    close: Some((CloseCode::POLICY_VIOLATION, "message rate")),
                    ..Order::default()
                };
                Pace::Close(Orders::of(
                    Direction::ClientToBackend,
                    to_backend,
                    to_client,
                ))
            }
            // One message past the tokens may start, so that it is seen
            // and closes the connection; nothing after it passes.
            OnMessageRate::Close => Pace::Budget(Some(messages + whole_tokens(b.tokens) + 1)),
            OnMessageRate::Slow => {
                let whole = whole_tokens(b.tokens);
                if whole == 0 {
                    let wait = (1.0 - b.tokens) / per_second;
                    b.resume_at = Some(now + Duration::from_secs_f64(wait));
                }
                Pace::Budget(Some(messages + whole))
            }
        }
    }

    /// The first close of the connection, once there is one.
    pub fn close(&self) -> Option<CloseInfo> {
        self.close
    }

    /// Notes the byte counts of both directions at `now`: any change is
    /// activity (the idle timer), a change from the client also answers
    /// the proxy's ping (the contract counts any frame from the client).
    pub fn traffic(&mut self, now: Instant, client_to_backend: u64, backend_to_client: u64) {
        let counts = [client_to_backend, backend_to_client];
        if counts == self.seen {
            return;
        }
        self.last_activity = now;
        if counts[0] != self.seen[0] {
            self.last_client_activity = now;
            self.ping_sent = None;
        }
        if self.metered && self.flush_at.is_none() {
            self.flush_at = Some(now + FLUSH_INTERVAL);
        }
        self.seen = counts;
    }

    /// A close frame with `code` passed in `dir`: the connection is closing,
    /// started by its sender unless something came first.
    pub fn close_passed(&mut self, dir: Direction, code: CloseCode, now: Instant) {
        self.record(code, dir.sender());
        self.closing_since.get_or_insert(now);
    }

    /// What to do about `event` of the pump of `dir`, whose source's close
    /// frame has (`close_passed`) or has not passed. The offender is the
    /// side that broke a rule or vanished; the other side gets 1001 when it
    /// is the client and 1014 when it is the backend (contract, "Behaviour
    /// on the wire").
    pub fn on_event(
        &mut self,
        dir: Direction,
        event: Event,
        close_passed: bool,
        now: Instant,
    ) -> Orders {
        let sender = dir.sender();
        let orders = match event {
            Event::SourceGone(_) => {
                if close_passed {
                    // It closed properly and then hung up: nothing to add.
                    return Orders::default();
                }
                // Vanished without a close: tell the other side at once
                // (contract: 1014 to a client, 1001 to a backend).
                self.record(other_side_code(sender), sender);
                let this = Order {
                    close: Some((other_side_code(sender), lost_reason(sender))),
                    ..Order::default()
                };
                let other = Order {
                    destination_gone: true,
                    ..Order::default()
                };
                Orders::of(dir, this, other)
            }
            Event::DestinationGone => {
                // The side this direction writes to is gone: it is the
                // sender of the other direction.
                let gone = dir.receiver();
                self.record(other_side_code(gone), gone);
                let other = Order {
                    close: Some((other_side_code(gone), lost_reason(gone))),
                    stop_reading: true,
                    ..Order::default()
                };
                Orders::of(dir, Order::default(), other)
            }
            Event::Violation(v) => {
                self.record(v.code(), sender);
                let this = Order {
                    close: Some((other_side_code(sender), broke_rule_reason(sender))),
                    ..Order::default()
                };
                let other = Order {
                    close: Some((v.code(), v.reason())),
                    ..Order::default()
                };
                Orders::of(dir, this, other)
            }
        };
        self.closing_since.get_or_insert(now);
        orders
    }

    /// The proxy closes the connection at `now` for a reason of its own
    /// outside the timers (a push queue that overflowed).
    pub fn closed_by_proxy(&mut self, code: CloseCode, now: Instant) {
        self.record(code, Initiator::Proxy);
        self.closing_since.get_or_insert(now);
    }

    /// Rebalancing asks this connection to move at `now`: close 1012
    /// "rebalance" to the client, which tells it to reconnect (and the
    /// balancer places it anew), and 1001 to the backend. Nothing when the
    /// connection is closing already.
    pub fn rebalance(&mut self, now: Instant) -> Orders {
        if self.closing_since.is_some() {
            return Orders::default();
        }
        self.record(CloseCode::SERVICE_RESTART, Initiator::Proxy);
        self.closing_since = Some(now);
        let to_backend = Order {
            close: Some((CloseCode::GOING_AWAY, "rebalance")),
            ..Order::default()
        };
        let to_client = Order {
            close: Some((CloseCode::SERVICE_RESTART, "rebalance")),
            ..Order::default()
        };
        Orders::of(Direction::ClientToBackend, to_backend, to_client)
    }

    /// A drain wants this connection closed at `at`.
    pub fn drain(&mut self, at: Instant) {
        self.drain_at = Some(at);
    }

    /// The client's token expires at `at`: one more deadline of the same
    /// timer, so it costs nothing per message.
    pub fn expire_at(&mut self, at: Instant) {
        self.expires_at = Some(at);
    }

    /// The next moment a rule may come due; the relay's timer is set to it.
    pub fn next_deadline(&self) -> Instant {
        let mut next = match self.closing_since {
            Some(since) => since + CLOSE_GRACE,
            None => {
                let mut next = self.last_activity + self.limits.idle_timeout;
                let resume = self.bucket.and_then(|b| b.resume_at);
                for at in [self.drain_at, self.expires_at, self.end_of_life, resume]
                    .into_iter()
                    .flatten()
                {
                    next = next.min(at);
                }
                if !self.limits.ping_interval.is_zero() {
                    let ping = match self.ping_sent {
                        Some(sent) => sent + self.limits.ping_timeout,
                        None => self.last_client_activity + self.limits.ping_interval,
                    };
                    next = next.min(ping);
                }
                next
            }
        };
        if let Some(at) = self.flush_at {
            next = next.min(at);
        }
        next
    }

    /// The timer fired at `now`: what came due. Once closing, only the
    /// grace period counts ([`grace_over`](Self::grace_over)).
    pub fn on_timer(&mut self, now: Instant) -> Tick {
        let mut tick = Tick::default();
        if self.flush_at.is_some_and(|at| now >= at) {
            self.flush_at = None;
            tick.flush = true;
        }
        if self.closing_since.is_some() {
            return tick;
        }
        tick.due = if self.drain_at.is_some_and(|at| now >= at) {
            Some(self.close_both(CloseCode::GOING_AWAY, "draining", now))
        } else if self.expires_at.is_some_and(|at| now >= at) {
            self.record(CloseCode::POLICY_VIOLATION, Initiator::Proxy);
            self.closing_since.get_or_insert(now);
            Some(Due::TokenExpired)
        } else if self.end_of_life.is_some_and(|at| now >= at) {
            Some(self.close_both(CloseCode::GOING_AWAY, "max lifetime", now))
        } else if now >= self.last_activity + self.limits.idle_timeout {
            Some(self.close_both(CloseCode::GOING_AWAY, "idle timeout", now))
        } else if self.limits.ping_interval.is_zero() {
            None
        } else {
            match self.ping_sent {
                Some(sent) if now >= sent + self.limits.ping_timeout => {
                    Some(self.close_both(CloseCode::GOING_AWAY, "no answer to ping", now))
                }
                Some(_) => None,
                None if now >= self.last_client_activity + self.limits.ping_interval => {
                    self.ping_sent = Some(now);
                    Some(Due::Ping)
                }
                None => None,
            }
        };
        tick
    }

    /// The close handshake had its 5 s: the sockets are closed whatever is
    /// still in flight (contract: TCP closed 5 s after the first close).
    pub fn grace_over(&self, now: Instant) -> bool {
        self.closing_since
            .is_some_and(|since| now >= since + CLOSE_GRACE)
    }

    /// Done when the grace ran out, when both close frames have crossed
    /// and both sides got their FIN (contract: TCP closed once both closes
    /// are seen), or when both sides are through and have hung up.
    pub fn is_done(&self, now: Instant, ends: Ends) -> bool {
        let Ends {
            client_to_backend: c2b,
            backend_to_client: b2c,
            client_fin,
            backend_fin,
        } = ends;
        let client_done = (client_fin || b2c.destination_gone) && c2b.source_ended;
        let backend_done = (backend_fin || c2b.destination_gone) && b2c.source_ended;
        let handshake_done = c2b.close_passed && b2c.close_passed && client_fin && backend_fin;
        self.grace_over(now) || handshake_done || (client_done && backend_done)
    }

    fn close_both(&mut self, code: CloseCode, reason: &'static str, now: Instant) -> Due {
        self.record(code, Initiator::Proxy);
        self.closing_since.get_or_insert(now);
        Due::CloseBoth(code, reason)
    }

    /// Keeps the first close of the connection: its code is the first close
    /// code on the wire (for a vanished side, the one the proxy sent the
    /// other side), its initiator the side whose action ended the
    /// connection (its close frame, its disappearance, or a rule it broke);
    /// the proxy only for its own reasons (idle, ping, drain).
    fn record(&mut self, code: CloseCode, initiator: Initiator) {
        self.close.get_or_insert(CloseInfo { code, initiator });
    }
}

/// The whole tokens in a bucket; the epsilon absorbs rounding, so that
/// ten tenths of a token are one.
fn whole_tokens(tokens: f64) -> u64 {
    (tokens + 1e-9).floor().max(0.0) as u64
}

/// Both directions and both write halves at a moment, for
/// [`Lifecycle::is_done`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ends {
    /// The client-to-backend direction.
    pub client_to_backend: Flow,
    /// The backend-to-client direction.
    pub backend_to_client: Flow,
    /// The write half towards the client was shut down.
    pub client_fin: bool,
    /// The write half towards the backend was shut down.
    pub backend_fin: bool,
}

/// Whether the side that `into` writes to and `from` reads from is
/// through, so its write half may be shut down: a close went to it
/// (written out), and it sent its own close, hung up, or was closed by the
/// proxy. Reading goes on until its EOF, so that unread input never turns
/// the close into a reset.
pub fn side_through(into: Flow, from: Flow) -> bool {
    let told = into.close_delivered || into.destination_gone;
    let answered = from.close_passed || from.source_ended || into.sealed;
    told && answered
}

/// The code the side that did nothing wrong gets when the other side is
/// the cause (contract, "Behaviour on the wire").
fn other_side_code(cause: Initiator) -> CloseCode {
    match cause {
        Initiator::Client => CloseCode::GOING_AWAY,
        Initiator::Backend | Initiator::Proxy => CloseCode::BAD_GATEWAY,
    }
}

fn lost_reason(who: Initiator) -> &'static str {
    match who {
        Initiator::Client => "client connection lost",
        Initiator::Backend | Initiator::Proxy => "backend connection lost",
    }
}

fn broke_rule_reason(who: Initiator) -> &'static str {
    match who {
        Initiator::Client => "client broke a protocol rule or limit",
        Initiator::Backend | Initiator::Proxy => "backend broke a protocol rule or limit",
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod admission_tests;
