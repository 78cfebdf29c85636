//! After the 101: the relay task that takes both upgraded sides over from
//! the handshake, relays until the connection ends, and writes its
//! access-log line.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::admission::Ticket;
use crate::close::{CloseCode, CloseInfo, Initiator};
use crate::handshake::Rewind;
use crate::http_proxy::framing::Scanned;
use crate::metrics::Meter;
use crate::shutdown::Guard;
use crate::{balance, push, relay, upstream};

/// What the access-log line of a relayed connection names.
pub(super) struct AccessInfo {
    pub(super) listener: Arc<str>,
    pub(super) host: String,
    pub(super) path: String,
    pub(super) route: String,
    pub(super) subprotocol: String,
    /// The authenticated subject, when the route checks who connects.
    pub(super) user: Option<String>,
}

/// Everything the relay task takes over from the handshake.
pub(super) struct Handover {
    pub(super) peer: SocketAddr,
    pub(super) backend_addr: SocketAddr,
    pub(super) backend_stream: upstream::BackendStream,
    pub(super) backend_pre: Bytes,
    pub(super) settings: relay::Settings,
    pub(super) stop: relay::Stop,
    pub(super) meter: Option<Meter>,
    pub(super) access: AccessInfo,
    /// The connection's id, push tags and largest message, for the hub.
    pub(super) push: (String, push::ConnTags, u64),
    pub(super) hub: Arc<push::Hub>,
    /// The backend's connection slot, held until the relay ends.
    pub(super) lease: balance::Lease,
    /// Counts the connection as open until the relay ends.
    pub(super) guard: Option<Guard>,
    /// Its place on the listener, given back when the relay ends.
    pub(super) ticket: Option<Ticket>,
    /// The sticky key it was placed by, for rebalancing.
    pub(super) key: Option<Vec<u8>>,
}

/// Waits for hyper to finish the client's upgrade, gets the raw client
/// stream back with the bytes already read from it, relays, and writes the
/// access-log line.
///
/// The handover comes boxed: an `async fn` keeps its arguments twice in its
/// future, which every idle connection would pay for.
pub(super) async fn relay_connection<IO>(on_upgrade: hyper::upgrade::OnUpgrade, h: Box<Handover>)
where
    IO: AsyncRead + AsyncWrite + relay::Socket + Unpin + Send + 'static,
{
    let relay_started = Instant::now();
    let client = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            debug!(peer = %h.peer, error = %e, "client upgrade failed after the 101");
            if let Some(meter) = h.meter {
                let vanished = CloseInfo {
                    code: CloseCode::GOING_AWAY,
                    initiator: Initiator::Client,
                };
                let none = relay::Counts::default();
                meter.closed(vanished, none, none, relay_started.elapsed());
            }
            return;
        }
    };
    let (id, tags, max_message_bytes) = h.push;
    let (member, inbox) = h.hub.join(id, tags, max_message_bytes);
    // On the backend's roster while relayed, so that rebalancing can ask
    // it to move.
    let enlisted = h.lease.backend().enlist(h.key.as_deref());
    // In a block of its own: what the upgrade hands back is moved into the
    // relay's future and must not keep a second slot in this task's.
    let relay = {
        let parts = match client.downcast::<TokioIo<Scanned<Rewind<IO>>>>() {
            Ok(parts) => parts,
            Err(_) => unreachable!("the upgraded IO is the one served"),
        };
        let (unread, client_io) = parts.io.into_inner().into_inner().into_parts();
        let client_pre = join(parts.read_buf, unread);
        let close = enlisted.close.clone();
        let moved: relay::Move = Box::pin(async move { close.notified().await });
        relay::run(
            client_io,
            client_pre,
            h.backend_stream,
            h.backend_pre,
            h.settings,
            relay::Signals {
                stop: h.stop,
                moved: Some(moved),
                inbox: Some(inbox),
            },
            h.meter,
        )
    };
    let end = relay.await;
    drop(enlisted);
    let connection_id = member.id().to_string();
    drop(member);
    // The backend's slot is released here; the open-connection count only
    // after the access line, so that shutdown's "stopped" comes after it.
    drop(h.lease);
    drop(h.ticket);
    let a = &h.access;
    info!(
        target: "wsgate::access",
        client = %h.peer,
        connection_id = %connection_id,
        listener = %a.listener,
        host = %a.host,
        path = %a.path,
        route = %a.route,
        backend = %h.backend_addr,
        subprotocol = %a.subprotocol,
        user = a.user.as_deref().unwrap_or("-"),
        status = 101,
        duration_ms = relay_started.elapsed().as_millis() as u64,
        messages_in = end.client_to_backend.messages,
        bytes_in = end.client_to_backend.bytes,
        messages_out = end.backend_to_client.messages,
        bytes_out = end.backend_to_client.bytes,
        close_code = end.close.code.0,
        closed_by = end.close.initiator.as_str(),
        "closed"
    );
    drop(h.guard);
}

/// hyper's read-ahead first, then anything the head reader had that hyper
/// never asked for: both came from the client after its request head.
fn join(first: Bytes, second: Bytes) -> Bytes {
    if second.is_empty() {
        first
    } else if first.is_empty() {
        second
    } else {
        let mut joined = Vec::with_capacity(first.len() + second.len());
        joined.extend_from_slice(&first);
        joined.extend_from_slice(&second);
        joined.into()
    }
}
