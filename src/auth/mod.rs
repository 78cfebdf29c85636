//! Admission by identity: a route's `auth` decides, after the route is
//! found and the handshake checked, and before any backend is chosen,
//! whether the request may pass, and what the backend learns about who
//! sent it.
//!
//! [`jwt`] checks a token in the request itself; [`forward`] asks an
//! authentication service. Both answer with an [`Admitted`] (the headers
//! of the request already rewritten for the backend) or a [`Denial`] that
//! says what the client gets and why.

pub mod forward;
pub mod jwt;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;

use crate::config::Auth;
use crate::metrics::Metrics;

/// Runs the route's `auth` on `req` from `client` (over TLS or not),
/// rewriting its headers for the backend, and counts the decision (and a
/// forward-auth request's latency) in `metrics`.
pub async fn admit<B>(
    auth: &Auth,
    req: &mut Request<B>,
    (client, tls): (SocketAddr, bool),
    forwarder: &forward::Forwarder,
    metrics: Option<&Metrics>,
) -> Result<Admitted, Denial> {
    let (method, outcome) = match auth {
        Auth::Jwt(jwt) => {
            let uri = req.uri().clone();
            ("jwt", jwt::check(jwt, req.headers_mut(), &uri))
        }
        Auth::Forward(service) => {
            let started = Instant::now();
            let (method, uri) = (req.method().clone(), req.uri().clone());
            let request = (&method, &uri, req.headers_mut());
            let outcome = forwarder.check(service, request, client, tls).await;
            if let Some(m) = metrics {
                m.forward_auth(started.elapsed());
            }
            ("forward", outcome)
        }
    };
    if let Some(m) = metrics {
        let result = match &outcome {
            Ok(_) => "admitted",
            Err(denial) => denial.reason.label(),
        };
        m.auth(method, result);
    }
    outcome
}

/// A request that may pass.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Who it is (a JWT's `sub`, or the first response header a forward
    /// service returned), for the access log.
    pub subject: Option<String>,
    /// When the connection must be closed because its token expires.
    pub expires_at: Option<Instant>,
    /// The subprotocol the 101 selects when the backend selects none: the
    /// first one offered beside a token sent as a subprotocol, since a
    /// browser fails a handshake whose offer gets no answer.
    pub protocol_fallback: Option<HeaderValue>,
}

/// Why a request may not pass; each maps to a status and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No token where the route reads it.
    Missing,
    /// Not a JWT, or a claim of the wrong type, or no `exp`.
    Malformed,
    /// No key of the route matches the token's `kid` and `alg`.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `iss` is not the route's issuer.
    WrongIssuer,
    /// `aud` does not name the route's audience.
    WrongAudience,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is ahead (beyond the leeway).
    NotYetValid,
    /// The authentication service answered 401 or 403.
    Denied,
    /// The service answered something else, or could not be reached.
    Unavailable,
    /// The service did not answer within its timeout.
    Timeout,
}

impl Reason {
    /// The metric label (`wsgate_auth_total{reason}`).
    pub fn label(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Denied => "denied",
            Reason::Unavailable => "unavailable",
            Reason::Timeout => "timeout",
        }
    }

    /// The one-line reason the client reads.
    pub fn message(self) -> &'static str {
        match self {
            Reason::Missing => "unauthorized: no token",
            Reason::Malformed => "unauthorized: malformed token",
            Reason::UnknownKey => "unauthorized: token signed with an unknown key or algorithm",
            Reason::BadSignature => "unauthorized: bad token signature",
            Reason::WrongIssuer => "unauthorized: wrong token issuer",
            Reason::WrongAudience => "unauthorized: wrong token audience",
            Reason::Expired => "unauthorized: token expired",
            Reason::NotYetValid => "unauthorized: token not yet valid",
            Reason::Denied => "denied by the authentication service",
            Reason::Unavailable => "authentication service unavailable",
            Reason::Timeout => "authentication service did not answer in time",
        }
    }
}

/// A refusal: the status, the reason, and for a service's own 401 or 403
/// what it said.
#[derive(Debug)]
pub struct Denial {
    /// Why.
    pub reason: Reason,
    /// 401, 403 or 503.
    pub status: StatusCode,
    /// The service's answer to pass on; `None`: the proxy's own line.
    pub passed: Option<Box<Passed>>,
}

/// What a service's 401 or 403 passes to the client.
#[derive(Debug)]
pub struct Passed {
    /// Its body, at most 4 KiB.
    pub body: Bytes,
    /// `WWW-Authenticate` and `Content-Type`, when it sent them.
    pub headers: HeaderMap,
}

impl Denial {
    /// A refusal of the proxy's own: 401 for a token, 503 for a service.
    pub fn of(reason: Reason) -> Denial {
        let status = match reason {
            Reason::Unavailable | Reason::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        };
        Denial {
            reason,
            status,
            passed: None,
        }
    }

    /// The answer to the client.
    pub fn response(self) -> Response<Full<Bytes>> {
        let mut builder = Response::builder()
            .status(self.status)
            .header("connection", "close");
        let body = match self.passed {
            Some(passed) => {
                let Passed { body, headers } = *passed;
                if !headers.contains_key(http::header::CONTENT_TYPE) {
                    builder = builder.header("content-type", "application/octet-stream");
                }
                for (name, value) in &headers {
                    builder = builder.header(name, value);
                }
                body
            }
            None => {
                if self.status == StatusCode::UNAUTHORIZED {
                    // RFC 6750 section 3: a 401 names the scheme it wants.
                    builder = builder.header(http::header::WWW_AUTHENTICATE, "Bearer");
                }
                builder = builder.header("content-type", "text/plain; charset=utf-8");
                Bytes::from(format!("{}\n", self.reason.message()))
            }
        };
        builder
            .body(Full::new(body))
            .expect("a valid status and copied headers")
    }
}
