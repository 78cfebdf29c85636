//! The relay state against arbitrary streams and arbitrary read sizes: it
//! never panics, keeps the step contract, and the reads never change the
//! outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::relay::state::{Direction, DirectionState, Rules, Step, Violation};

/// The ping token the seeds' proxy pongs carry.
const TOKEN: [u8; 8] = *b"wsgate!!";

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

/// Feeds `stream` in reads whose sizes cycle through `sizes` (one read
/// when empty), the way the relay drives the state.
fn drive(dir: Direction, rules: Rules, token: bool, stream: &[u8], sizes: &[u8]) -> Outcome {
    let mut s = DirectionState::new(dir, rules);
    if token {
        s.expect_pong(TOKEN);
    }
    let mut out = Vec::new();
    let mut violation = None;
    let mut start = 0;
    let mut i = 0;
    'reads: while start < stream.len() {
        let size = match sizes.get(i % sizes.len().max(1)) {
            Some(&n) => usize::from(n).max(1),
            None => stream.len(),
        };
        i += 1;
        let end = (start + size).min(stream.len());
        let mut rest = &stream[start..end];
        start = end;
        while !rest.is_empty() {
            match s.advance(rest) {
                Step::Forward(n) => {
                    assert!(n > 0 && n <= rest.len());
                    out.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
                Step::Consumed(n) => {
                    assert!(n > 0 && n <= rest.len());
                    rest = &rest[n..];
                    out.extend_from_slice(s.pending());
                    s.consume_pending(s.pending().len());
                }
                Step::Violation(v) => {
                    violation = Some(v);
                    break 'reads;
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

fuzz_target!(|data: &[u8]| {
    // Byte 0: flags; byte 1: how many read sizes follow (up to 7); then
    // the sizes, then the stream.
    let [flags, n, rest @ ..] = data else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let dir = if flags & 1 == 0 {
        Direction::ClientToBackend
    } else {
        Direction::BackendToClient
    };
    // Bit 0: direction; 1: tight limits, scaled by bits 4-7; 2: deflate;
    // 3: a ping token is out.
    let tight = flags & 2 != 0;
    let scale = u64::from(flags >> 4);
    let rules = Rules {
        max_frame_bytes: if tight { scale * 8 } else { 1 << 20 },
        max_message_bytes: if tight { scale * 16 } else { 1 << 20 },
        deflate: flags & 4 != 0,
    };
    let token = flags & 8 != 0;
    let whole = drive(dir, rules, token, stream, &[]);
    let split = drive(dir, rules, token, stream, sizes);
    assert_eq!(whole, split);
    assert!(whole.out.len() <= stream.len());
});
