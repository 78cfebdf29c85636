use super::*;

/// `[[route]]` problems, one at a time.
#[test]
fn route_problems_have_their_key_path_and_line() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            replaced("pool = \"chat\"", "pool = \"chats\""),
            "route[0].pool",
            "pool = \"chats\"",
            "the pools are: chat",
        ),
        (
            route_key("listener = \"private\""),
            "route[0].listener",
            "listener = \"private\"",
            "the listeners are: public",
        ),
        (
            replaced("pool = \"chat\"\n", ""),
            "route[0].pool",
            "[[route]]",
            "is required",
        ),
        (
            replaced("\"/chat\"", "\"chat\""),
            "route[0].path_prefix",
            "path_prefix",
            "must start with \"/\"",
        ),
        (
            host("chat.*.example.com"),
            "route[0].host",
            "host",
            "not a host pattern",
        ),
        (host("*"), "route[0].host", "host", "not a host pattern"),
        (
            host("*example.com"),
            "route[0].host",
            "host",
            "not a host pattern",
        ),
        (
            host("example.com:443"),
            "route[0].host",
            "host",
            "without scheme or port",
        ),
        (
            host("https://example.com"),
            "route[0].host",
            "host",
            "not a host pattern",
        ),
        (
            route_key("allowed_origins = [\"https://a.example\", \"https://b.example/\"]"),
            "route[0].allowed_origins[1]",
            "allowed_origins",
            "no path or trailing slash",
        ),
        (
            with("[[route]]\npath_prefix = \"/chat\"\npool = \"chat\""),
            "route[1]",
            "[[route]]",
            "route[0] already matches",
        ),
        (
            route_key("connect_timeout = \"0ms\""),
            "route[0].connect_timeout",
            "connect_timeout",
            "more than zero",
        ),
        (
            route_key("max_message_bytes = -1"),
            "route[0].max_message_bytes",
            "max_message_bytes",
            "above 0",
        ),
    ];
    check_all(&cases);
}

#[test]
fn routes_carry_the_index_of_their_pool() {
    let text = with(
        "[[pool]]\nname = \"other\"\nbackends = [{ addr = \"127.0.0.1:9002\" }]\n\
         [[route]]\npath_prefix = \"/other\"\npool = \"other\"",
    );
    let config = parse(&text, Path::new("."), "test.toml").unwrap();
    let indices: Vec<usize> = config.routes.iter().map(|r| r.pool_index).collect();
    assert_eq!(indices, [0, 1]);
    for route in &config.routes {
        assert_eq!(config.pools[route.pool_index].name, route.pool);
    }
}
