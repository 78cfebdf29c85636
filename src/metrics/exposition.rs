//! The two text formats `/metrics` answers in: which one a scraper asked
//! for, and the Prometheus text made from the OpenMetrics text that
//! prometheus-client writes.

/// A text exposition format of `/metrics`, chosen by the scraper's
/// `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// Prometheus text format 0.0.4: what any scraper understands.
    Prometheus,
    /// OpenMetrics 1.0.0 text, for a scraper that asks for it.
    OpenMetrics,
}

impl Exposition {
    /// OpenMetrics when `accept` lists `application/openmetrics-text`
    /// (Prometheus does, ahead of the older format); else Prometheus text.
    pub fn from_accept(accept: Option<&str>) -> Exposition {
        let asks = accept.is_some_and(|a| {
            a.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or("");
                // `q=0` means "not acceptable" (RFC 9110 section 12.4.2).
                let refused = params.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q == 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if asks {
            Exposition::OpenMetrics
        } else {
            Exposition::Prometheus
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// prometheus-client writes OpenMetrics; the Prometheus text format differs
/// in what matters here: a counter's `# HELP` and `# TYPE` name its sample
/// (`x_total`, not the family `x`), there is no `# UNIT` line and no
/// closing `# EOF`.
pub(super) fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match comment {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(&name) {
                    out.push_str("_total");
                }
                if !tail.is_empty() {
                    out.push(' ');
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_is_asked_for_by_its_media_type() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            Exposition::from_accept(Some(prometheus)),
            Exposition::OpenMetrics
        );
        assert_eq!(
            Exposition::from_accept(Some("text/plain")),
            Exposition::Prometheus
        );
        assert_eq!(Exposition::from_accept(Some("*/*")), Exposition::Prometheus);
        assert_eq!(Exposition::from_accept(None), Exposition::Prometheus);
        assert_eq!(
            Exposition::from_accept(Some("application/openmetrics-text; q=0")),
            Exposition::Prometheus
        );
    }

    #[test]
    fn prometheus_text_names_counters_by_their_samples_and_has_no_eof() {
        let om = "# HELP a_things Things.\n# TYPE a_things counter\na_things_total{x=\"1\"} 0\n\
                  # HELP b_now Now.\n# TYPE b_now gauge\n# UNIT b_now seconds\nb_now 2\n# EOF\n";
        let text = openmetrics_to_prometheus(om);
        assert_eq!(
            text,
            "# HELP a_things_total Things.\n# TYPE a_things_total counter\na_things_total{x=\"1\"} 0\n\
             # HELP b_now Now.\n# TYPE b_now gauge\nb_now 2\n"
        );
    }
}
