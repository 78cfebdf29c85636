//! The keys of HTTP beside WebSocket: `http`, `max_request_body_bytes`,
//! `response_timeout` (route and `[defaults]`), `keepalive_timeout`
//! (listener), `max_idle_per_backend` (pool), `sticky.issue`.

use super::*;
use crate::config::{HttpMode, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_IDLE_PER_BACKEND};
use std::time::Duration;

#[test]
fn http_keys_default_and_override() {
    let config = parse(MINIMAL, Path::new("."), "t").unwrap();
    let limits = config.routes[0].limits;
    assert_eq!(limits.http, HttpMode::Reject);
    assert_eq!(limits.max_request_body_bytes, 0);
    assert_eq!(limits.response_timeout, Duration::from_secs(60));
    assert_eq!(
        config.listeners[0].keepalive_timeout,
        DEFAULT_KEEPALIVE_TIMEOUT
    );
    assert_eq!(
        config.pools[0].max_idle_per_backend,
        DEFAULT_MAX_IDLE_PER_BACKEND
    );

    let text =
        defaults("http = \"proxy\"\nmax_request_body_bytes = 1000\nresponse_timeout = \"25s\"");
    let text = text.replace(
        "bind = \"127.0.0.1:8080\"",
        "bind = \"127.0.0.1:8080\"\nkeepalive_timeout = \"5s\"",
    );
    let text = text.replace(
        "name = \"chat\"\nbackends",
        "name = \"chat\"\nmax_idle_per_backend = 0\nbackends",
    );
    let config = parse(&text, Path::new("."), "t").unwrap();
    let limits = config.routes[0].limits;
    assert_eq!(limits.http, HttpMode::Proxy);
    assert_eq!(limits.max_request_body_bytes, 1000);
    assert_eq!(limits.response_timeout, Duration::from_secs(25));
    assert_eq!(
        config.listeners[0].keepalive_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(config.pools[0].max_idle_per_backend, 0);

    let config = parse(
        &route_key("http = \"reject\"\nmax_request_body_bytes = 0"),
        Path::new("."),
        "t",
    )
    .unwrap();
    assert_eq!(config.routes[0].limits.http, HttpMode::Reject);
    assert_eq!(config.routes[0].limits.max_request_body_bytes, 0);
}

#[test]
fn sticky_issue_is_for_cookies() {
    let config = parse(
        &sticky("{ source = \"cookie\", name = \"session\", issue = false }"),
        Path::new("."),
        "t",
    )
    .unwrap();
    assert!(!config.pools[0].sticky.as_ref().unwrap().issue);
    let config = parse(&sticky("{ source = \"cookie\" }"), Path::new("."), "t").unwrap();
    assert!(config.pools[0].sticky.as_ref().unwrap().issue);
}

#[test]
fn http_key_problems_have_their_key_path_and_line() {
    check_all(&[
        (
            route_key("http = \"sometimes\""),
            "route[0].http",
            "http = ",
            "write \"reject\" or \"proxy\"",
        ),
        (
            route_key("response_timeout = \"0s\""),
            "route[0].response_timeout",
            "response_timeout",
            "more than zero",
        ),
        (
            route_key("max_request_body_bytes = -1"),
            "route[0].max_request_body_bytes",
            "max_request_body_bytes",
            "not a size",
        ),
        (
            pool_with("max_idle_per_backend = -2"),
            "pool[0].max_idle_per_backend",
            "max_idle_per_backend",
            "write 0 or more",
        ),
        (
            sticky("{ source = \"header\", name = \"x-user\", issue = false }"),
            "pool[0].sticky.issue",
            "sticky = ",
            "only source = \"cookie\" takes issue",
        ),
        (
            replaced(
                "bind = \"127.0.0.1:8080\"",
                "bind = \"127.0.0.1:8080\"\nkeepalive_timeout = 60",
            ),
            "listener[0].keepalive_timeout",
            "keepalive_timeout",
            "has no unit",
        ),
    ]);
}
