//! Throughput of the frame header parser and of the per-direction relay
//! state over in-memory streams of small (64-byte) and large (16 KiB)
//! frames, masked as a client sends them.
//!
//! Run with `cargo bench --bench frame`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsgate::frame::{apply_mask, parse_header, FrameHeader, Opcode, MAX_HEADER_LEN};
use wsgate::relay::state::{Direction, DirectionState, Rules, Step};

/// About 1 MiB of binary frames, each with `payload` bytes.
fn stream(payload: usize) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode: Opcode::Binary,
        mask: Some(key),
        payload_len: payload as u64,
    };
    let mut buf = [0; MAX_HEADER_LEN];
    let head = header.encode(&mut buf);
    let mut body = vec![0xa5; payload];
    apply_mask(&mut body, key, 0);
    let count = (1 << 20) / (head.len() + payload);
    let mut out = Vec::with_capacity(count * (head.len() + payload));
    for _ in 0..count {
        out.extend_from_slice(head);
        out.extend_from_slice(&body);
    }
    out
}

/// Walks every header of `s`, skipping payloads as the relay does.
fn parse_all(s: &[u8]) -> u64 {
    let mut pos = 0;
    let mut frames = 0;
    while let Ok(Some(h)) = parse_header(&s[pos..]) {
        pos += h.header_len() + h.payload_len as usize;
        frames += 1;
    }
    frames
}

/// Feeds `s` to a fresh state in reads of `read` bytes and returns how many
/// bytes it let through.
fn relay_all(s: &[u8], read: usize) -> usize {
    let rules = Rules {
        max_frame_bytes: 1 << 20,
        max_message_bytes: 1 << 20,
        deflate: false,
    };
    let mut state = DirectionState::new(Direction::ClientToBackend, rules);
    let mut written = 0;
    for chunk in s.chunks(read) {
        let mut rest = chunk;
        while !rest.is_empty() {
            match state.advance(rest) {
                Step::Forward(n) => {
                    written += black_box(&rest[..n]).len();
                    rest = &rest[n..];
                }
                Step::Consumed(n) => {
                    rest = &rest[n..];
                    written += black_box(state.pending()).len();
                    state.consume_pending(state.pending().len());
                }
                Step::Violation(v) => panic!("benchmark stream refused: {v}"),
            }
        }
    }
    written
}

fn benches(c: &mut Criterion) {
    let streams = [("64B", stream(64)), ("16KiB", stream(16 * 1024))];

    let mut group = c.benchmark_group("parse_header");
    for (name, s) in &streams {
        group.throughput(Throughput::Bytes(s.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), s, |b, s| {
            b.iter(|| parse_all(black_box(s)))
        });
    }
    group.finish();

    // 16 KiB reads are what a relay buffer typically returns; 1000-byte
    // reads cut most headers of the small frames and exercise holding.
    let mut group = c.benchmark_group("direction_state");
    for (name, s) in &streams {
        group.throughput(Throughput::Bytes(s.len() as u64));
        for read in [16 * 1024, 1000] {
            let id = BenchmarkId::new(*name, format!("reads of {read}"));
            group.bench_with_input(id, s, |b, s| b.iter(|| relay_all(black_box(s), read)));
        }
    }
    group.finish();
}

criterion_group!(frame, benches);
criterion_main!(frame);
