//! `[admin] token`: where it may come from, and its check on every admin
//! endpoint over real sockets. (The off-loopback rules are checked at the
//! configuration level and in `dashboard::auth`'s unit tests: tests bind
//! loopback only.)

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "Zq8-test-token_4c1f";

fn config_with_token(token_line: &str, backends: &[SocketAddr]) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n{token_line}\n\n{}",
        simple_config(backends, "")
    )
}

/// The status, the `WWW-Authenticate` header and the body head of one
/// admin request (the event stream never ends, so only its head is read).
async fn ask(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> (u16, Option<String>, String) {
    let auth = auth
        .map(|a| format!("authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\ncontent-length: 0\r\n{auth}\r\n"
    );
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = within(stream.read(&mut chunk)).await.unwrap();
        out.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&out);
        // Enough once the head and a first piece of the body are in.
        let streaming = text.contains("text/event-stream") && text.contains("\r\n\r\n");
        if n == 0 || streaming {
            break;
        }
    }
    let answer = parse_answer(&out);
    let challenge = answer.header("www-authenticate").map(str::to_string);
    (answer.status, challenge, answer.body)
}

#[tokio::test]
async fn with_a_token_every_post_needs_it_and_gets_on_loopback_do_not() {
    let b = echo_backend().await;
    let dir = TempDir::new("admin-token");
    std::fs::write(dir.0.as_path().join("token"), format!("{TOKEN}\n")).unwrap();
    let toml = config_with_token("token = \"file:token\"", &[b.addr]);
    let proxy = start_proxy_in(&toml, dir.0.as_path()).await;
    let admin = proxy.shared.admin_addr.unwrap();

    for path in [
        "/",
        "/dashboard.js",
        "/dashboard.css",
        "/events",
        "/healthz",
        "/readyz",
        "/metrics",
        "/status",
    ] {
        let (status, _, _) = ask(admin, "GET", path, None).await;
        assert_eq!(status, 200, "GET {path} on loopback needs no token");
    }
    let drain = format!("/backends/p/{}/drain", b.addr);
    let undrain = format!("/backends/p/{}/undrain", b.addr);
    for path in ["/reload", drain.as_str(), undrain.as_str()] {
        let (status, challenge, body) = ask(admin, "POST", path, None).await;
        assert_eq!(status, 401, "POST {path} without a token");
        assert!(challenge.unwrap().starts_with("Bearer"), "POST {path}");
        assert!(body.contains("Authorization: Bearer"), "{body}");
        let (status, challenge, body) = ask(admin, "POST", path, Some("Bearer not-it")).await;
        assert_eq!(status, 401, "POST {path} with a wrong token");
        assert!(challenge.unwrap().contains("invalid_token"));
        assert!(body.contains("wrong admin token"), "{body}");
        let (status, _, _) = ask(admin, "POST", path, Some("Basic Zm9vOmJhcg==")).await;
        assert_eq!(status, 401, "POST {path} with another scheme");
    }
    let bearer = format!("Bearer {TOKEN}");
    // No file behind this proxy: the reload itself is refused, past the token.
    assert_eq!(ask(admin, "POST", "/reload", Some(&bearer)).await.0, 400);
    assert_eq!(ask(admin, "POST", &drain, Some(&bearer)).await.0, 200);
    assert_eq!(ask(admin, "POST", &undrain, Some(&bearer)).await.0, 200);
}

#[tokio::test]
async fn without_a_token_loopback_is_open() {
    let b = echo_backend().await;
    let proxy = start_proxy(&config_with_token("", &[b.addr])).await;
    let admin = proxy.shared.admin_addr.unwrap();
    let drain = format!("/backends/p/{}/drain", b.addr);
    assert_eq!(ask(admin, "POST", &drain, None).await.0, 200);
    assert_eq!(ask(admin, "GET", "/status", None).await.0, 200);
}

fn problems(text: &str, base: &Path) -> Vec<String> {
    match wsgate::config::parse(text, base, "test.toml") {
        Ok(_) => Vec::new(),
        Err(e) => e.messages(),
    }
}

const REST: &str = "[[listener]]\nname = \"m\"\nbind = \"127.0.0.1:0\"\n[[route]]\npool = \"p\"\n[[pool]]\nname = \"p\"\nbackends = [{ addr = \"127.0.0.1:9\" }]\n";

#[test]
fn the_token_says_where_the_secret_is_never_the_secret() {
    let dir = TempDir::new("admin-token-config");
    let base = dir.0.as_path();
    let check = |admin: &str| problems(&format!("[admin]\n{admin}\n{REST}"), base);

    let literal = check("bind = \"127.0.0.1:9900\"\ntoken = \"hunter2\"");
    assert_eq!(literal.len(), 1, "{literal:?}");
    assert!(
        literal[0].contains("admin.token") && literal[0].contains("env:NAME"),
        "{literal:?}"
    );
    assert!(
        !literal[0].contains("hunter2"),
        "the error must not echo the secret"
    );

    let missing_env =
        check("bind = \"127.0.0.1:9900\"\ntoken = \"env:WSGATE_TEST_TOKEN_NEVER_SET\"");
    assert!(
        missing_env[0].contains("WSGATE_TEST_TOKEN_NEVER_SET is not set"),
        "{missing_env:?}"
    );

    let missing_file = check("bind = \"127.0.0.1:9900\"\ntoken = \"file:absent\"");
    assert!(
        missing_file[0].contains("cannot read token file"),
        "{missing_file:?}"
    );

    std::fs::write(base.join("empty"), "\n").unwrap();
    let empty = check("bind = \"127.0.0.1:9900\"\ntoken = \"file:empty\"");
    assert!(empty[0].contains("is not set or empty"), "{empty:?}");

    std::fs::write(base.join("good"), "s3cret-token\n").unwrap();
    assert!(check("bind = \"127.0.0.1:9900\"\ntoken = \"file:good\"").is_empty());

    std::env::set_var("WSGATE_TEST_TOKEN_SET", "from-the-environment");
    let config = wsgate::config::parse(
        &format!(
            "[admin]\nbind = \"127.0.0.1:9900\"\ntoken = \"env:WSGATE_TEST_TOKEN_SET\"\n{REST}"
        ),
        base,
        "test.toml",
    )
    .unwrap();
    let token = config.admin.unwrap().token.unwrap();
    assert_eq!(token.expose(), "from-the-environment");
    assert_eq!(format!("{token:?}"), "Secret(..)");
}

#[test]
fn off_loopback_the_admin_listener_needs_a_token() {
    let dir = TempDir::new("admin-token-exposed");
    let base = dir.0.as_path();
    for bind in ["0.0.0.0:9900", "192.0.2.10:9900", "[::]:9900"] {
        let found = problems(&format!("[admin]\nbind = \"{bind}\"\n{REST}"), base);
        assert_eq!(found.len(), 1, "{bind}: {found:?}");
        assert!(
            found[0].contains("admin.token") && found[0].contains("not a loopback"),
            "{found:?}"
        );
    }
    std::fs::write(base.join("t"), "s3cret-token").unwrap();
    let ok = problems(
        &format!("[admin]\nbind = \"0.0.0.0:9900\"\ntoken = \"file:t\"\n{REST}"),
        base,
    );
    assert!(ok.is_empty(), "{ok:?}");
    let loopback = problems(&format!("[admin]\nbind = \"[::1]:9900\"\n{REST}"), base);
    assert!(loopback.is_empty(), "{loopback:?}");
}
