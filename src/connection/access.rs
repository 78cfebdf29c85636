//! Refused requests: their answers, their count and their access-log line,
//! and the log line of a failed TLS handshake.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tracing::info;

use super::Context;
use crate::auth::Denial;
use crate::client_addr;
use crate::handshake::Reject;

/// Answers a request its route's authentication refused.
pub(super) fn denied(
    accepted: &Context,
    req: &Request<Incoming>,
    client: SocketAddr,
    denial: Denial,
) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    if let Some(m) = &accepted.shared.metrics {
        m.rejected(denial.status.as_u16());
    }
    info!(
        target: "wsgate::access",
        client = %client,
        listener = %accepted.listener,
        host = host.unwrap_or("-"),
        path = req.uri().path(),
        status = denial.status.as_u16(),
        reason = denial.reason.message(),
        "rejected"
    );
    denial.response()
}

pub(super) fn rejected(
    accepted: &Context,
    req: &Request<Incoming>,
    reject: Reject,
) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let status = reject.status().as_u16();
    // The client behind trusted forwarders, as a relayed connection's line.
    let trusted = &accepted.snapshot.config.listeners[accepted.listener_index].trusted_proxies;
    let client = client_addr::resolve(accepted.peer, trusted, req.headers());
    access_rejected(
        accepted,
        client,
        host,
        Some(req.uri().path()),
        status,
        &reject.to_string(),
    );
    reject.response()
}

/// Counts a refused request and writes its access-log line.
pub(super) fn access_rejected(
    accepted: &Context,
    client: SocketAddr,
    host: Option<&str>,
    path: Option<&str>,
    status: u16,
    reason: &str,
) {
    if let Some(m) = &accepted.shared.metrics {
        m.rejected(status);
    }
    info!(
        target: "wsgate::access",
        client = %client,
        listener = %accepted.listener,
        host = host.unwrap_or("-"),
        path = path.unwrap_or("-"),
        status,
        reason,
        "rejected"
    );
}

impl Context {
    /// Counts and logs a TLS handshake that failed: one structured line
    /// per failure, so a broken client or certificate shows in the log.
    pub(super) fn tls_failed(&self, reason: &str) {
        if let Some(m) = &self.shared.metrics {
            m.tls_failed(&self.listener);
        }
        info!(peer = %self.peer, listener = %self.listener, reason, "TLS handshake failed");
    }
}
