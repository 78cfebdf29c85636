//! Metrics in the Prometheus text format, named as the contract's "Admin
//! listener" section lists them.
//!
//! Counting must not slow the relay: a connection counts its own messages
//! and bytes (in its relay state) and adds them to the shared counters only
//! now and then ([`Meter::flush`]: at a short interval while it has
//! traffic, and when it ends). The shared counters are resolved once per
//! connection, so a flush touches a handful of atomics and no label map.
//! Backend health and active counts are read from the live state when
//! `/metrics` is scraped.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::close::{CloseInfo, Counts};

mod admission;
use crate::snapshot::Snapshot;
pub use admission::AdmissionMetrics;

/// Labels of a relayed connection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// The route, written `host` + `path_prefix` (`*` for any host).
    pub route: String,
    /// The pool's name.
    pub pool: String,
    /// The backend's address as configured.
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
    reloads: Family<ResultLabels, Counter>,
    config_version: Gauge,
    tls_failures: Family<ListenerLabels, Counter>,
    resolve_errors: Family<ResolveLabels, Counter>,
    handshake_seconds: Histogram,
    connection_seconds: Histogram,
    http: HttpMetrics,
    /// Admission control: refusals, the admit queue, rebalancing closes.
    pub admission: AdmissionMetrics,
}

/// The proxied-HTTP request metrics.
struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    in_flight: Family<PoolLabels, Gauge>,
    duration: Family<PoolLabels, Histogram, fn() -> Histogram>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    pool: String,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

/// 1 ms .. ~65 s: a loopback page up to a long poll held past its timeout.
fn http_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
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
            reloads: Family::default(),
            config_version: Gauge::default(),
            tls_failures: Family::default(),
            resolve_errors: Family::default(),
            // 0.5 ms .. ~16 s: a loopback upgrade to a slow backend's timeout.
            handshake_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            // 1 s .. 4^10 s (about 12 days): WebSocket connections live for hours.
            connection_seconds: Histogram::new(exponential_buckets(1.0, 4.0, 11)),
            admission: AdmissionMetrics::default(),
            http: HttpMetrics {
                requests: Family::default(),
                in_flight: Family::default(),
                duration: Family::new_with_constructor(http_histogram),
            },
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
            "wsgate_http_requests",
            "Proxied HTTP requests answered, by pool and status code",
            m.http.requests.clone(),
        );
        registry.register(
            "wsgate_http_requests_in_flight",
            "Proxied HTTP requests between routing and the end of the response",
            m.http.in_flight.clone(),
        );
        registry.register(
            "wsgate_http_request_duration_seconds",
            "From request head received to response head sent, proxied HTTP",
            m.http.duration.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition of every metric, with backend health and active
    /// counts read from `snapshot`'s live state now.
    pub fn render(&self, snapshot: &Snapshot, registry: &crate::snapshot::Registry) -> String {
        self.backend_up.clear();
        self.backend_active.clear();
        for (pool, balancer) in snapshot.config.pools.iter().zip(&snapshot.balancers) {
            let now = tokio::time::Instant::now();
            let named = (0..balancer.len()).filter_map(|i| {
                let name = pool.backends.get(i)?.name.as_deref().unwrap_or("");
                Some((balancer.backend(i)?.clone(), name.to_string()))
            });
            let draining = (registry.draining(&pool.name).into_iter()).map(|s| (s, String::new()));
            for (state, name) in named.chain(draining) {
                let labels = BackendLabels {
                    pool: pool.name.clone(),
                    backend: state.addr().to_string(),
                    name,
                };
                self.backend_up
                    .get_or_create(&labels)
                    .set(i64::from(state.is_up(now)));
                self.backend_active
                    .get_or_create(&labels)
                    .set(i64::from(state.active()));
            }
        }
        self.config_version.set(snapshot.version as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
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

    /// A proxied HTTP request on `pool` began.
    pub fn http_started(&self, pool: &str) {
        let labels = PoolLabels {
            pool: pool.to_string(),
        };
        self.http.in_flight.get_or_create(&labels).inc();
    }

    /// A proxied HTTP request on `pool` got its answer head, `code`, after
    /// `head`.
    pub fn http_answered(&self, pool: &str, code: u16, head: Duration) {
        let labels = HttpLabels {
            pool: pool.to_string(),
            code,
        };
        self.http.requests.get_or_create(&labels).inc();
        let labels = PoolLabels {
            pool: pool.to_string(),
        };
        self.http
            .duration
            .get_or_create(&labels)
            .observe(head.as_secs_f64());
    }

    /// A proxied HTTP request on `pool` ended (its response body too).
    pub fn http_finished(&self, pool: &str) {
        let labels = PoolLabels {
            pool: pool.to_string(),
        };
        self.http.in_flight.get_or_create(&labels).dec();
    }

    /// A connection upgraded after `handshake`; returns the meter that
    /// counts its traffic.
    pub fn upgraded(self: &Arc<Self>, labels: ConnectionLabels, handshake: Duration) -> Meter {
        self.handshake_seconds.observe(handshake.as_secs_f64());
        self.connections.get_or_create(&labels).inc();
        self.connections_active.get_or_create(&labels).inc();
        let traffic = |direction| TrafficLabels {
            direction,
            pool: labels.pool.clone(),
            backend: labels.backend.clone(),
        };
        let c2b = traffic("client_to_backend");
        let b2c = traffic("backend_to_client");
        Meter {
            metrics: self.clone(),
            messages: [
                self.messages.get_or_create_owned(&c2b),
                self.messages.get_or_create_owned(&b2c),
            ],
            bytes: [
                self.bytes.get_or_create_owned(&c2b),
                self.bytes.get_or_create_owned(&b2c),
            ],
            reported: [Counts::default(); 2],
            labels,
        }
    }
}

/// One connection's link to the shared counters.
#[derive(Debug)]
pub struct Meter {
    metrics: Arc<Metrics>,
    labels: ConnectionLabels,
    messages: [Counter<u64, AtomicU64>; 2],
    bytes: [Counter<u64, AtomicU64>; 2],
    reported: [Counts; 2],
}

impl Meter {
    /// Adds what the connection relayed since the last flush.
    pub fn flush(&mut self, client_to_backend: Counts, backend_to_client: Counts) {
        for (i, now) in [client_to_backend, backend_to_client]
            .into_iter()
            .enumerate()
        {
            let before = self.reported[i];
            self.messages[i].inc_by(now.messages - before.messages);
            self.bytes[i].inc_by(now.bytes - before.bytes);
            self.reported[i] = now;
        }
    }

    /// The connection ended after `lifetime`, closed as `close` says.
    pub fn closed(
        mut self,
        close: CloseInfo,
        client_to_backend: Counts,
        backend_to_client: Counts,
        lifetime: Duration,
    ) {
        self.flush(client_to_backend, backend_to_client);
        let m = &self.metrics;
        m.connection_seconds.observe(lifetime.as_secs_f64());
        m.connections_active.get_or_create(&self.labels).dec();
        let labels = CloseLabels {
            code: close.code.label(),
            initiator: close.initiator.as_str(),
            pool: self.labels.pool.clone(),
            backend: self.labels.backend.clone(),
        };
        m.closes.get_or_create(&labels).inc();
    }
}
