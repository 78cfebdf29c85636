//! Route choice: which `[[route]]` a handshake belongs to.
//!
//! A [`RouteTable`] is built once per configuration snapshot and then only
//! read, once per handshake, without allocating. The rules are the
//! contract's `[[route]]` keys: a listener filter, a host (exact or
//! `*.suffix`, port ignored, case-insensitive) and a `path_prefix` matched on
//! whole segments. Among the routes that match, an exact host beats a
//! wildcard, which beats no host; then the longest `path_prefix` wins; then
//! file order.

use crate::config::{HostPattern, Route};

/// Every route of one snapshot, kept in the order they must be tried.
///
/// Precedence is fixed when the table is built, so [`RouteTable::find`] is a
/// scan that stops at the first match.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Sorted by precedence: host kind, then prefix length, then file order.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Index into the `routes` slice the table was built from.
    index: usize,
    listener: Option<String>,
    host: HostMatch,
    prefix: String,
}

/// A route's host rule, normalised so that matching is a byte comparison.
#[derive(Debug, Clone)]
enum HostMatch {
    Exact(String),
    /// Always starts with `.`; the host must have at least one byte before it.
    Suffix(String),
    Any,
}

impl RouteTable {
    /// Builds the table for one snapshot; `find` answers with indexes into
    /// `routes`.
    pub fn new(routes: &[Route]) -> RouteTable {
        let mut entries: Vec<Entry> = routes
            .iter()
            .enumerate()
            .map(|(index, route)| Entry {
                index,
                listener: route.listener.clone(),
                host: match &route.host {
                    None => HostMatch::Any,
                    Some(HostPattern::Exact(name)) => HostMatch::Exact(normalise_pattern(name)),
                    Some(HostPattern::Suffix(suffix)) => {
                        let suffix = normalise_pattern(suffix);
                        // Validation stores the leading dot; keep the
                        // "one or more labels" rule even if it ever did not.
                        if suffix.starts_with('.') {
                            HostMatch::Suffix(suffix)
                        } else {
                            HostMatch::Suffix(format!(".{suffix}"))
                        }
                    }
                },
                prefix: route.path_prefix.clone(),
            })
            .collect();
        // Stable sort: equal host kind and prefix length keep file order.
        entries.sort_by(|a, b| {
            host_rank(&a.host)
                .cmp(&host_rank(&b.host))
                .then_with(|| b.prefix.len().cmp(&a.prefix.len()))
        });
        RouteTable { entries }
    }

    /// The index of the route a handshake belongs to, or `None` (the client
    /// gets 404).
    ///
    /// `listener` is the accepting listener's name, `host` the `Host` header
    /// as sent (a port and IPv6 brackets are allowed), `path` the request
    /// target's path without the query. Runs once per handshake and does not
    /// allocate.
    pub fn find(&self, listener: &str, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(request_host);
        // A `?` cannot appear unescaped in a path, so cutting there is always
        // safe and keeps a careless caller from missing every route.
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        self.entries
            .iter()
            .find(|e| {
                e.listener.as_deref().is_none_or(|l| l == listener)
                    && host_matches(&e.host, host)
                    && prefix_matches(&e.prefix, path)
            })
            .map(|e| e.index)
    }
}

/// Lower ranks are tried first: the contract's host precedence.
fn host_rank(host: &HostMatch) -> u8 {
    match host {
        HostMatch::Exact(_) => 0,
        HostMatch::Suffix(_) => 1,
        HostMatch::Any => 2,
    }
}

/// Lower-cases a configured host and drops what `request_host` drops from a
/// request's, so both sides compare in the same form.
fn normalise_pattern(name: &str) -> String {
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// The host part of a `Host` header: without the port, without IPv6
/// brackets and without a trailing root dot (`example.com.` names the same
/// host, as nginx treats it).
fn request_host(raw: &str) -> &str {
    let raw = raw.trim_matches(|c| c == ' ' || c == '\t');
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // `[::1]:8080` or `[::1]`; an unclosed bracket is left whole and
        // simply matches no configured host.
        match rest.split_once(']') {
            Some((inside, _)) => inside,
            None => raw,
        }
    } else {
        match raw.split_once(':') {
            // More than one colon: a bare IPv6 address, which has no port.
            Some((name, port)) if !port.contains(':') => name,
            _ => raw,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

fn host_matches(rule: &HostMatch, host: Option<&str>) -> bool {
    match (rule, host) {
        (HostMatch::Any, _) => true,
        (HostMatch::Exact(_) | HostMatch::Suffix(_), None) => false,
        (HostMatch::Exact(name), Some(host)) => host.eq_ignore_ascii_case(name),
        (HostMatch::Suffix(suffix), Some(host)) => {
            // Bytes, not `str` slicing: a non-ASCII Host must not panic.
            let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
            host.len() > suffix.len()
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
    }
}

/// Whole-segment prefix match: `/chat` matches `/chat`, `/chat/` and
/// `/chat/x` but not `/chatroom`; a prefix ending in `/` (including `/`
/// itself) matches everything below it.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let (prefix, path) = (prefix.as_bytes(), path.as_bytes());
    path.starts_with(prefix)
        && (prefix.ends_with(b"/") || path.len() == prefix.len() || path[prefix.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    fn route(listener: Option<&str>, host: Option<&str>, prefix: &str) -> Route {
        Route {
            listener: listener.map(str::to_string),
            host: host.map(|h| match h.strip_prefix('*') {
                Some(suffix) => HostPattern::Suffix(suffix.to_string()),
                None => HostPattern::Exact(h.to_string()),
            }),
            path_prefix: prefix.to_string(),
            pool: "p".to_string(),
            pool_index: 0,
            allowed_origins: None,
            tags: None,
            limits: Limits::default(),
            auth: None,
        }
    }

    fn table(routes: &[Route]) -> RouteTable {
        RouteTable::new(routes)
    }

    #[test]
    fn listener_none_matches_every_listener() {
        let t = table(&[route(None, None, "/")]);
        assert_eq!(t.find("public", None, "/"), Some(0));
        assert_eq!(t.find("internal", Some("x"), "/a"), Some(0));
    }

    #[test]
    fn listener_named_matches_only_that_listener() {
        let t = table(&[route(Some("internal"), None, "/")]);
        assert_eq!(t.find("internal", None, "/"), Some(0));
        assert_eq!(t.find("public", None, "/"), None);
        assert_eq!(t.find("Internal", None, "/"), None);
    }

    #[test]
    fn exact_host_is_case_insensitive_and_ignores_port() {
        let t = table(&[route(None, Some("chat.example.com"), "/")]);
        assert_eq!(t.find("l", Some("chat.example.com"), "/"), Some(0));
        assert_eq!(t.find("l", Some("Chat.EXAMPLE.com"), "/"), Some(0));
        assert_eq!(t.find("l", Some("chat.example.com:8443"), "/"), Some(0));
        assert_eq!(t.find("l", Some("chat.example.com."), "/"), Some(0));
        assert_eq!(t.find("l", Some("chat.example.org"), "/"), None);
        assert_eq!(t.find("l", Some("x.chat.example.com"), "/"), None);
    }

    #[test]
    fn wildcard_host_needs_at_least_one_label() {
        let t = table(&[route(None, Some("*.example.com"), "/")]);
        assert_eq!(t.find("l", Some("a.example.com"), "/"), Some(0));
        assert_eq!(t.find("l", Some("a.b.EXAMPLE.com:80"), "/"), Some(0));
        assert_eq!(t.find("l", Some("example.com"), "/"), None);
        assert_eq!(t.find("l", Some(".example.com"), "/"), None);
        assert_eq!(t.find("l", Some("badexample.com"), "/"), None);
        assert_eq!(t.find("l", Some("é.example.com"), "/"), Some(0));
        assert_eq!(t.find("l", Some("éé"), "/"), None);
    }

    #[test]
    fn ipv6_hosts_with_and_without_port() {
        let t = table(&[route(None, Some("[::1]"), "/")]);
        assert_eq!(t.find("l", Some("[::1]:8080"), "/"), Some(0));
        assert_eq!(t.find("l", Some("[::1]"), "/"), Some(0));
        assert_eq!(t.find("l", Some("::1"), "/"), Some(0));
        assert_eq!(t.find("l", Some("[::1"), "/"), None);
        assert_eq!(t.find("l", Some("[::2]:8080"), "/"), None);

        let bare = table(&[route(None, Some("fe80::1"), "/")]);
        assert_eq!(bare.find("l", Some("[FE80::1]:443"), "/"), Some(0));
        assert_eq!(bare.find("l", Some("fe80::1"), "/"), Some(0));
    }

    #[test]
    fn ipv4_host_with_port() {
        let t = table(&[route(None, Some("10.0.0.1"), "/")]);
        assert_eq!(t.find("l", Some("10.0.0.1:8080"), "/"), Some(0));
        assert_eq!(t.find("l", Some("10.0.0.1"), "/"), Some(0));
    }

    #[test]
    fn route_without_host_matches_any_host_and_none() {
        let t = table(&[route(None, None, "/")]);
        assert_eq!(t.find("l", Some("anything"), "/"), Some(0));
        assert_eq!(t.find("l", None, "/"), Some(0));
    }

    #[test]
    fn request_without_host_matches_only_hostless_routes() {
        let t = table(&[
            route(None, Some("a.example"), "/"),
            route(None, Some("*.example"), "/"),
        ]);
        assert_eq!(t.find("l", None, "/"), None);
        let t = table(&[route(None, Some("a.example"), "/"), route(None, None, "/")]);
        assert_eq!(t.find("l", None, "/"), Some(1));
    }

    #[test]
    fn empty_host_header_matches_only_hostless_routes() {
        let t = table(&[route(None, Some("*.example"), "/"), route(None, None, "/x")]);
        assert_eq!(t.find("l", Some(""), "/"), None);
        assert_eq!(t.find("l", Some(""), "/x"), Some(1));
    }

    #[test]
    fn path_prefix_matches_whole_segments() {
        let t = table(&[route(None, None, "/chat")]);
        assert_eq!(t.find("l", None, "/chat"), Some(0));
        assert_eq!(t.find("l", None, "/chat/"), Some(0));
        assert_eq!(t.find("l", None, "/chat/x"), Some(0));
        assert_eq!(t.find("l", None, "/chatroom"), None);
        assert_eq!(t.find("l", None, "/cha"), None);
        assert_eq!(t.find("l", None, "/Chat"), None);
        assert_eq!(t.find("l", None, "/"), None);
    }

    #[test]
    fn root_prefix_matches_every_path() {
        let t = table(&[route(None, None, "/")]);
        for path in ["/", "/chat", "/a/b/c", "/chatroom/"] {
            assert_eq!(t.find("l", None, path), Some(0), "{path}");
        }
    }

    #[test]
    fn prefix_with_trailing_slash_matches_below_it() {
        let t = table(&[route(None, None, "/chat/")]);
        assert_eq!(t.find("l", None, "/chat/x"), Some(0));
        assert_eq!(t.find("l", None, "/chat/"), Some(0));
        assert_eq!(t.find("l", None, "/chat"), None);
    }

    #[test]
    fn query_is_not_part_of_the_path() {
        let t = table(&[route(None, None, "/chat")]);
        assert_eq!(t.find("l", None, "/chat?room=1"), Some(0));
        assert_eq!(t.find("l", None, "/chatroom?x=/chat"), None);
    }

    #[test]
    fn exact_host_beats_wildcard_beats_none() {
        let routes = [
            route(None, None, "/chat/rooms"),
            route(None, Some("*.example.com"), "/"),
            route(None, Some("chat.example.com"), "/"),
        ];
        let t = table(&routes);
        assert_eq!(
            t.find("l", Some("chat.example.com"), "/chat/rooms"),
            Some(2)
        );
        assert_eq!(
            t.find("l", Some("news.example.com"), "/chat/rooms"),
            Some(1)
        );
        assert_eq!(t.find("l", Some("example.org"), "/chat/rooms"), Some(0));
        assert_eq!(t.find("l", Some("example.org"), "/news"), None);
    }

    #[test]
    fn longest_prefix_wins_within_a_host_kind() {
        let routes = [
            route(None, None, "/"),
            route(None, None, "/chat"),
            route(None, None, "/chat/admin"),
        ];
        let t = table(&routes);
        assert_eq!(t.find("l", None, "/chat/admin/x"), Some(2));
        assert_eq!(t.find("l", None, "/chat/x"), Some(1));
        assert_eq!(t.find("l", None, "/chatroom"), Some(0));
    }

    #[test]
    fn file_order_breaks_remaining_ties() {
        let routes = [
            route(Some("a"), None, "/x"),
            route(None, None, "/x"),
            route(None, None, "/x"),
        ];
        let t = table(&routes);
        assert_eq!(t.find("a", None, "/x"), Some(0));
        assert_eq!(t.find("b", None, "/x"), Some(1));
    }

    #[test]
    fn no_routes_match_nothing() {
        assert_eq!(table(&[]).find("l", Some("h"), "/"), None);
    }
}
