//! What an idle connection keeps inline, pinned so that a change which
//! stores the client's stream twice again (an `async fn` keeps each
//! argument twice in its future), or keeps the relay's inputs beside the
//! relay made from them, shows up here rather than in the memory
//! benchmark (docs/benchmarks.md, "Idle memory").

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use wsgate::metrics::Meter;
use wsgate::relay::{self, Settings, Signals};

/// The size of what `f` would return, without calling it.
fn returned_size<A, R>(_: impl FnOnce(A) -> R) -> usize {
    std::mem::size_of::<R>()
}

type Args<C> = (C, TcpStream, Settings, Signals, Option<Meter>);

#[test]
fn the_relay_future_holds_the_client_stream_once() {
    let plain = returned_size(|(c, b, s, signals, m): Args<TcpStream>| {
        relay::run(
            c,
            bytes::Bytes::new(),
            b,
            bytes::Bytes::new(),
            s,
            signals,
            m,
        )
    });
    let tls = returned_size(|(c, b, s, signals, m): Args<TlsStream<TcpStream>>| {
        relay::run(
            c,
            bytes::Bytes::new(),
            b,
            bytes::Bytes::new(),
            s,
            signals,
            m,
        )
    });
    let stream_growth =
        std::mem::size_of::<TlsStream<TcpStream>>() - std::mem::size_of::<TcpStream>();
    // One copy of the larger stream, give or take alignment.
    assert!(
        tls - plain <= stream_growth + 64,
        "the relay future grows by {} bytes over TLS, the stream by {stream_growth}",
        tls - plain
    );
}

/// What the relay future over plain TCP may keep besides its two streams:
/// the relay's own state (1,272 bytes in a debug build when this was
/// written, about as much in release). The future once kept its settings,
/// signals, meter and read-ahead a second time (416 bytes more); every
/// idle connection pays for each byte here, so raising this is a decision
/// about idle memory, to be measured with `benches/alloc`.
const RELAY_STATE_CEILING: usize = 1_400;

#[test]
fn the_relay_future_keeps_its_inputs_only_in_the_relay() {
    let plain = returned_size(|(c, b, s, signals, m): Args<TcpStream>| {
        relay::run(
            c,
            bytes::Bytes::new(),
            b,
            bytes::Bytes::new(),
            s,
            signals,
            m,
        )
    });
    let streams = 2 * std::mem::size_of::<TcpStream>();
    assert!(
        plain - streams <= RELAY_STATE_CEILING,
        "the relay future keeps {} bytes besides its streams (ceiling {RELAY_STATE_CEILING})",
        plain - streams
    );
}
