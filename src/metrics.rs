//! Metrics in the Prometheus (or, when asked, OpenMetrics) text format,
//! named as the contract's "Admin listener" section lists them.
//!
//! Every series whose label values are known in advance exists at 0 from
//! the start (reload results, the statuses and close codes the proxy itself
//! sends, the backends of the running configuration), so that an alert on
//! `increase(...)` sees the first event after a restart.
//!
//! Counting must not slow the relay: a connection counts its own messages
//! and bytes (in its relay state) and adds them to the shared counters only
//! now and then ([`Meter::flush`]: at a short interval while it has
//! traffic, and when it ends). The shared counters are resolved once per
//! connection, so a flush touches a handful of atomics and no label map.
//! Backend health and active counts are read from the live state when
//! `/metrics` is scraped.
//!
//! This file holds the registry and the counters' events; beside it,
//! `meter` is one connection's link to them, `scrape` what a scrape of
//! `/metrics` does, `exposition` the two text formats, `http` and
//! `admission` the proxied-HTTP and admission-control metrics.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::close::{CloseCode, Initiator};
use crate::config::HostPattern;

mod admission;
mod exposition;
mod http;
mod meter;
mod scrape;

pub use admission::AdmissionMetrics;
pub use exposition::Exposition;
use http::HttpMetrics;
pub use meter::Meter;

/// Statuses the proxy answers a refused upgrade with (contract, "Behaviour
/// on the wire"); a backend's own refusal passed through is counted under
/// its status when it happens.
const PROXY_STATUSES: [u16; 13] = [
    400, 401, 403, 404, 405, 408, 413, 426, 429, 431, 502, 503, 504,
];

/// The closes the proxy sends itself (contract, "Behaviour on the wire"),
/// with the initiator each is counted under: the proxy for its timeouts and
/// drains, the offender for a broken rule, the side that vanished.
const PROXY_CLOSES: [(CloseCode, Initiator); 11] = [
    (CloseCode::GOING_AWAY, Initiator::Proxy),
    // A client over its message rate; a token that expired.
    (CloseCode::POLICY_VIOLATION, Initiator::Client),
    (CloseCode::POLICY_VIOLATION, Initiator::Proxy),
    // Rebalancing; a push inbox that overflowed.
    (CloseCode::SERVICE_RESTART, Initiator::Proxy),
    (CloseCode::TRY_AGAIN_LATER, Initiator::Proxy),
    (CloseCode::GOING_AWAY, Initiator::Client),
    (CloseCode::PROTOCOL_ERROR, Initiator::Client),
    (CloseCode::PROTOCOL_ERROR, Initiator::Backend),
    (CloseCode::MESSAGE_TOO_BIG, Initiator::Client),
    (CloseCode::MESSAGE_TOO_BIG, Initiator::Backend),
    (CloseCode::BAD_GATEWAY, Initiator::Backend),
];

const DIRECTIONS: [&str; 2] = ["client_to_backend", "backend_to_client"];

/// Labels of a relayed connection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// The route, written `host` + `path_prefix` (`*` for any host).
    pub route: String,
    /// The pool's name.
    pub pool: String,
    /// The backend's resolved `ip:port`, as `wsgate_backend_up` names it.
    pub backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficLabels {
    direction: &'static str,
    pool: String,
    backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    code: &'static str,
    initiator: &'static str,
    pool: String,
    backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    method: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyProtocolLabels {
    listener: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    pool: String,
    /// The resolved `ip:port`.
    backend: String,
    /// The DNS name it was resolved from; empty for an address written
    /// in the file (and for a draining backend, which no snapshot lists).
    name: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResolveLabels {
    pool: String,
    /// The entry as written: `name:port` or the SRV name.
    name: String,
}

/// Every metric the proxy keeps.
pub struct Metrics {
    registry: Registry,
    connections_active: Family<ConnectionLabels, Gauge>,
    connections: Family<ConnectionLabels, Counter>,
    rejections: Family<StatusLabels, Counter>,
    messages: Family<TrafficLabels, Counter>,
    bytes: Family<TrafficLabels, Counter>,
    closes: Family<CloseLabels, Counter>,
    backend_up: Family<BackendLabels, Gauge>,
    backend_active: Family<BackendLabels, Gauge>,
    backend_max: Family<BackendLabels, Gauge>,
    reloads: Family<ResultLabels, Counter>,
    config_version: Gauge,
    tls_failures: Family<ListenerLabels, Counter>,
    resolve_errors: Family<ResolveLabels, Counter>,
    handshake_seconds: Histogram,
    connection_seconds: Histogram,
    log_lines_dropped: Counter,
    auth: Family<AuthLabels, Counter>,
    forward_auth_seconds: Histogram,
    proxy_protocol_errors: Family<ProxyProtocolLabels, Counter>,
    publishes: Family<ResultLabels, Counter>,
    deliveries: Counter,
    overflows: Counter,
    cluster_errors: Counter,
    cluster_lag: Histogram,
    http: HttpMetrics,
    /// Admission control: refusals, the admit queue, rebalancing closes.
    pub admission: AdmissionMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all at zero.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            connections_active: Family::default(),
            connections: Family::default(),
            rejections: Family::default(),
            messages: Family::default(),
            bytes: Family::default(),
            closes: Family::default(),
            backend_up: Family::default(),
            backend_active: Family::default(),
            backend_max: Family::default(),
            reloads: Family::default(),
            config_version: Gauge::default(),
            tls_failures: Family::default(),
            resolve_errors: Family::default(),
            // 0.5 ms .. ~16 s: a loopback upgrade to a slow backend's timeout.
            handshake_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            // 1 s .. 4^10 s (about 12 days): WebSocket connections live for hours.
            connection_seconds: Histogram::new(exponential_buckets(1.0, 4.0, 11)),
            log_lines_dropped: Counter::default(),
            auth: Family::default(),
            // 0.5 ms .. ~8 s: a local service to one at its timeout.
            forward_auth_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
            proxy_protocol_errors: Family::default(),
            publishes: Family::default(),
            deliveries: Counter::default(),
            overflows: Counter::default(),
            cluster_errors: Counter::default(),
            // 0.1 ms .. ~3 s: from a publish on one instance to its
            // arrival on another.
            cluster_lag: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            admission: AdmissionMetrics::default(),
            http: HttpMetrics::default(),
        };
        let mut registry = Registry::default();
        // prometheus-client appends `_total` to counter names.
        registry.register(
            "wsgate_connections_active",
            "Relayed WebSocket connections open now",
            m.connections_active.clone(),
        );
        registry.register(
            "wsgate_connections",
            "WebSocket connections upgraded (101 sent)",
            m.connections.clone(),
        );
        registry.register(
            "wsgate_handshake_rejections",
            "Upgrade requests refused, by status",
            m.rejections.clone(),
        );
        registry.register(
            "wsgate_messages",
            "Data messages relayed (counted when their final frame passes)",
            m.messages.clone(),
        );
        registry.register(
            "wsgate_bytes",
            "Bytes relayed after the upgrade, frame headers included",
            m.bytes.clone(),
        );
        registry.register(
            "wsgate_closes",
            "Relayed connections ended, by first close code and who started it",
            m.closes.clone(),
        );
        registry.register(
            "wsgate_backend_up",
            "1 while health checks and passive marks consider the backend up, else 0",
            m.backend_up.clone(),
        );
        registry.register(
            "wsgate_backend_connections_active",
            "Connections on the backend, handshakes in flight included",
            m.backend_active.clone(),
        );
        registry.register(
            "wsgate_backend_max_connections",
            "The backend's configured max_connections (only backends that have one)",
            m.backend_max.clone(),
        );
        registry.register(
            "wsgate_config_reloads",
            "Configuration reload attempts, by result",
            m.reloads.clone(),
        );
        registry.register(
            "wsgate_config_version",
            "Version of the running configuration",
            m.config_version.clone(),
        );
        registry.register(
            "wsgate_tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            m.tls_failures.clone(),
        );
        registry.register(
            "wsgate_resolve_errors",
            "Failed or empty resolutions of backend names; the last good addresses stay",
            m.resolve_errors.clone(),
        );
        registry.register(
            "wsgate_handshake_duration_seconds",
            "From request head received to 101 sent",
            m.handshake_seconds.clone(),
        );
        registry.register(
            "wsgate_connection_duration_seconds",
            "Relayed connection lifetimes",
            m.connection_seconds.clone(),
        );
        m.admission.register(&mut registry);
        registry.register(
            "wsgate_auth",
            "Route authentication decisions, by method (jwt, forward) and result (admitted or the reason)",
            m.auth.clone(),
        );
        registry.register(
            "wsgate_forward_auth_duration_seconds",
            "Time to the authentication service's answer, or to its timeout",
            m.forward_auth_seconds.clone(),
        );
        registry.register(
            "wsgate_proxy_protocol_errors",
            "Connections closed for a missing, malformed or untrusted PROXY protocol header",
            m.proxy_protocol_errors.clone(),
        );
        registry.register(
            "wsgate_push_publishes",
            "Publish requests, by result (ok, rejected, cluster_unavailable)",
            m.publishes.clone(),
        );
        registry.register(
            "wsgate_push_deliveries",
            "Pushed messages queued to a connection of this instance",
            m.deliveries.clone(),
        );
        registry.register(
            "wsgate_push_queue_overflows",
            "Connections closed with 1013 because their push queue was full",
            m.overflows.clone(),
        );
        registry.register(
            "wsgate_push_cluster_errors",
            "Redis commands or subscriptions that failed (each reconnect attempt counts)",
            m.cluster_errors.clone(),
        );
        registry.register(
            "wsgate_push_cluster_lag_seconds",
            "From a publish on one instance to its arrival here through Redis",
            m.cluster_lag.clone(),
        );
        m.http.register(&mut registry);
        registry.register(
            "wsgate_log_lines_dropped",
            "Log lines dropped because the log writer fell behind",
            m.log_lines_dropped.clone(),
        );
        for result in ["success", "failure"] {
            m.reloads.get_or_create(&ResultLabels { result }).inc_by(0);
        }
        for status in PROXY_STATUSES {
            m.rejections
                .get_or_create(&StatusLabels { status })
                .inc_by(0);
        }
        Metrics { registry, ..m }
    }

    /// A route's authentication decided: `result` is `admitted` or the
    /// reason of the refusal.
    pub fn auth(&self, method: &'static str, result: &'static str) {
        self.auth
            .get_or_create(&AuthLabels { method, result })
            .inc();
    }

    /// A forward-auth request took `elapsed`.
    pub fn forward_auth(&self, elapsed: Duration) {
        self.forward_auth_seconds.observe(elapsed.as_secs_f64());
    }

    /// A connection on `listener` was closed for its PROXY header.
    pub fn proxy_protocol_error(&self, listener: &str, reason: &'static str) {
        let labels = ProxyProtocolLabels {
            listener: listener.to_string(),
            reason,
        };
        self.proxy_protocol_errors.get_or_create(&labels).inc();
    }

    /// A publish request ended with `result` (`ok`, `rejected` or
    /// `cluster_unavailable`).
    pub fn published(&self, result: &'static str) {
        self.publishes.get_or_create(&ResultLabels { result }).inc();
    }

    /// Pushed messages queued here, and connections whose queue overflowed.
    pub fn delivered(&self, delivered: u64, overflowed: u64) {
        self.deliveries.inc_by(delivered);
        self.overflows.inc_by(overflowed);
    }

    /// A Redis command or subscription failed.
    pub fn cluster_error(&self) {
        self.cluster_errors.inc();
    }

    /// A message from another instance arrived `lag` after its publish.
    pub fn cluster_lag(&self, lag: Duration) {
        self.cluster_lag.observe(lag.as_secs_f64());
    }

    /// A handshake refused with `status`.
    pub fn rejected(&self, status: u16) {
        self.rejections
            .get_or_create(&StatusLabels { status })
            .inc();
    }

    /// A reload attempt and its result.
    pub fn reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// A resolution of entry `name` of `pool` failed or found nothing.
    pub fn resolve_failed(&self, pool: &str, name: &str) {
        let labels = ResolveLabels {
            pool: pool.to_string(),
            name: name.to_string(),
        };
        self.resolve_errors.get_or_create(&labels).inc();
    }

    /// A TLS handshake on `listener` failed or timed out.
    pub fn tls_failed(&self, listener: &str) {
        let labels = ListenerLabels {
            listener: listener.to_string(),
        };
        self.tls_failures.get_or_create(&labels).inc();
    }
}

/// A route as a label (and in the access log): its host pattern (`*` for
/// any host) and path prefix, e.g. `*/echo` or `*.example.com/chat`.
pub fn route_label(route: &crate::config::Route) -> String {
    let mut label = String::with_capacity(route_label_len(route));
    push_route_label(route, &mut label);
    label
}

/// The length of [`route_label`] at most.
pub fn route_label_len(route: &crate::config::Route) -> usize {
    let host = route.host.as_ref().map_or(0, |h| match h {
        HostPattern::Exact(name) => name.len(),
        HostPattern::Suffix(suffix) => suffix.len(),
    });
    1 + host + route.path_prefix.len()
}

/// Appends [`route_label`] to `out`, allocating nothing when it has room.
pub fn push_route_label(route: &crate::config::Route, out: &mut String) {
    match &route.host {
        Some(HostPattern::Exact(name)) => out.push_str(name),
        Some(HostPattern::Suffix(suffix)) => {
            out.push('*');
            out.push_str(suffix);
        }
        None => out.push('*'),
    }
    out.push_str(&route.path_prefix);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_label_values_exist_at_zero() {
        let m = Metrics::new();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        assert!(
            out.contains("wsgate_config_reloads_total{result=\"failure\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("wsgate_config_reloads_total{result=\"success\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("wsgate_handshake_rejections_total{status=\"503\"} 0"),
            "{out}"
        );
    }
}
