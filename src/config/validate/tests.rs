use super::*;
use crate::config::EXAMPLE;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

const MINIMAL: &str = r#"
[[listener]]
name = "public"
bind = "127.0.0.1:8080"

[[route]]
path_prefix = "/chat"
pool = "chat"

[[pool]]
name = "chat"
backends = [{ addr = "127.0.0.1:9001" }]
"#;

fn problems_in(text: &str, base: &Path) -> Vec<Problem> {
    match parse(text, base, "test.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("{e}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    problems_in(text, Path::new("."))
}

/// The 1-based number of the last line containing `marker`.
fn line_of(text: &str, marker: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let found = lines.iter().rposition(|l| l.contains(marker));
    found.unwrap_or_else(|| panic!("{marker:?} not in:\n{text}")) + 1
}

/// `text` has exactly one problem: at `key_path`, on the last line
/// containing `marker`, with `hint` in its message.
fn check_one(text: &str, key_path: &str, marker: &str, hint: &str) -> Result<(), String> {
    let found = problems(text);
    match found.as_slice() {
        [p] if p.key_path == key_path
            && p.line == Some(line_of(text, marker))
            && p.message.contains(hint) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "expected {key_path} on line {} with {hint:?}, got {found:#?}\nin:\n{text}",
            line_of(text, marker)
        )),
    }
}

fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}\n")
}

fn replaced(from: &str, to: &str) -> String {
    assert!(MINIMAL.contains(from), "{from:?}");
    MINIMAL.replace(from, to)
}

fn pool_with(keys: &str) -> String {
    replaced("name = \"chat\"\n", &format!("name = \"chat\"\n{keys}\n"))
}

#[test]
fn minimal_file_parses_with_defaults() {
    let config = parse(MINIMAL, Path::new("."), "test.toml").unwrap();
    assert!(config.admin.is_none());
    assert_eq!(config.handshake_timeout, Duration::from_secs(10));
    assert_eq!(config.drain_timeout, Duration::from_secs(30));
    let listener = &config.listeners[0];
    assert_eq!(listener.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
    assert!(listener.tls.is_none());
    let route = &config.routes[0];
    assert_eq!((route.listener.as_deref(), &route.host), (None, &None));
    assert_eq!(route.limits, Limits::default());
    let pool = &config.pools[0];
    assert_eq!(pool.balance, Balance::LeastConnections);
    assert_eq!((&pool.sticky, pool.hash_balance_factor), (&None, None));
    assert_eq!(pool.backends[0].weight, 1);
    assert_eq!(pool.backends[0].max_connections, None);
}

#[test]
fn example_file_parses() {
    let config = parse(EXAMPLE, Path::new("."), "<embedded>").unwrap();
    assert_eq!(
        config.admin.unwrap().bind,
        "127.0.0.1:9900".parse().unwrap()
    );
    let public = config
        .listeners
        .iter()
        .find(|l| l.name == "public")
        .unwrap();
    assert_eq!(public.bind, "127.0.0.1:8080".parse().unwrap());
    assert!(public.tls.is_none());
    let echo = config
        .routes
        .iter()
        .find(|r| r.path_prefix == "/echo")
        .unwrap();
    assert_eq!(echo.pool, "echo");
    assert_eq!(echo.limits, Limits::default());
    let pool = config.pools.iter().find(|p| p.name == "echo").unwrap();
    assert_eq!(pool.balance, Balance::LeastConnections);
    let addrs: Vec<String> = pool.backends.iter().map(|b| b.addr.to_string()).collect();
    assert_eq!(addrs, ["127.0.0.1:9001", "127.0.0.1:9002"]);
}

/// The commented examples in the example file are valid too: with one
/// "# " taken off their lines (and certificates where they name some),
/// the file still parses.
#[test]
fn example_file_commented_examples_parse() {
    let is_example = |rest: &str| {
        let rest = rest.trim_start();
        let key = rest.split_once(" = ").map(|(key, _)| key);
        rest.starts_with(['[', '{', ']'])
            || key.is_some_and(|k| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    };
    let uncommented: Vec<&str> = (EXAMPLE.lines())
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_example(rest) => rest,
            _ => line,
        })
        .collect();
    let dir = TempDir::new();
    std::fs::create_dir(dir.0.join("certs")).unwrap();
    for stem in ["server", "chat", "api"] {
        dir.cert(&format!("certs/{stem}"), &[&format!("{stem}.example.com")]);
    }
    let config = parse(&uncommented.join("\n"), &dir.0, "uncommented").unwrap();
    let counts = (
        config.listeners.len(),
        config.routes.len(),
        config.pools.len(),
    );
    assert_eq!(counts, (2, 2, 2));
    assert_eq!(config.listeners[1].tls.as_ref().unwrap().sni.len(), 2);
}

#[test]
fn defaults_fill_routes_and_routes_override_them() {
    let text = r#"
[defaults]
max_message_bytes = 100
idle_timeout = "5m"
ping_interval = "20s"
handshake_timeout = "2s"
drain_timeout = "0s"
"#
    .to_string()
        + &replaced(
            "pool = \"chat\"",
            "pool = \"chat\"\nmax_message_bytes = 50\nping_timeout = \"250ms\"",
        )
        + "[[route]]\npath_prefix = \"/other\"\npool = \"chat\"\n";
    let config = parse(&text, Path::new("."), "test.toml").unwrap();
    assert_eq!(config.handshake_timeout, Duration::from_secs(2));
    assert_eq!(config.drain_timeout, Duration::ZERO);
    let overridden = Limits {
        max_message_bytes: 50,
        idle_timeout: Duration::from_secs(300),
        ping_interval: Duration::from_secs(20),
        ping_timeout: Duration::from_millis(250),
        ..Limits::default()
    };
    assert_eq!(config.routes[0].limits, overridden);
    let inherited = Limits {
        max_message_bytes: 100,
        ping_timeout: Duration::from_secs(10),
        ..overridden
    };
    assert_eq!(config.routes[1].limits, inherited);
}

#[test]
fn values_are_normalised() {
    let text = replaced("path_prefix = \"/chat\"", "host = \"*.Example.COM\"")
        .replace("127.0.0.1:8080", "[::1]:8080")
        + "[[route]]\nhost = \"Chat.Example.com\"\npool = \"chat\"\n"
        + "[[pool]]\nname = \"s\"\nbalance = \"sticky\"\nsticky = { source = \"header\", name = \"X-User\" }\n"
        + "hash_balance_factor = 1.25\nbackends = [{ addr = \"[::1]:9001\", weight = 3, max_connections = 7 }]\n"
        + "[[pool]]\nname = \"c\"\nbalance = \"sticky\"\nsticky = { source = \"cookie\" }\n"
        + "health_check = { kind = \"websocket\", path = \"/health\", interval = \"1s\" }\n"
        + "backends = [{ addr = \"127.0.0.1:9001\" }]\n";
    let config = parse(&text, Path::new("."), "test.toml").unwrap();
    assert_eq!(config.listeners[0].bind, "[::1]:8080".parse().unwrap());
    assert_eq!(
        config.routes[0].host,
        Some(HostPattern::Suffix(".example.com".into()))
    );
    assert_eq!(config.routes[0].path_prefix, "/");
    assert_eq!(
        config.routes[1].host,
        Some(HostPattern::Exact("chat.example.com".into()))
    );
    let sticky = &config.pools[1];
    let header = Sticky {
        source: StickySource::Header,
        name: "x-user".into(),
        issue: true,
    };
    assert_eq!(sticky.sticky, Some(header));
    assert_eq!(sticky.hash_balance_factor, Some(1.25));
    let backend = Backend {
        addr: "[::1]:9001".parse().unwrap(),
        weight: 3,
        max_connections: Some(7),
    };
    assert_eq!(sticky.backends, [backend]);
    let cookie = &config.pools[2];
    assert_eq!(cookie.sticky.as_ref().unwrap().name, "wsgate_sticky");
    let check = HealthCheck {
        kind: HealthCheckKind::WebSocket {
            path: "/health".into(),
        },
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
    };
    assert_eq!(cookie.health_check, Some(check));
}

#[test]
fn listeners_on_port_zero_never_collide() {
    let text =
        with("[[listener]]\nname = \"b\"\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"")
            .replace("127.0.0.1:8080", "127.0.0.1:0");
    assert!(parse(&text, Path::new("."), "test.toml").is_ok());
}

#[test]
fn each_problem_has_its_key_path_and_line() {
    let second_listener =
        |bind: &str| with(&format!("[[listener]]\nname = \"b\"\nbind = \"{bind}\""));
    let host = |h: &str| replaced("path_prefix = \"/chat\"", &format!("host = \"{h}\""));
    let route_key = |k: &str| replaced("pool = \"chat\"", &format!("pool = \"chat\"\n{k}"));
    let defaults = |k: &str| format!("[defaults]\n{k}\n{MINIMAL}");
    let sticky = |s: &str| pool_with(&format!("balance = \"sticky\"\nsticky = {s}"));
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            with("[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:8081\""),
            "listener[1].name",
            "name = \"public\"",
            "already named",
        ),
        (
            with("[[pool]]\nname = \"chat\"\nbackends = [{ addr = \"127.0.0.1:9002\" }]"),
            "pool[1].name",
            "name = \"chat\"",
            "already named",
        ),
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
            replaced("127.0.0.1:8080", "localhost:8080"),
            "listener[0].bind",
            "bind",
            "IP address and port",
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
            second_listener("127.0.0.1:8080"),
            "listener[1].bind",
            "bind",
            "collides with listener[0].bind",
        ),
        (
            second_listener("0.0.0.0:8080"),
            "listener[1].bind",
            "bind",
            "collides with listener[0].bind",
        ),
        (
            with("[admin]\nbind = \"127.0.0.1:8080\""),
            "admin.bind",
            "bind",
            "collides with listener[0].bind",
        ),
        (
            format!("[admin]\nbind = \"127.0.0.1:8080\"\n{MINIMAL}"),
            "listener[0].bind",
            "127.0.0.1:8080\"",
            "collides with admin.bind",
        ),
        (with("[admin]"), "admin.bind", "[admin]", "is required"),
        (
            replaced("bind = \"127.0.0.1:8080\"\n", ""),
            "listener[0].bind",
            "[[listener]]",
            "is required",
        ),
        (
            replaced("pool = \"chat\"\n", ""),
            "route[0].pool",
            "[[route]]",
            "is required",
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
            defaults("idle_timeout = \"0s\""),
            "defaults.idle_timeout",
            "idle_timeout",
            "more than zero",
        ),
        (
            defaults("handshake_timeout = \"0ms\""),
            "defaults.handshake_timeout",
            "handshake_timeout",
            "more than zero",
        ),
        (
            defaults("idle_timeout = 30"),
            "defaults.idle_timeout",
            "idle_timeout",
            "no unit; write a duration with one, e.g. \"30s\"",
        ),
        (
            defaults("drain_timeout = \"soon\""),
            "defaults.drain_timeout",
            "drain_timeout",
            "cannot read \"soon\"",
        ),
        (
            defaults("drain_timeout = \"400days\""),
            "defaults.drain_timeout",
            "drain_timeout",
            "too long",
        ),
        (
            defaults("max_frame_bytes = 0"),
            "defaults.max_frame_bytes",
            "max_frame_bytes",
            "above 0",
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
        (
            replaced(
                "bind = \"127.0.0.1:8080\"",
                "bind = \"127.0.0.1:8080\"\nmax_header_bytes = 0",
            ),
            "listener[0].max_header_bytes",
            "max_header_bytes",
            "above 0",
        ),
        (
            replaced("name = \"public\"", "name = \" \""),
            "listener[0].name",
            "name = \" \"",
            "must not be empty",
        ),
    ];
    let failures: Vec<String> = (cases.iter())
        .filter_map(|(text, key_path, marker, hint)| check_one(text, key_path, marker, hint).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn an_empty_file_needs_a_listener_and_a_route() {
    let found = problems("");
    let paths: Vec<&str> = found.iter().map(|p| p.key_path.as_str()).collect();
    assert_eq!(paths, ["listener", "route"]);
    assert!(found.iter().all(|p| p.line.is_none()));
}

#[test]
fn several_problems_are_all_reported_in_line_order() {
    let text = r#"
[defaults]
idle_timeout = 60

[[listener]]
name = "public"
bind = "127.0.0.1:80800"

[[route]]
path_prefix = "echo"
pool = "missing"

[[pool]]
name = "echo"
balance = "sticky"
backends = [{ addr = "127.0.0.1:9001", weight = 0 }]
"#;
    let found = problems(text);
    let got: Vec<(&str, Option<usize>)> = found
        .iter()
        .map(|p| (p.key_path.as_str(), p.line))
        .collect();
    let expected = [
        ("defaults.idle_timeout", Some(3)),
        ("listener[0].bind", Some(7)),
        ("route[0].path_prefix", Some(10)),
        ("route[0].pool", Some(11)),
        ("pool[0].balance", Some(15)),
        ("pool[0].backends[0].weight", Some(16)),
    ];
    assert_eq!(got, expected, "{found:#?}");
    let error = parse(text, Path::new("."), "wsgate.toml").unwrap_err();
    let shown = error.to_string();
    assert!(
        shown.starts_with("wsgate.toml has 6 problem(s):\n"),
        "{shown}"
    );
    assert!(
        shown.contains("  line 11: route[0].pool: no pool is named \"missing\""),
        "{shown}"
    );
}

/// The single problem of a file that stops parsing, checked against the
/// position toml itself prints.
fn stopping_problem(text: &str) -> Problem {
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    let (line, column) = (found[0].line.unwrap(), found[0].column.unwrap());
    let shown = toml::from_str::<file::File>(text).unwrap_err().to_string();
    assert!(
        shown.contains(&format!("line {line}, column {column}")),
        "{shown}"
    );
    assert_eq!(found[0].key_path, "");
    found.into_iter().next().unwrap()
}

#[test]
fn a_syntax_error_stops_with_line_and_column() {
    let text = "[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:8080\n[[route]]\npool = 1";
    let found = stopping_problem(text);
    assert_eq!((found.line, found.column), (Some(3), Some(23)));
}

#[test]
fn an_unknown_key_stops_with_line_and_column() {
    let text = replaced("pool = \"chat\"", "pool = \"chat\"\n  pol = \"chat\"");
    let found = stopping_problem(&text);
    assert_eq!(found.line, Some(line_of(&text, "pol =")));
    assert_eq!(found.column, Some(3));
    assert!(found.message.contains("unknown field `pol`"), "{found:#?}");
}

#[test]
fn a_value_of_the_wrong_type_stops_with_line_and_column() {
    let found = problems(&replaced(
        "\"127.0.0.1:9001\" }",
        "\"127.0.0.1:9001\", weight = \"2\" }",
    ));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].line, Some(line_of(MINIMAL, "backends")));
    assert!(found[0].message.contains("invalid type"), "{found:#?}");
}

#[test]
fn columns_count_characters() {
    assert_eq!(line_column("a\nçé=x", 5), (2, 3));
    assert_eq!(line_column("ab", 99), (1, 3));
}

/// A folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("wsgate-config-test-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes a self-signed certificate for `names` and its key as
    /// `<stem>.pem` and `<stem>.key`.
    fn cert(&self, stem: &str, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names).unwrap();
        self.write(&format!("{stem}.pem"), &generated.cert.pem());
        self.write(
            &format!("{stem}.key"),
            &generated.signing_key.serialize_pem(),
        );
    }

    fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.0.join(name), contents).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tls_file(tls: &str) -> String {
    replaced(
        "bind = \"127.0.0.1:8080\"",
        &format!("bind = \"127.0.0.1:8080\"\ntls = {tls}"),
    )
}

#[test]
fn tls_certificates_are_read_relative_to_the_config_folder() {
    let dir = TempDir::new();
    dir.cert("a", &["a.example"]);
    dir.cert("b", &["b.example"]);
    let text = tls_file(
        r#"{ cert = "a.pem", key = "a.key", sni = [{ server_names = ["B.Example", "www.b.example"], cert = "b.pem", key = "b.key" }] }"#,
    );
    let config = parse(&text, &dir.0, "test.toml").unwrap();
    let tls = config.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.default.cert, dir.0.join("a.pem"));
    assert_eq!(tls.default.key, dir.0.join("a.key"));
    assert_eq!(tls.default.certified_key.cert.len(), 1);
    assert_eq!(tls.sni[0].server_names, ["b.example", "www.b.example"]);
    assert_eq!(tls.sni[0].pair.cert, dir.0.join("b.pem"));
}

#[test]
fn tls_problems_name_the_file_and_the_key() {
    let dir = TempDir::new();
    dir.cert("a", &["a.example"]);
    dir.cert("b", &["b.example"]);
    dir.write("empty.pem", "no PEM here\n");
    let cases = [
        (
            r#"{ cert = "missing.pem", key = "a.key" }"#,
            "listener[0].tls.cert",
            "cannot read",
        ),
        (
            r#"{ cert = "a.pem", key = "missing.key" }"#,
            "listener[0].tls.key",
            "cannot read",
        ),
        (
            r#"{ cert = "a.pem", key = "b.key" }"#,
            "listener[0].tls.key",
            "does not match the certificate",
        ),
        (
            r#"{ cert = "a.key", key = "a.key" }"#,
            "listener[0].tls.cert",
            "holds no PEM certificate",
        ),
        (
            r#"{ cert = "a.pem", key = "empty.pem" }"#,
            "listener[0].tls.key",
            "holds no PEM private key",
        ),
        (
            r#"{ cert = "a.pem" }"#,
            "listener[0].tls.key",
            "is required",
        ),
        (
            r#"{ cert = "a.pem", key = "a.key", sni = [{ server_names = ["b.example"], cert = "b.pem", key = "a.key" }] }"#,
            "listener[0].tls.sni[0].key",
            "does not match the certificate",
        ),
        (
            r#"{ cert = "a.pem", key = "a.key", sni = [{ server_names = ["b.example"], cert = "b.pem", key = "b.key" }, { server_names = ["B.EXAMPLE"], cert = "a.pem", key = "a.key" }] }"#,
            "listener[0].tls.sni[1].server_names[0]",
            "already listed at listener[0].tls.sni[0].server_names[0]",
        ),
        (
            r#"{ cert = "a.pem", key = "a.key", sni = [{ server_names = ["*.b.example"], cert = "b.pem", key = "b.key" }] }"#,
            "listener[0].tls.sni[0].server_names[0]",
            "not a DNS name",
        ),
        (
            r#"{ cert = "a.pem", key = "a.key", sni = [{ server_names = [], cert = "b.pem", key = "b.key" }] }"#,
            "listener[0].tls.sni[0].server_names",
            "lists no name",
        ),
    ];
    for (tls, key_path, hint) in cases {
        let text = tls_file(tls);
        let found = problems_in(&text, &dir.0);
        let line = Some(line_of(&text, "tls ="));
        assert!(
            matches!(found.as_slice(), [p] if p.key_path == key_path && p.line == line && p.message.contains(hint)),
            "{tls}: expected {key_path} with {hint:?}, got {found:#?}"
        );
    }
}
