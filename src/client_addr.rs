//! Who the client is when trusted forwarders stand in front of the proxy
//! (listener `trusted_proxies`): the right-most `X-Forwarded-For` entry
//! that no trusted forwarder wrote.
//!
//! Each forwarder appends the address it got the request from, so reading
//! the list from the right, every entry added by a trusted hop is followed
//! until the first one a trusted hop did not vouch for. Entries to its left
//! were written by the client or by hops nobody vouches for, and are kept
//! only as history (the backend still sees them).

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::config::Cidr;

/// The client of a request that came from `peer` (the TCP peer, or the
/// PROXY protocol source). When `peer` is trusted, the right-most
/// untrusted `X-Forwarded-For` entry, with port 0 since the header carries
/// none; every entry trusted: the left-most one; an unparsable entry ends
/// the walk at the hop to its right. Otherwise `peer` itself.
pub fn resolve(peer: SocketAddr, trusted: &[Cidr], headers: &HeaderMap) -> SocketAddr {
    if !Cidr::any_contains(trusted, peer.ip()) {
        return peer;
    }
    let mut client = peer;
    let entries = (headers.get_all("x-forwarded-for").iter().rev())
        .flat_map(|value| value.as_bytes().rsplit(|&b| b == b','));
    for entry in entries {
        let entry = entry.trim_ascii();
        if entry.is_empty() {
            continue;
        }
        let Some(ip) = parse_entry(entry) else {
            return client;
        };
        client = SocketAddr::new(ip, 0);
        if !Cidr::any_contains(trusted, ip) {
            return client;
        }
    }
    client
}

/// `192.0.2.1`, `2001:db8::1`, or with a port: `192.0.2.1:80`, `[2001:db8::1]:80`.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cidr(addr: &str, prefix: u8) -> Cidr {
        Cidr {
            addr: addr.parse().unwrap(),
            prefix,
        }
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn sa(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_sends() {
        let trusted = [cidr("10.0.0.0", 8)];
        let got = resolve(sa("192.0.2.9:1234"), &trusted, &xff(&["203.0.113.1"]));
        assert_eq!(got, sa("192.0.2.9:1234"));
        assert_eq!(
            resolve(sa("10.0.0.1:1"), &[], &xff(&["203.0.113.1"])),
            sa("10.0.0.1:1")
        );
    }

    #[test]
    fn right_most_untrusted_entry_wins() {
        let trusted = [cidr("10.0.0.0", 8), cidr("fd00::", 8)];
        // A forged left entry, the real client, then two trusted hops.
        let headers = xff(&["6.6.6.6, 203.0.113.7", "10.1.1.1 , fd00::2"]);
        assert_eq!(
            resolve(sa("10.0.0.1:80"), &trusted, &headers),
            sa("203.0.113.7:0")
        );
    }

    #[test]
    fn all_trusted_gives_the_left_most_and_bad_entries_stop_the_walk() {
        let trusted = [cidr("10.0.0.0", 8)];
        let headers = xff(&["10.0.0.3, 10.0.0.2"]);
        assert_eq!(
            resolve(sa("10.0.0.1:80"), &trusted, &headers),
            sa("10.0.0.3:0")
        );
        let headers = xff(&["203.0.113.7, unknown, 10.0.0.2"]);
        assert_eq!(
            resolve(sa("10.0.0.1:80"), &trusted, &headers),
            sa("10.0.0.2:0")
        );
        assert_eq!(
            resolve(sa("10.0.0.1:80"), &trusted, &xff(&[])),
            sa("10.0.0.1:80")
        );
        let headers = xff(&["[2001:db8::1]:443, 10.0.0.2:8080"]);
        assert_eq!(
            resolve(sa("10.0.0.1:80"), &trusted, &headers),
            sa("[2001:db8::1]:0")
        );
    }

    #[test]
    fn mapped_addresses_match_their_ipv4_range() {
        let trusted = [cidr("10.0.0.0", 8)];
        let peer = sa("[::ffff:10.0.0.1]:80");
        assert_eq!(
            resolve(peer, &trusted, &xff(&["203.0.113.7"])),
            sa("203.0.113.7:0")
        );
    }
}
