//! `[[route]]` and the limit keys it shares with `[defaults]`.

use std::time::Duration;

use toml::Spanned;

use super::file::{self, RawDuration, RawSize};
use super::values::{is_bracketed_ipv6, is_dns_name};
use super::{optional, Checker};
use crate::config::{HostPattern, HttpMode, Limits, OnMessageRate, Route};

impl Checker<'_> {
    pub(super) fn route(
        &mut self,
        i: usize,
        route: &Spanned<file::Route>,
        defaults: Limits,
        listener_names: &[String],
        pools: (&[String], &[Spanned<file::Pool>]),
    ) -> Option<Route> {
        let (pool_names, file_pools) = pools;
        let path = format!("route[{i}]");
        let r = route.get_ref();
        let listener = optional(&r.listener, |l| {
            self.known("listener", &format!("{path}.listener"), l, listener_names)
        });
        let host = optional(&r.host, |h| self.host(&format!("{path}.host"), h));
        let path_prefix = match &r.path_prefix {
            None => Some("/".to_string()),
            Some(p) => self.request_path(&format!("{path}.path_prefix"), p, "\"/chat\""),
        };
        let pool = self.require(&path, "pool", route.span(), &r.pool, "pool = \"chat\"");
        let pool = pool.and_then(|p| self.known("pool", &format!("{path}.pool"), p, pool_names));
        // Resolved here so that the running proxy never looks a pool up by
        // name; names are unique when a `Config` is built.
        let pool_index = pool.as_ref().and_then(|name| {
            let named = |p: &Spanned<file::Pool>| {
                p.get_ref()
                    .name
                    .as_ref()
                    .is_some_and(|n| n.get_ref() == name)
            };
            file_pools.iter().position(named)
        });
        let allowed_origins = optional(&r.allowed_origins, |list| {
            let checked: Vec<Option<String>> = (list.get_ref().iter().enumerate())
                .map(|(k, o)| self.origin(&format!("{path}.allowed_origins[{k}]"), o))
                .collect();
            checked.into_iter().collect()
        });
        let tags = optional(&r.tags, |t| self.tags(&format!("{path}.tags"), t));
        let mut limits = defaults;
        self.limits(&path, &limit_keys_of_route(r), &mut limits);
        let auth = optional(&r.auth, |a| self.auth(&format!("{path}.auth"), a));
        Some(Route {
            listener: listener?,
            host: host?,
            path_prefix: path_prefix?,
            pool: pool?,
            pool_index: pool_index?,
            allowed_origins: allowed_origins?,
            tags: tags?,
            limits,
            auth: auth?,
        })
    }

    pub(super) fn host(&mut self, path: &str, value: &Spanned<String>) -> Option<HostPattern> {
        let host = value.get_ref().to_ascii_lowercase();
        if let Some(suffix) = host.strip_prefix("*.") {
            if is_dns_name(suffix) {
                return Some(HostPattern::Suffix(format!(".{suffix}")));
            }
        } else if is_dns_name(&host) || is_bracketed_ipv6(&host) {
            return Some(HostPattern::Exact(host));
        }
        let message = format!(
            "{host:?} is not a host pattern; write an exact name (\"chat.example.com\") \
             or a wildcard for the names below one (\"*.example.com\"), without scheme or port"
        );
        self.report(path.to_string(), Some(value.span()), message);
        None
    }

    /// A path that starts with `/` and can be compared with a request target.
    pub(super) fn request_path(
        &mut self,
        path: &str,
        value: &Spanned<String>,
        example: &str,
    ) -> Option<String> {
        let p = value.get_ref();
        let problem = if !p.starts_with('/') {
            format!("{p:?} must start with \"/\", e.g. {example}")
        } else if p.contains(|c: char| c.is_whitespace() || c.is_control() || c == '#') {
            format!("{p:?} contains a space, control character or '#'; remove it")
        } else {
            return Some(p.clone());
        };
        self.report(path.to_string(), Some(value.span()), problem);
        None
    }

    /// `scheme://host[:port]`, as browsers send it: no path, no wildcard.
    pub(super) fn origin(&mut self, path: &str, value: &Spanned<String>) -> Option<String> {
        let o = value.get_ref();
        let well_formed = o.split_once("://").is_some_and(|(scheme, rest)| {
            let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            let rest_ok = !rest.is_empty()
                && !rest.contains(|c: char| c.is_whitespace() || "/*?#".contains(c));
            scheme_ok && rest_ok
        });
        if well_formed {
            return Some(o.clone());
        }
        let message = format!(
            "{o:?} is not an origin; write scheme, host and optional port with no path or \
             trailing slash, e.g. \"https://chat.example.com\" (leave allowed_origins out to accept any)"
        );
        self.report(path.to_string(), Some(value.span()), message);
        None
    }

    /// Applies the keys `table` sets over `limits`. A value that fails keeps
    /// the inherited one: it was reported, so no `Config` is built from it.
    pub(super) fn limits(&mut self, table: &str, keys: &LimitKeys<'_>, limits: &mut Limits) {
        let key = |k: &str| format!("{table}.{k}");
        if let Some(v) = keys.max_message_bytes {
            limits.max_message_bytes =
                (self.bytes(&key("max_message_bytes"), v)).unwrap_or(limits.max_message_bytes);
        }
        if let Some(v) = keys.max_frame_bytes {
            limits.max_frame_bytes =
                (self.bytes(&key("max_frame_bytes"), v)).unwrap_or(limits.max_frame_bytes);
        }
        // ping_interval = "0s" turns pings off; the other three must be > 0.
        let mut duration =
            |name: &str, value: Option<&Spanned<RawDuration>>, slot: &mut Duration| {
                let Some(value) = value else { return };
                let checked = match name {
                    "ping_interval" => self.duration(&key(name), value),
                    _ => self.positive_duration(&key(name), value),
                };
                *slot = checked.unwrap_or(*slot);
            };
        duration("idle_timeout", keys.idle_timeout, &mut limits.idle_timeout);
        duration(
            "connect_timeout",
            keys.connect_timeout,
            &mut limits.connect_timeout,
        );
        duration(
            "ping_interval",
            keys.ping_interval,
            &mut limits.ping_interval,
        );
        duration("ping_timeout", keys.ping_timeout, &mut limits.ping_timeout);
        duration(
            "response_timeout",
            keys.response_timeout,
            &mut limits.response_timeout,
        );
        if let Some(v) = keys.max_request_body_bytes {
            // 0 is allowed here: no limit.
            limits.max_request_body_bytes = match v.get_ref() {
                RawSize::Bytes(0) => 0,
                _ => self
                    .bytes(&key("max_request_body_bytes"), v)
                    .unwrap_or(limits.max_request_body_bytes),
            };
        }
        if let Some(v) = keys.http {
            match v.get_ref().as_str() {
                "reject" => limits.http = HttpMode::Reject,
                "proxy" => limits.http = HttpMode::Proxy,
                other => {
                    let message =
                        format!("unknown http mode {other:?}; write \"reject\" or \"proxy\"");
                    self.report(key("http"), Some(v.span()), message);
                }
            }
        }
        self.admission_limits(table, keys, limits);
    }

    /// The admission-control keys of a route or `[defaults]`.
    fn admission_limits(&mut self, table: &str, keys: &LimitKeys<'_>, limits: &mut Limits) {
        let key = |k: &str| format!("{table}.{k}");
        if let Some(v) = keys.max_lifetime {
            let checked = self.duration(&key("max_lifetime"), v);
            limits.max_lifetime = checked.unwrap_or(limits.max_lifetime);
        }
        if let Some(v) = keys.max_messages_per_second {
            let checked = self.limit_count(&key("max_messages_per_second"), v);
            limits.max_messages_per_second = checked.or(limits.max_messages_per_second);
        }
        if let Some(v) = keys.message_burst {
            let checked = self.limit_count(&key("message_burst"), v);
            limits.message_burst = checked.or(limits.message_burst);
        }
        if let Some(v) = keys.on_message_rate {
            match v.get_ref().as_str() {
                "slow" => limits.on_message_rate = OnMessageRate::Slow,
                "close" => limits.on_message_rate = OnMessageRate::Close,
                other => {
                    let message = format!("unknown action {other:?}; write \"slow\" or \"close\"");
                    self.report(key("on_message_rate"), Some(v.span()), message);
                }
            }
        }
    }
}

/// The route keys `[defaults]` and `[[route]]` share, borrowed from either.
pub(super) struct LimitKeys<'f> {
    max_message_bytes: Option<&'f Spanned<RawSize>>,
    max_frame_bytes: Option<&'f Spanned<RawSize>>,
    idle_timeout: Option<&'f Spanned<RawDuration>>,
    connect_timeout: Option<&'f Spanned<RawDuration>>,
    ping_interval: Option<&'f Spanned<RawDuration>>,
    ping_timeout: Option<&'f Spanned<RawDuration>>,
    max_lifetime: Option<&'f Spanned<RawDuration>>,
    max_messages_per_second: Option<&'f Spanned<i64>>,
    message_burst: Option<&'f Spanned<i64>>,
    on_message_rate: Option<&'f Spanned<String>>,
    http: Option<&'f Spanned<String>>,
    max_request_body_bytes: Option<&'f Spanned<RawSize>>,
    response_timeout: Option<&'f Spanned<RawDuration>>,
}

pub(super) fn limit_keys_of_defaults(d: &file::Defaults) -> LimitKeys<'_> {
    LimitKeys {
        max_message_bytes: d.max_message_bytes.as_ref(),
        max_frame_bytes: d.max_frame_bytes.as_ref(),
        idle_timeout: d.idle_timeout.as_ref(),
        connect_timeout: d.connect_timeout.as_ref(),
        ping_interval: d.ping_interval.as_ref(),
        ping_timeout: d.ping_timeout.as_ref(),
        max_lifetime: d.max_lifetime.as_ref(),
        max_messages_per_second: d.max_messages_per_second.as_ref(),
        message_burst: d.message_burst.as_ref(),
        on_message_rate: d.on_message_rate.as_ref(),
        http: d.http.as_ref(),
        max_request_body_bytes: d.max_request_body_bytes.as_ref(),
        response_timeout: d.response_timeout.as_ref(),
    }
}

pub(super) fn limit_keys_of_route(r: &file::Route) -> LimitKeys<'_> {
    LimitKeys {
        max_message_bytes: r.max_message_bytes.as_ref(),
        max_frame_bytes: r.max_frame_bytes.as_ref(),
        idle_timeout: r.idle_timeout.as_ref(),
        connect_timeout: r.connect_timeout.as_ref(),
        ping_interval: r.ping_interval.as_ref(),
        ping_timeout: r.ping_timeout.as_ref(),
        max_lifetime: r.max_lifetime.as_ref(),
        max_messages_per_second: r.max_messages_per_second.as_ref(),
        message_burst: r.message_burst.as_ref(),
        on_message_rate: r.on_message_rate.as_ref(),
        http: r.http.as_ref(),
        max_request_body_bytes: r.max_request_body_bytes.as_ref(),
        response_timeout: r.response_timeout.as_ref(),
    }
}
