//! Keep-alive connections to one backend: the idle ones waiting for the
//! next request, and the count of requests in flight.
//!
//! A [`Conns`] lives in the backend's live state, so it outlives
//! configuration snapshots like the backend's active count does. A
//! connection is taken newest first (the one most likely still open), is
//! given back only after a whole exchange, and is closed after
//! [`IDLE_TIMEOUT`] idle, or sooner when the backend's `Keep-Alive: timeout`
//! says so.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use super::body::Upload;

/// The sending half of one HTTP/1.1 connection to a backend.
pub type Sender = http1::SendRequest<Upload>;

/// How long an idle connection is kept at most.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP side of one backend's live state.
#[derive(Default)]
pub struct Conns {
    idle: Mutex<Vec<Idle>>,
    in_flight: AtomicU32,
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
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Conns {
    /// HTTP requests on this backend now, from backend choice to the end of
    /// the response body.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Idle keep-alive connections now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().expect("not poisoned").len()
    }

    pub(super) fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
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

/// Opens a new HTTP/1.1 connection to `addr` within `timeout`; hyper's
/// connection task runs until the connection closes.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(ConnectError::Refused { addr, source }),
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
    };
    let _ = stream.set_nodelay(true);
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
