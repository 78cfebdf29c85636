//! Route authentication through the real proxy: JWT (HS256 from a secret
//! file, ES256 from a JWKS file with a key made here) in each token
//! location, every rejection reason, claims forwarded and forgeries
//! removed, expiry closing 1008 to the client and 1001 to the backend; and
//! forward auth admitting, denying, failing closed and reusing its
//! connections.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "correct horse battery staple";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn with_admin(toml: &str) -> String {
    format!("[admin]\nbind = \"127.0.0.1:0\"\n\n{toml}")
}

/// A proxy whose `/echo` route checks JWTs with `auth` (TOML inline
/// table body), files relative to `dir`.
async fn jwt_proxy(backend: SocketAddr, dir: &Path, auth: &str) -> Proxy {
    let toml = simple_config(&[backend], "").replacen(
        "pool = \"p\"\n",
        &format!("pool = \"p\"\nauth = {{ jwt = {{ {auth} }} }}\n"),
        1,
    );
    start_proxy_in(&with_admin(&toml), dir).await
}

fn secret_dir() -> TempDir {
    let dir = TempDir::new("jwt");
    std::fs::write(dir.0.join("secret"), format!("{SECRET}\n")).unwrap();
    dir
}

fn claims() -> serde_json::Value {
    json!({"sub": "alice", "iss": "https://id.example", "aud": "chat", "exp": now() + 600})
}

fn hs256(claims: &serde_json::Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
}

const HS_AUTH: &str = "secret = \"file:secret\", issuer = \"https://id.example\", \
                       audience = \"chat\", forward_claims = { sub = \"X-User-Id\" }";

async fn scrape(proxy: &Proxy) -> String {
    let (code, body) = admin(proxy.shared.admin_addr.unwrap(), "GET", "/metrics").await;
    assert_eq!(code, 200);
    body
}

#[tokio::test]
async fn hs256_bearer_admits_and_forwards_claims_replacing_forgeries() {
    let dir = secret_dir();
    let backend = echo_backend().await;
    let proxy = jwt_proxy(backend.addr, &dir.0, HS_AUTH).await;
    let extra = format!(
        "Authorization: Bearer {}\r\nX-User-Id: mallory\r\nX-User-Id: eve\r\n",
        hs256(&claims())
    );
    let (_ws, answer) = RawWs::connect(proxy.addr("main"), &upgrade_request("/echo", &extra)).await;
    assert_eq!(answer.status, 101);
    let seen = backend.last_seen();
    let ids: Vec<&str> = (seen.headers.iter())
        .filter(|(n, _)| n == "x-user-id")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(ids, ["alice"]);
    let s = scrape(&proxy).await;
    assert_eq!(
        sample(
            &s,
            "wsgate_auth_total",
            &["method=\"jwt\"", "result=\"admitted\""]
        ),
        1.0
    );
}

#[tokio::test]
async fn every_jwt_rejection_is_401_with_its_reason_and_no_backend_contact() {
    let dir = secret_dir();
    let backend = echo_backend().await;
    let proxy = jwt_proxy(backend.addr, &dir.0, &format!("{HS_AUTH}, leeway = \"0s\"")).await;
    let patched = |k: &str, v: serde_json::Value| {
        let mut c = claims();
        c[k] = v;
        hs256(&c)
    };
    let forged = {
        let key = EncodingKey::from_secret(b"not the secret");
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &key).unwrap()
    };
    let cases = [
        (None, "no token", "missing"),
        (
            Some("not.a.jwt".to_string()),
            "malformed token",
            "malformed",
        ),
        (Some(forged), "bad token signature", "bad_signature"),
        (
            Some(patched("iss", json!("https://evil.example"))),
            "wrong token issuer",
            "wrong_issuer",
        ),
        (
            Some(patched("aud", json!("other"))),
            "wrong token audience",
            "wrong_audience",
        ),
        (
            Some(patched("exp", json!(now() - 5))),
            "token expired",
            "expired",
        ),
        (
            Some(patched("nbf", json!(now() + 600))),
            "token not yet valid",
            "not_yet_valid",
        ),
        (
            // A valid token relabelled RS256: no key of the route verifies it.
            Some({
                let rs = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(r#"{"alg":"RS256","typ":"JWT"}"#);
                let token = hs256(&claims());
                let (_, rest) = token.split_once('.').unwrap();
                format!("{rs}.{rest}")
            }),
            "token signed with an unknown key or algorithm",
            "unknown_key",
        ),
    ];
    for (token, reason, label) in &cases {
        let extra = match token {
            Some(t) => format!("Authorization: Bearer {t}\r\n"),
            None => String::new(),
        };
        let answer = raw_request(
            proxy.addr("main"),
            upgrade_request("/echo", &extra).as_bytes(),
        )
        .await;
        assert_eq!(answer.status, 401, "{label}: {answer:?}");
        assert_eq!(answer.body.trim(), format!("unauthorized: {reason}"));
        assert_eq!(answer.body.lines().count(), 1);
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    }
    assert_eq!(backend.connection_count(), 0, "no backend was contacted");
    let s = scrape(&proxy).await;
    for (_, _, label) in &cases {
        let labels = ["method=\"jwt\"", &format!("result=\"{label}\"")];
        assert_eq!(sample(&s, "wsgate_auth_total", &labels), 1.0, "{label}");
    }
    assert_eq!(
        sample(&s, "wsgate_handshake_rejections_total", &["status=\"401\""]),
        cases.len() as f64
    );
}

#[tokio::test]
async fn query_cookie_and_header_locations() {
    let dir = secret_dir();
    let backend = echo_backend().await;
    let token = hs256(&claims());
    let locations = [
        (
            "query:access_token",
            format!("/echo?access_token={token}"),
            String::new(),
        ),
        (
            "cookie:session",
            "/echo".to_string(),
            format!("Cookie: a=b; session={token}\r\n"),
        ),
        (
            "header:X-Token",
            "/echo".to_string(),
            format!("X-Token: {token}\r\n"),
        ),
    ];
    for (location, path, extra) in locations {
        let proxy = jwt_proxy(
            backend.addr,
            &dir.0,
            &format!("{HS_AUTH}, token = \"{location}\""),
        )
        .await;
        let (_ws, answer) =
            RawWs::connect(proxy.addr("main"), &upgrade_request(&path, &extra)).await;
        assert_eq!(answer.status, 101, "{location}");
        // The same route refuses the request without it.
        let answer = raw_request(proxy.addr("main"), upgrade_request("/echo", "").as_bytes()).await;
        assert_eq!(answer.status, 401, "{location}");
    }
}

#[tokio::test]
async fn protocol_token_is_removed_and_the_101_selects_a_real_subprotocol() {
    let dir = secret_dir();
    let backend = echo_backend().await;
    let proxy = jwt_proxy(
        backend.addr,
        &dir.0,
        &format!("{HS_AUTH}, token = \"protocol\""),
    )
    .await;
    let token = hs256(&claims());
    let extra = format!("Sec-WebSocket-Protocol: chat.v1, {token}, chat.v2\r\n");
    let (_ws, answer) = RawWs::connect(proxy.addr("main"), &upgrade_request("/echo", &extra)).await;
    assert_eq!(answer.status, 101);
    assert_eq!(answer.header("sec-websocket-protocol"), Some("chat.v1"));
    let seen = backend.last_seen();
    assert_eq!(
        seen.header("sec-websocket-protocol"),
        Some("chat.v1, chat.v2")
    );
    assert!(!seen.headers.iter().any(|(_, v)| v.contains(&token)));
    // A real subprotocol with no token is not mistaken for one.
    let extra = "Sec-WebSocket-Protocol: chat.v1\r\n";
    let answer = raw_request(
        proxy.addr("main"),
        upgrade_request("/echo", extra).as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 401);
}

/// A P-256 key made here, its JWKS document, and tokens signed with it.
struct EcKey {
    der: Vec<u8>,
    jwks: String,
}

fn ec_key(kid: &str) -> EcKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    assert_eq!((raw.len(), raw[0]), (65, 4), "an uncompressed point");
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
    }]});
    EcKey {
        der: pair.serialize_der(),
        jwks: jwks.to_string(),
    }
}

fn es256(key: &EcKey, kid: &str, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&key.der)).unwrap()
}

#[tokio::test]
async fn es256_from_a_jwks_file() {
    let dir = TempDir::new("jwks");
    let key = ec_key("k1");
    std::fs::write(dir.0.join("jwks.json"), &key.jwks).unwrap();
    let backend = echo_backend().await;
    let proxy = jwt_proxy(
        backend.addr,
        &dir.0,
        "keys = \"jwks.json\", audience = \"chat\"",
    )
    .await;
    let main = proxy.addr("main");
    let call = |token: String| {
        let request = upgrade_request("/echo", &format!("Authorization: Bearer {token}\r\n"));
        async move { raw_request(main, request.as_bytes()).await }
    };
    let (_ws, answer) = RawWs::connect(
        proxy.addr("main"),
        &upgrade_request(
            "/echo",
            &format!("Authorization: Bearer {}\r\n", es256(&key, "k1", &claims())),
        ),
    )
    .await;
    assert_eq!(answer.status, 101);
    // Another key of the same kid, and an unknown kid.
    let other = ec_key("k1");
    let answer = call(es256(&other, "k1", &claims())).await;
    assert_eq!(
        (answer.status, answer.body.trim()),
        (401, "unauthorized: bad token signature")
    );
    let answer = call(es256(&key, "k2", &claims())).await;
    assert_eq!(answer.status, 401);
    assert!(answer.body.contains("unknown key"), "{answer:?}");
    // An HMAC token never meets a route of public keys.
    let answer = call(hs256(&claims())).await;
    assert_eq!(answer.status, 401);
}

#[tokio::test]
async fn token_expiring_after_the_upgrade_closes_1008_and_1001() {
    let dir = secret_dir();
    let (backend_addr, mut accepted) = raw_backend().await;
    let proxy = jwt_proxy(
        backend_addr,
        &dir.0,
        "secret = \"file:secret\", leeway = \"0s\"",
    )
    .await;
    let mut c = claims();
    // Two to three seconds from now (exp has whole seconds).
    c["exp"] = json!(now() + 3);
    let extra = format!("Authorization: Bearer {}\r\n", hs256(&c));
    let (mut client, answer) =
        RawWs::connect(proxy.addr("main"), &upgrade_request("/echo", &extra)).await;
    assert_eq!(answer.status, 101);
    let mut backend = within(accepted.recv()).await.unwrap();
    // Traffic still flows before the expiry.
    client.send(true, 0x1, b"still valid").await;
    assert_eq!(backend.recv().await.unwrap().payload, b"still valid");
    let to_client = client.recv_close().await.expect("a close to the client");
    assert_eq!(to_client.close_code(), 1008);
    assert_eq!(&to_client.payload[2..], b"token expired");
    let to_backend = backend.recv_close().await.expect("a close to the backend");
    assert_eq!(to_backend.close_code(), 1001);
    assert!(to_backend.masked);
}

/// A keep-alive HTTP/1.1 authentication service. `Authorization: Bearer
/// good` gets 200 with `X-User-Id: alice`; `deny401` and `deny403` those
/// statuses with a body; `boom` a 500; `slow` no answer at all.
struct AuthService {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn auth_service() -> AuthService {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = AuthService {
        addr: listener.local_addr().unwrap(),
        connections: Arc::default(),
        requests: Arc::default(),
    };
    let (connections, requests) = (service.connections.clone(), service.requests.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::SeqCst);
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    buf.drain(..end + 4);
                    requests.lock().unwrap().push(head.clone());
                    let (status, headers, body) = if head.contains("authorization: bearer good") {
                        ("200 OK", "x-user-id: alice\r\nx-other: no\r\n", "")
                    } else if head.contains("bearer deny401") {
                        (
                            "401 Unauthorized",
                            "www-authenticate: Basic realm=\"x\"\r\ncontent-type: text/plain\r\n",
                            "log in first",
                        )
                    } else if head.contains("bearer deny403") {
                        (
                            "403 Forbidden",
                            "content-type: application/json\r\n",
                            "{\"error\":\"not yours\"}",
                        )
                    } else if head.contains("bearer slow") {
                        let _ = stream.read(&mut chunk).await;
                        return;
                    } else {
                        ("500 Internal Server Error", "", "oops")
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    service
}

async fn forward_proxy(backend: SocketAddr, service: &AuthService) -> Proxy {
    let auth = format!(
        "auth = {{ forward = {{ url = \"http://{}/check?app=chat\", timeout = \"2s\", \
         request_headers = [\"Authorization\"], response_headers = [\"X-User-Id\"] }} }}",
        service.addr
    );
    let toml = simple_config(&[backend], "").replacen(
        "pool = \"p\"\n",
        &format!("pool = \"p\"\n{auth}\n"),
        1,
    );
    start_proxy(&with_admin(&toml)).await
}

#[tokio::test]
async fn forward_auth_admits_copies_headers_and_reuses_its_connection() {
    let service = auth_service().await;
    let backend = echo_backend().await;
    let proxy = forward_proxy(backend.addr, &service).await;
    for _ in 0..3 {
        let extra = "Authorization: Bearer good\r\nX-User-Id: mallory\r\nCookie: secret=1\r\n";
        let (_ws, answer) =
            RawWs::connect(proxy.addr("main"), &upgrade_request("/echo?room=1", extra)).await;
        assert_eq!(answer.status, 101);
        let seen = backend.last_seen();
        let ids: Vec<&str> = (seen.headers.iter())
            .filter(|(n, _)| n == "x-user-id")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(ids, ["alice"]);
        assert_eq!(
            seen.header("x-other"),
            None,
            "only listed headers are copied"
        );
    }
    let requests = service.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    let first = &requests[0];
    assert!(first.starts_with("get /check?app=chat http/1.1"), "{first}");
    for line in [
        "x-forwarded-method: get",
        "x-forwarded-uri: /echo?room=1",
        "x-forwarded-host: localhost",
        "authorization: bearer good",
    ] {
        assert!(first.contains(line), "{line} in {first}");
    }
    assert!(
        !first.contains("cookie"),
        "unlisted headers stay back: {first}"
    );
    assert_eq!(
        service.connections.load(Ordering::SeqCst),
        1,
        "one kept-alive connection"
    );
    let s = scrape(&proxy).await;
    assert_eq!(
        sample(
            &s,
            "wsgate_auth_total",
            &["method=\"forward\"", "result=\"admitted\""]
        ),
        3.0
    );
    assert_eq!(
        sample(&s, "wsgate_forward_auth_duration_seconds_count", &[]),
        3.0
    );
}

#[tokio::test]
async fn forward_auth_denials_pass_through_and_failures_are_503() {
    let service = auth_service().await;
    let backend = echo_backend().await;
    let proxy = forward_proxy(backend.addr, &service).await;
    let main = proxy.addr("main");
    let ask = |token: &str| {
        let request = upgrade_request("/echo", &format!("Authorization: Bearer {token}\r\n"));
        async move { raw_request(main, request.as_bytes()).await }
    };
    let answer = ask("deny401").await;
    assert_eq!((answer.status, answer.body.as_str()), (401, "log in first"));
    assert_eq!(answer.header("www-authenticate"), Some("Basic realm=\"x\""));
    let answer = ask("deny403").await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.body, "{\"error\":\"not yours\"}");
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let answer = ask("boom").await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.body.trim(), "authentication service unavailable");
    let answer = ask("slow").await;
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.body.trim(),
        "authentication service did not answer in time"
    );
    assert_eq!(backend.connection_count(), 0, "no backend was contacted");
    let s = scrape(&proxy).await;
    for (result, n) in [("denied", 2.0), ("unavailable", 1.0), ("timeout", 1.0)] {
        let labels = ["method=\"forward\"", &format!("result=\"{result}\"")];
        assert_eq!(sample(&s, "wsgate_auth_total", &labels), n, "{result}");
    }
}

#[tokio::test]
async fn forward_auth_service_down_is_503() {
    let backend = echo_backend().await;
    let service = AuthService {
        addr: closed_port().await,
        connections: Arc::default(),
        requests: Arc::default(),
    };
    let proxy = forward_proxy(backend.addr, &service).await;
    let answer = raw_request(proxy.addr("main"), upgrade_request("/echo", "").as_bytes()).await;
    assert_eq!(answer.status, 503);
    assert_eq!(backend.connection_count(), 0);
}

#[tokio::test]
async fn the_access_log_names_the_subject_and_the_proxied_client() {
    let backend = echo_backend().await;
    let dir = secret_dir();
    let path = dir.0.join("wsgate.toml");
    let toml = simple_config(&[backend.addr], "")
        .replacen(
            "pool = \"p\"\n",
            &format!("pool = \"p\"\nauth = {{ jwt = {{ {HS_AUTH} }} }}\n"),
            1,
        )
        .replacen(
            "bind = \"127.0.0.1:0\"\n",
            "bind = \"127.0.0.1:0\"\nproxy_protocol = \"v1\"\n",
            1,
        );
    std::fs::write(&path, toml).unwrap();
    let mut bin = Binary::start(&["--config", path.to_str().unwrap(), "--log-format", "json"]);
    let line = bin.wait_line(&["listening", "local"]).await;
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr: SocketAddr = parsed["fields"]["local"].as_str().unwrap().parse().unwrap();

    let mut stream = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let request = format!(
        "PROXY TCP4 203.0.113.20 127.0.0.1 4242 80\r\n{}",
        upgrade_request(
            "/echo",
            &format!("Authorization: Bearer {}\r\n", hs256(&claims()))
        )
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut ws = RawWs::server(stream, Vec::new());
    ws.mask = true;
    // The 101's head, then a clean close.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(within(ws.stream.read(&mut byte)).await.unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    ws.send_close(1000, "bye").await;
    ws.recv_close().await.unwrap();
    let closed = bin.wait_line(&["wsgate::access", "closed"]).await;
    let closed: serde_json::Value = serde_json::from_str(&closed).unwrap();
    assert_eq!(closed["fields"]["user"], "alice");
    assert_eq!(closed["fields"]["client"], "203.0.113.20:4242");

    let mut stream = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let request = format!(
        "PROXY TCP4 203.0.113.21 127.0.0.1 4243 80\r\n{}",
        upgrade_request("/echo", "")
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    within(stream.read_to_end(&mut out)).await.unwrap();
    assert_eq!(parse_answer(&out).status, 401);
    let rejected = bin.wait_line(&["wsgate::access", "rejected"]).await;
    let rejected: serde_json::Value = serde_json::from_str(&rejected).unwrap();
    assert_eq!(rejected["fields"]["status"], 401);
    assert_eq!(rejected["fields"]["reason"], "unauthorized: no token");
    assert_eq!(rejected["fields"]["client"], "203.0.113.21:4243");
}

#[tokio::test]
async fn a_rotated_jwks_file_is_seen_by_the_watcher() {
    let dir = TempDir::new("jwks-rotate");
    let (old, new) = (ec_key("old"), ec_key("new"));
    std::fs::write(dir.0.join("jwks.json"), &old.jwks).unwrap();
    let backend = echo_backend().await;
    let path = dir.0.join("wsgate.toml");
    let toml = simple_config(&[backend.addr], "").replacen(
        "pool = \"p\"\n",
        "pool = \"p\"\nauth = { jwt = { keys = \"jwks.json\" } }\n",
        1,
    );
    std::fs::write(&path, with_admin(&toml)).unwrap();
    let (proxy, _server) = start_proxy_file(&path).await;
    wsgate::reload::watch_file(proxy.shared.clone()).expect("watching");
    let request =
        |token: String| upgrade_request("/echo", &format!("Authorization: Bearer {token}\r\n"));
    let answer = raw_request(
        proxy.addr("main"),
        request(es256(&new, "new", &claims())).as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 401);
    write_atomically(&dir.0.join("jwks.json"), &new.jwks);
    let mut version = 1;
    for _ in 0..400 {
        let (_, body) = admin(proxy.shared.admin_addr.unwrap(), "GET", "/status").await;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        version = status["version"].as_u64().unwrap();
        if version == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(version, 2, "the watcher reloaded");
    let (_ws, answer) =
        RawWs::connect(proxy.addr("main"), &request(es256(&new, "new", &claims()))).await;
    assert_eq!(answer.status, 101);
    let answer = raw_request(
        proxy.addr("main"),
        request(es256(&old, "old", &claims())).as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 401);
}
