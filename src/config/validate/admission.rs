//! A listener's admission keys: `per_client`, `max_connections`,
//! `max_pending_handshakes` and `admit`.

use std::time::Duration;

use toml::Spanned;

use super::{file, optional, Checker};
use crate::config::{Admit, Cidr, ListenerAdmission, PerClient, Rate, Rebalance};

/// Counts above this are typing mistakes, not capacity plans.
const MAX_COUNT: i64 = 100_000_000;
/// Rates above this are typing mistakes too.
const MAX_RATE: f64 = 10_000_000.0;
/// `admit.queue` when left out.
pub(super) const DEFAULT_ADMIT_QUEUE: Duration = Duration::from_secs(5);
/// `rebalance.tolerance` when left out.
const DEFAULT_TOLERANCE: f64 = 0.2;
/// `rebalance.max_closes_per_second` when left out.
const DEFAULT_CLOSES_PER_SECOND: f64 = 20.0;

impl Checker<'_> {
    /// The admission keys of the listener at `path`.
    pub(super) fn listener_admission(
        &mut self,
        path: &str,
        l: &file::Listener,
    ) -> Option<ListenerAdmission> {
        let per_client = optional(&l.per_client, |p| {
            self.per_client(&format!("{path}.per_client"), p)
        });
        let max_connections = optional(&l.max_connections, |v| {
            self.limit_count(&format!("{path}.max_connections"), v)
        });
        let max_pending = optional(&l.max_pending_handshakes, |v| {
            self.limit_count(&format!("{path}.max_pending_handshakes"), v)
        });
        let admit = optional(&l.admit, |a| self.admit(&format!("{path}.admit"), a));
        Some(ListenerAdmission {
            per_client: per_client?,
            max_connections: max_connections?,
            max_pending_handshakes: max_pending?,
            admit: admit?,
        })
    }

    fn per_client(&mut self, path: &str, table: &Spanned<file::PerClient>) -> Option<PerClient> {
        let p = table.get_ref();
        let max_connections = optional(&p.max_connections, |v| {
            self.limit_count(&format!("{path}.max_connections"), v)
        });
        let per_second = optional(&p.handshakes_per_second, |v| {
            self.rate(&format!("{path}.handshakes_per_second"), v)
        });
        let burst = optional(&p.burst, |v| self.limit_count(&format!("{path}.burst"), v));
        // With no limit at all, "limits nothing" below says it all.
        let capped = p.max_connections.is_some();
        if let (Some(b), None, true) = (&p.burst, &p.handshakes_per_second, capped) {
            let message = "burst has no effect without handshakes_per_second; add e.g. \
                           `handshakes_per_second = 10`, or remove it"
                .to_string();
            self.report(format!("{path}.burst"), Some(b.span()), message);
        }
        if p.max_connections.is_none() && p.handshakes_per_second.is_none() {
            let message = "limits nothing; add `max_connections`, `handshakes_per_second` \
                           or both, e.g. `per_client = { max_connections = 100 }`"
                .to_string();
            self.report(path.to_string(), Some(table.span()), message);
            return None;
        }
        let exempt = self.ranges(&format!("{path}.exempt"), &p.exempt);
        let (per_second, burst) = (per_second?, burst?);
        Some(PerClient {
            max_connections: max_connections?,
            // One second's worth when the burst is left out.
            rate: per_second.map(|r| Rate {
                per_second: r,
                burst: burst.unwrap_or_else(|| (r.ceil() as u32).max(1)),
            }),
            exempt: exempt?,
        })
    }

    fn admit(&mut self, path: &str, table: &Spanned<file::Admit>) -> Option<Admit> {
        let a = table.get_ref();
        let example = "handshakes_per_second = 500";
        let per_second = self
            .require(
                path,
                "handshakes_per_second",
                table.span(),
                &a.handshakes_per_second,
                example,
            )
            .and_then(|v| self.rate(&format!("{path}.handshakes_per_second"), v));
        let queue = match &a.queue {
            None => Some(DEFAULT_ADMIT_QUEUE),
            Some(v) => self.duration(&format!("{path}.queue"), v),
        };
        Some(Admit {
            per_second: per_second?,
            queue: queue?,
        })
    }

    /// A pool's `rebalance` table.
    pub(super) fn rebalance(
        &mut self,
        path: &str,
        table: &Spanned<file::Rebalance>,
    ) -> Option<Rebalance> {
        let r = table.get_ref();
        let tolerance = match &r.tolerance {
            None => Some(DEFAULT_TOLERANCE),
            Some(v) if v.get_ref().is_finite() && (0.0..=10.0).contains(v.get_ref()) => {
                Some(*v.get_ref())
            }
            Some(v) => {
                let message = format!(
                    "{} must be from 0 to 10 (a fraction over the fair share, e.g. 0.2)",
                    v.get_ref()
                );
                self.report(format!("{path}.tolerance"), Some(v.span()), message);
                None
            }
        };
        let rate = match &r.max_closes_per_second {
            None => Some(DEFAULT_CLOSES_PER_SECOND),
            Some(v) => self.rate(&format!("{path}.max_closes_per_second"), v),
        };
        Some(Rebalance {
            tolerance: tolerance?,
            max_closes_per_second: rate?,
        })
    }

    /// A whole number from 1 to [`MAX_COUNT`].
    pub(super) fn limit_count(&mut self, path: &str, value: &Spanned<i64>) -> Option<u32> {
        let n = *value.get_ref();
        if (1..=MAX_COUNT).contains(&n) {
            return u32::try_from(n).ok();
        }
        let message =
            format!("{n} must be between 1 and {MAX_COUNT}; leave the key out for no limit");
        self.report(path.to_string(), Some(value.span()), message);
        None
    }

    /// A number of events per second, above zero.
    pub(super) fn rate(&mut self, path: &str, value: &Spanned<f64>) -> Option<f64> {
        let r = *value.get_ref();
        if r.is_finite() && r > 0.0 && r <= MAX_RATE {
            return Some(r);
        }
        let message = format!("{r} must be a number of events per second above 0, e.g. 10");
        self.report(path.to_string(), Some(value.span()), message);
        None
    }

    /// A list of address ranges; absent: empty.
    fn ranges(
        &mut self,
        path: &str,
        list: &Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Option<Vec<Cidr>> {
        let Some(list) = list else {
            return Some(Vec::new());
        };
        let checked: Vec<Option<Cidr>> = (list.get_ref().iter().enumerate())
            .map(|(k, v)| {
                let parsed = Cidr::parse(v.get_ref());
                if parsed.is_none() {
                    let message = format!(
                        "{:?} is not an address range; write e.g. \"10.0.0.0/8\", \
                         \"fd00::/8\" or a single address",
                        v.get_ref()
                    );
                    self.report(format!("{path}[{k}]"), Some(v.span()), message);
                }
                parsed
            })
            .collect();
        checked.into_iter().collect()
    }
}
