//! Admission-control metrics: refusals by reason, the admit queue's length
//! and waits, and closes made to rebalance pools.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    listener: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

/// The admission metrics, part of [`super::Metrics`].
#[derive(Debug, Default)]
pub struct AdmissionMetrics {
    rejections: Family<RejectionLabels, Counter>,
    queue_length: Family<QueueLabels, Gauge>,
    queue_wait: WaitHistogram,
    rebalance_closes: Family<PoolLabels, Counter>,
}

/// The wait histogram with its buckets: 1 ms .. about 33 s.
#[derive(Debug)]
struct WaitHistogram(Histogram);

impl Default for WaitHistogram {
    fn default() -> Self {
        WaitHistogram(Histogram::new(exponential_buckets(0.001, 2.0, 16)))
    }
}

impl AdmissionMetrics {
    /// Registers every admission metric in `registry`.
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "wsgate_admission_rejections",
            "Connections and upgrades refused by admission control, by listener and reason",
            self.rejections.clone(),
        );
        registry.register(
            "wsgate_admit_queue_length",
            "Upgrades waiting in the listener's admit queue now",
            self.queue_length.clone(),
        );
        registry.register(
            "wsgate_admit_queue_wait_seconds",
            "Time upgrades waited in the admit queue",
            self.queue_wait.0.clone(),
        );
        registry.register(
            "wsgate_rebalance_closes",
            "Connections closed (1012) to rebalance a pool",
            self.rebalance_closes.clone(),
        );
    }

    /// Creates, at 0 when new, the series a listener's and a pool's
    /// configured limits can move: the refusals of each limit set, the
    /// queue length with an admit queue, rebalancing closes with
    /// `rebalance`. Existing series keep their counts.
    pub(super) fn zero(&self, config: &crate::config::Config) {
        for listener in &config.listeners {
            let limits = &listener.admission;
            let per_client = limits.per_client.as_ref();
            let set = [
                (
                    "per_client_connections",
                    per_client.is_some_and(|p| p.max_connections.is_some()),
                ),
                (
                    "per_client_rate",
                    per_client.is_some_and(|p| p.rate.is_some()),
                ),
                ("max_connections", limits.max_connections.is_some()),
                (
                    "max_pending_handshakes",
                    limits.max_pending_handshakes.is_some(),
                ),
                ("admit_queue", limits.admit.is_some()),
            ];
            for (reason, _) in set.iter().filter(|(_, on)| *on) {
                let labels = RejectionLabels {
                    listener: listener.name.clone(),
                    reason,
                };
                self.rejections.get_or_create(&labels).inc_by(0);
            }
            if limits.admit.is_some() {
                let labels = QueueLabels {
                    listener: listener.name.clone(),
                };
                self.queue_length.get_or_create(&labels).inc_by(0);
            }
        }
        for pool in config.pools.iter().filter(|p| p.rebalance.is_some()) {
            let labels = PoolLabels {
                pool: pool.name.clone(),
            };
            self.rebalance_closes.get_or_create(&labels).inc_by(0);
        }
    }

    /// A connection or upgrade on `listener` refused for `reason`.
    pub fn rejected(&self, listener: &str, reason: &'static str) {
        let labels = RejectionLabels {
            listener: listener.to_string(),
            reason,
        };
        self.rejections.get_or_create(&labels).inc();
    }

    /// An upgrade on `listener` starts (`+1`) or ends (`-1`) waiting.
    pub fn queue_add(&self, listener: &str, delta: i64) {
        let labels = QueueLabels {
            listener: listener.to_string(),
        };
        self.queue_length.get_or_create(&labels).inc_by(delta);
    }

    /// An upgrade left the admit queue after `seconds`.
    pub fn queue_waited(&self, seconds: f64) {
        self.queue_wait.0.observe(seconds);
    }

    /// A connection of `pool` closed with 1012 to rebalance it.
    pub fn rebalance_closed(&self, pool: &str) {
        let labels = PoolLabels {
            pool: pool.to_string(),
        };
        self.rebalance_closes.get_or_create(&labels).inc();
    }
}
