//! Value parsers shared by every table: addresses, sizes, durations, names,
//! and the byte offset to line arithmetic problems are reported with.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use toml::Spanned;

use super::file::{RawDuration, RawSize};
use super::Checker;

/// Longer durations are refused so that `Instant + duration` cannot overflow
/// anywhere in the proxy.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
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

impl Checker<'_> {
    pub(super) fn socket_addr(
        &mut self,
        path: &str,
        value: &Spanned<String>,
    ) -> Option<SocketAddr> {
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

    pub(super) fn bytes(&mut self, path: &str, value: &Spanned<RawSize>) -> Option<u64> {
        let message = match value.get_ref() {
            RawSize::Bytes(n) => match u64::try_from(*n) {
                Ok(n) if n > 0 => return Some(n),
                _ => format!("{n} is not a size; write a number of bytes above 0, e.g. 65536"),
            },
            RawSize::Text(text) => match size_with_unit(text) {
                Some(n) => format!("{text:?} is a string; sizes are whole bytes: {n}"),
                None => format!(
                    "{text:?} is a string; sizes are whole bytes, written without quotes, \
                     e.g. 65536"
                ),
            },
            RawSize::Fraction(f) => {
                format!("{f} is not a whole number; sizes are whole bytes, e.g. 65536")
            }
        };
        self.report(path.to_string(), Some(value.span()), message);
        None
    }

    /// A whole number, zero allowed.
    pub(super) fn count(&mut self, path: &str, value: &Spanned<i64>) -> Option<usize> {
        match usize::try_from(*value.get_ref()) {
            Ok(n) => Some(n),
            Err(_) => {
                let message = format!("{} is negative; write 0 or more", value.get_ref());
                self.report(path.to_string(), Some(value.span()), message);
                None
            }
        }
    }

    pub(super) fn duration(
        &mut self,
        path: &str,
        value: &Spanned<RawDuration>,
    ) -> Option<Duration> {
        let message = match value.get_ref() {
            RawDuration::Bare(n) => {
                format!(
                    "{n} has no unit; durations are strings with a unit: \"{n}s\" (or \"{n}ms\")"
                )
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

    pub(super) fn positive_duration(
        &mut self,
        path: &str,
        value: &Spanned<RawDuration>,
    ) -> Option<Duration> {
        let d = self.duration(path, value)?;
        if d.is_zero() {
            let message = "must be more than zero, e.g. \"10s\"".to_string();
            self.report(path.to_string(), Some(value.span()), message);
            return None;
        }
        Some(d)
    }
}

/// Lower-case letters, digits, '-' and '_' in dot-separated labels of 1 to 63
/// characters, 253 at most in all (RFC 1035 section 2.3.4; '_' is tolerated
/// because real host names carry it).
pub(super) fn is_dns_name(name: &str) -> bool {
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

pub(super) fn is_bracketed_ipv6(host: &str) -> bool {
    let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    inner.is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok())
}

/// The bytes a size written with a unit means: `"64KiB"`, `"64 KB"`, `"1m"`,
/// `"65536"`. K, M and G alone are binary, as in nginx; KB, MB and GB are
/// decimal. Only used to suggest the number to write.
pub(super) fn size_with_unit(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(multiplier)
}
