use super::*;

/// The file of the issue: a misspelt key, a size with a unit, a duration
/// without one and a route naming a missing pool, all in one report.
const FOUR_PROBLEMS: &str = r#"
[defaults]
idle_timeout = 30

[[listener]]
name = "public"
bind = "127.0.0.1:8080"

[[route]]
path_prefix = "/chat"
pool = "chats"
max_mesage_bytes = 1024
max_frame_bytes = "64KiB"

[[pool]]
name = "chat"
backends = [{ addr = "127.0.0.1:9001" }]
"#;

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let found = problems(FOUR_PROBLEMS);
    let got: Vec<(&str, Option<usize>)> = found
        .iter()
        .map(|p| (p.key_path.as_str(), p.line))
        .collect();
    let expected = [
        ("defaults.idle_timeout", Some(3)),
        ("route[0].pool", Some(11)),
        ("route[0].max_mesage_bytes", Some(12)),
        ("route[0].max_frame_bytes", Some(13)),
    ];
    assert_eq!(got, expected, "{found:#?}");
    let hints = [
        "durations are strings with a unit: \"30s\"",
        "the pools are: chat",
        "did you mean `max_message_bytes`?",
        "sizes are whole bytes: 65536",
    ];
    for (problem, hint) in found.iter().zip(hints) {
        assert!(problem.message.contains(hint), "{problem:#?}: {hint}");
    }
}

#[test]
fn unknown_keys_in_every_kind_of_table_are_all_reported() {
    let text = r#"
[admin]
bind = "127.0.0.1:9900"
binds = "x"

[[listener]]
name = "public"
bind = "127.0.0.1:8080"
tls = { cert = "a.pem", key = "a.key", snii = [] }

[[route]]
pol = "chat"
pool = "chat"

[[pool]]
name = "chat"
backends = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002", wieght = 2 }]
health_check = { kind = "tcp", intervals = "1s" }
color = "blue"
"#;
    let found = problems_in(text, Path::new("/nonexistent"));
    let unknown: Vec<(&str, Option<usize>)> = (found.iter())
        .filter(|p| p.message.starts_with("unknown key"))
        .map(|p| (p.key_path.as_str(), p.line))
        .collect();
    let expected = [
        ("admin.binds", Some(4)),
        ("listener[0].tls.snii", Some(9)),
        ("route[0].pol", Some(12)),
        ("pool[0].backends[1].wieght", Some(17)),
        ("pool[0].health_check.intervals", Some(18)),
        ("pool[0].color", Some(19)),
    ];
    assert_eq!(unknown, expected, "{found:#?}");
    let color = found
        .iter()
        .find(|p| p.key_path == "pool[0].color")
        .unwrap();
    assert!(
        color.message.contains("the keys here are: ") && color.message.contains("backends"),
        "{color:#?}"
    );
    // Validation still ran: the certificate files are missing.
    assert!(found.iter().any(|p| p.key_path == "listener[0].tls.cert"));
}

#[test]
fn values_of_the_wrong_type_are_reported_and_the_rest_still_checked() {
    let text = replaced("pool = \"chat\"", "pool = 7\nhost = \"a b\"").replace(
        "\"127.0.0.1:9001\" }",
        "\"127.0.0.1:9001\", weight = \"2\" }",
    );
    let found = problems(&text);
    let got: Vec<(&str, Option<usize>)> = found
        .iter()
        .map(|p| (p.key_path.as_str(), p.line))
        .collect();
    let expected = [
        ("route[0].pool", Some(line_of(&text, "pool = 7"))),
        ("route[0].host", Some(line_of(&text, "host ="))),
        (
            "pool[0].backends[0].weight",
            Some(line_of(&text, "backends")),
        ),
    ];
    assert_eq!(got, expected, "{found:#?}");
    // The wrongly typed `pool` is not reported a second time as missing.
    assert!(found[0].message.contains("wrong type"), "{found:#?}");
    assert!(
        found[2].message.contains("expected a whole number"),
        "{found:#?}"
    );
}

#[test]
fn a_wrongly_typed_array_element_is_reported_at_its_index() {
    let text = route_key("allowed_origins = [\"https://a.example\", 5]");
    let found = problems(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key_path, "route[0].allowed_origins[1]");
    assert_eq!(found[0].line, Some(line_of(&text, "allowed_origins")));
}

#[test]
fn a_wrongly_typed_table_is_reported_once() {
    let text = format!("admin = 5\n{MINIMAL}");
    let found = problems(&text);
    let paths: Vec<&str> = found.iter().map(|p| p.key_path.as_str()).collect();
    assert_eq!(paths, ["admin"], "{found:#?}");
    assert_eq!(found[0].line, Some(1));
}

#[test]
fn hints_name_the_closest_key() {
    let known = [
        "max_message_bytes",
        "max_frame_bytes",
        "idle_timeout",
        "pool",
    ];
    let hint = |unknown| crate::config::validate::keys::unknown_key(unknown, &known);
    assert!(hint("max_mesage_bytes").ends_with("did you mean `max_message_bytes`?"));
    assert!(hint("Max-Frame-Bytes").ends_with("did you mean `max_frame_bytes`?"));
    assert!(hint("idle").contains("the keys here are: max_message_bytes, max_frame_bytes"));
    assert!(hint("pol").ends_with("did you mean `pool`?"));
    assert!(crate::config::validate::keys::unknown_key("x", &[]).ends_with("takes no keys"));
}
