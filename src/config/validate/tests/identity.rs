use super::*;
use crate::config::{Auth, JwtKeys, OnExpiry, ProxyProtocol, ProxyVersion, TokenSource};

fn listener_key(k: &str) -> String {
    replaced(
        "bind = \"127.0.0.1:8080\"",
        &format!("bind = \"127.0.0.1:8080\"\n{k}"),
    )
}

/// A folder with a secret file and a JWKS file.
fn keys_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wsgate-identity-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), "s3cret\n").unwrap();
    let jwks = r#"{"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256",
         "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
         "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"kty": "EC", "crv": "P-256", "use": "enc",
         "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
         "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
    ]}"#;
    std::fs::write(dir.join("jwks.json"), jwks).unwrap();
    std::fs::write(dir.join("empty.json"), r#"{"keys": []}"#).unwrap();
    dir
}

#[test]
fn identity_keys_parse() {
    let dir = keys_dir();
    let text = replaced(
        "bind = \"127.0.0.1:8080\"",
        "bind = \"127.0.0.1:8080\"\nproxy_protocol = \"any\"\n\
         proxy_protocol_from = [\"10.0.0.0/8\", \"fd00::1\"]\ntrusted_proxies = [\"192.168.1.77/24\"]",
    )
    .replace(
        "pool = \"chat\"",
        "pool = \"chat\"\nauth = { jwt = { secret = \"file:secret\", issuer = \"i\", audience = \"a\", \
         leeway = \"5s\", token = \"protocol\", forward_claims = { sub = \"X-User-Id\" }, \
         on_expiry = \"ignore\" } }\n\n[[route]]\npath_prefix = \"/keys\"\npool = \"chat\"\n\
         auth = { jwt = { keys = \"jwks.json\", token = \"query:access_token\" } }\n\n\
         [[route]]\npath_prefix = \"/fwd\"\npool = \"chat\"\n\
         auth = { forward = { url = \"http://127.0.0.1:9100/check\", request_headers = [\"Cookie\"], \
         response_headers = [\"X-User-Id\"] } }",
    )
    .replace(
        "backends = [{ addr = \"127.0.0.1:9001\" }]",
        "backends = [{ addr = \"127.0.0.1:9001\" }]\nsend_proxy_protocol = \"v2\"",
    );
    let config = parse(&text, &dir, "test.toml").unwrap();
    let listener = &config.listeners[0];
    assert_eq!(listener.proxy_protocol, Some(ProxyProtocol::Any));
    let from = &listener.proxy_protocol_from;
    assert!(from[0].contains("10.9.8.7".parse().unwrap()));
    assert!(!from[0].contains("11.0.0.1".parse().unwrap()));
    assert!(from[1].contains("fd00::1".parse().unwrap()));
    assert!(!from[1].contains("fd00::2".parse().unwrap()));
    let trusted = &listener.trusted_proxies[0];
    assert_eq!(
        trusted.addr,
        "192.168.1.0".parse::<std::net::IpAddr>().unwrap()
    );
    assert!(trusted.contains("::ffff:192.168.1.200".parse().unwrap()));
    assert_eq!(config.pools[0].send_proxy_protocol, Some(ProxyVersion::V2));
    let Some(Auth::Jwt(jwt)) = &config.routes[0].auth else {
        panic!("{:?}", config.routes[0].auth)
    };
    assert!(matches!(&jwt.keys, JwtKeys::Secret(_)));
    assert_eq!(jwt.token, TokenSource::Protocol);
    assert_eq!(jwt.leeway, Duration::from_secs(5));
    assert_eq!(jwt.on_expiry, OnExpiry::Ignore);
    assert_eq!(jwt.forward_claims[0].1.as_str(), "x-user-id");
    let Some(Auth::Jwt(jwt)) = &config.routes[1].auth else {
        panic!()
    };
    let JwtKeys::Set(keys) = &jwt.keys else {
        panic!()
    };
    assert_eq!(keys.len(), 1, "the encryption key is left out");
    assert_eq!(keys[0].kid.as_deref(), Some("ec1"));
    assert_eq!(jwt.token, TokenSource::Query("access_token".into()));
    assert_eq!(jwt.leeway, Duration::from_secs(30));
    assert_eq!(jwt.on_expiry, OnExpiry::Close);
    let Some(Auth::Forward(forward)) = &config.routes[2].auth else {
        panic!()
    };
    assert_eq!(forward.timeout, Duration::from_secs(2));
    assert_eq!(forward.request_headers[0].as_str(), "cookie");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn identity_problems_have_their_key_path_and_line() {
    let auth = |a: &str| route_key(&format!("auth = {a}"));
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            listener_key("proxy_protocol = \"v3\""),
            "listener[0].proxy_protocol",
            "proxy_protocol",
            "\"v1\", \"v2\" or \"any\"",
        ),
        (
            listener_key("proxy_protocol = \"v1\"\nproxy_protocol_from = [\"10.0.0.0/33\"]"),
            "listener[0].proxy_protocol_from[0]",
            "proxy_protocol_from",
            "not an address range",
        ),
        (
            listener_key("proxy_protocol_from = [\"10.0.0.0/8\"]"),
            "listener[0].proxy_protocol_from",
            "proxy_protocol_from",
            "without proxy_protocol",
        ),
        (
            listener_key("trusted_proxies = [\"10.0.0.0/8\", \"nope\"]"),
            "listener[0].trusted_proxies[1]",
            "trusted_proxies",
            "not an address range",
        ),
        (
            pool_with("send_proxy_protocol = \"v9\""),
            "pool[0].send_proxy_protocol",
            "send_proxy_protocol",
            "\"v1\" or \"v2\"",
        ),
        (auth("{}"), "route[0].auth", "auth", "jwt = { ... }"),
        (
            auth("{ jwt = { secret = \"hunter2\" } }"),
            "route[0].auth.jwt.secret",
            "auth",
            "never written in the file",
        ),
        (
            auth("{ jwt = { secret = \"env:WSGATE_TEST_NO_SUCH_VARIABLE\" } }"),
            "route[0].auth.jwt.secret",
            "auth",
            "is not set",
        ),
        (
            auth("{ jwt = { secret = \"file:no/such/file\" } }"),
            "route[0].auth.jwt.secret",
            "auth",
            "cannot read",
        ),
        (
            auth("{ jwt = { } }"),
            "route[0].auth.jwt",
            "auth",
            "either `secret`",
        ),
        (
            auth("{ jwt = { keys = \"no-such.json\" } }"),
            "route[0].auth.jwt.keys",
            "auth",
            "cannot read",
        ),
        (
            auth("{ jwt = { secret = \"env:PATH\", token = \"body:x\" } }"),
            "route[0].auth.jwt.token",
            "auth",
            "not a token location",
        ),
        (
            auth("{ jwt = { secret = \"env:PATH\", on_expiry = \"warn\" } }"),
            "route[0].auth.jwt.on_expiry",
            "auth",
            "\"close\" or \"ignore\"",
        ),
        (
            auth("{ jwt = { secret = \"env:PATH\", forward_claims = { sub = \"X User\" } } }"),
            "route[0].auth.jwt.forward_claims.sub",
            "auth",
            "not a header name",
        ),
        (
            auth("{ jwt = { secret = \"env:PATH\", leeway = 30 } }"),
            "route[0].auth.jwt.leeway",
            "auth",
            "no unit",
        ),
        (
            auth("{ forward = { url = \"https://auth.example/check\" } }"),
            "route[0].auth.forward.url",
            "auth",
            "not an http:// URL",
        ),
        (
            auth("{ forward = { timeout = \"1s\" } }"),
            "route[0].auth.forward.url",
            "auth",
            "is required",
        ),
        (
            auth("{ forward = { url = \"http://a:1/\", timeout = \"0s\" } }"),
            "route[0].auth.forward.timeout",
            "auth",
            "more than zero",
        ),
        (
            auth("{ forward = { url = \"http://a:1/\", response_headers = [\"bad header\"] } }"),
            "route[0].auth.forward.response_headers[0]",
            "auth",
            "not a header name",
        ),
    ];
    check_all(&cases);
}

#[test]
fn a_jwks_without_usable_keys_is_refused() {
    let dir = keys_dir();
    let text = route_key("auth = { jwt = { keys = \"empty.json\" } }");
    let found = problems_in(&text, &dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].message.contains("no signing key"), "{found:?}");
    let _ = std::fs::remove_dir_all(dir);
}
