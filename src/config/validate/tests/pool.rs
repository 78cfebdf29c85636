use super::*;

/// `[[pool]]` problems, one at a time.
#[test]
fn pool_problems_have_their_key_path_and_line() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            with("[[pool]]\nname = \"chat\"\nbackends = [{ addr = \"127.0.0.1:9002\" }]"),
            "pool[1].name",
            "name = \"chat\"",
            "already named",
        ),
        (
            replaced("127.0.0.1:9001", "::1:9001"),
            "pool[0].backends[0].addr",
            "backends",
            "IPv6 in brackets",
        ),
        (
            replaced("127.0.0.1:9001", "127.0.0.1:0"),
            "pool[0].backends[0].addr",
            "backends",
            "cannot be connected",
        ),
        (
            replaced(
                "backends = [{ addr = \"127.0.0.1:9001\" }]",
                "backends = []",
            ),
            "pool[0].backends",
            "backends",
            "at least one backend",
        ),
        (
            replaced("backends = [{ addr = \"127.0.0.1:9001\" }]\n", ""),
            "pool[0].backends",
            "[[pool]]",
            "is required",
        ),
        (
            replaced(
                "{ addr = \"127.0.0.1:9001\" }",
                "{ addr = \"127.0.0.1:9001\" }, { addr = \"127.0.0.1:9001\" }",
            ),
            "pool[0].backends[1].addr",
            "backends",
            "already pool[0].backends[0]",
        ),
        (
            replaced(
                "{ addr = \"127.0.0.1:9001\" }",
                "{ addr = \"127.0.0.1:9001\", weight = 0 }",
            ),
            "pool[0].backends[0].weight",
            "backends",
            "between 1 and",
        ),
        (
            replaced(
                "{ addr = \"127.0.0.1:9001\" }",
                "{ addr = \"127.0.0.1:9001\", max_connections = 0 }",
            ),
            "pool[0].backends[0].max_connections",
            "backends",
            "between 1 and",
        ),
        (
            pool_with("balance = \"round_robin\""),
            "pool[0].balance",
            "balance",
            "\"least_connections\" or \"sticky\"",
        ),
        (
            pool_with("balance = \"sticky\""),
            "pool[0].balance",
            "balance",
            "needs a `sticky` table",
        ),
        (
            pool_with("sticky = { source = \"cookie\" }"),
            "pool[0].sticky",
            "sticky",
            "needs balance = \"sticky\"",
        ),
        (
            pool_with("balance = \"least_connections\"\nsticky = { source = \"cookie\" }"),
            "pool[0].sticky",
            "sticky",
            "needs balance = \"sticky\"",
        ),
        (
            sticky("{ source = \"header\" }"),
            "pool[0].sticky.name",
            "sticky",
            "needs the name",
        ),
        (
            sticky("{ source = \"query\" }"),
            "pool[0].sticky.name",
            "sticky",
            "needs the name",
        ),
        (
            sticky("{ source = \"client_ip\", name = \"x\" }"),
            "pool[0].sticky.name",
            "sticky",
            "takes no name",
        ),
        (
            sticky("{ source = \"cookie\", name = \"a b\" }"),
            "pool[0].sticky.name",
            "sticky",
            "not a valid cookie name",
        ),
        (
            sticky("{ source = \"body\" }"),
            "pool[0].sticky.source",
            "sticky",
            "unknown source",
        ),
        (
            sticky("{ name = \"x\" }"),
            "pool[0].sticky.source",
            "sticky",
            "is required",
        ),
        (
            sticky("{ source = \"cookie\" }\nhash_balance_factor = 1.0"),
            "pool[0].hash_balance_factor",
            "hash_balance_factor",
            "above 1.0",
        ),
        (
            pool_with("hash_balance_factor = 1.5"),
            "pool[0].hash_balance_factor",
            "hash_balance_factor",
            "only sticky pools",
        ),
        (
            pool_with("health_check = { kind = \"websocket\" }"),
            "pool[0].health_check.path",
            "health_check",
            "needs the path",
        ),
        (
            pool_with("health_check = { kind = \"tcp\", path = \"/\" }"),
            "pool[0].health_check.path",
            "health_check",
            "sends no request",
        ),
        (
            pool_with("health_check = { kind = \"http\" }"),
            "pool[0].health_check.kind",
            "health_check",
            "unknown kind",
        ),
        (
            pool_with("health_check = { kind = \"tcp\", interval = \"0s\" }"),
            "pool[0].health_check.interval",
            "health_check",
            "more than zero",
        ),
        (
            pool_with("tls = { ca = \"/nonexistent/ca.pem\", server_name = \"chat.internal\" }"),
            "pool[0].tls.ca",
            "tls",
            "cannot read",
        ),
        (
            pool_with("tls = { server_name = \"not a name\" }"),
            "pool[0].tls.server_name",
            "tls",
            "not a DNS name",
        ),
        (
            pool_with("tls = { server_name = \"chat.internal\", cert = \"client.pem\" }"),
            "pool[0].tls.key",
            "tls",
            "is required",
        ),
        (
            pool_with("tls = { server_name = \"chat.internal\", ca_file = \"ca.pem\" }"),
            "pool[0].tls.ca_file",
            "tls",
            "unknown key `ca_file`",
        ),
        (
            pool_with("tls = \"yes\""),
            "pool[0].tls",
            "tls",
            "true, or a table",
        ),
    ];
    check_all(&cases);
}

#[test]
fn backend_tls_by_ip_needs_a_server_name() {
    let dir = TempDir::new();
    dir.cert("ca", &["ca.example.com"]);
    let text = pool_with("tls = { ca = \"ca.pem\" }");
    let found = problems_in(&text, &dir.0);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key_path, "pool[0].tls");
    assert!(found[0].message.contains("add `server_name`"), "{found:#?}");
    let text = pool_with("tls = { ca = \"ca.pem\", server_name = \"chat.internal\" }");
    let config = parse(&text, &dir.0, "test.toml").unwrap();
    let tls = config.pools[0].tls.as_ref().unwrap();
    assert_eq!(tls.server_name.as_deref(), Some("chat.internal"));
    assert_eq!(tls.client_config.alpn_protocols, [b"http/1.1".to_vec()]);
    let off = parse(&pool_with("tls = false"), &dir.0, "test.toml").unwrap();
    assert!(off.pools[0].tls.is_none());
}

#[test]
fn backends_by_name_and_srv_are_entries_and_only_addresses_are_backends() {
    let text = pool_with(
        "resolve_interval = \"2s\"\nbackends = [{ addr = \"127.0.0.1:9001\" }, \
         { addr = \"Chat.Internal:9000\", weight = 3, max_connections = 5 }, \
         { srv = \"_ws._tcp.chat.internal.\" }]",
    )
    .replace("backends = [{ addr = \"127.0.0.1:9001\" }]\n", "");
    let config = parse(&text, Path::new("."), "t").unwrap();
    let pool = &config.pools[0];
    assert_eq!(pool.resolve_interval, Duration::from_secs(2));
    let targets: Vec<String> = pool.entries.iter().map(|e| e.target.to_string()).collect();
    assert_eq!(
        targets,
        [
            "127.0.0.1:9001",
            "chat.internal:9000",
            "_ws._tcp.chat.internal"
        ]
    );
    assert_eq!(
        (pool.entries[1].weight, pool.entries[1].max_connections),
        (3, Some(5))
    );
    assert_eq!(pool.backends.len(), 1);
    assert_eq!(config.resolver, crate::config::Resolver::default());
}

/// Problems of name and SRV entries, `resolve_interval` and `[resolver]`.
#[test]
fn name_problems_have_their_key_path_and_line() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            replaced("127.0.0.1:9001", "chat.internal:0"),
            "pool[0].backends[0].addr",
            "backends",
            "not a port",
        ),
        (
            replaced("127.0.0.1:9001", "chat internal:9000"),
            "pool[0].backends[0].addr",
            "backends",
            "a DNS name",
        ),
        (
            replaced(
                "{ addr = \"127.0.0.1:9001\" }",
                "{ addr = \"chat.internal:9000\" }, { addr = \"CHAT.internal:9000\" }",
            ),
            "pool[0].backends[1].addr",
            "backends",
            "already pool[0].backends[0]",
        ),
        (
            replaced(
                "{ addr = \"127.0.0.1:9001\" }",
                "{ srv = \"not an srv name\" }",
            ),
            "pool[0].backends[0].srv",
            "backends",
            "not an SRV record name",
        ),
        (
            replaced(
                "{ addr = \"127.0.0.1:9001\" }",
                "{ addr = \"127.0.0.1:9001\", srv = \"_ws._tcp.chat.internal\" }",
            ),
            "pool[0].backends[0].srv",
            "backends",
            "not both",
        ),
        (
            replaced(
                "{ addr = \"127.0.0.1:9001\" }",
                "{ srv = \"_ws._tcp.chat.internal\", weight = 2 }",
            ),
            "pool[0].backends[0].weight",
            "backends",
            "carry their own weights",
        ),
        (
            replaced("{ addr = \"127.0.0.1:9001\" }", "{ weight = 2 }"),
            "pool[0].backends[0].addr",
            "backends",
            "or `srv`",
        ),
        (
            pool_with("resolve_interval = \"500ms\""),
            "pool[0].resolve_interval",
            "resolve_interval",
            "at least 1s",
        ),
        (
            with("[resolver]\nnameservers = [\"dns.internal:53\"]"),
            "resolver.nameservers[0]",
            "nameservers",
            "IP address and port",
        ),
        (
            with("[resolver]\nattempts = 0"),
            "resolver.attempts",
            "attempts",
            "between 1 and 10",
        ),
        (
            with("[resolver]\ntimeout = \"0s\""),
            "resolver.timeout",
            "timeout",
            "more than zero",
        ),
    ];
    check_all(&cases);
}
