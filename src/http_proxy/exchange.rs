//! One proxied HTTP request, from the routed request to the response head:
//! the checks made before any backend is contacted, backend choice by the
//! pool's balancer, a pooled or fresh connection, the wait for the head
//! under `response_timeout`, and the mapping of every failure to one status
//! and one reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::body::{AnswerBody, Download, Upload, UploadFailure, UploadState};
use super::headers::{add_forwarded, keep_alive_timeout, strip_hop_by_hop};
use super::pool::{self, Conns, Pools, Sender, IDLE_TIMEOUT};
use crate::balance::{self, BackendState, Lease};
use crate::config::{Pool, Route, StickySource};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::upstream::Dial;
use crate::{affinity, rfc6455};

/// What an HTTP request knows about its client connection.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client's address (behind trusted forwarders, the one they name).
    pub peer: SocketAddr,
    /// The address the request came from, which `X-Forwarded-For` gains.
    pub hop: SocketAddr,
    /// The listener's name.
    pub listener: Arc<str>,
    /// Whether the client connection is TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
    /// Where requests are counted, when there is an admin listener.
    pub metrics: Option<Arc<Metrics>>,
    /// Idle keep-alive connections to the backends.
    pub pools: Arc<Pools>,
}

/// Why the proxy answered a request itself; each maps to one status code
/// and one plain-text reason line.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// HTTP/1.1 requires `Host` (RFC 9112 section 3.2).
    #[error("missing Host header")]
    NoHost,
    /// `Content-Length` and `Transfer-Encoding` together: two parsers
    /// could frame the body differently (request smuggling).
    #[error("ambiguous request framing: Content-Length with Transfer-Encoding")]
    AmbiguousFraming,
    /// `CONNECT` opens a tunnel, which a reverse proxy does not offer.
    #[error("CONNECT is not proxied")]
    Connect,
    /// The body was malformed (an invalid chunk) or cut short.
    #[error("malformed request body")]
    BadBody,
    /// The body is larger than the route's `max_request_body_bytes`.
    #[error("request body larger than {0} bytes (max_request_body_bytes)")]
    TooLarge(u64),
    /// Every backend is down, draining or at its cap.
    #[error("no backend available")]
    NoBackend,
    /// Backends were tried and none could be connected.
    #[error("backend unreachable")]
    Unreachable,
    /// The backend closed the connection without a response head.
    #[error("backend closed the connection before answering")]
    Lost,
    /// The backend's response was not valid HTTP/1.x.
    #[error("malformed response from backend")]
    Malformed,
    /// No response head within the route's `response_timeout`.
    #[error("no response from backend within {0:?} (response_timeout)")]
    Timeout(Duration),
}

impl Failure {
    /// The status code of this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            Failure::NoHost | Failure::AmbiguousFraming | Failure::BadBody => {
                StatusCode::BAD_REQUEST
            }
            Failure::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Failure::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Unreachable | Failure::Lost | Failure::Malformed => StatusCode::BAD_GATEWAY,
            Failure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Whether the client connection must close after the answer: the
    /// request's body is unread or its framing cannot be trusted.
    fn closes(&self) -> bool {
        match self {
            Failure::NoHost
            | Failure::AmbiguousFraming
            | Failure::Connect
            | Failure::BadBody
            | Failure::TooLarge(_) => true,
            Failure::NoBackend
            | Failure::Unreachable
            | Failure::Lost
            | Failure::Malformed
            | Failure::Timeout(_) => false,
        }
    }

    /// The answer: status and a one-line plain-text reason.
    pub fn response(&self) -> Response<AnswerBody> {
        let mut builder = Response::builder()
            .status(self.status())
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
        if self.closes() {
            builder = builder.header(header::CONNECTION, "close");
        }
        builder
            .body(Either::Left(Full::new(Bytes::from(format!("{self}\n")))))
            .expect("static status and headers are valid")
    }
}

/// What the access-log line of one request names.
#[derive(Debug)]
struct AccessLine {
    /// Whether the access log was on when the request came: when off, the
    /// strings below stay empty, so a request allocates none of them.
    on: bool,
    client: SocketAddr,
    listener: Arc<str>,
    method: Method,
    host: String,
    path: String,
    pool: String,
    started: Instant,
}

impl AccessLine {
    fn new(client: &Client, req: &Request<Incoming>, pool: &str, started: Instant) -> AccessLine {
        let on = tracing::enabled!(target: "wsgate::access", tracing::Level::INFO);
        let text = |s: &str| if on { s.to_string() } else { String::new() };
        AccessLine {
            on,
            client: client.peer,
            listener: client.listener.clone(),
            method: req.method().clone(),
            host: text(
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("-"),
            ),
            path: text(req.uri().path()),
            pool: text(pool),
            started,
        }
    }

    fn write(&self, status: u16, backend: Option<SocketAddr>, bytes_in: u64, bytes_out: u64) {
        if !self.on {
            return;
        }
        let backend = backend.map_or_else(|| "-".to_string(), |a| a.to_string());
        info!(
            target: "wsgate::access",
            client = %self.client,
            listener = %self.listener,
            method = %self.method,
            host = %self.host,
            path = %self.path,
            pool = %self.pool,
            backend = %backend,
            status,
            bytes_in,
            bytes_out,
            duration_ms = self.started.elapsed().as_millis() as u64,
            "http"
        );
    }
}

/// Counts the request in the in-flight gauge until dropped; without an
/// admin listener there is nothing to count and nothing is allocated.
#[derive(Debug)]
struct Tracked {
    metrics: Option<(Arc<Metrics>, String)>,
}

impl Tracked {
    fn start(metrics: Option<Arc<Metrics>>, pool: &str) -> Tracked {
        let metrics = metrics.map(|m| {
            m.http_started(pool);
            (m, pool.to_string())
        });
        Tracked { metrics }
    }

    fn answered(&self, status: u16, head: Duration) {
        if let Some((m, pool)) = &self.metrics {
            m.http_answered(pool, status, head);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some((m, pool)) = &self.metrics {
            m.http_finished(pool);
        }
    }
}

/// A backend's connection slot held for one request: it counts as one
/// active connection for balancing and caps, and as one request in flight.
#[derive(Debug)]
struct Slot {
    lease: Lease,
}

impl Slot {
    fn new(lease: Lease) -> Slot {
        lease.backend().http_started();
        Slot { lease }
    }

    fn backend(&self) -> &Arc<BackendState> {
        self.lease.backend()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.lease.backend().http_ended();
    }
}

/// What ends an exchange whose response head reached the client: it runs
/// when the response body ends or is dropped.
#[derive(Debug)]
pub struct Finish {
    slot: Slot,
    /// The connection, when it may serve another request afterwards.
    reuse: Option<(Sender, Instant)>,
    /// Where a reusable connection goes back.
    conns: Arc<Conns>,
    max_idle: usize,
    upload: Arc<UploadState>,
    line: AccessLine,
    status: u16,
    _tracked: Tracked,
}

impl Finish {
    /// The response body sent `bytes_out` bytes and ended (`complete`) or
    /// was cut off.
    pub fn run(self, bytes_out: u64, complete: bool) {
        let backend = self.slot.backend();
        if let Some((sender, expires)) = self.reuse {
            // A connection is reusable only after a whole exchange; one cut
            // mid-body has bytes in flight that the next request would read.
            if complete && self.upload.done() && self.upload.failure().is_none() {
                self.conns.put(sender, expires, self.max_idle);
            }
        }
        if !complete {
            debug!(client = %self.line.client, "response cut off before its end");
        }
        self.line.write(
            self.status,
            Some(backend.addr()),
            self.upload.bytes(),
            bytes_out,
        );
    }
}

/// The request's parts that every attempt sends again.
struct Outgoing {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Outgoing {
    fn request(
        &self,
        headers: HeaderMap,
        body: Incoming,
        state: &Arc<UploadState>,
        limit: u64,
    ) -> (Request<Upload>, oneshot::Receiver<Incoming>) {
        let (upload, give_back) = Upload::new(body, state.clone(), limit);
        let mut req = Request::new(upload);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        (req, give_back)
    }
}

/// Proxies one routed request that carries no WebSocket upgrade to the
/// route's pool, and returns the answer for the client: the backend's
/// response streaming its body, or a proxy-made failure.
pub async fn proxy(
    req: Request<Incoming>,
    client: &Client,
    snapshot: &Snapshot,
    route_index: usize,
) -> Response<AnswerBody> {
    let started = Instant::now();
    let route = &snapshot.config.routes[route_index];
    let pool_index = snapshot.route_pool[route_index];
    let pool = &snapshot.config.pools[pool_index];
    let line = AccessLine::new(client, &req, &pool.name, started);
    let tracked = Tracked::start(client.metrics.clone(), &pool.name);
    let exchange = Exchange {
        client,
        snapshot,
        route,
        pool,
        pool_index,
    };
    match exchange.forward(req).await {
        Ok(Answered {
            response,
            slot,
            reuse,
            conns,
            upload,
        }) => {
            let status = response.status().as_u16();
            tracked.answered(status, started.elapsed());
            let finish = Finish {
                slot,
                reuse,
                conns,
                max_idle: pool.max_idle_per_backend,
                upload,
                line,
                status,
                _tracked: tracked,
            };
            let (head, body) = response.into_parts();
            Response::from_parts(head, Either::Right(Download::new(body, finish)))
        }
        Err((failure, backend)) => {
            let status = failure.status().as_u16();
            tracked.answered(status, started.elapsed());
            debug!(client = %client.peer, reason = %failure, "HTTP request answered by the proxy");
            line.write(status, backend, 0, 0);
            failure.response()
        }
    }
}

/// The backend's answer, ready for the client, and what the exchange holds
/// until its body ends.
struct Answered {
    response: Response<Incoming>,
    slot: Slot,
    reuse: Option<(Sender, Instant)>,
    conns: Arc<Conns>,
    upload: Arc<UploadState>,
}

/// How one send on one connection went.
enum Sent {
    /// The response head arrived.
    Answered(Response<Incoming>),
    /// The connection failed before any byte of the body left: the request
    /// may go again on a fresh connection.
    Retry(Incoming),
    /// The exchange failed for good.
    Failed(Failure),
}

/// One request's way through the pool.
struct Exchange<'a> {
    client: &'a Client,
    snapshot: &'a Snapshot,
    route: &'a Route,
    pool: &'a Pool,
    pool_index: usize,
}

impl Exchange<'_> {
    /// Checks the request, then tries the pool's backends in the balancer's
    /// order until one answers. A failure after a backend was chosen
    /// carries that backend for the access log.
    async fn forward(
        &self,
        req: Request<Incoming>,
    ) -> Result<Answered, (Failure, Option<SocketAddr>)> {
        let limits = &self.route.limits;
        if req.method() == Method::CONNECT {
            return Err((Failure::Connect, None));
        }
        if req.version() == Version::HTTP_11 && !req.headers().contains_key(header::HOST) {
            return Err((Failure::NoHost, None));
        }
        let limit = limits.max_request_body_bytes;
        if limit > 0 && req.body().size_hint().lower() > limit {
            // Content-Length says so: refused before any backend is
            // contacted, and before a 100 Continue invites the body.
            return Err((Failure::TooLarge(limit), None));
        }
        let key = self.pool.sticky.as_ref().and_then(|sticky| {
            affinity::key(sticky, req.headers(), req.uri(), self.client.peer)
                .map(|k| k.into_owned())
        });
        let (parts, body) = req.into_parts();
        let mut out = Outgoing {
            method: parts.method,
            // The backend gets the origin form (RFC 9112 section 3.2.1),
            // whatever form the client used.
            uri: parts.uri.path_and_query().map_or_else(
                || Uri::from_static("/"),
                // The path shares the request head's buffer: no copy.
                |pq| Uri::from(pq.clone()),
            ),
            headers: parts.headers,
        };
        strip_hop_by_hop(&mut out.headers);
        add_forwarded(&mut out.headers, self.client.hop, self.client.tls);
        let state = Arc::new(UploadState::default());
        let balancer = &self.snapshot.balancers[self.pool_index];
        let mut body = Some(body);
        let mut tried = false;
        for idx in balancer.candidates(key.as_deref(), Instant::now()) {
            let Some(lease) = balancer.lease(idx) else {
                continue; // filled up since the candidates were listed
            };
            let slot = Slot::new(lease);
            let backend = slot.backend().clone();
            let addr = backend.addr();
            let conns = self.client.pools.get(&self.pool.name, addr);
            let Some(incoming) = body.take() else {
                break;
            };
            let mut incoming = Some(incoming);
            if let Some(mut sender) = self.pooled(&conns).await {
                let (request, give_back) = out.request(
                    out.headers.clone(),
                    incoming.take().expect("set above"),
                    &state,
                    limit,
                );
                match self.send(&mut sender, request, give_back, &state).await {
                    Sent::Answered(response) => {
                        return Ok(self.answered(
                            response,
                            slot,
                            (sender, conns),
                            state,
                            key.as_deref(),
                        ))
                    }
                    Sent::Retry(back) => {
                        debug!(backend = %addr, "pooled connection closed by the backend; retrying on a fresh one");
                        incoming = Some(back);
                    }
                    Sent::Failed(failure) => return Err((failure, Some(addr))),
                }
            }
            tried = true;
            let dial = Dial::to_backend(self.pool.tls.as_ref(), &self.pool.backends[idx]);
            let mut sender = match pool::connect(&dial, limits.connect_timeout).await {
                Ok(sender) => sender,
                Err(e) => {
                    warn!(pool = %self.pool.name, error = %e, "backend unreachable: marked down, trying the next");
                    balancer.mark_failed(idx, Instant::now());
                    body = incoming;
                    continue;
                }
            };
            let headers = std::mem::take(&mut out.headers);
            let incoming = incoming.expect("kept for the fresh connection");
            let (request, give_back) = out.request(headers, incoming, &state, limit);
            return match self.send(&mut sender, request, give_back, &state).await {
                Sent::Answered(response) => {
                    Ok(self.answered(response, slot, (sender, conns), state, key.as_deref()))
                }
                // A fresh connection that fails is not retried: the backend
                // took the connection, so it was reached.
                Sent::Retry(_) => Err((Failure::Lost, Some(addr))),
                Sent::Failed(failure) => Err((failure, Some(addr))),
            };
        }
        Err((
            if tried {
                Failure::Unreachable
            } else {
                Failure::NoBackend
            },
            None,
        ))
    }

    /// An idle connection to `backend` ready for a request, if there is
    /// one. A connection given back after its exchange may still be
    /// settling (hyper reads the end of the last response on its own
    /// task), so readiness is awaited, briefly.
    async fn pooled(&self, conns: &Conns) -> Option<Sender> {
        let wait = self.route.limits.connect_timeout;
        while let Some(mut sender) = conns.take(Instant::now()) {
            if let Ok(Ok(())) = tokio::time::timeout(wait, sender.ready()).await {
                return Some(sender);
            }
        }
        None
    }

    /// Sends `request` on `sender` and waits for the response head. The
    /// `response_timeout` counts from the end of the request body: while
    /// the body still moves, the wait is extended.
    async fn send(
        &self,
        sender: &mut Sender,
        request: Request<Upload>,
        give_back: oneshot::Receiver<Incoming>,
        state: &UploadState,
    ) -> Sent {
        let timeout = self.route.limits.response_timeout;
        let mut head = std::pin::pin!(sender.try_send_request(request));
        let mut seen = state.bytes();
        let result = loop {
            // Counted from the end of the body; while it still moves, the
            // wait is checked again after another `response_timeout`.
            let deadline = match state.done_at() {
                Some(end) => end + timeout,
                None => Instant::now() + timeout,
            };
            match tokio::time::timeout_at(deadline, &mut head).await {
                Ok(result) => break result,
                Err(_) => {
                    let now = Instant::now();
                    let expired = state.done_at().is_some_and(|end| end + timeout <= now);
                    // A body that stopped moving is waited on no longer.
                    if expired || (state.done_at().is_none() && state.bytes() == seen) {
                        return Sent::Failed(Failure::Timeout(timeout));
                    }
                    seen = state.bytes();
                }
            }
        };
        let error = match result {
            Ok(response) => return Sent::Answered(response),
            Err(mut e) => {
                if let Some(unsent) = e.take_message() {
                    drop(unsent);
                }
                e.into_error()
            }
        };
        match state.failure() {
            Some(UploadFailure::TooLarge) => {
                let limit = self.route.limits.max_request_body_bytes;
                return Sent::Failed(Failure::TooLarge(limit));
            }
            Some(UploadFailure::Client) => return Sent::Failed(Failure::BadBody),
            None => {}
        }
        if error.is_parse() || error.is_parse_status() || error.is_parse_too_large() {
            return Sent::Failed(Failure::Malformed);
        }
        debug!(error = %error, "backend HTTP exchange failed");
        // The body comes back only if none of it was sent; hyper drops it
        // as the failed connection's task ends.
        match tokio::time::timeout(self.route.limits.connect_timeout, give_back).await {
            Ok(Ok(body)) => Sent::Retry(body),
            _ => Sent::Failed(Failure::Lost),
        }
    }

    /// Prepares the backend's response for the client: hop-by-hop fields
    /// removed, the sticky cookie added when the request had no valid one,
    /// and whether the connection can be reused.
    fn answered(
        &self,
        response: Response<Incoming>,
        slot: Slot,
        (sender, conns): (Sender, Arc<Conns>),
        upload: Arc<UploadState>,
        key: Option<&[u8]>,
    ) -> Answered {
        let (mut head, body) = response.into_parts();
        let closing = rfc6455::has_token(&head.headers, header::CONNECTION, "close");
        let reuse = match keep_alive_timeout(&head.headers) {
            _ if closing => None,
            // Give the connection up a second before the backend does, so
            // that a request never races its close.
            Some(t) if t <= Duration::from_secs(1) => None,
            Some(t) => Some(IDLE_TIMEOUT.min(t - Duration::from_secs(1))),
            None => Some(IDLE_TIMEOUT),
        };
        strip_hop_by_hop(&mut head.headers);
        head.version = Version::HTTP_11;
        if let Some(sticky) = self
            .pool
            .sticky
            .as_ref()
            .filter(|s| s.source == StickySource::Cookie && s.issue)
        {
            // No valid cookie, or one naming another backend than the one
            // that served (it was down or full): pin the client anew.
            let balancer = &self.snapshot.balancers[self.pool_index];
            let pinned = key
                .and_then(|k| balancer.backend_for_token(k))
                .and_then(|idx| balancer.backend(idx));
            if pinned.map(|b| b.id()) != Some(slot.backend().id()) {
                let token = balance::cookie_value(slot.backend().id());
                head.headers.append(
                    header::SET_COOKIE,
                    affinity::set_cookie(&sticky.name, &token, self.client.tls),
                );
            }
        }
        Answered {
            response: Response::from_parts(head, body),
            slot,
            reuse: reuse.map(|idle| (sender, Instant::now() + idle)),
            conns,
            upload,
        }
    }
}
