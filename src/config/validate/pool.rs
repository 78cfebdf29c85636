//! `[[pool]]`: balancing, stickiness, health checks and backends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::values::is_dns_name;
use super::{file, optional, Checker};
use crate::config::{
    Backend, BackendEntry, Balance, HealthCheck, HealthCheckKind, Pool, ProxyVersion, Sticky,
    StickySource, Target, DEFAULT_MAX_IDLE_PER_BACKEND,
};

/// Health check timing when the table leaves it out (contract, `[[pool]]`).
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The sticky cookie's name when `source = "cookie"` has none.
const DEFAULT_STICKY_COOKIE: &str = "wsgate_sticky";
/// Keeps weighted arithmetic small: weights multiply connection counts
/// and rendezvous scores.
const MAX_WEIGHT: i64 = 1000;
/// How often backend names are resolved when the pool does not say.
const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// Resolving more often than this only loads the DNS servers.
const MIN_RESOLVE_INTERVAL: Duration = Duration::from_secs(1);

impl Checker<'_> {
    pub(super) fn pool(&mut self, i: usize, pool: &Spanned<file::Pool>) -> Option<Pool> {
        let path = format!("pool[{i}]");
        let p = pool.get_ref();
        let name = self.require(&path, "name", pool.span(), &p.name, "name = \"chat\"");
        let name = name.and_then(|n| self.name(&path, n));
        let balance = match &p.balance {
            None => Some(Balance::LeastConnections),
            Some(b) => match b.get_ref().as_str() {
                "least_connections" => Some(Balance::LeastConnections),
                "sticky" => Some(Balance::Sticky),
                other => {
                    let message = format!(
                        "unknown balance {other:?}; write \"least_connections\" or \"sticky\""
                    );
                    self.report(format!("{path}.balance"), Some(b.span()), message);
                    None
                }
            },
        };
        let sticky = match (balance, &p.sticky) {
            (Some(Balance::Sticky), None) => {
                let message = "balance = \"sticky\" needs a `sticky` table saying where the key \
                               comes from, e.g. `sticky = { source = \"cookie\" }`";
                let span = p.balance.as_ref().map(Spanned::span);
                self.report(format!("{path}.balance"), span, message.to_string());
                None
            }
            (Some(Balance::LeastConnections), Some(s)) => {
                let message = "a `sticky` table needs balance = \"sticky\"; set that, or remove \
                               the table";
                self.report(
                    format!("{path}.sticky"),
                    Some(s.span()),
                    message.to_string(),
                );
                None
            }
            (_, Some(s)) => self.sticky(&format!("{path}.sticky"), s).map(Some),
            (_, None) => Some(None),
        };
        let hash_balance_factor = optional(&p.hash_balance_factor, |f| {
            self.hash_balance_factor(&path, f, balance)
        });
        let health_check = optional(&p.health_check, |h| {
            self.health_check(&format!("{path}.health_check"), h)
        });
        let entries = self.backends(&path, pool.span(), p);
        let backends = entries.as_deref().map(fixed_backends);
        let resolve_interval = match &p.resolve_interval {
            None => Some(DEFAULT_RESOLVE_INTERVAL),
            Some(v) => self
                .duration(&format!("{path}.resolve_interval"), v)
                .and_then(|d| self.at_least_a_second(&format!("{path}.resolve_interval"), v, d)),
        };
        let tls = optional(&p.tls, |t| self.backend_tls(&path, t)).map(Option::flatten);
        if let (Some(Some(t)), Some(backends), Some(written)) = (&tls, &backends, &p.tls) {
            if let (None, Some(b)) = (&t.server_name, backends.first()) {
                let message = format!(
                    "backend {} is an IP address, so there is no name to send as SNI and to \
                     verify its certificate for; add `server_name`, e.g. \
                     `tls = {{ server_name = \"chat.internal\" }}`",
                    b.addr
                );
                self.report(format!("{path}.tls"), Some(written.span()), message);
            }
        }
        let send_proxy_protocol = optional(&p.send_proxy_protocol, |v| {
            let version = match v.get_ref().as_str() {
                "v1" => ProxyVersion::V1,
                "v2" => ProxyVersion::V2,
                other => {
                    let message =
                        format!("unknown PROXY protocol version {other:?}; write \"v1\" or \"v2\"");
                    let key = format!("{path}.send_proxy_protocol");
                    self.report(key, Some(v.span()), message);
                    return None;
                }
            };
            Some(version)
        });
        let slow_start = match &p.slow_start {
            None => Some(Duration::ZERO),
            Some(v) => self.duration(&format!("{path}.slow_start"), v),
        };
        let rebalance = optional(&p.rebalance, |r| {
            self.rebalance(&format!("{path}.rebalance"), r)
        });
        let max_idle_per_backend = match &p.max_idle_per_backend {
            None => Some(DEFAULT_MAX_IDLE_PER_BACKEND),
            Some(v) => self.count(&format!("{path}.max_idle_per_backend"), v),
        };
        Some(Pool {
            name: name?,
            balance: balance?,
            sticky: sticky?,
            hash_balance_factor: hash_balance_factor?,
            health_check: health_check?,
            entries: entries?,
            backends: backends?,
            unresolved: Vec::new(),
            resolve_interval: resolve_interval?,
            tls: tls?,
            send_proxy_protocol: send_proxy_protocol?,
            slow_start: slow_start?,
            rebalance: rebalance?,
            max_idle_per_backend: max_idle_per_backend?,
        })
    }

    pub(super) fn sticky(&mut self, path: &str, sticky: &Spanned<file::Sticky>) -> Option<Sticky> {
        let s = sticky.get_ref();
        let example = "source = \"cookie\"";
        let source = self.require(path, "source", sticky.span(), &s.source, example)?;
        let source = match source.get_ref().as_str() {
            "cookie" => StickySource::Cookie,
            "header" => StickySource::Header,
            "query" => StickySource::Query,
            "client_ip" => StickySource::ClientIp,
            other => {
                let message = format!(
                    "unknown source {other:?}; write \"cookie\", \"header\", \"query\" or \"client_ip\""
                );
                self.report(format!("{path}.source"), Some(source.span()), message);
                return None;
            }
        };
        let name_path = format!("{path}.name");
        let name = match (source, &s.name) {
            (StickySource::Cookie, None) => DEFAULT_STICKY_COOKIE.to_string(),
            (StickySource::ClientIp, None) => String::new(),
            (StickySource::ClientIp, Some(n)) => {
                let message = "source = \"client_ip\" takes no name; remove it".to_string();
                self.report(name_path, Some(n.span()), message);
                return None;
            }
            (StickySource::Header | StickySource::Query, None) => {
                let message = format!(
                    "source = {:?} needs the name to read the key from, e.g. `name = \"user\"`",
                    source_name(source)
                );
                self.report(name_path, Some(sticky.span()), message);
                return None;
            }
            (StickySource::Cookie | StickySource::Header | StickySource::Query, Some(n)) => {
                let name = n.get_ref();
                // Cookie and header names are RFC 9110 tokens; a query
                // parameter name only has to survive `&`/`=` splitting.
                let valid = match source {
                    StickySource::Query => {
                        !name.is_empty()
                            && !name.contains(|c: char| c.is_whitespace() || "&=#".contains(c))
                    }
                    _ => is_token(name),
                };
                if !valid {
                    let message = format!(
                        "{name:?} is not a valid {} name; use letters, digits and '-' or '_'",
                        source_name(source)
                    );
                    self.report(name_path, Some(n.span()), message);
                    return None;
                }
                // Header names are case-insensitive; store them lower-case.
                match source {
                    StickySource::Header => name.to_ascii_lowercase(),
                    _ => name.clone(),
                }
            }
        };
        let issue = match (source, &s.issue) {
            (_, None) => true,
            (StickySource::Cookie, Some(issue)) => *issue.get_ref(),
            (_, Some(issue)) => {
                let message = "only source = \"cookie\" takes issue; remove it".to_string();
                self.report(format!("{path}.issue"), Some(issue.span()), message);
                return None;
            }
        };
        Some(Sticky {
            source,
            name,
            issue,
        })
    }

    pub(super) fn hash_balance_factor(
        &mut self,
        path: &str,
        factor: &Spanned<f64>,
        balance: Option<Balance>,
    ) -> Option<f64> {
        let f = *factor.get_ref();
        let message = if balance == Some(Balance::LeastConnections) {
            "only sticky pools use hash_balance_factor; remove it, or set balance = \"sticky\""
                .to_string()
        } else if !(f.is_finite() && f > 1.0) {
            format!(
                "{f} must be above 1.0, e.g. 1.25 (no backend takes more than 1.25 times the \
                 average load); leave it out to turn bounded load off"
            )
        } else {
            return Some(f);
        };
        self.report(
            format!("{path}.hash_balance_factor"),
            Some(factor.span()),
            message,
        );
        None
    }

    pub(super) fn health_check(
        &mut self,
        path: &str,
        check: &Spanned<file::HealthCheck>,
    ) -> Option<HealthCheck> {
        let h = check.get_ref();
        let kind = self.require(path, "kind", check.span(), &h.kind, "kind = \"tcp\"");
        let interval = match &h.interval {
            None => Some(DEFAULT_CHECK_INTERVAL),
            Some(v) => self.positive_duration(&format!("{path}.interval"), v),
        };
        let timeout = match &h.timeout {
            None => Some(DEFAULT_CHECK_TIMEOUT),
            Some(v) => self.positive_duration(&format!("{path}.timeout"), v),
        };
        let path_key = format!("{path}.path");
        let kind = match (kind.map(|k| (k, k.get_ref().as_str())), &h.path) {
            (None, _) => None,
            (Some((_, "tcp")), None) => Some(HealthCheckKind::Tcp),
            (Some((_, "tcp")), Some(p)) => {
                let message = "a tcp check sends no request; remove `path`, or set \
                               kind = \"websocket\"";
                self.report(path_key, Some(p.span()), message.to_string());
                None
            }
            (Some((_, "websocket")), None) => {
                let message = "kind = \"websocket\" needs the path to upgrade on, e.g. \
                               `path = \"/health\"`";
                self.report(path_key, Some(check.span()), message.to_string());
                None
            }
            (Some((_, "websocket")), Some(p)) => self
                .request_path(&path_key, p, "\"/health\"")
                .map(|path| HealthCheckKind::WebSocket { path }),
            (Some((k, other)), _) => {
                let message = format!("unknown kind {other:?}; write \"tcp\" or \"websocket\"");
                self.report(format!("{path}.kind"), Some(k.span()), message);
                None
            }
        };
        Some(HealthCheck {
            kind: kind?,
            interval: interval?,
            timeout: timeout?,
        })
    }

    pub(super) fn backends(
        &mut self,
        path: &str,
        span: Range<usize>,
        pool: &file::Pool,
    ) -> Option<Vec<BackendEntry>> {
        let example = "backends = [{ addr = \"127.0.0.1:9001\" }]";
        let list = self.require(path, "backends", span, &pool.backends, example)?;
        if list.get_ref().is_empty() {
            let message = format!("a pool needs at least one backend, e.g. `{example}`");
            self.report(format!("{path}.backends"), Some(list.span()), message);
            return None;
        }
        let mut entries = Vec::new();
        let mut first_of: HashMap<Target, usize> = HashMap::new();
        let mut repeated = false;
        for (k, backend) in list.get_ref().iter().enumerate() {
            let backend_path = format!("{path}.backends[{k}]");
            let checked = self.backend(&backend_path, backend);
            if let Some(b) = &checked {
                if let Some(first) = first_of.get(&b.target) {
                    let b_ref = backend.get_ref();
                    let (key, at) = match &b_ref.srv {
                        Some(srv) => ("srv", srv.span()),
                        None => (
                            "addr",
                            b_ref.addr.as_ref().map_or(backend.span(), Spanned::span),
                        ),
                    };
                    let message = format!(
                        "{} is already {path}.backends[{first}]; list each backend once \
                         (use weight to give it a larger share)",
                        b.target
                    );
                    self.report(format!("{backend_path}.{key}"), Some(at), message);
                    repeated = true;
                }
                first_of.entry(b.target.clone()).or_insert(k);
            }
            entries.push(checked);
        }
        let entries: Option<Vec<BackendEntry>> = entries.into_iter().collect();
        entries.filter(|_| !repeated)
    }

    pub(super) fn backend(
        &mut self,
        path: &str,
        backend: &Spanned<file::Backend>,
    ) -> Option<BackendEntry> {
        let b = backend.get_ref();
        let target = match (&b.addr, &b.srv) {
            (Some(a), None) => self.backend_addr(&format!("{path}.addr"), a),
            (None, Some(srv)) => self.srv_name(&format!("{path}.srv"), srv),
            (Some(_), Some(srv)) => {
                let message = "an entry has either `addr` or `srv`, not both; split it in two \
                               entries"
                    .to_string();
                self.report(format!("{path}.srv"), Some(srv.span()), message);
                None
            }
            (None, None) => {
                let example = "addr = \"127.0.0.1:9001\"";
                let key_path = format!("{path}.addr");
                if !self.dropped.contains(&key_path)
                    && !self.dropped.contains(&format!("{path}.srv"))
                {
                    let message = format!(
                        "`addr` is required (or `srv`); add it, e.g. `{example}`, \
                         `addr = \"chat.internal:9000\"` or `srv = \"_ws._tcp.chat.internal\"`"
                    );
                    self.report(key_path, Some(backend.span()), message);
                }
                None
            }
        };
        let weight = match (&b.weight, &b.srv) {
            (None, _) => Some(1),
            (Some(w), Some(_)) => {
                let message = "SRV records carry their own weights; remove `weight`".to_string();
                self.report(format!("{path}.weight"), Some(w.span()), message);
                None
            }
            (Some(w), None) if (1..=MAX_WEIGHT).contains(w.get_ref()) => {
                u32::try_from(*w.get_ref()).ok()
            }
            (Some(w), None) => {
                let message = format!(
                    "weight {} must be between 1 and {MAX_WEIGHT}; to stop sending to a \
                     backend, remove it",
                    w.get_ref()
                );
                self.report(format!("{path}.weight"), Some(w.span()), message);
                None
            }
        };
        let max_connections = match &b.max_connections {
            None => Some(None),
            Some(m) => match u32::try_from(*m.get_ref()) {
                Ok(cap) if cap > 0 => Some(Some(cap)),
                _ => {
                    let message = format!(
                        "max_connections {} must be between 1 and {}; leave it out for no cap",
                        m.get_ref(),
                        u32::MAX
                    );
                    self.report(format!("{path}.max_connections"), Some(m.span()), message);
                    None
                }
            },
        };
        Some(BackendEntry {
            target: target?,
            weight: weight?,
            max_connections: max_connections?,
        })
    }

    /// `ip:port` (IPv6 in brackets) or `name:port`.
    fn backend_addr(&mut self, path: &str, value: &Spanned<String>) -> Option<Target> {
        let text = value.get_ref();
        let problem = if let Ok(addr) = text.parse::<SocketAddr>() {
            if addr.port() != 0 && !addr.ip().is_unspecified() {
                return Some(Target::Addr(addr));
            }
            format!("{addr} cannot be connected to; write the backend's own address and port")
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) if is_dns_name(&host.to_ascii_lowercase()) => {
                    match port.parse::<u16>() {
                        Ok(port) if port != 0 => {
                            let host = host.to_ascii_lowercase();
                            return Some(Target::Name { host, port });
                        }
                        _ => format!(
                            "{port:?} is not a port; write a number from 1 to 65535, e.g. \
                             \"{host}:9000\""
                        ),
                    }
                }
                _ => format!(
                    "{text:?} is not an address and port; write e.g. \"10.0.0.1:9000\", \
                     \"[::1]:9000\" (IPv6 in brackets) or \"chat.internal:9000\" (a DNS name, \
                     resolved every resolve_interval)"
                ),
            }
        };
        self.report(path.to_string(), Some(value.span()), problem);
        None
    }

    /// An SRV record name such as `_ws._tcp.chat.internal`.
    fn srv_name(&mut self, path: &str, value: &Spanned<String>) -> Option<Target> {
        let name = value.get_ref().trim_end_matches('.').to_ascii_lowercase();
        if is_dns_name(&name) && name.contains('.') {
            return Some(Target::Srv(name));
        }
        let message = format!(
            "{:?} is not an SRV record name; write e.g. \"_ws._tcp.chat.internal\"",
            value.get_ref()
        );
        self.report(path.to_string(), Some(value.span()), message);
        None
    }
}

/// The backends written as addresses: what a pool has before any name is
/// resolved.
fn fixed_backends(entries: &[BackendEntry]) -> Vec<Backend> {
    entries
        .iter()
        .filter_map(|e| match e.target {
            Target::Addr(addr) => Some(Backend {
                addr,
                weight: e.weight,
                max_connections: e.max_connections,
                name: None,
            }),
            Target::Name { .. } | Target::Srv(_) => None,
        })
        .collect()
}

impl Checker<'_> {
    fn at_least_a_second(
        &mut self,
        path: &str,
        value: &Spanned<file::RawDuration>,
        d: Duration,
    ) -> Option<Duration> {
        if d >= MIN_RESOLVE_INTERVAL {
            return Some(d);
        }
        let message = format!(
            "{d:?} is too often; resolve_interval must be at least {MIN_RESOLVE_INTERVAL:?}"
        );
        self.report(path.to_string(), Some(value.span()), message);
        None
    }
}

fn source_name(source: StickySource) -> &'static str {
    match source {
        StickySource::Cookie => "cookie",
        StickySource::Header => "header",
        StickySource::Query => "query",
        StickySource::ClientIp => "client_ip",
    }
}

/// An RFC 9110 section 5.6.2 token: what a header or cookie name may be.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
