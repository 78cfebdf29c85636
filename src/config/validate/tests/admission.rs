use super::*;
use crate::config::{Admit, Cidr, ListenerAdmission, PerClient, Rate};

fn listener_key(k: &str) -> String {
    replaced(
        "bind = \"127.0.0.1:8080\"\n",
        &format!("bind = \"127.0.0.1:8080\"\n{k}\n"),
    )
}

#[test]
fn admission_keys_are_read() {
    let text = listener_key(
        "per_client = { max_connections = 100, handshakes_per_second = 10, burst = 20, exempt = [\"10.0.0.0/8\", \"fd00::1\"] }\n\
         max_connections = 50000\nmax_pending_handshakes = 2000\n\
         admit = { handshakes_per_second = 500, queue = \"5s\" }",
    );
    let config = parse(&text, Path::new("."), "test.toml").unwrap();
    let expected = ListenerAdmission {
        per_client: Some(PerClient {
            max_connections: Some(100),
            rate: Some(Rate {
                per_second: 10.0,
                burst: 20,
            }),
            exempt: vec![
                Cidr::parse("10.0.0.0/8").unwrap(),
                Cidr::parse("fd00::1/128").unwrap(),
            ],
        }),
        max_connections: Some(50000),
        max_pending_handshakes: Some(2000),
        admit: Some(Admit {
            per_second: 500.0,
            queue: Duration::from_secs(5),
        }),
    };
    assert_eq!(config.listeners[0].admission, expected);
}

#[test]
fn admission_defaults() {
    let config = parse(MINIMAL, Path::new("."), "test.toml").unwrap();
    assert_eq!(config.listeners[0].admission, ListenerAdmission::default());
    let text = listener_key(
        "per_client = { handshakes_per_second = 2.5 }\nadmit = { handshakes_per_second = 100 }",
    );
    let a = parse(&text, Path::new("."), "test.toml").unwrap().listeners[0]
        .admission
        .clone();
    let rate = a.per_client.unwrap().rate.unwrap();
    assert_eq!(
        (rate.per_second, rate.burst),
        (2.5, 3),
        "burst: one second's worth"
    );
    assert_eq!(a.admit.unwrap().queue, Duration::from_secs(5));
}

#[test]
fn admission_problems_have_their_key_path_and_line() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            listener_key("max_connections = 0"),
            "listener[0].max_connections",
            "max_connections",
            "between 1 and",
        ),
        (
            listener_key("max_pending_handshakes = -3"),
            "listener[0].max_pending_handshakes",
            "max_pending_handshakes",
            "between 1 and",
        ),
        (
            listener_key("per_client = { burst = 5 }"),
            "listener[0].per_client",
            "per_client",
            "limits nothing",
        ),
        (
            listener_key("per_client = { max_connections = 5, burst = 5 }"),
            "listener[0].per_client.burst",
            "per_client",
            "without handshakes_per_second",
        ),
        (
            listener_key("per_client = { handshakes_per_second = 0 }"),
            "listener[0].per_client.handshakes_per_second",
            "per_client",
            "above 0",
        ),
        (
            listener_key("per_client = { max_connections = 5, exempt = [\"10.0.0.0/33\"] }"),
            "listener[0].per_client.exempt[0]",
            "per_client",
            "not an address range",
        ),
        (
            listener_key("admit = { queue = \"5s\" }"),
            "listener[0].admit.handshakes_per_second",
            "admit",
            "is required",
        ),
        (
            listener_key("admit = { handshakes_per_second = 10, queue = 5 }"),
            "listener[0].admit.queue",
            "admit",
            "no unit",
        ),
    ];
    check_all(&cases);
}

#[test]
fn route_admission_keys_inherit_from_defaults() {
    let text = format!(
        "[defaults]\nmax_lifetime = \"1h\"\nmax_messages_per_second = 100\n{}",
        route_key("message_burst = 50\non_message_rate = \"close\"")
    );
    let config = parse(&text, Path::new("."), "test.toml").unwrap();
    let limits = config.routes[0].limits;
    assert_eq!(limits.max_lifetime, Duration::from_secs(3600));
    let rate = limits.message_rate().unwrap();
    assert_eq!((rate.per_second, rate.burst), (100, 50));
    assert_eq!(rate.on_exceed, crate::config::OnMessageRate::Close);
    let plain = parse(MINIMAL, Path::new("."), "test.toml").unwrap();
    assert_eq!(plain.routes[0].limits.max_lifetime, Duration::ZERO);
    assert_eq!(plain.routes[0].limits.message_rate(), None);
}

#[test]
fn route_admission_problems_have_their_key_path_and_line() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            route_key("max_lifetime = 3600"),
            "route[0].max_lifetime",
            "max_lifetime",
            "no unit",
        ),
        (
            route_key("max_messages_per_second = 0"),
            "route[0].max_messages_per_second",
            "max_messages_per_second",
            "between 1 and",
        ),
        (
            defaults("message_burst = -1"),
            "defaults.message_burst",
            "message_burst",
            "between 1 and",
        ),
        (
            route_key("on_message_rate = \"drop\""),
            "route[0].on_message_rate",
            "on_message_rate",
            "\"slow\" or \"close\"",
        ),
    ];
    check_all(&cases);
}

#[test]
fn pool_admission_keys_are_read() {
    let text = pool_with(
        "slow_start = \"30s\"\nrebalance = { tolerance = 0.5, max_closes_per_second = 5 }",
    );
    let pool = &parse(&text, Path::new("."), "test.toml").unwrap().pools[0];
    assert_eq!(pool.slow_start, Duration::from_secs(30));
    let r = pool.rebalance.unwrap();
    assert_eq!((r.tolerance, r.max_closes_per_second), (0.5, 5.0));
    let text = pool_with("rebalance = {}");
    let r = parse(&text, Path::new("."), "test.toml").unwrap().pools[0]
        .rebalance
        .unwrap();
    assert_eq!((r.tolerance, r.max_closes_per_second), (0.2, 20.0));
    let plain = &parse(MINIMAL, Path::new("."), "test.toml").unwrap().pools[0];
    assert_eq!((plain.slow_start, plain.rebalance), (Duration::ZERO, None));
}

#[test]
fn pool_admission_problems_have_their_key_path_and_line() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            pool_with("slow_start = 30"),
            "pool[0].slow_start",
            "slow_start",
            "no unit",
        ),
        (
            pool_with("rebalance = { tolerance = -0.1 }"),
            "pool[0].rebalance.tolerance",
            "rebalance",
            "from 0 to 10",
        ),
        (
            pool_with("rebalance = { max_closes_per_second = 0 }"),
            "pool[0].rebalance.max_closes_per_second",
            "rebalance",
            "above 0",
        ),
    ];
    check_all(&cases);
}
