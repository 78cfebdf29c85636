//! The relay: after both upgrades, frames flow both ways as their bytes
//! arrive, until the connection closes with a code that says why.
//!
//! Three pieces: [`state`] decides, per direction and without I/O, what
//! each byte is and which rule it breaks; [`pump`] moves the bytes of one
//! direction from socket to socket under that state; [`lifecycle`] keeps
//! the connection's timers and close rules, told the time and what
//! happened, and answers what to do. This file joins them: one future polls
//! both pumps, one timer wakes it for the lifecycle, and the sockets are
//! shut down when the lifecycle says a side is through.

pub mod inbox;
pub mod lifecycle;
pub mod pump;
pub mod state;

use std::future::poll_fn;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use crate::close::{CloseCode, CloseInfo, Initiator};
use crate::config::Limits;
use crate::metrics::Meter;
use inbox::{Inbox, Take};
use lifecycle::{side_through, Due, Ends, Lifecycle, Orders, Pace};
use pump::{Event, Pump, SourceEnd};
use state::{Direction, Rules};

pub use lifecycle::CLOSE_GRACE;

/// What the relay enforces on one connection.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The route's limits and timeouts, fixed at accept time.
    pub limits: Limits,
    /// `permessage-deflate` was negotiated.
    pub deflate: bool,
    /// When the client's token expires: close 1008 to it, 1001 to the
    /// backend, at a frame boundary like the proxy's other closes.
    pub expires_at: Option<Instant>,
}

/// Re-exported because [`run`] returns them.
pub use crate::close::{Counts, End};

/// Resolves to the moment a drain wants this connection closed.
pub type Stop = Pin<Box<dyn Future<Output = Instant> + Send>>;

/// Given when rebalancing asks this connection to move elsewhere.
pub type Move = Arc<crate::balance::MoveOrder>;

/// What reaches a connection from outside: a drain, rebalancing, and
/// messages pushed to it.
pub struct Signals {
    /// Resolves to the moment a drain wants the connection closed.
    pub stop: Stop,
    /// Given when rebalancing asks the connection to move; `None`: never.
    pub moved: Option<Move>,
    /// Pushed messages, written towards the client between messages;
    /// `None`: none can come.
    pub inbox: Option<Arc<Inbox>>,
}

/// A stream over TCP whose socket the relay can watch for a reset while it
/// does not read from it (the other side pushes back): a peer that resets
/// then is noticed at once instead of at the idle timeout.
pub trait Socket {
    /// The TCP socket under the stream.
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl Socket for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Relays until the connection closes, then closes both sockets. When
/// `signals.stop` resolves, the connection is closed with 1001 at the
/// moment it names; when `signals.moved` is given, with 1012 to the client.
/// Traffic is reported to `meter` now and then and at the end.
///
/// A plain function that sets the relay up and returns an `async move`
/// block over it, not an `async fn`: a future keeps every argument it
/// captures for its whole life, beside whatever is made from them, so the
/// block captures only the relay and the two streams. An `async fn` would
/// also keep each argument twice (the argument and the body's binding of
/// it), and a TLS stream is over a kilobyte. Every idle connection pays
/// for each byte of this future. Call it from within the runtime (it
/// creates the relay's timer).
#[allow(clippy::manual_async_fn)] // on purpose, as said above
pub fn run<C, B>(
    mut client: C,
    client_pre: Bytes,
    mut backend: B,
    backend_pre: Bytes,
    settings: Settings,
    signals: Signals,
    meter: Option<Meter>,
) -> impl Future<Output = End>
where
    C: AsyncRead + AsyncWrite + Socket + Unpin,
    B: AsyncRead + AsyncWrite + Socket + Unpin,
{
    let started = Instant::now();
    let mut relay = Relay::new(settings, &client_pre, &backend_pre, signals.stop, meter);
    relay.moved = signals.moved;
    relay.inbox = signals.inbox;
    // These may be views into the handshake's read buffers (hyper's and
    // the backend answer's): holding them would pin those buffers for the
    // whole connection. Their bytes are in the relay's own stash by now.
    drop((client_pre, backend_pre));
    async move {
        poll_fn(|cx| relay.poll(cx, &mut client, &mut backend)).await;
        if let Some(inbox) = &relay.inbox {
            inbox.close();
        }
        let end = relay.end();
        if let Some(meter) = relay.meter.take() {
            meter.closed(
                end.close,
                end.client_to_backend,
                end.backend_to_client,
                started.elapsed(),
            );
        }
        end
    }
}

/// Watches one side's socket for an error while its pump does not read
/// it. Reading on into a buffer would defeat backpressure, and a reset
/// queued behind unread bytes is only seen by a read after them; the
/// socket's error readiness (`EPOLLERR` on a reset) is seen at once. The
/// wait needs a handle of its own, so it runs on a duplicate of the
/// descriptor, made the first time the side is not read and kept until
/// the connection ends.
enum Watch {
    /// Not needed so far.
    Idle,
    /// Waiting; resolves to true when the socket reported an error.
    Armed(Pin<Box<dyn Future<Output = bool> + Send>>),
    /// Fired, or could not be set up: the pump's own reads will tell.
    Off,
}

impl Watch {
    fn arm(&mut self, tcp: &TcpStream) {
        if !matches!(self, Watch::Idle) {
            return;
        }
        *self = match duplicate(tcp) {
            Ok(dup) => Watch::Armed(Box::pin(async move {
                match dup.ready(Interest::ERROR).await {
                    Ok(_) => matches!(dup.take_error(), Ok(Some(_))),
                    Err(_) => false,
                }
            })),
            Err(e) => {
                debug!(error = ?e.kind(), "cannot watch a socket for resets");
                Watch::Off
            }
        };
    }

    /// True once, when the watched socket reported an error.
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> bool {
        let Watch::Armed(wait) = self else {
            return false;
        };
        match wait.as_mut().poll(cx) {
            Poll::Ready(reset) => {
                *self = Watch::Off;
                reset
            }
            Poll::Pending => false,
        }
    }
}

/// `lifetime` ± 10%, chosen at random per connection, so that connections
/// opened together (after a restart) do not all close together.
fn spread(lifetime: std::time::Duration) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState has fresh keys: hashing nothing with them gives a
    // random number without a dependency or a syscall.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let factor = 0.9 + 0.2 * (random as f64 / u64::MAX as f64);
    lifetime.mul_f64(factor)
}

/// A second handle on the same socket, registered with the runtime.
fn duplicate(tcp: &TcpStream) -> io::Result<TcpStream> {
    use std::os::fd::AsFd;
    let fd = tcp.as_fd().try_clone_to_owned()?;
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true)?;
    TcpStream::from_std(std)
}

/// The connection: both pumps, the lifecycle and its timer, the sockets'
/// write halves.
struct Relay {
    c2b: Pump,
    b2c: Pump,
    life: Lifecycle,
    /// The write half towards the client was shut down (FIN, or TLS
    /// close_notify then FIN).
    client_fin: bool,
    /// The write half towards the backend was shut down.
    backend_fin: bool,
    timer: Pin<Box<Sleep>>,
    armed_for: Instant,
    /// Pending until a drain covers this connection.
    stop: Option<Stop>,
    /// Pending until rebalancing asks this connection to move.
    moved: Option<Move>,
    meter: Option<Meter>,
    client_watch: Watch,
    backend_watch: Watch,
    /// Pushed messages for the client; `None` in tests of the bare relay.
    inbox: Option<Arc<Inbox>>,
}

impl Relay {
    fn new(
        settings: Settings,
        client_pre: &[u8],
        backend_pre: &[u8],
        stop: Stop,
        meter: Option<Meter>,
    ) -> Relay {
        let rules = Rules {
            max_frame_bytes: settings.limits.max_frame_bytes,
            max_message_bytes: settings.limits.max_message_bytes,
            deflate: settings.deflate,
        };
        let now = Instant::now();
        let mut life = Lifecycle::new(settings.limits, meter.is_some(), now);
        if let Some(at) = settings.expires_at {
            life.expire_at(at);
        }
        if !settings.limits.max_lifetime.is_zero() {
            life.end_of_life(now + spread(settings.limits.max_lifetime));
        }
        let mut c2b = Pump::new(Direction::ClientToBackend, rules, client_pre);
        // The message rate holds from the first byte, bytes read with the
        // request included.
        if let Pace::Budget(budget) = life.client_messages(0, now) {
            c2b.set_budget(budget);
        }
        let next = life.next_deadline();
        Relay {
            c2b,
            b2c: Pump::new(Direction::BackendToClient, rules, backend_pre),
            life,
            client_fin: false,
            backend_fin: false,
            timer: Box::pin(tokio::time::sleep_until(next)),
            armed_for: next,
            stop: Some(stop),
            moved: None,
            meter,
            client_watch: Watch::Idle,
            backend_watch: Watch::Idle,
            inbox: None,
        }
    }

    fn end(&self) -> End {
        End {
            close: self.life.close().unwrap_or(CloseInfo {
                code: CloseCode::ABNORMAL,
                initiator: Initiator::Proxy,
            }),
            client_to_backend: self.c2b.counts(),
            backend_to_client: self.b2c.counts(),
        }
    }

    fn poll<C, B>(&mut self, cx: &mut Context<'_>, client: &mut C, backend: &mut B) -> Poll<()>
    where
        C: AsyncRead + AsyncWrite + Socket + Unpin,
        B: AsyncRead + AsyncWrite + Socket + Unpin,
    {
        // Bounded so that a stream of events cannot starve other tasks;
        // each pass makes progress or returns.
        for _ in 0..64 {
            let mut acted = false;
            if let Poll::Ready(event) = self.c2b.poll(cx, client, backend) {
                self.on_event(Direction::ClientToBackend, event);
                acted = true;
            }
            if let Poll::Ready(event) = self.b2c.poll(cx, backend, client) {
                self.on_event(Direction::BackendToClient, event);
                acted = true;
            }
            acted |= self.watch(cx, client.tcp(), backend.tcp());
            acted |= self.take_pushed(cx);
            acted |= self.observe();
            if let Some(stop) = &mut self.stop {
                if let Poll::Ready(at) = stop.as_mut().poll(cx) {
                    self.life.drain(at);
                    self.stop = None;
                    acted = true;
                }
            }
            if let Some(moved) = &mut self.moved {
                if moved.poll_given(cx).is_ready() {
                    self.moved = None;
                    let orders = self.life.rebalance(Instant::now());
                    self.apply(orders);
                    acted = true;
                }
            }
            acted |= self.shut_finished_sides(cx, client, backend);
            if self.life.is_done(Instant::now(), self.ends()) {
                return Poll::Ready(());
            }
            // The timer is re-armed only when it fires or must fire sooner:
            // traffic moves deadlines later, and resetting a timer on every
            // message would cost more than an early, idle wake-up.
            let fired = self.timer.as_mut().poll(cx).is_ready();
            if fired {
                self.on_timer();
                acted = true;
            }
            let next = self.life.next_deadline();
            if fired || next < self.armed_for {
                self.armed_for = next;
                self.timer.as_mut().reset(next);
                acted = true;
            }
            if !acted {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// While a pump is blocked on its destination it does not read its
    /// source; a reset of that source is then caught by its watch and
    /// handled as the source vanishing (contract: close 1001 to the backend
    /// at once, 1014 to the client). The pump keeps reading what the peer
    /// sent before the reset, so that the frame in progress can end before
    /// the proxy's close.
    fn watch(&mut self, cx: &mut Context<'_>, client: &TcpStream, backend: &TcpStream) -> bool {
        let mut acted = false;
        for dir in [Direction::ClientToBackend, Direction::BackendToClient] {
            let (pump, watch, tcp) = match dir {
                Direction::ClientToBackend => (&self.c2b, &mut self.client_watch, client),
                Direction::BackendToClient => (&self.b2c, &mut self.backend_watch, backend),
            };
            if !pump.is_reading() || pump.state.close_code().is_some() {
                *watch = Watch::Off;
                continue;
            }
            if pump.is_blocked() {
                watch.arm(tcp);
            }
            if watch.poll_reset(cx) {
                debug!(side = %dir.sender(), "connection reset while its reads waited on the other side");
                let reset = SourceEnd::Error(io::ErrorKind::ConnectionReset);
                self.on_event(dir, Event::SourceGone(reset));
                acted = true;
            }
        }
        acted
    }

    /// Hands the next pushed message to the pump towards the client when it
    /// can take one; one atomic load when nothing was pushed. An inbox
    /// that overflowed closes the connection: 1013 (Try Again Later) to
    /// the client, 1001 to the backend.
    fn take_pushed(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(inbox) = &self.inbox else {
            return false;
        };
        if !inbox.poll_pending(cx) || !(self.b2c.takes_push() || inbox.overflowed()) {
            return false;
        }
        match inbox.take() {
            Take::Message(message) => self.b2c.push(message),
            Take::Overflowed => {
                debug!("push queue overflowed: closing with 1013");
                self.life
                    .closed_by_proxy(CloseCode::TRY_AGAIN_LATER, Instant::now());
                self.b2c
                    .close_with(CloseCode::TRY_AGAIN_LATER, "push queue full");
                self.c2b
                    .close_with(CloseCode::GOING_AWAY, "client too slow for pushes");
            }
            Take::Nothing => return false,
        }
        true
    }

    /// Tells the lifecycle about traffic, close frames passing through and
    /// the client's messages; true when the client's reads were paused or
    /// resumed, or a close ordered, by its message rate.
    fn observe(&mut self) -> bool {
        let now = Instant::now();
        self.life
            .traffic(now, self.c2b.state.bytes(), self.b2c.state.bytes());
        for pump in [&self.c2b, &self.b2c] {
            if let Some(code) = pump.state.close_code() {
                self.life.close_passed(pump.state.direction(), code, now);
            }
        }
        match self.life.client_messages(self.c2b.state.messages(), now) {
            Pace::Budget(budget) => self.c2b.set_budget(budget),
            Pace::Close(orders) => {
                self.c2b.set_budget(None);
                self.apply(orders);
                true
            }
        }
    }

    fn on_event(&mut self, dir: Direction, event: Event) {
        if let Event::SourceGone(SourceEnd::Error(kind)) = event {
            debug!(side = %dir.sender(), error = ?kind, "relay read failed");
        }
        let pump = match dir {
            Direction::ClientToBackend => &self.c2b,
            Direction::BackendToClient => &self.b2c,
        };
        let close_passed = pump.state.close_code().is_some();
        let orders = self.life.on_event(dir, event, close_passed, Instant::now());
        self.apply(orders);
    }

    fn apply(&mut self, orders: Orders) {
        self.c2b.apply(orders.client_to_backend);
        self.b2c.apply(orders.backend_to_client);
    }

    fn ends(&self) -> Ends {
        Ends {
            client_to_backend: self.c2b.flow(),
            backend_to_client: self.b2c.flow(),
            client_fin: self.client_fin,
            backend_fin: self.backend_fin,
        }
    }

    /// Shuts down the write half towards each side that is through
    /// ([`side_through`]).
    fn shut_finished_sides<C, B>(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut C,
        backend: &mut B,
    ) -> bool
    where
        C: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        let mut acted = false;
        if !self.client_fin
            && side_through(self.b2c.flow(), self.c2b.flow())
            && Pin::new(&mut *client).poll_shutdown(cx).is_ready()
        {
            self.client_fin = true;
            acted = true;
        }
        if !self.backend_fin
            && side_through(self.c2b.flow(), self.b2c.flow())
            && Pin::new(&mut *backend).poll_shutdown(cx).is_ready()
        {
            self.backend_fin = true;
            acted = true;
        }
        acted
    }

    fn on_timer(&mut self) {
        let tick = self.life.on_timer(Instant::now());
        if tick.flush {
            if let Some(meter) = &mut self.meter {
                meter.flush(self.c2b.counts(), self.b2c.counts());
            }
        }
        match tick.due {
            None => {}
            Some(Due::CloseBoth(code, reason)) => {
                self.c2b.close_with(code, reason);
                self.b2c.close_with(code, reason);
            }
            Some(Due::TokenExpired) => {
                self.b2c
                    .close_with(CloseCode::POLICY_VIOLATION, "token expired");
                self.c2b.close_with(CloseCode::GOING_AWAY, "token expired");
            }
            Some(Due::Ping) => {
                let token = pump::ping_token();
                if self.b2c.ping(token) {
                    self.c2b.state.expect_pong(token);
                }
            }
        }
    }
}
