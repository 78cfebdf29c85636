//! Validated admission-control settings of a listener: per-client limits,
//! global caps and the admit queue (see `docs/configuration.md`).

use std::net::IpAddr;
use std::time::Duration;

/// A listener's admission control; every part is off when absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListenerAdmission {
    /// Limits per client (an IPv4 address or an IPv6 /64).
    pub per_client: Option<PerClient>,
    /// Open client connections, handshakes in progress included; at the cap
    /// a new one is answered 503.
    pub max_connections: Option<u32>,
    /// Connections still in TLS or reading their request; beyond it the
    /// oldest pending one is dropped.
    pub max_pending_handshakes: Option<u32>,
    /// Upgrades above a rate wait in a FIFO queue.
    pub admit: Option<Admit>,
}

/// `per_client = { max_connections, handshakes_per_second, burst, exempt }`.
#[derive(Debug, Clone, PartialEq)]
pub struct PerClient {
    /// Connections one client may hold open, pending ones included.
    pub max_connections: Option<u32>,
    /// Sustained new connections per second, with `burst` above it.
    pub rate: Option<Rate>,
    /// Clients in these ranges are not limited.
    pub exempt: Vec<Cidr>,
}

/// A token bucket's refill rate and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second, more than zero.
    pub per_second: f64,
    /// The bucket's size, at least 1.
    pub burst: u32,
}

/// `admit = { handshakes_per_second, queue }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admit {
    /// Upgrades per second passed on to routing and backends.
    pub per_second: f64,
    /// An upgrade that would wait longer than this is answered 503.
    pub queue: Duration,
}

/// An address range, `10.0.0.0/8` or `fd00::/8`; a bare address is a
/// range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address, host bits zero.
    pub addr: IpAddr,
    /// Leading bits that must match.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the range; an IPv4-mapped IPv6 address counts
    /// as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// Whether any range of `list` contains `ip`.
    pub fn any_contains(list: &[Cidr], ip: IpAddr) -> bool {
        list.iter().any(|c| c.contains(ip))
    }

    /// `10.0.0.0/8`, `fd00::/8` or a bare address; host bits are cleared.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (ip, bits) = match text.split_once('/') {
            Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, Some(bits)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match bits {
            None => max,
            Some(b) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => {
                b.parse::<u8>().ok().filter(|p| *p <= max)?
            }
            Some(_) => return None,
        };
        let addr = match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        };
        Some(Cidr { addr, prefix })
    }
}
