//! The contract's after-upgrade table through the real proxy, both
//! directions: limits, protocol errors, idle timeout, keepalive pings, and
//! peers that vanish. Each test checks the close code each side sees.

mod common;

use std::time::Duration;
use tokio::time::Instant;

use common::*;

const LIMITS: &str = "max_message_bytes = 1000\nmax_frame_bytes = 800";

/// The offender gets `code`, the other side `other`, and the frames the
/// proxy sends are masked towards the backend only.
async fn expect_closes(offender: &mut RawWs, code: u16, other: &mut RawWs, other_code: u16) {
    let close = offender.recv_close().await.expect("offender gets a close");
    assert_eq!(close.close_code(), code, "offender's code");
    assert!(!close.payload[2..].is_empty(), "a reason is given");
    let close = other.recv_close().await.expect("other side gets a close");
    assert_eq!(close.close_code(), other_code, "other side's code");
    assert!(offender.closed().await, "offender's TCP closed");
    assert!(other.closed().await, "other side's TCP closed");
}

fn masked_towards_backend(frame: &RawFrame, to_backend: bool) {
    assert_eq!(frame.masked, to_backend, "RFC 6455 section 5.3");
}

#[tokio::test]
async fn client_message_exactly_at_the_limit_passes_one_byte_over_is_1009() {
    let (_proxy, mut client, mut backend) = raw_pair(LIMITS).await;
    client.send(false, 0x2, &[7; 500]).await;
    client.send(true, 0x0, &[7; 500]).await;
    assert_eq!(backend.recv().await.unwrap().payload.len(), 500);
    assert_eq!(backend.recv().await.unwrap().payload.len(), 500);
    client.send(false, 0x2, &[7; 500]).await;
    client.send(true, 0x0, &[7; 501]).await;
    assert_eq!(
        backend.recv().await.unwrap().payload.len(),
        500,
        "first fragment passed"
    );
    let close = backend.recv_close().await.unwrap();
    masked_towards_backend(&close, true);
    assert_eq!(close.close_code(), 1001);
    let close = client.recv_close().await.unwrap();
    masked_towards_backend(&close, false);
    assert_eq!(close.close_code(), 1009);
}

#[tokio::test]
async fn two_fragments_of_600_against_a_1000_byte_limit_fail() {
    let (_proxy, mut client, mut backend) = raw_pair("max_message_bytes = 1000").await;
    client.send(false, 0x1, &[b'a'; 600]).await;
    client.send(true, 0x0, &[b'a'; 600]).await;
    assert_eq!(backend.recv().await.unwrap().payload.len(), 600);
    expect_closes(&mut client, 1009, &mut backend, 1001).await;
}

#[tokio::test]
async fn client_frame_over_max_frame_bytes_is_1009() {
    let (_proxy, mut client, mut backend) = raw_pair(LIMITS).await;
    client.send(true, 0x2, &[1; 801]).await;
    expect_closes(&mut client, 1009, &mut backend, 1001).await;
}

#[tokio::test]
async fn backend_message_over_the_limit_is_1009_to_it_and_1014_to_the_client() {
    let (_proxy, mut client, mut backend) = raw_pair(LIMITS).await;
    backend.send(true, 0x2, &[1; 800]).await;
    assert_eq!(client.recv().await.unwrap().payload.len(), 800);
    backend.send(false, 0x2, &[1; 800]).await;
    backend.send(true, 0x0, &[1; 201]).await;
    assert_eq!(client.recv().await.unwrap().payload.len(), 800);
    expect_closes(&mut backend, 1009, &mut client, 1014).await;
}

/// Every protocol-error row, from the client: 1002 to it, 1001 to the backend.
#[tokio::test]
async fn client_protocol_errors_are_1002() {
    let cases: [(&str, Vec<u8>); 8] = [
        ("unmasked frame", vec![0x81, 0x02, b'h', b'i']),
        ("reserved opcode", encode_frame(true, 0x3, b"x", true)),
        (
            "control frame over 125 bytes",
            encode_frame(true, 0x9, &[0; 126], true),
        ),
        (
            "fragmented control frame",
            encode_frame(false, 0x9, b"p", true),
        ),
        (
            "continuation without a start",
            encode_frame(true, 0x0, b"x", true),
        ),
        ("RSV1 without an extension", {
            let mut f = encode_frame(true, 0x1, b"x", true);
            f[0] |= 0x40;
            f
        }),
        ("new message while one is open", {
            let mut f = encode_frame(false, 0x1, b"a", true);
            f.extend(encode_frame(true, 0x1, b"b", true));
            f
        }),
        (
            "close with a one-byte payload",
            encode_frame(true, 0x8, &[3], true),
        ),
    ];
    for (name, bytes) in cases {
        let (_proxy, mut client, mut backend) = raw_pair("").await;
        client.send_raw(&bytes).await;
        let close = client
            .recv_close()
            .await
            .unwrap_or_else(|| panic!("{name}: no close"));
        assert_eq!(close.close_code(), 1002, "{name}");
        let close = backend
            .recv_close()
            .await
            .unwrap_or_else(|| panic!("{name}: backend"));
        assert_eq!(close.close_code(), 1001, "{name}");
    }
}

#[tokio::test]
async fn backend_protocol_errors_are_1002_and_the_client_gets_1014() {
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "masked frame from the backend",
            encode_frame(true, 0x1, b"hi", true),
        ),
        ("reserved opcode", encode_frame(true, 0xB, b"", false)),
        (
            "control frame over 125 bytes",
            encode_frame(true, 0xA, &[0; 200], false),
        ),
    ];
    for (name, bytes) in cases {
        let (_proxy, mut client, mut backend) = raw_pair("").await;
        backend.send_raw(&bytes).await;
        let close = backend
            .recv_close()
            .await
            .unwrap_or_else(|| panic!("{name}: no close"));
        assert_eq!(close.close_code(), 1002, "{name}");
        assert!(close.masked, "the proxy masks what it sends a backend");
        let close = client
            .recv_close()
            .await
            .unwrap_or_else(|| panic!("{name}: client"));
        assert_eq!(close.close_code(), 1014, "{name}");
    }
}

// The timer rules below run under paused time: the clock moves only when
// every task waits, so their timings are exact and a loaded machine cannot
// stretch them. The rules themselves are unit-tested in
// src/relay/lifecycle/tests.rs; these check that the relay acts on them.

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_both_with_1001() {
    let (_proxy, mut client, mut backend) = raw_pair("idle_timeout = \"400ms\"").await;
    let started = Instant::now();
    let close = client.recv_close().await.unwrap();
    assert_eq!(close.close_code(), 1001);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(390), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    assert_eq!(backend.recv_close().await.unwrap().close_code(), 1001);
}

#[tokio::test(start_paused = true)]
async fn traffic_every_half_timeout_keeps_the_connection_open() {
    let (_proxy, mut client, mut backend) = raw_pair("idle_timeout = \"600ms\"").await;
    // Pacing traffic is the point of this test, so the sleeps are the
    // schedule, not a wait for readiness.
    for i in 0..6u8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if i % 2 == 0 {
            client.send(true, 0x1, &[b'0' + i]).await;
            assert_eq!(backend.recv().await.unwrap().payload, [b'0' + i]);
        } else {
            backend.send(true, 0x1, &[b'0' + i]).await;
            assert_eq!(client.recv().await.unwrap().payload, [b'0' + i]);
        }
    }
    client.send(true, 0x1, b"still here").await;
    assert_eq!(backend.recv().await.unwrap().payload, b"still here");
}

#[tokio::test(start_paused = true)]
async fn pings_come_at_the_interval_and_their_pongs_stay_with_the_proxy() {
    let defaults = "ping_interval = \"300ms\"\nping_timeout = \"2s\"\nidle_timeout = \"30s\"";
    // Timed from before the connection exists and then from each pong, so
    // that the lower bound holds however slowly the test reaches its read.
    let mut started = Instant::now();
    let (_proxy, mut client, mut backend) = raw_pair(defaults).await;
    for _ in 0..2 {
        let ping = client.recv().await.unwrap();
        assert_eq!(ping.opcode, 0x9);
        assert!(!ping.masked);
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(400), "{elapsed:?}");
        client.send(true, 0xA, &ping.payload).await;
        started = Instant::now();
    }
    client.send(true, 0x1, b"after pongs").await;
    let first = backend.recv().await.unwrap();
    assert_eq!(
        (first.opcode, first.payload.as_slice()),
        (0x1, &b"after pongs"[..]),
        "no pong reached the backend"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_answers_pings_is_closed_with_1001() {
    let defaults = "ping_interval = \"200ms\"\nping_timeout = \"300ms\"";
    let (_proxy, mut client, mut backend) = raw_pair(defaults).await;
    let started = Instant::now();
    let ping = client.recv().await.unwrap();
    assert_eq!(ping.opcode, 0x9);
    let close = client.recv_close().await.unwrap();
    assert_eq!(close.close_code(), 1001);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(490), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
    assert_eq!(backend.recv_close().await.unwrap().close_code(), 1001);
}

#[tokio::test(start_paused = true)]
async fn a_side_that_never_answers_the_close_is_disconnected_after_five_seconds() {
    let (_proxy, mut client, mut backend) = raw_pair("").await;
    client.send_close(1000, "bye").await;
    assert_eq!(backend.recv_close().await.unwrap().close_code(), 1000);
    let started = Instant::now();
    // The backend never answers: both TCP connections end 5 s after the
    // first close.
    assert!(client.closed().await);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(4900), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(5500), "{elapsed:?}");
    assert!(backend.closed().await);
}

#[tokio::test]
async fn backend_vanishing_gives_the_client_1014_within_a_second() {
    let (_proxy, mut client, backend) = raw_pair("").await;
    let started = Instant::now();
    drop(backend);
    let close = client.recv_close().await.unwrap();
    assert_eq!(close.close_code(), 1014);
    // At once, as opposed to at the 60 s idle timeout; the bound leaves room
    // for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn client_vanishing_gives_the_backend_1001_within_a_second() {
    let (_proxy, client, mut backend) = raw_pair("").await;
    let started = Instant::now();
    drop(client);
    let close = backend.recv_close().await.unwrap();
    assert_eq!(close.close_code(), 1001);
    assert!(close.masked);
    // At once, as opposed to at the 60 s idle timeout.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn backend_vanishing_mid_frame_still_closes_the_client() {
    let (_proxy, mut client, mut backend) = raw_pair("").await;
    // A header announcing 1000 bytes, then only 10 of them.
    let mut partial = encode_frame(true, 0x2, &[0; 1000], false);
    partial.truncate(4 + 10);
    backend.send_raw(&partial).await;
    drop(backend);
    // The client cannot be sent a close inside a frame; its TCP is closed.
    assert!(client.closed().await);
}

#[tokio::test]
async fn a_hundred_mib_message_in_one_mib_frames_passes_intact() {
    let limits = "max_message_bytes = 209715200\nmax_frame_bytes = 1048576";
    let (_proxy, mut client, mut backend) = raw_pair(limits).await;
    let frame: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
    let sender = tokio::spawn(async move {
        for i in 0..100 {
            client
                .send(i == 99, if i == 0 { 0x2 } else { 0x0 }, &frame)
                .await;
        }
        client
    });
    let mut total = 0;
    for i in 0..100 {
        let f = backend.recv().await.expect("frame");
        assert_eq!(f.payload.len(), 1 << 20);
        assert_eq!(f.payload[12345], (12345 % 253) as u8);
        assert_eq!(f.fin, i == 99);
        total += f.payload.len();
    }
    assert_eq!(total, 100 << 20);
    within(sender).await.unwrap();
}

#[tokio::test]
async fn close_handshake_started_by_the_proxy_ends_both_tcp_connections() {
    let (_proxy, mut client, mut backend) = raw_pair("idle_timeout = \"200ms\"").await;
    assert_eq!(client.recv_close().await.unwrap().close_code(), 1001);
    assert_eq!(backend.recv_close().await.unwrap().close_code(), 1001);
    client.send_close(1001, "").await;
    backend.send_close(1001, "").await;
    let started = Instant::now();
    assert!(client.closed().await);
    assert!(backend.closed().await);
    // Once both closes have crossed, not at the 5 s close grace.
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn client_close_codes_forbidden_on_the_wire_are_1002_to_it_and_1001_to_the_backend() {
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let (_proxy, mut client, mut backend) = raw_pair("").await;
        client.send_close(code, "odd").await;
        expect_closes(&mut client, 1002, &mut backend, 1001).await;
    }
}

#[tokio::test]
async fn backend_close_codes_forbidden_on_the_wire_are_1002_to_it_and_1014_to_the_client() {
    for code in [0u16, 1005, 1006, 2000, 5000] {
        let (_proxy, mut client, mut backend) = raw_pair("").await;
        backend.send_close(code, "odd").await;
        expect_closes(&mut backend, 1002, &mut client, 1014).await;
    }
}

#[tokio::test]
async fn registered_and_private_close_codes_pass_both_ways() {
    for code in [1000u16, 1003, 1007, 1012, 1013, 1014, 3000, 4999] {
        let (_proxy, mut client, mut backend) = raw_pair("").await;
        client.send_close(code, "bye").await;
        assert_eq!(backend.recv_close().await.unwrap().close_code(), code);
        backend.send_close(code, "bye").await;
        assert_eq!(client.recv_close().await.unwrap().close_code(), code);
    }
}

/// A client cycling through close codes cannot grow `/metrics`: the
/// `code` label keeps the RFC's named codes and groups the ranges.
#[tokio::test]
async fn close_codes_chosen_by_clients_keep_the_metric_labels_bounded() {
    let backend = echo_backend().await;
    let toml = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        simple_config(&[backend.addr], "")
    );
    let proxy = start_proxy(&toml).await;
    let codes: Vec<u16> = (0..=u16::MAX).step_by(331).chain(1000..=1015).collect();
    assert!(codes.len() > 200);
    for batch in codes.chunks(25) {
        let mut tasks = Vec::new();
        for &code in batch {
            let addr = proxy.addr("main");
            tasks.push(tokio::spawn(async move {
                let (mut client, answer) =
                    RawWs::connect(addr, &upgrade_request("/echo", "")).await;
                assert_eq!(answer.status, 101);
                client.send_close(code, "").await;
                client.recv_close().await.expect("a close comes back");
                assert!(client.closed().await);
            }));
        }
        for task in tasks {
            within(task).await.unwrap();
        }
    }
    for _ in 0..500 {
        if proxy.shared.tracker.open() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.shared.tracker.open(), 0, "every connection ended");
    let (status, scrape) = admin(proxy.shared.admin_addr.unwrap(), "GET", "/metrics").await;
    assert_eq!(status, 200);
    let series: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("wsgate_closes_total{"))
        .collect();
    let total = sample(&scrape, "wsgate_closes_total", &[]);
    assert_eq!(total, codes.len() as f64, "every close counted");
    // At most the 16 named codes, 3xxx, 4xxx and other, per initiator.
    assert!(
        series.len() <= 19 * 3,
        "{} series:\n{}",
        series.len(),
        series.join("\n")
    );
    assert!(series.iter().any(|l| l.contains("code=\"4xxx\"")));
    assert!(series.iter().any(|l| l.contains("code=\"1002\"")));
}
