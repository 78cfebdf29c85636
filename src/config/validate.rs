//! Turns the file types into a validated [`Config`], collecting every problem.
//!
//! TOML syntax errors, unknown keys and values of the wrong type end parsing
//! at the first one: serde cannot go past them. Everything else is checked in
//! full, so one run of `wsgate check` lists every problem with its key path
//! and line. Each check returns `None` only after reporting why, and a
//! `Config` is returned only when nothing was reported.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::InconsistentKeys;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::file::{self, RawDuration};
use super::{
    Admin, Backend, Balance, CertPair, Config, ConfigError, HealthCheck, HealthCheckKind,
    HostPattern, Limits, Listener, Pool, Problem, Route, SniCert, Sticky, StickySource, Tls,
    DEFAULT_MAX_HEADER_BYTES,
};

/// Global timeouts when `[defaults]` leaves them out (contract, `[defaults]`).
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Health check timing when the table leaves it out (contract, `[[pool]]`).
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The sticky cookie's name when `source = "cookie"` has none.
const DEFAULT_STICKY_COOKIE: &str = "wsgate_sticky";
/// Longer durations are refused so that `Instant + duration` cannot overflow
/// anywhere in the proxy.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Keeps weighted arithmetic and any per-weight hash ring small.
const MAX_WEIGHT: i64 = 1000;

/// Parses and validates configuration text. `base` is the folder relative
/// certificate paths are resolved against; `origin` names the text in errors.
pub fn parse(text: &str, base: &Path, origin: &str) -> Result<Config, ConfigError> {
    let file: file::File = toml::from_str(text).map_err(|e| ConfigError::Invalid {
        origin: origin.to_string(),
        problems: vec![syntax_problem(text, &e)],
    })?;
    let mut checker = Checker {
        text,
        base,
        problems: Vec::new(),
    };
    let config = checker.config(&file);
    let mut problems = checker.problems;
    if let (Some(config), true) = (config, problems.is_empty()) {
        return Ok(config);
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    Err(ConfigError::Invalid {
        origin: origin.to_string(),
        problems,
    })
}

fn syntax_problem(text: &str, error: &toml::de::Error) -> Problem {
    let position = error.span().map(|span| line_column(text, span.start));
    Problem {
        key_path: String::new(),
        line: position.map(|(line, _)| line),
        column: position.map(|(_, column)| column),
        message: error.message().to_string(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    // Count characters, not bytes: skip UTF-8 continuation bytes.
    let column = before[line_start..]
        .iter()
        .filter(|&&b| b & 0xC0 != 0x80)
        .count();
    (line, column + 1)
}

struct Checker<'a> {
    text: &'a str,
    base: &'a Path,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(&mut self, key_path: String, span: Option<Range<usize>>, message: String) {
        let line = span.map(|s| line_column(self.text, s.start).0);
        self.problems.push(Problem {
            key_path,
            line,
            column: None,
            message,
        });
    }

    /// A required key; reported at its table's line when missing.
    fn require<'v, T>(
        &mut self,
        table: &str,
        key: &str,
        table_span: Range<usize>,
        value: &'v Option<Spanned<T>>,
        example: &str,
    ) -> Option<&'v Spanned<T>> {
        if value.is_none() {
            let message = format!("`{key}` is required; add it, e.g. `{example}`");
            self.report(format!("{table}.{key}"), Some(table_span), message);
        }
        value.as_ref()
    }

    fn config(&mut self, file: &file::File) -> Option<Config> {
        let admin = optional(&file.admin, |a| self.admin(a));
        let mut limits = Limits::default();
        let mut handshake_timeout = DEFAULT_HANDSHAKE_TIMEOUT;
        let mut drain_timeout = DEFAULT_DRAIN_TIMEOUT;
        if let Some(defaults) = &file.defaults {
            let d = defaults.get_ref();
            self.limits("defaults", &limit_keys_of_defaults(d), &mut limits);
            if let Some(v) = &d.handshake_timeout {
                handshake_timeout = self
                    .positive_duration("defaults.handshake_timeout", v)
                    .unwrap_or(handshake_timeout);
            }
            if let Some(v) = &d.drain_timeout {
                drain_timeout = self
                    .duration("defaults.drain_timeout", v)
                    .unwrap_or(drain_timeout);
            }
        }

        if file.listener.is_empty() {
            let message = "there is no [[listener]]; add one with `name` and `bind`".to_string();
            self.report("listener".to_string(), None, message);
        }
        if file.route.is_empty() {
            let message =
                "there is no [[route]], so every request would be refused; add one with `pool`"
                    .to_string();
            self.report("route".to_string(), None, message);
        }
        let listener_names = self.unique_names("listener", &file.listener, |l| l.name.as_ref());
        let pool_names = self.unique_names("pool", &file.pool, |p| p.name.as_ref());

        let listeners: Vec<Option<Listener>> = (file.listener.iter().enumerate())
            .map(|(i, l)| self.listener(i, l))
            .collect();
        self.address_conflicts(file);
        let mut routes = Vec::new();
        for (i, route) in file.route.iter().enumerate() {
            let route = self.route(i, route, limits, &listener_names, &pool_names);
            let repeated = route.as_ref().and_then(|r| {
                routes.iter().position(|other: &Option<Route>| {
                    other.as_ref().is_some_and(|o| {
                        (&o.listener, &o.host, &o.path_prefix)
                            == (&r.listener, &r.host, &r.path_prefix)
                    })
                })
            });
            if let Some(first) = repeated {
                let message = format!(
                    "route[{first}] already matches the same listener, host and path_prefix, \
                     so this route could never be chosen; change or remove one of them"
                );
                self.report(format!("route[{i}]"), Some(file.route[i].span()), message);
            }
            routes.push(route);
        }
        let pools: Vec<Option<Pool>> = (file.pool.iter().enumerate())
            .map(|(i, p)| self.pool(i, p))
            .collect();

        Some(Config {
            admin: admin?,
            handshake_timeout,
            drain_timeout,
            listeners: listeners.into_iter().collect::<Option<_>>()?,
            routes: routes.into_iter().collect::<Option<_>>()?,
            pools: pools.into_iter().collect::<Option<_>>()?,
        })
    }

    /// Every name written for `kind` (for references), reporting repeats.
    fn unique_names<T>(
        &mut self,
        kind: &str,
        tables: &[Spanned<T>],
        name: impl Fn(&T) -> Option<&Spanned<String>>,
    ) -> Vec<String> {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, table) in tables.iter().enumerate() {
            // A blank name is reported by `name`, not offered as a choice.
            let Some(n) = name(table.get_ref()).filter(|n| !n.get_ref().trim().is_empty()) else {
                continue;
            };
            match first.get(n.get_ref().as_str()) {
                Some(j) => {
                    let message = format!(
                        "{kind}[{j}] is already named {:?}; give each {kind} its own name",
                        n.get_ref()
                    );
                    self.report(format!("{kind}[{i}].name"), Some(n.span()), message);
                }
                None => {
                    first.insert(n.get_ref(), i);
                }
            }
        }
        first.into_keys().map(str::to_string).collect()
    }

    fn name(&mut self, path: &str, value: &Spanned<String>) -> Option<String> {
        let name = value.get_ref();
        if name.trim().is_empty() {
            let message = "must not be empty".to_string();
            self.report(format!("{path}.name"), Some(value.span()), message);
            return None;
        }
        Some(name.clone())
    }

    fn admin(&mut self, admin: &Spanned<file::Admin>) -> Option<Admin> {
        let bind = self.require(
            "admin",
            "bind",
            admin.span(),
            &admin.get_ref().bind,
            "bind = \"127.0.0.1:9900\"",
        )?;
        let bind = self.socket_addr("admin.bind", bind)?;
        Some(Admin { bind, token: None })
    }

    /// Two binds on one port collide when the addresses are equal or one is
    /// the unspecified address of the same family. Port 0 never collides.
    fn address_conflicts(&mut self, file: &file::File) {
        let admin = file.admin.as_ref().and_then(|a| a.get_ref().bind.as_ref());
        let admin = admin.map(|b| ("admin.bind".to_string(), b));
        let listeners = file.listener.iter().enumerate().filter_map(|(i, l)| {
            let bind = l.get_ref().bind.as_ref();
            bind.map(|b| (format!("listener[{i}].bind"), b))
        });
        // Unparsable addresses are reported by `socket_addr`.
        let mut binds: Vec<(String, &Spanned<String>, SocketAddr)> = (admin.into_iter())
            .chain(listeners)
            .filter_map(|(path, value)| Some((path, value, value.get_ref().parse().ok()?)))
            .collect();
        binds.sort_by_key(|(_, value, _)| value.span().start);
        for (j, (path, value, addr)) in binds.iter().enumerate() {
            let earlier = binds[..j].iter().find(|(_, _, a)| {
                let same_family = a.is_ipv4() == addr.is_ipv4();
                let overlap = a.ip() == addr.ip()
                    || (same_family && (a.ip().is_unspecified() || addr.ip().is_unspecified()));
                a.port() == addr.port() && addr.port() != 0 && overlap
            });
            if let Some((other, _, _)) = earlier {
                let message = format!(
                    "{addr} collides with {other}; only one listener can bind an address and port"
                );
                self.report(path.clone(), Some(value.span()), message);
            }
        }
    }

    fn listener(&mut self, i: usize, listener: &Spanned<file::Listener>) -> Option<Listener> {
        let path = format!("listener[{i}]");
        let (span, l) = (listener.span(), listener.get_ref());
        let name = self.require(&path, "name", span.clone(), &l.name, "name = \"public\"");
        let name = name.and_then(|n| self.name(&path, n));
        let bind = self.require(&path, "bind", span, &l.bind, "bind = \"127.0.0.1:8080\"");
        let bind = bind.and_then(|b| self.socket_addr(&format!("{path}.bind"), b));
        let max_header_bytes = match &l.max_header_bytes {
            None => Some(DEFAULT_MAX_HEADER_BYTES),
            Some(v) => self
                .bytes(&format!("{path}.max_header_bytes"), v)
                .and_then(|b| usize::try_from(b).ok()),
        };
        let tls = optional(&l.tls, |t| self.tls(&format!("{path}.tls"), t));
        Some(Listener {
            name: name?,
            bind: bind?,
            max_header_bytes: max_header_bytes?,
            tls: tls?,
        })
    }

    fn tls(&mut self, path: &str, tls: &Spanned<file::Tls>) -> Option<Tls> {
        let t = tls.get_ref();
        let default = self.cert_pair(path, tls.span(), &t.cert, &t.key);
        // Each SNI name may be listed once across all entries of a listener.
        let mut listed: HashMap<String, String> = HashMap::new();
        let mut sni = Vec::new();
        for (j, entry) in t.sni.iter().enumerate() {
            let entry_path = format!("{path}.sni[{j}]");
            let e = entry.get_ref();
            let names = self.server_names(&entry_path, entry.span(), e, &mut listed);
            let pair = self.cert_pair(&entry_path, entry.span(), &e.cert, &e.key);
            sni.push(
                names
                    .zip(pair)
                    .map(|(server_names, pair)| SniCert { server_names, pair }),
            );
        }
        Some(Tls {
            default: default?,
            sni: sni.into_iter().collect::<Option<_>>()?,
        })
    }

    fn server_names(
        &mut self,
        path: &str,
        span: Range<usize>,
        entry: &file::Sni,
        listed: &mut HashMap<String, String>,
    ) -> Option<Vec<String>> {
        let example = "server_names = [\"b.example\"]";
        let names = self.require(path, "server_names", span, &entry.server_names, example)?;
        if names.get_ref().is_empty() {
            let message = format!("lists no name; add at least one, e.g. `{example}`");
            self.report(format!("{path}.server_names"), Some(names.span()), message);
            return None;
        }
        let mut valid = Some(Vec::new());
        for (k, name) in names.get_ref().iter().enumerate() {
            let name_path = format!("{path}.server_names[{k}]");
            let lower = name.get_ref().to_ascii_lowercase();
            let problem = if !is_dns_name(&lower) {
                Some(format!(
                    "{lower:?} is not a DNS name; list exact names such as \"chat.example.com\" \
                     (clients send no wildcards or IP addresses in SNI)"
                ))
            } else if let Some(other) = listed.get(&lower) {
                Some(format!(
                    "{lower:?} is already listed at {other}; list each name once"
                ))
            } else {
                listed.insert(lower.clone(), name_path.clone());
                None
            };
            match problem {
                Some(message) => {
                    self.report(name_path, Some(name.span()), message);
                    valid = None;
                }
                None => valid.iter_mut().for_each(|v| v.push(lower.clone())),
            }
        }
        valid
    }

    /// Reads a certificate chain and its key and checks that they belong
    /// together, so a bad pair is refused here and never reaches a handshake.
    fn cert_pair(
        &mut self,
        path: &str,
        span: Range<usize>,
        cert: &Option<Spanned<String>>,
        key: &Option<Spanned<String>>,
    ) -> Option<CertPair> {
        let cert = self.require(
            path,
            "cert",
            span.clone(),
            cert,
            "cert = \"certs/server.pem\"",
        );
        let key = self.require(path, "key", span, key, "key = \"certs/server.key\"");
        let (cert, key) = (cert?, key?);
        let (cert_file, key_file) = (
            self.base.join(cert.get_ref()),
            self.base.join(key.get_ref()),
        );
        let (cert_path, key_path) = (format!("{path}.cert"), format!("{path}.key"));
        let chain = read_chain(&cert_file)
            .map_err(|m| self.report(cert_path.clone(), Some(cert.span()), m))
            .ok();
        let signing_key = read_key(&key_file)
            .map_err(|m| self.report(key_path.clone(), Some(key.span()), m))
            .ok();
        let certified_key = CertifiedKey::new(chain?, signing_key?);
        match certified_key.keys_match() {
            // Unknown: the key cannot name its public half; rustls's own
            // `from_der` accepts that too.
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                let message = format!(
                    "the key in {} does not match the certificate in {}; \
                     use the key the certificate was issued for",
                    key_file.display(),
                    cert_file.display()
                );
                self.report(key_path, Some(key.span()), message);
                return None;
            }
            Err(e) => {
                let message = format!("cannot use the certificate in {}: {e}", cert_file.display());
                self.report(cert_path, Some(cert.span()), message);
                return None;
            }
        }
        Some(CertPair {
            cert: cert_file,
            key: key_file,
            certified_key: Arc::new(certified_key),
        })
    }

    fn route(
        &mut self,
        i: usize,
        route: &Spanned<file::Route>,
        defaults: Limits,
        listener_names: &[String],
        pool_names: &[String],
    ) -> Option<Route> {
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
        let allowed_origins = optional(&r.allowed_origins, |list| {
            let checked: Vec<Option<String>> = (list.get_ref().iter().enumerate())
                .map(|(k, o)| self.origin(&format!("{path}.allowed_origins[{k}]"), o))
                .collect();
            checked.into_iter().collect()
        });
        let mut limits = defaults;
        self.limits(&path, &limit_keys_of_route(r), &mut limits);
        Some(Route {
            listener: listener?,
            host: host?,
            path_prefix: path_prefix?,
            pool: pool?,
            allowed_origins: allowed_origins?,
            limits,
        })
    }

    /// A reference to a listener or pool by name.
    fn known(
        &mut self,
        kind: &str,
        path: &str,
        value: &Spanned<String>,
        names: &[String],
    ) -> Option<String> {
        let name = value.get_ref();
        if names.contains(name) {
            return Some(name.clone());
        }
        let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
        names.sort_unstable();
        let message = match names.is_empty() {
            true => format!("no {kind} is named {name:?}; add a [[{kind}]] with that name"),
            false => format!(
                "no {kind} is named {name:?}; the {kind}s are: {}",
                names.join(", ")
            ),
        };
        self.report(path.to_string(), Some(value.span()), message);
        None
    }

    fn host(&mut self, path: &str, value: &Spanned<String>) -> Option<HostPattern> {
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
    fn request_path(
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
    fn origin(&mut self, path: &str, value: &Spanned<String>) -> Option<String> {
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
    fn limits(&mut self, table: &str, keys: &LimitKeys<'_>, limits: &mut Limits) {
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
    }

    fn pool(&mut self, i: usize, pool: &Spanned<file::Pool>) -> Option<Pool> {
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
        Some(Pool {
            name: name?,
            balance: balance?,
            sticky: sticky?,
            hash_balance_factor: hash_balance_factor?,
            health_check: health_check?,
            backends: backends?,
        })
    }

    fn sticky(&mut self, path: &str, sticky: &Spanned<file::Sticky>) -> Option<Sticky> {
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
        Some(Sticky { source, name })
    }

    fn hash_balance_factor(
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

    fn health_check(
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

    fn backends(
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

    fn backend(&mut self, path: &str, backend: &Spanned<file::Backend>) -> Option<Backend> {
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

    fn socket_addr(&mut self, path: &str, value: &Spanned<String>) -> Option<SocketAddr> {
        let text = value.get_ref();
        if let Ok(addr) = text.parse() {
            return Some(addr);
        }
        let message = format!(
            "{text:?} is not an IP address and port; write e.g. \"127.0.0.1:8080\" or \
             \"[::1]:8080\" (IPv6 in brackets; host names are not looked up)"
        );
        self.report(path.to_string(), Some(value.span()), message);
        None
    }

    fn bytes(&mut self, path: &str, value: &Spanned<i64>) -> Option<u64> {
        match u64::try_from(*value.get_ref()) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                let message = format!(
                    "{} is not a size; write a number of bytes above 0, e.g. 65536",
                    value.get_ref()
                );
                self.report(path.to_string(), Some(value.span()), message);
                None
            }
        }
    }

    fn duration(&mut self, path: &str, value: &Spanned<RawDuration>) -> Option<Duration> {
        let message = match value.get_ref() {
            RawDuration::Bare(n) => {
                format!("{n} has no unit; write a duration with one, e.g. \"{n}s\" or \"{n}ms\"")
            }
            RawDuration::Text(text) => match humantime::parse_duration(text) {
                Ok(d) if d <= MAX_DURATION => return Some(d),
                Ok(_) => format!("{text:?} is too long; at most 365 days"),
                Err(e) => format!(
                    "cannot read {text:?} as a duration ({e}); write a number and a unit, \
                     e.g. \"250ms\", \"30s\" or \"5m\""
                ),
            },
        };
        self.report(path.to_string(), Some(value.span()), message);
        None
    }

    fn positive_duration(&mut self, path: &str, value: &Spanned<RawDuration>) -> Option<Duration> {
        let d = self.duration(path, value)?;
        if d.is_zero() {
            let message = "must be more than zero, e.g. \"10s\"".to_string();
            self.report(path.to_string(), Some(value.span()), message);
            return None;
        }
        Some(d)
    }
}

/// The route keys `[defaults]` and `[[route]]` share, borrowed from either.
struct LimitKeys<'f> {
    max_message_bytes: Option<&'f Spanned<i64>>,
    max_frame_bytes: Option<&'f Spanned<i64>>,
    idle_timeout: Option<&'f Spanned<RawDuration>>,
    connect_timeout: Option<&'f Spanned<RawDuration>>,
    ping_interval: Option<&'f Spanned<RawDuration>>,
    ping_timeout: Option<&'f Spanned<RawDuration>>,
}

fn limit_keys_of_defaults(d: &file::Defaults) -> LimitKeys<'_> {
    LimitKeys {
        max_message_bytes: d.max_message_bytes.as_ref(),
        max_frame_bytes: d.max_frame_bytes.as_ref(),
        idle_timeout: d.idle_timeout.as_ref(),
        connect_timeout: d.connect_timeout.as_ref(),
        ping_interval: d.ping_interval.as_ref(),
        ping_timeout: d.ping_timeout.as_ref(),
    }
}

fn limit_keys_of_route(r: &file::Route) -> LimitKeys<'_> {
    LimitKeys {
        max_message_bytes: r.max_message_bytes.as_ref(),
        max_frame_bytes: r.max_frame_bytes.as_ref(),
        idle_timeout: r.idle_timeout.as_ref(),
        connect_timeout: r.connect_timeout.as_ref(),
        ping_interval: r.ping_interval.as_ref(),
        ping_timeout: r.ping_timeout.as_ref(),
    }
}

/// Checks an optional key: `Some(None)` when absent, `None` when present
/// and reported.
fn optional<T, U>(value: &Option<T>, check: impl FnOnce(&T) -> Option<U>) -> Option<Option<U>> {
    match value {
        None => Some(None),
        Some(v) => check(v).map(Some),
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

/// Lower-case letters, digits, '-' and '_' in dot-separated labels of 1 to 63
/// characters, 253 at most in all (RFC 1035 section 2.3.4; '_' is tolerated
/// because real host names carry it).
fn is_dns_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    name.len() <= 253 && name.split('.').all(label_ok)
}

fn is_bracketed_ipv6(host: &str) -> bool {
    let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    inner.is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok())
}

/// An RFC 9110 section 5.6.2 token: what a header or cookie name may be.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn read_chain(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_problem(file, e, "certificate"))?;
    if chain.is_empty() {
        return Err(pem_problem(file, pem::Error::NoItemsFound, "certificate"));
    }
    Ok(chain)
}

fn read_key(file: &Path) -> Result<Arc<dyn SigningKey>, String> {
    let der =
        PrivateKeyDer::from_pem_file(file).map_err(|e| pem_problem(file, e, "private key"))?;
    any_supported_type(&der).map_err(|e| {
        format!(
            "the private key in {} cannot be used ({e}); use an RSA, ECDSA (P-256, P-384) \
             or Ed25519 key",
            file.display()
        )
    })
}

fn pem_problem(file: &Path, error: pem::Error, what: &str) -> String {
    let file = file.display();
    match error {
        pem::Error::Io(e) => format!("cannot read {file}: {e}"),
        pem::Error::NoItemsFound => {
            format!("{file} holds no PEM {what}; it needs a \"-----BEGIN ...\" block with one")
        }
        // The remaining variants are all malformed PEM; the enum is
        // non-exhaustive, so a new one lands here too.
        other => format!("{file} is not valid PEM ({other}); export the {what} as PEM again"),
    }
}

#[cfg(test)]
mod tests;
