//! Property: how a stream is cut into reads never changes what the relay
//! state forwards, drops, counts or refuses.
//!
//! Streams come from a seeded generator, so every run checks the same
//! cases; a failure prints the case number to replay with `CASE=n`.

use wsgate::frame::{apply_mask, FrameHeader, Opcode, MAX_HEADER_LEN, RSV1};
use wsgate::relay::state::{Direction, DirectionState, Rules, Step, Violation, PING_TOKEN_LEN};

const CASES: u64 = 1500;

/// splitmix64: tiny, seedable, good enough to pick frame shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A generated stream and what a correct relay makes of it.
struct Case {
    dir: Direction,
    rules: Rules,
    token: Option<[u8; PING_TOKEN_LEN]>,
    input: Vec<u8>,
    /// `None` after a mutation: only split invariance is checked then.
    expected: Option<Expected>,
}

struct Expected {
    out: Vec<u8>,
    /// Offsets in `out` where one frame ends and the next begins.
    boundaries: Vec<usize>,
    messages: u64,
    frames: u64,
    proxy_pong: bool,
}

/// Everything the state reports after a run.
#[derive(Debug, PartialEq)]
struct Outcome {
    out: Vec<u8>,
    violation: Option<Violation>,
    messages: u64,
    frames: u64,
    bytes: u64,
    close: Option<u16>,
    proxy_pong: bool,
}

fn payload_len(rng: &mut Rng) -> usize {
    match rng.below(20) {
        0 => 126 + rng.below(400) as usize,
        1 if rng.chance(8) => 65_536 + rng.below(200) as usize,
        _ => rng.below(126) as usize,
    }
}

struct Writer<'a> {
    rng: &'a mut Rng,
    dir: Direction,
    input: Vec<u8>,
    exp: Expected,
}

impl Writer<'_> {
    fn frame(&mut self, fin: bool, rsv: u8, opcode: Opcode, payload: &[u8], forwarded: bool) {
        let mask = (self.dir == Direction::ClientToBackend).then(|| {
            let k = self.rng.next().to_be_bytes();
            [k[0], k[1], k[2], k[3]]
        });
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        let mut buf = [0; MAX_HEADER_LEN];
        let start = self.input.len();
        self.input.extend_from_slice(header.encode(&mut buf));
        let body = self.input.len();
        self.input.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut self.input[body..], key, 0);
        }
        self.exp.frames += 1;
        if forwarded {
            let frame = &self.input[start..];
            self.exp.out.extend_from_slice(frame);
            self.exp.boundaries.push(self.exp.out.len());
        }
    }

    fn control(&mut self) {
        let opcode = if self.rng.chance(2) {
            Opcode::Ping
        } else {
            Opcode::Pong
        };
        let n = self.rng.below(126) as usize;
        let payload = self.rng.bytes(n);
        self.frame(true, 0, opcode, &payload, true);
    }
}

fn generate(rng: &mut Rng) -> Case {
    let dir = if rng.chance(2) {
        Direction::ClientToBackend
    } else {
        Direction::BackendToClient
    };
    let deflate = rng.chance(2);
    let token = rng.chance(2).then(|| rng.next().to_be_bytes());
    let mut w = Writer {
        rng,
        dir,
        input: Vec::new(),
        exp: Expected {
            out: Vec::new(),
            boundaries: vec![0],
            messages: 0,
            frames: 0,
            proxy_pong: false,
        },
    };
    let mut largest_frame = 0;
    let mut largest_message = 0;
    let mut pong_at = token.map(|_| w.rng.below(12));
    for event in 0..w.rng.below(12) + 1 {
        if pong_at == Some(event) {
            let token = token.unwrap_or_default();
            w.frame(true, 0, Opcode::Pong, &token, false);
            w.exp.proxy_pong = true;
            pong_at = None;
        }
        if w.rng.chance(3) {
            w.control();
            continue;
        }
        let fragments = 1 + w.rng.below(4);
        let mut message = 0;
        for i in 0..fragments {
            let opcode = match (i, w.rng.chance(2)) {
                (0, true) => Opcode::Text,
                (0, false) => Opcode::Binary,
                _ => Opcode::Continuation,
            };
            let rsv = if i == 0 && deflate && w.rng.chance(2) {
                RSV1
            } else {
                0
            };
            let n = payload_len(w.rng);
            let payload = w.rng.bytes(n);
            w.frame(i + 1 == fragments, rsv, opcode, &payload, true);
            largest_frame = largest_frame.max(n as u64);
            message += n as u64;
            if i + 1 < fragments && w.rng.chance(3) {
                w.control();
            }
        }
        largest_message = largest_message.max(message);
        w.exp.messages += 1;
    }
    if w.rng.chance(3) {
        let mut body = vec![0x03, 0xe8];
        let reason = w.rng.below(20) as usize;
        body.extend(std::iter::repeat_n(b'r', reason));
        w.frame(true, 0, Opcode::Close, &body, true);
        // Anything after the close is discarded, valid or not.
        let tail = w.rng.below(40) as usize;
        let junk = w.rng.bytes(tail);
        w.input.extend_from_slice(&junk);
    }
    let rules = Rules {
        max_frame_bytes: largest_frame.max(125),
        max_message_bytes: largest_message,
        deflate,
    };
    let Writer { input, exp, .. } = w;
    Case {
        dir,
        rules,
        token,
        input,
        expected: Some(exp),
    }
}

/// Breaks a valid case in one of a few ways; the outcome is then unknown
/// but must still not depend on the reads.
fn mutate(rng: &mut Rng, case: &mut Case) {
    case.expected = None;
    let input = &mut case.input;
    match rng.below(5) {
        0 if !input.is_empty() => {
            let at = rng.below(input.len() as u64) as usize;
            input[at] ^= 1 << rng.below(8);
        }
        1 if !input.is_empty() => {
            let at = rng.below(input.len() as u64) as usize;
            input[at] = rng.next() as u8;
        }
        2 => input.truncate(rng.below(input.len() as u64 + 1) as usize),
        3 => {
            case.rules.max_frame_bytes = rng.below(200);
            case.rules.max_message_bytes = rng.below(400);
        }
        _ => {
            let n = rng.below(64) as usize;
            *input = rng.bytes(n);
        }
    }
}

/// Cut points: one read, byte by byte, or a random handful.
fn splits(rng: &mut Rng, len: usize) -> Vec<usize> {
    if len < 2 {
        return Vec::new();
    }
    match rng.below(4) {
        0 => Vec::new(),
        1 if len < 4096 => (1..len).collect(),
        _ => {
            let mut cuts: Vec<usize> = (0..rng.below(40))
                .map(|_| 1 + rng.below(len as u64 - 1) as usize)
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            cuts
        }
    }
}

/// Drives a fresh state the way the relay does, one read per chunk, and
/// checks the step contract as it goes.
fn drive(case: &Case, cuts: &[usize]) -> Outcome {
    let mut s = DirectionState::new(case.dir, case.rules);
    if let Some(token) = case.token {
        s.expect_pong(token);
    }
    let mut out = Vec::new();
    let mut violation = None;
    let mut start = 0;
    'reads: for &end in cuts.iter().chain(std::iter::once(&case.input.len())) {
        let mut rest = &case.input[start..end];
        start = end;
        while !rest.is_empty() {
            match s.advance(rest) {
                Step::Forward(n) => {
                    assert!(n > 0 && n <= rest.len(), "Forward({n}) of {}", rest.len());
                    out.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
                Step::Consumed(n) => {
                    assert!(n > 0 && n <= rest.len(), "Consumed({n}) of {}", rest.len());
                    rest = &rest[n..];
                    out.extend_from_slice(s.pending());
                    s.consume_pending(s.pending().len());
                }
                Step::Violation(v) => {
                    violation = Some(v);
                    break 'reads;
                }
            }
            if let Some(exp) = &case.expected {
                if s.at_frame_boundary() {
                    assert!(
                        exp.boundaries.binary_search(&out.len()).is_ok(),
                        "boundary claimed at {} inside a frame",
                        out.len()
                    );
                }
            }
        }
    }
    Outcome {
        out,
        violation,
        messages: s.messages(),
        frames: s.frames(),
        bytes: s.bytes(),
        close: s.close_code().map(|c| c.0),
        proxy_pong: s.take_proxy_pong(),
    }
}

fn check(n: u64) {
    let mut rng = Rng(0x5eed_0000 + n);
    let mut case = generate(&mut rng);
    if rng.chance(3) {
        mutate(&mut rng, &mut case);
    }
    let whole = drive(&case, &[]);
    if let Some(exp) = &case.expected {
        assert_eq!(whole.violation, None, "case {n}: valid stream refused");
        assert_eq!(whole.out, exp.out, "case {n}: forwarded bytes");
        assert_eq!(whole.messages, exp.messages, "case {n}: messages");
        assert_eq!(whole.frames, exp.frames, "case {n}: frames");
        assert_eq!(whole.proxy_pong, exp.proxy_pong, "case {n}: proxy pong");
        assert_eq!(whole.bytes, case.input.len() as u64, "case {n}: bytes");
    }
    for _ in 0..4 {
        let cuts = splits(&mut rng, case.input.len());
        let split = drive(&case, &cuts);
        assert_eq!(split, whole, "case {n}: reads cut at {cuts:?}");
    }
}

#[test]
fn any_split_forwards_what_a_single_read_forwards() {
    if let Some(n) = std::env::var("CASE").ok().and_then(|v| v.parse().ok()) {
        return check(n);
    }
    for n in 0..CASES {
        check(n);
    }
}
