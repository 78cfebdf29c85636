//! JSON Web Tokens at the handshake (RFC 7519): find the token where the
//! route says, verify its signature with the route's secret or JWKS keys,
//! check `iss`, `aud`, `exp` and `nbf`, and pass chosen claims to the
//! backend as headers.
//!
//! [`verify`] is sans-io: it takes the token and the current Unix time, so
//! every rule is unit-tested with made-up clocks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Uri};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{Admitted, Denial, Reason};
use crate::config::{JwtAuth, JwtKeys, OnExpiry, TokenSource};

/// Claims of a verified token.
pub type Claims = Map<String, Value>;

/// Checks the request's token against `auth`, and rewrites `headers` for
/// the backend: a token sent as a subprotocol is removed from
/// `Sec-WebSocket-Protocol`, and every `forward_claims` header is replaced
/// by the claim's value (or removed when the token lacks the claim).
pub fn check(auth: &JwtAuth, headers: &mut HeaderMap, uri: &Uri) -> Result<Admitted, Denial> {
    let mut protocol_fallback = None;
    let token = match &auth.token {
        TokenSource::Header(name) => headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| bearer(v).to_string()),
        TokenSource::Query(name) => query(uri, name).map(str::to_string),
        TokenSource::Cookie(name) => cookie(headers, name).map(str::to_string),
        TokenSource::Protocol => {
            let (token, rest) = take_protocol_token(headers);
            protocol_fallback = rest;
            token
        }
    };
    // Client-sent headers of these names never reach the backend.
    for (_, header) in &auth.forward_claims {
        headers.remove(header);
    }
    let token = token.filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(Denial::of(Reason::Missing));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = verify(auth, &token, now).map_err(Denial::of)?;
    for (claim, header) in &auth.forward_claims {
        if let Some(value) = claims.get(claim).and_then(header_value) {
            headers.insert(header, value);
        }
    }
    let expires_at = match auth.on_expiry {
        OnExpiry::Ignore => None,
        OnExpiry::Close => claims.get("exp").and_then(Value::as_u64).map(|exp| {
            // The leeway that admitted the token also delays its end, so a
            // token accepted within the leeway is not closed at once.
            let left = exp
                .saturating_add(auth.leeway.as_secs())
                .saturating_sub(now);
            tokio::time::Instant::now() + Duration::from_secs(left.min(MAX_LIFETIME_SECS))
        }),
    };
    Ok(Admitted {
        subject: claims.get("sub").and_then(claim_text),
        expires_at,
        protocol_fallback,
    })
}

/// Keeps `Instant + duration` far from overflow for absurd `exp` values.
const MAX_LIFETIME_SECS: u64 = 100 * 365 * 24 * 3600;

/// Verifies `token` at Unix time `now`: signature, `iss`, `aud`, then
/// `exp` (required) and `nbf` with the route's leeway.
pub fn verify(auth: &JwtAuth, token: &str, now: u64) -> Result<Claims, Reason> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Reason::Malformed)?;
    let candidates: Vec<&DecodingKey> = match &auth.keys {
        JwtKeys::Secret(key) => {
            let hmac = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
            hmac.contains(&header.alg)
                .then_some(key)
                .into_iter()
                .collect()
        }
        JwtKeys::Set(keys) => keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid == header.kid)
            .filter(|k| k.algorithms.contains(&header.alg))
            .map(|k| &k.key)
            .collect(),
    };
    if candidates.is_empty() {
        return Err(Reason::UnknownKey);
    }
    let mut validation = Validation::new(header.alg);
    // exp and nbf are checked below against the `now` passed in.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    // A configured claim must be present, not merely right when present.
    match &auth.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".to_string());
        }
        None => validation.validate_aud = false,
    }
    if let Some(iss) = &auth.issuer {
        validation.set_issuer(&[iss]);
        validation.required_spec_claims.insert("iss".to_string());
    }
    let mut outcome = Err(Reason::BadSignature);
    for key in candidates {
        outcome = match jsonwebtoken::decode::<Claims>(token, key, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::InvalidSignature => Reason::BadSignature,
                ErrorKind::InvalidIssuer => Reason::WrongIssuer,
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => Reason::WrongIssuer,
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => Reason::WrongAudience,
                ErrorKind::InvalidAudience => Reason::WrongAudience,
                ErrorKind::InvalidAlgorithm => Reason::UnknownKey,
                _ => Reason::Malformed,
            }),
        };
        // Another key of the same `kid` may still verify the signature.
        if outcome != Err(Reason::BadSignature) {
            break;
        }
    }
    let claims = outcome?;
    let leeway = auth.leeway.as_secs();
    let time = |name: &str| {
        claims
            .get(name)
            .map(|v| v.as_u64().ok_or(Reason::Malformed))
    };
    match time("exp") {
        None => return Err(Reason::Malformed),
        Some(exp) if exp?.saturating_add(leeway) <= now => return Err(Reason::Expired),
        Some(_) => {}
    }
    if let Some(nbf) = time("nbf") {
        if nbf? > now.saturating_add(leeway) {
            return Err(Reason::NotYetValid);
        }
    }
    Ok(claims)
}

/// The value of an `Authorization`-style header without its `Bearer `
/// scheme (RFC 6750 section 2.1; the scheme is case-insensitive).
fn bearer(value: &str) -> &str {
    let value = value.trim();
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => value[7..].trim_start(),
        _ => value,
    }
}

fn query<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
}

/// Takes the entry of `Sec-WebSocket-Protocol` that is a JWT (three
/// base64url parts, the first a JSON object: `eyJ...`) out of the header,
/// leaving the real subprotocols. Returns the token and the first
/// remaining subprotocol.
fn take_protocol_token(headers: &mut HeaderMap) -> (Option<String>, Option<HeaderValue>) {
    let name = http::header::SEC_WEBSOCKET_PROTOCOL;
    let entries: Vec<String> = (headers.get_all(&name).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    let Some(at) = entries.iter().position(|e| looks_like_jwt(e)) else {
        return (None, None);
    };
    let mut rest = entries;
    let token = rest.remove(at);
    headers.remove(&name);
    let first = rest.first().and_then(|p| HeaderValue::from_str(p).ok());
    if let Ok(value) = HeaderValue::from_str(&rest.join(", ")) {
        if !rest.is_empty() {
            headers.insert(name, value);
        }
    }
    (Some(token), first)
}

fn looks_like_jwt(entry: &str) -> bool {
    entry.starts_with("eyJ")
        && entry.split('.').count() == 3
        && entry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A claim as a header value: strings as they are, numbers and booleans
/// as JSON text, anything else as compact JSON; `None` when the result is
/// not a valid header value.
fn header_value(claim: &Value) -> Option<HeaderValue> {
    let text = claim_text(claim)?;
    HeaderValue::from_str(&text).ok()
}

fn claim_text(claim: &Value) -> Option<String> {
    match claim {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
