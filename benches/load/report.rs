//! `load report`: turns the JSON lines of a `benches/compare/run.sh` run
//! into the markdown results of docs/benchmarks.md.
//!
//! Each line carries labels set by the script: `scenario`, `target`, `tls`
//! (`ws`/`wss`), `repeat`, and `n` for idle runs. A figure is the median
//! over repeats, shown with its range; the ratio compares wsgate with the
//! better of nginx and HAProxy in the same run, and is checked against the
//! targets of docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::Value;

/// Arguments of `load report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// The JSON lines the benchmark script collected.
    #[arg(long)]
    results: PathBuf,
    /// A markdown file whose section between `<!-- results:begin -->` and
    /// `<!-- results:end -->` is replaced; without it, print only.
    #[arg(long)]
    doc: Option<PathBuf>,
    /// KEY=VALUE facts about the run (date, machine, command), shown above
    /// the tables in the order given (repeatable).
    #[arg(long = "meta", value_parser = super::parse_label)]
    meta: Vec<(String, String)>,
}

const BEGIN: &str = "<!-- results:begin -->";
const END: &str = "<!-- results:end -->";

/// The proxies compared, in column order; `direct` is the baseline.
const TARGETS: [&str; 4] = ["direct", "nginx", "haproxy", "wsgate"];

/// Builds the tables, prints them and writes them into the doc.
pub fn run(args: &ReportArgs) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.results)
        .map_err(|e| format!("{}: {e}", args.results.display()))?;
    let runs: Vec<Run> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(Run::from_json)
        .collect();
    let markdown = render(&runs, &args.meta);
    println!("{markdown}");
    if let Some(doc) = &args.doc {
        let old = std::fs::read_to_string(doc).map_err(|e| format!("{}: {e}", doc.display()))?;
        let (Some(b), Some(e)) = (old.find(BEGIN), old.find(END)) else {
            return Err(format!("{}: no {BEGIN} ... {END} section", doc.display()));
        };
        let new = format!("{}{BEGIN}\n{markdown}\n{}", &old[..b], &old[e..]);
        std::fs::write(doc, new).map_err(|e| format!("{}: {e}", doc.display()))?;
    }
    Ok(())
}

/// One generator run and its labels.
struct Run {
    scenario: String,
    target: String,
    tls: String,
    repeat: String,
    n: Option<f64>,
    json: Value,
}

impl Run {
    fn from_json(json: Value) -> Option<Run> {
        let label = |k: &str| json["labels"][k].as_str().map(str::to_string);
        Some(Run {
            scenario: label("scenario")?,
            target: label("target")?,
            tls: label("tls")?,
            repeat: label("repeat").unwrap_or_default(),
            n: label("n").and_then(|n| n.parse().ok()),
            json,
        })
    }

    fn errors(&self) -> u64 {
        self.json["errors"]["total"].as_u64().unwrap_or(0)
    }

    fn f(&self, path: &[&str]) -> Option<f64> {
        path.iter().try_fold(&self.json, |v, k| v.get(k))?.as_f64()
    }
}

/// Whether a smaller or a larger value is better.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Lower,
    Higher,
}

/// A target from docs/benchmarks.md.
#[derive(Clone, Copy)]
enum Goal {
    /// wsgate ÷ best of nginx and HAProxy at most this.
    RatioAtMost(f64),
    /// wsgate ÷ best of nginx and HAProxy at least this.
    RatioAtLeast(f64),
    /// wsgate ÷ direct at least this.
    DirectAtLeast(f64),
    /// wsgate's own value at most this.
    ValueAtMost(f64),
}

impl Goal {
    fn text(self, unit: &str) -> String {
        match self {
            Goal::RatioAtMost(r) => format!("≤ {r}× best"),
            Goal::RatioAtLeast(r) => format!("≥ {r}× best"),
            Goal::DirectAtLeast(r) => format!("≥ {r}× direct"),
            Goal::ValueAtMost(v) => format!("≤ {v} {unit}"),
        }
    }
}

/// Values of one figure, one per repeat, for the runs of one cell.
type Metric = fn(&[&Run]) -> Vec<f64>;

/// One row of the main table.
struct Figure {
    name: &'static str,
    unit: &'static str,
    scenario: &'static str,
    tls: &'static str,
    metric: Metric,
    better: Better,
    /// Whether the figure means anything without a proxy.
    direct: bool,
    goals: &'static [Goal],
}

fn per_run(runs: &[&Run], f: impl Fn(&Run) -> Option<f64>) -> Vec<f64> {
    runs.iter().filter_map(|r| f(r)).collect()
}

/// CPU of the proxy per message crossing it: every echoed message crosses
/// twice, once each way.
fn cpu_per_crossing(runs: &[&Run]) -> Vec<f64> {
    per_run(runs, |r| {
        let cpu = r.f(&["watched", "cpu_us"])?;
        let echoed = r.f(&["counts", "received"])?;
        (echoed > 0.0).then(|| cpu / (2.0 * echoed))
    })
}

fn p99_scheduled(runs: &[&Run]) -> Vec<f64> {
    per_run(runs, |r| r.f(&["latency_us", "rtt_scheduled", "p99"]))
}

fn p99_sent(runs: &[&Run]) -> Vec<f64> {
    per_run(runs, |r| r.f(&["latency_us", "rtt_sent", "p99"]))
}

fn messages_per_s(runs: &[&Run]) -> Vec<f64> {
    per_run(runs, |r| r.f(&["rates", "received_per_s"]))
}

fn mb_per_s(runs: &[&Run]) -> Vec<f64> {
    per_run(runs, |r| r.f(&["rates", "received_mb_per_s"]))
}

fn cpu_per_handshake(runs: &[&Run]) -> Vec<f64> {
    per_run(runs, |r| {
        let cpu = r.f(&["watched", "cpu_us"])?;
        let cycles = r.f(&["counts", "cycles"])?;
        (cycles > 0.0).then(|| cpu / cycles)
    })
}

fn handshakes_per_s(runs: &[&Run]) -> Vec<f64> {
    per_run(runs, |r| r.f(&["rates", "cycles_per_s"]))
}

/// The idle runs' (connections, RSS KiB) points, one list per repeat.
fn rss_points_by_repeat(runs: &[&Run]) -> Vec<Vec<(f64, f64)>> {
    let mut repeats: Vec<&str> = runs.iter().map(|r| r.repeat.as_str()).collect();
    repeats.sort_unstable();
    repeats.dedup();
    repeats
        .into_iter()
        .map(|rep| {
            runs.iter()
                .filter(|r| r.repeat == rep)
                .filter_map(|r| Some((r.n?, r.f(&["watched", "rss_kib"])?)))
                .collect()
        })
        .collect()
}

/// Least-squares line through (connections, RSS KiB) of one repeat's idle
/// runs: (KiB per connection, KiB at zero).
fn rss_fits(runs: &[&Run]) -> Vec<(f64, f64)> {
    rss_points_by_repeat(runs)
        .iter()
        .filter_map(|points| fit(points))
        .collect()
}

fn fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let k = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / k, sy / k);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

fn rss_per_connection(runs: &[&Run]) -> Vec<f64> {
    rss_fits(runs).into_iter().map(|(slope, _)| slope).collect()
}

/// The whole process per connection at the largest count of each repeat
/// (9,000 in a full run): RSS divided by N, the fixed part of the process
/// included, which is what an operator provisions.
fn rss_whole_per_connection(runs: &[&Run]) -> Vec<f64> {
    rss_points_by_repeat(runs)
        .into_iter()
        .filter_map(|points| {
            points
                .into_iter()
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .filter(|(n, _)| *n > 0.0)
                .map(|(n, rss)| rss / n)
        })
        .collect()
}

/// The fitted line at 100,000 connections, in MiB.
fn rss_at_100k(runs: &[&Run]) -> Vec<f64> {
    rss_fits(runs)
        .into_iter()
        .map(|(slope, base)| (base + slope * 100_000.0) / 1024.0)
        .collect()
}

const FIGURES: &[Figure] = &[
    Figure {
        name: "CPU per message crossing, 64 B at 5,000 msg/s, ws",
        unit: "µs",
        scenario: "rate",
        tls: "ws",
        metric: cpu_per_crossing,
        better: Better::Lower,
        direct: false,
        goals: &[Goal::RatioAtMost(1.0)],
    },
    Figure {
        name: "CPU per message crossing, 64 B at 5,000 msg/s, wss",
        unit: "µs",
        scenario: "rate",
        tls: "wss",
        metric: cpu_per_crossing,
        better: Better::Lower,
        direct: false,
        goals: &[Goal::RatioAtMost(0.8)],
    },
    Figure {
        name: "p99 round trip at 5,000 msg/s (from schedule), ws",
        unit: "µs",
        scenario: "rate",
        tls: "ws",
        metric: p99_scheduled,
        better: Better::Lower,
        direct: true,
        goals: &[Goal::RatioAtMost(1.0)],
    },
    Figure {
        name: "p99 round trip at 5,000 msg/s (from schedule), wss",
        unit: "µs",
        scenario: "rate",
        tls: "wss",
        metric: p99_scheduled,
        better: Better::Lower,
        direct: false,
        goals: &[Goal::RatioAtMost(1.0)],
    },
    Figure {
        name: "p99 round trip at 5,000 msg/s (from actual send), ws",
        unit: "µs",
        scenario: "rate",
        tls: "ws",
        metric: p99_sent,
        better: Better::Lower,
        direct: true,
        goals: &[],
    },
    Figure {
        name: "CPU per message crossing, 64 B throughput, ws",
        unit: "µs",
        scenario: "tput64",
        tls: "ws",
        metric: cpu_per_crossing,
        better: Better::Lower,
        direct: false,
        goals: &[Goal::RatioAtMost(1.0)],
    },
    Figure {
        name: "64 B throughput, ws, echoed messages",
        unit: "msg/s",
        scenario: "tput64",
        tls: "ws",
        metric: messages_per_s,
        better: Better::Higher,
        direct: true,
        goals: &[],
    },
    Figure {
        name: "16 KiB throughput, ws, each way",
        unit: "MB/s",
        scenario: "tput16k",
        tls: "ws",
        metric: mb_per_s,
        better: Better::Higher,
        direct: true,
        goals: &[Goal::RatioAtLeast(1.2), Goal::DirectAtLeast(0.9)],
    },
    Figure {
        name: "RSS per idle connection (slope), ws",
        unit: "KiB",
        scenario: "idle",
        tls: "ws",
        metric: rss_per_connection,
        better: Better::Lower,
        direct: false,
        goals: &[Goal::ValueAtMost(3.5)],
    },
    Figure {
        name: "RSS per idle connection (slope), wss",
        unit: "KiB",
        scenario: "idle",
        tls: "wss",
        metric: rss_per_connection,
        better: Better::Lower,
        direct: false,
        goals: &[Goal::ValueAtMost(12.0)],
    },
    Figure {
        name: "RSS per idle connection (whole process at the largest N ÷ N), ws",
        unit: "KiB",
        scenario: "idle",
        tls: "ws",
        metric: rss_whole_per_connection,
        better: Better::Lower,
        direct: false,
        goals: &[Goal::ValueAtMost(3.5)],
    },
    Figure {
        name: "RSS per idle connection (whole process at the largest N ÷ N), wss",
        unit: "KiB",
        scenario: "idle",
        tls: "wss",
        metric: rss_whole_per_connection,
        better: Better::Lower,
        direct: false,
        goals: &[Goal::ValueAtMost(12.0)],
    },
    Figure {
        name: "RSS projected to 100k idle connections, ws",
        unit: "MiB",
        scenario: "idle",
        tls: "ws",
        metric: rss_at_100k,
        better: Better::Lower,
        direct: false,
        goals: &[],
    },
    Figure {
        name: "RSS projected to 100k idle connections, wss",
        unit: "MiB",
        scenario: "idle",
        tls: "wss",
        metric: rss_at_100k,
        better: Better::Lower,
        direct: false,
        goals: &[],
    },
    Figure {
        name: "CPU per handshake, ws",
        unit: "µs",
        scenario: "handshake",
        tls: "ws",
        metric: cpu_per_handshake,
        better: Better::Lower,
        direct: false,
        goals: &[Goal::RatioAtMost(1.0)],
    },
    Figure {
        name: "CPU per handshake, wss",
        unit: "µs",
        scenario: "handshake",
        tls: "wss",
        metric: cpu_per_handshake,
        better: Better::Lower,
        direct: false,
        goals: &[Goal::RatioAtMost(1.0)],
    },
    Figure {
        name: "Handshake rate, ws",
        unit: "/s",
        scenario: "handshake",
        tls: "ws",
        metric: handshakes_per_s,
        better: Better::Higher,
        direct: true,
        goals: &[],
    },
    Figure {
        name: "Handshake rate, wss",
        unit: "/s",
        scenario: "handshake",
        tls: "wss",
        metric: handshakes_per_s,
        better: Better::Higher,
        direct: false,
        goals: &[],
    },
];

/// The median and range of one cell, and the errors its runs counted.
struct Cell {
    median: f64,
    min: f64,
    max: f64,
    samples: usize,
    errors: u64,
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[mid]),
        _ => Some((values[mid - 1] + values[mid]) / 2.0),
    }
}

fn cell(runs: &[Run], figure: &Figure, target: &str) -> Option<Cell> {
    let mine: Vec<&Run> = runs
        .iter()
        .filter(|r| r.scenario == figure.scenario && r.tls == figure.tls && r.target == target)
        .collect();
    let mut values = (figure.metric)(&mine);
    values.retain(|v| v.is_finite());
    let median = median(&mut values)?;
    Some(Cell {
        median,
        min: values[0],
        max: values[values.len() - 1],
        samples: values.len(),
        errors: mine.iter().map(|r| r.errors()).sum(),
    })
}

/// Three significant digits, without exponent notation.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn show(cell: &Cell) -> String {
    let mut s = num(cell.median);
    if cell.samples > 1 {
        s += &format!(" ({}–{})", num(cell.min), num(cell.max));
    }
    if cell.errors > 0 {
        s += &format!(" ⚠ {} errors", cell.errors);
    }
    s
}

fn render(runs: &[Run], meta: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in meta {
        let _ = writeln!(out, "- **{k}**: {v}");
    }
    let _ = writeln!(
        out,
        "\nMedian over repeats, range in parentheses. \"best\" is the better of \
         nginx and HAProxy in the same run. \"pending\": no run of that proxy \
         produced this figure (it did not start; see its log in the scratch \
         folder). \"not run\": the scenario was left out \
         (`--only`). \"–\": the figure needs a proxy, or direct has no TLS.\n"
    );
    out += "| figure | direct | nginx | HAProxy | wsgate | wsgate ÷ best | target | met |\n";
    out += "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |\n";
    for figure in FIGURES {
        let ran = runs
            .iter()
            .any(|r| r.scenario == figure.scenario && r.tls == figure.tls);
        let mut row = format!("| {} ({}) ", figure.name, figure.unit);
        if !ran {
            row += "| not run | not run | not run | not run | – | – | – |\n";
            out += &row;
            continue;
        }
        let cells: Vec<Option<Cell>> = TARGETS.iter().map(|t| cell(runs, figure, t)).collect();
        for (target, c) in TARGETS.iter().zip(&cells) {
            row += &match (c, *target) {
                (Some(c), _) => format!("| {} ", show(c)),
                (None, "direct") if !figure.direct || figure.tls == "wss" => "| – ".to_string(),
                (None, _) => "| pending ".to_string(),
            };
        }
        let value = |i: usize| cells[i].as_ref().map(|c| c.median);
        let best = match (value(1), value(2)) {
            (Some(a), Some(b)) => Some(match figure.better {
                Better::Lower => a.min(b),
                Better::Higher => a.max(b),
            }),
            (a, b) => a.or(b),
        };
        let ours = value(3);
        let ratio = ours.zip(best).map(|(o, b)| o / b);
        row += &match ratio {
            Some(r) => format!("| {r:.2}× "),
            None => "| – ".to_string(),
        };
        let goals: Vec<String> = figure.goals.iter().map(|g| g.text(figure.unit)).collect();
        row += &format!(
            "| {} ",
            if goals.is_empty() {
                "–".to_string()
            } else {
                goals.join("; ")
            }
        );
        let verdicts: Vec<Option<bool>> = figure
            .goals
            .iter()
            .map(|g| match *g {
                Goal::RatioAtMost(x) => ratio.map(|r| r <= x),
                Goal::RatioAtLeast(x) => ratio.map(|r| r >= x),
                Goal::DirectAtLeast(x) => ours.zip(value(0)).map(|(o, d)| o / d >= x),
                Goal::ValueAtMost(x) => ours.map(|o| o <= x),
            })
            .collect();
        row += &format!(
            "| {} |\n",
            if verdicts.is_empty() {
                "–"
            } else if verdicts.contains(&None) {
                "pending"
            } else if verdicts.iter().all(|v| *v == Some(true)) {
                "yes"
            } else {
                "no"
            }
        );
        out += &row;
    }
    out += &rss_curve(runs);
    out
}

/// RSS against the number of idle connections, per proxy.
fn rss_curve(runs: &[Run]) -> String {
    let mut ns: Vec<f64> = runs
        .iter()
        .filter(|r| r.scenario == "idle")
        .filter_map(|r| r.n)
        .collect();
    ns.sort_by(f64::total_cmp);
    ns.dedup();
    if ns.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nRSS of the proxy process(es) with N idle connections open (MiB, median), \
         and the fitted line's value at 100k:\n\n| proxy | tls |",
    );
    for n in &ns {
        let _ = write!(out, " N = {n} |");
    }
    out += " fitted at 100k |\n| --- | --- |";
    out += &" ---: |".repeat(ns.len() + 1);
    out += "\n";
    for tls in ["ws", "wss"] {
        for target in &TARGETS[1..] {
            let _ = write!(out, "| {target} | {tls} |");
            for n in &ns {
                let mut v: Vec<f64> = runs
                    .iter()
                    .filter(|r| r.scenario == "idle" && r.tls == tls && r.target == *target)
                    .filter(|r| r.n == Some(*n))
                    .filter_map(|r| r.f(&["watched", "rss_kib"]))
                    .collect();
                match median(&mut v) {
                    Some(kib) => {
                        let _ = write!(out, " {} |", num(kib / 1024.0));
                    }
                    None => out += " pending |",
                }
            }
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| r.scenario == "idle" && r.tls == tls && r.target == *target)
                .collect();
            match median(&mut rss_at_100k(&mine)) {
                Some(mib) => {
                    let _ = writeln!(out, " {} |", num(mib));
                }
                None => out += " pending |\n",
            }
        }
    }
    out
}
