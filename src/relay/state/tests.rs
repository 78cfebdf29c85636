//! Unit tests of the per-direction relay state, one or more per rule.

use super::*;
use crate::frame::{MAX_CLOSE_REASON, RSV2, RSV3};

const KEY: [u8; 4] = [0xa1, 0x02, 0xb3, 0x04];
const C2B: Direction = Direction::ClientToBackend;
const B2C: Direction = Direction::BackendToClient;

fn rules(max_frame: u64, max_message: u64, deflate: bool) -> Rules {
    Rules {
        max_frame_bytes: max_frame,
        max_message_bytes: max_message,
        deflate,
    }
}

fn state(dir: Direction) -> DirectionState {
    DirectionState::new(dir, rules(1 << 20, 1 << 20, false))
}

/// One frame as `dir`'s sender would write it: masked from the client.
fn frame(dir: Direction, fin: bool, rsv: u8, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mask = (dir == C2B).then_some(KEY);
    frame_with_mask(fin, rsv, opcode, mask, payload)
}

fn frame_with_mask(
    fin: bool,
    rsv: u8,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    let header = FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    let mut buf = [0; MAX_HEADER_LEN];
    let mut out = header.encode(&mut buf).to_vec();
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

fn text(dir: Direction, payload: &[u8]) -> Vec<u8> {
    frame(dir, true, 0, Opcode::Text, payload)
}

/// What the other side received, and how the stream ended.
#[derive(Debug, PartialEq)]
struct Run {
    out: Vec<u8>,
    violation: Option<Violation>,
}

/// Drives `s` like the relay does, one read per chunk.
fn run(s: &mut DirectionState, chunks: &[&[u8]]) -> Run {
    let mut out = Vec::new();
    for chunk in chunks {
        let mut rest = *chunk;
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
                    return Run {
                        out,
                        violation: Some(v),
                    }
                }
            }
        }
    }
    Run {
        out,
        violation: None,
    }
}

fn run_whole(s: &mut DirectionState, bytes: &[u8]) -> Run {
    run(s, &[bytes])
}

fn passes(dir: Direction, r: Rules, bytes: &[u8]) {
    let mut s = DirectionState::new(dir, r);
    assert_eq!(
        run_whole(&mut s, bytes),
        Run {
            out: bytes.to_vec(),
            violation: None
        }
    );
}

/// `good` passes, then `bad` breaks `expected` without any of it written.
fn breaks(dir: Direction, r: Rules, good: &[u8], bad: &[u8], expected: Violation) {
    let mut whole = good.to_vec();
    whole.extend_from_slice(bad);
    let mut s = DirectionState::new(dir, r);
    let got = run_whole(&mut s, &whole);
    assert_eq!(
        got,
        Run {
            out: good.to_vec(),
            violation: Some(expected)
        }
    );
    // The same holds when the offending header arrives a byte at a time.
    let mut s = DirectionState::new(dir, r);
    let mut chunks: Vec<&[u8]> = vec![good];
    chunks.extend(bad.chunks(1));
    assert_eq!(
        run(&mut s, &chunks),
        Run {
            out: good.to_vec(),
            violation: Some(expected)
        }
    );
    // And the stream stays failed.
    assert_eq!(s.advance(b"x"), Step::Violation(expected));
    assert!(s.at_frame_boundary());
}

#[test]
fn client_frames_must_be_masked() {
    let r = rules(100, 100, false);
    let unmasked = frame_with_mask(true, 0, Opcode::Text, None, b"hi");
    breaks(C2B, r, &text(C2B, b"ok"), &unmasked, Violation::Unmasked);
}

#[test]
fn backend_frames_must_not_be_masked() {
    let r = rules(100, 100, false);
    let masked = frame_with_mask(true, 0, Opcode::Text, Some(KEY), b"hi");
    breaks(B2C, r, &text(B2C, b"ok"), &masked, Violation::Masked);
}

#[test]
fn reserved_opcodes_are_protocol_errors() {
    for bits in (0x3..=0x7).chain(0xB..=0xF) {
        for dir in [C2B, B2C] {
            let bad = frame(dir, true, 0, Opcode::Reserved(bits), b"");
            breaks(
                dir,
                rules(100, 100, false),
                b"",
                &bad,
                Violation::ReservedOpcode,
            );
        }
    }
}

#[test]
fn control_frames_over_125_bytes_are_protocol_errors() {
    let r = rules(1000, 1000, false);
    // A close payload starts with an allowed code (1000).
    let mut payload = [b'x'; 125];
    payload[..2].copy_from_slice(&1000u16.to_be_bytes());
    for op in [Opcode::Close, Opcode::Ping, Opcode::Pong] {
        passes(B2C, r, &frame(B2C, true, 0, op, &payload));
        let bad = frame(B2C, true, 0, op, &[b'x'; 126]);
        breaks(B2C, r, b"", &bad, Violation::ControlTooLong);
    }
}

#[test]
fn fragmented_control_frames_are_protocol_errors() {
    for op in [Opcode::Close, Opcode::Ping, Opcode::Pong] {
        let bad = frame(C2B, false, 0, op, b"");
        breaks(
            C2B,
            rules(100, 100, false),
            b"",
            &bad,
            Violation::FragmentedControl,
        );
    }
}

#[test]
fn continuation_needs_an_open_message() {
    let r = rules(100, 100, false);
    let cont = frame(B2C, true, 0, Opcode::Continuation, b"x");
    breaks(B2C, r, b"", &cont, Violation::ContinuationWithoutStart);
    // A finished message leaves nothing to continue.
    breaks(
        B2C,
        r,
        &text(B2C, b"done"),
        &cont,
        Violation::ContinuationWithoutStart,
    );
}

#[test]
fn a_new_message_cannot_start_inside_another() {
    let r = rules(100, 100, false);
    let open = frame(C2B, false, 0, Opcode::Text, b"part");
    for op in [Opcode::Text, Opcode::Binary] {
        let bad = frame(C2B, true, 0, op, b"new");
        breaks(C2B, r, &open, &bad, Violation::MessageNotFinished);
    }
}

#[test]
fn control_frames_may_come_between_fragments() {
    let mut stream = frame(C2B, false, 0, Opcode::Binary, b"ab");
    stream.extend(frame(C2B, true, 0, Opcode::Ping, b"p"));
    stream.extend(frame(C2B, true, 0, Opcode::Pong, b"q"));
    stream.extend(frame(C2B, false, 0, Opcode::Continuation, b"cd"));
    stream.extend(frame(C2B, true, 0, Opcode::Continuation, b"ef"));
    let mut s = state(C2B);
    assert_eq!(run_whole(&mut s, &stream).out, stream);
    assert_eq!((s.messages(), s.frames()), (1, 5));
}

#[test]
fn rsv_bits_need_deflate() {
    let r = rules(100, 100, false);
    for rsv in [RSV1, RSV2, RSV3] {
        let bad = frame(B2C, true, rsv, Opcode::Text, b"x");
        breaks(B2C, r, b"", &bad, Violation::ReservedBits);
    }
}

#[test]
fn deflate_allows_rsv1_on_the_first_frame_only() {
    let r = rules(100, 100, true);
    passes(C2B, r, &frame(C2B, true, RSV1, Opcode::Text, b"z"));
    passes(C2B, r, &frame(C2B, true, RSV1, Opcode::Binary, b"z"));

    let first = frame(C2B, false, RSV1, Opcode::Binary, b"z");
    let cont = frame(C2B, true, RSV1, Opcode::Continuation, b"z");
    breaks(C2B, r, &first, &cont, Violation::MisplacedRsv1);
    let ping = frame(C2B, true, RSV1, Opcode::Ping, b"");
    breaks(C2B, r, b"", &ping, Violation::MisplacedRsv1);
    for rsv in [RSV2, RSV3, RSV1 | RSV2] {
        let bad = frame(C2B, true, rsv, Opcode::Text, b"z");
        breaks(C2B, r, b"", &bad, Violation::ReservedBits);
    }
}

#[test]
fn frame_limit_is_inclusive() {
    let r = rules(10, 1000, false);
    passes(B2C, r, &text(B2C, &[b'a'; 10]));
    breaks(B2C, r, b"", &text(B2C, &[b'a'; 11]), Violation::FrameTooBig);
}

#[test]
fn message_limit_is_inclusive() {
    let r = rules(2000, 1000, false);
    passes(B2C, r, &text(B2C, &[b'a'; 1000]));
    breaks(
        B2C,
        r,
        b"",
        &text(B2C, &[b'a'; 1001]),
        Violation::MessageTooBig,
    );

    let mut split = frame(C2B, false, 0, Opcode::Text, &[b'a'; 400]);
    split.extend(frame(C2B, true, 0, Opcode::Continuation, &[b'a'; 600]));
    passes(C2B, r, &split);
}

#[test]
fn message_limit_counts_every_fragment() {
    // 600 + 600 against 1000: the second header is refused, the first
    // frame has already gone through.
    let r = rules(1000, 1000, false);
    let first = frame(C2B, false, 0, Opcode::Binary, &[7; 600]);
    let second = frame(C2B, true, 0, Opcode::Continuation, &[7; 600]);
    breaks(C2B, r, &first, &second, Violation::MessageTooBig);
}

#[test]
fn message_limit_restarts_with_each_message() {
    let r = rules(1000, 1000, false);
    let mut stream = Vec::new();
    for _ in 0..3 {
        stream.extend(frame(B2C, false, 0, Opcode::Binary, &[7; 500]));
        stream.extend(frame(B2C, true, 0, Opcode::Continuation, &[7; 500]));
    }
    passes(B2C, r, &stream);
}

#[test]
fn oversized_frame_headers_are_refused_before_their_payload_arrives() {
    // A 1 GiB frame announced: only the header is needed to refuse it.
    let r = rules(1 << 20, 1 << 20, false);
    let mut header = [0; MAX_HEADER_LEN];
    let h = FrameHeader {
        fin: true,
        rsv: 0,
        opcode: Opcode::Binary,
        mask: None,
        payload_len: 1 << 30,
    };
    breaks(B2C, r, b"", h.encode(&mut header), Violation::FrameTooBig);
}

#[test]
fn malformed_headers_are_protocol_errors() {
    let r = rules(1 << 20, 1 << 20, false);
    let non_minimal = [0x82, 0x7e, 0x00, 0x05];
    breaks(
        B2C,
        r,
        b"",
        &non_minimal,
        Violation::Malformed(HeaderError::NonMinimalLength),
    );
    let overflow = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
    breaks(
        B2C,
        r,
        &text(B2C, b"before"),
        &overflow,
        Violation::Malformed(HeaderError::LengthOverflow),
    );
}

#[test]
fn close_with_one_byte_is_a_protocol_error() {
    let bad = frame(C2B, true, 0, Opcode::Close, &[0x03]);
    breaks(
        C2B,
        rules(100, 100, false),
        b"",
        &bad,
        Violation::CloseOneByte,
    );
}

#[test]
fn close_code_is_read_and_later_input_dropped() {
    for dir in [C2B, B2C] {
        let close = frame(dir, true, 0, Opcode::Close, b"\x03\xe8bye");
        let mut stream = close.clone();
        stream.extend(text(dir, b"after close"));
        let mut s = state(dir);
        assert_eq!(run_whole(&mut s, &stream).out, close);
        assert_eq!(s.close_code(), Some(CloseCode::NORMAL));
        assert_eq!(s.advance(b"more"), Step::Consumed(4));
        assert_eq!(s.bytes(), stream.len() as u64 + 4);
        assert_eq!(s.frames(), 1);
    }
}

#[test]
fn close_code_split_at_every_byte() {
    let close = frame(C2B, true, 0, Opcode::Close, b"\x0f\xa0why");
    for cut in 1..close.len() {
        let mut s = state(C2B);
        let got = run(&mut s, &[&close[..cut], &close[cut..]]);
        assert_eq!(got.out, close);
        assert_eq!(s.close_code(), Some(CloseCode(4000)));
    }
}

#[test]
fn close_is_reported_only_once_it_has_passed() {
    let close = frame(B2C, true, 0, Opcode::Close, b"\x03\xe9");
    let mut s = state(B2C);
    // Its header and code are held until the code is checked.
    assert_eq!(s.advance(&close[..3]), Step::Consumed(3));
    assert_eq!(s.close_code(), None);
    assert!(s.pending().is_empty());
    assert_eq!(s.advance(&close[3..]), Step::Consumed(1));
    assert_eq!(s.pending(), &close[..]);
    assert_eq!(s.close_code(), Some(CloseCode::GOING_AWAY));
}

#[test]
fn empty_close_reports_no_status() {
    let mut s = state(B2C);
    let close = frame(B2C, true, 0, Opcode::Close, b"");
    assert_eq!(run_whole(&mut s, &close).out, close);
    assert_eq!(s.close_code(), Some(CloseCode::NO_STATUS));
}

#[test]
fn whole_frames_are_forwarded_in_one_step_without_holding() {
    let mut stream = text(B2C, b"one");
    stream.extend(frame(B2C, true, 0, Opcode::Ping, b""));
    stream.extend(frame(B2C, true, 0, Opcode::Binary, &[1; 300]));
    stream.extend(text(B2C, b"four"));
    let mut s = state(B2C);
    assert_eq!(s.advance(&stream), Step::Forward(stream.len()));
    assert!(s.pending().is_empty());
    assert_eq!((s.messages(), s.frames()), (3, 4));
    assert_eq!(s.bytes(), stream.len() as u64);
}

#[test]
fn payload_streams_across_reads() {
    let f = frame(B2C, true, 0, Opcode::Binary, &[9; 70_000]);
    let mut s = state(B2C);
    assert_eq!(s.advance(&f[..5000]), Step::Forward(5000));
    assert!(!s.at_frame_boundary());
    assert_eq!(s.advance(&f[5000..]), Step::Forward(f.len() - 5000));
    assert!(s.at_frame_boundary());
    assert_eq!(s.messages(), 1);
}

#[test]
fn a_forward_stops_before_a_split_header() {
    let mut stream = text(B2C, b"whole");
    let next = frame(B2C, true, 0, Opcode::Binary, &[1; 200]);
    stream.extend_from_slice(&next[..3]);
    let mut s = state(B2C);
    assert_eq!(s.advance(&stream), Step::Forward(7));
    assert_eq!(s.advance(&stream[7..]), Step::Consumed(3));
    assert!(s.pending().is_empty());
    assert!(
        s.at_frame_boundary(),
        "nothing of the held header was written"
    );
    assert_eq!(s.advance(&next[3..]), Step::Consumed(1));
    assert_eq!(s.pending(), &next[..4]);
    assert!(!s.at_frame_boundary());
    // Held bytes go first: nothing else is accepted until they are written.
    assert_eq!(s.advance(&next[4..]), Step::Consumed(0));
    s.consume_pending(1);
    assert_eq!(s.pending(), &next[1..4]);
    s.consume_pending(3);
    assert_eq!(s.advance(&next[4..]), Step::Forward(200));
    assert_eq!(s.frames(), 2);
}

#[test]
fn header_split_at_every_byte_passes_unchanged() {
    let frames = [
        text(C2B, b"short"),
        frame(C2B, true, 0, Opcode::Binary, &[3; 300]),
        frame(C2B, true, 0, Opcode::Binary, &[3; 70_000]),
    ];
    for f in &frames {
        let hlen = parse_header(f).unwrap().unwrap().header_len();
        for cut in 1..=hlen {
            let mut s = state(C2B);
            let got = run(&mut s, &[&f[..cut], &f[cut..]]);
            assert_eq!(got.out, *f);
            assert_eq!((s.messages(), s.frames()), (1, 1));
            assert_eq!(s.bytes(), f.len() as u64);
        }
    }
}

#[test]
fn counts_messages_at_their_final_header() {
    let mut s = state(B2C);
    let first = frame(B2C, false, 0, Opcode::Text, b"a");
    let last = frame(B2C, true, 0, Opcode::Continuation, b"b");
    assert_eq!(run_whole(&mut s, &first).violation, None);
    assert_eq!((s.messages(), s.frames()), (0, 1));
    // The final header alone completes the count, before its payload.
    assert_eq!(s.advance(&last[..2]), Step::Forward(2));
    assert_eq!((s.messages(), s.frames()), (1, 2));
    let _ = s.advance(&last[2..]);
    let ping = frame(B2C, true, 0, Opcode::Ping, b"");
    let _ = run_whole(&mut s, &ping);
    assert_eq!((s.messages(), s.frames()), (1, 3));
}

fn proxy_pong(dir: Direction, token: &[u8]) -> Vec<u8> {
    frame(dir, true, 0, Opcode::Pong, token)
}

#[test]
fn the_proxy_pong_is_dropped() {
    let token = *b"wsgate01";
    let mut stream = text(C2B, b"before");
    let pong = proxy_pong(C2B, &token);
    stream.extend_from_slice(&pong);
    stream.extend(text(C2B, b"after"));
    let mut expected = text(C2B, b"before");
    expected.extend(text(C2B, b"after"));

    let mut s = state(C2B);
    s.expect_pong(token);
    assert_eq!(run_whole(&mut s, &stream).out, expected);
    assert!(s.take_proxy_pong());
    assert!(!s.take_proxy_pong());
    assert_eq!((s.messages(), s.frames()), (2, 3));
    assert_eq!(s.bytes(), stream.len() as u64);

    // A second identical pong is not the proxy's any more.
    assert_eq!(run_whole(&mut s, &pong).out, pong);
    assert!(!s.take_proxy_pong());
}

#[test]
fn the_proxy_pong_is_dropped_at_every_split() {
    let token = 0x0123_4567_89ab_cdef_u64.to_be_bytes();
    let pong = proxy_pong(C2B, &token);
    let after = text(C2B, b"x");
    let mut stream = pong.clone();
    stream.extend_from_slice(&after);
    for a in 1..stream.len() {
        for b in a..stream.len() {
            let mut s = state(C2B);
            s.expect_pong(token);
            let got = run(&mut s, &[&stream[..a], &stream[a..b], &stream[b..]]);
            assert_eq!(got.out, after, "cuts at {a} and {b}");
            assert!(s.take_proxy_pong());
        }
    }
}

#[test]
fn other_pongs_pass_intact_at_every_split() {
    let token = *b"01234567";
    let others = [
        proxy_pong(C2B, b"01234568"),
        proxy_pong(C2B, b"0123456"),
        proxy_pong(C2B, b"012345678"),
        proxy_pong(C2B, b""),
    ];
    for pong in &others {
        for cut in 0..pong.len() {
            let mut s = state(C2B);
            s.expect_pong(token);
            let got = run(&mut s, &[&pong[..cut], &pong[cut..]]);
            assert_eq!(got.out, *pong);
            assert!(!s.take_proxy_pong());
            assert_eq!(s.frames(), 1);
        }
    }
}

#[test]
fn pongs_pass_when_no_ping_is_out() {
    let pong = proxy_pong(C2B, b"01234567");
    let mut s = state(C2B);
    assert_eq!(s.advance(&pong), Step::Forward(pong.len()));
    assert!(!s.take_proxy_pong());
}

#[test]
fn a_newer_token_replaces_the_older() {
    let mut s = state(C2B);
    s.expect_pong(*b"token--1");
    s.expect_pong(*b"token--2");
    let old = proxy_pong(C2B, b"token--1");
    assert_eq!(run_whole(&mut s, &old).out, old);
    let new = proxy_pong(C2B, b"token--2");
    assert_eq!(run_whole(&mut s, &new).out, b"");
    assert!(s.take_proxy_pong());
}

#[test]
fn a_forward_stops_before_a_held_pong() {
    let token = *b"abcdefgh";
    let mut stream = text(C2B, b"one");
    let first = stream.len();
    stream.extend(proxy_pong(C2B, &token));
    let mut s = state(C2B);
    s.expect_pong(token);
    assert_eq!(s.advance(&stream), Step::Forward(first));
    assert_eq!(
        s.advance(&stream[first..]),
        Step::Consumed(stream.len() - first)
    );
    assert!(s.take_proxy_pong());
}

#[test]
fn unmasked_pong_towards_the_client_side_works_too() {
    let token = *b"backend!";
    let mut s = state(B2C);
    s.expect_pong(token);
    let pong = proxy_pong(B2C, &token);
    assert_eq!(run(&mut s, &[&pong[..4], &pong[4..]]).out, b"");
    assert!(s.take_proxy_pong());
}

#[test]
fn frame_boundary_tracks_written_bytes() {
    let mut s = state(B2C);
    assert!(s.at_frame_boundary());
    let f = text(B2C, b"hello");
    assert_eq!(s.advance(&f[..4]), Step::Forward(4));
    assert!(!s.at_frame_boundary());
    assert_eq!(s.advance(&f[4..]), Step::Forward(3));
    assert!(s.at_frame_boundary());
    // Between fragments of a message is still a frame boundary.
    let _ = s.advance(&frame(B2C, false, 0, Opcode::Text, b"x"));
    assert!(s.at_frame_boundary());
}

#[test]
fn advance_on_nothing_does_nothing() {
    let mut s = state(B2C);
    assert_eq!(s.advance(&[]), Step::Consumed(0));
    assert_eq!(s.bytes(), 0);
}

#[test]
fn violation_codes_and_reasons() {
    let all = [
        (Violation::Malformed(HeaderError::NonMinimalLength), 1002),
        (Violation::Malformed(HeaderError::LengthOverflow), 1002),
        (Violation::Unmasked, 1002),
        (Violation::Masked, 1002),
        (Violation::ReservedOpcode, 1002),
        (Violation::FragmentedControl, 1002),
        (Violation::ControlTooLong, 1002),
        (Violation::CloseOneByte, 1002),
        (Violation::CloseCodeNotAllowed, 1002),
        (Violation::ContinuationWithoutStart, 1002),
        (Violation::MessageNotFinished, 1002),
        (Violation::ReservedBits, 1002),
        (Violation::MisplacedRsv1, 1002),
        (Violation::FrameTooBig, 1009),
        (Violation::MessageTooBig, 1009),
    ];
    for (v, code) in all {
        assert_eq!(v.code(), CloseCode(code), "{v:?}");
        assert!(v.reason().len() <= MAX_CLOSE_REASON, "{v:?}");
        assert_eq!(v.to_string(), v.reason());
    }
}

#[test]
fn direction_labels() {
    assert_eq!(C2B.as_str(), "client_to_backend");
    assert_eq!(B2C.as_str(), "backend_to_client");
    assert_eq!(C2B.sender(), Initiator::Client);
    assert_eq!(B2C.sender(), Initiator::Backend);
}

/// Every connection holds two of these, whatever its frame sizes.
#[test]
fn the_state_stays_small() {
    assert!(std::mem::size_of::<DirectionState>() <= 160);
}

#[test]
fn size_limits_do_not_apply_to_control_frames() {
    let rules = Rules {
        max_frame_bytes: 10,
        max_message_bytes: 10,
        deflate: false,
    };
    let mut state = DirectionState::new(Direction::BackendToClient, rules);
    let mut ping = vec![0x89, 100];
    ping.extend_from_slice(&[0; 100]);
    assert_eq!(state.advance(&ping), Step::Forward(ping.len()));
    let mut data = vec![0x82, 11];
    data.extend_from_slice(&[0; 11]);
    assert_eq!(
        state.advance(&data),
        Step::Violation(Violation::FrameTooBig)
    );
}

/// RFC 6455 section 7.4: codes never sent on the wire, unassigned, or
/// outside every range.
const FORBIDDEN_CODES: [u16; 12] = [
    0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 9999, 65535,
];

#[test]
fn close_codes_forbidden_on_the_wire_are_protocol_errors_both_ways() {
    let r = rules(1 << 20, 1 << 20, false);
    for dir in [C2B, B2C] {
        for code in FORBIDDEN_CODES {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(b"why");
            let bad = frame(dir, true, 0, Opcode::Close, &payload);
            breaks(
                dir,
                r,
                &text(dir, b"ok"),
                &bad,
                Violation::CloseCodeNotAllowed,
            );
            let bare = frame(dir, true, 0, Opcode::Close, &code.to_be_bytes());
            breaks(dir, r, b"", &bare, Violation::CloseCodeNotAllowed);
        }
    }
}

#[test]
fn a_forbidden_code_is_not_counted() {
    let mut s = state(C2B);
    let bad = frame(C2B, true, 0, Opcode::Close, &1005u16.to_be_bytes());
    let got = run(&mut s, &[&bad[..3], &bad[3..]]);
    assert_eq!(got.violation, Some(Violation::CloseCodeNotAllowed));
    assert_eq!((s.bytes(), s.frames()), (0, 0));
    assert_eq!(s.close_code(), None);
}

#[test]
fn close_codes_allowed_on_the_wire_pass_at_every_split() {
    let allowed = [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ];
    let r = rules(1 << 20, 1 << 20, false);
    for dir in [C2B, B2C] {
        for code in allowed {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(b"bye");
            let close = frame(dir, true, 0, Opcode::Close, &payload);
            passes(dir, r, &close);
            for cut in 1..close.len() {
                let mut s = DirectionState::new(dir, r);
                let got = run(&mut s, &[&close[..cut], &close[cut..]]);
                assert_eq!(got.out, close, "{code} cut at {cut}");
                assert_eq!(s.close_code(), Some(CloseCode(code)));
            }
        }
    }
}

/// A pushed message may only go between messages: a frame boundary inside
/// a fragmented message is not one.
#[test]
fn message_boundaries_are_frame_boundaries_outside_fragmented_messages() {
    let mut s = state(B2C);
    assert!(s.at_message_boundary());
    let first = frame(B2C, false, 0, Opcode::Text, b"one, ");
    let ping = frame(B2C, true, 0, Opcode::Ping, b"");
    let last = frame(B2C, true, 0, Opcode::Continuation, b"two");
    assert_eq!(s.advance(&first), Step::Forward(first.len()));
    assert!(s.at_frame_boundary() && !s.at_message_boundary());
    assert_eq!(s.advance(&ping), Step::Forward(ping.len()));
    assert!(!s.at_message_boundary());
    assert_eq!(s.advance(&last[..3]), Step::Forward(3));
    assert!(!s.at_message_boundary());
    assert_eq!(s.advance(&last[3..]), Step::Forward(last.len() - 3));
    assert!(s.at_message_boundary());
}
