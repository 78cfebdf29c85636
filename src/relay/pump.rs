//! The byte pump of one direction: reads from its source side, lets its
//! [`DirectionState`] examine the bytes, and writes them on to its
//! destination, with the proxy's own frames (pings, closes) placed between
//! frames.
//!
//! Each read lands in a per-thread scratch buffer and is written on at
//! once; only when the destination cannot take it all does the rest move
//! into a buffer the pump owns, released again once written. An idle
//! connection therefore holds no relay buffer, and payload is copied once in
//! (the read) and once out (the write).

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::inbox::Pushed;
use super::lifecycle::{Flow, Order};
use super::state::{Direction, DirectionState, Rules, Step, Violation, PING_TOKEN_LEN};
use crate::close::{CloseCode, Counts};
use crate::frame::{close_frame, parse_header, ping_frame, MAX_CONTROL_FRAME_LEN};

/// The per-thread read buffer. 64 KiB lets one read carry several 16 KiB
/// messages; it is shared by every connection the thread runs.
const SCRATCH_LEN: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// Distinguishes the proxy's pings and varies its masking keys; uniqueness,
/// not secrecy, is what matters, and both are rare enough for one shared
/// counter.
static COUNTER: AtomicU64 = AtomicU64::new(1);

/// A fresh token for the proxy's ping.
pub(crate) fn ping_token() -> [u8; PING_TOKEN_LEN] {
    COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes()
}

/// Why a direction needs the connection's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The source ended (EOF) or failed.
    SourceGone(SourceEnd),
    /// Writing the destination failed.
    DestinationGone,
    /// The source broke a rule.
    Violation(Violation),
}

/// How a source ended; an error's kind is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceEnd {
    /// A clean end of stream.
    Eof,
    /// A read failed with this kind of error (a reset, most often).
    Error(std::io::ErrorKind),
}

/// Where the destination of a direction stands; the proxy's frames and the
/// bytes it reads are handled by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Frames pass through as they arrive.
    Forwarding,
    /// The source broke a rule: what it sends is read and dropped while the
    /// proxy's close waits to go this way.
    Discarding,
    /// The proxy's close went this way; nothing follows it (RFC 6455
    /// section 5.5.1), and what the source sends is read and dropped.
    Sealed,
    /// Writing the destination failed; nothing more is written.
    Gone,
}

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

/// A pushed data message on its way out: one unfragmented, unmasked frame
/// with RSV1 clear (sent uncompressed, valid under permessage-deflate).
struct Outgoing {
    header: [u8; 10],
    header_len: u8,
    payload: bytes::Bytes,
    /// Bytes of header and payload written.
    at: usize,
}

impl Outgoing {
    fn new(message: Pushed) -> Outgoing {
        let mut header = [0u8; 10];
        header[0] = 0x80 | if message.binary { 0x2 } else { 0x1 };
        let len = message.payload.len();
        let header_len = if len < 126 {
            header[1] = len as u8;
            2
        } else if len <= usize::from(u16::MAX) {
            header[1] = 126;
            header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Outgoing {
            header,
            header_len,
            payload: message.payload,
            at: 0,
        }
    }

    /// The next bytes to write; empty once all are written.
    fn rest(&self) -> &[u8] {
        let h = usize::from(self.header_len);
        if self.at < h {
            &self.header[self.at..h]
        } else {
            &self.payload[self.at - h..]
        }
    }
}

/// One direction: reads from its source side, writes to its destination.
pub(crate) struct Pump {
    pub(crate) state: DirectionState,
    /// Bytes read but not yet written or consumed; empty and without
    /// capacity unless the destination pushed back.
    stash: Vec<u8>,
    cursor: Cursor,
    inject: Option<Inject>,
    /// A close waiting for `inject` to be free.
    queued_close: Option<(CloseCode, &'static str)>,
    /// A pushed message waiting for a message boundary, or being written.
    pushed: Option<Outgoing>,
    phase: Phase,
    /// The source is still read (until EOF or an error).
    reading: bool,
    /// Data messages allowed through so far, when the route limits the
    /// client's message rate: at a frame boundary with this many passed,
    /// the source is not read until the lifecycle allows more.
    budget: Option<u64>,
    /// The destination accepted bytes since its last flush.
    unflushed: bool,
}

/// Positions in the buffer being processed: `..written` is done,
/// `written..approved` is cleared by the state and waits to be written.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    written: usize,
    approved: usize,
}

impl Pump {
    /// A direction at the start of the relay; `pre` are bytes read from
    /// its source during the handshake.
    pub(crate) fn new(dir: Direction, rules: Rules, pre: &[u8]) -> Pump {
        Pump {
            state: DirectionState::new(dir, rules),
            stash: pre.to_vec(),
            cursor: Cursor::default(),
            inject: None,
            queued_close: None,
            pushed: None,
            phase: Phase::Forwarding,
            reading: true,
            budget: None,
            unflushed: false,
        }
    }

    /// Sets how many data messages may have passed in all (`None`: no
    /// limit); true when that changed.
    pub(crate) fn set_budget(&mut self, budget: Option<u64>) -> bool {
        std::mem::replace(&mut self.budget, budget) != budget
    }

    /// The budget is spent and the next frame would start past it.
    fn over_budget(&self) -> bool {
        self.budget
            .is_some_and(|b| self.state.messages() >= b && self.state.at_frame_boundary())
    }

    /// Frames the proxy writes this way are masked (towards the backend,
    /// RFC 6455 section 5.3).
    fn masks(&self) -> bool {
        self.state.direction() == Direction::ClientToBackend
    }

    fn forwarding(&self) -> bool {
        self.phase == Phase::Forwarding
    }

    fn dst_ok(&self) -> bool {
        self.phase != Phase::Gone
    }

    /// The destination pushed back: bytes read wait for it.
    pub(crate) fn is_blocked(&self) -> bool {
        !self.stash.is_empty() && self.dst_ok()
    }

    /// The source is still read.
    pub(crate) fn is_reading(&self) -> bool {
        self.reading
    }

    /// What the lifecycle's done rules need to know of this direction.
    pub(crate) fn flow(&self) -> Flow {
        Flow {
            close_delivered: self.close_sent() && self.is_idle(),
            destination_gone: !self.dst_ok(),
            close_passed: self.state.close_code().is_some(),
            source_ended: !self.reading,
            sealed: self.phase == Phase::Sealed,
        }
    }

    /// Carries out what the lifecycle decided for this direction.
    pub(crate) fn apply(&mut self, order: Order) {
        if order.destination_gone {
            self.destination_gone();
        }
        if order.stop_reading {
            self.reading = false;
        }
        if let Some((code, reason)) = order.close {
            self.close_with(code, reason);
        }
    }

    /// Nothing is waiting to be written this way.
    fn is_idle(&self) -> bool {
        self.stash.is_empty()
            && self.state.pending().is_empty()
            && self.inject.is_none()
            && self.queued_close.is_none()
            && self.pushed.is_none()
    }

    /// A close frame has gone, or will go, this way: the source's own,
    /// relayed, or the proxy's.
    fn close_sent(&self) -> bool {
        self.phase == Phase::Sealed
            || self.queued_close.is_some()
            || self.inject.as_ref().is_some_and(Inject::seals)
            || self.state.close_code().is_some()
    }

    /// Queues the proxy's close frame this way; from then on, what the
    /// source sends is dropped. Nothing happens when a close already went
    /// this way or the destination is gone.
    pub(crate) fn close_with(&mut self, code: CloseCode, reason: &'static str) {
        if !self.dst_ok() || self.close_sent() {
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
                mask: self.masks().then(mask_key),
                at: 0,
            });
        }
    }

    /// Queues a ping carrying `token` this way, unless another frame of the
    /// proxy's is already waiting.
    pub(crate) fn ping(&mut self, token: [u8; PING_TOKEN_LEN]) -> bool {
        if self.inject.is_some() || !self.dst_ok() || self.close_sent() {
            return false;
        }
        self.inject = Some(Inject {
            kind: InjectKind::Ping(token),
            mask: self.masks().then(mask_key),
            at: 0,
        });
        true
    }

    /// True when a pushed message can be handed over: none waits, and
    /// this way is still open.
    pub(crate) fn takes_push(&self) -> bool {
        self.pushed.is_none() && self.forwarding() && !self.close_sent()
    }

    /// Hands over a pushed message; it goes out at the next message
    /// boundary of what is relayed this way.
    pub(crate) fn push(&mut self, message: Pushed) {
        self.pushed = Some(Outgoing::new(message));
    }

    /// What went this way so far.
    pub(crate) fn counts(&self) -> Counts {
        Counts {
            messages: self.state.messages(),
            bytes: self.state.bytes(),
        }
    }

    fn destination_gone(&mut self) -> Event {
        self.phase = Phase::Gone;
        self.inject = None;
        self.queued_close = None;
        self.pushed = None;
        Event::DestinationGone
    }

    /// Moves bytes from `src` to `dst` until one of them blocks or an event
    /// needs the connection's attention.
    pub(crate) fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
    ) -> Poll<Event>
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
            if self.unflushed && self.dst_ok() {
                // TLS buffers what it encrypts; it must reach the socket now.
                if ready!(Pin::new(&mut *dst).poll_flush(cx)).is_err() {
                    return Poll::Ready(self.destination_gone());
                }
                self.unflushed = false;
            }
            // Over its message rate, the source is left unread: TCP pushes
            // back and nothing is lost. The lifecycle's timer wakes the relay
            // when there is budget again.
            if !self.reading || (self.forwarding() && self.over_budget()) {
                return Poll::Pending;
            }
            let outcome = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..]);
                match ready!(Pin::new(&mut *src).poll_read(cx, &mut buf)) {
                    Err(e) => {
                        return Poll::Ready(Some(Event::SourceGone(SourceEnd::Error(e.kind()))))
                    }
                    Ok(()) if buf.filled().is_empty() => {
                        return Poll::Ready(Some(Event::SourceGone(SourceEnd::Eof)))
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
                Some(Event::SourceGone(end)) => {
                    self.reading = false;
                    return Poll::Ready(Event::SourceGone(end));
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
            if !self.dst_ok() {
                cursor.written = buf.len();
                cursor.approved = buf.len();
                return Poll::Ready(Ok(()));
            }
            if self.forwarding() {
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
            // A pushed message goes out whole between messages, never inside
            // a fragmented one; once started, nothing else comes before its
            // end. A close of the proxy's that is due drops it unstarted.
            let open = self.forwarding() && self.state.close_code().is_none();
            let due = open
                && self.state.at_message_boundary()
                && self.inject.is_none()
                && self.queued_close.is_none();
            if let Some(out) = &mut self.pushed {
                if out.at > 0 || due {
                    match ready!(write(cx, dst, out.rest())) {
                        Some(n) => out.at += n,
                        None => return Poll::Ready(Err(self.destination_gone())),
                    }
                    if out.rest().is_empty() {
                        self.pushed = None;
                    }
                    self.unflushed = true;
                    continue;
                }
                if !open || self.inject.as_ref().is_some_and(Inject::seals) {
                    self.pushed = None;
                }
            }
            // The proxy's frame goes out between frames, never inside one
            // (RFC 6455 section 5.4). When forwarding stopped at a rule
            // break, that happened at a frame boundary too.
            if let Some(mut inject) = self.inject {
                if self.state.at_frame_boundary() || !self.forwarding() {
                    let mut buf = [0u8; MAX_CONTROL_FRAME_LEN];
                    let frame = inject.build(&mut buf);
                    match ready!(write(cx, dst, &frame[usize::from(inject.at)..])) {
                        Some(n) => inject.at += n as u8,
                        None => return Poll::Ready(Err(self.destination_gone())),
                    }
                    if usize::from(inject.at) == frame.len() {
                        if inject.seals() {
                            self.phase = Phase::Sealed;
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
            if !self.forwarding() {
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
            if self.budget.is_some() {
                if self.over_budget() {
                    return Poll::Pending;
                }
                // One frame per step, so that the budget is checked at
                // every frame boundary, not once per read.
                let len = match self.state.frame_remaining() {
                    0 => parse_header(input)
                        .ok()
                        .flatten()
                        .map_or(u64::MAX, |h| h.header_len() as u64 + h.payload_len),
                    left => left,
                };
                if len < input.len() as u64 {
                    input = &input[..len as usize];
                }
            }
            if self.inject.is_some() {
                // Pass only the rest of the frame in progress, so that the
                // proxy's frame can follow it.
                let left = self.state.frame_remaining();
                if left > 0 && left < input.len() as u64 {
                    input = &input[..left as usize];
                }
            } else if self.pushed.is_some() {
                // A pushed message waits for the end of the message in
                // progress: pass one frame at a time, so that the state
                // is asked after each one whether the message ended.
                let frame = match self.state.frame_remaining() {
                    0 => match parse_header(input) {
                        Ok(Some(h)) => (h.header_len() as u64).saturating_add(h.payload_len),
                        Ok(None) | Err(_) => u64::MAX,
                    },
                    left => left,
                };
                if frame < input.len() as u64 {
                    input = &input[..frame as usize];
                }
            }
            match self.state.advance(input) {
                Step::Forward(n) => cursor.approved = cursor.written + n,
                Step::Consumed(n) => {
                    cursor.written += n;
                    cursor.approved = cursor.written;
                }
                Step::Violation(v) => {
                    if self.phase == Phase::Forwarding {
                        self.phase = Phase::Discarding;
                    }
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
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) as u32).to_le_bytes()
}
