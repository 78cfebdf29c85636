//! The benchmark's load generator, driven against in-test echo backends
//! built on tokio-tungstenite (an independent WebSocket implementation), so
//! that its codec, its checks and its counts are tested against the real
//! thing: intact echoes count as such, a backend that corrupts one byte is
//! caught, and every mode ends without errors on a healthy backend.
//!
//! Every backend listens on 127.0.0.1:0, bound before the run starts, so
//! nothing waits for readiness; every run is a few hundred milliseconds.

// The generator's module tree is shared with the `load` bench, whose
// command line uses parts these tests do not.
#[allow(dead_code)]
#[path = "../benches/load/loadgen/mod.rs"]
mod loadgen;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use loadgen::client::{self, Target};
use loadgen::codec::{self, Decoder, Event, OpCode, ProtocolError, Role};
use loadgen::payload::{Checker, Pattern, Verdict};
use loadgen::{stats, Mode, Options, Report};

/// What an in-test backend does to each data message before echoing it.
#[derive(Clone, Copy)]
enum Echo {
    Faithful,
    /// Flips the lowest bit of the last byte.
    FlipLastByte,
}

/// An echo backend on its own thread and runtime; stops when dropped.
struct Backend {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    /// A plain ws:// backend.
    fn start(echo: Echo) -> Backend {
        Backend::spawn(echo, None)
    }

    fn spawn(echo: Echo, tls: Option<tokio_rustls::TlsAcceptor>) -> Backend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            match tls {
                                None => serve(tcp, echo).await,
                                Some(acceptor) => {
                                    if let Ok(stream) = acceptor.accept(tcp).await {
                                        serve(stream, echo).await;
                                    }
                                }
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Backend {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, scheme: &str, host: &str) -> String {
        format!("{scheme}://{host}:{}/echo", self.addr.port())
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One tungstenite connection: echo data messages (altered as told) until
/// the close handshake ends, then drop the socket (the server closes TCP).
async fn serve<S>(stream: S, echo: Echo)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match (msg, echo) {
            (Message::Binary(data), Echo::Faithful) => Message::Binary(data),
            (Message::Binary(data), Echo::FlipLastByte) => {
                let mut data = data.to_vec();
                if let Some(last) = data.last_mut() {
                    *last ^= 1;
                }
                Message::Binary(data.into())
            }
            (Message::Text(text), _) => Message::Text(text),
            // Pings are answered and closes returned by tungstenite itself.
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

fn options(url: &str, connections: u32, duration_ms: u64) -> Options {
    Options {
        target: Target::parse(url).expect("url"),
        tls: None,
        connections,
        duration: Duration::from_millis(duration_ms),
        warmup: Duration::from_millis(50),
        sources: 4,
        pids: vec![std::process::id()],
        timeout: Duration::from_secs(3),
    }
}

fn errors(report: &Report) -> Vec<(&'static str, u64)> {
    report
        .live
        .errors
        .by_name()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn rtt_mode_checks_every_echo_and_measures_both_round_trips() {
    let backend = Backend::start(Echo::Faithful);
    let mode = Mode::Rtt {
        size: 64,
        rate: 2000.0,
    };
    let report = loadgen::run(options(&backend.url("ws", "127.0.0.1"), 4, 300), mode).unwrap();
    assert_eq!(errors(&report), []);
    let live = &report.live;
    // 2000/s over 0.3 s, scheduled from the start of the window.
    assert_eq!(live.sent.get(), 600);
    assert_eq!(live.received.get(), 600);
    assert_eq!(live.received_bytes.get(), 600 * 64);
    let json = report.to_json();
    assert_eq!(json["latency_us"]["rtt_scheduled"]["count"], 600);
    assert_eq!(json["latency_us"]["rtt_sent"]["count"], 600);
    assert!(json["watched"]["cpu_us"].is_u64());
}

#[test]
fn throughput_mode_keeps_messages_in_flight_and_counts_both_ways() {
    let backend = Backend::start(Echo::Faithful);
    let mode = Mode::Throughput {
        size: 16 * 1024,
        in_flight: 4,
    };
    let report = loadgen::run(options(&backend.url("ws", "127.0.0.1"), 2, 300), mode).unwrap();
    assert_eq!(errors(&report), []);
    let live = &report.live;
    assert!(live.received.get() > 10, "{}", report.summary());
    assert_eq!(live.received_bytes.get(), live.received.get() * 16 * 1024);
    // Everything sent in the window came back, give or take what was in
    // flight at either edge of it.
    assert!(live.sent.get().abs_diff(live.received.get()) <= 2 * 4 * 2);
}

#[test]
fn a_corrupted_echo_is_counted_as_a_mismatch_not_as_a_message() {
    let backend = Backend::start(Echo::FlipLastByte);
    let mode = Mode::Throughput {
        size: 64,
        in_flight: 2,
    };
    let report = loadgen::run(options(&backend.url("ws", "127.0.0.1"), 1, 200), mode).unwrap();
    let live = &report.live;
    assert_eq!(live.received.get(), 0);
    assert!(live.errors.mismatch.get() > 0);
    assert_eq!(
        live.errors.total(),
        live.errors.mismatch.get(),
        "{}",
        report.summary()
    );
    assert_eq!(report.to_json()["errors"]["total"], live.errors.total());
}

#[test]
fn handshake_mode_completes_cycles_with_clean_closes() {
    let backend = Backend::start(Echo::Faithful);
    let report = loadgen::run(
        options(&backend.url("ws", "127.0.0.1"), 2, 200),
        Mode::Handshake,
    )
    .unwrap();
    assert_eq!(errors(&report), []);
    assert!(report.live.cycles.get() > 0);
    let json = report.to_json();
    assert_eq!(
        json["latency_us"]["cycle"]["count"],
        report.live.cycles.get()
    );
}

#[test]
fn idle_mode_says_ready_once_all_are_open_and_reads_rss() {
    let backend = Backend::start(Echo::Faithful);
    let seen: Rc<RefCell<Vec<Value>>> = Rc::default();
    let sink = seen.clone();
    let mode = Mode::Idle {
        settle: Duration::ZERO,
        on_ready: Box::new(move |event| sink.borrow_mut().push(event.clone())),
    };
    let report = loadgen::run(options(&backend.url("ws", "127.0.0.1"), 40, 50), mode).unwrap();
    assert_eq!(errors(&report), []);
    assert_eq!(report.live.opened.get(), 40);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["event"], "ready");
    assert_eq!(seen[0]["opened"], 40);
    assert!(report.watched_rss_kib.unwrap() > 0);
}

#[test]
fn wss_with_a_ca_file_and_sni_from_the_url() {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("loadgen-ca.pem");
    std::fs::write(&ca, key.cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![key.cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()).into(),
        )
        .unwrap();
    let backend = Backend::spawn(
        Echo::Faithful,
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))),
    );
    let mut opts = options(&backend.url("wss", "localhost"), 2, 200);
    opts.tls = Some(client::tls_config(Some(&ca), false).unwrap());
    let mode = Mode::Rtt {
        size: 100,
        rate: 500.0,
    };
    let report = loadgen::run(opts, mode).unwrap();
    assert_eq!(errors(&report), []);
    assert_eq!(report.live.received.get(), 100);

    // A name the certificate does not cover fails the TLS handshake.
    let mut opts = options(&backend.url("wss", "127.0.0.1"), 1, 50);
    opts.tls = Some(client::tls_config(Some(&ca), false).unwrap());
    let report = loadgen::run(opts, Mode::Handshake).unwrap();
    assert!(report.live.errors.tls.get() > 0);
    assert_eq!(report.live.cycles.get(), 0);
}

#[test]
fn the_bench_echo_backend_passes_the_generator_checks() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::select! {
                _ = loadgen::echo::serve(listener) => {}
                _ = stopped => {}
            }
        });
    });
    let mode = Mode::Throughput {
        size: 70_000,
        in_flight: 3,
    };
    let report = loadgen::run(options(&url, 2, 200), mode).unwrap();
    assert_eq!(errors(&report), []);
    assert!(report.live.received.get() > 0);
    let report = loadgen::run(options(&url, 2, 100), Mode::Handshake).unwrap();
    assert_eq!(errors(&report), []);
    stop.send(()).unwrap();
    thread.join().unwrap();
}

#[test]
fn a_refused_port_is_a_connect_error() {
    // Bound, never listening, and kept until the end: connecting is refused,
    // and no listener of a test running beside this one can be given it.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = reserved.local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}/");
    let mode = Mode::Rtt {
        size: 64,
        rate: 100.0,
    };
    let report = loadgen::run(options(&url, 3, 50), mode).unwrap();
    assert_eq!(report.live.errors.connect.get(), 3);
    assert!(report.live.first_failure.borrow().is_some());
    drop(reserved);
}

// The codec and payload checks on their own.

fn decode_all(role: Role, wire: &[u8], split: usize) -> (Vec<String>, Vec<u8>) {
    let mut dec = Decoder::new(role);
    let (mut events, mut data) = (Vec::new(), Vec::new());
    let mut pending: Vec<u8> = Vec::new();
    for piece in wire.chunks(split.max(1)) {
        pending.extend_from_slice(piece);
        let used = dec
            .decode(&mut pending, &mut |ev| match ev {
                Event::Data(d) => data.extend_from_slice(d),
                other => events.push(format!("{other:?}")),
            })
            .expect("valid frames");
        pending.drain(..used);
        assert!(pending.len() <= codec::MAX_PENDING);
    }
    assert!(pending.is_empty());
    (events, data)
}

#[test]
fn frames_decode_the_same_across_any_read_split() {
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
    let mut wire = Vec::new();
    codec::put_header(&mut wire, false, OpCode::Binary, Some([1, 2, 3, 4]), 3);
    codec::put_masked(&mut wire, &payload[..3], [1, 2, 3, 4], 0);
    codec::put_frame(&mut wire, OpCode::Ping, Some([9, 8, 7, 6]), b"hi");
    codec::put_header(
        &mut wire,
        true,
        OpCode::Continuation,
        Some([5, 6, 7, 8]),
        (payload.len() - 3) as u64,
    );
    codec::put_masked(&mut wire, &payload[3..], [5, 6, 7, 8], 0);
    let (whole, data) = decode_all(Role::Server, &wire, wire.len());
    assert_eq!(data, payload);
    assert_eq!(whole.len(), 5, "{whole:?}");
    for split in [1, 2, 3, 5, 13, 127, 4096] {
        let (events, data) = decode_all(Role::Server, &wire, split);
        assert_eq!(events, whole, "split {split}");
        assert_eq!(data, payload, "split {split}");
    }
}

#[test]
fn decoder_rejects_frames_rfc_6455_forbids() {
    let reject = |role: Role, wire: &[u8]| {
        let mut wire = wire.to_vec();
        Decoder::new(role)
            .decode(&mut wire, &mut |_| {})
            .unwrap_err()
    };
    let mut masked = Vec::new();
    codec::put_frame(&mut masked, OpCode::Binary, Some([1, 2, 3, 4]), b"x");
    assert_eq!(reject(Role::Client, &masked), ProtocolError::Masking);
    assert_eq!(
        reject(Role::Client, &[0x83, 0]),
        ProtocolError::ReservedOpcode
    );
    assert_eq!(
        reject(Role::Client, &[0xC2, 0]),
        ProtocolError::ReservedBits
    );
    assert_eq!(
        reject(Role::Client, &[0x09, 0]),
        ProtocolError::BadControlFrame
    );
    assert_eq!(
        reject(Role::Client, &[0x89, 126, 0, 126]),
        ProtocolError::BadControlFrame
    );
    assert_eq!(
        reject(Role::Client, &[0x80, 0]),
        ProtocolError::BadFragmentation
    );
    assert_eq!(
        reject(Role::Client, &[0x02, 0, 0x02, 0]),
        ProtocolError::BadFragmentation
    );
}

#[test]
fn masking_matches_the_byte_by_byte_definition_at_every_phase() {
    let key = [0xA, 0xB, 0xC, 0xD];
    for phase in 0..4 {
        for len in 0..20u8 {
            let src: Vec<u8> = (0..len).collect();
            let mut fast = src.clone();
            codec::xor_in_place(&mut fast, key, phase);
            let slow: Vec<u8> = src
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[(phase + i) % 4])
                .collect();
            assert_eq!(fast, slow, "phase {phase} len {len}");
        }
    }
}

fn message(p: &Pattern, conn: u32, seq: u64) -> Vec<u8> {
    let mut m = Pattern::header(conn, seq).to_vec();
    m.extend_from_slice(p.filler(conn, seq));
    m
}

#[test]
fn checker_accepts_any_chunking_and_rejects_any_flipped_byte() {
    let p = Pattern::new(40);
    let first = message(&p, 7, 0);
    for split in 1..first.len() {
        let mut c = Checker::new(7);
        for chunk in first.chunks(split) {
            c.data(&p, chunk);
        }
        assert_eq!(c.end(&p), Verdict::Intact(0));
    }
    for flip in 0..first.len() {
        let mut bad = first.clone();
        bad[flip] ^= 1;
        let mut c = Checker::new(7);
        for chunk in bad.chunks(5) {
            c.data(&p, chunk);
        }
        assert_eq!(c.end(&p), Verdict::Mismatch(0), "flip {flip}");
    }
}

#[test]
fn checker_rejects_reordered_short_long_and_cross_wired_messages() {
    let p = Pattern::new(64);
    let mut c = Checker::new(1);
    c.data(&p, &message(&p, 1, 1));
    assert_eq!(c.end(&p), Verdict::Mismatch(0), "second before first");
    c.data(&p, &message(&p, 2, 1));
    assert_eq!(c.end(&p), Verdict::Mismatch(1), "another connection's");
    c.data(&p, &message(&p, 1, 2)[..63]);
    assert_eq!(c.end(&p), Verdict::Mismatch(2), "short");
    c.data(&p, &message(&p, 1, 3));
    c.data(&p, b"x");
    assert_eq!(c.end(&p), Verdict::Mismatch(3), "long");
    c.data(&p, &message(&p, 1, 4));
    assert_eq!(c.end(&p), Verdict::Intact(4));
    assert_ne!(p.filler(1, 0), p.filler(1, 1));
}

#[test]
fn accept_key_matches_the_rfc_example() {
    // RFC 6455 section 1.3.
    assert_eq!(
        client::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn urls_parse_and_sources_spread_over_ipv4_loopback_only() {
    let t = Target::parse("ws://127.0.0.1:8080/echo?x=1").unwrap();
    assert_eq!(
        (t.tls, t.addr.port(), t.path.as_str()),
        (false, 8080, "/echo?x=1")
    );
    assert_eq!(t.host_header, "127.0.0.1:8080");
    assert_eq!(t.source_for(3, 64), Some("127.0.0.4".parse().unwrap()));
    assert_eq!(t.source_for(3, 0), None);
    let t = Target::parse("wss://[::1]/").unwrap();
    assert_eq!((t.tls, t.addr.port(), t.host.as_str()), (true, 443, "::1"));
    assert_eq!(t.source_for(3, 64), None);
    assert_eq!(Target::parse("ws://localhost:9").unwrap().path, "/");
    assert!(Target::parse("http://x/").is_err());
}

#[test]
fn proc_readings_cover_this_process() {
    let me = std::process::id();
    assert!(stats::cpu_us(me).is_some());
    assert!(stats::rss_kib(me).unwrap() > 0);
    assert!(stats::sum_over(&[me, u32::MAX], stats::rss_kib).is_none());
}
