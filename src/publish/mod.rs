//! The publish API (`[publish]`): `POST /publish` pushes a message to a
//! user, a channel or one connection; `GET /connections?user=` lists a
//! user's connections. Every request carries the bearer token. With
//! `[cluster]`, messages travel through Redis to the instances that hold
//! their targets ([`cluster`]); without it, only this instance is reached.
//!
//! A message's size is checked twice: the request is refused (413) when the
//! message is larger than the largest `max_message_bytes` of any route, and
//! each target connection whose own route allows less is skipped and
//! counted (`too_large`), so one publish can reach connections of routes
//! with different limits.

pub mod cluster;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::config::Publish;
use crate::metrics::Metrics;
use crate::push::tags::query_param;
use crate::push::{Delivery, Hub, Target};
use crate::relay::inbox::Pushed;
use crate::server::{AcceptBackoff, BindError, Server, Shared};
use cluster::Cluster;

/// Room for JSON and base64 around the largest message.
const BODY_OVERHEAD: usize = 64 * 1024;

/// The publish listener's state, shared by its requests.
struct Api {
    shared: Arc<Shared>,
    settings: Publish,
    cluster: Option<Arc<Cluster>>,
    bucket: Mutex<Bucket>,
}

/// A token bucket: `requests_per_second`, with a burst of one second.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Binds the publish listener of the running configuration, if it has
/// one, and serves it (and the cluster, with `[cluster]`) in tasks of
/// their own. Returns the bound address.
pub async fn start(server: &Server) -> Result<Option<SocketAddr>, BindError> {
    let shared = server.shared().clone();
    let config = shared.current.load().config.clone();
    let Some(settings) = config.publish.clone() else {
        if let Some(c) = &config.cluster {
            // Messages from other instances still arrive here.
            Cluster::start(c, shared.hub.clone(), shared.metrics.clone());
        }
        return Ok(None);
    };
    let listener = TcpListener::bind(settings.bind)
        .await
        .map_err(|source| BindError {
            name: "publish".to_string(),
            addr: settings.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| BindError {
        name: "publish".to_string(),
        addr: settings.bind,
        source,
    })?;
    let cluster = (config.cluster.as_ref())
        .map(|c| Cluster::start(c, shared.hub.clone(), shared.metrics.clone()));
    info!(%addr, clustered = cluster.is_some(), "publish API listening");
    let api = Arc::new(Api {
        bucket: Mutex::new(Bucket {
            tokens: f64::from(settings.requests_per_second),
            at: Instant::now(),
        }),
        shared,
        settings,
        cluster,
    });
    tokio::spawn(serve(listener, addr, api));
    Ok(Some(addr))
}

async fn serve(listener: TcpListener, addr: SocketAddr, api: Arc<Api>) {
    let mut backoff = AcceptBackoff::new(addr);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        backoff.succeeded();
        let api = api.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.answer(req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "publish connection ended");
            }
        });
    }
}

/// A refused request: its status and one-line reason.
type Refusal = (StatusCode, String);

/// `POST /publish` as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    to: To,
    text: Option<String>,
    binary: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum To {
    User(String),
    Channel(String),
    Connection(String),
}

impl Api {
    fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.shared.metrics.as_ref()
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let route = (req.method().clone(), req.uri().path().to_string());
        let result = match (&route.0, route.1.as_str()) {
            (&Method::POST, "/publish") | (&Method::GET, "/connections") => {
                match self.admit(&req) {
                    Err(refusal) => Err(refusal),
                    Ok(()) if route.0 == Method::POST => self.publish(req).await,
                    Ok(()) => self.connections(&req).await,
                }
            }
            (_, "/publish") => Err((StatusCode::METHOD_NOT_ALLOWED, "use POST".into())),
            (_, "/connections") => Err((StatusCode::METHOD_NOT_ALLOWED, "use GET".into())),
            _ => Err((
                StatusCode::NOT_FOUND,
                "not found: try POST /publish or GET /connections?user=".into(),
            )),
        };
        match result {
            Ok(response) => response,
            Err((status, reason)) => {
                if route.1 == "/publish" {
                    if let Some(m) = self.metrics() {
                        m.published("rejected");
                    }
                }
                let mut response = text(status, format!("{reason}\n"));
                if status == StatusCode::UNAUTHORIZED {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
                }
                response
            }
        }
    }

    /// The bearer token, then the request rate.
    fn admit<B>(&self, req: &Request<B>) -> Result<(), Refusal> {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(given) = given else {
            let reason = "missing bearer token (Authorization: Bearer ...)";
            return Err((StatusCode::UNAUTHORIZED, reason.into()));
        };
        if !same(given.as_bytes(), self.settings.token.0.as_bytes()) {
            return Err((StatusCode::UNAUTHORIZED, "wrong bearer token".into()));
        }
        let rate = f64::from(self.settings.requests_per_second);
        let mut bucket = self.bucket.lock().expect("not poisoned");
        let now = Instant::now();
        let refill = now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(rate);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            let reason = format!(
                "too many requests: over publish.requests_per_second ({})",
                self.settings.requests_per_second
            );
            return Err((StatusCode::TOO_MANY_REQUESTS, reason));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// The largest message any route accepts.
    fn max_message(&self) -> u64 {
        let snapshot = self.shared.current.load();
        (snapshot.config.routes.iter())
            .map(|r| r.limits.max_message_bytes)
            .max()
            .unwrap_or(0)
    }

    async fn publish(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Refusal> {
        let max = self.max_message();
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let query = req.uri().query().unwrap_or("").to_string();
        let limit = (max as usize).saturating_mul(4) / 3 + BODY_OVERHEAD;
        let body = match Limited::new(req.into_body(), limit).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                let reason = format!("body too large: messages are at most {max} bytes (the largest max_message_bytes of any route)");
                return Err((StatusCode::PAYLOAD_TOO_LARGE, reason));
            }
        };
        let (target, message) = match content_type.as_str() {
            "application/json" => parse_json(&body)?,
            "text/plain" | "application/octet-stream" => {
                let target = raw_target(&query)?;
                let binary = content_type == "application/octet-stream";
                if !binary && std::str::from_utf8(&body).is_err() {
                    let reason =
                        "text/plain body is not UTF-8; send it as application/octet-stream";
                    return Err((StatusCode::BAD_REQUEST, reason.into()));
                }
                let message = Pushed {
                    binary,
                    payload: body,
                };
                (target, message)
            }
            _ => {
                let reason =
                    "Content-Type must be application/json, text/plain or application/octet-stream";
                return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, reason.into()));
            }
        };
        if message.payload.len() as u64 > max {
            let reason = format!(
                "message of {} bytes is over the largest max_message_bytes of any route ({max})",
                message.payload.len()
            );
            return Err((StatusCode::PAYLOAD_TOO_LARGE, reason));
        }
        Ok(self.send(target, message).await)
    }

    /// Delivers here and, in a cluster, through Redis.
    async fn send(&self, target: Target, message: Pushed) -> Response<Full<Bytes>> {
        let hub = &self.shared.hub;
        let local_only = match &target {
            Target::Connection(id) => Hub::node_of(id) == Some(hub.node()),
            Target::User(_) | Target::Channel(_) => false,
        };
        let cluster = self.cluster.as_ref().filter(|_| !local_only);
        let Some(cluster) = cluster else {
            let delivery = hub.deliver(&target, &message);
            self.count(delivery, "ok");
            return json_response(StatusCode::OK, delivery_json(delivery, None));
        };
        match cluster.publish(&target, &message).await {
            Ok(sent) => {
                self.count(sent.here, "ok");
                let published = json!({ "published": true, "nodes": sent.nodes });
                json_response(StatusCode::OK, delivery_json(sent.here, Some(published)))
            }
            Err(e) => {
                // Redis is out of reach: this instance's own connections
                // still get the message; other instances' do not.
                let delivery = hub.deliver(&target, &message);
                self.count(delivery, "cluster_unavailable");
                let extra =
                    json!({ "published": false, "error": format!("cluster unavailable: {e}") });
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    delivery_json(delivery, Some(extra)),
                )
            }
        }
    }

    fn count(&self, delivery: Delivery, result: &'static str) {
        if let Some(m) = self.metrics() {
            m.published(result);
            m.delivered(delivery.delivered, delivery.overflowed);
        }
    }

    /// `GET /connections?user=`: across the cluster when there is one.
    async fn connections<B>(&self, req: &Request<B>) -> Result<Response<Full<Bytes>>, Refusal> {
        let query = req.uri().query().unwrap_or("");
        let user = match query_param(query, "user") {
            Some(Ok(user)) if !user.is_empty() => user,
            _ => return Err((StatusCode::BAD_REQUEST, "name a user: ?user=ID".into())),
        };
        let hub = &self.shared.hub;
        let mut list: Vec<serde_json::Value> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for c in hub.connections_of(&user) {
            seen.insert(c.id.to_string());
            list.push(connection_json(&c.id, hub.node(), c.since));
        }
        if let Some(cluster) = &self.cluster {
            match cluster.connections_of(&user).await {
                Ok(remote) => {
                    for c in remote {
                        if seen.insert(c.id.clone()) {
                            list.push(connection_json(&c.id, &c.node, c.since));
                        }
                    }
                }
                Err(e) => {
                    let reason = format!("cluster unavailable: {e}");
                    return Err((StatusCode::SERVICE_UNAVAILABLE, reason));
                }
            }
        }
        Ok(json_response(
            StatusCode::OK,
            json!({ "user": user, "connections": list }),
        ))
    }
}

fn connection_json(id: &str, node: &str, since: std::time::SystemTime) -> serde_json::Value {
    let since = humantime::format_rfc3339_millis(since).to_string();
    json!({ "id": id, "node": node, "since": since })
}

fn delivery_json(d: Delivery, extra: Option<serde_json::Value>) -> serde_json::Value {
    let mut value = json!({
        "delivered": d.delivered,
        "too_large": d.too_large,
        "overflowed": d.overflowed,
    });
    if let (Some(serde_json::Value::Object(extra)), Some(map)) = (extra, value.as_object_mut()) {
        map.extend(extra);
    }
    value
}

fn parse_json(body: &[u8]) -> Result<(Target, Pushed), Refusal> {
    let parsed: PublishBody = serde_json::from_slice(body).map_err(|e| {
        let reason = format!(
            "bad JSON: {e}; send {{\"to\": {{\"user\"|\"channel\"|\"connection\": \"...\"}}, \"text\" or \"binary\": \"...\"}}"
        );
        (StatusCode::BAD_REQUEST, reason)
    })?;
    let target = match parsed.to {
        To::User(u) => Target::User(u),
        To::Channel(c) => Target::Channel(c),
        To::Connection(c) => Target::Connection(c),
    };
    let (Target::User(name) | Target::Channel(name) | Target::Connection(name)) = &target;
    if name.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "the target's name is empty".into()));
    }
    let message = match (parsed.text, parsed.binary) {
        (Some(text), None) => Pushed {
            binary: false,
            payload: Bytes::from(text),
        },
        (None, Some(b64)) => {
            let payload = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| (StatusCode::BAD_REQUEST, "\"binary\" is not base64".into()))?;
            Pushed {
                binary: true,
                payload: Bytes::from(payload),
            }
        }
        _ => {
            let reason = "give exactly one of \"text\" and \"binary\"";
            return Err((StatusCode::BAD_REQUEST, reason.into()));
        }
    };
    Ok((target, message))
}

/// The target of a raw body: exactly one of `?user=`, `?channel=` and
/// `?connection=`.
fn raw_target(query: &str) -> Result<Target, Refusal> {
    let get = |name| match query_param(query, name) {
        Some(Ok(v)) if !v.is_empty() => Ok(Some(v)),
        Some(_) => Err((StatusCode::BAD_REQUEST, format!("bad ?{name}= value"))),
        None => Ok(None),
    };
    match (get("user")?, get("channel")?, get("connection")?) {
        (Some(u), None, None) => Ok(Target::User(u)),
        (None, Some(c), None) => Ok(Target::Channel(c)),
        (None, None, Some(c)) => Ok(Target::Connection(c)),
        _ => Err((
            StatusCode::BAD_REQUEST,
            "name exactly one target: ?user=, ?channel= or ?connection=".into(),
        )),
    }
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_targets_need_exactly_one() {
        assert_eq!(raw_target("user=42").unwrap(), Target::User("42".into()));
        assert_eq!(
            raw_target("channel=a%2Fb").unwrap(),
            Target::Channel("a/b".into())
        );
        assert_eq!(
            raw_target("user=1&channel=2").unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(raw_target("").unwrap_err().0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn json_bodies() {
        let (t, m) = parse_json(br#"{"to":{"user":"42"},"text":"hi"}"#).unwrap();
        assert_eq!(
            (t, m.binary, &m.payload[..]),
            (Target::User("42".into()), false, &b"hi"[..])
        );
        let (t, m) = parse_json(br#"{"to":{"connection":"a.1.2"},"binary":"AAE="}"#).unwrap();
        assert_eq!(
            (t, m.binary, &m.payload[..]),
            (Target::Connection("a.1.2".into()), true, &[0u8, 1][..])
        );
        for bad in [
            &br#"{"to":{"user":"42"}}"#[..],
            br#"{"to":{"user":"42"},"text":"a","binary":"AA=="}"#,
            br#"{"to":{"room":"1"},"text":"a"}"#,
            br#"{"to":{"user":"42"},"binary":"%%"}"#,
            br#"{"to":{"user":""},"text":"a"}"#,
        ] {
            assert_eq!(parse_json(bad).unwrap_err().0, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn token_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
