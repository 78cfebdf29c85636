//! The connection's side of admission control: refusals at accept, the
//! pending phase that `max_pending_handshakes` may cut short, and the
//! admit queue's wait before any backend is contacted.

use std::future::Future;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::info;

use super::access::access_rejected;
use super::head::linger;
use super::Context;
use crate::admission::queue::Slot;
use crate::admission::Refusal;

/// Runs one step of the pending phase (TLS, reading the request), unless
/// `max_pending_handshakes` drops the connection first: `None` then.
pub(super) async fn pending<T>(dropped: &Notify, step: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        _ = dropped.notified() => None,
        out = step => Some(out),
    }
}

/// Answers a connection the gate refused: 429 or 503 with `Retry-After`
/// on a plain listener; on a TLS listener the client is still in TLS and
/// no answer can reach it, so the socket is just closed.
pub(super) async fn refuse_at_accept<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    accepted: &Context,
    refusal: Refusal,
    tls: bool,
) {
    if let Some(m) = &accepted.shared.metrics {
        m.admission.rejected(&accepted.listener, refusal.label());
    }
    if tls {
        info!(peer = %accepted.peer, listener = %accepted.listener, reason = refusal.reason(), "connection closed: admission");
        return;
    }
    let status = refusal.status().as_u16();
    access_rejected(
        accepted,
        accepted.peer,
        None,
        None,
        status,
        refusal.reason(),
    );
    let _ = io.write_all(&refusal.raw_response()).await;
    linger(io).await;
}

/// Waits for the connection's turn in the listener's admit queue, or says
/// why it will not come.
pub(super) async fn wait_for_admission(accepted: &Context) -> Result<(), Refusal> {
    let Some(admit) = accepted.admit else {
        return Ok(());
    };
    let arrived = Instant::now();
    let at = match accepted.gate.slot(&admit, arrived) {
        Slot::Now => return Ok(()),
        Slot::At(at) => at,
        Slot::Full(wait) => return Err(Refusal::QueueFull(wait)),
    };
    let metrics = accepted.shared.metrics.as_ref();
    if let Some(m) = metrics {
        m.admission.queue_add(&accepted.listener, 1);
    }
    tokio::time::sleep_until(at).await;
    if let Some(m) = metrics {
        m.admission.queue_add(&accepted.listener, -1);
        m.admission.queue_waited(arrived.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Answers an upgrade the admit queue refused.
pub(super) fn admission_refused(
    accepted: &Context,
    req: &Request<Incoming>,
    refusal: Refusal,
) -> Response<Full<Bytes>> {
    if let Some(m) = &accepted.shared.metrics {
        m.admission.rejected(&accepted.listener, refusal.label());
    }
    let host = req.headers().get(http::header::HOST);
    let host = host.and_then(|h| h.to_str().ok());
    let status = refusal.status().as_u16();
    access_rejected(
        accepted,
        accepted.peer,
        host,
        Some(req.uri().path()),
        status,
        refusal.reason(),
    );
    refusal.response()
}

impl Context {
    /// Counts and logs a pending connection `max_pending_handshakes`
    /// dropped; it is closed without an answer, as a timed-out one is.
    pub(super) fn pending_dropped(&self) {
        if let Some(m) = &self.shared.metrics {
            m.admission
                .rejected(&self.listener, "max_pending_handshakes");
        }
        info!(peer = %self.peer, listener = %self.listener, "connection closed: max_pending_handshakes reached, oldest pending dropped");
    }
}
