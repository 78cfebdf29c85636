//! WebSocket frame headers (RFC 6455 section 5.2): parsing and building.
//!
//! The relay never needs a whole frame in memory: it reads a header, checks
//! it, and lets the payload stream past. This module therefore deals only in
//! headers and in the small control frames (at most 125 payload bytes, RFC
//! 6455 section 5.5) that the proxy reads or writes itself. Nothing here
//! allocates or does I/O.

use crate::close::CloseCode;

/// The longest frame header: 2 fixed bytes, an 8-byte extended length and a
/// 4-byte masking key (RFC 6455 section 5.2).
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload a control frame may carry (RFC 6455 section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest control frame: a 7-bit length always suffices for 125 bytes,
/// so 2 header bytes, a masking key and the payload.
pub const MAX_CONTROL_FRAME_LEN: usize = 2 + 4 + MAX_CONTROL_PAYLOAD;

/// The longest close reason: the payload less the 2-byte status code
/// (RFC 6455 section 5.5.1).
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// RSV1 in [`FrameHeader::rsv`]; permessage-deflate's "compressed" bit
/// (RFC 7692 section 6).
pub const RSV1: u8 = 0b100;
/// RSV2 in [`FrameHeader::rsv`]; no extension this proxy knows uses it.
pub const RSV2: u8 = 0b010;
/// RSV3 in [`FrameHeader::rsv`]; no extension this proxy knows uses it.
pub const RSV3: u8 = 0b001;

/// A frame's opcode (RFC 6455 section 5.2, section 11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// 0x0: a further fragment of the open message (section 5.4).
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close (section 5.5.1).
    Close,
    /// 0x9: ping (section 5.5.2).
    Ping,
    /// 0xA: pong (section 5.5.3).
    Pong,
    /// 0x3-0x7 (data) or 0xB-0xF (control), reserved for future use; holds
    /// the 4-bit value.
    Reserved(u8),
}

impl Opcode {
    /// Decodes the low 4 bits of `bits`, the opcode field of the first
    /// header byte.
    pub fn from_bits(bits: u8) -> Opcode {
        match bits & 0x0F {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            n => Opcode::Reserved(n),
        }
    }

    /// The 4-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
            Opcode::Reserved(n) => n & 0x0F,
        }
    }

    /// Control frames are those whose opcode has its high bit set,
    /// reserved ones included (RFC 6455 section 5.5).
    pub fn is_control(self) -> bool {
        self.bits() & 0x08 != 0
    }
}

/// A parsed frame header (RFC 6455 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of its message.
    pub fin: bool,
    /// RSV1..RSV3 as the low 3 bits, RSV1 being [`RSV1`] (`0b100`).
    pub rsv: u8,
    /// The opcode.
    pub opcode: Opcode,
    /// The masking key, present exactly when the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length; below 2^63 in any header that parsed.
    pub payload_len: u64,
}

impl FrameHeader {
    /// The length of this header on the wire, using the minimal length
    /// encoding that section 5.2 requires.
    pub fn header_len(&self) -> usize {
        let mask = if self.mask.is_some() { 4 } else { 0 };
        2 + extended_len_bytes(self.payload_len) + mask
    }

    /// Writes this header into `out` with the minimal length encoding and
    /// returns the written part. A `payload_len` of 2^63 or more cannot be
    /// sent (section 5.2) and comes out as a header that fails to parse.
    pub fn encode<'a>(&self, out: &'a mut [u8; MAX_HEADER_LEN]) -> &'a [u8] {
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x07) << 4) | self.opcode.bits();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = 2;
        match extended_len_bytes(self.payload_len) {
            0 => out[1] = mask_bit | self.payload_len as u8,
            2 => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
                len = 4;
            }
            _ => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&self.payload_len.to_be_bytes());
                len = 10;
            }
        }
        if let Some(key) = self.mask {
            out[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        &out[..len]
    }
}

/// A header that can never be valid, whatever bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum HeaderError {
    /// A 16-bit length below 126 or a 64-bit length below 65536: section
    /// 5.2 requires "the minimal number of bytes".
    #[error("payload length not in its minimal encoding")]
    NonMinimalLength,
    /// A 64-bit length with its most significant bit set (section 5.2).
    #[error("64-bit payload length with the most significant bit set")]
    LengthOverflow,
}

/// How many extended-length bytes section 5.2 uses for `payload_len`.
fn extended_len_bytes(payload_len: u64) -> usize {
    match payload_len {
        0..=125 => 0,
        126..=0xFFFF => 2,
        _ => 8,
    }
}

/// The whole header length announced by the second header byte.
fn header_len_from_second_byte(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// Parses a header at the start of `input` without copying it.
///
/// `Ok(None)`: `input` holds only part of the header. An invalid length is
/// reported as soon as its bytes are present, before the masking key, so
/// that the answer never depends on how the header was split across reads.
pub fn parse_header(input: &[u8]) -> Result<Option<FrameHeader>, HeaderError> {
    let (b0, b1) = match input {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    let (payload_len, key_at) = match b1 & 0x7F {
        126 => {
            let Some(&[x, y]) = input.get(2..4) else {
                return Ok(None);
            };
            let n = u64::from(u16::from_be_bytes([x, y]));
            if n < 126 {
                return Err(HeaderError::NonMinimalLength);
            }
            (n, 4)
        }
        127 => {
            let Some(bytes) = input.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            let n = u64::from_be_bytes(be);
            if n >> 63 != 0 {
                return Err(HeaderError::LengthOverflow);
            }
            if n <= 0xFFFF {
                return Err(HeaderError::NonMinimalLength);
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let Some(&[a, b, c, d]) = input.get(key_at..key_at + 4) else {
            return Ok(None);
        };
        Some([a, b, c, d])
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x07,
        opcode: Opcode::from_bits(b0),
        mask,
        payload_len,
    }))
}

/// What [`HeaderParser::push`] made of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProgress {
    /// All of the input was taken and the header is still incomplete.
    Partial,
    /// The header is complete; `consumed` bytes of this input belonged to
    /// it and the rest (payload, further frames) was not touched.
    Complete {
        /// The parsed header.
        header: FrameHeader,
        /// How many bytes of the last input were header bytes.
        consumed: usize,
    },
}

/// Collects a header that arrives split across reads, down to one byte at
/// a time. Holds at most [`MAX_HEADER_LEN`] bytes and never takes a byte
/// past the end of the header.
#[derive(Debug, Clone, Default)]
pub struct HeaderParser {
    buf: [u8; MAX_HEADER_LEN],
    len: u8,
    complete: bool,
}

impl HeaderParser {
    /// An empty parser.
    pub const fn new() -> Self {
        HeaderParser {
            buf: [0; MAX_HEADER_LEN],
            len: 0,
            complete: false,
        }
    }

    /// Takes header bytes from `input`. After `Complete` the next call
    /// starts a new header. An error is final for the stream: the bytes
    /// after a broken header cannot be framed.
    pub fn push(&mut self, input: &[u8]) -> Result<HeaderProgress, HeaderError> {
        if self.complete {
            self.reset();
        }
        let mut taken = 0;
        loop {
            let need = self.needed();
            let n = (need - usize::from(self.len)).min(input.len() - taken);
            let at = usize::from(self.len);
            self.buf[at..at + n].copy_from_slice(&input[taken..taken + n]);
            self.len += n as u8;
            taken += n;
            // The first two bytes announce the full length; go round once
            // more to take the rest if the input has it.
            if n == 0 || usize::from(self.len) == self.needed() {
                break;
            }
        }
        match parse_header(self.bytes())? {
            Some(header) => {
                self.complete = true;
                Ok(HeaderProgress::Complete {
                    header,
                    consumed: taken,
                })
            }
            None => Ok(HeaderProgress::Partial),
        }
    }

    /// The header bytes taken so far; after `Complete`, the whole header
    /// exactly as received, until the next `push` or `reset`.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// True when no byte of a header is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets any held bytes.
    pub fn reset(&mut self) {
        self.len = 0;
        self.complete = false;
    }

    /// The header length the held bytes call for so far.
    fn needed(&self) -> usize {
        if self.len < 2 {
            2
        } else {
            header_len_from_second_byte(self.buf[1])
        }
    }
}

/// XORs `payload` with the masking key as section 5.3 describes, `offset`
/// being the position of `payload[0]` within the frame's payload. Masking
/// twice with the same key and offset restores the input.
pub fn apply_mask(payload: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= key[offset.wrapping_add(i) & 3];
    }
}

/// A control frame payload over [`MAX_CONTROL_PAYLOAD`] bytes was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("control frame payload of {0} bytes is over the 125-byte limit")]
pub struct PayloadTooLong(pub usize);

/// Builds a close frame (RFC 6455 section 5.5.1) into `out`.
///
/// `reason` is cut to [`MAX_CLOSE_REASON`] bytes at a character boundary,
/// so that it stays valid UTF-8 as section 5.5.1 requires.
/// [`CloseCode::NO_STATUS`] means "no code", so it builds an empty close
/// body and `reason` is left out. Frames towards a backend need a `mask`
/// (section 5.3), frames towards a client must have none.
pub fn close_frame<'a>(
    code: CloseCode,
    reason: &str,
    mask: Option<[u8; 4]>,
    out: &'a mut [u8; MAX_CONTROL_FRAME_LEN],
) -> &'a [u8] {
    if code == CloseCode::NO_STATUS {
        return control_frame(Opcode::Close, &[], &[], mask, out);
    }
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let code = code.0.to_be_bytes();
    control_frame(Opcode::Close, &code, &reason.as_bytes()[..end], mask, out)
}

/// Builds a ping frame (RFC 6455 section 5.5.2) into `out`.
pub fn ping_frame<'a>(
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &'a mut [u8; MAX_CONTROL_FRAME_LEN],
) -> Result<&'a [u8], PayloadTooLong> {
    if payload.len() > MAX_CONTROL_PAYLOAD {
        return Err(PayloadTooLong(payload.len()));
    }
    Ok(control_frame(Opcode::Ping, payload, &[], mask, out))
}

/// Builds a pong frame (RFC 6455 section 5.5.3) into `out`.
pub fn pong_frame<'a>(
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &'a mut [u8; MAX_CONTROL_FRAME_LEN],
) -> Result<&'a [u8], PayloadTooLong> {
    if payload.len() > MAX_CONTROL_PAYLOAD {
        return Err(PayloadTooLong(payload.len()));
    }
    Ok(control_frame(Opcode::Pong, payload, &[], mask, out))
}

/// Writes a final control frame whose payload is `a` then `b`; the caller
/// has checked that they fit in [`MAX_CONTROL_PAYLOAD`].
fn control_frame<'a>(
    opcode: Opcode,
    a: &[u8],
    b: &[u8],
    mask: Option<[u8; 4]>,
    out: &'a mut [u8; MAX_CONTROL_FRAME_LEN],
) -> &'a [u8] {
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode,
        mask,
        payload_len: (a.len() + b.len()) as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let head = header.encode(&mut head);
    let start = head.len();
    let end = start + a.len() + b.len();
    out[..start].copy_from_slice(head);
    out[start..start + a.len()].copy_from_slice(a);
    out[start + a.len()..end].copy_from_slice(b);
    if let Some(key) = mask {
        apply_mask(&mut out[start..end], key, 0);
    }
    &out[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn header(opcode: Opcode, payload_len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask,
            payload_len,
        }
    }

    /// Feeds `bytes` to a fresh parser in the given pieces.
    fn parse_in_pieces(
        bytes: &[u8],
        cuts: &[usize],
    ) -> Result<Option<(FrameHeader, usize)>, HeaderError> {
        let mut parser = HeaderParser::new();
        let mut start = 0;
        let mut total = 0;
        for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
            match parser.push(&bytes[start..end])? {
                HeaderProgress::Partial => total += end - start,
                HeaderProgress::Complete { header, consumed } => {
                    assert_eq!(parser.bytes(), &bytes[..total + consumed]);
                    return Ok(Some((header, total + consumed)));
                }
            }
            start = end;
        }
        Ok(None)
    }

    #[test]
    fn opcodes_round_trip_and_classify() {
        let expected = [
            (0x0, Opcode::Continuation, false),
            (0x1, Opcode::Text, false),
            (0x2, Opcode::Binary, false),
            (0x8, Opcode::Close, true),
            (0x9, Opcode::Ping, true),
            (0xA, Opcode::Pong, true),
        ];
        for bits in 0u8..16 {
            let op = Opcode::from_bits(bits);
            assert_eq!(op.bits(), bits);
            assert_eq!(op.is_control(), bits >= 8);
            match expected.iter().find(|e| e.0 == bits) {
                Some(&(_, named, control)) => {
                    assert_eq!(op, named);
                    assert_eq!(op.is_control(), control);
                }
                None => assert_eq!(op, Opcode::Reserved(bits)),
            }
        }
        // The high nibble of the first byte (FIN, RSV) is not the opcode.
        assert_eq!(Opcode::from_bits(0xF1), Opcode::Text);
    }

    #[test]
    fn seven_bit_lengths() {
        assert_eq!(
            parse_header(&[0x82, 0x00]),
            Ok(Some(header(Opcode::Binary, 0, None)))
        );
        assert_eq!(
            parse_header(&[0x81, 0x7d]),
            Ok(Some(header(Opcode::Text, 125, None)))
        );
        assert_eq!(header(Opcode::Text, 125, None).header_len(), 2);
    }

    #[test]
    fn sixteen_bit_lengths() {
        let h = parse_header(&[0x82, 0x7e, 0x00, 0x7e]).unwrap().unwrap();
        assert_eq!(h.payload_len, 126);
        assert_eq!(h.header_len(), 4);
        let h = parse_header(&[0x82, 0x7e, 0xff, 0xff]).unwrap().unwrap();
        assert_eq!(h.payload_len, 65535);
        assert_eq!(h.header_len(), 4);
    }

    #[test]
    fn sixty_four_bit_lengths() {
        let h = parse_header(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!(h.payload_len, 65536);
        assert_eq!(h.header_len(), 10);
        let max = [0x82, 0x7f, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let h = parse_header(&max).unwrap().unwrap();
        assert_eq!(h.payload_len, (1 << 63) - 1);
    }

    #[test]
    fn non_minimal_lengths_are_rejected() {
        let cases: [&[u8]; 5] = [
            &[0x82, 0x7e, 0x00, 0x00],
            &[0x82, 0x7e, 0x00, 0x7d],
            &[0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0x7d],
            &[0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
        ];
        for bytes in cases {
            assert_eq!(parse_header(bytes), Err(HeaderError::NonMinimalLength));
        }
    }

    #[test]
    fn lengths_of_two_to_the_63_or_more_are_rejected() {
        let top = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_header(&top), Err(HeaderError::LengthOverflow));
        let all = [0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(parse_header(&all), Err(HeaderError::LengthOverflow));
    }

    #[test]
    fn length_errors_show_before_the_masking_key() {
        // MASK bit set, key absent: the length is already known to be bad.
        assert_eq!(
            parse_header(&[0x82, 0xfe, 0x00, 0x05]),
            Err(HeaderError::NonMinimalLength)
        );
    }

    #[test]
    fn masked_and_unmasked_headers() {
        // The masked "Hello" of RFC 6455 section 5.7.
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let h = parse_header(&masked).unwrap().unwrap();
        assert_eq!(h, header(Opcode::Text, 5, Some(KEY)));
        assert_eq!(h.header_len(), 6);
        let mut payload = masked[6..].to_vec();
        apply_mask(&mut payload, KEY, 0);
        assert_eq!(&payload, b"Hello");

        let unmasked = [0x81, 0x05, b'H', b'e'];
        let h = parse_header(&unmasked).unwrap().unwrap();
        assert_eq!(h.mask, None);
        assert_eq!(h.header_len(), 2);

        let big = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        let h = parse_header(&big).unwrap().unwrap();
        assert_eq!(h.mask, Some([1, 2, 3, 4]));
        assert_eq!(h.header_len(), MAX_HEADER_LEN);
    }

    #[test]
    fn fin_and_rsv_bits() {
        let h = parse_header(&[0x70, 0x00]).unwrap().unwrap();
        assert!(!h.fin);
        assert_eq!(h.rsv, RSV1 | RSV2 | RSV3);
        assert_eq!(h.opcode, Opcode::Continuation);
        let h = parse_header(&[0xc1, 0x00]).unwrap().unwrap();
        assert!(h.fin);
        assert_eq!(h.rsv, RSV1);
        let h = parse_header(&[0x9a, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, RSV3);
        assert_eq!(h.opcode, Opcode::Pong);
    }

    #[test]
    fn every_opcode_parses() {
        for bits in 0u8..16 {
            let h = parse_header(&[0x80 | bits, 0x00]).unwrap().unwrap();
            assert_eq!(h.opcode, Opcode::from_bits(bits));
        }
    }

    #[test]
    fn encode_round_trips_at_every_length_boundary() {
        let lengths = [
            0,
            1,
            125,
            126,
            127,
            65535,
            65536,
            u64::from(u32::MAX),
            (1 << 63) - 1,
        ];
        for len in lengths {
            for mask in [None, Some(KEY)] {
                for (fin, rsv, opcode) in [
                    (true, 0, Opcode::Binary),
                    (false, RSV1, Opcode::Text),
                    (true, RSV2 | RSV3, Opcode::Continuation),
                    (true, 0, Opcode::Reserved(0xB)),
                ] {
                    let h = FrameHeader {
                        fin,
                        rsv,
                        opcode,
                        mask,
                        payload_len: len,
                    };
                    let mut buf = [0; MAX_HEADER_LEN];
                    let bytes = h.encode(&mut buf);
                    assert_eq!(bytes.len(), h.header_len());
                    assert_eq!(parse_header(bytes), Ok(Some(h)));
                    for short in 0..bytes.len() {
                        assert_eq!(parse_header(&bytes[..short]), Ok(None), "len {len}");
                    }
                }
            }
        }
    }

    #[test]
    fn header_split_at_every_byte() {
        let headers = [
            header(Opcode::Text, 5, None),
            header(Opcode::Binary, 5, Some(KEY)),
            header(Opcode::Binary, 300, None),
            header(Opcode::Binary, 300, Some(KEY)),
            header(Opcode::Binary, 70_000, None),
            header(Opcode::Binary, 70_000, Some(KEY)),
        ];
        for h in headers {
            let mut buf = [0; MAX_HEADER_LEN];
            let mut bytes = h.encode(&mut buf).to_vec();
            let hlen = bytes.len();
            // Trailing payload must be left alone by the parser.
            bytes.extend_from_slice(b"payload");
            for cut in 1..bytes.len() {
                assert_eq!(parse_in_pieces(&bytes, &[cut]), Ok(Some((h, hlen))));
            }
            let every: Vec<usize> = (1..hlen).collect();
            assert_eq!(parse_in_pieces(&bytes, &every), Ok(Some((h, hlen))));
            assert_eq!(parse_in_pieces(&bytes[..hlen - 1], &[]), Ok(None));
        }
    }

    #[test]
    fn split_errors_match_whole_errors() {
        let cases: [&[u8]; 3] = [
            &[0x82, 0x7e, 0x00, 0x10, 1, 2, 3, 4],
            &[0x82, 0xff, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 1, 2, 3, 4],
            &[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0],
        ];
        for bytes in cases {
            let whole = parse_header(bytes).unwrap_err();
            for cut in 1..bytes.len() {
                assert_eq!(parse_in_pieces(bytes, &[cut]), Err(whole));
            }
        }
    }

    #[test]
    fn parser_starts_over_after_a_complete_header() {
        let mut parser = HeaderParser::new();
        let two = [0x89, 0x00, 0x8a, 0x00];
        let first = parser.push(&two).unwrap();
        assert!(matches!(
            first,
            HeaderProgress::Complete { consumed: 2, .. }
        ));
        assert_eq!(parser.bytes(), &[0x89, 0x00]);
        let second = parser.push(&two[2..]).unwrap();
        let HeaderProgress::Complete { header, consumed } = second else {
            panic!("expected a header, got {second:?}");
        };
        assert_eq!((header.opcode, consumed), (Opcode::Pong, 2));
        parser.reset();
        assert!(parser.is_empty());
    }

    #[test]
    fn mask_offsets_compose() {
        let data: Vec<u8> = (0u8..50).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, KEY, 0);
        let mut split = data.clone();
        let (a, b) = split.split_at_mut(7);
        apply_mask(a, KEY, 0);
        apply_mask(b, KEY, 7);
        assert_eq!(whole, split);
        apply_mask(&mut whole, KEY, 0);
        assert_eq!(whole, data);
    }

    #[test]
    fn close_frame_unmasked() {
        let mut out = [0; MAX_CONTROL_FRAME_LEN];
        let frame = close_frame(CloseCode::GOING_AWAY, "bye", None, &mut out);
        assert_eq!(frame, &[0x88, 0x05, 0x03, 0xe9, b'b', b'y', b'e']);
    }

    #[test]
    fn close_frame_masked() {
        let mut out = [0; MAX_CONTROL_FRAME_LEN];
        let frame = close_frame(CloseCode::BAD_GATEWAY, "gone", Some(KEY), &mut out);
        let h = parse_header(frame).unwrap().unwrap();
        assert_eq!(h, header(Opcode::Close, 6, Some(KEY)));
        let mut payload = frame[h.header_len()..].to_vec();
        apply_mask(&mut payload, KEY, 0);
        assert_eq!(payload, b"\x03\xf6gone");
    }

    #[test]
    fn close_frame_without_status_is_empty() {
        let mut out = [0; MAX_CONTROL_FRAME_LEN];
        let frame = close_frame(CloseCode::NO_STATUS, "ignored", None, &mut out);
        assert_eq!(frame, &[0x88, 0x00]);
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let mut out = [0; MAX_CONTROL_FRAME_LEN];
        let long = "x".repeat(200);
        let frame = close_frame(CloseCode::NORMAL, &long, None, &mut out);
        assert_eq!(frame.len(), 2 + MAX_CONTROL_PAYLOAD);
        assert_eq!(frame[1], 125);

        // 122 ASCII bytes, then a 3-byte character crossing byte 123.
        let straddling = format!("{}€tail", "a".repeat(122));
        let frame = close_frame(CloseCode::NORMAL, &straddling, None, &mut out);
        assert_eq!(&frame[4..], "a".repeat(122).as_bytes());

        let exact = format!("{}é", "a".repeat(121));
        assert_eq!(exact.len(), MAX_CLOSE_REASON);
        let frame = close_frame(CloseCode::NORMAL, &exact, Some(KEY), &mut out);
        let mut payload = frame[6..].to_vec();
        apply_mask(&mut payload, KEY, 0);
        assert_eq!(&payload[2..], exact.as_bytes());
    }

    #[test]
    fn ping_and_pong_frames() {
        let mut out = [0; MAX_CONTROL_FRAME_LEN];
        let frame = ping_frame(b"abc", None, &mut out).unwrap();
        assert_eq!(frame, &[0x89, 0x03, b'a', b'b', b'c']);
        let frame = pong_frame(b"", None, &mut out).unwrap();
        assert_eq!(frame, &[0x8a, 0x00]);

        let frame = pong_frame(b"abc", Some(KEY), &mut out).unwrap();
        assert_eq!(&frame[..6], &[0x8a, 0x83, 0x37, 0xfa, 0x21, 0x3d]);
        let mut payload = frame[6..].to_vec();
        apply_mask(&mut payload, KEY, 0);
        assert_eq!(payload, b"abc");

        let max = [7u8; MAX_CONTROL_PAYLOAD];
        let frame = ping_frame(&max, Some(KEY), &mut out).unwrap();
        assert_eq!(frame.len(), MAX_CONTROL_FRAME_LEN);
        let too_long = [7u8; MAX_CONTROL_PAYLOAD + 1];
        assert_eq!(
            ping_frame(&too_long, None, &mut out),
            Err(PayloadTooLong(126))
        );
        assert_eq!(
            pong_frame(&too_long, None, &mut out),
            Err(PayloadTooLong(126))
        );
    }
}
