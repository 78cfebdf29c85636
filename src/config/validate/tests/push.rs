use super::*;

/// `[publish]`, `[cluster]` and route `tags` problems, one at a time.
#[test]
fn push_problems_have_their_key_path_and_line() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            with("[publish]\ntoken = \"env:PATH\""),
            "publish.bind",
            "[publish]",
            "`bind` is required",
        ),
        (
            with("[publish]\nbind = \"127.0.0.1:9800\""),
            "publish.token",
            "[publish]",
            "`token` is required",
        ),
        (
            with("[publish]\nbind = \"127.0.0.1:9800\"\ntoken = \"s3cret\""),
            "publish.token",
            "token",
            "env:NAME",
        ),
        (
            with("[publish]\nbind = \"127.0.0.1:9800\"\ntoken = \"env:WSGATE_TEST_SURELY_UNSET\""),
            "publish.token",
            "token",
            "not set",
        ),
        (
            with("[publish]\nbind = \"127.0.0.1:9800\"\ntoken = \"file:no/such/file\""),
            "publish.token",
            "token",
            "cannot read",
        ),
        (
            with("[publish]\nbind = \"127.0.0.1:9800\"\ntoken = \"env:PATH\"\nqueue_messages = 0"),
            "publish.queue_messages",
            "queue_messages",
            "from 1 to",
        ),
        (
            with("[publish]\nbind = \"127.0.0.1:8080\"\ntoken = \"env:PATH\""),
            "publish.bind",
            "bind = \"127.0.0.1:8080\"",
            "collides with listener[0].bind",
        ),
        (
            with("[cluster]\nredis = \"http://x\"\nnode_id = \"a\""),
            "cluster.redis",
            "redis",
            "not a Redis URL",
        ),
        (
            with("[cluster]\nredis = \"redis://127.0.0.1:6379\"\nnode_id = \"a.b\""),
            "cluster.node_id",
            "node_id",
            "not a node id",
        ),
        (
            with("[cluster]\nredis = \"redis://127.0.0.1:6379\""),
            "cluster.node_id",
            "[cluster]",
            "`node_id` is required",
        ),
        (
            route_key("tags = { user = \"claim:sub\" }"),
            "route[0].tags.user",
            "tags",
            "JWT",
        ),
        (
            route_key("tags = { channels = \"body:x\" }"),
            "route[0].tags.channels",
            "tags",
            "not a tag source",
        ),
        (
            route_key("tags = { user = \"header:\" }"),
            "route[0].tags.user",
            "tags",
            "needs a name",
        ),
    ];
    check_all(&cases);
}

#[test]
fn push_keys_parse_with_defaults() {
    let text = route_key("tags = { user = \"header:X-User-Id\", channels = \"query:channels\" }")
        + "[publish]\nbind = \"127.0.0.1:9800\"\ntoken = \"env:PATH\"\n"
        + "[cluster]\nredis = \"redis://127.0.0.1:6379\"\nnode_id = \"gate-1\"\n";
    let config = parse(&text, Path::new("."), "test.toml").unwrap();
    let publish = config.publish.unwrap();
    assert_eq!(publish.requests_per_second, 1000);
    assert_eq!((publish.queue_messages, publish.queue_bytes), (64, 1 << 20));
    assert_eq!(publish.token.0, std::env::var("PATH").unwrap().trim());
    let cluster = config.cluster.unwrap();
    assert_eq!(cluster.heartbeat, std::time::Duration::from_secs(5));
    let tags = config.routes[0].tags.clone().unwrap();
    assert_eq!(
        tags.user,
        Some(crate::config::TagSource::Header("x-user-id".into()))
    );
}
