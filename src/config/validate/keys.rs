//! Reads the TOML text into the file types without stopping at the first
//! unknown key or value of the wrong type.
//!
//! serde ends deserialization at its first error. Instead of keeping a
//! second list of every key beside `file.rs`, each error is located in the
//! parsed document by its span, reported with its key path and line, and
//! the entry it points at is removed; deserialization then runs again on
//! what is left. The known keys come from serde's own "unknown field"
//! error, so a key added to `file.rs` is known here with no other change.
//! Each round removes one entry, so the rounds are bounded by the number
//! of entries in the file.

use std::collections::HashSet;
use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::file;
use super::values::line_column;
use crate::config::Problem;

/// What reading found: the file types when what was left could be read,
/// the problems met on the way, and the key paths removed because of them
/// (so that validation does not report those keys again as missing).
pub(super) struct Read {
    /// `None` after a syntax error, or an error that could not be located in
    /// the document (then nothing past it can be checked).
    pub file: Option<file::File>,
    /// Unknown keys, values of the wrong type, or one syntax error.
    pub problems: Vec<Problem>,
    /// Key paths such as `route[0].pool` that were removed.
    pub dropped: HashSet<String>,
}

/// One step of a key path.
enum Step {
    Key(String),
    Index(usize),
}

/// Parses `text`, recovering from every unknown key and wrongly typed value.
pub(super) fn read(text: &str) -> Read {
    let mut read = Read {
        file: None,
        problems: Vec::new(),
        dropped: HashSet::new(),
    };
    let mut root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            read.problems.push(syntax_problem(text, &e));
            return read;
        }
    };
    loop {
        let error = match file::File::deserialize(toml::de::Deserializer::from(root.clone())) {
            Ok(file) => {
                read.file = Some(file);
                return read;
            }
            Err(error) => error,
        };
        let mut steps = Vec::new();
        let located = error
            .span()
            .filter(|span| locate(root.get_ref(), span, &mut steps));
        let Some(span) = located else {
            // Nowhere to point and nothing to remove: report it as it is.
            read.problems.push(syntax_problem(text, &error));
            return read;
        };
        let key_path = path_text(&steps);
        read.problems.push(Problem {
            line: Some(line_column(text, span.start).0),
            column: None,
            message: message(error.message()),
            key_path,
        });
        match remove_last_key(root.get_mut(), &steps) {
            Some(removed) => read.dropped.insert(removed),
            None => return read,
        };
    }
}

/// A problem that ends reading: a TOML syntax error, with line and column.
pub(super) fn syntax_problem(text: &str, error: &toml::de::Error) -> Problem {
    let position = error.span().map(|span| line_column(text, span.start));
    Problem {
        key_path: String::new(),
        line: position.map(|(line, _)| line),
        column: position.map(|(_, column)| column),
        message: error.message().to_string(),
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// Fills `steps` with the path of the deepest key or value whose span
/// holds `span`.
fn locate(table: &DeTable<'_>, span: &Range<usize>, steps: &mut Vec<Step>) -> bool {
    for (key, value) in table.iter() {
        steps.push(Step::Key(key.get_ref().to_string()));
        if descend(value, span, steps) || contains(&key.span(), span) {
            return true;
        }
        steps.pop();
    }
    false
}

fn descend(value: &Spanned<DeValue<'_>>, span: &Range<usize>, steps: &mut Vec<Step>) -> bool {
    let deeper = match value.get_ref() {
        DeValue::Table(table) => locate(table, span, steps),
        DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
            steps.push(Step::Index(i));
            let found = descend(item, span, steps);
            if !found {
                steps.pop();
            }
            found
        }),
        _ => false,
    };
    deeper || contains(&value.span(), span)
}

/// `route[0].max_message_bytes`.
fn path_text(steps: &[Step]) -> String {
    let mut text = String::new();
    for step in steps {
        match step {
            Step::Key(key) if text.is_empty() => text.push_str(key),
            Step::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Step::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    text
}

/// Removes the last key on `steps` (an array element is never removed, so
/// that the indices in later problems stay those of the file); returns the
/// removed key's path.
fn remove_last_key(root: &mut DeTable<'_>, steps: &[Step]) -> Option<String> {
    let last_key = steps.iter().rposition(|s| matches!(s, Step::Key(_)))?;
    let steps = &steps[..=last_key];
    remove(root, steps).then(|| path_text(steps))
}

fn remove(table: &mut DeTable<'_>, steps: &[Step]) -> bool {
    match steps {
        [Step::Key(key)] => table.remove(key.as_str()).is_some(),
        [Step::Key(key), rest @ ..] => table
            .get_mut(key.as_str())
            .is_some_and(|value| remove_in(value.get_mut(), rest)),
        _ => false,
    }
}

fn remove_in(value: &mut DeValue<'_>, steps: &[Step]) -> bool {
    match (value, steps) {
        (DeValue::Table(table), [Step::Key(_), ..]) => remove(table, steps),
        (DeValue::Array(items), [Step::Index(i), rest @ ..]) => items
            .get_mut(*i)
            .is_some_and(|item| remove_in(item.get_mut(), rest)),
        _ => false,
    }
}

/// serde's message, with a hint where one helps.
fn message(serde_message: &str) -> String {
    if let Some(rest) = serde_message.strip_prefix("unknown field `") {
        // serde lists the known fields in backticks after the unknown one.
        let mut quoted = rest.split('`').step_by(2);
        let unknown = quoted.next().unwrap_or_default();
        let known: Vec<&str> = quoted.filter(|k| !k.is_empty()).collect();
        return unknown_key(unknown, &known);
    }
    serde_message
        .replace("expected i64", "expected a whole number")
        .replace("expected f64", "expected a number")
        .replace("invalid type: ", "wrong type: found ")
}

/// "unknown key `max_mesage_bytes`; did you mean `max_message_bytes`?"
pub(super) fn unknown_key(unknown: &str, known: &[&str]) -> String {
    let normalised = |k: &str| k.to_ascii_lowercase().replace('-', "_");
    let wanted = normalised(unknown);
    let closest = known
        .iter()
        .map(|k| (edit_distance(&wanted, k), *k))
        .min_by_key(|(distance, _)| *distance);
    match closest {
        Some((distance, k)) if distance <= (wanted.chars().count() / 3).max(1) => {
            format!("unknown key `{unknown}`; did you mean `{k}`?")
        }
        _ if known.is_empty() => format!("unknown key `{unknown}`; this table takes no keys"),
        _ => format!(
            "unknown key `{unknown}`; the keys here are: {}",
            known.join(", ")
        ),
    }
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}
