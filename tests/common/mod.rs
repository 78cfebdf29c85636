//! Shared test harness, one kit per file: the real proxy on loopback port 0
//! (`proxy`), recording and scripted backends (`backends`), a raw
//! frame-level WebSocket peer for exact wire checks (`wire`), certificates
//! (`certs`), the real binary as a child process (`binary`) and the Debian
//! programs some tests drive, installed when missing (`tools`). Test files
//! use it as `mod common; use common::*;`.
#![allow(dead_code)]

mod backends;
mod binary;
mod certs;
mod proxy;
mod tools;
mod wire;

// Each test file uses some kits, not all.
#[allow(unused_imports)]
pub use backends::*;
#[allow(unused_imports)]
pub use binary::*;
#[allow(unused_imports)]
pub use certs::*;
#[allow(unused_imports)]
pub use proxy::*;
#[allow(unused_imports)]
pub use tools::*;
#[allow(unused_imports)]
pub use wire::*;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Every wait in the tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Awaits `fut` for at most [`LIMIT`].
pub async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("test step timed out")
}

/// A temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh folder under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("wsgate-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
