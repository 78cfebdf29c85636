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
use crate::{balance, config, push, relay, upstream};

/// What the access-log line of a relayed connection names. Kept for the
/// connection's whole life, so its texts share one string (host, path,
/// route, subprotocol, then the user if any, back to back): one allocation
/// per connection instead of one per field.
pub(super) struct AccessInfo {
    listener: Arc<str>,
    text: String,
    /// Where the host, path, route and subprotocol end in `text`; offsets
    /// fit in `u32` because a request head is bounded (`max_header_bytes`).
    ends: [u32; 4],
    /// An authenticated subject follows the subprotocol.
    has_user: bool,
}

impl AccessInfo {
    /// Starts with the request's host (`-` when none) and path, and the
    /// route's label, in a string with room for a short subprotocol.
    pub(super) fn new(
        listener: Arc<str>,
        host: Option<&str>,
        path: &str,
        route: &config::Route,
    ) -> Self {
        let host = host.unwrap_or("-");
        let room = host.len() + path.len() + crate::metrics::route_label_len(route) + 16;
        let mut info = AccessInfo {
            listener,
            text: String::with_capacity(room),
            ends: [0; 4],
            has_user: false,
        };
        info.text.push_str(host);
        info.ends[0] = info.end();
        info.text.push_str(path);
        info.ends[1] = info.end();
        crate::metrics::push_route_label(route, &mut info.text);
        info.ends[2] = info.end();
        info
    }

    /// Adds the negotiated subprotocol (`-` when none) and the
    /// authenticated subject, if any.
    pub(super) fn finish(&mut self, subprotocol: Option<&str>, user: Option<&str>) {
        self.text.push_str(subprotocol.unwrap_or("-"));
        self.ends[3] = self.end();
        if let Some(user) = user {
            self.text.push_str(user);
            self.has_user = true;
        }
    }

    fn end(&self) -> u32 {
        u32::try_from(self.text.len()).unwrap_or(u32::MAX)
    }

    fn field(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(self.text.len(), |&e| e as usize);
        self.text.get(start..end).unwrap_or("-")
    }

    fn host(&self) -> &str {
        self.field(0)
    }

    fn path(&self) -> &str {
        self.field(1)
    }

    /// The route's label, as the metrics name it.
    pub(super) fn route(&self) -> &str {
        self.field(2)
    }

    fn subprotocol(&self) -> &str {
        self.field(3)
    }

    fn user(&self) -> &str {
        if self.has_user {
            self.field(4)
        } else {
            "-"
        }
    }
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
/// future, which every idle connection would pay for. Once the relay
/// starts, the box is freed and the task keeps only [`Relayed`].
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
    // In a block of its own: what the upgrade and the handover hand over
    // is moved into the relay's future or into what outlives it, and must
    // not keep a second slot in this task's future; the handover's box is
    // freed here, not when the connection ends.
    let (relay, kept) = {
        let Handover {
            peer,
            backend_addr,
            backend_stream,
            backend_pre,
            settings,
            stop,
            meter,
            access,
            push: (id, tags, max_message_bytes),
            hub,
            lease,
            guard,
            ticket,
            key,
        } = unbox(h);
        let (member, inbox) = hub.join(id, tags, max_message_bytes);
        // On the backend's roster while relayed, so that rebalancing can ask
        // it to move.
        let enlisted = lease.backend().enlist(key.as_deref());
        let parts = match client.downcast::<TokioIo<Scanned<Rewind<IO>>>>() {
            Ok(parts) => parts,
            Err(_) => unreachable!("the upgraded IO is the one served"),
        };
        let (unread, client_io) = parts.io.into_inner().into_inner().into_parts();
        let client_pre = join(parts.read_buf, unread);
        let relay = relay::run(
            client_io,
            client_pre,
            backend_stream,
            backend_pre,
            settings,
            relay::Signals {
                stop,
                moved: Some(enlisted.close.clone()),
                inbox: Some(inbox),
            },
            meter,
        );
        let kept = Relayed {
            peer,
            backend_addr,
            access,
            member,
            enlisted,
            lease,
            ticket,
            guard,
        };
        (relay, kept)
    };
    let end = relay.await;
    let Relayed {
        peer,
        backend_addr,
        access: a,
        member,
        enlisted,
        lease,
        ticket,
        guard,
    } = kept;
    drop(enlisted);
    let connection_id = member.shared_id();
    drop(member);
    // The backend's slot is released here; the open-connection count only
    // after the access line, so that shutdown's "stopped" comes after it.
    drop(lease);
    drop(ticket);
    info!(
        target: "wsgate::access",
        client = %peer,
        connection_id = %connection_id,
        listener = %a.listener,
        host = %a.host(),
        path = %a.path(),
        route = %a.route(),
        backend = %backend_addr,
        subprotocol = %a.subprotocol(),
        user = a.user(),
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
    drop(guard);
}

/// Takes the handover out of its box and frees the box.
fn unbox(h: Box<Handover>) -> Handover {
    *h
}

/// What a relayed connection's task keeps beside the relay until it ends:
/// the access line's fields, and its places on the hub, the backend's
/// roster and slots, the listener and the open-connection count.
struct Relayed {
    peer: SocketAddr,
    backend_addr: SocketAddr,
    access: AccessInfo,
    member: push::Member,
    enlisted: balance::Enlisted,
    lease: balance::Lease,
    ticket: Option<Ticket>,
    guard: Option<Guard>,
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
