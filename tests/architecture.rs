//! The module structure, checked from the sources (docs/architecture.md,
//! "Module structure"): no import cycle among the top-level modules, and
//! nothing on a connection's data path reaches the control plane (the
//! server, admin, reload, and configuration loading and validation).
//!
//! A module's imports are the `crate::<module>` paths in its files,
//! comments and unit tests left out: tests may build fixtures any way they
//! like. Validated configuration types (`crate::config::Route` and so on)
//! are data; `config::load`, `config::parse` and the `file` and `validate`
//! submodules are the control plane.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where a connection starts; the data path is everything these reach.
const DATA_PATH: [&str; 16] = [
    "connection",
    "admission",
    "proxy_protocol",
    "client_addr",
    "auth",
    "tls",
    "handshake",
    "route",
    "affinity",
    "balance",
    "upstream",
    "rfc6455",
    "relay",
    "frame",
    "close",
    "runtime",
];

/// Modules of the control plane, which the data path must not import.
const CONTROL_PLANE: [&str; 4] = ["server", "admin", "reload", "publish"];

/// Items of `config` that load or validate a file, as opposed to the
/// validated types.
const CONFIG_CONTROL: [&str; 4] = ["load", "parse", "file", "validate"];

/// What one module's sources reference.
#[derive(Default)]
struct Imports {
    /// Other top-level modules, with the first file that names each.
    modules: BTreeMap<String, PathBuf>,
    /// `config::<item>` names, with the file that names each.
    config_items: BTreeMap<String, PathBuf>,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src` belongs to; `None` for the
/// crate root and the binary, and for unit-test files.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts = rel.iter().map(|p| p.to_string_lossy().into_owned());
    let first = parts.next()?;
    if rel.iter().any(|p| p == "tests.rs" || p == "tests") {
        return None;
    }
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// `text` without comments and without its `#[cfg(test)]` module (which by
/// convention closes a file).
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        out.push_str(strip_trailing_comment(line));
        out.push('\n');
    }
    out
}

/// The line up to a `//` that is outside a string literal.
fn strip_trailing_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// Every path that follows `crate::`, with `{a, b::c}` groups expanded:
/// `crate::{x, y::z}` gives `x` and `y::z`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `mycrate::`
        }
        expand("", rest, &mut out);
    }
    out
}

/// Expands the path at the start of `text` (after `prefix`) into `out`.
fn expand(prefix: &str, text: &str, out: &mut Vec<String>) {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let inner = &group[..matching_brace(group)];
        for item in split_top_level(inner) {
            expand(prefix, item, out);
        }
        return;
    }
    let ident: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() {
        return;
    }
    let path = if prefix.is_empty() {
        ident.clone()
    } else {
        format!("{prefix}::{ident}")
    };
    let after = &text[ident.len()..];
    match after.strip_prefix("::") {
        Some(more) => {
            let more_trimmed = more.trim_start();
            if more_trimmed.starts_with('{')
                || more_trimmed.starts_with(|c: char| c.is_alphanumeric() || c == '_')
            {
                out.push(path.clone());
                expand(&path, more, out);
            } else {
                out.push(path);
            }
        }
        None => out.push(path),
    }
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 1;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    text.len()
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Every top-level module's imports.
fn imports() -> BTreeMap<String, Imports> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut all: BTreeMap<String, Imports> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let code = code_of(&std::fs::read_to_string(&file).expect("source is readable"));
        let imports = all.entry(module.clone()).or_default();
        for path in crate_paths(&code) {
            let mut segments = path.split("::");
            let Some(top) = segments.next() else { continue };
            if top != module {
                imports
                    .modules
                    .entry(top.to_string())
                    .or_insert_with(|| file.clone());
            }
            if top == "config" {
                if let Some(item) = segments.next() {
                    imports
                        .config_items
                        .entry(item.to_string())
                        .or_insert_with(|| file.clone());
                }
            }
        }
        // `use crate::config::{self, ..}` then `config::load(..)`.
        if module != "config" {
            for item in CONFIG_CONTROL {
                if code.contains(&format!("config::{item}")) {
                    imports
                        .config_items
                        .entry(item.to_string())
                        .or_insert_with(|| file.clone());
                }
            }
        }
    }
    all
}

#[test]
fn the_source_scan_finds_the_known_imports() {
    let all = imports();
    let server = &all["server"].modules;
    assert!(server.contains_key("connection"), "{:?}", server.keys());
    assert!(server.contains_key("runtime"), "{:?}", server.keys());
    assert!(all["reload"].modules.contains_key("server"));
    assert!(all["server"].config_items.contains_key("load"));
    assert_eq!(
        crate_paths("use crate::{a, b::{c, d::E}};\nlet x = crate::f::g(1); // crate::h"),
        ["a", "b", "b::c", "b::d", "b::d::E", "f", "f::g", "h"]
    );
    assert!(code_of("let x = 1; // crate::h").find("crate::h").is_none());
}

#[test]
fn no_import_cycle_among_modules() {
    let all = imports();
    let edges = |from: &str| -> Vec<String> {
        all.get(from)
            .map(|i| {
                i.modules
                    .keys()
                    .filter(|to| all.contains_key(*to))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut cycles = Vec::new();
    for start in all.keys() {
        // Depth-first search for a path back to `start`.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in edges(&at) {
                if next == *start {
                    let mut cycle = path.clone();
                    cycle.push(next.clone());
                    cycles.push(cycle.join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next, longer));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_data_path_never_imports_the_control_plane() {
    let all = imports();
    // The data path: the listed modules and everything they import, except
    // that `config` contributes its validated types only (its own imports
    // are the loader's).
    let mut path: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<String> = DATA_PATH.iter().map(|m| m.to_string()).collect();
    for m in &stack {
        assert!(
            all.contains_key(m),
            "data-path module {m} not found in src/"
        );
    }
    while let Some(m) = stack.pop() {
        if !path.insert(m.clone()) || m == "config" {
            continue;
        }
        if let Some(i) = all.get(&m) {
            stack.extend(i.modules.keys().filter(|k| all.contains_key(*k)).cloned());
        }
    }
    let mut problems = Vec::new();
    for m in &path {
        if m == "config" {
            continue;
        }
        let Some(i) = all.get(m) else { continue };
        for (to, file) in &i.modules {
            if CONTROL_PLANE.contains(&to.as_str()) {
                problems.push(format!("{m} imports {to} ({})", file.display()));
            }
        }
        for (item, file) in &i.config_items {
            if CONFIG_CONTROL.contains(&item.as_str()) {
                problems.push(format!("{m} uses config::{item} ({})", file.display()));
            }
        }
    }
    for m in CONTROL_PLANE {
        assert!(
            !path.contains(m),
            "control-plane module {m} is on the data path"
        );
    }
    assert!(
        problems.is_empty(),
        "the data path ({}) reaches the control plane:\n{}",
        path.iter().cloned().collect::<Vec<_>>().join(", "),
        problems.join("\n")
    );
}

#[test]
fn the_server_leaves_admin_and_reload_to_its_caller() {
    let all = imports();
    for m in ["admin", "reload"] {
        assert!(
            !all["server"].modules.contains_key(m),
            "server imports {m}: main wires the admin listener and the reload triggers"
        );
    }
}
