//! Forward authentication: before a backend is contacted, a GET to the
//! route's authentication service, carrying the original method, URI and
//! host (`X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-Host`, as
//! Traefik names them) and the listed request headers. A 2xx admits; 401
//! and 403 reach the client with their body; anything else, or no answer
//! in time, is 503: the route fails closed.
//!
//! One HTTP client for the running proxy (in the runtime) keeps
//! connections to the services alive and reuses them across handshakes and
//! reloads.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{Admitted, Denial, Passed, Reason};
use crate::config::ForwardAuth;

/// The most of a 401 or 403 body passed on to the client.
pub const MAX_DENIAL_BODY: usize = 4 * 1024;

/// How long an unused connection to a service is kept for reuse.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers of a service's 401 or 403 passed on with its body.
const DENIAL_HEADERS: [HeaderName; 2] =
    [http::header::CONTENT_TYPE, http::header::WWW_AUTHENTICATE];

/// The client that talks to authentication services, with its pool of
/// kept-alive connections.
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

impl Default for Forwarder {
    fn default() -> Self {
        Self::new()
    }
}

impl Forwarder {
    /// A client with an empty connection pool.
    pub fn new() -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector);
        Forwarder { client }
    }

    /// Asks the service of `auth` about the request with `method`, `uri`
    /// and `headers`, from `client` over a TLS listener or not. On
    /// admission, the listed response headers replace the request's own
    /// of the same names; those names are removed from the request in
    /// every case, so a client cannot forge them.
    pub async fn check(
        &self,
        auth: &ForwardAuth,
        request: (&http::Method, &Uri, &mut HeaderMap),
        client: SocketAddr,
        tls: bool,
    ) -> Result<Admitted, Denial> {
        let (method, uri, headers) = request;
        let ask = self.ask(auth, method, uri, headers, client, tls);
        let answer = tokio::time::timeout(auth.timeout, ask).await;
        for name in &auth.response_headers {
            headers.remove(name);
        }
        let (status, answer_headers, body) = match answer {
            Err(_) => return Err(Denial::of(Reason::Timeout)),
            Ok(Err(e)) => {
                tracing::warn!(url = %auth.url, error = %e, "authentication service unreachable");
                return Err(Denial::of(Reason::Unavailable));
            }
            Ok(Ok(answer)) => answer,
        };
        if status.is_success() {
            let mut subject = None;
            for name in &auth.response_headers {
                for value in answer_headers.get_all(name) {
                    if subject.is_none() {
                        subject = value.to_str().ok().map(str::to_string);
                    }
                    headers.append(name, value.clone());
                }
            }
            return Ok(Admitted {
                subject,
                ..Admitted::default()
            });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let mut passed = HeaderMap::new();
            for name in DENIAL_HEADERS {
                for value in answer_headers.get_all(&name) {
                    passed.append(&name, value.clone());
                }
            }
            return Err(Denial {
                reason: Reason::Denied,
                status,
                passed: Some(Box::new(Passed {
                    body,
                    headers: passed,
                })),
            });
        }
        tracing::warn!(url = %auth.url, status = status.as_u16(), "authentication service answered neither 2xx nor 401/403");
        Err(Denial::of(Reason::Unavailable))
    }

    /// Sends the check and reads the answer, its body cut at
    /// [`MAX_DENIAL_BODY`].
    async fn ask(
        &self,
        auth: &ForwardAuth,
        method: &http::Method,
        uri: &Uri,
        headers: &HeaderMap,
        client: SocketAddr,
        tls: bool,
    ) -> Result<(StatusCode, HeaderMap, Bytes), Box<dyn std::error::Error + Send + Sync>> {
        let mut request = Request::get(auth.url.clone()).body(Empty::new())?;
        let out = request.headers_mut();
        for name in &auth.request_headers {
            for value in headers.get_all(name) {
                out.append(name, value.clone());
            }
        }
        out.insert(
            "x-forwarded-method",
            HeaderValue::from_str(method.as_str())?,
        );
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        out.insert("x-forwarded-uri", HeaderValue::from_str(target)?);
        if let Some(host) = headers.get(http::header::HOST) {
            out.insert("x-forwarded-host", host.clone());
        }
        let upgrade = crate::rfc6455::has_token(headers, http::header::UPGRADE, "websocket");
        let proto = match (upgrade, tls) {
            (true, true) => "wss",
            (true, false) => "ws",
            (false, true) => "https",
            (false, false) => "http",
        };
        out.insert("x-forwarded-proto", HeaderValue::from_static(proto));
        out.insert(
            "x-forwarded-for",
            HeaderValue::from_str(&client.ip().to_string())?,
        );
        let response = self.client.request(request).await?;
        let (parts, mut body) = response.into_parts();
        let mut kept = BytesMut::new();
        // Only a denial's body is passed on; a 2xx body is drained so the
        // connection can be reused, but never kept.
        let keep = !parts.status.is_success();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                let room = MAX_DENIAL_BODY.saturating_sub(kept.len());
                if keep {
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
                if keep && room == 0 {
                    break;
                }
            }
        }
        Ok((parts.status, parts.headers, kept.freeze()))
    }
}
