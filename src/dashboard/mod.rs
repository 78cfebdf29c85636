//! The dashboard on the admin listener (issue 18): `GET /` serves one page
//! built into the binary, `GET /events` streams a document a second to it
//! (Server-Sent Events), and `POST /backends/{pool}/{addr}/drain` and
//! `/undrain` drain a backend by hand. The bearer token of `[admin] token`
//! guards the whole admin listener ([`auth`]).
//!
//! This is control plane: it reads the metrics and the live backend state,
//! and nothing on the data path imports it.

pub mod auth;
pub mod history;
pub mod scrape;
pub mod stream;
mod view;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tracing::info;

use crate::server::Shared;
use crate::shutdown::Drain;
use history::{Reload, Ring};
use stream::Viewers;

/// Any admin answer: a whole body, or a viewer's endless stream.
pub type AdminBody = BoxBody<Bytes, Infallible>;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// The page may load only its own script and style, and talk only to the
/// admin listener: no request ever leaves for another origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How often viewers get a document, and the history a point.
pub const TICK: Duration = Duration::from_secs(1);

/// The dashboard of one admin listener: its viewers, fed by a sampler
/// task that lives as long as the proxy.
#[derive(Debug, Default)]
pub struct Dashboard {
    viewers: Viewers,
}

impl Dashboard {
    /// Starts the sampler: a point a second into the history, from the
    /// start, and a document a second to the viewers, until the proxy is
    /// gone.
    pub fn start(shared: &Arc<Shared>) -> Arc<Dashboard> {
        let dashboard = Arc::new(Dashboard::default());
        tokio::spawn(sample(Arc::downgrade(shared), dashboard.clone()));
        dashboard
    }

    /// Answers the dashboard's own endpoints; `None` for every other path.
    pub fn answer<B>(&self, req: &Request<B>, shared: &Shared) -> Option<Response<AdminBody>> {
        let path = req.uri().path();
        let method = req.method();
        let resp = match path {
            "/" | "/dashboard.js" | "/dashboard.css" | "/events" if method != Method::GET => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use GET\n".into(),
            ),
            "/" => asset("text/html; charset=utf-8", PAGE),
            "/dashboard.js" => asset("text/javascript; charset=utf-8", SCRIPT),
            "/dashboard.css" => asset("text/css; charset=utf-8", STYLE),
            "/events" => self.events(),
            _ => {
                let action = path.strip_prefix("/backends/")?;
                if method != Method::POST {
                    return Some(text(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method not allowed: use POST\n".into(),
                    ));
                }
                backend_action(action, shared)
            }
        };
        Some(resp)
    }

    fn events(&self) -> Response<AdminBody> {
        match self.viewers.subscribe() {
            Ok(viewer) => Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-store")
                .body(viewer.boxed())
                .expect("static headers are valid"),
            Err(e) => {
                let mut resp = text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
                resp.headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static("5"));
                resp
            }
        }
    }
}

async fn sample(shared: Weak<Shared>, dashboard: Arc<Dashboard>) {
    let mut sampler = view::Sampler::default();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = tokio::time::Instant::now();
        let seconds = now.duration_since(last).as_secs_f64();
        last = now;
        let text = shared
            .metrics
            .as_ref()
            .map(|m| m.encode())
            .unwrap_or_default();
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut reloads = Ring::new(crate::server::RELOADS_KEPT);
        for r in shared.recent_reloads() {
            reloads.push(Reload::new(r.at, r.result));
        }
        let doc = sampler.tick(&shared, &text, seconds, at_ms, &reloads);
        dashboard.viewers.publish(&doc.to_string());
    }
}

/// The refusal of a request that lacks the token it needs (see [`auth`]):
/// 401 with a reason and `WWW-Authenticate: Bearer`; `None` lets it pass.
pub fn refusal<B>(req: &Request<B>, shared: &Shared) -> Option<Response<AdminBody>> {
    let snapshot = shared.current.load();
    let admin = snapshot.config.admin.as_ref();
    let loopback = admin.is_none_or(|a| a.bind.ip().is_loopback());
    let token = admin.and_then(|a| a.token.as_ref().map(crate::config::Secret::expose));
    let denied = auth::check(
        req.method(),
        req.uri().path(),
        req.headers(),
        token,
        loopback,
    )
    .err()?;
    let mut resp = text(
        StatusCode::UNAUTHORIZED,
        format!("unauthorized: {denied}\n"),
    );
    let challenge = match denied {
        auth::Denied::Wrong => "Bearer realm=\"wsgate admin\", error=\"invalid_token\"",
        auth::Denied::Missing | auth::Denied::Unconfigured => "Bearer realm=\"wsgate admin\"",
    };
    resp.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static(challenge),
    );
    Some(resp)
}

/// `{pool}/{addr}/drain` or `{pool}/{addr}/undrain`, percent-decoded.
fn backend_action(action: &str, shared: &Shared) -> Response<AdminBody> {
    let usage = "not found: POST /backends/{pool}/{addr}/drain or /undrain\n";
    let mut parts = action.rsplitn(3, '/');
    let (Some(verb), Some(addr), Some(pool)) = (parts.next(), parts.next(), parts.next()) else {
        return text(StatusCode::NOT_FOUND, usage.into());
    };
    let drain = match verb {
        "drain" => true,
        "undrain" => false,
        _ => return text(StatusCode::NOT_FOUND, usage.into()),
    };
    let (Some(pool), Some(addr)) = (percent_decode(pool), percent_decode(addr)) else {
        return text(
            StatusCode::BAD_REQUEST,
            "bad request: malformed percent-encoding\n".into(),
        );
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("bad request: {addr:?} is not a backend address (ip:port)\n"),
        );
    };
    let snapshot = shared.current.load();
    let configured = snapshot
        .config
        .pools
        .iter()
        .find(|p| p.name == pool)
        .is_some_and(|p| p.backends.iter().any(|b| b.addr == addr));
    if !configured {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "not found: pool {pool:?} has no backend {addr} in the running configuration\n"
            ),
        );
    }
    let registry = &shared.registry;
    let changed = if drain {
        let d = Drain::now(snapshot.config.drain_timeout);
        let started = registry.hold_drained(&pool, addr, d);
        if started {
            info!(%pool, backend = %addr, drain_timeout = ?d.timeout, "backend drained by the admin API");
        }
        started
    } else {
        let ended = registry.release_drained(&pool, addr);
        if ended {
            info!(%pool, backend = %addr, "backend back in service by the admin API");
        }
        ended
    };
    let state = registry.get(&pool, addr);
    let body = json!({
        "pool": pool,
        "backend": addr.to_string(),
        "draining": state.as_ref().is_some_and(|s| s.is_draining()),
        "active": state.as_ref().map_or(0, |s| s.active()),
        "changed": changed,
    });
    json_answer(StatusCode::OK, &body)
}

/// Decodes `%XX` escapes (a path segment as a browser or curl sends it).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn asset(content_type: &'static str, body: &'static str) -> Response<AdminBody> {
    Response::builder()
        .header("content-type", content_type)
        .header("content-security-policy", CSP)
        .header("x-content-type-options", "nosniff")
        .header("cache-control", "no-cache")
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
        .expect("static headers are valid")
}

fn text(status: StatusCode, body: String) -> Response<AdminBody> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("static headers are valid")
}

fn json_answer(status: StatusCode, value: &serde_json::Value) -> Response<AdminBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!("{value}\n"))).boxed())
        .expect("static headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("127.0.0.1%3A9001").unwrap(),
            "127.0.0.1:9001"
        );
        assert_eq!(percent_decode("%5B%3A%3A1%5D:80").unwrap(), "[::1]:80");
        assert_eq!(percent_decode("plain").unwrap(), "plain");
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for asset in [PAGE, SCRIPT, STYLE] {
            let asset = asset.replace("http://www.w3.org/2000/svg", "");
            assert!(!asset.contains("http://") && !asset.contains("https://"));
            assert!(!asset.contains("//cdn"));
        }
        assert!(PAGE.contains("/dashboard.js") && PAGE.contains("/dashboard.css"));
    }
}
