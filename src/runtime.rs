//! What a connection reads of the running proxy: the current snapshot, the
//! live backend registry, the count of open connections, the metrics and
//! the hub of pushable connections.
//! The control plane (server, reload, admin) writes these; the data path
//! only reads them, so it never needs to know who runs the proxy.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::forward::Forwarder;
use crate::metrics::Metrics;
use crate::push::Hub;
use crate::shutdown::Tracker;
use crate::snapshot::{Registry, Snapshot};

/// The running proxy as a connection sees it.
#[derive(Debug)]
pub struct Runtime {
    /// The snapshot new connections use.
    pub(crate) current: ArcSwap<Snapshot>,
    /// Live backend state, outliving snapshots.
    pub registry: Registry,
    /// Open connections, from accept to close.
    pub tracker: Arc<Tracker>,
    /// Counters and histograms; kept only when there is an admin listener
    /// to expose them.
    pub(crate) metrics: Option<Arc<Metrics>>,
    /// The client of routes' forward-auth services; its kept-alive
    /// connections outlive reloads.
    pub(crate) forwarder: Forwarder,
    /// This instance's pushable connections.
    pub hub: Arc<Hub>,
    /// Idle keep-alive connections to backends, for proxied HTTP.
    pub(crate) http: Arc<crate::http_proxy::Pools>,
}
