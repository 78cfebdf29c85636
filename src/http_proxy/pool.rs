//! Keep-alive connections to backends, the idle ones waiting for the next
//! request.
//!
//! [`Pools`] lives in the runtime and keeps one [`Conns`] per backend (pool
//! name and address), so idle connections outlive configuration snapshots
//! like the backend's live state does. A connection is taken newest first (the one most likely still open), is
//! given back only after a whole exchange, and is closed after
//! [`IDLE_TIMEOUT`] idle, or sooner when the backend's `Keep-Alive: timeout`
//! says so.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tracing::debug;

use super::body::Upload;
use crate::upstream::{Dial, UpstreamFailure};

/// The sending half of one HTTP/1.1 connection to a backend.
pub type Sender = http1::SendRequest<Upload>;

/// How long an idle connection is kept at most.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The idle connections of every backend, by address and pool name.
#[derive(Debug, Default)]
pub struct Pools {
    /// A backend is found by its address, then its pool among the (few)
    /// pools that list the address: no key is allocated per request.
    by_addr: Mutex<HashMap<SocketAddr, Vec<PoolConns>>>,
}

/// One pool's idle connections to an address.
type PoolConns = (String, Arc<Conns>);

impl Pools {
    /// The idle connections of backend `addr` of pool `pool`.
    pub fn get(&self, pool: &str, addr: SocketAddr) -> Arc<Conns> {
        let mut by_addr = self.by_addr.lock().expect("not poisoned");
        let pools = by_addr.entry(addr).or_default();
        if let Some((_, conns)) = pools.iter().find(|(name, _)| name == pool) {
            return conns.clone();
        }
        let conns = Arc::new(Conns::default());
        pools.push((pool.to_string(), conns.clone()));
        conns
    }
}

/// The idle connections of one backend.
#[derive(Default)]
pub struct Conns {
    idle: Mutex<Vec<Idle>>,
    /// A task is closing expired idle connections.
    reaping: AtomicBool,
}

struct Idle {
    sender: Sender,
    expires: Instant,
}

impl fmt::Debug for Conns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conns")
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl Conns {
    /// Idle keep-alive connections now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().expect("not poisoned").len()
    }

    /// The newest idle connection that is neither expired nor closed.
    pub fn take(&self, now: Instant) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("not poisoned");
        while let Some(entry) = idle.pop() {
            if entry.expires > now && !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Keeps `sender` for the next request until `expires`, unless
    /// `max_idle` are kept already (then the oldest goes).
    pub fn put(self: &Arc<Self>, sender: Sender, expires: Instant, max_idle: usize) {
        if max_idle == 0 || sender.is_closed() {
            return;
        }
        {
            let mut idle = self.idle.lock().expect("not poisoned");
            if idle.len() >= max_idle {
                idle.remove(0);
            }
            idle.push(Idle { sender, expires });
        }
        if !self.reaping.swap(true, Ordering::AcqRel) {
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }

    /// Drops expired and closed connections; returns the next expiry.
    fn prune(&self, now: Instant) -> Option<Instant> {
        let mut idle = self.idle.lock().expect("not poisoned");
        idle.retain(|e| e.expires > now && !e.sender.is_closed());
        idle.iter().map(|e| e.expires).min()
    }
}

/// Closes idle connections as they expire, while there are any; one task
/// per backend at most, ending when its pool is empty or gone.
async fn reap(conns: Weak<Conns>) {
    loop {
        let next = match conns.upgrade() {
            Some(c) => match c.prune(Instant::now()) {
                Some(next) => next,
                None => {
                    c.reaping.store(false, Ordering::Release);
                    // A connection put back since the prune needs a reaper:
                    // take the job again unless another task did.
                    if c.idle_count() == 0 || c.reaping.swap(true, Ordering::AcqRel) {
                        return;
                    }
                    continue;
                }
            },
            None => return,
        };
        tokio::time::sleep_until(next).await;
    }
}

/// Why no connection to a backend could be opened; the request has not
/// reached it, so the next backend may be tried.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect failed (refused, unreachable).
    #[error("{addr}: connect failed: {source}")]
    Refused {
        /// The backend.
        addr: SocketAddr,
        /// The operating system's reason.
        source: io::Error,
    },
    /// No connection within `connect_timeout`.
    #[error("{addr}: no connection within {timeout:?} (connect_timeout)")]
    Timeout {
        /// The backend.
        addr: SocketAddr,
        /// The route's `connect_timeout`.
        timeout: Duration,
    },
}

/// Opens a new HTTP/1.1 connection to the backend `dial` names (over TLS
/// for a pool with `tls`, the handshake included) within `timeout`;
/// hyper's connection task runs until the connection closes.
pub async fn connect(dial: &Dial, timeout: Duration) -> Result<Sender, ConnectError> {
    let addr = dial.addr;
    let stream = match tokio::time::timeout(timeout, dial.connect()).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(UpstreamFailure::Connect(source) | UpstreamFailure::Tls(source))) => {
            return Err(ConnectError::Refused { addr, source })
        }
        Ok(Err(other)) => {
            let source = io::Error::other(other.to_string());
            return Err(ConnectError::Refused { addr, source });
        }
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
    };
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectError::Refused {
            addr,
            source: io::Error::other(e),
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(backend = %addr, error = %e, "backend HTTP connection ended");
        }
    });
    Ok(sender)
}
