//! Header rewriting for a proxied HTTP request and its response: the
//! hop-by-hop fields removed (RFC 9110 section 7.6.1) and the forwarding
//! fields the backend is told about the client.

use std::fmt::Write;
use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop fields named in RFC 9110 section 7.6.1, besides those a
/// `Connection` header lists. `TE` is handled apart: its `trailers` token
/// passes.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop fields of one message, in place: every field the
/// `Connection` header names, then the fixed set, and `TE` unless it holds
/// `trailers` (which then passes alone, the only TE value a proxy may
/// forward: RFC 9110 section 10.1.4).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if headers.contains_key(header::TE) {
        let trailers = crate::rfc6455::has_token(headers, header::TE, "trailers");
        headers.remove(header::TE);
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Adds the forwarding fields, as the upgrade does: the client's address
/// appended to any `X-Forwarded-For` it sent, `X-Forwarded-Proto` (`http`
/// or `https`) and `X-Forwarded-Host` (its `Host`) replacing what it sent.
pub fn add_forwarded(headers: &mut HeaderMap, client: SocketAddr, tls: bool) {
    let mut xff = String::with_capacity(64);
    for prior in headers.get_all("x-forwarded-for") {
        if let Ok(prior) = prior.to_str() {
            xff.push_str(prior);
            xff.push_str(", ");
        }
    }
    let _ = write!(xff, "{}", client.ip());
    let xff = HeaderValue::from_str(&xff).expect("visible ASCII and an IP address");
    headers.insert(HeaderName::from_static("x-forwarded-for"), xff);
    let proto = if tls { "https" } else { "http" };
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    match headers.get(header::HOST).cloned() {
        Some(host) => headers.insert(HeaderName::from_static("x-forwarded-host"), host),
        None => headers.remove("x-forwarded-host"),
    };
}

/// How long a backend lets an idle connection live, from its
/// `Keep-Alive: timeout=N` (RFC 2068 section 19.7.1.1, still sent by many
/// servers), if it says.
pub fn keep_alive_timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    let value = headers.get("keep-alive")?.to_str().ok()?;
    value.split(',').find_map(|param| {
        let (name, secs) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        let secs: u64 = secs.trim().parse().ok()?;
        Some(std::time::Duration::from_secs(secs))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_listed_fields_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret , close"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
            ("trailer", "x-checksum"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["trailer", "x-kept"]);
    }

    #[test]
    fn te_trailers_passes_alone() {
        let mut h = map(&[("te", "gzip, Trailers")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
    }

    #[test]
    fn forwarded_fields_append_and_replace() {
        let mut h = map(&[
            ("host", "app.example"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "forged"),
        ]);
        add_forwarded(&mut h, "192.0.2.7:5000".parse().unwrap(), true);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert_eq!(h["host"], "app.example");
    }

    #[test]
    fn keep_alive_timeout_is_read() {
        let h = map(&[("keep-alive", "max=100, timeout=5")]);
        assert_eq!(
            keep_alive_timeout(&h),
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(keep_alive_timeout(&map(&[("keep-alive", "x")])), None);
    }
}
