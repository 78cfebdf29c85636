//! A scrape of `/metrics`: backend gauges read from the live state, the
//! configured series created at 0, and the registry encoded in the format
//! asked for.

use super::exposition::openmetrics_to_prometheus;
use super::{
    route_label, BackendLabels, CloseLabels, ConnectionLabels, Exposition, Metrics, TrafficLabels,
    DIRECTIONS, PROXY_CLOSES,
};
use crate::snapshot::Snapshot;

impl Metrics {
    /// Every metric in `format`, with backend health and active counts
    /// read from `snapshot`'s live state now.
    pub fn render(
        &self,
        snapshot: &Snapshot,
        registry: &crate::snapshot::Registry,
        format: Exposition,
    ) -> String {
        self.backend_up.clear();
        self.backend_active.clear();
        self.backend_max.clear();
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
            for b in &pool.backends {
                if let Some(max) = b.max_connections {
                    let labels = BackendLabels {
                        pool: pool.name.clone(),
                        backend: b.addr.to_string(),
                        name: b.name.as_deref().unwrap_or("").to_string(),
                    };
                    self.backend_max.get_or_create(&labels).set(i64::from(max));
                }
            }
        }
        self.zero_configured_series(snapshot);
        self.config_version.set(snapshot.version as i64);
        // The count only grows; two scrapes at once both land on it.
        self.log_lines_dropped.inner().fetch_max(
            crate::log_writer::dropped_lines(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        match format {
            Exposition::OpenMetrics => out,
            Exposition::Prometheus => openmetrics_to_prometheus(&out),
        }
    }

    /// Creates (by adding 0), at 0 when new, the series of every backend that `snapshot`
    /// routes to. Existing series keep their counts.
    fn zero_configured_series(&self, snapshot: &Snapshot) {
        let config = &snapshot.config;
        self.admission.zero(config);
        self.http.zero(config);
        for route in &config.routes {
            let Some(pool) = config.pools.iter().find(|p| p.name == route.pool) else {
                continue;
            };
            for backend in &pool.backends {
                let labels = ConnectionLabels {
                    route: route_label(route),
                    pool: pool.name.clone(),
                    backend: backend.addr.to_string(),
                };
                self.connections.get_or_create(&labels).inc_by(0);
                self.connections_active.get_or_create(&labels).inc_by(0);
            }
        }
        for pool in &config.pools {
            for backend in &pool.backends {
                let backend = backend.addr.to_string();
                for direction in DIRECTIONS {
                    let labels = TrafficLabels {
                        direction,
                        pool: pool.name.clone(),
                        backend: backend.clone(),
                    };
                    self.messages.get_or_create(&labels).inc_by(0);
                    self.bytes.get_or_create(&labels).inc_by(0);
                }
                for (code, initiator) in PROXY_CLOSES {
                    self.closes
                        .get_or_create(&CloseLabels {
                            code: code.label(),
                            initiator: initiator.as_str(),
                            pool: pool.name.clone(),
                            backend: backend.clone(),
                        })
                        .inc_by(0);
                }
            }
        }
    }

    /// The text exposition as the counters stand, without refreshing the
    /// backend gauges that [`Metrics::render`] reads from a snapshot (the
    /// dashboard reads those from the live state itself).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
