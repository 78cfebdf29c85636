//! What one direction of a relayed connection lets through.
//!
//! The relay reads a chunk from one side and hands the unprocessed rest of
//! it to [`DirectionState::advance`] until the chunk is used up. The state
//! parses frame headers (RFC 6455 section 5.2) as they go by, enforces the
//! contract's rules on each one before any byte of that frame is written,
//! and otherwise lets payload stream through untouched. Only three things
//! are ever copied or unmasked, each at most [`MAX_HEADER_LEN`] bytes: a
//! header split across reads, a pong that may be the answer to the proxy's
//! own ping, and a close frame's header with its status code, held until
//! the code is known to be allowed on the wire (RFC 6455 section 7.4).
//! No allocation, no I/O, no clock.
//!
//! A relay loop, with a `Vec` standing in for the other side's socket:
//!
//! ```
//! use wsgate::relay::state::{Direction, DirectionState, Rules, Step};
//!
//! let rules = Rules { max_frame_bytes: 1 << 20, max_message_bytes: 1 << 20, deflate: false };
//! let mut state = DirectionState::new(Direction::BackendToClient, rules);
//! let mut to_client = Vec::new();
//! // A text frame "hi" whose header arrives split over two reads.
//! for chunk in [&[0x81u8][..], &[0x02, b'h', b'i'][..]] {
//!     let mut rest = chunk;
//!     while !rest.is_empty() {
//!         match state.advance(rest) {
//!             Step::Forward(n) => {
//!                 to_client.extend_from_slice(&rest[..n]);
//!                 rest = &rest[n..];
//!             }
//!             Step::Consumed(n) => {
//!                 rest = &rest[n..];
//!                 to_client.extend_from_slice(state.pending());
//!                 state.consume_pending(state.pending().len());
//!             }
//!             Step::Violation(v) => panic!("{v}"),
//!         }
//!     }
//! }
//! assert_eq!(to_client, [0x81, 0x02, b'h', b'i']);
//! assert_eq!(state.messages(), 1);
//! ```

use std::fmt;

use crate::close::{CloseCode, Initiator};
use crate::frame::{
    apply_mask, parse_header, FrameHeader, HeaderError, HeaderParser, HeaderProgress, Opcode,
    MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, RSV1,
};

/// The payload length of the proxy's pings, so that their pongs can be
/// recognised while holding no more than one header's worth of bytes.
pub const PING_TOKEN_LEN: usize = 8;

/// Held bytes: a whole header, or a pong carrying a ping token (a 7-bit
/// length, so 2 header bytes, a masking key and the token).
const HOLD_LEN: usize = MAX_HEADER_LEN;
const _: () = assert!(2 + 4 + PING_TOKEN_LEN <= HOLD_LEN);

/// Which way the bytes go; it decides the masking rule (RFC 6455 section
/// 5.1) and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Frames from the client, which must be masked.
    ClientToBackend,
    /// Frames from the backend, which must not be masked.
    BackendToClient,
}

impl Direction {
    /// Its name, spelt as the contract's `direction` metric label
    /// (`client_to_backend` or `backend_to_client`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToBackend => "client_to_backend",
            Direction::BackendToClient => "backend_to_client",
        }
    }

    /// The side whose frames travel this way: the initiator of a close
    /// frame seen here, and the offender when a rule is broken here.
    pub fn sender(self) -> Initiator {
        match self {
            Direction::ClientToBackend => Initiator::Client,
            Direction::BackendToClient => Initiator::Backend,
        }
    }

    /// The side these frames are written to.
    pub fn receiver(self) -> Initiator {
        match self {
            Direction::ClientToBackend => Initiator::Backend,
            Direction::BackendToClient => Initiator::Client,
        }
    }
}

/// The limits of a route and the negotiated extensions, fixed for the life
/// of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The largest payload one frame may announce, control frames included.
    pub max_frame_bytes: u64,
    /// The largest sum of the payload lengths of one message's frames, as
    /// they are on the wire (compressed, when deflate is on).
    pub max_message_bytes: u64,
    /// permessage-deflate was negotiated, so RSV1 may mark the first frame
    /// of a data message (RFC 7692 section 6).
    pub deflate: bool,
}

/// A broken rule. The frame that broke it has not been forwarded, not even
/// its header; the relay closes the connection with [`Violation::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Violation {
    /// The header itself is invalid (RFC 6455 section 5.2).
    Malformed(HeaderError),
    /// A client frame without a mask (RFC 6455 section 5.1).
    Unmasked,
    /// A backend frame with a mask (RFC 6455 section 5.1).
    Masked,
    /// An opcode RFC 6455 section 5.2 reserves.
    ReservedOpcode,
    /// A control frame without FIN (RFC 6455 section 5.5).
    FragmentedControl,
    /// A control frame with more than 125 payload bytes (RFC 6455 section 5.5).
    ControlTooLong,
    /// A close frame with a 1-byte payload: a code takes two (RFC 6455
    /// section 5.5.1).
    CloseOneByte,
    /// A close frame with a code RFC 6455 section 7.4 does not allow on
    /// the wire ([`CloseCode::is_allowed_on_wire`]).
    CloseCodeNotAllowed,
    /// A continuation frame while no message is open (RFC 6455 section 5.4).
    ContinuationWithoutStart,
    /// A text or binary frame while a fragmented message is still open
    /// (RFC 6455 section 5.4).
    MessageNotFinished,
    /// RSV2 or RSV3, or any RSV bit without a negotiated extension (RFC 6455
    /// section 5.2).
    ReservedBits,
    /// RSV1 on a frame other than the first of a data message (RFC 7692
    /// section 6).
    MisplacedRsv1,
    /// One frame's payload is over `max_frame_bytes`.
    FrameTooBig,
    /// One message's payload is over `max_message_bytes`.
    MessageTooBig,
}

impl Violation {
    /// The close code the offender gets: 1009 for size limits, 1002 for the
    /// rest (RFC 6455 section 7.4.1).
    pub fn code(self) -> CloseCode {
        match self {
            Violation::FrameTooBig | Violation::MessageTooBig => CloseCode::MESSAGE_TOO_BIG,
            Violation::Malformed(_)
            | Violation::Unmasked
            | Violation::Masked
            | Violation::ReservedOpcode
            | Violation::FragmentedControl
            | Violation::ControlTooLong
            | Violation::CloseOneByte
            | Violation::CloseCodeNotAllowed
            | Violation::ContinuationWithoutStart
            | Violation::MessageNotFinished
            | Violation::ReservedBits
            | Violation::MisplacedRsv1 => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the close frame sent to the offender; each fits
    /// the 123 bytes a close reason may take.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::Malformed(HeaderError::NonMinimalLength) => {
                "payload length not minimally encoded"
            }
            Violation::Malformed(HeaderError::LengthOverflow) => "payload length of 2^63 or more",
            Violation::Unmasked => "client frame not masked",
            Violation::Masked => "server frame masked",
            Violation::ReservedOpcode => "reserved opcode",
            Violation::FragmentedControl => "fragmented control frame",
            Violation::ControlTooLong => "control frame payload over 125 bytes",
            Violation::CloseOneByte => "close frame with a 1-byte payload",
            Violation::CloseCodeNotAllowed => "close code not allowed on the wire",
            Violation::ContinuationWithoutStart => "continuation frame without a message",
            Violation::MessageNotFinished => "new message before the previous one ended",
            Violation::ReservedBits => "reserved bit set without a negotiated extension",
            Violation::MisplacedRsv1 => "RSV1 set on a frame that does not start a message",
            Violation::FrameTooBig => "frame too big",
            Violation::MessageTooBig => "message too big",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Violation {}

/// What the relay does next with the input it passed to
/// [`DirectionState::advance`].
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `input[..n]` passes through unchanged: whole frames, a header and
    /// payload, or payload only. Always `n > 0`.
    Forward(usize),
    /// `input[..n]` was absorbed: a header or pong split across reads is
    /// held, the proxy's own pong was dropped, or the direction is closed
    /// and the bytes are discarded. Write [`DirectionState::pending`]
    /// before anything else.
    Consumed(usize),
    /// A rule was broken; nothing of the offending frame has been
    /// forwarded. Every later call answers the same.
    Violation(Violation),
}

/// Reads the status code of a close frame as its payload streams past
/// (RFC 6455 section 5.5.1); the rest of the payload is not looked at.
#[derive(Debug, Clone, Copy)]
struct CloseTap {
    mask: Option<[u8; 4]>,
    code: [u8; 2],
    seen: u8,
}

impl CloseTap {
    fn observe(&mut self, chunk: &[u8]) {
        let at = usize::from(self.seen);
        let n = (2 - at).min(chunk.len());
        self.code[at..at + n].copy_from_slice(&chunk[..n]);
        self.seen += n as u8;
    }

    /// An empty payload means "no status" (1005); one byte was rejected at
    /// the header, so any other payload has both code bytes.
    fn code(self) -> CloseCode {
        if self.seen < 2 {
            return CloseCode::NO_STATUS;
        }
        let mut code = self.code;
        if let Some(key) = self.mask {
            apply_mask(&mut code, key, 0);
        }
        CloseCode(u16::from_be_bytes(code))
    }
}

/// What a held frame start is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// A whole pong that may answer the proxy's ping.
    Pong,
    /// A close frame's header and status code, checked before the frame
    /// is passed on; `payload_len` is its whole payload.
    CloseCode { payload_len: u8 },
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Between frames, or a header is partly in `parser`.
    Header,
    /// Inside an accepted frame's payload.
    Payload {
        remaining: u64,
        close: Option<CloseTap>,
    },
    /// Collecting in `hold` the first `total` bytes of a frame that must be
    /// seen before any of it is written.
    Holding {
        total: u8,
        mask: Option<[u8; 4]>,
        what: Held,
    },
    /// A close frame has passed; later bytes are discarded.
    Closed,
    /// A rule was broken; the stream cannot continue.
    Failed(Violation),
}

/// The state of one direction of a relayed connection: a few dozen bytes
/// and one held header, whatever the size of the frames.
#[derive(Debug, Clone)]
pub struct DirectionState {
    dir: Direction,
    rules: Rules,
    phase: Phase,
    parser: HeaderParser,
    /// Held bytes: a pong being collected (`held` bytes), or bytes to write
    /// out (`pending_from..pending_to`); never both at once.
    hold: [u8; HOLD_LEN],
    held: u8,
    pending_from: u8,
    pending_to: u8,
    /// The payload bytes so far of the open fragmented message.
    message: Option<u64>,
    messages: u64,
    frames: u64,
    bytes: u64,
    close: Option<CloseCode>,
    ping_token: Option<[u8; PING_TOKEN_LEN]>,
    proxy_pong: bool,
}

impl DirectionState {
    /// A direction at the start of the connection: no message open, nothing
    /// held.
    pub fn new(dir: Direction, rules: Rules) -> Self {
        DirectionState {
            dir,
            rules,
            phase: Phase::Header,
            parser: HeaderParser::new(),
            hold: [0; HOLD_LEN],
            held: 0,
            pending_from: 0,
            pending_to: 0,
            message: None,
            messages: 0,
            frames: 0,
            bytes: 0,
            close: None,
            ping_token: None,
            proxy_pong: false,
        }
    }

    /// The direction this state watches.
    pub fn direction(&self) -> Direction {
        self.dir
    }

    /// Decides what to do with the start of `input`, the unprocessed rest
    /// of the last read. While [`pending`](Self::pending) is not empty it
    /// answers `Consumed(0)`: held bytes go out first. Hostile input never
    /// panics.
    pub fn advance(&mut self, input: &[u8]) -> Step {
        if input.is_empty() || self.pending_from != self.pending_to {
            return Step::Consumed(0);
        }
        match self.phase {
            Phase::Failed(v) => Step::Violation(v),
            Phase::Closed => {
                self.bytes += input.len() as u64;
                Step::Consumed(input.len())
            }
            Phase::Holding { total, mask, what } => self.fill_held(input, total, mask, what),
            Phase::Header if !self.parser.is_empty() => self.push_split_header(input),
            Phase::Header | Phase::Payload { .. } => self.forward(input),
        }
    }

    /// Held bytes that are complete and must be written before anything
    /// else: a header that arrived split, or a pong that turned out not to
    /// be the proxy's.
    pub fn pending(&self) -> &[u8] {
        &self.hold[usize::from(self.pending_from)..usize::from(self.pending_to)]
    }

    /// Marks the first `n` bytes of [`pending`](Self::pending) as written.
    pub fn consume_pending(&mut self, n: usize) {
        let left = usize::from(self.pending_to - self.pending_from);
        self.pending_from += n.min(left) as u8;
        if self.pending_from == self.pending_to {
            self.pending_from = 0;
            self.pending_to = 0;
        }
    }

    /// True when the bytes written so far end on a frame boundary, so the
    /// proxy may insert a frame of its own here: control frames may come
    /// between the fragments of a message, but never inside a frame (RFC
    /// 6455 section 5.4). A header or pong still held does not count, as
    /// none of it has been written. This is about framing only: once a
    /// close has passed ([`close_code`](Self::close_code)), nothing more may
    /// follow it (RFC 6455 section 5.5.1).
    pub fn at_frame_boundary(&self) -> bool {
        let inside_frame = match self.phase {
            Phase::Payload { .. } => true,
            Phase::Header | Phase::Holding { .. } | Phase::Closed | Phase::Failed(_) => false,
        };
        self.pending_from == self.pending_to && !inside_frame
    }

    /// A frame boundary outside any fragmented message (RFC 6455 5.4).
    pub fn at_message_boundary(&self) -> bool {
        self.at_frame_boundary() && self.message.is_none()
    }

    /// Payload bytes of the frame in progress still to come; 0 between
    /// frames. The relay passes no more than this when it must place a
    /// frame of its own right after the current one.
    pub fn frame_remaining(&self) -> u64 {
        match self.phase {
            Phase::Payload { remaining, .. } => remaining,
            Phase::Header | Phase::Holding { .. } | Phase::Closed | Phase::Failed(_) => 0,
        }
    }

    /// The proxy has sent a ping carrying `token` to the side whose frames
    /// travel this way (the client, per the contract). The first pong that
    /// echoes it exactly (RFC 6455 section 5.5.3) is the proxy's: it is
    /// dropped instead of forwarded, and
    /// [`take_proxy_pong`](Self::take_proxy_pong) reports it. A new token
    /// replaces the last; a pong for an older one passes on as an
    /// unsolicited pong, which section 5.5.3 allows.
    pub fn expect_pong(&mut self, token: [u8; PING_TOKEN_LEN]) {
        self.ping_token = Some(token);
    }

    /// True once after the pong answering the proxy's ping was dropped.
    pub fn take_proxy_pong(&mut self) -> bool {
        std::mem::take(&mut self.proxy_pong)
    }

    /// Data messages whose final frame's header has passed.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Frame headers accepted, control frames and the proxy's pong
    /// included. The timers go by [`bytes`](Self::bytes), which also
    /// move while a long frame's payload streams.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes of accepted frames (headers and payload) plus bytes discarded
    /// after a close; the bytes of a frame that broke a rule are not
    /// counted.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The code of the close frame that passed in this direction
    /// ([`CloseCode::NO_STATUS`] for an empty one), once all of it has been
    /// forwarded or made pending; from then on input is discarded.
    pub fn close_code(&self) -> Option<CloseCode> {
        self.close
    }

    /// Forwards as many whole or partial frames from the start of `input`
    /// as it can without holding anything.
    fn forward(&mut self, input: &[u8]) -> Step {
        let mut pos = 0;
        while pos < input.len() {
            match self.phase {
                Phase::Payload { remaining, close } => {
                    let avail = input.len() - pos;
                    let take = if remaining < avail as u64 {
                        remaining as usize
                    } else {
                        avail
                    };
                    let mut close = close;
                    if let Some(tap) = &mut close {
                        tap.observe(&input[pos..pos + take]);
                    }
                    pos += take;
                    let remaining = remaining - take as u64;
                    if remaining == 0 {
                        self.end_frame(close);
                    } else {
                        self.phase = Phase::Payload { remaining, close };
                    }
                }
                Phase::Header => {
                    let rest = &input[pos..];
                    // A frame that needs holding or breaks a rule is left to
                    // the next call, so that this one can forward what came
                    // before it.
                    let header = match parse_header(rest) {
                        Ok(Some(header)) => header,
                        Ok(None) if pos == 0 => return self.push_split_header(input),
                        Err(e) if pos == 0 => return self.fail(Violation::Malformed(e)),
                        Ok(None) | Err(_) => break,
                    };
                    if let Err(v) = self.check(&header) {
                        if pos == 0 {
                            return self.fail(v);
                        }
                        break;
                    }
                    if self.is_pong_candidate(&header) {
                        let total = header.header_len() + PING_TOKEN_LEN;
                        // Whole and someone else's: it passes like any
                        // frame. The proxy's own, or one not yet whole,
                        // cannot share a step with the frames before it.
                        match rest.get(..total) {
                            Some(frame) if !self.is_proxy_pong(frame, header.mask) => {}
                            _ if pos > 0 => break,
                            Some(_) => {
                                self.accept(&header);
                                self.drop_proxy_pong();
                                self.bytes += total as u64;
                                return Step::Consumed(total);
                            }
                            None => {
                                self.accept(&header);
                                self.hold[..rest.len()].copy_from_slice(rest);
                                self.held = rest.len() as u8;
                                self.bytes += rest.len() as u64;
                                self.phase = Phase::Holding {
                                    total: total as u8,
                                    mask: header.mask,
                                    what: Held::Pong,
                                };
                                return Step::Consumed(rest.len());
                            }
                        }
                    }
                    if let Some(what) = close_code_hold(&header) {
                        let total = header.header_len() + 2;
                        match rest.get(..total) {
                            Some(start) => {
                                if let Err(v) = check_close_code(start, header.mask) {
                                    if pos == 0 {
                                        return self.fail(v);
                                    }
                                    break;
                                }
                            }
                            None if pos > 0 => break,
                            None => {
                                self.accept(&header);
                                self.hold[..rest.len()].copy_from_slice(rest);
                                self.held = rest.len() as u8;
                                self.bytes += rest.len() as u64;
                                self.phase = Phase::Holding {
                                    total: total as u8,
                                    mask: header.mask,
                                    what,
                                };
                                return Step::Consumed(rest.len());
                            }
                        }
                    }
                    self.accept(&header);
                    pos += header.header_len();
                    self.start_payload(&header);
                }
                Phase::Closed | Phase::Holding { .. } | Phase::Failed(_) => break,
            }
        }
        self.bytes += pos as u64;
        Step::Forward(pos)
    }

    /// Collects a header that straddles reads; once whole and valid, it
    /// becomes pending (or starts a held pong).
    fn push_split_header(&mut self, input: &[u8]) -> Step {
        let (header, consumed) = match self.parser.push(input) {
            Ok(HeaderProgress::Partial) => return Step::Consumed(input.len()),
            Ok(HeaderProgress::Complete { header, consumed }) => (header, consumed),
            Err(e) => return self.fail(Violation::Malformed(e)),
        };
        if let Err(v) = self.check(&header) {
            return self.fail(v);
        }
        let head = self.parser.bytes();
        let len = head.len();
        self.hold[..len].copy_from_slice(head);
        self.parser.reset();
        self.accept(&header);
        self.bytes += len as u64;
        if self.is_pong_candidate(&header) {
            self.held = len as u8;
            self.phase = Phase::Holding {
                total: (len + PING_TOKEN_LEN) as u8,
                mask: header.mask,
                what: Held::Pong,
            };
        } else if let Some(what) = close_code_hold(&header) {
            self.held = len as u8;
            self.phase = Phase::Holding {
                total: (len + 2) as u8,
                mask: header.mask,
                what,
            };
        } else {
            self.pending_to = len as u8;
            self.start_payload(&header);
        }
        Step::Consumed(consumed)
    }

    /// Adds bytes to `hold`. A whole pong is dropped if it is the proxy's
    /// and made pending otherwise; a close frame's start is made pending,
    /// and the rest of its payload streams, if its code is allowed.
    fn fill_held(&mut self, input: &[u8], total: u8, mask: Option<[u8; 4]>, what: Held) -> Step {
        let at = usize::from(self.held);
        let n = (usize::from(total) - at).min(input.len());
        self.hold[at..at + n].copy_from_slice(&input[..n]);
        self.held += n as u8;
        self.bytes += n as u64;
        if self.held < total {
            return Step::Consumed(n);
        }
        self.held = 0;
        let start = &self.hold[..usize::from(total)];
        match what {
            Held::Pong => {
                if self.is_proxy_pong(start, mask) {
                    self.drop_proxy_pong();
                } else {
                    self.pending_to = total;
                }
                self.phase = Phase::Header;
            }
            Held::CloseCode { payload_len } => {
                if let Err(v) = check_close_code(start, mask) {
                    // The frame broke a rule: none of it counts.
                    self.bytes -= u64::from(total);
                    self.frames -= 1;
                    return self.fail(v);
                }
                let code = [start[start.len() - 2], start[start.len() - 1]];
                self.pending_to = total;
                let tap = CloseTap {
                    mask,
                    code,
                    seen: 2,
                };
                match payload_len - 2 {
                    0 => self.end_frame(Some(tap)),
                    remaining => {
                        self.phase = Phase::Payload {
                            remaining: u64::from(remaining),
                            close: Some(tap),
                        }
                    }
                }
            }
        }
        Step::Consumed(n)
    }

    /// The rules of the contract's "Behaviour on the wire", checked on a
    /// whole header before any byte of its frame is written.
    fn check(&self, h: &FrameHeader) -> Result<(), Violation> {
        match (self.dir, h.mask) {
            (Direction::ClientToBackend, None) => return Err(Violation::Unmasked),
            (Direction::BackendToClient, Some(_)) => return Err(Violation::Masked),
            (Direction::ClientToBackend, Some(_)) | (Direction::BackendToClient, None) => {}
        }
        let starts_message = match h.opcode {
            Opcode::Reserved(_) => return Err(Violation::ReservedOpcode),
            Opcode::Close | Opcode::Ping | Opcode::Pong => {
                if !h.fin {
                    return Err(Violation::FragmentedControl);
                }
                if h.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(Violation::ControlTooLong);
                }
                if h.opcode == Opcode::Close && h.payload_len == 1 {
                    return Err(Violation::CloseOneByte);
                }
                false
            }
            Opcode::Text | Opcode::Binary => {
                if self.message.is_some() {
                    return Err(Violation::MessageNotFinished);
                }
                true
            }
            Opcode::Continuation => {
                if self.message.is_none() {
                    return Err(Violation::ContinuationWithoutStart);
                }
                false
            }
        };
        if h.rsv != 0 {
            if !self.rules.deflate || h.rsv & !RSV1 != 0 {
                return Err(Violation::ReservedBits);
            }
            if !starts_message {
                return Err(Violation::MisplacedRsv1);
            }
        }
        // The size limits are for data: control frames have their own
        // 125-byte rule above, and a route with a small limit must still
        // let pings and closes through.
        if !h.opcode.is_control() {
            if h.payload_len > self.rules.max_frame_bytes {
                return Err(Violation::FrameTooBig);
            }
            let total = self.message.unwrap_or(0).saturating_add(h.payload_len);
            if total > self.rules.max_message_bytes {
                return Err(Violation::MessageTooBig);
            }
        }
        Ok(())
    }

    /// Counts a checked header and tracks the message it belongs to.
    fn accept(&mut self, h: &FrameHeader) {
        self.frames += 1;
        match h.opcode {
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                if h.fin {
                    self.message = None;
                    self.messages += 1;
                } else {
                    let so_far = self.message.unwrap_or(0);
                    self.message = Some(so_far.saturating_add(h.payload_len));
                }
            }
            Opcode::Close | Opcode::Ping | Opcode::Pong | Opcode::Reserved(_) => {}
        }
    }

    fn start_payload(&mut self, h: &FrameHeader) {
        let close = (h.opcode == Opcode::Close).then_some(CloseTap {
            mask: h.mask,
            code: [0; 2],
            seen: 0,
        });
        if h.payload_len == 0 {
            self.end_frame(close);
        } else {
            self.phase = Phase::Payload {
                remaining: h.payload_len,
                close,
            };
        }
    }

    fn end_frame(&mut self, close: Option<CloseTap>) {
        self.phase = match close {
            Some(tap) => {
                self.close = Some(tap.code());
                Phase::Closed
            }
            None => Phase::Header,
        };
    }

    /// A pong of the token's length while a token is awaited must be seen
    /// whole before it can be forwarded or dropped.
    fn is_pong_candidate(&self, h: &FrameHeader) -> bool {
        h.opcode == Opcode::Pong
            && self.ping_token.is_some()
            && h.payload_len == PING_TOKEN_LEN as u64
    }

    /// `frame` is a whole pong candidate, header included.
    fn is_proxy_pong(&self, frame: &[u8], mask: Option<[u8; 4]>) -> bool {
        let Some(token) = self.ping_token else {
            return false;
        };
        let mut payload = [0u8; PING_TOKEN_LEN];
        payload.copy_from_slice(&frame[frame.len() - PING_TOKEN_LEN..]);
        if let Some(key) = mask {
            apply_mask(&mut payload, key, 0);
        }
        payload == token
    }

    fn drop_proxy_pong(&mut self) {
        self.ping_token = None;
        self.proxy_pong = true;
    }

    fn fail(&mut self, v: Violation) -> Step {
        self.phase = Phase::Failed(v);
        Step::Violation(v)
    }
}

/// A close frame with a status code must have the code checked before any
/// of it is written.
fn close_code_hold(h: &FrameHeader) -> Option<Held> {
    (h.opcode == Opcode::Close && h.payload_len >= 2).then_some(Held::CloseCode {
        payload_len: h.payload_len as u8,
    })
}

/// Checks the status code in the last two bytes of `start`, a close
/// frame's header and the first two bytes of its payload.
fn check_close_code(start: &[u8], mask: Option<[u8; 4]>) -> Result<(), Violation> {
    let mut code = [start[start.len() - 2], start[start.len() - 1]];
    if let Some(key) = mask {
        apply_mask(&mut code, key, 0);
    }
    if CloseCode(u16::from_be_bytes(code)).is_allowed_on_wire() {
        Ok(())
    } else {
        Err(Violation::CloseCodeNotAllowed)
    }
}

#[cfg(test)]
mod tests;
