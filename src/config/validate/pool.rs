//! `[[pool]]`: balancing, stickiness, health checks and backends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::{file, optional, Checker};
use crate::config::{
    Backend, Balance, HealthCheck, HealthCheckKind, Pool, Sticky, StickySource,
    DEFAULT_MAX_IDLE_PER_BACKEND,
};

/// Health check timing when the table leaves it out (contract, `[[pool]]`).
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The sticky cookie's name when `source = "cookie"` has none.
const DEFAULT_STICKY_COOKIE: &str = "wsgate_sticky";
/// Keeps weighted arithmetic and any per-weight hash ring small.
const MAX_WEIGHT: i64 = 1000;

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
        let backends = self.backends(&path, pool.span(), p);
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
            backends: backends?,
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
    ) -> Option<Vec<Backend>> {
        let example = "backends = [{ addr = \"127.0.0.1:9001\" }]";
        let list = self.require(path, "backends", span, &pool.backends, example)?;
        if list.get_ref().is_empty() {
            let message = format!("a pool needs at least one backend, e.g. `{example}`");
            self.report(format!("{path}.backends"), Some(list.span()), message);
            return None;
        }
        let mut backends = Vec::new();
        let mut first_of: HashMap<SocketAddr, usize> = HashMap::new();
        let mut repeated = false;
        for (k, backend) in list.get_ref().iter().enumerate() {
            let backend_path = format!("{path}.backends[{k}]");
            let checked = self.backend(&backend_path, backend);
            if let (Some(b), Some(addr)) = (&checked, &backend.get_ref().addr) {
                if let Some(first) = first_of.get(&b.addr) {
                    let message = format!(
                        "{} is already {path}.backends[{first}]; list each backend once \
                         (use weight to give it a larger share)",
                        b.addr
                    );
                    self.report(format!("{backend_path}.addr"), Some(addr.span()), message);
                    repeated = true;
                }
                first_of.entry(b.addr).or_insert(k);
            }
            backends.push(checked);
        }
        let backends: Option<Vec<Backend>> = backends.into_iter().collect();
        backends.filter(|_| !repeated)
    }

    pub(super) fn backend(
        &mut self,
        path: &str,
        backend: &Spanned<file::Backend>,
    ) -> Option<Backend> {
        let b = backend.get_ref();
        let example = "addr = \"127.0.0.1:9001\"";
        let addr = self.require(path, "addr", backend.span(), &b.addr, example);
        let addr = addr.and_then(|a| {
            let parsed = self.socket_addr(&format!("{path}.addr"), a)?;
            if parsed.port() != 0 && !parsed.ip().is_unspecified() {
                return Some(parsed);
            }
            let message = format!(
                "{parsed} cannot be connected to; write the backend's own address and port"
            );
            self.report(format!("{path}.addr"), Some(a.span()), message);
            None
        });
        let weight = match &b.weight {
            None => Some(1),
            Some(w) if (1..=MAX_WEIGHT).contains(w.get_ref()) => u32::try_from(*w.get_ref()).ok(),
            Some(w) => {
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
        Some(Backend {
            addr: addr?,
            weight: weight?,
            max_connections: max_connections?,
        })
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
