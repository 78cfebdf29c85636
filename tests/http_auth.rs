//! A route's `auth` on plain HTTP requests (routes with `http = "proxy"`):
//! refused before any backend is contacted, admitted with the claims as
//! headers and client forgeries removed, as for upgrades.

mod common;
mod http_kit;

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use http_kit::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const SECRET: &str = "an http route's secret";

fn token() -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({"sub": "alice", "exp": exp});
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

#[tokio::test]
async fn jwt_routes_check_plain_http_requests_too() {
    let b = http_backend("a").await;
    let dir = TempDir::new("http-auth");
    std::fs::write(dir.0.join("secret"), SECRET).unwrap();
    let auth =
        "auth = { jwt = { secret = \"file:secret\", forward_claims = { sub = \"X-User-Id\" } } }";
    let toml = http_config(&[b.addr], auth, "").replacen(
        "bind = \"127.0.0.1:0\"\n",
        "bind = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n",
        1,
    );
    let proxy = start_proxy_in(&toml, &dir.0).await;

    let answer = raw_request(proxy.addr("main"), get("/headers", "").as_bytes()).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.body.trim(), "unauthorized: no token");
    assert_eq!(
        b.connections.load(Ordering::SeqCst),
        0,
        "no backend was contacted"
    );

    let mut c = Conn::open(proxy.addr("main")).await;
    let extra = format!(
        "Authorization: Bearer {}\r\nX-User-Id: mallory\r\nX-Forwarded-For: 203.0.113.9\r\n",
        token()
    );
    c.send(get("/headers", &extra).as_bytes()).await;
    let r = c.response("GET").await.unwrap();
    assert_eq!(r.status, 200);
    let seen = r.text();
    let ids: Vec<&str> = seen
        .lines()
        .filter(|l| l.starts_with("x-user-id:"))
        .collect();
    assert_eq!(ids, ["x-user-id: alice"], "{seen}");
    // The hop the request came from is appended, as for upgrades.
    assert!(
        seen.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1"),
        "{seen}"
    );
}
