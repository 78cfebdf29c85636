//! The admin listener (contract, "Admin listener"): liveness, readiness,
//! metrics, status and reload, over plain HTTP/1.1. Bind it to loopback or
//! a private interface: it can reload the configuration.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::config::{Balance, HostPattern};
use crate::dashboard::{self, AdminBody, Dashboard};
use crate::metrics::Exposition;
use crate::server::{out_of_descriptors, AcceptBackoff, Server, Shared};

/// Serves the admin listener `server` bound, if its configuration has one,
/// in a task of its own.
pub fn spawn(server: &Server) {
    let Some(socket) = server.take_admin_socket() else {
        return;
    };
    let Ok(addr) = socket.local_addr() else {
        return;
    };
    // Logged before this returns: the socket is bound and accepts from
    // here on, and what the caller logs next comes after.
    info!(%addr, "admin listening");
    tokio::spawn(serve(socket, addr, server.shared().clone()));
}

/// Serves admin requests on `listener` (bound to `addr`) until the process
/// ends.
async fn serve(listener: TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    let mut backoff = AcceptBackoff::new(addr);
    let dashboard = Dashboard::start(&shared);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors: the reserve held for this moment is
            // given back, and the probe waiting in the backlog gets one.
            Err(e) if out_of_descriptors(&e) && shared.reserve.release() => {
                match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        backoff.failed(&e).await;
                        continue;
                    }
                }
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        backoff.succeeded();
        let shared = shared.clone();
        let dashboard = dashboard.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                let dashboard = dashboard.clone();
                async move { Ok::<_, Infallible>(dispatch(req, &shared, &dashboard).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "admin connection ended");
            }
        });
    }
}

/// The token check first, then the dashboard's endpoints, then the rest.
async fn dispatch(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    dashboard: &Dashboard,
) -> Response<AdminBody> {
    if let Some(denied) = dashboard::refusal(&req, shared) {
        return denied;
    }
    if let Some(resp) = dashboard.answer(&req, shared) {
        return resp;
    }
    answer(req, shared).await.map(BodyExt::boxed)
}

async fn answer(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if shared.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: shutting down\n",
                )
            }
        }
        (&Method::GET, "/metrics") => match &shared.metrics {
            Some(metrics) => {
                let accept = req.headers().get(http::header::ACCEPT);
                let format = Exposition::from_accept(accept.and_then(|v| v.to_str().ok()));
                Response::builder()
                    .header("content-type", format.content_type())
                    .body(Full::new(Bytes::from(metrics.render(
                        &shared.current.load(),
                        &shared.registry,
                        format,
                    ))))
                    .expect("static headers are valid")
            }
            None => text(StatusCode::NOT_FOUND, "metrics are off\n"),
        },
        (&Method::GET, "/status") => json_response(StatusCode::OK, status(shared)),
        (&Method::POST, "/reload") => match shared.reload().await {
            Ok(version) => json_response(StatusCode::OK, json!({ "version": version })),
            Err(e) => json_response(StatusCode::BAD_REQUEST, json!({ "errors": e.messages() })),
        },
        (_, "/reload") => not_allowed("POST"),
        (_, "/healthz" | "/readyz" | "/metrics" | "/status") => not_allowed("GET"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /, /healthz, /readyz, /metrics, /status or POST /reload\n",
        ),
    }
}

/// `/status`: the running configuration and the live state of its backends.
fn status(shared: &Shared) -> serde_json::Value {
    let snapshot = shared.current.load();
    let config = &snapshot.config;
    let now = tokio::time::Instant::now();
    let listeners: Vec<_> = config
        .listeners
        .iter()
        .map(|l| json!({ "name": l.name, "bind": l.bind.to_string(), "tls": l.tls.is_some() }))
        .collect();
    let routes: Vec<_> = config
        .routes
        .iter()
        .map(|r| {
            let host = r.host.as_ref().map(|h| match h {
                HostPattern::Exact(name) => name.clone(),
                HostPattern::Suffix(suffix) => format!("*{suffix}"),
            });
            json!({ "listener": r.listener, "host": host, "path_prefix": r.path_prefix, "pool": r.pool })
        })
        .collect();
    let pools: Vec<_> = config
        .pools
        .iter()
        .zip(&snapshot.balancers)
        .map(|(pool, balancer)| {
            let mut backends: Vec<_> = pool
                .backends
                .iter()
                .enumerate()
                .filter_map(|(i, b)| {
                    let state = balancer.backend(i)?;
                    Some(json!({
                        "addr": b.addr.to_string(),
                        "name": b.name.as_deref(),
                        "weight": b.weight,
                        "max_connections": b.max_connections,
                        "up": state.is_up(now),
                        "draining": state.is_draining(),
                        "drained_by_admin": shared.registry.is_held(&pool.name, b.addr),
                        "active": state.active(),
                        "slow_start_share": balancer.ramp(i, now),
                        "http_in_flight": state.http_in_flight(),
                    }))
                })
                .collect();
            for state in shared.registry.draining(&pool.name) {
                backends.push(json!({
                    "addr": state.addr().to_string(),
                    "weight": null,
                    "up": state.is_up(now),
                    "draining": true,
                    "active": state.active(),
                    "http_in_flight": state.http_in_flight(),
                }));
            }
            let balance = match pool.balance {
                Balance::LeastConnections => "least_connections",
                Balance::Sticky => "sticky",
            };
            let entries = entry_status(shared, pool);
            json!({ "name": pool.name, "balance": balance, "backends": backends, "entries": entries })
        })
        .collect();
    let loaded_at = humantime::format_rfc3339_seconds(snapshot.loaded_at).to_string();
    json!({
        "version": snapshot.version,
        "loaded_at": loaded_at,
        "ready": shared.ready.load(Ordering::Acquire),
        "connections_open": shared.tracker.open(),
        "listeners": listeners,
        "routes": routes,
        "pools": pools,
    })
}

/// A pool's name entries: each with its resolved addresses and when they
/// were last resolved (`null` until the first success).
fn entry_status(shared: &Shared, pool: &crate::config::Pool) -> Vec<serde_json::Value> {
    (shared.discovery.status(pool).into_iter())
        .map(|e| {
            let resolved_at =
                (e.resolved_at).map(|t| humantime::format_rfc3339_millis(t).to_string());
            let addresses: Vec<String> = e.addresses.iter().map(|a| a.to_string()).collect();
            let key = if e.srv { "srv" } else { "addr" };
            json!({ key: e.entry, "addresses": addresses, "resolved_at": resolved_at, "error": e.error })
        })
        .collect()
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static headers are valid")
}

/// 405 with the `Allow` header RFC 9110 section 15.5.6 requires.
fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    response
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}
