//! Deterministic message payloads and their byte-for-byte check.
//!
//! A message is `conn id (u32 LE) | sequence number (u64 LE) | filler`, the
//! filler being a window into one shared pseudo-random pattern that starts
//! at an offset derived from the id and the sequence number. So every
//! message of a run differs from its neighbours, a dropped, repeated,
//! reordered, truncated or cross-wired message fails the check, and checking
//! is a `memcmp` against the pattern rather than a per-byte recomputation.

/// Bytes before the filler: connection id and sequence number.
pub const HEADER_LEN: usize = 12;

/// Distinct filler offsets; the pattern is this much longer than a filler.
const OFFSETS: usize = 251;

/// The shared filler source for one message size.
#[derive(Debug)]
pub struct Pattern {
    size: usize,
    bytes: Vec<u8>,
}

impl Pattern {
    /// A pattern for messages of `size` bytes (at least [`HEADER_LEN`]).
    pub fn new(size: usize) -> Pattern {
        assert!(size >= HEADER_LEN, "message size below {HEADER_LEN} bytes");
        let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ size as u64;
        let bytes = (0..size - HEADER_LEN + OFFSETS)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        Pattern { size, bytes }
    }

    /// Message size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The message's first [`HEADER_LEN`] bytes.
    pub fn header(conn: u32, seq: u64) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&conn.to_le_bytes());
        h[4..].copy_from_slice(&seq.to_le_bytes());
        h
    }

    /// The message's filler (everything after the header).
    pub fn filler(&self, conn: u32, seq: u64) -> &[u8] {
        let start = (u64::from(conn).wrapping_mul(31).wrapping_add(seq) % OFFSETS as u64) as usize;
        &self.bytes[start..start + self.size - HEADER_LEN]
    }

    /// Whether `chunk`, found at byte `offset` of message (`conn`, `seq`),
    /// is what was sent there.
    pub fn matches(&self, conn: u32, seq: u64, offset: usize, chunk: &[u8]) -> bool {
        let end = offset + chunk.len();
        if end > self.size {
            return false;
        }
        let mut ok = true;
        if offset < HEADER_LEN {
            let h = Pattern::header(conn, seq);
            let n = (HEADER_LEN - offset).min(chunk.len());
            ok &= chunk[..n] == h[offset..offset + n];
        }
        if end > HEADER_LEN {
            let from = offset.max(HEADER_LEN);
            let filler = self.filler(conn, seq);
            ok &= chunk[from - offset..] == filler[from - HEADER_LEN..end - HEADER_LEN];
        }
        ok
    }
}

/// Checks one connection's incoming messages, which must arrive in sending
/// order, against the pattern, one chunk at a time as they arrive.
#[derive(Debug)]
pub struct Checker {
    conn: u32,
    next_seq: u64,
    offset: usize,
    intact: bool,
}

/// The verdict on one whole received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Byte for byte what was sent with this sequence number.
    Intact(u64),
    /// Something else arrived where this sequence number was expected.
    Mismatch(u64),
}

impl Checker {
    /// A checker for connection `conn`, expecting sequence number 0 first.
    pub fn new(conn: u32) -> Checker {
        Checker {
            conn,
            next_seq: 0,
            offset: 0,
            intact: true,
        }
    }

    /// Takes the next chunk of the current message.
    pub fn data(&mut self, pattern: &Pattern, chunk: &[u8]) {
        if self.intact {
            self.intact = pattern.matches(self.conn, self.next_seq, self.offset, chunk);
        }
        self.offset += chunk.len();
    }

    /// Marks the current message as not what was sent (a text frame where
    /// binary was sent, say).
    pub fn spoil(&mut self) {
        self.intact = false;
    }

    /// Ends the current message. A mismatch does not resynchronise: the next
    /// message is expected to carry the next sequence number, so one lost
    /// message shows as one mismatch per message after it, which is loud on
    /// purpose.
    pub fn end(&mut self, pattern: &Pattern) -> Verdict {
        let seq = self.next_seq;
        let intact = self.intact && self.offset == pattern.size();
        self.next_seq += 1;
        self.offset = 0;
        self.intact = true;
        if intact {
            Verdict::Intact(seq)
        } else {
            Verdict::Mismatch(seq)
        }
    }
}
