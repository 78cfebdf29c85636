//! The WebSocket upgrade of one request: check it, route it, admit it,
//! upgrade a backend, and hand both sides over to the relay.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::access::{access_rejected, denied, rejected};
use super::admit::{admission_refused, wait_for_admission};
use super::handover::{relay_connection, AccessInfo, Handover};
use super::Context;
use crate::auth::Admitted;
use crate::config::StickySource;
use crate::handshake::{self, Reject};
use crate::metrics::ConnectionLabels;
use crate::upstream::{self, Offer, RefusalBody};
use crate::{affinity, auth, balance, client_addr, proxy_protocol, push, relay, shutdown};

/// The whole upgrade: check the request, route it, upgrade a backend, and
/// hand both sides to the relay once hyper has sent the 101.
pub(super) async fn upgrade<IO>(
    mut req: Request<Incoming>,
    accepted: Arc<Context>,
    tls: bool,
) -> Response<Either<Full<Bytes>, RefusalBody>>
where
    IO: AsyncRead + AsyncWrite + relay::Socket + Unpin + Send + 'static,
{
    let started = Instant::now();
    let snapshot = &accepted.snapshot;
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let Some(route_index) = snapshot
        .routes
        .find(&accepted.listener, host, req.uri().path())
    else {
        return rejected(&accepted, &req, Reject::NoRoute).map(Either::Left);
    };
    let route = &snapshot.config.routes[route_index];
    // Taken now: authentication may rewrite the request's headers.
    let mut access = AccessInfo::new(accepted.listener.clone(), host, req.uri().path(), route);
    let checked = match handshake::check(&req, route) {
        Ok(checked) => checked,
        Err(reject) => return rejected(&accepted, &req, reject).map(Either::Left),
    };
    let tags = match &route.tags {
        Some(tags) => match push::tags::read(tags, req.headers(), req.uri()) {
            Ok(tags) => tags,
            Err(e) => return rejected(&accepted, &req, Reject::BadTags(e)).map(Either::Left),
        },
        None => push::ConnTags::default(),
    };
    let connection_id = accepted.shared.hub.next_id();
    if let Err(refusal) = wait_for_admission(&accepted).await {
        return admission_refused(&accepted, &req, refusal).map(Either::Left);
    }
    let trusted = &snapshot.config.listeners[accepted.listener_index].trusted_proxies;
    let client = client_addr::resolve(accepted.peer, trusted, req.headers());
    // Admission by identity: after the route, before any backend is chosen.
    let admitted = match &route.auth {
        None => Admitted::default(),
        Some(auth) => match auth::admit(
            auth,
            &mut req,
            (client, tls),
            &accepted.shared.forwarder,
            accepted.shared.metrics.as_deref(),
        )
        .await
        {
            Ok(admitted) => admitted,
            Err(denial) => return denied(&accepted, &req, client, denial).map(Either::Left),
        },
    };
    let pool_index = snapshot.route_pool[route_index];
    let pool = &snapshot.config.pools[pool_index];
    let key = pool
        .sticky
        .as_ref()
        .and_then(|sticky| affinity::key(sticky, req.headers(), req.uri(), client));
    // The backend's X-Forwarded-For gains the hop this request came from.
    let request = match pool.send_proxy_protocol {
        None => upstream::backend_request(&req, accepted.peer, tls, &connection_id),
        Some(version) => {
            let mut request = Vec::new();
            proxy_protocol::write(version, client, accepted.destination, &mut request);
            request.extend_from_slice(&upstream::backend_request(
                &req,
                accepted.peer,
                tls,
                &connection_id,
            ));
            request
        }
    };
    let attempt = Attempt {
        request,
        client_key: &checked.key,
        offer: Offer::from_request(req.headers()),
        connect_timeout: route.limits.connect_timeout,
        budget_end: started + snapshot.config.handshake_timeout,
    };
    let (lease, mut backend) =
        match connect_backend(&accepted, pool_index, key.as_deref(), &attempt).await {
            Ok(connected) => connected,
            Err(Failed::Reject(reject)) => {
                return rejected(&accepted, &req, reject).map(Either::Left)
            }
            Err(Failed::Refused(refusal)) => {
                let reason = format!("backend refused the upgrade with {}", refusal.status);
                let host = req.headers().get(http::header::HOST);
                let host = host.and_then(|h| h.to_str().ok());
                let path = Some(req.uri().path());
                let status = refusal.status.as_u16();
                access_rejected(&accepted, client, host, path, status, &reason);
                return refusal.into_response().map(Either::Right);
            }
        };
    let addr = lease.backend().addr();
    if let Some(fallback) = admitted.protocol_fallback {
        let name = http::header::SEC_WEBSOCKET_PROTOCOL;
        if backend.protocol.is_none() {
            backend
                .response
                .headers_mut()
                .insert(&name, fallback.clone());
            backend.protocol = Some(fallback);
        }
    }
    // A cookie naming the backend that served needs no new cookie;
    // anything else (none, unknown, forged, or naming a backend that failed
    // and was passed over) gets one, so the reconnect sticks to this one.
    if let Some(sticky) = pool
        .sticky
        .as_ref()
        .filter(|s| s.source == StickySource::Cookie && s.issue)
    {
        let balancer = &snapshot.balancers[pool_index];
        let pinned = key
            .as_deref()
            .and_then(|k| balancer.backend_for_token(k))
            .and_then(|idx| balancer.backend(idx));
        if pinned.map(|b| b.id()) != Some(lease.backend().id()) {
            let token = balance::cookie_value(lease.backend().id());
            backend.response.headers_mut().append(
                http::header::SET_COOKIE,
                affinity::set_cookie(&sticky.name, &token, tls),
            );
        }
    }
    let subprotocol = backend.protocol.as_ref().and_then(|p| p.to_str().ok());
    access.finish(subprotocol, admitted.subject.as_deref());
    let meter = accepted.shared.metrics.as_ref().map(|m| {
        let labels = ConnectionLabels {
            route: access.route().to_string(),
            pool: pool.name.clone(),
            backend: addr.to_string(),
        };
        m.upgraded(labels, started.elapsed())
    });
    debug!(client = %client, backend = %addr, elapsed = ?started.elapsed(), "upgraded");
    // The task keeps only what the relay needs, not the whole answer.
    let upstream::Upgraded {
        stream,
        pre_read,
        response,
        deflate,
        protocol: _,
    } = backend;
    let handover = Handover {
        peer: client,
        backend_addr: addr,
        backend_stream: stream,
        backend_pre: pre_read,
        settings: relay::Settings {
            limits: route.limits,
            deflate,
            expires_at: admitted.expires_at,
        },
        stop: shutdown::close_time(lease.backend().drain_signal()),
        meter,
        access,
        push: (connection_id, tags, route.limits.max_message_bytes),
        hub: accepted.shared.hub.clone(),
        lease,
        guard: accepted.guard.lock().expect("not poisoned").take(),
        ticket: accepted.ticket.lock().expect("not poisoned").take(),
        key: key.as_deref().map(<[u8]>::to_vec),
    };
    tokio::spawn(relay_connection::<IO>(
        hyper::upgrade::on(&mut req),
        Box::new(handover),
    ));
    response.map(Either::Left)
}

/// Why no backend was upgraded: a rejection of the proxy's own, or a
/// backend's complete refusal to pass on.
enum Failed {
    Reject(Reject),
    Refused(upstream::Refusal),
}

/// Tries the pool's backends in the balancer's order until one answers a
/// valid 101. Backends that cannot be reached are marked down and the next
/// one is tried, all within the handshake's time budget: a client waits for
/// one answer, not for every backend's `connect_timeout` in turn. A backend
/// that answers wrongly ends the attempt (502): another would hide it; one
/// that refuses (401, 429, ...) has decided, and its answer is passed on.
async fn connect_backend(
    accepted: &Context,
    pool_index: usize,
    key: Option<&[u8]>,
    attempt: &Attempt<'_>,
) -> Result<(balance::Lease, upstream::Upgraded), Failed> {
    let snapshot = &accepted.snapshot;
    let pool = &snapshot.config.pools[pool_index];
    let balancer = &snapshot.balancers[pool_index];
    let mut last_failure = None;
    for idx in balancer.candidates(key, Instant::now()) {
        let Some(lease) = balancer.lease(idx) else {
            continue; // filled up since the candidates were listed
        };
        let left = attempt.budget_end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let addr = lease.backend().addr();
        debug!(peer = %accepted.peer, pool = %pool.name, backend = %addr, "backend chosen");
        let timeout = attempt.connect_timeout.min(left);
        let dial = upstream::Dial::to_backend(pool.tls.as_ref(), &pool.backends[idx]);
        let answer = upstream::answer_via(
            &dial,
            &attempt.request,
            attempt.client_key,
            &attempt.offer,
            timeout,
        );
        match answer.await {
            Ok(upstream::Answer::Upgraded(backend)) => return Ok((lease, backend)),
            Ok(upstream::Answer::Refused(refusal)) => {
                debug!(pool = %pool.name, backend = %addr, status = %refusal.status, "backend refused the upgrade");
                return Err(Failed::Refused(refusal));
            }
            // Not the backend's fault: it stays up, this client gets 503.
            Err(e) if e.is_local_shortage() => {
                warn!(pool = %pool.name, error = %e, "no local resources to reach a backend: answering 503, backend stays up");
                return Err(Failed::Reject(Reject::LocalShortage));
            }
            Err(e) if e.is_unreachable() => {
                warn!(pool = %pool.name, error = %e, "backend unreachable: marked down, trying the next");
                balancer.mark_failed(idx, Instant::now());
                last_failure = Some(e.kind);
            }
            Err(e) => {
                // The client's answer names no backend; the log does.
                warn!(pool = %pool.name, error = %e, "bad upgrade answer from backend");
                return Err(Failed::Reject(Reject::BadBackendAnswer(e.kind)));
            }
        }
    }
    Err(Failed::Reject(match last_failure {
        Some(e) => Reject::BackendsFailed(e),
        // A pool of names none of which ever resolved says which.
        None if pool.backends.is_empty() && !pool.unresolved.is_empty() => {
            Reject::Unresolved(pool.unresolved.clone())
        }
        None => Reject::NoBackend,
    }))
}

/// What every backend attempt of one handshake sends and checks.
struct Attempt<'a> {
    /// The client's request as the backend gets it.
    request: Vec<u8>,
    /// The client's key, to check the backend's accept against.
    client_key: &'a http::HeaderValue,
    /// What the client offered, to check the backend's choices against.
    offer: Offer,
    /// The route's `connect_timeout`, per attempt.
    connect_timeout: std::time::Duration,
    /// When the last attempt must have ended.
    budget_end: Instant,
}
