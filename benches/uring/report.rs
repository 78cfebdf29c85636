//! The table of benches/uring/compare.sh: the load generator's JSON lines
//! and the `strace -c` summaries turned into CPU, latency and system calls
//! per crossing for each engine.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::Value;

/// The engines in the order the table shows them.
const ENGINES: [&str; 3] = ["uring", "epoll", "wsgate"];
/// The scenarios in the order the table shows them.
const SCENARIOS: [&str; 2] = ["rate", "tput64"];

/// Prints the table for the runs in `results` (one JSON line each, as the
/// load generator prints them, labelled `engine`, `scenario`, `repeat`)
/// and the system call passes listed in `syscalls` (lines `ENGINE
/// SCENARIO SHORT_STRACE LONG_STRACE SHORT_ECHOED LONG_ECHOED`).
pub fn run(results: &Path, syscalls: Option<&Path>) -> Result<(), String> {
    let text = fs::read_to_string(results).map_err(|e| format!("{}: {e}", results.display()))?;
    let mut runs: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let run: Value = serde_json::from_str(line).map_err(|e| format!("a results line: {e}"))?;
        let label = |k: &str| run["labels"][k].as_str().unwrap_or("").to_string();
        runs.entry((label("engine"), label("scenario")))
            .or_default()
            .push(run);
    }
    let calls = match syscalls {
        Some(path) => syscall_passes(path)?,
        None => BTreeMap::new(),
    };

    println!("| scenario | engine | CPU µs per crossing | p99 round trip µs | echoed msg/s | syscalls per crossing | errors | runs |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut medians: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for scenario in SCENARIOS {
        for engine in ENGINES {
            let key = (engine.to_string(), scenario.to_string());
            let Some(list) = runs.get(&key) else { continue };
            let cpu: Vec<f64> = list.iter().filter_map(cpu_per_crossing).collect();
            let p99: Vec<f64> = list
                .iter()
                .filter_map(|r| r["latency_us"]["rtt_scheduled"]["p99"].as_f64())
                .collect();
            let rate: Vec<f64> = list
                .iter()
                .filter_map(|r| r["rates"]["received_per_s"].as_f64())
                .collect();
            let errors: u64 = list
                .iter()
                .filter_map(|r| r["errors"]["total"].as_u64())
                .sum();
            if let Some(m) = median(&cpu) {
                medians.insert((engine, scenario), m);
            }
            let syscalls = calls
                .get(&key)
                .map_or("–".to_string(), |c| format!("{:.2}", c.total));
            println!(
                "| {scenario} | {engine} | {} | {} | {} | {syscalls} | {errors} | {} |",
                spread(&cpu, 2),
                spread(&p99, 0),
                spread(&rate, 0),
                list.len()
            );
        }
    }
    println!();
    for scenario in SCENARIOS {
        let get = |e: &str| medians.get(&(e, scenario)).copied();
        if let (Some(u), Some(e)) = (get("uring"), get("epoll")) {
            let mut line = format!(
                "{scenario}: io_uring / epoll CPU per crossing = {:.2}× ({:+.1} %)",
                u / e,
                (u / e - 1.0) * 100.0
            );
            if let Some(w) = get("wsgate") {
                line += &format!(
                    "; io_uring / wsgate = {:.2}×; epoll engine / wsgate = {:.2}×",
                    u / w,
                    e / w
                );
            }
            println!("{line}");
        }
    }
    if !calls.is_empty() {
        println!();
        println!("System calls per crossing by call (the strace pass):");
        for ((engine, scenario), c) in &calls {
            let mut top: Vec<(&String, &f64)> =
                c.by_call.iter().filter(|(_, n)| **n >= 0.01).collect();
            top.sort_by(|a, b| b.1.total_cmp(a.1));
            let parts: Vec<String> = top.iter().map(|(k, n)| format!("{k} {n:.2}")).collect();
            println!("  {scenario} {engine}: {}", parts.join(", "));
        }
    }
    Ok(())
}

/// The watched process's CPU time over twice the echoed messages: each
/// echo crosses the relay once each way.
fn cpu_per_crossing(run: &Value) -> Option<f64> {
    let cpu = run["watched"]["cpu_us"].as_f64()?;
    let echoed = run["counts"]["received"].as_f64()?;
    (echoed > 0.0).then(|| cpu / (2.0 * echoed))
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// "median (min–max)", or the single value, or "–".
fn spread(values: &[f64], digits: usize) -> String {
    let Some(m) = median(values) else {
        return "–".to_string();
    };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() == 1 {
        format!("{m:.digits$}")
    } else {
        format!("{m:.digits$} ({min:.digits$}–{max:.digits$})")
    }
}

/// System calls per crossing of one engine and scenario.
struct Calls {
    total: f64,
    by_call: BTreeMap<String, f64>,
}

/// Reads the list of strace passes: each is a short and a long run of the
/// same engine and load, and the difference of their counts over the
/// difference of their crossings cancels start-up, upgrades and closes.
fn syscall_passes(path: &Path) -> Result<BTreeMap<(String, String), Calls>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [engine, scenario, short, long, short_echoed, long_echoed] = f[..] else {
            continue;
        };
        let parse = |s: &str| s.parse::<f64>().map_err(|e| format!("{line}: {e}"));
        let crossings = 2.0 * (parse(long_echoed)? - parse(short_echoed)?);
        if crossings <= 0.0 {
            continue;
        }
        let (a, b) = (
            strace_counts(Path::new(short))?,
            strace_counts(Path::new(long))?,
        );
        let mut by_call = BTreeMap::new();
        for (name, n) in &b {
            let diff = *n as f64 - *a.get(name).unwrap_or(&0) as f64;
            by_call.insert(name.clone(), diff / crossings);
        }
        let total = by_call.values().sum();
        out.insert(
            (engine.to_string(), scenario.to_string()),
            Calls { total, by_call },
        );
    }
    Ok(out)
}

/// Calls by system call from a `strace -c` summary (its rows are `% time,
/// seconds, usecs/call, calls, [errors], syscall`).
fn strace_counts(path: &Path) -> Result<BTreeMap<String, u64>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0].parse::<f64>().is_err() {
            continue;
        }
        let name = f[f.len() - 1];
        if name == "total" {
            continue;
        }
        if let Ok(calls) = f[3].parse::<u64>() {
            counts.insert(name.to_string(), calls);
        }
    }
    Ok(counts)
}
