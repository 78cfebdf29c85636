//! What an operator meets first: per-command help, `wsgate health`, a bad
//! `RUST_LOG`, metrics at zero in both exposition formats (checked with
//! promtool, installed from Debian when missing), admin 405s with
//! `Allow`, the shutdown line after the last access line, and health-check
//! lines only on transitions.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_command_lists_only_its_own_flags() {
    let check = help(&["check", "--help"]);
    assert!(check.contains("--config"), "{check}");
    for foreign in ["--workers", "--log-format", "--admin", "--bind"] {
        assert!(
            !check.contains(foreign),
            "check --help lists {foreign}:\n{check}"
        );
    }
    let health = help(&["health", "--help"]);
    assert!(health.contains("--admin"), "{health}");
    assert!(!health.contains("--workers"), "{health}");
    let run = help(&["--help"]);
    for flag in ["--config", "--workers", "--log-format"] {
        assert!(run.contains(flag), "--help lacks {flag}:\n{run}");
    }
}

#[test]
fn long_help_names_the_signals_rust_log_and_the_docs() {
    for args in [&["--help"][..], &["demo", "--help"][..]] {
        let text = help(args);
        for word in ["SIGHUP", "SIGTERM", "SIGINT", "RUST_LOG", "docs/"] {
            assert!(text.contains(word), "{args:?} lacks {word}:\n{text}");
        }
    }
}

fn config_with_admin(backends: &[std::net::SocketAddr], extra: &str) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        simple_config(backends, extra)
    )
}

async fn start_binary(dir: &TempDir, toml: &str) -> (Binary, std::net::SocketAddr) {
    let path = dir.0.join("wsgate.toml");
    std::fs::write(&path, toml).unwrap();
    let mut bin = Binary::start(&["--config", path.to_str().unwrap()]);
    let admin = bin.wait_addr(&["admin listening"], "addr").await;
    (bin, admin)
}

fn health_probe(admin: &str) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["health", "--admin", admin, "--timeout", "10s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn health_exits_0_when_ready_and_1_when_nothing_answers() {
    let backend = echo_backend().await;
    let dir = TempDir::new("health");
    let (_bin, admin) = start_binary(&dir, &config_with_admin(&[backend.addr], "")).await;
    let (ok, err) = health_probe(&admin.to_string());
    assert!(ok, "{err}");
    // An admin listener bound to every interface is probed on loopback.
    let unspecified = format!("0.0.0.0:{}", admin.port());
    let (ok, err) = health_probe(&unspecified);
    assert!(ok, "{err}");

    let closed = closed_port().await;
    let (ok, err) = health_probe(&closed.to_string());
    assert!(!ok);
    assert!(err.contains("cannot connect"), "{err}");
}

/// `wsgate ARGS` with `RUST_LOG=rust_log`; its stderr lines on a channel.
/// The child is killed when the returned guard drops.
fn spawn_logging(args: &[&str], rust_log: &str) -> (KillOnDrop, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (KillOnDrop(child), rx)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next line (within a generous bound) that contains every one of
/// `parts`; the lines passed over are returned too, for the message.
fn next_line_with(lines: &std::sync::mpsc::Receiver<String>, parts: &[&str]) -> String {
    let mut seen = Vec::new();
    for _ in 0..1000 {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if parts.iter().all(|p| line.contains(p)) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {parts:?}; seen:\n{}", seen.join("\n"));
}

#[test]
fn an_invalid_rust_log_is_reported_and_the_default_level_used() {
    let (_child, lines) = spawn_logging(&["echo", "--bind", "127.0.0.1:0"], "debugg");
    let complaint = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("a first line");
    assert!(
        complaint.contains("RUST_LOG") && complaint.contains("debugg"),
        "{complaint}"
    );
    // info is on: the echo backend's startup line is logged.
    let next = next_line_with(&lines, &["echo backend listening"]);
    assert!(next.contains("INFO"), "{next}");
}

#[tokio::test]
async fn debug_logs_each_connection_and_the_backend_chosen_for_it() {
    let backend = echo_backend().await;
    let dir = TempDir::new("debug-lines");
    let path = dir.0.join("wsgate.toml");
    std::fs::write(&path, simple_config(&[backend.addr], "")).unwrap();
    let (_child, lines) = spawn_logging(&["--config", path.to_str().unwrap()], "info,wsgate=debug");
    let listening = next_line_with(&lines, &["listening", "local="]);
    let addr: std::net::SocketAddr = listening
        .split("local=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{listening}"));
    let _ws = ws_connect(addr, "/echo").await;
    let opened = next_line_with(&lines, &["connection opened"]);
    assert!(
        opened.contains("peer=127.0.0.1:") && opened.contains("listener=main"),
        "{opened}"
    );
    let chosen = next_line_with(&lines, &["backend chosen"]);
    assert!(
        chosen.contains(&format!("backend={}", backend.addr)),
        "{chosen}"
    );
    assert!(chosen.contains("pool=p"), "{chosen}");
}

async fn scrape(admin: std::net::SocketAddr, accept: &str) -> RawAnswer {
    let request = format!(
        "GET /metrics HTTP/1.1\r\nhost: admin\r\naccept: {accept}\r\nconnection: close\r\n\r\n"
    );
    raw_request(admin, request.as_bytes()).await
}

#[tokio::test]
async fn metrics_exist_at_zero_in_the_format_the_scraper_asks_for() {
    let backend = echo_backend().await;
    let proxy = start_proxy(&config_with_admin(&[backend.addr], "")).await;
    let admin = proxy.shared.admin_addr.unwrap();
    let b = backend.addr.to_string();

    let text = scrape(admin, "text/plain").await;
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = &text.body;
    assert!(!body.contains("# EOF"), "{body}");
    assert!(
        body.contains("# TYPE wsgate_config_reloads_total counter"),
        "{body}"
    );
    for series in [
        "wsgate_config_reloads_total{result=\"failure\"} 0".to_string(),
        "wsgate_config_reloads_total{result=\"success\"} 0".to_string(),
        "wsgate_handshake_rejections_total{status=\"502\"} 0".to_string(),
        "wsgate_handshake_rejections_total{status=\"404\"} 0".to_string(),
        // Lines the non-blocking log writer had to drop: none yet.
        "wsgate_log_lines_dropped_total 0".to_string(),
        format!("wsgate_connections_total{{route=\"*/echo\",pool=\"p\",backend=\"{b}\"}} 0"),
        format!(
            "wsgate_messages_total{{direction=\"client_to_backend\",pool=\"p\",backend=\"{b}\"}} 0"
        ),
        format!(
            "wsgate_closes_total{{code=\"1001\",initiator=\"proxy\",pool=\"p\",backend=\"{b}\"}} 0"
        ),
        format!(
            "wsgate_closes_total{{code=\"1014\",initiator=\"backend\",pool=\"p\",backend=\"{b}\"}} 0"
        ),
        format!("wsgate_backend_up{{pool=\"p\",backend=\"{b}\",name=\"\"}} 1"),
    ] {
        assert!(body.contains(&series), "no `{series}` in:\n{body}");
    }
    promtool_accepts(body);

    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let om = scrape(admin, prometheus_accept).await;
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om.body.trim_end().ends_with("# EOF"), "{}", om.body);
    assert!(
        om.body.contains("# TYPE wsgate_config_reloads counter"),
        "{}",
        om.body
    );
}

/// `promtool check metrics` on `body` (Debian's prometheus package,
/// installed when missing).
#[tokio::test]
async fn admission_http_and_policy_series_exist_at_zero() {
    let backend = echo_backend().await;
    let b = backend.addr;
    let toml = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"edge\"\nbind = \"127.0.0.1:0\"\n\
         per_client = {{ max_connections = 100, handshakes_per_second = 10, burst = 20 }}\n\
         max_connections = 1000\nmax_pending_handshakes = 100\n\
         admit = {{ handshakes_per_second = 500, queue = \"5s\" }}\n\n\
         [[route]]\npath_prefix = \"/\"\npool = \"p\"\nhttp = \"proxy\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [{{ addr = \"{b}\" }}]\n\
         rebalance = {{ tolerance = 0.2, max_closes_per_second = 20 }}\n"
    );
    let proxy = start_proxy(&toml).await;
    let body = scrape(proxy.shared.admin_addr.unwrap(), "text/plain")
        .await
        .body;
    let mut series: Vec<String> = [
        "per_client_connections",
        "per_client_rate",
        "max_connections",
        "max_pending_handshakes",
        "admit_queue",
    ]
    .iter()
    .map(|r| format!("wsgate_admission_rejections_total{{listener=\"edge\",reason=\"{r}\"}} 0"))
    .collect();
    series.push("wsgate_admit_queue_length{listener=\"edge\"} 0".into());
    series.push("wsgate_rebalance_closes_total{pool=\"p\"} 0".into());
    series.push("wsgate_http_requests_in_flight{pool=\"p\"} 0".into());
    for code in [200, 502, 503, 504] {
        series.push(format!(
            "wsgate_http_requests_total{{pool=\"p\",code=\"{code}\"}} 0"
        ));
    }
    for status in [401, 413, 429, 504] {
        series.push(format!(
            "wsgate_handshake_rejections_total{{status=\"{status}\"}} 0"
        ));
    }
    for (code, initiator) in [
        (1008, "client"),
        (1008, "proxy"),
        (1012, "proxy"),
        (1013, "proxy"),
    ] {
        series.push(format!(
            "wsgate_closes_total{{code=\"{code}\",initiator=\"{initiator}\",pool=\"p\",backend=\"{b}\"}} 0"
        ));
    }
    for s in &series {
        assert!(body.contains(s.as_str()), "no `{s}` in:\n{body}");
    }
    promtool_accepts(&body);
}

fn promtool_accepts(body: &str) {
    use std::io::Write;
    require_program("promtool", "prometheus");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn admin_405_names_the_allowed_method() {
    let backend = echo_backend().await;
    let proxy = start_proxy(&config_with_admin(&[backend.addr], "")).await;
    let admin = proxy.shared.admin_addr.unwrap();
    for (method, path, allow) in [
        ("POST", "/metrics", "GET"),
        ("DELETE", "/healthz", "GET"),
        ("GET", "/reload", "POST"),
    ] {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let answer = raw_request(admin, request.as_bytes()).await;
        assert_eq!(answer.status, 405, "{method} {path}");
        assert_eq!(answer.header("allow"), Some(allow), "{method} {path}");
    }
}

#[tokio::test]
async fn stopped_is_logged_after_the_last_access_line() {
    let backend = echo_backend().await;
    let dir = TempDir::new("last-line");
    let path = dir.0.join("wsgate.toml");
    std::fs::write(&path, simple_config(&[backend.addr], "")).unwrap();
    let mut bin = Binary::start(&["--config", path.to_str().unwrap()]);
    let addr = bin.wait_addr(&["listening", "local="], "local").await;
    let mut ws = ws_connect(addr, "/echo").await;
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::text("hi")
    );
    bin.signal("TERM");
    bin.wait_line(&["draining open connections"]).await;
    // The client leaves during the drain: its access line is the last.
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = within(ws.next()).await {}
    assert_eq!(bin.exit_code().await, Some(0));
    bin.wait_line(&["stopped"]).await;
    let lines = bin.lines();
    let access = lines
        .iter()
        .position(|l| l.contains("wsgate::access") && l.contains("status=101"))
        .unwrap_or_else(|| panic!("no access line:\n{}", lines.join("\n")));
    let stopped = lines.iter().position(|l| l.ends_with(" stopped")).unwrap();
    assert!(access < stopped, "{}", lines.join("\n"));
}

#[tokio::test]
async fn health_checks_log_transitions_not_every_reload() {
    let down = closed_port().await;
    let dir = TempDir::new("transitions");
    let path = dir.0.join("wsgate.toml");
    let toml = config_with_admin(
        &[down],
        "health_check = { kind = \"tcp\", interval = \"100ms\", timeout = \"1s\" }",
    );
    std::fs::write(&path, &toml).unwrap();
    let mut bin = Binary::start(&["--config", path.to_str().unwrap()]);
    bin.wait_line(&["health check failed", "backend down"])
        .await;
    // A reload restarts the checks; the backend is still down, which is
    // no news.
    bin.signal("HUP");
    bin.wait_line(&["configuration reloaded", "version=2"])
        .await;
    bin.signal("HUP");
    bin.wait_line(&["configuration reloaded", "version=3"])
        .await;
    // Now it comes up: one line for that transition.
    release_closed_port(down);
    let _listener = std::net::TcpListener::bind(down).expect("the released port is free again");
    bin.wait_line(&["health check passed", "backend up"]).await;
    let lines = bin.lines();
    let failed = lines
        .iter()
        .filter(|l| l.contains("health check failed"))
        .count();
    assert_eq!(failed, 1, "{}", lines.join("\n"));
}

/// The repository file `path`.
fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The Dockerfile with continuation lines joined.
fn dockerfile_instructions() -> Vec<String> {
    let text = repo_file("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// The exec-form array after `CMD` in `instruction`.
fn exec_form(instruction: &str) -> Vec<String> {
    let at = instruction.find("CMD [").expect("an exec-form CMD") + 4;
    serde_json::from_str(&instruction[at..]).expect("a JSON array")
}

#[test]
fn the_build_context_holds_everything_the_dockerfile_copies() {
    let ignore = repo_file(".dockerignore");
    let kept: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .collect();
    assert!(ignore.lines().any(|l| l.trim() == "*"), "{ignore}");
    for copy in dockerfile_instructions()
        .iter()
        .filter(|i| i.starts_with("COPY ") && !i.contains("--from"))
    {
        let words: Vec<&str> = copy.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            let source = source.trim_end_matches('/');
            assert!(
                kept.iter()
                    .any(|k| source.starts_with(k.trim_end_matches('/'))),
                "{source} is copied but left out of the build context"
            );
        }
    }
}

/// The container configuration with its binds moved to loopback port 0.
fn container_config_on_loopback() -> String {
    repo_file("deploy/container/demo.toml")
        .replace("0.0.0.0:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9900", "127.0.0.1:0")
}

#[tokio::test]
async fn the_container_configuration_runs_and_passes_the_images_healthcheck() {
    let instructions = dockerfile_instructions();
    let cmd = exec_form(
        instructions
            .iter()
            .rfind(|i| i.starts_with("CMD "))
            .expect("a CMD"),
    );
    let copied = instructions
        .iter()
        .find(|i| i.starts_with("COPY deploy/container/demo.toml "))
        .expect("the container configuration is copied");
    let in_image = copied.split_whitespace().last().unwrap();
    assert_eq!(cmd, ["demo", "--config", in_image]);
    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/container/demo.toml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    // Started as `--config` rather than `demo`: the demo's echo backends
    // would take fixed ports here.
    let dir = TempDir::new("container");
    let (_bin, admin) = start_binary(&dir, &container_config_on_loopback()).await;
    let healthcheck = instructions
        .iter()
        .find(|i| i.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    let probe = exec_form(healthcheck);
    assert_eq!(probe[0], "/usr/local/bin/wsgate");
    let args: Vec<String> = probe[1..]
        .iter()
        .map(|a| a.replace("127.0.0.1:9900", &admin.to_string()))
        .collect();
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
}

/// The value after `key: ` on the first line of `yaml` that has it.
fn yaml_number(yaml: &str, key: &str) -> u64 {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key}"))
}

/// The configuration embedded in deploy/kubernetes/configmap.yaml.
fn configmap_toml() -> String {
    let yaml = repo_file("deploy/kubernetes/configmap.yaml");
    let start = yaml.find("wsgate.toml: |\n").expect("wsgate.toml key") + 15;
    yaml[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.get(4..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kubernetes_configuration_is_valid_and_its_grace_period_covers_the_drain() {
    let toml = configmap_toml();
    let dir = TempDir::new("configmap");
    std::fs::create_dir_all(dir.0.join("tls")).unwrap();
    let ca = TestCa::new();
    let issued = ca.issue("server", &["wsgate.example"]);
    std::fs::copy(&issued.cert, dir.0.join("tls/tls.crt")).unwrap();
    std::fs::copy(&issued.key, dir.0.join("tls/tls.key")).unwrap();
    std::fs::create_dir_all(dir.0.join("admin")).unwrap();
    std::fs::write(dir.0.join("admin/token"), "test-token\n").unwrap();
    let config = wsgate::config::parse(&toml, &dir.0, "configmap.yaml")
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));

    let deployment = repo_file("deploy/kubernetes/deployment.yaml");
    let grace = yaml_number(&deployment, "terminationGracePeriodSeconds");
    let pause: u64 = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("command: [\"sleep\", \""))
        .and_then(|v| v.trim_end_matches("\"]").parse().ok())
        .expect("a preStop sleep");
    // After the drain: 5 s of close grace and 1 s to exit
    // (docs/operations.md, "Graceful shutdown").
    let needed = pause + config.drain_timeout.as_secs() + 6;
    assert!(
        grace >= needed,
        "terminationGracePeriodSeconds {grace} < preStop {pause} + drain_timeout + 6"
    );
    for port in ["8080", "8443", "9900"] {
        assert!(toml.contains(&format!("0.0.0.0:{port}")), "{port}");
        assert!(
            deployment.contains(&format!("containerPort: {port}")),
            "{port}"
        );
    }
}

#[test]
fn keepalive_pings_are_on_by_default() {
    let toml = simple_config(&["127.0.0.1:9".parse().unwrap()], "");
    let config = wsgate::config::parse(&toml, std::path::Path::new("."), "test.toml").unwrap();
    assert_eq!(
        config.routes[0].limits.ping_interval,
        Duration::from_secs(30)
    );
    // Below the default idle_timeout, so an idle client is pinged first.
    assert!(config.routes[0].limits.ping_interval < config.routes[0].limits.idle_timeout);
}
