//! The sticky affinity key of a request, and the cookie that makes a
//! reconnect find its backend again (contract, "Balancing").

use std::borrow::Cow;
use std::net::SocketAddr;

use http::{HeaderMap, HeaderValue, Uri};

use crate::config::{Sticky, StickySource};

/// The affinity key `sticky` names in this request, if it carries one.
/// Empty values count as missing: they would all hash to one backend.
pub fn key<'a>(
    sticky: &Sticky,
    headers: &'a HeaderMap,
    uri: &'a Uri,
    client: SocketAddr,
) -> Option<Cow<'a, [u8]>> {
    let found: Option<Cow<'a, [u8]>> = match sticky.source {
        StickySource::Cookie => cookie(headers, &sticky.name).map(Cow::Borrowed),
        StickySource::Header => headers
            .get(sticky.name.as_str())
            .map(|v| Cow::Borrowed(v.as_bytes().trim_ascii())),
        StickySource::Query => query_value(uri.query().unwrap_or(""), &sticky.name)
            .map(|v| Cow::Borrowed(v.as_bytes())),
        // The address's bytes, not its text, so IPv4 and IPv4-mapped IPv6
        // spellings of one client do not matter for the text form.
        StickySource::ClientIp => Some(Cow::Owned(match client.ip() {
            std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
            std::net::IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => v4.octets().to_vec(),
                None => ip.octets().to_vec(),
            },
        })),
    };
    found.filter(|k| !k.is_empty())
}

/// The value of cookie `name` in the request's `Cookie` headers
/// (RFC 6265 section 5.4: `name=value` pairs separated by `; `). Push tags
/// read their cookies with it too.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

/// The raw value of query parameter `name` in `query`, not
/// percent-decoded: a sticky key only has to be the same for the same URL,
/// on every instance; push tags decode what they read.
pub(crate) fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// The `Set-Cookie` value that pins a client to the backend whose cookie
/// token is `token` (contract: `Path=/; HttpOnly`, `Secure` over TLS).
pub fn set_cookie(name: &str, token: &str, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={token}; Path=/; HttpOnly{secure}"))
        .expect("validated cookie name and hex token form a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sticky(source: StickySource, name: &str) -> Sticky {
        Sticky {
            source,
            name: name.to_string(),
            issue: true,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const CLIENT: &str = "192.0.2.7:5000";

    #[test]
    fn cookie_is_found_among_others_and_in_any_cookie_header() {
        let s = sticky(StickySource::Cookie, "wsgate_sticky");
        let uri: Uri = "/".parse().unwrap();
        let h = headers(&[
            ("cookie", "a=1"),
            ("cookie", "b=2; wsgate_sticky=abc ; c=3"),
        ]);
        assert_eq!(
            key(&s, &h, &uri, CLIENT.parse().unwrap()).as_deref(),
            Some(&b"abc"[..])
        );
        let h = headers(&[("cookie", "wsgate_stickyx=1")]);
        assert_eq!(key(&s, &h, &uri, CLIENT.parse().unwrap()), None);
    }

    #[test]
    fn header_and_query_keys() {
        let uri: Uri = "/chat?room=9&user=alice&x".parse().unwrap();
        let h = headers(&[("x-user", " bob ")]);
        let client = CLIENT.parse().unwrap();
        let by_header = sticky(StickySource::Header, "x-user");
        assert_eq!(
            key(&by_header, &h, &uri, client).as_deref(),
            Some(&b"bob"[..])
        );
        let by_query = sticky(StickySource::Query, "user");
        assert_eq!(
            key(&by_query, &h, &uri, client).as_deref(),
            Some(&b"alice"[..])
        );
        let empty = sticky(StickySource::Query, "x");
        assert_eq!(
            key(&empty, &h, &uri, client),
            None,
            "an empty key is no key"
        );
    }

    #[test]
    fn client_ip_ignores_port_and_mapped_form() {
        let s = sticky(StickySource::ClientIp, "");
        let uri: Uri = "/".parse().unwrap();
        let h = HeaderMap::new();
        let a = key(&s, &h, &uri, "192.0.2.7:1".parse().unwrap())
            .unwrap()
            .into_owned();
        let b = key(&s, &h, &uri, "[::ffff:192.0.2.7]:2".parse().unwrap())
            .unwrap()
            .into_owned();
        assert_eq!(a, b);
    }

    #[test]
    fn cookie_attributes() {
        assert_eq!(set_cookie("s", "00ff", false), "s=00ff; Path=/; HttpOnly");
        assert_eq!(
            set_cookie("s", "00ff", true),
            "s=00ff; Path=/; HttpOnly; Secure"
        );
    }
}
