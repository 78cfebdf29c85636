//! The admin listener's bearer token (`[admin] token`).
//!
//! With a token set, every POST (reload, drain, undrain) needs
//! `Authorization: Bearer <token>`. On an address other than loopback,
//! every endpoint needs it except those that reveal nothing about the
//! running proxy: `/healthz` and `/readyz` (only "alive" and "ready", and
//! Kubernetes probes cannot send secrets), and the dashboard's page,
//! script and style (the same bytes in every build; a browser cannot add
//! a header to a page it navigates to, so the page asks for the token and
//! sends it with its own requests). Validation refuses an admin listener
//! off loopback without a token, so "open to the network without a token"
//! cannot be configured.

use http::{HeaderMap, Method};
use sha1::{Digest, Sha1};

/// Why a request was refused; answered 401 with `WWW-Authenticate: Bearer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `Authorization: Bearer` header where one is needed.
    #[error("this admin endpoint needs Authorization: Bearer <token> ([admin] token)")]
    Missing,
    /// A token that is not the configured one.
    #[error("wrong admin token")]
    Wrong,
    /// Off loopback with no token configured; validation refuses this, so
    /// it is only reached if that ever changed.
    #[error("the admin listener is not on loopback and has no token")]
    Unconfigured,
}

/// Whether a request needs the token, and whether it carries the right one.
/// `token` is the configured secret; `loopback` says whether the admin
/// listener is bound to a loopback address.
pub fn check(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    token: Option<&str>,
    loopback: bool,
) -> Result<(), Denied> {
    let public = *method == Method::GET
        && matches!(
            path,
            "/healthz" | "/readyz" | "/" | "/dashboard.js" | "/dashboard.css"
        );
    let needed = *method == Method::POST || (!loopback && !public);
    if !needed {
        return Ok(());
    }
    let Some(token) = token else {
        return if loopback {
            Ok(())
        } else {
            Err(Denied::Unconfigured)
        };
    };
    let offered = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or(Denied::Missing)?;
    if same_secret(offered.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(Denied::Wrong)
    }
}

/// The token of an `Authorization` value with the `Bearer` scheme (the
/// scheme is case-insensitive, RFC 6750 section 2.1 and RFC 9110 section
/// 11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares two secrets in time that depends on neither's content nor
/// length: both are hashed to fixed-size digests first, and the digests are
/// compared without an early exit.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha1::digest(a), Sha1::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(http::header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn loopback_without_token_is_open() {
        for method in [Method::GET, Method::POST] {
            assert_eq!(
                check(&method, "/reload", &headers(None), None, true),
                Ok(())
            );
        }
    }

    #[test]
    fn with_a_token_posts_need_it_and_gets_on_loopback_do_not() {
        let t = Some("s3cret");
        assert_eq!(
            check(&Method::GET, "/status", &headers(None), t, true),
            Ok(())
        );
        assert_eq!(
            check(&Method::POST, "/reload", &headers(None), t, true),
            Err(Denied::Missing)
        );
        assert_eq!(
            check(
                &Method::POST,
                "/reload",
                &headers(Some("Bearer nope")),
                t,
                true
            ),
            Err(Denied::Wrong)
        );
        assert_eq!(
            check(
                &Method::POST,
                "/reload",
                &headers(Some("bearer  s3cret ")),
                t,
                true
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &Method::POST,
                "/reload",
                &headers(Some("Basic s3cret")),
                t,
                true
            ),
            Err(Denied::Missing)
        );
    }

    #[test]
    fn off_loopback_everything_but_the_probes_needs_the_token() {
        let t = Some("s3cret");
        for path in ["/events", "/status", "/metrics", "/nope"] {
            assert_eq!(
                check(&Method::GET, path, &headers(None), t, false),
                Err(Denied::Missing),
                "{path}"
            );
            assert_eq!(
                check(
                    &Method::GET,
                    path,
                    &headers(Some("Bearer s3cret")),
                    t,
                    false
                ),
                Ok(())
            );
        }
        for path in [
            "/healthz",
            "/readyz",
            "/",
            "/dashboard.js",
            "/dashboard.css",
        ] {
            assert_eq!(check(&Method::GET, path, &headers(None), t, false), Ok(()));
        }
        assert_eq!(
            check(&Method::GET, "/status", &headers(None), None, false),
            Err(Denied::Unconfigured)
        );
    }

    #[test]
    fn secrets_compare_by_content_only() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
