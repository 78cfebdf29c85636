//! How a relayed connection ended: the close code and who started the close.
//!
//! The relay records one [`CloseInfo`] per connection; metrics label closes
//! with the code's number and the initiator's name (contract, "Admin
//! listener": `wsgate_closes_total{code,initiator}`).

use std::fmt;

/// A close status code (RFC 6455 section 7.4).
///
/// Any `u16` is representable because a close frame may carry codes this
/// proxy has no name for (registered codes 3000-3999, private 4000-4999);
/// they are passed through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: an endpoint is going away (idle timeout, shutdown, the client
    /// broke a rule and the backend is told).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: a protocol error (RFC 6455 section 7.4.1).
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1009: a message or frame too big to process (RFC 6455 section 7.4.1).
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1008: the connection broke a policy (its token expired).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1011: an unexpected condition inside the proxy.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: Service Restart, which tells a client to reconnect (IANA
    /// registry); the proxy sends it to move a connection elsewhere.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1014: Bad Gateway, the backend misbehaved or vanished (IANA
    /// WebSocket Close Code Number Registry).
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1013: Try Again Later (IANA registry); a client too slow for the
    /// messages pushed to it.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1005: the close frame carried no code. Never sent on the wire
    /// (RFC 6455 section 7.4.1); it only reports an empty close body.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection ended without a close frame. Never sent on the
    /// wire (RFC 6455 section 7.4.1); it only records what happened.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
}

impl CloseCode {
    /// Whether a close frame may carry this code (RFC 6455 section 7.4.1
    /// and the IANA registry it set up): 1000-1003 and 1007-1014 are
    /// defined; 1004 is reserved, 1005, 1006 and 1015 are for reporting
    /// only and never sent; 1016-2999 are unassigned and 0-999 unused;
    /// 3000-3999 are registered and 4000-4999 private, both passed through.
    /// Nothing defines 5000 and up, so they are refused too.
    pub fn is_allowed_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// The `code` label of `wsgate_closes_total`: the number for the codes
    /// RFC 6455 and its registry name (1000-1015), `3xxx` and `4xxx` for the
    /// registered and private ranges, `other` for the rest, so that a peer
    /// choosing codes cannot grow the number of series.
    pub fn label(self) -> &'static str {
        CodeLabel::of(self).as_str()
    }
}

/// A close code as the `code` label of `wsgate_closes_total` groups it:
/// the metrics write it with [`CodeLabel::as_str`], the dashboard reads it
/// back with [`CodeLabel::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CodeLabel {
    /// 1000..=1015, the codes RFC 6455 and its registry name.
    Code(u16),
    /// `3xxx`: registered with IANA.
    Registered,
    /// `4xxx`: private to the application.
    Private,
    /// `other`, or a label this version does not know.
    Other,
}

impl CodeLabel {
    /// The group `code` falls in.
    pub fn of(code: CloseCode) -> CodeLabel {
        match code.0 {
            n @ 1000..=1015 => CodeLabel::Code(n),
            3000..=3999 => CodeLabel::Registered,
            4000..=4999 => CodeLabel::Private,
            _ => CodeLabel::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        const NAMED: [&str; 16] = [
            "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010",
            "1011", "1012", "1013", "1014", "1015",
        ];
        match self {
            CodeLabel::Code(n @ 1000..=1015) => NAMED[usize::from(n - 1000)],
            CodeLabel::Code(_) | CodeLabel::Other => "other",
            CodeLabel::Registered => "3xxx",
            CodeLabel::Private => "4xxx",
        }
    }

    /// Reads a label value.
    pub fn parse(label: &str) -> CodeLabel {
        match label {
            "3xxx" => CodeLabel::Registered,
            "4xxx" => CodeLabel::Private,
            l => l.parse().map_or(CodeLabel::Other, CodeLabel::Code),
        }
    }
}

impl fmt::Display for CloseCode {
    /// The bare number, as used in metric labels and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Who started the close of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Initiator {
    /// The client sent a close frame or dropped its connection.
    Client,
    /// The backend sent a close frame or dropped its connection.
    Backend,
    /// The proxy closed: a broken rule, a timeout, a drain or shutdown.
    Proxy,
}

impl Initiator {
    /// The metric label value (contract: `client`, `backend` or `proxy`).
    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::Client => "client",
            Initiator::Backend => "backend",
            Initiator::Proxy => "proxy",
        }
    }

    /// Reads a metric label value back.
    pub fn parse(s: &str) -> Option<Initiator> {
        match s {
            "client" => Some(Initiator::Client),
            "backend" => Some(Initiator::Backend),
            "proxy" => Some(Initiator::Proxy),
            _ => None,
        }
    }
}

impl fmt::Display for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseInfo {
    /// The code the connection ended with, as counted in
    /// `wsgate_closes_total{code}`.
    pub code: CloseCode,
    /// Who started the close.
    pub initiator: Initiator,
}

/// Traffic of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Data messages whose final frame passed.
    pub messages: u64,
    /// Bytes on the wire, frame headers included.
    pub bytes: u64,
}

/// How a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The first close: its code and who started it.
    pub close: CloseInfo,
    /// Client to backend traffic.
    pub client_to_backend: Counts,
    /// Backend to client traffic.
    pub backend_to_client: Counts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_codes_have_their_rfc_numbers() {
        let pairs = [
            (CloseCode::NORMAL, 1000),
            (CloseCode::GOING_AWAY, 1001),
            (CloseCode::PROTOCOL_ERROR, 1002),
            (CloseCode::NO_STATUS, 1005),
            (CloseCode::ABNORMAL, 1006),
            (CloseCode::MESSAGE_TOO_BIG, 1009),
            (CloseCode::INTERNAL_ERROR, 1011),
            (CloseCode::BAD_GATEWAY, 1014),
        ];
        for (code, n) in pairs {
            assert_eq!(code.0, n);
        }
    }

    #[test]
    fn codes_rfc_6455_forbids_on_the_wire_are_refused() {
        for n in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(n).is_allowed_on_wire(), "{n}");
        }
        for n in [
            1000, 1001, 1002, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(n).is_allowed_on_wire(), "{n}");
        }
    }

    #[test]
    fn metric_labels_are_bounded() {
        assert_eq!(CloseCode::NORMAL.label(), "1000");
        assert_eq!(CloseCode::ABNORMAL.label(), "1006");
        assert_eq!(CloseCode::BAD_GATEWAY.label(), "1014");
        assert_eq!(CloseCode(3000).label(), "3xxx");
        assert_eq!(CloseCode(3999).label(), "3xxx");
        assert_eq!(CloseCode(4000).label(), "4xxx");
        assert_eq!(CloseCode(4999).label(), "4xxx");
        let mut labels: Vec<_> = (0..=u16::MAX).map(|n| CloseCode(n).label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), 16 + 3);
        for n in 1000..=1015 {
            assert_eq!(CloseCode(n).label(), n.to_string());
        }
    }

    #[test]
    fn display_is_the_bare_number() {
        assert_eq!(CloseCode::BAD_GATEWAY.to_string(), "1014");
        assert_eq!(CloseCode(4321).to_string(), "4321");
    }

    #[test]
    fn initiator_labels_match_the_contract() {
        assert_eq!(Initiator::Client.as_str(), "client");
        assert_eq!(Initiator::Backend.as_str(), "backend");
        assert_eq!(Initiator::Proxy.as_str(), "proxy");
        assert_eq!(Initiator::Proxy.to_string(), "proxy");
    }
}
