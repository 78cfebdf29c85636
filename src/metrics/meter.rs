//! One relayed connection's link to the shared counters: resolved once at
//! the upgrade, flushed now and then, closed when the connection ends.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::{CloseLabels, ConnectionLabels, Metrics, TrafficLabels};
use crate::close::{CloseInfo, Counts};

impl Metrics {
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
