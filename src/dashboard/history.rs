//! The dashboard's memory: a fixed ring of one point per second for the
//! last five minutes, and the last ten reloads. Both are allocated once
//! and never grow, whatever the traffic.

use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;

use crate::close::{CodeLabel, Initiator};

/// Seconds of history kept: the sparklines and the close-code panel cover
/// the last five minutes.
pub const SECONDS: usize = 300;

/// Distinct keys (close code and initiator, or status) one point keeps;
/// the rest of that second is folded into [`Key::Other`], so that a point
/// stays small whatever statuses backends answer with.
pub const KEYS_PER_POINT: usize = 24;

/// Error lines kept per reload, and characters per line.
const RELOAD_ERRORS: usize = 20;
const RELOAD_ERROR_CHARS: usize = 300;

/// A fixed-capacity ring: pushing onto a full ring drops the oldest entry.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    slots: VecDeque<T>,
    cap: usize,
}

impl<T> Ring<T> {
    /// An empty ring holding at most `cap` entries (at least one).
    pub fn new(cap: usize) -> Ring<T> {
        let cap = cap.max(1);
        Ring {
            slots: VecDeque::with_capacity(cap),
            cap,
        }
    }

    /// Adds `value` as the newest entry.
    pub fn push(&mut self, value: T) {
        if self.slots.len() == self.cap {
            self.slots.pop_front();
        }
        self.slots.push_back(value);
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.slots.iter()
    }

    /// Entries held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The most recent entry.
    pub fn latest(&self) -> Option<&T> {
        self.slots.back()
    }
}

/// What a per-second tally counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// A close code (as the metrics label it) and who started the close.
    Close(CodeLabel, Initiator),
    /// A handshake rejection status.
    Status(u16),
    /// Whatever did not fit in [`KEYS_PER_POINT`].
    Other,
}

/// The dashboard's JSON for a close code's label.
impl CodeLabel {
    /// The number where there is one, else the label.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            CodeLabel::Code(n) => n.into(),
            label => label.as_str().into(),
        }
    }
}

/// Events of one second, sparse: only keys that happened, at most
/// [`KEYS_PER_POINT`] of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally(Vec<(Key, u64)>);

impl Tally {
    /// A tally of `counts`, largest first, the excess folded into
    /// [`Key::Other`].
    pub fn new(counts: impl IntoIterator<Item = (Key, u64)>) -> Tally {
        let mut all: Vec<(Key, u64)> = counts.into_iter().filter(|(_, n)| *n > 0).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        if all.len() > KEYS_PER_POINT {
            let rest: u64 = all[KEYS_PER_POINT - 1..].iter().map(|(_, n)| n).sum();
            all.truncate(KEYS_PER_POINT - 1);
            all.push((Key::Other, rest));
        }
        Tally(all)
    }

    /// The counted keys.
    pub fn iter(&self) -> impl Iterator<Item = &(Key, u64)> {
        self.0.iter()
    }
}

/// The figures of one second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Relayed connections open.
    pub open: u64,
    /// Upgrades (101 sent) per second.
    pub handshakes: f64,
    /// Messages per second, client to backend and backend to client.
    pub messages: [f64; 2],
    /// Bytes per second, the same two ways.
    pub bytes: [f64; 2],
    /// Plain HTTP requests per second, when the proxy counts them.
    pub http_requests: Option<f64>,
    /// Closes and rejections of this second.
    pub events: Tally,
}

/// Sums the tallies of every point in `ring`: the last five minutes by key.
pub fn window_totals(ring: &Ring<Point>) -> BTreeMap<Key, u64> {
    let mut out = BTreeMap::new();
    for point in ring.iter() {
        for (key, n) in point.events.iter() {
            *out.entry(*key).or_insert(0) += n;
        }
    }
    out
}

/// One reload attempt as the dashboard lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reload {
    /// When it ran.
    pub at: SystemTime,
    /// The new version on success.
    pub version: Option<u64>,
    /// Why it was refused, one line per problem (capped).
    pub errors: Vec<String>,
}

impl Reload {
    /// A record of a reload that gave `version`, or failed with `errors`.
    /// Long error lists and lines are cut: the full text is in the log.
    pub fn new(at: SystemTime, result: Result<u64, Vec<String>>) -> Reload {
        match result {
            Ok(version) => Reload {
                at,
                version: Some(version),
                errors: Vec::new(),
            },
            Err(errors) => {
                let total = errors.len();
                let mut kept: Vec<String> = errors
                    .into_iter()
                    .take(RELOAD_ERRORS)
                    .map(|e| match e.char_indices().nth(RELOAD_ERROR_CHARS) {
                        Some((cut, _)) => format!("{}…", &e[..cut]),
                        None => e,
                    })
                    .collect();
                if total > RELOAD_ERRORS {
                    kept.push(format!(
                        "… and {} more (see the log)",
                        total - RELOAD_ERRORS
                    ));
                }
                Reload {
                    at,
                    version: None,
                    errors: kept,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_in_order() {
        let mut ring = Ring::new(3);
        assert!(ring.is_empty());
        for i in 0..5 {
            ring.push(i);
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(ring.latest(), Some(&4));
    }

    #[test]
    fn ring_never_grows_past_its_capacity() {
        let mut ring = Ring::new(SECONDS);
        for i in 0..10 * SECONDS {
            ring.push(i);
            assert!(ring.len() <= SECONDS);
        }
        assert_eq!(ring.iter().next(), Some(&(9 * SECONDS)));
        let zero: Ring<u8> = Ring::new(0);
        assert_eq!(zero.cap, 1);
    }

    #[test]
    fn window_totals_sum_the_last_five_minutes_only() {
        let mut ring = Ring::new(SECONDS);
        let close = Key::Close(CodeLabel::Code(1009), Initiator::Proxy);
        // This one falls out of the window.
        ring.push(Point {
            events: Tally::new([(Key::Close(CodeLabel::Code(1014), Initiator::Backend), 7)]),
            ..Point::default()
        });
        for _ in 0..SECONDS {
            ring.push(Point {
                events: Tally::new([(close, 2), (Key::Status(404), 1)]),
                ..Point::default()
            });
        }
        let totals = window_totals(&ring);
        assert_eq!(totals.get(&close), Some(&(2 * SECONDS as u64)));
        assert_eq!(totals.get(&Key::Status(404)), Some(&(SECONDS as u64)));
        assert_eq!(
            totals.get(&Key::Close(CodeLabel::Code(1014), Initiator::Backend)),
            None
        );
    }

    #[test]
    fn a_tally_keeps_the_largest_keys_and_folds_the_rest() {
        let counts = (0..100u16).map(|i| (Key::Status(400 + i), u64::from(i) + 1));
        let tally = Tally::new(counts);
        assert_eq!(tally.iter().count(), KEYS_PER_POINT);
        let first = tally.iter().next().unwrap();
        assert_eq!(*first, (Key::Status(499), 100));
        let total: u64 = tally.iter().map(|(_, n)| n).sum();
        assert_eq!(total, (1..=100).sum::<u64>());
        assert!(matches!(tally.iter().last(), Some((Key::Other, _))));
        assert_eq!(Tally::new([(Key::Status(503), 0)]), Tally::default());
    }

    #[test]
    fn close_code_labels() {
        assert_eq!(CodeLabel::parse("1009"), CodeLabel::Code(1009));
        assert_eq!(CodeLabel::parse("4xxx"), CodeLabel::Private);
        assert_eq!(CodeLabel::parse("3xxx"), CodeLabel::Registered);
        assert_eq!(CodeLabel::parse("other"), CodeLabel::Other);
        assert_eq!(CodeLabel::Code(1014).to_json(), serde_json::json!(1014));
        assert_eq!(CodeLabel::Private.to_json(), serde_json::json!("4xxx"));
    }

    #[test]
    fn reload_records_are_capped() {
        let errors: Vec<String> = (0..50)
            .map(|i| format!("{i}: {}", "x".repeat(1000)))
            .collect();
        let r = Reload::new(SystemTime::UNIX_EPOCH, Err(errors));
        assert_eq!(r.version, None);
        assert_eq!(r.errors.len(), RELOAD_ERRORS + 1);
        assert!(r.errors[0].chars().count() <= RELOAD_ERROR_CHARS + 1);
        assert!(r.errors.last().unwrap().contains("30 more"));
        let ok = Reload::new(SystemTime::UNIX_EPOCH, Ok(4));
        assert_eq!((ok.version, ok.errors.len()), (Some(4), 0));
    }
}
