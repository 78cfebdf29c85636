//! Each request hyper parsed goes one of two ways: through the WebSocket
//! upgrade, or, on a route with `http = "proxy"`, to the plain-HTTP proxy.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};

use super::access::{access_rejected, denied};
use super::upgrade::upgrade;
use super::Context;
use crate::config::HttpMode;
use crate::upstream::RefusalBody;
use crate::{auth, client_addr, http_proxy, relay, rfc6455, tls};

/// What a client is answered with: the upgrade path's answers (the proxy's
/// own or a backend's refusal), or a proxied HTTP exchange's.
type ClientBody = Either<Either<Full<Bytes>, RefusalBody>, http_proxy::AnswerBody>;

/// Where a request leaves the WebSocket path: on a route with
/// `http = "proxy"`, a request without `Upgrade: websocket` is proxied as
/// plain HTTP; every other request goes through the upgrade.
pub(super) async fn answer<IO>(
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
