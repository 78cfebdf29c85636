//! A minimal WebSocket frame codec (RFC 6455 section 5), sans-io.
//!
//! Why not tungstenite: the generator shares one core with the echo backend,
//! so every cycle it spends is a cycle the backend does not get. tungstenite
//! buffers each whole message, copies it into an owned `Vec`, and masks
//! byte by byte; here a frame is written straight into the connection's
//! output buffer, masked eight bytes at a time, and received payload is
//! handed out in place as it arrives, so the receive path neither allocates
//! nor waits for a whole message. The same decoder serves the echo backend
//! (masked input, unmasked in place) and the client (unmasked input).

/// Frame opcodes this codec knows (RFC 6455 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continues a fragmented data message.
    Continuation,
    /// 0x1: UTF-8 text data.
    Text,
    /// 0x2: binary data.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// Which end of the connection the decoder sits at; it decides whether
/// incoming frames must be masked (section 5.1: client frames are, server
/// frames are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Decodes frames sent by a server.
    Client,
    /// Decodes frames sent by a client.
    Server,
}

/// Why a byte stream is not a valid frame sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// Masking does not match the sender's role (section 5.1).
    Masking,
    /// Opcode 0x3-0x7 or 0xB-0xF (section 5.2).
    ReservedOpcode,
    /// RSV1-3 set without a negotiated extension (section 5.2).
    ReservedBits,
    /// A control frame over 125 bytes or without FIN (section 5.5).
    BadControlFrame,
    /// A continuation with no message open, or a new message while one is
    /// open (section 5.4).
    BadFragmentation,
    /// A 64-bit length with the most significant bit set (section 5.2).
    BadLength,
}

/// What the decoder found, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A data or continuation frame starts; its payload follows as `Data`.
    FrameStart {
        /// The frame's own opcode (`Continuation` for later fragments).
        opcode: OpCode,
        /// Whether this frame ends its message.
        fin: bool,
        /// Payload length.
        len: u64,
    },
    /// Payload bytes of the current data frame, unmasked.
    Data(&'a [u8]),
    /// The current data frame is complete; `fin` says the message is too.
    FrameEnd {
        /// Whether the message is complete.
        fin: bool,
    },
    /// A whole control frame, payload unmasked.
    Control {
        /// `Close`, `Ping` or `Pong`.
        opcode: OpCode,
        /// At most 125 bytes.
        payload: &'a [u8],
    },
}

/// Where the decoder is between calls.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Expecting a frame header.
    Header,
    /// Inside a data frame's payload.
    Payload {
        remaining: u64,
        fin: bool,
        mask: Option<[u8; 4]>,
        /// Offset of the next payload byte, for the mask phase.
        offset: u64,
    },
}

/// A streaming frame decoder. Feed it bytes with [`Decoder::decode`]; it
/// consumes what it can and tells the caller how much to keep.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    state: State,
    in_message: bool,
}

impl Decoder {
    /// A decoder for frames arriving at `role`.
    pub fn new(role: Role) -> Decoder {
        Decoder {
            role,
            state: State::Header,
            in_message: false,
        }
    }

    /// Decodes as much of `buf` as possible, unmasking in place, and calls
    /// `on` for each event. Returns how many bytes were consumed; the rest
    /// (an incomplete header or control frame) must be offered again with
    /// more bytes appended. Data payload is handed out as soon as it is
    /// here, so callers never need room for more than a header plus a
    /// control frame (`MAX_PENDING` bytes).
    pub fn decode(
        &mut self,
        buf: &mut [u8],
        on: &mut impl FnMut(Event<'_>),
    ) -> Result<usize, ProtocolError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Payload {
                    remaining,
                    fin,
                    mask,
                    offset,
                } => {
                    let avail = buf.len() - pos;
                    let take = remaining.min(avail as u64) as usize;
                    if take > 0 {
                        let chunk = &mut buf[pos..pos + take];
                        if let Some(mask) = mask {
                            xor_in_place(chunk, mask, offset as usize);
                        }
                        on(Event::Data(chunk));
                        pos += take;
                    }
                    let remaining = remaining - take as u64;
                    if remaining == 0 {
                        self.state = State::Header;
                        if fin {
                            self.in_message = false;
                        }
                        on(Event::FrameEnd { fin });
                    } else {
                        self.state = State::Payload {
                            remaining,
                            fin,
                            mask,
                            offset: offset + take as u64,
                        };
                        return Ok(pos);
                    }
                }
                State::Header => {
                    let Some(header) = parse_header(&buf[pos..])? else {
                        return Ok(pos);
                    };
                    if header.masked != (self.role == Role::Server) {
                        return Err(ProtocolError::Masking);
                    }
                    if header.opcode.is_control() {
                        if !header.fin || header.len > 125 {
                            return Err(ProtocolError::BadControlFrame);
                        }
                        let total = header.header_len + header.len as usize;
                        if buf.len() - pos < total {
                            return Ok(pos);
                        }
                        let payload = &mut buf[pos + header.header_len..pos + total];
                        if let Some(mask) = header.mask {
                            xor_in_place(payload, mask, 0);
                        }
                        on(Event::Control {
                            opcode: header.opcode,
                            payload,
                        });
                        pos += total;
                        continue;
                    }
                    let continuation = header.opcode == OpCode::Continuation;
                    if continuation != self.in_message {
                        return Err(ProtocolError::BadFragmentation);
                    }
                    self.in_message = true;
                    pos += header.header_len;
                    on(Event::FrameStart {
                        opcode: header.opcode,
                        fin: header.fin,
                        len: header.len,
                    });
                    self.state = State::Payload {
                        remaining: header.len,
                        fin: header.fin,
                        mask: header.mask,
                        offset: 0,
                    };
                }
            }
        }
    }
}

/// The most bytes [`Decoder::decode`] can leave unconsumed: a 14-byte header
/// plus a 125-byte control payload.
pub const MAX_PENDING: usize = 14 + 125;

struct Header {
    fin: bool,
    opcode: OpCode,
    masked: bool,
    mask: Option<[u8; 4]>,
    len: u64,
    header_len: usize,
}

/// Parses one frame header, or returns `None` when more bytes are needed.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(ProtocolError::ReservedOpcode)?;
    let masked = b1 & 0x80 != 0;
    let (len, mut header_len) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(ProtocolError::BadLength);
            }
            (len, 10)
        }
        short => (u64::from(short), 2),
    };
    let mask = if masked {
        let Some(b) = buf.get(header_len..header_len + 4) else {
            return Ok(None);
        };
        header_len += 4;
        Some([b[0], b[1], b[2], b[3]])
    } else {
        None
    };
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode,
        masked,
        mask,
        len,
        header_len,
    }))
}

/// Appends a frame header; the payload (masked by the caller when `mask` is
/// set) must follow.
pub fn put_header(out: &mut Vec<u8>, fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, len: u64) {
    let b0 = if fin { 0x80 } else { 0 } | opcode.bits();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.extend_from_slice(&[b0, mask_bit | len as u8]);
    } else if len <= u64::from(u16::MAX) {
        out.extend_from_slice(&[b0, mask_bit | 126]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[b0, mask_bit | 127]);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

/// Appends a whole single-frame message or control frame, masking it when
/// `mask` is set.
pub fn put_frame(out: &mut Vec<u8>, opcode: OpCode, mask: Option<[u8; 4]>, payload: &[u8]) {
    put_header(out, true, opcode, mask, payload.len() as u64);
    match mask {
        Some(mask) => put_masked(out, payload, mask, 0),
        None => out.extend_from_slice(payload),
    }
}

/// Appends `src` XORed with `mask`, where `src[0]` sits at payload offset
/// `phase` (the mask repeats every four bytes of payload, section 5.3).
pub fn put_masked(out: &mut Vec<u8>, src: &[u8], mask: [u8; 4], phase: usize) {
    let start = out.len();
    out.extend_from_slice(src);
    xor_in_place(&mut out[start..], mask, phase);
}

/// XORs `buf` with `mask` in place, `buf[0]` being at payload offset `phase`.
/// Works on eight bytes at a time, which the compiler vectorises.
pub fn xor_in_place(buf: &mut [u8], mask: [u8; 4], phase: usize) {
    let mut m = [0u8; 8];
    for (i, b) in m.iter_mut().enumerate() {
        *b = mask[(phase + i) % 4];
    }
    let wide = u64::from_ne_bytes(m);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    // Whole chunks keep the phase (8 is a multiple of 4), so the tail starts
    // where `m` starts.
    for (b, k) in chunks.into_remainder().iter_mut().zip(m) {
        *b ^= k;
    }
}

/// The close status code in a close frame's payload, if it has one.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    match payload {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}
