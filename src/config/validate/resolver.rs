//! `[resolver]`: the DNS servers backend names are resolved with.

use toml::Spanned;

use super::{file, Checker};
use crate::config::Resolver;

/// More tries than this only delay the report of a dead server.
const MAX_ATTEMPTS: i64 = 10;

impl Checker<'_> {
    pub(super) fn resolver(&mut self, resolver: &Spanned<file::Resolver>) -> Option<Resolver> {
        let r = resolver.get_ref();
        let defaults = Resolver::default();
        let nameservers = match &r.nameservers {
            None => Some(Vec::new()),
            Some(list) => {
                let addrs: Vec<Option<_>> = (list.get_ref().iter().enumerate())
                    .map(|(i, ns)| self.socket_addr(&format!("resolver.nameservers[{i}]"), ns))
                    .collect();
                addrs.into_iter().collect()
            }
        };
        let timeout = match &r.timeout {
            None => Some(defaults.timeout),
            Some(v) => self.positive_duration("resolver.timeout", v),
        };
        let attempts = match &r.attempts {
            None => Some(defaults.attempts),
            Some(a) if (1..=MAX_ATTEMPTS).contains(a.get_ref()) => u32::try_from(*a.get_ref()).ok(),
            Some(a) => {
                let message = format!(
                    "attempts {} must be between 1 and {MAX_ATTEMPTS}",
                    a.get_ref()
                );
                self.report("resolver.attempts".to_string(), Some(a.span()), message);
                None
            }
        };
        Some(Resolver {
            nameservers: nameservers?,
            timeout: timeout?,
            attempts: attempts?,
        })
    }
}
