//! One client connection from accept to relay: TLS, the request head under
//! its limits, the handshake checks, routing, the backend upgrade, and the
//! hand-over of both upgraded sides to the relay.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info, warn};

use crate::admission::{Gate, Ticket};
use crate::auth::{Admitted, Denial};
use crate::close::{CloseCode, CloseInfo, Initiator};
use crate::config::{self, Admit, Cidr, HttpMode, ProxyProtocol, StickySource};
use crate::handshake::{self, FirstByte, ReadHeadError, Reject, Rewind};
use crate::http_proxy::framing::{Scanned, Verdict};
use crate::metrics::{ConnectionLabels, Meter};
use crate::proxy_protocol::{self, Header, ReadError};
use crate::runtime::Runtime;
use crate::shutdown::{self, Guard};
use crate::snapshot::{ListenerKey, Snapshot};
use crate::upstream::{self, Offer, RefusalBody};
use crate::{affinity, auth, balance, client_addr, http_proxy, push, relay, rfc6455, tls};
use admit::{admission_refused, pending, refuse_at_accept, wait_for_admission};

mod admit;

/// What a connection knows about where it was accepted.
pub struct Accepted {
    /// The client's address.
    pub peer: SocketAddr,
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

/// What the access-log line of a relayed connection names. Kept for the
/// connection's whole life, so its texts share one string (host, path,
/// route, subprotocol, then the user if any, back to back): one allocation
/// per connection instead of one per field.
struct AccessInfo {
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
    fn new(listener: Arc<str>, host: Option<&str>, path: &str, route: &config::Route) -> Self {
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
    fn finish(&mut self, subprotocol: Option<&str>, user: Option<&str>) {
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

    fn route(&self) -> &str {
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

/// Serves one accepted TCP connection to its end.
pub async fn serve(stream: TcpStream, accepted: Accepted) {
    let snapshot = accepted.snapshot.clone();
    let Some((index, listener)) = snapshot.listener(&accepted.listener) else {
        // A reload removed the listener between accept and now.
        return;
    };
    let mut stream = stream;
    let deadline = Instant::now() + snapshot.config.handshake_timeout;
    let local = stream.local_addr().unwrap_or(accepted.peer);
    let (peer, destination) = match listener.proxy_protocol {
        None => (accepted.peer, local),
        Some(versions) => {
            let read = proxy_header(&mut stream, versions, listener, &accepted, deadline);
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
            return refuse_at_accept(&mut stream, &accepted, refusal, tls).await;
        }
    };
    let dropped = ticket.dropped_signal();
    *accepted.ticket.lock().expect("not poisoned") = Some(ticket);
    // Small frames must not wait for Nagle's algorithm on either side.
    let _ = stream.set_nodelay(true);
    let limit = listener.max_header_bytes;
    match &snapshot.tls[index] {
        None => {
            serve_http(
                stream,
                accepted,
                deadline,
                limit,
                Some(FirstByte::NotTls),
                false,
                dropped,
            )
            .await
        }
        Some(config) => {
            let mut first = [0u8; 1];
            let peeked = pending(&dropped, timeout_at(deadline, stream.peek(&mut first)));
            match peeked.await {
                None => return accepted.pending_dropped(),
                Some(Ok(Ok(1))) if first[0] == tls::TLS_HANDSHAKE_RECORD => {}
                Some(Ok(Ok(1))) => {
                    reject_raw(&mut stream, &accepted, Reject::PlainOnTlsListener).await;
                    return;
                }
                Some(Ok(_)) => return,
                Some(Err(_)) => {
                    accepted.tls_failed("no ClientHello in time (handshake_timeout)");
                    return;
                }
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            match pending(&dropped, timeout_at(deadline, acceptor.accept(stream))).await {
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
                    serve_http(tls_stream, accepted, deadline, limit, None, true, dropped).await
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

/// Reads the request head, then lets hyper parse it and drive the upgrade.
async fn serve_http<IO>(
    mut io: IO,
    accepted: Arc<Context>,
    deadline: Instant,
    limit: usize,
    first_byte: Option<FirstByte>,
    tls: bool,
    dropped: Arc<Notify>,
) where
    IO: AsyncRead + AsyncWrite + relay::Socket + Unpin + Send + 'static,
{
    let read = timeout_at(deadline, handshake::read_head(&mut io, limit, first_byte));
    let head = match pending(&dropped, read).await {
        None => return accepted.pending_dropped(),
        Some(Ok(Ok(head))) => head,
        Some(Ok(Err(ReadHeadError::Reject(reject)))) => {
            reject_raw(&mut io, &accepted, reject).await;
            return;
        }
        Some(Ok(Err(e))) => {
            debug!(peer = %accepted.peer, error = %e, "no request");
            return;
        }
        Some(Err(_)) => {
            // RFC 9110 section 15.5.9: the server gave up waiting.
            let answer = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: 49\r\n\r\nrequest not received in time (handshake_timeout)\n";
            let _ = io.write_all(answer).await;
            linger(&mut io).await;
            access_rejected(
                &accepted,
                accepted.peer,
                None,
                None,
                408,
                "request not received in time (handshake_timeout)",
            );
            return;
        }
    };
    if let Some(ticket) = accepted.ticket.lock().expect("not poisoned").as_mut() {
        ticket.head_read();
    }
    let keepalive = accepted.keepalive;
    let tracker = accepted.shared.tracker.clone();
    let scanned = Scanned::new(Rewind::new(head.freeze(), io), accepted.framing.clone());
    let io = TokioIo::new(scanned);
    let service = service_fn(move |req| {
        let accepted = accepted.clone();
        // Answers are the proxy's own (a rejection, the backend's 101), a
        // backend's refusal passed on, or a proxied HTTP response.
        async move { Ok::<_, Infallible>(answer::<IO>(req, accepted, tls).await) }
    });
    let conn = http1::Builder::new()
        .max_headers(handshake::MAX_HEADERS)
        .max_buf_size((limit + 1024).max(8192))
        // Between requests on a kept-alive connection: how long the next
        // request head may take to arrive, idle time included.
        .timer(TokioTimer::new())
        .header_read_timeout(keepalive)
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = tracker.keepalive_stopped() => {
            // Shutdown: no further request on this connection; one in
            // flight is still answered.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "client connection ended during the handshake");
    }
}

/// Writes a rejection straight to the socket (hyper does not have the
/// connection yet) and closes.
async fn reject_raw<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    accepted: &Context,
    reject: Reject,
) {
    access_rejected(
        accepted,
        accepted.peer,
        None,
        None,
        reject.status().as_u16(),
        &reject.to_string(),
    );
    let _ = io.write_all(&reject.raw_response()).await;
    linger(io).await;
}

/// Half-closes, then reads and discards what the client still sends for a
/// moment: closing a socket with unread input makes the kernel send a
/// reset, which can destroy the answer before the client reads it.
async fn linger<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO) {
    let _ = io.shutdown().await;
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + LINGER;
    for _ in 0..LINGER_READS {
        match timeout_at(deadline, io.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

/// How long, and for how many reads, a rejected client's leftover input is
/// drained before the socket is closed.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_READS: usize = 64;

/// What a client is answered with: the upgrade path's answers (the proxy's
/// own or a backend's refusal), or a proxied HTTP exchange's.
type ClientBody = Either<Either<Full<Bytes>, RefusalBody>, http_proxy::AnswerBody>;

/// Where a request leaves the WebSocket path: on a route with
/// `http = "proxy"`, a request without `Upgrade: websocket` is proxied as
/// plain HTTP; every other request goes through the upgrade.
async fn answer<IO>(
    mut req: Request<Incoming>,
    accepted: Arc<Context>,
    tls: bool,
) -> Response<ClientBody>
where
    IO: AsyncRead + AsyncWrite + relay::Socket + Unpin + Send + 'static,
{
    // Never forwarded as the client sent them, on either path: only a
    // verified certificate sets them.
    tls::set_client_cert_headers(req.headers_mut(), accepted.client_cert.get());
    let index = accepted
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if accepted.framing.is_ambiguous(index) {
        // RFC 9112 section 6.1: a server may reject such a message, and
        // must close the connection after it either way.
        let failure = http_proxy::Failure::AmbiguousFraming;
        let status = failure.status().as_u16();
        access_rejected(
            &accepted,
            accepted.peer,
            None,
            Some(req.uri().path()),
            status,
            &failure.to_string(),
        );
        return failure.response().map(Either::Right);
    }
    if let Some(route_index) = plain_http_route(&req, &accepted) {
        let trusted = &accepted.snapshot.config.listeners[accepted.listener_index].trusted_proxies;
        let client = client_addr::resolve(accepted.peer, trusted, req.headers());
        // A route's `auth` admits plain HTTP requests as it admits upgrades.
        if let Some(auth) = &accepted.snapshot.config.routes[route_index].auth {
            let forwarder = &accepted.shared.forwarder;
            let metrics = accepted.shared.metrics.as_deref();
            if let Err(denial) =
                auth::admit(auth, &mut req, (client, tls), forwarder, metrics).await
            {
                let answer = denied(&accepted, &req, client, denial);
                return answer.map(|body| Either::Left(Either::Left(body)));
            }
        }
        let client = http_proxy::Client {
            peer: client,
            hop: accepted.peer,
            listener: accepted.listener.clone(),
            tls,
            metrics: accepted.shared.metrics.clone(),
            pools: accepted.shared.http.clone(),
        };
        let answer = http_proxy::proxy(req, &client, &accepted.snapshot, route_index).await;
        return answer.map(Either::Right);
    }
    upgrade::<IO>(req, accepted, tls).await.map(Either::Left)
}

/// The route of a request to proxy as plain HTTP, if it is one.
fn plain_http_route(req: &Request<Incoming>, accepted: &Context) -> Option<usize> {
    let snapshot = &accepted.snapshot;
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let index = snapshot
        .routes
        .find(&accepted.listener, host, req.uri().path())?;
    let proxied = snapshot.config.routes[index].limits.http == HttpMode::Proxy
        && !rfc6455::has_token(req.headers(), http::header::UPGRADE, "websocket");
    proxied.then_some(index)
}

/// The whole upgrade: check the request, route it, upgrade a backend, and
/// hand both sides to the relay once hyper has sent the 101.
async fn upgrade<IO>(
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

/// Everything the relay task takes over from the handshake.
struct Handover {
    peer: SocketAddr,
    backend_addr: SocketAddr,
    backend_stream: upstream::BackendStream,
    backend_pre: Bytes,
    settings: relay::Settings,
    stop: relay::Stop,
    meter: Option<Meter>,
    access: AccessInfo,
    /// The connection's id, push tags and largest message, for the hub.
    push: (String, push::ConnTags, u64),
    hub: Arc<push::Hub>,
    /// The backend's connection slot, held until the relay ends.
    lease: balance::Lease,
    /// Counts the connection as open until the relay ends.
    guard: Option<Guard>,
    /// Its place on the listener, given back when the relay ends.
    ticket: Option<Ticket>,
    /// The sticky key it was placed by, for rebalancing.
    key: Option<Vec<u8>>,
}

/// Waits for hyper to finish the client's upgrade, gets the raw client
/// stream back with the bytes already read from it, relays, and writes the
/// access-log line.
///
/// The handover comes boxed: an `async fn` keeps its arguments twice in its
/// future, which every idle connection would pay for. Once the relay
/// starts, the box is freed and the task keeps only [`Relayed`].
async fn relay_connection<IO>(on_upgrade: hyper::upgrade::OnUpgrade, h: Box<Handover>)
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

/// Answers a request its route's authentication refused.
fn denied(
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

fn rejected(accepted: &Context, req: &Request<Incoming>, reject: Reject) -> Response<Full<Bytes>> {
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
fn access_rejected(
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
    fn tls_failed(&self, reason: &str) {
        if let Some(m) = &self.shared.metrics {
            m.tls_failed(&self.listener);
        }
        info!(peer = %self.peer, listener = %self.listener, reason, "TLS handshake failed");
    }
}
