//! The test harness's own guarantees, which every other test relies on.

mod common;

use common::*;

/// A wait for a log line matches anything the process logged so far and
/// consumes nothing, so that waits succeed whatever order the process
/// logged the lines in, and a line waited for once can be waited for again.
#[tokio::test]
async fn log_waits_do_not_depend_on_line_order() {
    let backend = echo_backend().await;
    let dir = TempDir::new("harness-order");
    let path = dir.0.join("wsgate.toml");
    std::fs::write(&path, simple_config(&[backend.addr], "")).unwrap();
    let mut bin = Binary::start(&["--config", path.to_str().unwrap()]);
    let loaded = bin.wait_line(&["configuration loaded", "version=1"]).await;
    let listening = bin.wait_line(&["listening", "local="]).await;
    assert_eq!(bin.wait_line(&["listening", "local="]).await, listening);
    assert_eq!(bin.wait_line(&["configuration loaded"]).await, loaded);
}
