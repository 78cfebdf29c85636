//! Logging setup of the `wsgate` binary (not part of the library): the
//! level filter from `RUST_LOG`, and the text format's fields written by
//! logfmt's rules so that every line quotes the same way.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::EnvFilter;

/// The level used when `RUST_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "info";

/// Targets that a bare word in `RUST_LOG` may name: wsgate's own and those of
/// the libraries that log through `tracing`. Any other bare word is far more
/// likely a misspelt level (`debugg`) than a target, and EnvFilter would
/// read it as "everything from target `debugg`", which logs nothing.
const KNOWN_TARGETS: &[&str] = &[
    "wsgate",
    "hyper",
    "hyper_util",
    "rustls",
    "tokio_rustls",
    "tokio",
    "notify",
    "mio",
];

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// The filter for `spec` (the value of `RUST_LOG`), or why it is refused.
pub fn parse_filter(spec: &str) -> Result<EnvFilter, String> {
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[', '{', ':']);
        let is_level = LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive));
        if bare && !is_level && !KNOWN_TARGETS.contains(&directive) {
            return Err(format!(
                "`{directive}` is neither a level ({}) nor a known target; \
                 write TARGET=LEVEL to filter another target",
                LEVELS.join(", ")
            ));
        }
    }
    EnvFilter::builder().parse(spec).map_err(|e| format!("{e}"))
}

/// The filter from the environment's `RUST_LOG`; an invalid value is
/// reported on stderr (logging is not up yet) and the default level used.
pub fn filter_from_env() -> EnvFilter {
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match parse_filter(&spec) {
            Ok(filter) => filter,
            Err(why) => {
                eprintln!(
                    "wsgate: ignoring RUST_LOG={spec:?}: {why}; logging at the default level \"{DEFAULT_FILTER}\""
                );
                EnvFilter::new(DEFAULT_FILTER)
            }
        },
        _ => EnvFilter::new(DEFAULT_FILTER),
    }
}

/// Writes an event's or span's fields as logfmt: the message first and
/// bare, then `key=value` pairs, a value quoted only when it must be.
#[derive(Debug, Default, Clone, Copy)]
pub struct Logfmt;

impl<'writer> FormatFields<'writer> for Logfmt {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = LogfmtVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct LogfmtVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl LogfmtVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let mut text = String::new();
        let _ = text.write_fmt(value);
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{separator}{text}")
        } else {
            let name = field.name().strip_prefix("r#").unwrap_or(field.name());
            write!(self.writer, "{separator}{name}=")
                .and_then(|()| write_value(&mut self.writer, &text))
        };
    }
}

impl Visit for LogfmtVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields arrive here as Display wrapped in Debug.
        self.write(field, format_args!("{value:?}"));
    }
}

/// A logfmt value: bare when it has no space, `=`, `"`, `\` or control
/// character and is not empty; otherwise in double quotes with `"`, `\`
/// and control characters escaped.
pub fn write_value(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    let needs_quotes = value.is_empty()
        || value
            .chars()
            .any(|c| c == ' ' || c == '=' || c == '"' || c == '\\' || c.is_control());
    if !needs_quotes {
        return out.write_str(value);
    }
    out.write_char('"')?;
    for c in value.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if c.is_control() => write!(out, "\\u{{{:x}}}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> String {
        let mut out = String::new();
        write_value(&mut out, text).unwrap();
        out
    }

    #[test]
    fn plain_values_stay_bare() {
        assert_eq!(value("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(value("[::1]:9900"), "[::1]:9900");
        assert_eq!(value("/chat"), "/chat");
        assert_eq!(value("1001"), "1001");
    }

    #[test]
    fn values_that_would_split_are_quoted_and_escaped() {
        assert_eq!(value(""), "\"\"");
        assert_eq!(
            value("connect failed: refused"),
            "\"connect failed: refused\""
        );
        assert_eq!(value("a=b"), "\"a=b\"");
        assert_eq!(value("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(value("back\\slash"), "\"back\\\\slash\"");
        assert_eq!(value("two\nlines"), "\"two\\nlines\"");
    }

    #[test]
    fn levels_and_directives_parse() {
        for spec in [
            "debug",
            "INFO",
            "wsgate=debug",
            "info,wsgate::access=warn",
            "hyper",
            "off",
        ] {
            assert!(parse_filter(spec).is_ok(), "{spec}");
        }
    }

    #[test]
    fn a_misspelt_level_is_refused() {
        let why = parse_filter("debugg").unwrap_err();
        assert!(why.contains("debugg"), "{why}");
        assert!(parse_filter("info,debugg").is_err());
        assert!(parse_filter("wsgate=loud").is_err());
    }

    #[test]
    fn fields_are_written_by_logfmt_rules() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::fmt::MakeWriter;

        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Sink {
            type Writer = Sink;
            fn make_writer(&'a self) -> Sink {
                self.clone()
            }
        }

        let sink = Sink::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(Logfmt)
            .with_ansi(false)
            .without_time()
            .with_writer(sink.clone())
            .finish();
        let addr: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(host = %addr, peer = ?addr, reason = "no route", code = 1001_u16, "closed");
        });
        let line = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            line.contains(
                "closed host=127.0.0.1:8080 peer=127.0.0.1:8080 reason=\"no route\" code=1001"
            ),
            "{line}"
        );
    }
}
