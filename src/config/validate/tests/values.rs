use super::*;

/// Durations and sizes in `[defaults]`, one at a time.
#[test]
fn value_problems_have_their_key_path_and_line() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            defaults("idle_timeout = \"0s\""),
            "defaults.idle_timeout",
            "idle_timeout",
            "more than zero",
        ),
        (
            defaults("handshake_timeout = \"0ms\""),
            "defaults.handshake_timeout",
            "handshake_timeout",
            "more than zero",
        ),
        (
            defaults("idle_timeout = 30"),
            "defaults.idle_timeout",
            "idle_timeout",
            "no unit; durations are strings with a unit: \"30s\"",
        ),
        (
            defaults("drain_timeout = \"soon\""),
            "defaults.drain_timeout",
            "drain_timeout",
            "cannot read \"soon\"",
        ),
        (
            defaults("drain_timeout = \"400days\""),
            "defaults.drain_timeout",
            "drain_timeout",
            "too long",
        ),
        (
            defaults("max_frame_bytes = 0"),
            "defaults.max_frame_bytes",
            "max_frame_bytes",
            "above 0",
        ),
    ];
    check_all(&cases);
}

#[test]
fn columns_count_characters() {
    assert_eq!(
        crate::config::validate::values::line_column("a\nçé=x", 5),
        (2, 3)
    );
    assert_eq!(
        crate::config::validate::values::line_column("ab", 99),
        (1, 3)
    );
}

#[test]
fn sizes_written_with_a_unit_are_refused_with_their_bytes() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            route_key("max_frame_bytes = \"64KiB\""),
            "route[0].max_frame_bytes",
            "max_frame_bytes",
            "sizes are whole bytes: 65536",
        ),
        (
            defaults("max_message_bytes = \"1 MB\""),
            "defaults.max_message_bytes",
            "max_message_bytes",
            "sizes are whole bytes: 1000000",
        ),
        (
            defaults("max_message_bytes = \"65536\""),
            "defaults.max_message_bytes",
            "max_message_bytes",
            "sizes are whole bytes: 65536",
        ),
        (
            defaults("max_message_bytes = \"lots\""),
            "defaults.max_message_bytes",
            "max_message_bytes",
            "without quotes, e.g. 65536",
        ),
        (
            defaults("max_frame_bytes = 1.5"),
            "defaults.max_frame_bytes",
            "max_frame_bytes",
            "not a whole number",
        ),
    ];
    check_all(&cases);
}

#[test]
fn size_units() {
    use crate::config::validate::values::size_with_unit;
    assert_eq!(size_with_unit("64KiB"), Some(65536));
    assert_eq!(size_with_unit("64k"), Some(65536));
    assert_eq!(size_with_unit(" 2 MiB "), Some(2 << 20));
    assert_eq!(size_with_unit("3GB"), Some(3_000_000_000));
    assert_eq!(size_with_unit("10b"), Some(10));
    assert_eq!(size_with_unit("1.5MiB"), None);
    assert_eq!(size_with_unit("KiB"), None);
    assert_eq!(size_with_unit("99999999999999999999G"), None);
}
