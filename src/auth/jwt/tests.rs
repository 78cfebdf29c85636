use super::*;
use crate::config::Jwk;
use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const SECRET: &[u8] = b"a test secret of enough length";
const NOW: u64 = 1_700_000_000;

fn route(keys: JwtKeys) -> JwtAuth {
    JwtAuth {
        keys,
        issuer: Some("https://issuer.example".into()),
        audience: Some("chat".into()),
        leeway: Duration::from_secs(30),
        token: TokenSource::Header(http::header::AUTHORIZATION),
        forward_claims: vec![("sub".into(), "x-user-id".parse().unwrap())],
        on_expiry: OnExpiry::Close,
        file: None,
    }
}

fn secret_route() -> JwtAuth {
    route(JwtKeys::Secret(DecodingKey::from_secret(SECRET)))
}

fn good_claims() -> serde_json::Value {
    json!({
        "sub": "alice",
        "iss": "https://issuer.example",
        "aud": ["other", "chat"],
        "exp": NOW + 60,
    })
}

fn hs(alg: Algorithm, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

#[test]
fn a_good_token_passes_with_every_hmac_size() {
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let claims = verify(&secret_route(), &hs(alg, &good_claims()), NOW).unwrap();
        assert_eq!(claims["sub"], "alice");
    }
}

#[test]
fn every_rejection_has_its_reason() {
    let auth = secret_route();
    let with = |patch: serde_json::Value| {
        let mut c = good_claims();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        hs(Algorithm::HS256, &c)
    };
    let cases = [
        ("not a token".to_string(), Reason::Malformed),
        (
            with(json!({"iss": "https://evil.example"})),
            Reason::WrongIssuer,
        ),
        (with(json!({"iss": null})), Reason::WrongIssuer),
        (with(json!({"aud": "other"})), Reason::WrongAudience),
        (with(json!({"aud": null})), Reason::WrongAudience),
        (with(json!({"exp": NOW - 31})), Reason::Expired),
        (with(json!({"exp": null})), Reason::Malformed),
        (with(json!({"exp": "soon"})), Reason::Malformed),
        (with(json!({"nbf": NOW + 31})), Reason::NotYetValid),
    ];
    for (token, reason) in cases {
        assert_eq!(verify(&auth, &token, NOW), Err(reason), "{token}");
    }
    // Within the leeway, both ways.
    assert!(verify(&auth, &with(json!({"exp": NOW - 29})), NOW).is_ok());
    assert!(verify(&auth, &with(json!({"nbf": NOW + 29})), NOW).is_ok());
    // Signed with another secret.
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good_claims(),
        &EncodingKey::from_secret(b"another secret"),
    )
    .unwrap();
    assert_eq!(verify(&auth, &forged, NOW), Err(Reason::BadSignature));
    // A tampered payload breaks the signature too.
    let token = hs(Algorithm::HS256, &good_claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"sub": "mallory", "exp": NOW + 60}).to_string());
    parts[1] = &evil;
    assert_eq!(
        verify(&auth, &parts.join("."), NOW),
        Err(Reason::BadSignature)
    );
}

#[test]
fn alg_none_and_asymmetric_algs_never_meet_a_secret() {
    let auth = secret_route();
    let none = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(good_claims().to_string())
    );
    assert!(verify(&auth, &none, NOW).is_err());
    let rs = format!(
        "{}.{}.sig",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(good_claims().to_string())
    );
    assert_eq!(verify(&auth, &rs, NOW), Err(Reason::UnknownKey));
}

#[test]
fn jwks_keys_are_chosen_by_kid_and_alg() {
    let jwk = |kid: &str| Jwk {
        kid: Some(kid.to_string()),
        algorithms: vec![Algorithm::HS256],
        key: DecodingKey::from_secret(SECRET),
    };
    let auth = route(JwtKeys::Set(vec![jwk("a"), jwk("b")]));
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("b".into());
    let token =
        jsonwebtoken::encode(&header, &good_claims(), &EncodingKey::from_secret(SECRET)).unwrap();
    assert!(verify(&auth, &token, NOW).is_ok());
    header.kid = Some("c".into());
    let token =
        jsonwebtoken::encode(&header, &good_claims(), &EncodingKey::from_secret(SECRET)).unwrap();
    assert_eq!(verify(&auth, &token, NOW), Err(Reason::UnknownKey));
    let token = hs(Algorithm::HS384, &good_claims());
    assert_eq!(verify(&auth, &token, NOW), Err(Reason::UnknownKey));
}

#[test]
fn bearer_query_cookie_and_protocol_locations() {
    assert_eq!(bearer("Bearer abc"), "abc");
    assert_eq!(bearer("bearer  abc "), "abc");
    assert_eq!(bearer("abc"), "abc");
    let uri: Uri = "/chat?x=1&access_token=tok&y".parse().unwrap();
    assert_eq!(query(&uri, "access_token"), Some("tok"));
    assert_eq!(query(&uri, "z"), None);
    let mut h = HeaderMap::new();
    h.append(
        "cookie",
        HeaderValue::from_static("a=1; session = tok ; b=2"),
    );
    assert_eq!(cookie(&h, "session"), Some("tok"));

    let token = hs(Algorithm::HS256, &good_claims());
    let mut h = HeaderMap::new();
    h.append(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("chat.v1, {token}")).unwrap(),
    );
    h.append(
        "sec-websocket-protocol",
        HeaderValue::from_static("chat.v2"),
    );
    let (found, first) = take_protocol_token(&mut h);
    assert_eq!(found.as_deref(), Some(token.as_str()));
    assert_eq!(first, Some(HeaderValue::from_static("chat.v1")));
    assert_eq!(h.get_all("sec-websocket-protocol").iter().count(), 1);
    assert_eq!(h["sec-websocket-protocol"], "chat.v1, chat.v2");
    // Only the token: no header is left.
    let mut h = HeaderMap::new();
    h.append(
        "sec-websocket-protocol",
        HeaderValue::from_str(&token).unwrap(),
    );
    let (found, first) = take_protocol_token(&mut h);
    assert!(found.is_some() && first.is_none());
    assert!(!h.contains_key("sec-websocket-protocol"));
}

#[test]
fn claims_replace_forged_headers_and_expiry_is_set() {
    let auth = secret_route();
    let mut claims = good_claims();
    claims["exp"] = json!(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 100
    );
    let token = hs(Algorithm::HS256, &claims);
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h.append("x-user-id", HeaderValue::from_static("forged"));
    h.append("x-user-id", HeaderValue::from_static("forged-too"));
    let uri: Uri = "/".parse().unwrap();
    let admitted = check(&auth, &mut h, &uri).unwrap();
    assert_eq!(admitted.subject.as_deref(), Some("alice"));
    assert_eq!(h.get_all("x-user-id").iter().collect::<Vec<_>>(), ["alice"]);
    assert!(admitted.expires_at.is_some());
    // Refused: the forged header is gone all the same.
    let mut h = HeaderMap::new();
    h.append("x-user-id", HeaderValue::from_static("forged"));
    let denial = check(&auth, &mut h, &uri).unwrap_err();
    assert_eq!(denial.reason, Reason::Missing);
    assert_eq!(denial.status, http::StatusCode::UNAUTHORIZED);
    assert!(!h.contains_key("x-user-id"));
}

#[test]
fn claim_values_as_headers() {
    assert_eq!(header_value(&json!("alice")).unwrap(), "alice");
    assert_eq!(header_value(&json!(42)).unwrap(), "42");
    assert_eq!(header_value(&json!(["a", "b"])).unwrap(), r#"["a","b"]"#);
    assert!(header_value(&json!("line\nbreak")).is_none());
    assert!(header_value(&json!(null)).is_none());
}

#[test]
fn on_expiry_ignore_sets_no_deadline() {
    let mut auth = secret_route();
    auth.on_expiry = OnExpiry::Ignore;
    let mut claims = good_claims();
    claims["exp"] = json!(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 100
    );
    let mut h = HeaderMap::new();
    let bearer = format!("Bearer {}", hs(Algorithm::HS256, &claims));
    h.insert("authorization", HeaderValue::from_str(&bearer).unwrap());
    let admitted = check(&auth, &mut h, &"/".parse().unwrap()).unwrap();
    assert!(admitted.expires_at.is_none());
}
