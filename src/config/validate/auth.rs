//! A route's `auth` table: JWT checks (secret or JWKS file, read here, so
//! that every reload reads them again) or a forward-auth service.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use toml::Spanned;

use super::file;
use super::Checker;
use crate::config::{Auth, ForwardAuth, Jwk, JwtAuth, JwtKeys, OnExpiry, TokenSource};

/// `leeway` when the table leaves it out (issue: "30s").
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// `timeout` of a forward-auth request when left out.
const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

impl Checker<'_> {
    pub(super) fn auth(&mut self, path: &str, auth: &Spanned<file::Auth>) -> Option<Auth> {
        let a = auth.get_ref();
        match (&a.jwt, &a.forward) {
            (Some(jwt), None) => self.jwt(&format!("{path}.jwt"), jwt).map(Auth::Jwt),
            (None, Some(forward)) => (self.forward(&format!("{path}.forward"), forward))
                .map(|f| Auth::Forward(Arc::new(f))),
            (jwt, _) => {
                let message = match jwt {
                    Some(_) => "set either `jwt` or `forward`, not both",
                    None => {
                        "say how to check who connects: `auth = { jwt = { ... } }` or \
                             `auth = { forward = { url = \"http://127.0.0.1:9100/check\" } }`"
                    }
                };
                self.report(path.to_string(), Some(auth.span()), message.to_string());
                None
            }
        }
    }

    fn jwt(&mut self, path: &str, jwt: &Spanned<file::Jwt>) -> Option<Arc<JwtAuth>> {
        let j = jwt.get_ref();
        let keys = match (&j.secret, &j.keys) {
            (Some(secret), None) => self
                .jwt_secret(&format!("{path}.secret"), secret)
                .map(|s| JwtKeys::Secret(DecodingKey::from_secret(&s))),
            (None, Some(file)) => self.jwks(&format!("{path}.keys"), file).map(JwtKeys::Set),
            (Some(_), Some(_)) | (None, None) => {
                let message = "set either `secret` (\"env:NAME\" or \"file:PATH\", for HS256) \
                               or `keys` (a JWKS file, for RS256, ES256, EdDSA), not both";
                self.report(path.to_string(), Some(jwt.span()), message.to_string());
                None
            }
        };
        let leeway = match &j.leeway {
            None => Some(DEFAULT_LEEWAY),
            Some(v) => self.duration(&format!("{path}.leeway"), v),
        };
        let token = match &j.token {
            None => Some(TokenSource::Header(http::header::AUTHORIZATION)),
            Some(t) => self.token_source(&format!("{path}.token"), t),
        };
        let mut forward_claims = Some(Vec::new());
        if let Some(claims) = &j.forward_claims {
            for (claim, header) in claims.get_ref() {
                let key = format!("{path}.forward_claims.{claim}");
                match self.header_name(&key, header) {
                    Some(name) => forward_claims
                        .iter_mut()
                        .for_each(|f| f.push((claim.clone(), name.clone()))),
                    None => forward_claims = None,
                }
            }
        }
        let on_expiry = match j.on_expiry.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "close")) => Some(OnExpiry::Close),
            Some((_, "ignore")) => Some(OnExpiry::Ignore),
            Some((v, other)) => {
                let message = format!("unknown on_expiry {other:?}; write \"close\" or \"ignore\"");
                self.report(format!("{path}.on_expiry"), Some(v.span()), message);
                None
            }
        };
        let text = |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.get_ref().clone());
        let file = match (&j.secret, &j.keys) {
            (Some(secret), _) => {
                (secret.get_ref().strip_prefix("file:")).map(|f| self.base.join(f))
            }
            (None, Some(keys)) => {
                let k = keys.get_ref();
                Some(self.base.join(k.strip_prefix("file:").unwrap_or(k)))
            }
            (None, None) => None,
        };
        Some(Arc::new(JwtAuth {
            keys: keys?,
            issuer: text(&j.issuer),
            audience: text(&j.audience),
            leeway: leeway?,
            token: token?,
            forward_claims: forward_claims?,
            on_expiry: on_expiry?,
            file,
        }))
    }

    /// A secret named by `env:NAME` or `file:PATH`, never written inline.
    pub(super) fn jwt_secret(&mut self, path: &str, value: &Spanned<String>) -> Option<Vec<u8>> {
        let text = value.get_ref();
        let read = if let Some(name) = text.strip_prefix("env:") {
            std::env::var(name)
                .map(String::into_bytes)
                .map_err(|_| format!("the environment variable {name:?} is not set (or not UTF-8)"))
        } else if let Some(file) = text.strip_prefix("file:") {
            let file = self.base.join(file);
            std::fs::read(&file)
                .map(|mut bytes| {
                    // Files written by editors and `echo` end with a newline.
                    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        bytes.pop();
                    }
                    bytes
                })
                .map_err(|e| format!("cannot read {}: {e}", file.display()))
        } else {
            Err(
                "secrets are never written in the file; write \"env:NAME\" (an environment \
                 variable) or \"file:PATH\" (a file holding the secret)"
                    .to_string(),
            )
        };
        let message = match read {
            Ok(secret) if !secret.is_empty() => return Some(secret),
            Ok(_) => "the secret is empty".to_string(),
            Err(message) => message,
        };
        self.report(path.to_string(), Some(value.span()), message);
        None
    }

    /// The signing keys of a JWKS file (`file:` prefix optional).
    fn jwks(&mut self, path: &str, value: &Spanned<String>) -> Option<Vec<Jwk>> {
        let text = value.get_ref();
        let file = self.base.join(text.strip_prefix("file:").unwrap_or(text));
        let set = std::fs::read(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))
            .and_then(|bytes| {
                serde_json::from_slice::<JwkSet>(&bytes).map_err(|e| {
                    format!(
                        "{} is not a JWKS document ({e}); it needs {{\"keys\": [...]}}",
                        file.display()
                    )
                })
            });
        let keys: Vec<Jwk> = match &set {
            Ok(set) => set.keys.iter().filter_map(usable_key).collect(),
            Err(_) => Vec::new(),
        };
        let message = match set {
            Err(message) => message,
            Ok(_) if keys.is_empty() => format!(
                "{} holds no signing key wsgate can use (RSA, EC P-256 or P-384, Ed25519, \
                 or a shared secret)",
                file.display()
            ),
            Ok(_) => return Some(keys),
        };
        self.report(path.to_string(), Some(value.span()), message);
        None
    }

    fn token_source(&mut self, path: &str, value: &Spanned<String>) -> Option<TokenSource> {
        let text = value.get_ref();
        let source = match text.split_once(':') {
            None if text == "protocol" => Some(TokenSource::Protocol),
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .ok()
                .map(TokenSource::Header),
            Some(("query", name)) if valid_name(name) => Some(TokenSource::Query(name.to_string())),
            Some(("cookie", name)) if valid_name(name) => {
                Some(TokenSource::Cookie(name.to_string()))
            }
            _ => None,
        };
        if source.is_none() {
            let message = format!(
                "{text:?} is not a token location; write \"header:Authorization\", \
                 \"query:access_token\", \"cookie:NAME\" or \"protocol\""
            );
            self.report(path.to_string(), Some(value.span()), message);
        }
        source
    }

    fn header_name(&mut self, path: &str, value: &Spanned<String>) -> Option<HeaderName> {
        let name = HeaderName::from_bytes(value.get_ref().as_bytes()).ok();
        if name.is_none() {
            let message = format!(
                "{:?} is not a header name; use letters, digits and '-'",
                value.get_ref()
            );
            self.report(path.to_string(), Some(value.span()), message);
        }
        name
    }

    fn header_names(
        &mut self,
        path: &str,
        list: &Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Option<Vec<HeaderName>> {
        let Some(list) = list else {
            return Some(Vec::new());
        };
        let checked: Vec<Option<HeaderName>> = (list.get_ref().iter().enumerate())
            .map(|(k, v)| self.header_name(&format!("{path}[{k}]"), v))
            .collect();
        checked.into_iter().collect()
    }

    fn forward(&mut self, path: &str, forward: &Spanned<file::Forward>) -> Option<ForwardAuth> {
        let f = forward.get_ref();
        let example = "url = \"http://127.0.0.1:9100/check\"";
        let url = self.require(path, "url", forward.span(), &f.url, example);
        let url = url.and_then(|u| {
            let parsed = u
                .get_ref()
                .parse::<http::Uri>()
                .ok()
                .filter(|uri| uri.scheme_str() == Some("http") && uri.authority().is_some());
            if parsed.is_none() {
                let message = format!(
                    "{:?} is not an http:// URL; write e.g. \"http://127.0.0.1:9100/check\" \
                     (the service is reached without TLS, keep it on a trusted network)",
                    u.get_ref()
                );
                self.report(format!("{path}.url"), Some(u.span()), message);
            }
            parsed
        });
        let timeout = match &f.timeout {
            None => Some(DEFAULT_FORWARD_TIMEOUT),
            Some(v) => self.positive_duration(&format!("{path}.timeout"), v),
        };
        let request_headers =
            self.header_names(&format!("{path}.request_headers"), &f.request_headers);
        let response_headers =
            self.header_names(&format!("{path}.response_headers"), &f.response_headers);
        Some(ForwardAuth {
            url: url?,
            timeout: timeout?,
            request_headers: request_headers?,
            response_headers: response_headers?,
        })
    }
}

/// A query parameter or cookie name: no separators or spaces.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || "&=#;,".contains(c))
}

/// A key usable for signatures, with the algorithms it verifies; keys for
/// encryption only, of unsupported curves or with unusable parameters are
/// left out.
fn usable_key(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Jwk> {
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return None;
    }
    use Algorithm::*;
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => vec![EdDSA],
            _ => return None,
        },
        AlgorithmParameters::OctetKey(_) => vec![HS256, HS384, HS512],
    };
    let algorithms = match jwk.common.key_algorithm {
        None => by_type,
        Some(named) => {
            let alg = named.to_string().parse::<Algorithm>().ok()?;
            by_type.contains(&alg).then(|| vec![alg])?
        }
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Jwk {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}
