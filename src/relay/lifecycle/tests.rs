//! Every timer and close rule of the contract's relay table, on made-up
//! instants: no socket, no waiting.

use super::*;
use crate::relay::pump::SourceEnd;
use crate::relay::state::Violation;

const SEC: Duration = Duration::from_secs(1);

fn limits(idle: u32, ping_interval: u32, ping_timeout: u32) -> Limits {
    Limits {
        max_message_bytes: 1 << 20,
        max_frame_bytes: 1 << 20,
        idle_timeout: idle * SEC,
        connect_timeout: 3 * SEC,
        ping_interval: ping_interval * SEC,
        ping_timeout: ping_timeout * SEC,
        ..Limits::default()
    }
}

fn start(l: Limits) -> (Lifecycle, Instant) {
    let t0 = Instant::now();
    (Lifecycle::new(l, false, t0), t0)
}

fn order(close: Option<(CloseCode, &'static str)>, gone: bool, stop: bool) -> Order {
    Order {
        close,
        destination_gone: gone,
        stop_reading: stop,
    }
}

#[test]
fn idle_timeout_closes_both_with_1001() {
    let (mut life, t0) = start(limits(60, 0, 10));
    assert_eq!(life.next_deadline(), t0 + 60 * SEC);
    assert_eq!(life.on_timer(t0 + 59 * SEC), Tick::default());
    let tick = life.on_timer(t0 + 60 * SEC);
    assert_eq!(
        tick.due,
        Some(Due::CloseBoth(CloseCode::GOING_AWAY, "idle timeout"))
    );
    assert_eq!(
        life.close(),
        Some(CloseInfo {
            code: CloseCode::GOING_AWAY,
            initiator: Initiator::Proxy
        })
    );
}

#[test]
fn traffic_either_way_moves_the_idle_deadline() {
    let (mut life, t0) = start(limits(60, 0, 10));
    life.traffic(t0 + 30 * SEC, 0, 10);
    assert_eq!(life.next_deadline(), t0 + 90 * SEC);
    life.traffic(t0 + 50 * SEC, 5, 10);
    assert_eq!(life.next_deadline(), t0 + 110 * SEC);
    // The same counts again are no activity.
    life.traffic(t0 + 70 * SEC, 5, 10);
    assert_eq!(life.on_timer(t0 + 109 * SEC).due, None);
    assert!(matches!(
        life.on_timer(t0 + 110 * SEC).due,
        Some(Due::CloseBoth(CloseCode::GOING_AWAY, _))
    ));
}

#[test]
fn no_pings_when_the_interval_is_zero() {
    let (mut life, t0) = start(limits(60, 0, 10));
    assert_eq!(life.on_timer(t0 + 59 * SEC).due, None);
}

#[test]
fn a_silent_client_is_pinged_after_the_interval() {
    let (mut life, t0) = start(limits(60, 30, 10));
    assert_eq!(life.next_deadline(), t0 + 30 * SEC);
    assert_eq!(life.on_timer(t0 + 29 * SEC).due, None);
    assert_eq!(life.on_timer(t0 + 30 * SEC).due, Some(Due::Ping));
    // One ping per silence: next comes the ping timeout.
    assert_eq!(life.next_deadline(), t0 + 40 * SEC);
    assert_eq!(life.on_timer(t0 + 35 * SEC).due, None);
}

#[test]
fn backend_traffic_does_not_stop_the_client_ping() {
    let (mut life, t0) = start(limits(60, 30, 10));
    life.traffic(t0 + 20 * SEC, 0, 100);
    assert_eq!(life.on_timer(t0 + 30 * SEC).due, Some(Due::Ping));
}

#[test]
fn no_answer_to_a_ping_closes_both_with_1001() {
    let (mut life, t0) = start(limits(60, 30, 10));
    assert_eq!(life.on_timer(t0 + 30 * SEC).due, Some(Due::Ping));
    assert_eq!(life.on_timer(t0 + 39 * SEC).due, None);
    assert_eq!(
        life.on_timer(t0 + 40 * SEC).due,
        Some(Due::CloseBoth(CloseCode::GOING_AWAY, "no answer to ping"))
    );
    assert_eq!(life.close().map(|c| c.initiator), Some(Initiator::Proxy));
}

#[test]
fn any_frame_from_the_client_answers_the_ping() {
    let (mut life, t0) = start(limits(60, 30, 10));
    assert_eq!(life.on_timer(t0 + 30 * SEC).due, Some(Due::Ping));
    life.traffic(t0 + 35 * SEC, 14, 0);
    assert_eq!(life.next_deadline(), t0 + 65 * SEC);
    assert_eq!(life.on_timer(t0 + 40 * SEC).due, None);
    assert_eq!(life.on_timer(t0 + 65 * SEC).due, Some(Due::Ping));
}

#[test]
fn idle_timeout_wins_over_a_ping_due_later() {
    let (mut life, t0) = start(limits(20, 30, 10));
    assert_eq!(life.next_deadline(), t0 + 20 * SEC);
    assert!(matches!(
        life.on_timer(t0 + 20 * SEC).due,
        Some(Due::CloseBoth(_, "idle timeout"))
    ));
}

#[test]
fn a_drain_closes_with_1001_at_its_moment() {
    let (mut life, t0) = start(limits(60, 0, 10));
    life.drain(t0 + 5 * SEC);
    assert_eq!(life.next_deadline(), t0 + 5 * SEC);
    assert_eq!(life.on_timer(t0 + 4 * SEC).due, None);
    assert_eq!(
        life.on_timer(t0 + 5 * SEC).due,
        Some(Due::CloseBoth(CloseCode::GOING_AWAY, "draining"))
    );
}

#[test]
fn the_close_grace_is_five_seconds_from_the_first_close() {
    let (mut life, t0) = start(limits(60, 30, 10));
    life.close_passed(Direction::ClientToBackend, CloseCode::NORMAL, t0 + SEC);
    // A later close does not move it.
    life.close_passed(Direction::BackendToClient, CloseCode::NORMAL, t0 + 3 * SEC);
    assert_eq!(life.next_deadline(), t0 + 6 * SEC);
    // While closing, idle and ping rules are off.
    assert_eq!(life.on_timer(t0 + 100 * SEC).due, None);
    assert!(!life.grace_over(t0 + 5 * SEC));
    assert!(life.grace_over(t0 + 6 * SEC));
    assert!(life.is_done(t0 + 6 * SEC, Ends::default()));
    assert_eq!(
        life.close(),
        Some(CloseInfo {
            code: CloseCode::NORMAL,
            initiator: Initiator::Client
        })
    );
}

#[test]
fn the_proxy_close_starts_the_grace_too() {
    let (mut life, t0) = start(limits(10, 0, 10));
    assert!(life.on_timer(t0 + 10 * SEC).due.is_some());
    assert_eq!(life.next_deadline(), t0 + 15 * SEC);
    assert!(!life.is_done(t0 + 14 * SEC, Ends::default()));
    assert!(life.is_done(t0 + 15 * SEC, Ends::default()));
}

#[test]
fn the_first_close_is_kept() {
    let (mut life, t0) = start(limits(60, 0, 10));
    life.close_passed(Direction::BackendToClient, CloseCode(4000), t0);
    life.on_event(
        Direction::ClientToBackend,
        Event::Violation(Violation::Unmasked),
        false,
        t0,
    );
    assert_eq!(
        life.close(),
        Some(CloseInfo {
            code: CloseCode(4000),
            initiator: Initiator::Backend
        })
    );
}

#[test]
fn flushes_come_a_second_after_traffic() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(limits(60, 0, 10), true, t0);
    assert_eq!(life.next_deadline(), t0 + 60 * SEC);
    life.traffic(t0 + SEC, 1, 0);
    assert_eq!(life.next_deadline(), t0 + 2 * SEC);
    let tick = life.on_timer(t0 + 2 * SEC);
    assert_eq!((tick.flush, tick.due), (true, None));
    assert_eq!(life.next_deadline(), t0 + 61 * SEC);
}

#[test]
fn an_unmetered_connection_never_flushes() {
    let (mut life, t0) = start(limits(60, 0, 10));
    life.traffic(t0 + SEC, 1, 0);
    assert_eq!(life.next_deadline(), t0 + 61 * SEC);
}

#[test]
fn client_vanishing_gives_the_backend_1001() {
    let (mut life, t0) = start(limits(60, 0, 10));
    let eof = Event::SourceGone(SourceEnd::Eof);
    let orders = life.on_event(Direction::ClientToBackend, eof, false, t0);
    assert_eq!(
        orders,
        Orders {
            client_to_backend: order(
                Some((CloseCode::GOING_AWAY, "client connection lost")),
                false,
                false
            ),
            backend_to_client: order(None, true, false),
        }
    );
    assert_eq!(
        life.close(),
        Some(CloseInfo {
            code: CloseCode::GOING_AWAY,
            initiator: Initiator::Client
        })
    );
    assert_eq!(life.next_deadline(), t0 + CLOSE_GRACE);
}

#[test]
fn backend_vanishing_gives_the_client_1014() {
    let (mut life, t0) = start(limits(60, 0, 10));
    let reset = Event::SourceGone(SourceEnd::Error(std::io::ErrorKind::ConnectionReset));
    let orders = life.on_event(Direction::BackendToClient, reset, false, t0);
    assert_eq!(
        orders.backend_to_client.close,
        Some((CloseCode::BAD_GATEWAY, "backend connection lost"))
    );
    assert!(orders.client_to_backend.destination_gone);
    assert_eq!(
        life.close(),
        Some(CloseInfo {
            code: CloseCode::BAD_GATEWAY,
            initiator: Initiator::Backend
        })
    );
}

#[test]
fn hanging_up_after_a_close_adds_nothing() {
    let (mut life, t0) = start(limits(60, 0, 10));
    life.close_passed(Direction::ClientToBackend, CloseCode::NORMAL, t0);
    let eof = Event::SourceGone(SourceEnd::Eof);
    let orders = life.on_event(Direction::ClientToBackend, eof, true, t0 + SEC);
    assert_eq!(orders, Orders::default());
    assert_eq!(life.close().map(|c| c.code), Some(CloseCode::NORMAL));
}

#[test]
fn a_failed_write_to_the_backend_tells_the_client_1014_and_stops_reading_the_backend() {
    let (mut life, t0) = start(limits(60, 0, 10));
    let orders = life.on_event(
        Direction::ClientToBackend,
        Event::DestinationGone,
        false,
        t0,
    );
    assert_eq!(
        orders,
        Orders {
            client_to_backend: Order::default(),
            backend_to_client: order(
                Some((CloseCode::BAD_GATEWAY, "backend connection lost")),
                false,
                true
            ),
        }
    );
    assert_eq!(life.close().map(|c| c.initiator), Some(Initiator::Backend));
}

#[test]
fn a_failed_write_to_the_client_tells_the_backend_1001() {
    let (mut life, t0) = start(limits(60, 0, 10));
    let orders = life.on_event(
        Direction::BackendToClient,
        Event::DestinationGone,
        false,
        t0,
    );
    assert_eq!(
        orders.client_to_backend,
        order(
            Some((CloseCode::GOING_AWAY, "client connection lost")),
            false,
            true
        )
    );
    assert_eq!(life.close().map(|c| c.initiator), Some(Initiator::Client));
}

#[test]
fn a_client_rule_break_is_its_code_to_the_client_and_1001_to_the_backend() {
    let (mut life, t0) = start(limits(60, 0, 10));
    let v = Violation::FrameTooBig;
    let orders = life.on_event(Direction::ClientToBackend, Event::Violation(v), false, t0);
    assert_eq!(
        orders.backend_to_client.close,
        Some((CloseCode::MESSAGE_TOO_BIG, v.reason()))
    );
    assert_eq!(
        orders.client_to_backend.close.unwrap().0,
        CloseCode::GOING_AWAY
    );
    assert_eq!(
        life.close(),
        Some(CloseInfo {
            code: CloseCode::MESSAGE_TOO_BIG,
            initiator: Initiator::Client
        })
    );
}

#[test]
fn a_backend_rule_break_is_1002_to_the_backend_and_1014_to_the_client() {
    let (mut life, t0) = start(limits(60, 0, 10));
    let v = Violation::Masked;
    let orders = life.on_event(Direction::BackendToClient, Event::Violation(v), false, t0);
    assert_eq!(
        orders.client_to_backend.close,
        Some((CloseCode::PROTOCOL_ERROR, v.reason()))
    );
    assert_eq!(
        orders.backend_to_client.close.unwrap().0,
        CloseCode::BAD_GATEWAY
    );
    assert_eq!(
        life.close(),
        Some(CloseInfo {
            code: CloseCode::PROTOCOL_ERROR,
            initiator: Initiator::Backend
        })
    );
}

fn told() -> Flow {
    Flow {
        close_delivered: true,
        ..Flow::default()
    }
}

#[test]
fn a_side_is_through_once_told_and_it_answered_hung_up_or_was_sealed() {
    let nothing = Flow::default();
    assert!(!side_through(nothing, nothing));
    assert!(!side_through(told(), nothing), "told but no answer yet");
    let answered = Flow {
        close_passed: true,
        ..Flow::default()
    };
    assert!(side_through(told(), answered));
    let hung_up = Flow {
        source_ended: true,
        ..Flow::default()
    };
    assert!(side_through(told(), hung_up));
    let sealed = Flow {
        sealed: true,
        ..told()
    };
    assert!(side_through(sealed, nothing));
    let gone = Flow {
        destination_gone: true,
        ..Flow::default()
    };
    assert!(side_through(gone, hung_up));
    assert!(!side_through(Flow::default(), answered), "not told yet");
}

#[test]
fn done_once_both_closes_crossed_and_both_fins_went() {
    let (life, t0) = start(limits(60, 0, 10));
    let closed = Flow {
        close_passed: true,
        ..Flow::default()
    };
    let mut ends = Ends {
        client_to_backend: closed,
        backend_to_client: closed,
        client_fin: true,
        backend_fin: false,
    };
    assert!(!life.is_done(t0, ends));
    ends.backend_fin = true;
    assert!(life.is_done(t0, ends));
}

#[test]
fn done_once_both_sides_hung_up_after_their_fin_or_loss() {
    let (life, t0) = start(limits(60, 0, 10));
    let ended = Flow {
        source_ended: true,
        ..Flow::default()
    };
    let mut ends = Ends {
        client_to_backend: ended,
        backend_to_client: ended,
        client_fin: true,
        backend_fin: false,
    };
    assert!(!life.is_done(t0, ends));
    ends.client_to_backend.destination_gone = true;
    assert!(life.is_done(t0, ends));
}

#[test]
fn token_expiry_closes_1008_recorded_as_the_proxy() {
    let (mut life, t0) = start(limits(60, 0, 10));
    life.expire_at(t0 + 2 * SEC);
    assert_eq!(life.next_deadline(), t0 + 2 * SEC);
    // Traffic does not move it.
    life.traffic(t0 + SEC, 10, 10);
    assert_eq!(life.next_deadline(), t0 + 2 * SEC);
    assert_eq!(life.on_timer(t0 + SEC).due, None);
    assert_eq!(life.on_timer(t0 + 2 * SEC).due, Some(Due::TokenExpired));
    assert_eq!(
        life.close(),
        Some(CloseInfo {
            code: CloseCode::POLICY_VIOLATION,
            initiator: Initiator::Proxy
        })
    );
    // Closing now: the grace counts, nothing else comes due.
    assert_eq!(life.next_deadline(), t0 + 2 * SEC + CLOSE_GRACE);
    assert_eq!(life.on_timer(t0 + 3 * SEC).due, None);
}

#[test]
fn a_close_before_the_expiry_keeps_its_own_code() {
    let (mut life, t0) = start(limits(60, 0, 10));
    life.expire_at(t0 + 10 * SEC);
    life.close_passed(Direction::ClientToBackend, CloseCode::NORMAL, t0 + SEC);
    assert_eq!(life.on_timer(t0 + 10 * SEC).due, None);
    assert_eq!(life.close().unwrap().code, CloseCode::NORMAL);
}
