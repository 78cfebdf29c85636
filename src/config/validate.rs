//! Turns the file types into a validated [`Config`], collecting every problem.
//!
//! Only a TOML syntax error stops the report. `keys` reads the file into the
//! types of `file.rs`, reporting and removing every unknown key and value of
//! the wrong type; the checks here then run on what is left, each table in
//! its own file: `listener` (`[admin]`, `[[listener]]`, TLS), `route`
//! (`[[route]]` and the limits shared with `[defaults]`), `pool` (with
//! `backend_tls` for its `tls`), `resolver`, `push` (`[publish]`,
//! `[cluster]`, a route's `tags`), and `values` (addresses, sizes,
//! durations). So one run of `wsgate check`, a
//! failed reload's log and `POST /reload` all list every problem with its
//! key path and line. Each check returns `None` only after reporting why,
//! and a `Config` is returned only when nothing was reported.
//!
//! # Adding a key
//!
//! 1. `file.rs`: add the field to its table's struct as
//!    `Option<Spanned<T>>`; use `RawSize` for sizes and `RawDuration` for
//!    durations (they keep a wrongly written value for a helpful message).
//!    Nothing else is needed for the key to be known: unknown-key errors
//!    and their "did you mean" hints come from serde's list of fields.
//! 2. `mod.rs`: add the validated field to the table's type, with its doc.
//! 3. The table's file here: check the value with the `values` parsers
//!    (`bytes`, `duration`, `socket_addr`, ...) or `require` it, and report
//!    anything else wrong through `Checker::report` with the key path.
//!    `[defaults]`-overridable route limits go through `LimitKeys` in
//!    `route.rs`.
//! 4. Tests: a case in `tests/<table>.rs` for each problem the key can
//!    have; docs/configuration.md and config.example.toml for the key.

mod admission;
mod auth;
mod backend_tls;
mod keys;
mod listener;
mod pool;
mod push;
mod resolver;
mod route;
mod values;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::file;
use super::{Config, ConfigError, Limits, Listener, Pool, Problem, Resolver, Route};
use route::limit_keys_of_defaults;
use values::line_column;

/// Global timeouts when `[defaults]` leaves them out (contract, `[defaults]`).
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses and validates configuration text. `base` is the folder relative
/// certificate paths are resolved against; `origin` names the text in errors.
pub fn parse(text: &str, base: &Path, origin: &str) -> Result<Config, ConfigError> {
    let read = keys::read(text);
    let mut checker = Checker {
        text,
        base,
        problems: read.problems,
        dropped: read.dropped,
    };
    let config = read.file.and_then(|file| checker.config(&file));
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

/// The state of one validation: the text (for lines), the folder paths in
/// it are relative to, and what has been reported so far.
struct Checker<'a> {
    text: &'a str,
    base: &'a Path,
    problems: Vec<Problem>,
    /// Keys removed while reading because of a reported problem.
    dropped: HashSet<String>,
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
        let key_path = format!("{table}.{key}");
        if value.is_none() && !self.dropped.contains(&key_path) {
            let message = format!("`{key}` is required; add it, e.g. `{example}`");
            self.report(key_path, Some(table_span), message);
        }
        value.as_ref()
    }

    fn config(&mut self, file: &file::File) -> Option<Config> {
        let admin = optional(&file.admin, |a| self.admin(a));
        let publish = optional(&file.publish, |p| self.publish(p));
        let cluster = optional(&file.cluster, |c| self.cluster(c));
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

        if file.listener.is_empty() && !self.dropped.contains("listener") {
            let message = "there is no [[listener]]; add one with `name` and `bind`".to_string();
            self.report("listener".to_string(), None, message);
        }
        if file.route.is_empty() && !self.dropped.contains("route") {
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
            let route = self.route(i, route, limits, &listener_names, (&pool_names, &file.pool));
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
        let resolver = match &file.resolver {
            None => Some(Resolver::default()),
            Some(r) => self.resolver(r),
        };

        Some(Config {
            admin: admin?,
            handshake_timeout,
            drain_timeout,
            listeners: listeners.into_iter().collect::<Option<_>>()?,
            routes: routes.into_iter().collect::<Option<_>>()?,
            pools: pools.into_iter().collect::<Option<_>>()?,
            resolver: resolver?,
            publish: publish?,
            cluster: cluster?,
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
}

/// Checks an optional key: `Some(None)` when absent, `None` when present
/// and reported.
fn optional<T, U>(value: &Option<T>, check: impl FnOnce(&T) -> Option<U>) -> Option<Option<U>> {
    match value {
        None => Some(None),
        Some(v) => check(v).map(Some),
    }
}

#[cfg(test)]
mod tests;
