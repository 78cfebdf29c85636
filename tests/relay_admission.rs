//! Admission rules inside the relay, under paused time: the client's
//! message rate ("slow" and "close") and the route's `max_lifetime`. The
//! rules are unit-tested in src/relay/lifecycle/admission_tests.rs; these
//! check that the relay acts on them over real sockets.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;

/// A client offering 1,000 messages a second against 100 a second with
/// "slow" is read at 100 a second: every message arrives, in order, and
/// the backend never sees more than the rate plus the burst in a second.
#[tokio::test(start_paused = true)]
async fn slow_holds_a_client_to_the_rate_and_loses_nothing() {
    let defaults = "max_messages_per_second = 100\nmessage_burst = 10\nidle_timeout = \"60s\"";
    let (_proxy, mut client, mut backend) = raw_pair(defaults).await;
    // Under paused time a write Nagle holds back would wait for an
    // acknowledgement while the clock jumps ahead.
    client.stream.set_nodelay(true).unwrap();
    const N: usize = 300;
    let sender = tokio::spawn(async move {
        for i in 0..N {
            client.send(true, 0x1, format!("m{i}").as_bytes()).await;
            // The schedule of the test: 1,000 messages a second.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        client
    });
    let started = Instant::now();
    let mut arrivals = Vec::with_capacity(N);
    for i in 0..N {
        let frame = backend.recv().await.expect("every message arrives");
        assert_eq!(frame.payload, format!("m{i}").as_bytes(), "in order");
        arrivals.push(started.elapsed());
    }
    let _client = within(sender).await.unwrap();
    // 10 at once, then 290 at 100 a second: 2.9 s, and not much more.
    let last = arrivals[N - 1];
    assert!(last >= Duration::from_millis(2800), "{last:?}");
    assert!(last < Duration::from_millis(3500), "{last:?}");
    for window in 0..2u64 {
        let from = Duration::from_millis(500 + 1000 * window);
        let to = from + Duration::from_secs(1);
        let seen = arrivals.iter().filter(|t| **t >= from && **t < to).count();
        assert!((90..=111).contains(&seen), "{seen} messages in a second");
    }
}

/// With "close", the client is closed 1008 "message rate" and the backend
/// 1001; nothing past the first message over the bucket is forwarded.
#[tokio::test(start_paused = true)]
async fn close_closes_1008_to_the_client_and_1001_to_the_backend() {
    let defaults = "max_messages_per_second = 100\nmessage_burst = 10\non_message_rate = \"close\"";
    let (_proxy, mut client, mut backend) = raw_pair(defaults).await;
    client.stream.set_nodelay(true).unwrap();
    for i in 0..40 {
        client.send(true, 0x2, &[i]).await;
    }
    let close = client.recv_close().await.expect("a close frame");
    assert_eq!(close.close_code(), 1008);
    assert_eq!(&close.payload[2..], b"message rate");
    let mut forwarded = 0;
    loop {
        let frame = backend.recv().await.expect("the backend's close");
        if frame.opcode == 0x8 {
            assert_eq!(frame.close_code(), 1001);
            break;
        }
        forwarded += 1;
    }
    assert!((10..=12).contains(&forwarded), "{forwarded} forwarded");
}

/// Twenty connections opened together with `max_lifetime = "5s"` close
/// 1001 "max lifetime" both ways between 4.5 and 5.5 s, not all at once.
#[tokio::test(start_paused = true)]
async fn max_lifetime_closes_spread_over_ten_percent_either_way() {
    let (addr, mut accepted) = raw_backend().await;
    let defaults = "[defaults]\nmax_lifetime = \"5s\"\nidle_timeout = \"1h\"";
    let proxy = start_proxy(&simple_config(&[addr], defaults)).await;
    let started = Instant::now();
    let mut pairs = Vec::new();
    for _ in 0..20 {
        let (client, answer) =
            RawWs::connect(proxy.addr("main"), &upgrade_request("/echo", "")).await;
        assert_eq!(answer.status, 101);
        let backend = within(accepted.recv()).await.expect("backend connection");
        pairs.push((client, backend));
    }
    // Each client waits on its own, so that each close is timed when it
    // arrives.
    let waits: Vec<_> = pairs
        .into_iter()
        .map(|(mut client, mut backend)| {
            tokio::spawn(async move {
                let close = client.recv_close().await.expect("a close frame");
                let at = started.elapsed();
                assert_eq!(close.close_code(), 1001);
                assert_eq!(&close.payload[2..], b"max lifetime");
                assert_eq!(backend.recv_close().await.unwrap().close_code(), 1001);
                at
            })
        })
        .collect();
    let mut closes = Vec::new();
    for wait in waits {
        closes.push(within(wait).await.unwrap());
    }
    let first = *closes.iter().min().unwrap();
    let last = *closes.iter().max().unwrap();
    assert!(first >= Duration::from_millis(4500), "{first:?}");
    assert!(last <= Duration::from_millis(5600), "{last:?}");
    // Uniform over 1 s: twenty closes within 100 ms of each other would be
    // a one-in-10^17 event.
    assert!(
        last - first >= Duration::from_millis(100),
        "{first:?}..{last:?}"
    );
}
