//! Reads the proxy's own Prometheus text exposition back into numbers.
//!
//! The dashboard samples what `/metrics` shows rather than reaching into
//! the counters: the two can never disagree, and a metric family added
//! later (HTTP requests) appears on the dashboard as soon as it is
//! exported, with no new hook in the data path.

use std::collections::HashMap;

/// One sample line: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The metric name, suffix included (`wsgate_closes_total`).
    pub name: String,
    /// Label pairs in exposition order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Series {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every series of one scrape, by metric name.
#[derive(Debug, Default)]
pub struct Scrape {
    by_name: HashMap<String, Vec<Series>>,
}

impl Scrape {
    /// Parses the text format; lines it cannot read are skipped (the text
    /// comes from this process, so that would be a bug, not an attack).
    pub fn parse(text: &str) -> Scrape {
        let mut by_name: HashMap<String, Vec<Series>> = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some(series) = parse_line(line) {
                by_name.entry(series.name.clone()).or_default().push(series);
            }
        }
        Scrape { by_name }
    }

    /// The series of metric `name` (none when it is not exported).
    pub fn get(&self, name: &str) -> &[Series] {
        self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether metric `name` has at least one series.
    pub fn has(&self, name: &str) -> bool {
        !self.get(name).is_empty()
    }

    /// The sum of metric `name` over the series `keep` accepts.
    pub fn sum(&self, name: &str, keep: impl Fn(&Series) -> bool) -> f64 {
        self.get(name)
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.value)
            .sum()
    }

    /// Sums of metric `name` grouped by `key` (series it maps to `None`
    /// are left out).
    pub fn group<K: std::hash::Hash + Eq>(
        &self,
        name: &str,
        key: impl Fn(&Series) -> Option<K>,
    ) -> HashMap<K, f64> {
        let mut out = HashMap::new();
        for s in self.get(name) {
            if let Some(k) = key(s) {
                *out.entry(k).or_insert(0.0) += s.value;
            }
        }
        out
    }
}

/// Per-second rate between two grouped counter sums: a group absent
/// before started at zero; a counter never decreases, so a negative
/// difference (a family reset) reads as zero.
pub fn rates<K: std::hash::Hash + Eq + Clone>(
    now: &HashMap<K, f64>,
    before: &HashMap<K, f64>,
    seconds: f64,
) -> HashMap<K, f64> {
    now.iter()
        .map(|(k, v)| {
            let delta = (v - before.get(k).copied().unwrap_or(0.0)).max(0.0);
            (k.clone(), if seconds > 0.0 { delta / seconds } else { 0.0 })
        })
        .collect()
}

fn parse_line(line: &str) -> Option<Series> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    // A timestamp may follow the value; only the value matters here.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Series {
        name,
        labels,
        value,
    })
}

/// Parses `a="x",b="y"}` and returns the pairs and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((out, after));
        }
        let eq = s.find('=')?;
        let name = s[..eq].trim().to_string();
        let mut chars = s[eq + 1..].strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let consumed = loop {
            match chars.next()? {
                (i, '"') => break i + 1,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        s = &s[eq + 2 + consumed..];
        out.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_labels_and_values() {
        let text = "# HELP x y\n# TYPE wsgate_closes counter\n\
            wsgate_closes_total{code=\"1009\",initiator=\"proxy\",pool=\"p\",backend=\"127.0.0.1:1\"} 3\n\
            wsgate_config_version 7\n\
            wsgate_x{a=\"q\\\"uo,te}\",b=\"back\\\\slash\\n\"} 1.5 1700000000\n\
            # EOF\n";
        let scrape = Scrape::parse(text);
        let closes = scrape.get("wsgate_closes_total");
        assert_eq!(closes.len(), 1);
        assert_eq!(closes[0].label("code"), Some("1009"));
        assert_eq!(closes[0].label("backend"), Some("127.0.0.1:1"));
        assert_eq!(closes[0].value, 3.0);
        assert_eq!(scrape.sum("wsgate_config_version", |_| true), 7.0);
        let x = &scrape.get("wsgate_x")[0];
        assert_eq!(x.label("a"), Some("q\"uo,te}"));
        assert_eq!(x.label("b"), Some("back\\slash\n"));
        assert_eq!(x.value, 1.5);
        assert!(!scrape.has("wsgate_http_requests_total"));
    }

    #[test]
    fn groups_and_rates() {
        let before = Scrape::parse("m_total{k=\"a\"} 10\nm_total{k=\"b\"} 5\n");
        let now = Scrape::parse("m_total{k=\"a\"} 14\nm_total{k=\"b\"} 1\nm_total{k=\"c\"} 2\n");
        let key = |s: &Series| s.label("k").map(str::to_string);
        let r = rates(
            &now.group("m_total", key),
            &before.group("m_total", key),
            2.0,
        );
        assert_eq!(r["a"], 2.0);
        assert_eq!(r["b"], 0.0);
        assert_eq!(r["c"], 1.0);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let scrape = Scrape::parse("x{a=\"unterminated 1\n{\n y 2\nz notanumber\nok 1\n");
        assert_eq!(scrape.sum("ok", |_| true), 1.0);
        assert!(!scrape.has("x"));
    }
}
