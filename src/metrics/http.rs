//! The proxied-HTTP request metrics: requests by pool and status, those in
//! flight, and the time to the response head.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::Metrics;

/// The proxied-HTTP request metrics.
pub(super) struct HttpMetrics {
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

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            in_flight: Family::default(),
            duration: Family::new_with_constructor(http_histogram),
        }
    }
}

impl HttpMetrics {
    /// Creates, at 0 when new, the series of every pool a route proxies
    /// plain HTTP to: requests in flight, and the answers by the codes the
    /// proxy gives itself (502, 503, 504) and the usual 200.
    pub(super) fn zero(&self, config: &crate::config::Config) {
        let proxied = config
            .routes
            .iter()
            .filter(|r| r.limits.http == crate::config::HttpMode::Proxy);
        for route in proxied {
            let pool = PoolLabels {
                pool: route.pool.clone(),
            };
            self.in_flight.get_or_create(&pool).inc_by(0);
            for code in [200, 502, 503, 504] {
                let labels = HttpLabels {
                    pool: route.pool.clone(),
                    code,
                };
                self.requests.get_or_create(&labels).inc_by(0);
            }
        }
    }

    /// Registers every proxied-HTTP metric in `registry`.
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "wsgate_http_requests",
            "Proxied HTTP requests answered, by pool and status code",
            self.requests.clone(),
        );
        registry.register(
            "wsgate_http_requests_in_flight",
            "Proxied HTTP requests between routing and the end of the response",
            self.in_flight.clone(),
        );
        registry.register(
            "wsgate_http_request_duration_seconds",
            "From request head received to response head sent, proxied HTTP",
            self.duration.clone(),
        );
    }
}

impl Metrics {
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
}
