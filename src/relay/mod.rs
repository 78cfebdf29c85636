//! The relay: after both upgrades, frames flow both ways as their bytes
//! arrive, checked by one [`state::DirectionState`] per direction, until the
//! connection closes with a code that says why.
//!
//! One future polls both directions. Each read lands in a per-thread
//! scratch buffer and is written on at once; only when the other side
//! cannot take it all does the rest move into a buffer the connection owns,
//! released again once written. An idle connection therefore holds no relay
//! buffer, and payload is copied once in (the read) and once out (the
//! write). Frames the proxy sends itself (pings, closes) wait for a frame
//! boundary in their direction, so they never land inside a relayed frame.

pub mod state;

use std::cell::RefCell;
use std::future::poll_fn;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::close::{CloseCode, CloseInfo, Initiator};
use crate::config::Limits;
use crate::frame::{close_frame, ping_frame, MAX_CONTROL_FRAME_LEN};
use crate::metrics::Meter;
use state::{Direction, DirectionState, Rules, Step, Violation, PING_TOKEN_LEN};

/// The per-thread read buffer. 64 KiB lets one read carry several 16 KiB
/// messages; it is shared by every connection the thread runs.
const SCRATCH_LEN: usize = 64 * 1024;

/// After the first close frame, how long the other side has to answer
/// before the TCP connections are closed anyway (contract: 5 s).
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// Distinguishes the proxy's pings; uniqueness, not secrecy, is what
/// matters, and a ping is rare enough for one shared counter.
static PING_COUNTER: AtomicU64 = AtomicU64::new(1);

/// What the relay enforces on one connection.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The route's limits and timeouts, fixed at accept time.
    pub limits: Limits,
    /// `permessage-deflate` was negotiated.
    pub deflate: bool,
}

/// Traffic of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Data messages whose final frame passed.
    pub messages: u64,
    /// Bytes on the wire, frame headers included.
    pub bytes: u64,
}

/// How a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The first close: its code and who started it.
    pub close: CloseInfo,
    /// Client to backend traffic.
    pub client_to_backend: Counts,
    /// Backend to client traffic.
    pub backend_to_client: Counts,
}

/// Resolves to the moment a drain wants this connection closed.
pub type Stop = Pin<Box<dyn Future<Output = Instant> + Send>>;

/// Relays until the connection closes, then closes both sockets. When
/// `stop` resolves, the connection is closed with 1001 at the moment it
/// names. Traffic is reported to `meter` now and then and at the end.
pub async fn run<C, B>(
    mut client: C,
    client_pre: Bytes,
    mut backend: B,
    backend_pre: Bytes,
    settings: Settings,
    stop: Stop,
    meter: Option<Meter>,
) -> End
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut relay = Relay::new(settings, &client_pre, &backend_pre, stop, meter);
    // These may be views into the handshake's read buffers (hyper's and the
    // backend answer's): holding them would pin those buffers for the whole
    // connection. Their bytes are in the relay's own stash by now.
    drop((client_pre, backend_pre));
    poll_fn(|cx| relay.poll(cx, &mut client, &mut backend)).await;
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

/// How often a connection with traffic adds its counts to the shared
/// metrics; between flushes it counts alone.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// A frame of the proxy's own, waiting for a frame boundary in its
/// direction. It is kept as what to build rather than as bytes: most
/// connections never need one, and the bytes are rebuilt on the stack
/// whenever (part of) the frame is written.
#[derive(Debug, Clone, Copy)]
struct Inject {
    kind: InjectKind,
    mask: Option<[u8; 4]>,
    /// Bytes of the frame already written.
    at: u8,
}

#[derive(Debug, Clone, Copy)]
enum InjectKind {
    /// A close; nothing is written this way after it.
    Close(CloseCode, &'static str),
    /// A keepalive ping carrying a token its pong must echo.
    Ping([u8; PING_TOKEN_LEN]),
}

impl Inject {
    fn seals(&self) -> bool {
        matches!(self.kind, InjectKind::Close(..))
    }

    fn build<'a>(&self, buf: &'a mut [u8; MAX_CONTROL_FRAME_LEN]) -> &'a [u8] {
        match self.kind {
            InjectKind::Close(code, reason) => close_frame(code, reason, self.mask, buf),
            InjectKind::Ping(token) => {
                ping_frame(&token, self.mask, buf).expect("a ping token fits a control frame")
            }
        }
    }
}

/// One direction: reads from its source side, writes to its destination.
struct Half {
    state: DirectionState,
    /// Bytes read but not yet written or consumed; empty and without
    /// capacity unless the destination pushed back.
    stash: Vec<u8>,
    cursor: Cursor,
    inject: Option<Inject>,
    /// A close waiting for `inject` to be free.
    queued_close: Option<(CloseCode, &'static str)>,
    /// The source is still read (until EOF or an error).
    reading: bool,
    /// Bytes read are passed on; when false they are read and dropped.
    forwarding: bool,
    /// The destination still accepts writes.
    dst_ok: bool,
    /// The proxy's own close went this way; nothing follows it.
    sealed: bool,
    /// The destination accepted bytes since its last flush.
    unflushed: bool,
    /// Frames the proxy writes this way are masked (towards the backend,
    /// RFC 6455 section 5.3).
    masks: bool,
}

/// Positions in the buffer being processed: `..written` is done,
/// `written..approved` is cleared by the state and waits to be written.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    written: usize,
    approved: usize,
}

/// Why a direction needs the connection's attention.
enum Event {
    /// The source ended (EOF) or failed.
    SourceGone,
    /// Writing the destination failed.
    DestinationGone,
    /// The source broke a rule.
    Violation(Violation),
}

impl Half {
    fn new(dir: Direction, rules: Rules, pre: &[u8]) -> Half {
        Half {
            state: DirectionState::new(dir, rules),
            stash: pre.to_vec(),
            cursor: Cursor::default(),
            inject: None,
            queued_close: None,
            reading: true,
            forwarding: true,
            dst_ok: true,
            sealed: false,
            unflushed: false,
            masks: dir == Direction::ClientToBackend,
        }
    }

    /// Nothing is waiting to be written this way.
    fn is_idle(&self) -> bool {
        self.stash.is_empty()
            && self.state.pending().is_empty()
            && self.inject.is_none()
            && self.queued_close.is_none()
    }

    /// A close frame has gone, or will go, this way: the source's own,
    /// relayed, or the proxy's.
    fn close_sent(&self) -> bool {
        self.sealed
            || self.queued_close.is_some()
            || self.inject.as_ref().is_some_and(Inject::seals)
            || self.state.close_code().is_some()
    }

    /// Queues the proxy's close frame this way; from then on, what the
    /// source sends is dropped. Nothing happens when a close already went
    /// this way or the destination is gone.
    fn close_with(&mut self, code: CloseCode, reason: &'static str) {
        if !self.dst_ok || self.close_sent() {
            return;
        }
        self.queued_close = Some((code, reason));
        self.load_queued();
    }

    fn load_queued(&mut self) {
        if self.inject.is_some() {
            return;
        }
        if let Some((code, reason)) = self.queued_close.take() {
            self.inject = Some(Inject {
                kind: InjectKind::Close(code, reason),
                mask: self.masks.then(mask_key),
                at: 0,
            });
        }
    }

    /// Queues a ping carrying `token` this way, unless another frame of the
    /// proxy's is already waiting.
    fn ping(&mut self, token: [u8; PING_TOKEN_LEN]) -> bool {
        if self.inject.is_some() || !self.dst_ok || self.close_sent() {
            return false;
        }
        self.inject = Some(Inject {
            kind: InjectKind::Ping(token),
            mask: self.masks.then(mask_key),
            at: 0,
        });
        true
    }

    fn counts(&self) -> Counts {
        Counts {
            messages: self.state.messages(),
            bytes: self.state.bytes(),
        }
    }

    fn destination_gone(&mut self) -> Event {
        self.dst_ok = false;
        self.forwarding = false;
        self.inject = None;
        self.queued_close = None;
        Event::DestinationGone
    }

    /// Moves bytes from `src` to `dst` until one of them blocks or an event
    /// needs the connection's attention.
    fn poll<R, W>(&mut self, cx: &mut Context<'_>, src: &mut R, dst: &mut W) -> Poll<Event>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if !self.stash.is_empty() {
                let stash = std::mem::take(&mut self.stash);
                let mut cursor = self.cursor;
                let result = self.process(cx, &stash, &mut cursor, dst);
                self.stash = stash;
                self.cursor = cursor;
                match ready!(result) {
                    Err(event) => return Poll::Ready(event),
                    // Written out: give the memory back, idle connections hold none.
                    Ok(()) => {
                        self.stash = Vec::new();
                        self.cursor = Cursor::default();
                    }
                }
            }
            // Held bytes and the proxy's frames may be due with no new input.
            if let Err(event) = ready!(self.process(cx, &[], &mut Cursor::default(), dst)) {
                return Poll::Ready(event);
            }
            if self.unflushed && self.dst_ok {
                // TLS buffers what it encrypts; it must reach the socket now.
                if ready!(Pin::new(&mut *dst).poll_flush(cx)).is_err() {
                    return Poll::Ready(self.destination_gone());
                }
                self.unflushed = false;
            }
            if !self.reading {
                return Poll::Pending;
            }
            let outcome = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..]);
                match ready!(Pin::new(&mut *src).poll_read(cx, &mut buf)) {
                    Err(_) => return Poll::Ready(Some(Event::SourceGone)),
                    Ok(()) if buf.filled().is_empty() => {
                        return Poll::Ready(Some(Event::SourceGone))
                    }
                    Ok(()) => {}
                }
                let input = buf.filled();
                let mut cursor = Cursor::default();
                match self.process(cx, input, &mut cursor, dst) {
                    Poll::Ready(Ok(())) => Poll::Ready(None),
                    Poll::Ready(Err(event)) => Poll::Ready(Some(event)),
                    Poll::Pending => {
                        // The destination pushed back: keep the rest.
                        self.stash = input[cursor.written..].to_vec();
                        self.cursor = Cursor {
                            written: 0,
                            approved: cursor.approved - cursor.written,
                        };
                        Poll::Pending
                    }
                }
            });
            match ready!(outcome) {
                None => {}
                Some(Event::SourceGone) => {
                    self.reading = false;
                    return Poll::Ready(Event::SourceGone);
                }
                Some(event) => return Poll::Ready(event),
            }
        }
    }

    /// Writes what is due and lets the state examine `buf[cursor.written..]`
    /// until all of it is handled (`Ready(Ok)`), the destination blocks
    /// (`Pending`, cursor saved), or an event occurs.
    fn process<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        cursor: &mut Cursor,
        dst: &mut W,
    ) -> Poll<Result<(), Event>> {
        loop {
            if !self.dst_ok {
                cursor.written = buf.len();
                cursor.approved = buf.len();
                return Poll::Ready(Ok(()));
            }
            if self.forwarding {
                let pending = self.state.pending();
                if !pending.is_empty() {
                    match ready!(write(cx, dst, pending)) {
                        Some(n) => self.state.consume_pending(n),
                        None => return Poll::Ready(Err(self.destination_gone())),
                    }
                    continue;
                }
                if cursor.approved > cursor.written {
                    match ready!(write(cx, dst, &buf[cursor.written..cursor.approved])) {
                        Some(n) => cursor.written += n,
                        None => return Poll::Ready(Err(self.destination_gone())),
                    }
                    continue;
                }
            }
            // The proxy's frame goes out between frames, never inside one
            // (RFC 6455 section 5.4). When forwarding stopped at a rule
            // break, that happened at a frame boundary too.
            if let Some(mut inject) = self.inject {
                if self.state.at_frame_boundary() || !self.forwarding {
                    let mut buf = [0u8; MAX_CONTROL_FRAME_LEN];
                    let frame = inject.build(&mut buf);
                    match ready!(write(cx, dst, &frame[usize::from(inject.at)..])) {
                        Some(n) => inject.at += n as u8,
                        None => return Poll::Ready(Err(self.destination_gone())),
                    }
                    if usize::from(inject.at) == frame.len() {
                        if inject.seals() {
                            self.sealed = true;
                            self.forwarding = false;
                        }
                        self.inject = None;
                        self.load_queued();
                    } else {
                        self.inject = Some(inject);
                    }
                    continue;
                }
            }
            if cursor.written == buf.len() {
                return Poll::Ready(Ok(()));
            }
            if !self.forwarding {
                // Closed this way: nothing more is written, but the state
                // still reads what arrives, so that the peer's answering
                // close is noticed and the connection can end at once.
                let held = self.state.pending().len();
                self.state.consume_pending(held);
                match self.state.advance(&buf[cursor.written..]) {
                    Step::Forward(n) | Step::Consumed(n) => cursor.written += n,
                    Step::Violation(_) => cursor.written = buf.len(),
                }
                cursor.approved = cursor.written;
                continue;
            }
            let mut input = &buf[cursor.written..];
            if self.inject.is_some() {
                // Pass only the rest of the frame in progress, so that the
                // proxy's frame can follow it.
                let left = self.state.frame_remaining();
                if left > 0 && left < input.len() as u64 {
                    input = &input[..left as usize];
                }
            }
            match self.state.advance(input) {
                Step::Forward(n) => cursor.approved = cursor.written + n,
                Step::Consumed(n) => {
                    cursor.written += n;
                    cursor.approved = cursor.written;
                }
                Step::Violation(v) => {
                    self.forwarding = false;
                    cursor.written = buf.len();
                    cursor.approved = buf.len();
                    return Poll::Ready(Err(Event::Violation(v)));
                }
            }
        }
    }
}

/// One write; `None` when the destination is gone (error or zero bytes
/// taken).
fn write<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    dst: &mut W,
    bytes: &[u8],
) -> Poll<Option<usize>> {
    match ready!(Pin::new(dst).poll_write(cx, bytes)) {
        Ok(0) | Err(_) => Poll::Ready(None),
        Ok(n) => Poll::Ready(Some(n)),
    }
}

/// A masking key for frames the proxy sends to a backend. RFC 6455 section
/// 5.3 wants keys unpredictable to defeat cache poisoning through
/// browser-chosen payloads; the proxy's own frames carry only its fixed
/// close reasons and ping tokens, so varying keys suffice.
fn mask_key() -> [u8; 4] {
    let n = PING_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) as u32).to_le_bytes()
}

/// One side (client or backend) at the end of the connection.
#[derive(Debug, Default, Clone, Copy)]
struct SideEnd {
    /// The write half was shut down (FIN, or TLS close_notify then FIN).
    fin_sent: bool,
}

/// The connection: both directions, the timers, and how it ended.
struct Relay {
    c2b: Half,
    b2c: Half,
    client: SideEnd,
    backend: SideEnd,
    limits: Limits,
    timer: Pin<Box<Sleep>>,
    armed_for: Instant,
    last_activity: Instant,
    last_client_activity: Instant,
    seen_c2b: u64,
    seen_b2c: u64,
    /// When the proxy's ping went out, while its answer is awaited.
    ping_sent: Option<Instant>,
    /// Since when the connection is closing (first close frame, or the
    /// proxy's decision); the grace period counts from here.
    closing_since: Option<Instant>,
    close: Option<CloseInfo>,
    /// The grace period ran out.
    expired: bool,
    /// Pending until a drain covers this connection.
    stop: Option<Stop>,
    /// When a drain wants this connection closed.
    drain_at: Option<Instant>,
    meter: Option<Meter>,
    /// When the counts are next added to the metrics (set by traffic).
    flush_at: Option<Instant>,
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
        let mut relay = Relay {
            c2b: Half::new(Direction::ClientToBackend, rules, client_pre),
            b2c: Half::new(Direction::BackendToClient, rules, backend_pre),
            client: SideEnd::default(),
            backend: SideEnd::default(),
            limits: settings.limits,
            timer: Box::pin(tokio::time::sleep_until(now)),
            armed_for: now,
            last_activity: now,
            last_client_activity: now,
            seen_c2b: 0,
            seen_b2c: 0,
            ping_sent: None,
            closing_since: None,
            close: None,
            expired: false,
            stop: Some(stop),
            drain_at: None,
            meter,
            flush_at: None,
        };
        let next = relay.next_deadline();
        relay.arm(next);
        relay
    }

    fn end(&self) -> End {
        End {
            close: self.close.unwrap_or(CloseInfo {
                code: CloseCode::ABNORMAL,
                initiator: Initiator::Proxy,
            }),
            client_to_backend: self.c2b.counts(),
            backend_to_client: self.b2c.counts(),
        }
    }

    fn poll<C, B>(&mut self, cx: &mut Context<'_>, client: &mut C, backend: &mut B) -> Poll<()>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
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
            self.observe();
            if let Some(stop) = &mut self.stop {
                if let Poll::Ready(at) = stop.as_mut().poll(cx) {
                    self.drain_at = Some(at);
                    self.stop = None;
                    acted = true;
                }
            }
            acted |= self.shut_finished_sides(cx, client, backend);
            if self.is_done() {
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
            let next = self.next_deadline();
            if fired || next < self.armed_for {
                self.arm(next);
                acted = true;
            }
            if !acted {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Notes traffic (for the timers) and close frames passing through.
    fn observe(&mut self) {
        let c2b = self.c2b.state.bytes();
        let b2c = self.b2c.state.bytes();
        if c2b != self.seen_c2b || b2c != self.seen_b2c {
            let now = Instant::now();
            self.last_activity = now;
            if c2b != self.seen_c2b {
                self.last_client_activity = now;
                self.ping_sent = None;
            }
            if self.meter.is_some() && self.flush_at.is_none() {
                self.flush_at = Some(now + FLUSH_INTERVAL);
            }
            self.seen_c2b = c2b;
            self.seen_b2c = b2c;
        }
        for half in [&self.c2b, &self.b2c] {
            if let Some(code) = half.state.close_code() {
                record(&mut self.close, code, half.state.direction().sender());
                self.closing_since.get_or_insert_with(Instant::now);
            }
        }
    }

    fn on_event(&mut self, dir: Direction, event: Event) {
        let (this, other) = match dir {
            Direction::ClientToBackend => (&mut self.c2b, &mut self.b2c),
            Direction::BackendToClient => (&mut self.b2c, &mut self.c2b),
        };
        let sender = dir.sender();
        match event {
            Event::SourceGone => {
                if this.state.close_code().is_some() {
                    // It closed properly and then hung up: nothing to add.
                    return;
                }
                // Vanished without a close: tell the other side at once
                // (contract: 1014 to a client, 1001 to a backend).
                record(&mut self.close, other_side_code(sender), sender);
                this.close_with(other_side_code(sender), lost_reason(sender));
                other.destination_gone();
            }
            Event::DestinationGone => {
                let gone = other.state.direction().sender();
                record(&mut self.close, other_side_code(gone), gone);
                other.close_with(other_side_code(gone), lost_reason(gone));
                other.reading = false;
            }
            Event::Violation(v) => {
                record(&mut self.close, v.code(), sender);
                other.close_with(v.code(), v.reason());
                this.close_with(other_side_code(sender), broke_rule_reason(sender));
            }
        }
        self.closing_since.get_or_insert_with(Instant::now);
    }

    /// Shuts down the write half towards each side that is through: a
    /// close went to it and it either answered with its own, hung up, or
    /// was closed by the proxy. Reading goes on until its EOF, so that
    /// unread input never turns the close into a reset.
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
        if !self.client.fin_sent
            && side_through(&self.b2c, &self.c2b)
            && Pin::new(&mut *client).poll_shutdown(cx).is_ready()
        {
            self.client.fin_sent = true;
            acted = true;
        }
        if !self.backend.fin_sent
            && side_through(&self.c2b, &self.b2c)
            && Pin::new(&mut *backend).poll_shutdown(cx).is_ready()
        {
            self.backend.fin_sent = true;
            acted = true;
        }
        acted
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.flush_at.is_some_and(|at| now >= at) {
            self.flush_at = None;
            if let Some(meter) = &mut self.meter {
                meter.flush(self.c2b.counts(), self.b2c.counts());
            }
        }
        if let Some(since) = self.closing_since {
            if now >= since + CLOSE_GRACE {
                self.expired = true;
            }
            return;
        }
        if self.drain_at.is_some_and(|at| now >= at) {
            self.close_both(CloseCode::GOING_AWAY, "draining");
            return;
        }
        if now >= self.last_activity + self.limits.idle_timeout {
            self.close_both(CloseCode::GOING_AWAY, "idle timeout");
            return;
        }
        if self.limits.ping_interval.is_zero() {
            return;
        }
        match self.ping_sent {
            Some(sent) if now >= sent + self.limits.ping_timeout => {
                self.close_both(CloseCode::GOING_AWAY, "no answer to ping");
            }
            Some(_) => {}
            None if now >= self.last_client_activity + self.limits.ping_interval => {
                let token = PING_COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes();
                if self.b2c.ping(token) {
                    self.c2b.state.expect_pong(token);
                }
                self.ping_sent = Some(now);
            }
            None => {}
        }
    }

    /// The proxy itself ends the connection: the same close both ways.
    fn close_both(&mut self, code: CloseCode, reason: &'static str) {
        record(&mut self.close, code, Initiator::Proxy);
        self.c2b.close_with(code, reason);
        self.b2c.close_with(code, reason);
        self.closing_since.get_or_insert_with(Instant::now);
    }

    fn next_deadline(&self) -> Instant {
        let mut next = match self.closing_since {
            Some(since) => since + CLOSE_GRACE,
            None => {
                let mut next = self.last_activity + self.limits.idle_timeout;
                if let Some(at) = self.drain_at {
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

    fn arm(&mut self, at: Instant) {
        self.armed_for = at;
        self.timer.as_mut().reset(at);
    }

    /// Done when both close frames have crossed and both sides got their
    /// FIN (contract: TCP closed once both closes are seen), when both
    /// sides are through and have hung up, or when the grace ran out.
    fn is_done(&self) -> bool {
        let client_done = (self.client.fin_sent || !self.b2c.dst_ok) && !self.c2b.reading;
        let backend_done = (self.backend.fin_sent || !self.c2b.dst_ok) && !self.b2c.reading;
        let handshake_done = self.c2b.state.close_code().is_some()
            && self.b2c.state.close_code().is_some()
            && self.client.fin_sent
            && self.backend.fin_sent;
        self.expired || handshake_done || (client_done && backend_done)
    }
}

/// Whether the side that `into` writes to and `from` reads from is
/// through: a close went to it (written out), and it sent its own close,
/// hung up, or was closed by the proxy.
fn side_through(into: &Half, from: &Half) -> bool {
    let told = (into.close_sent() && into.is_idle()) || !into.dst_ok;
    let answered = from.state.close_code().is_some() || !from.reading || into.sealed;
    told && answered
}

/// Keeps the first close of the connection: its code is the first close
/// code on the wire (for a vanished side, the one the proxy sent the other
/// side), its initiator the side whose action ended the connection (its
/// close frame, its disappearance, or a rule it broke); the proxy only for
/// its own reasons (idle, ping, drain).
fn record(close: &mut Option<CloseInfo>, code: CloseCode, initiator: Initiator) {
    close.get_or_insert(CloseInfo { code, initiator });
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
