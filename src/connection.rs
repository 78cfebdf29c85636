//! One client connection from accept to relay: TLS, the request head under
//! its limits, the handshake checks, routing, the backend upgrade, and the
//! hand-over of both upgraded sides to the relay.
//!
//! This file takes the connection from accept to its first request head
//! (PROXY header, admission at accept, TLS); the steps after it live in
//! one file each: `head` reads the request head and hands it to hyper,
//! `dispatch` sends each request to the upgrade or the plain-HTTP proxy,
//! `upgrade` upgrades a backend, `handover` relays and writes the
//! access-log line, `access` answers and logs refusals, and `admit`
//! holds the connection's side of admission control.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info};

use crate::admission::{Gate, Ticket};
use crate::config::{self, Admit, Cidr, ProxyProtocol};
use crate::handshake::{FirstByte, Reject};
use crate::http_proxy::framing::Verdict;
use crate::proxy_protocol::{self, Header, ReadError};
use crate::runtime::Runtime;
use crate::shutdown::Guard;
use crate::snapshot::{ListenerKey, Snapshot};
use crate::tls;
use admit::{pending, refuse_at_accept};
use head::{reject_raw, serve_http};

mod access;
mod admit;
mod dispatch;
mod handover;
mod head;
mod upgrade;

/// What a connection knows about where it was accepted.
pub struct Accepted {
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's address when it is bound to one IP: then it is this
    /// connection's local address too, and no `getsockname` is needed.
    /// `None` for a wildcard bind, where only the socket knows.
    pub local: Option<SocketAddr>,
    /// The listener it arrived on, its key in the snapshot.
    pub listener: ListenerKey,
    /// The snapshot current when the connection was accepted; the
    /// connection keeps it (routes, limits, backend) for its whole life.
    pub snapshot: Arc<Snapshot>,
    /// Counts this connection as open until it ends.
    pub guard: Guard,
    /// What the running proxy shares with connections (live state,
    /// metrics).
    pub runtime: Arc<Runtime>,
    /// The listener's admission state.
    pub gate: Arc<Gate>,
}

/// What the handshake needs of [`Accepted`], shared with hyper's service.
struct Context {
    /// The TCP peer, or the client a PROXY protocol header named.
    peer: SocketAddr,
    /// Where that client connected: the PROXY header's destination, or
    /// this socket's local address.
    destination: SocketAddr,
    listener: Arc<str>,
    /// Index of the listener in the snapshot's configuration.
    listener_index: usize,
    snapshot: Arc<Snapshot>,
    shared: Arc<Runtime>,
    guard: std::sync::Mutex<Option<Guard>>,
    /// The connection's place on its listener, held until it ends.
    ticket: std::sync::Mutex<Option<Ticket>>,
    /// The listener's admission state and admit queue settings.
    gate: Arc<Gate>,
    admit: Option<Admit>,
    /// The listener's `keepalive_timeout`.
    keepalive: std::time::Duration,
    /// Which request, if any, carried both framings (request smuggling).
    framing: Arc<Verdict>,
    /// Requests seen so far on this connection.
    requests: std::sync::atomic::AtomicUsize,
    /// The verified client certificate's identity, set after a TLS
    /// handshake that carried one.
    client_cert: std::sync::OnceLock<tls::ClientIdentity>,
}

/// Serves one accepted TCP connection to its end.
///
/// The larger steps (the request exchange, the TLS handshake, the PROXY
/// header, the refusals) are boxed when they are reached. Held inline they
/// made this task's future 12 KB, which the runtime copies when it spawns
/// the task and again when the task completes; boxed, the task is 3 KB.
pub async fn serve(stream: TcpStream, accepted: Accepted) {
    let snapshot = accepted.snapshot.clone();
    let Some((index, listener)) = snapshot.listener(&accepted.listener) else {
        // A reload removed the listener between accept and now.
        return;
    };
    let mut stream = stream;
    let deadline = Instant::now() + snapshot.config.handshake_timeout;
    let local = match accepted.local {
        Some(local) => local,
        None => stream.local_addr().unwrap_or(accepted.peer),
    };
    let (peer, destination) = match listener.proxy_protocol {
        None => (accepted.peer, local),
        Some(versions) => {
            let read = Box::pin(proxy_header(
                &mut stream,
                versions,
                listener,
                &accepted,
                deadline,
            ));
            match read.await {
                Some(Header::Proxy {
                    source,
                    destination,
                }) => (source, destination),
                Some(Header::Local) => (accepted.peer, local),
                None => return,
            }
        }
    };
    let admission = &listener.admission;
    let entered = accepted.gate.enter(peer.ip(), admission, Instant::now());
    let accepted = Arc::new(Context {
        peer,
        destination,
        listener: Arc::from(listener.name.as_str()),
        listener_index: index,
        snapshot: accepted.snapshot,
        shared: accepted.runtime,
        guard: std::sync::Mutex::new(Some(accepted.guard)),
        ticket: std::sync::Mutex::new(None),
        gate: accepted.gate,
        admit: admission.admit,
        keepalive: listener.keepalive_timeout,
        framing: Arc::default(),
        requests: Default::default(),
        client_cert: std::sync::OnceLock::new(),
    });
    debug!(peer = %accepted.peer, listener = %accepted.listener, "connection opened");
    let ticket = match entered {
        Ok(ticket) => ticket,
        Err(refusal) => {
            let tls = snapshot.tls[index].is_some();
            return Box::pin(refuse_at_accept(&mut stream, &accepted, refusal, tls)).await;
        }
    };
    let dropped = ticket.dropped_signal();
    *accepted.ticket.lock().expect("not poisoned") = Some(ticket);
    // Small frames must not wait for Nagle's algorithm on either side.
    let _ = stream.set_nodelay(true);
    let limit = listener.max_header_bytes;
    match &snapshot.tls[index] {
        None => {
            Box::pin(serve_http(
                stream,
                accepted,
                deadline,
                limit,
                Some(FirstByte::NotTls),
                false,
                dropped,
            ))
            .await
        }
        Some(config) => {
            let mut first = [0u8; 1];
            let peeked = pending(&dropped, timeout_at(deadline, stream.peek(&mut first)));
            match peeked.await {
                None => return accepted.pending_dropped(),
                Some(Ok(Ok(1))) if first[0] == tls::TLS_HANDSHAKE_RECORD => {}
                Some(Ok(Ok(1))) => {
                    Box::pin(reject_raw(
                        &mut stream,
                        &accepted,
                        Reject::PlainOnTlsListener,
                    ))
                    .await;
                    return;
                }
                Some(Ok(_)) => return,
                Some(Err(_)) => {
                    accepted.tls_failed("no ClientHello in time (handshake_timeout)");
                    return;
                }
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            let handshake = Box::pin(timeout_at(deadline, acceptor.accept(stream)));
            match pending(&dropped, handshake).await {
                None => accepted.pending_dropped(),
                Some(Ok(Ok(tls_stream))) => {
                    // rustls has verified any certificate the client sent.
                    if let Some(leaf) = tls_stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                    {
                        let _ = accepted.client_cert.set(tls::ClientIdentity::of(leaf));
                    }
                    Box::pin(serve_http(
                        tls_stream, accepted, deadline, limit, None, true, dropped,
                    ))
                    .await
                }
                Some(Ok(Err(e))) => accepted.tls_failed(&e.to_string()),
                Some(Err(_)) => accepted.tls_failed("timed out (handshake_timeout)"),
            }
        }
    }
}

/// Reads the PROXY protocol header that must start the connection; `None`
/// when the connection is to be closed. There is no answer on failure:
/// whatever sent this is no HTTP client, and the balancer in front must not
/// mistake an answer for a backend's.
async fn proxy_header(
    stream: &mut TcpStream,
    versions: ProxyProtocol,
    listener: &config::Listener,
    accepted: &Accepted,
    deadline: Instant,
) -> Option<Header> {
    let peer = accepted.peer;
    let failed = |reason: &'static str, detail: &dyn std::fmt::Display| {
        if let Some(m) = &accepted.runtime.metrics {
            m.proxy_protocol_error(&listener.name, reason);
        }
        info!(peer = %peer, listener = %listener.name, reason = %detail, "connection closed: PROXY protocol");
        None
    };
    let from = &listener.proxy_protocol_from;
    if !from.is_empty() && !Cidr::any_contains(from, peer.ip()) {
        return failed("untrusted", &"peer not in proxy_protocol_from");
    }
    match timeout_at(deadline, proxy_protocol::read(stream, versions)).await {
        Ok(Ok(header)) => Some(header),
        Ok(Err(ReadError::Header(e))) => failed(e.reason(), &e),
        Ok(Err(ReadError::Closed(true))) => {
            debug!(peer = %peer, "closed before sending anything");
            None
        }
        Ok(Err(e)) => failed("malformed", &e),
        Err(_) => failed(
            "timeout",
            &"no PROXY protocol header in time (handshake_timeout)",
        ),
    }
}
