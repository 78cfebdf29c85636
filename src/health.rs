//! Active health checks: per backend of a pool with `health_check`, a task
//! that checks it every `interval` and marks it up or down. Passive marks
//! (a failed connect during a handshake) happen in the balancer; a backend
//! marked down there comes back only through a passing check here.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::HeaderValue;
use tokio::io::AsyncWriteExt;
use tokio::task::AbortHandle;
use tracing::{info, warn};

use crate::balance::BackendState;
use crate::close::CloseCode;
use crate::config::{HealthCheck, HealthCheckKind, ProxyVersion};
use crate::frame::{close_frame, MAX_CONTROL_FRAME_LEN};
use crate::snapshot::Snapshot;
use crate::upstream::{self, Dial, Offer, UpstreamError};

/// Why a health check failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    /// The TCP connect failed.
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// No connection within the check's `timeout`.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// The WebSocket upgrade failed.
    #[error("{0}")]
    Upgrade(UpstreamError),
}

impl ProbeError {
    /// Whether the proxy, not the backend, ran short (see
    /// [`upstream::is_local_shortage`]): such a check says nothing about
    /// the backend.
    fn is_local_shortage(&self) -> bool {
        match self {
            ProbeError::Connect(e) => upstream::is_local_shortage(e),
            ProbeError::Upgrade(e) => e.is_local_shortage(),
            ProbeError::Timeout(_) => false,
        }
    }
}

/// The running checks of one snapshot; dropping this stops them.
#[derive(Debug, Default)]
pub(crate) struct HealthChecks {
    tasks: Vec<AbortHandle>,
}

impl HealthChecks {
    /// Starts a check task for every backend of every pool that has a
    /// `health_check`.
    pub(crate) fn start(snapshot: &Snapshot) -> HealthChecks {
        let mut tasks = Vec::new();
        for (pool, balancer) in snapshot.config.pools.iter().zip(&snapshot.balancers) {
            let Some(check) = &pool.health_check else {
                continue;
            };
            for idx in 0..balancer.len() {
                let state = balancer.backend(idx).expect("index in range").clone();
                let dial = Dial::to_backend(pool.tls.as_ref(), &pool.backends[idx]);
                let proxy = pool.send_proxy_protocol;
                let task = tokio::spawn(run(pool.name.clone(), state, dial, check.clone(), proxy));
                tasks.push(task.abort_handle());
            }
        }
        HealthChecks { tasks }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn run(
    pool: String,
    state: Arc<BackendState>,
    dial: Dial,
    check: HealthCheck,
    proxy: Option<ProxyVersion>,
) {
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The live state outlives reloads, which restart this task: log only
    // changes from what it already says, not every restart's first check.
    let mut was_up = Some(state.is_up(tokio::time::Instant::now()));
    loop {
        ticker.tick().await;
        let result = probe(&dial, &check.kind, check.timeout, proxy).await;
        state.record_check(result.as_ref().err().map(ToString::to_string));
        match &result {
            Ok(()) => state.mark_up(),
            Err(e) if e.is_local_shortage() => {
                // The backend keeps its mark; the next check decides.
                warn!(%pool, backend = %state.addr(), error = %e, "health check skipped: the proxy is out of local resources");
                continue;
            }
            Err(_) => state.mark_down(),
        }
        let up = result.is_ok();
        if was_up != Some(up) {
            match result {
                Ok(()) => info!(%pool, backend = %state.addr(), "health check passed: backend up"),
                Err(reason) => {
                    warn!(%pool, backend = %state.addr(), %reason, "health check failed: backend down")
                }
            }
            was_up = Some(up);
        }
    }
}

/// One check; the error says why it failed. A `websocket` check of a TLS
/// pool goes over TLS, so a certificate problem fails it. A backend that
/// expects the PROXY protocol gets a `LOCAL` (v1: `UNKNOWN`) header before a
/// WebSocket check's request: the check is the proxy's own connection.
async fn probe(
    dial: &Dial,
    kind: &HealthCheckKind,
    timeout: Duration,
    proxy: Option<ProxyVersion>,
) -> Result<(), ProbeError> {
    let addr = dial.addr;
    match kind {
        HealthCheckKind::Tcp => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(ProbeError::Connect(e)),
                Err(_) => Err(ProbeError::Timeout(timeout)),
            }
        }
        HealthCheckKind::WebSocket { path } => {
            let key = check_key();
            let request = format!(
                "GET {path} HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: {key}\r\nsec-websocket-version: 13\r\nuser-agent: wsgate-health-check\r\n\r\n"
            );
            let key = HeaderValue::from_str(&key).expect("base64 is a valid header value");
            let mut bytes = Vec::new();
            if let Some(version) = proxy {
                crate::proxy_protocol::write_local(version, &mut bytes);
            }
            bytes.extend_from_slice(request.as_bytes());
            let mut up = upstream::upgrade(dial, &bytes, &key, &Offer::default(), timeout)
                .await
                .map_err(ProbeError::Upgrade)?;
            // Leave politely (RFC 6455 section 7.1.2): a masked close, then FIN.
            let mut buf = [0u8; MAX_CONTROL_FRAME_LEN];
            let frame = close_frame(
                CloseCode::NORMAL,
                "health check",
                Some([0x5a, 0x17, 0xc3, 0x9e]),
                &mut buf,
            );
            let _ = tokio::time::timeout(timeout, async {
                let _ = up.stream.write_all(frame).await;
                let _ = up.stream.shutdown().await;
            })
            .await;
            Ok(())
        }
    }
}

/// A fresh `Sec-WebSocket-Key`: 16 bytes, base64 (RFC 6455 section 4.1).
/// Checks need no secrecy, only a well-formed key that varies.
fn check_key() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    base64::engine::general_purpose::STANDARD.encode(nanos.to_le_bytes())
}
