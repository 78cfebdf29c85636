//! RFC 6455 opening-handshake helpers that both sides of the proxy use: the
//! client's request is checked with them ([`crate::handshake`]), the
//! backend's answer is checked with them ([`crate::upstream`]), and the demo
//! echo backend answers with them ([`crate::echo`]).
//!
//! A leaf: it imports nothing from the crate, so every module may use it
//! without creating an import cycle.

use base64::Engine;
use http::{HeaderMap, HeaderName};
use sha1::{Digest, Sha1};

/// The most header fields either side's HTTP/1.1 head may carry; more are
/// answered like an over-long head, since both are ways of sending too much.
pub const MAX_HEADERS: usize = 100;

/// RFC 6455 section 1.3: the GUID appended to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a key (RFC 6455 section 4.2.2, item 5.4).
pub fn accept_for(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key.trim_ascii());
    sha.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: base64 of exactly 16 bytes
/// (RFC 6455 section 4.1, item 7).
pub fn valid_key(key: &[u8]) -> bool {
    let mut out = [0u8; 18];
    matches!(
        base64::engine::general_purpose::STANDARD.decode_slice(key.trim_ascii(), &mut out),
        Ok(16)
    )
}

/// Whether a comma-list header (all its occurrences) holds `token`,
/// compared case-insensitively (RFC 9110 sections 7.6.1 and 7.8).
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The items of a comma-list header, lower-cased, each cut at its first
/// `;` (extension parameters, RFC 6455 section 9.1).
pub fn list_items(headers: &HeaderMap, name: HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|item| item.split(|&b| b == b';').next())
        .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
        .filter(|t| !t.is_empty())
        .map(|t| t.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn accept_matches_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_for(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn key_must_decode_to_16_bytes() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key(b"dGhlIHNhbXBsZQ=="));
        assert!(!valid_key(b"not base64!"));
        assert!(!valid_key(b""));
    }

    #[test]
    fn tokens_are_a_case_insensitive_comma_list() {
        let mut h = HeaderMap::new();
        h.append(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(has_token(&h, http::header::CONNECTION, "upgrade"));
        assert!(!has_token(&h, http::header::CONNECTION, "close"));
        h.append("upgrade", HeaderValue::from_static("WebSocket"));
        assert!(has_token(&h, http::header::UPGRADE, "websocket"));
    }

    #[test]
    fn list_items_drop_parameters() {
        let mut h = HeaderMap::new();
        h.append(
            "sec-websocket-extensions",
            HeaderValue::from_static("permessage-deflate; client_max_window_bits, X-Foo"),
        );
        assert_eq!(
            list_items(&h, http::header::SEC_WEBSOCKET_EXTENSIONS),
            ["permessage-deflate", "x-foo"]
        );
    }
}
