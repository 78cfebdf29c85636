//! Admission control of one listener: who may open a connection, how many
//! may be open or pending, and how fast upgrades go on to the backends.
//!
//! The [`Gate`] of a listener lives as long as its accept loop, across
//! reloads; each check reads the limits of the snapshot the connection
//! was accepted with. A connection holds a [`Ticket`] from the moment it
//! is let in until it ends: the ticket is what the global and per-client
//! counts count, and dropping it gives the place back. The decisions are
//! sans-io (`per_client`, `queue`); this module only keeps them behind
//! one lock per listener, taken once when a connection starts, once when
//! its request head is read and once when it ends.

pub mod per_client;
pub mod queue;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{Cidr, ListenerAdmission};
use per_client::{ClientKey, Refused};
use queue::{Queue, Slot};

/// What a client is told to wait after a cap refusal: nothing says when a
/// place frees up, so a short, fixed pause.
pub const CAP_RETRY_AFTER: Duration = Duration::from_secs(5);

/// One listener's admission state.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Connections holding a ticket.
    open: u32,
    clients: per_client::Table,
    /// Connections still in TLS or reading their request, oldest first.
    pending: BTreeMap<u64, Arc<Notify>>,
    next_id: u64,
    queue: Queue,
}

/// Why a connection or an upgrade is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client holds `per_client.max_connections` already.
    ClientConnections,
    /// The client's `per_client.handshakes_per_second` bucket is empty.
    ClientRate(Duration),
    /// The listener holds `max_connections` already.
    ListenerFull,
    /// The admit queue would hold the upgrade longer than `admit.queue`.
    QueueFull(Duration),
}

impl Refusal {
    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::ClientConnections | Refusal::ClientRate(_) => StatusCode::TOO_MANY_REQUESTS,
            Refusal::ListenerFull | Refusal::QueueFull(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `reason` label of `wsgate_admission_rejections_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::ClientConnections => "per_client_connections",
            Refusal::ClientRate(_) => "per_client_rate",
            Refusal::ListenerFull => "max_connections",
            Refusal::QueueFull(_) => "admit_queue",
        }
    }

    /// The one-line reason in the answer's body.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::ClientConnections => "too many connections from this client",
            Refusal::ClientRate(_) => "too many new connections from this client",
            Refusal::ListenerFull => "too many connections on this listener",
            Refusal::QueueFull(_) => "too many upgrades waiting; try again later",
        }
    }

    /// Whole seconds until a retry may work (RFC 9110 section 10.2.3),
    /// at least 1.
    pub fn retry_after(&self) -> u64 {
        let wait = match self {
            Refusal::ClientConnections | Refusal::ListenerFull => CAP_RETRY_AFTER,
            Refusal::ClientRate(wait) | Refusal::QueueFull(wait) => *wait,
        };
        (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
    }

    /// The answer for hyper to send; the connection closes after it.
    pub fn response(&self) -> Response<Full<Bytes>> {
        Response::builder()
            .status(self.status())
            .header("content-type", "text/plain; charset=utf-8")
            .header("retry-after", self.retry_after())
            .header("connection", "close")
            .body(Full::new(Bytes::from(format!("{}\n", self.reason()))))
            .expect("static status and headers are valid")
    }

    /// The answer as raw HTTP/1.1 bytes, written before any request is read.
    pub fn raw_response(&self) -> Vec<u8> {
        let body = format!("{}\n", self.reason());
        let status = self.status();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.retry_after(),
            body.len()
        )
        .into_bytes()
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("admission lock is never poisoned")
    }

    /// Lets a connection from `ip` in, or says why not. A connection let
    /// in starts pending (in TLS or its request); when that would put more
    /// than `max_pending_handshakes` in that phase, the oldest pending one
    /// is told to go (see [`Ticket::dropped`]).
    pub fn enter(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &ListenerAdmission,
        now: Instant,
    ) -> Result<Ticket, Refusal> {
        let mut state = self.lock();
        if limits.max_connections.is_some_and(|max| state.open >= max) {
            return Err(Refusal::ListenerFull);
        }
        let per_client = limits
            .per_client
            .as_ref()
            .filter(|p| !Cidr::any_contains(&p.exempt, ip));
        let client = match per_client {
            None => None,
            Some(p) => {
                let key = ClientKey::of(ip);
                state.clients.open(key, p, now).map_err(|r| match r {
                    Refused::Connections => Refusal::ClientConnections,
                    Refused::Rate(wait) => Refusal::ClientRate(wait),
                })?;
                Some(key)
            }
        };
        state.open += 1;
        if let Some(max) = limits.max_pending_handshakes {
            while state.pending.len() >= max as usize {
                match state.pending.pop_first() {
                    Some((_, oldest)) => oldest.notify_one(),
                    None => break,
                }
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        let dropped = Arc::new(Notify::new());
        state.pending.insert(id, dropped.clone());
        Ok(Ticket {
            gate: self.clone(),
            client,
            pending: Some(id),
            dropped: Some(dropped),
        })
    }

    /// A place in the admit queue for an upgrade arriving at `now`.
    pub fn slot(&self, admit: &crate::config::Admit, now: Instant) -> Slot {
        self.lock().queue.slot(admit, now)
    }

    /// Connections holding a ticket now.
    pub fn open(&self) -> u32 {
        self.lock().open
    }
}

/// A connection's place on its listener, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    client: Option<ClientKey>,
    /// Its key among the pending connections, until its request is read.
    pending: Option<u64>,
    /// Only a pending connection can be dropped: let go once the request
    /// is read, so that an established connection does not keep it.
    dropped: Option<Arc<Notify>>,
}

impl Ticket {
    /// The request head has been read: the connection no longer counts
    /// as pending.
    pub fn head_read(&mut self) {
        if let Some(id) = self.pending.take() {
            self.gate.lock().pending.remove(&id);
        }
        self.dropped = None;
    }

    /// Notified when `max_pending_handshakes` drops this connection to
    /// make room for a newer one (only ever while it is pending); the
    /// notification is kept until awaited.
    pub fn dropped_signal(&self) -> Arc<Notify> {
        // After the request: a signal that never fires.
        self.dropped.clone().unwrap_or_default()
    }

    /// The gate this ticket belongs to.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.open = state.open.saturating_sub(1);
        if let Some(id) = self.pending {
            state.pending.remove(&id);
        }
        if let Some(key) = self.client {
            state.clients.close(key, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests;
