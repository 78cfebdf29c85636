//! Unit tests of validation, one file per table like the code; the
//! helpers and the tests of the whole file are here.

mod admission;
mod http;
mod identity;
mod keys;
mod listener;
mod pool;
mod push;
mod route;
mod values;

use super::*;
use crate::config::EXAMPLE;
use crate::config::{
    Backend, Balance, HealthCheck, HealthCheckKind, HostPattern, Sticky, StickySource,
    DEFAULT_MAX_HEADER_BYTES,
};
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

/// Every case has exactly one problem, at its key path, on the last line
/// containing its marker, with its hint in the message.
fn check_all(cases: &[(String, &str, &str, &str)]) {
    let failures: Vec<String> = (cases.iter())
        .filter_map(|(text, key_path, marker, hint)| check_one(text, key_path, marker, hint).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn second_listener(bind: &str) -> String {
    with(&format!("[[listener]]\nname = \"b\"\nbind = \"{bind}\""))
}

fn host(h: &str) -> String {
    replaced("path_prefix = \"/chat\"", &format!("host = \"{h}\""))
}

fn route_key(k: &str) -> String {
    replaced("pool = \"chat\"", &format!("pool = \"chat\"\n{k}"))
}

fn defaults(k: &str) -> String {
    format!("[defaults]\n{k}\n{MINIMAL}")
}

fn sticky(s: &str) -> String {
    pool_with(&format!("balance = \"sticky\"\nsticky = {s}"))
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
    for stem in [
        "server",
        "chat",
        "api",
        "clients-ca",
        "backends-ca",
        "wsgate",
    ] {
        dir.cert(&format!("certs/{stem}"), &[&format!("{stem}.example.com")]);
    }
    std::fs::create_dir(dir.0.join("secrets")).unwrap();
    std::fs::write(dir.0.join("secrets/jwt"), "example secret").unwrap();
    std::fs::write(dir.0.join("admin-token"), "example-token\n").unwrap();
    std::fs::write(dir.0.join("publish.token"), "s3cret\n").unwrap();
    let config = parse(&uncommented.join("\n"), &dir.0, "uncommented").unwrap();
    let counts = (
        config.listeners.len(),
        config.routes.len(),
        config.pools.len(),
    );
    assert_eq!(counts, (4, 6, 2));
    assert!(config.publish.is_some() && config.cluster.is_some());
    assert_eq!(config.listeners[1].tls.as_ref().unwrap().sni.len(), 2);
    assert_eq!(config.resolver.nameservers.len(), 1);
    let chat = &config.pools[1];
    assert_eq!(chat.entries.len(), 5);
    assert_eq!(chat.backends.len(), 3, "names are not resolved by parsing");
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
        name: None,
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
