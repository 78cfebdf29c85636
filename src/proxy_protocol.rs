//! The PROXY protocol (HAProxy's "PROXY protocol" specification, versions 1
//! and 2): reading the header an L4 balancer puts before the client's first
//! byte, and writing one towards a backend.
//!
//! The parser is sans-io: [`parse`] is handed what has arrived so far and
//! says whether a whole header is there, how long it is, and what it
//! carries. [`read`] is the thin async shell over a TCP socket; it never
//! reads a byte past the header, so TLS or HTTP parsing starts exactly
//! where the balancer's header ends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::{ProxyProtocol, ProxyVersion};

/// The 12 bytes every version 2 header starts with (specification 2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A version 1 line is at most 107 bytes, CRLF included (specification 2.1).
const V1_MAX: usize = 107;

/// Version 2 headers longer than this (fixed part, addresses and TLVs) are
/// refused: real balancers send a few dozen bytes of TLVs, and the bound
/// keeps what a peer can make the proxy hold small.
pub const V2_MAX: usize = 16 + 1024;

/// The longest header [`parse`] accepts.
pub const MAX_LEN: usize = V2_MAX;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A relayed connection: the client's address and the address it
    /// connected to.
    Proxy {
        /// The client.
        source: SocketAddr,
        /// Where the client connected (the balancer's front).
        destination: SocketAddr,
    },
    /// The balancer's own connection (a health check, v2 `LOCAL`), or one
    /// whose addresses it does not know (v1 `UNKNOWN`, v2 `UNSPEC` or
    /// UNIX): the peer's address stands.
    Local,
}

/// A header that is not acceptable; the connection is closed unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The first bytes are no PROXY header of an accepted version.
    #[error("no PROXY protocol header")]
    Missing,
    /// The header started but breaks the specification.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

impl ProxyError {
    /// The metric label of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::Missing => "missing",
            ProxyError::Malformed(_) => "malformed",
        }
    }
}

/// What [`parse`] found in the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Every byte so far belongs to a header that is not complete yet.
    Incomplete,
    /// A whole header of `len` bytes starts the input.
    Complete {
        /// What it carries.
        header: Header,
        /// Its length; the client's own bytes start here.
        len: usize,
    },
}

/// Parses the start of a connection as a PROXY header of a version
/// `accept` allows. `Incomplete` promises that all of `buf` belongs to the
/// header, so a reader may consume it and wait for more.
pub fn parse(buf: &[u8], accept: ProxyProtocol) -> Result<Parsed, ProxyError> {
    let v1 = matches!(accept, ProxyProtocol::V1 | ProxyProtocol::Any);
    let v2 = matches!(accept, ProxyProtocol::V2 | ProxyProtocol::Any);
    if v2 && is_prefix_of(buf, &V2_SIGNATURE) {
        return parse_v2(buf);
    }
    if v1 && is_prefix_of(buf, b"PROXY ") {
        return parse_v1(buf);
    }
    Err(ProxyError::Missing)
}

/// `buf` and `sig` agree on their common length.
fn is_prefix_of(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf[..n] == sig[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(ProxyError::Malformed(
                "version 1 line longer than 107 bytes",
            ));
        }
        // A lone LF is never part of a valid line.
        if buf.contains(&b'\n') {
            return Err(ProxyError::Malformed("version 1 line not ended by CRLF"));
        }
        return Ok(Parsed::Incomplete);
    };
    let len = end + 2;
    // Refused here as in a cut before the CRLF, so that a header never
    // parses whole after a shorter cut of it was refused.
    if buf[..end].contains(&b'\n') {
        return Err(ProxyError::Malformed("version 1 line not ended by CRLF"));
    }
    if len > V1_MAX {
        return Err(ProxyError::Malformed(
            "version 1 line longer than 107 bytes",
        ));
    }
    let line = std::str::from_utf8(&buf[6..end])
        .map_err(|_| ProxyError::Malformed("version 1 line is not text"))?;
    let mut fields = line.split(' ');
    let header = match fields.next() {
        // Everything after UNKNOWN is to be ignored (specification 2.1).
        Some("UNKNOWN") => Header::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut next = || {
                fields
                    .next()
                    .ok_or(ProxyError::Malformed("version 1 line has too few fields"))
            };
            let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
            if fields.next().is_some() {
                return Err(ProxyError::Malformed("version 1 line has too many fields"));
            }
            let ip = |text: &str| -> Result<IpAddr, ProxyError> {
                let parsed = match family {
                    "TCP4" => text.parse::<Ipv4Addr>().map(IpAddr::V4),
                    _ => text.parse::<Ipv6Addr>().map(IpAddr::V6),
                };
                parsed.map_err(|_| ProxyError::Malformed("version 1 address of the wrong family"))
            };
            Header::Proxy {
                source: SocketAddr::new(ip(src)?, v1_port(sport)?),
                destination: SocketAddr::new(ip(dst)?, v1_port(dport)?),
            }
        }
        _ => {
            return Err(ProxyError::Malformed(
                "version 1 protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    Ok(Parsed::Complete { header, len })
}

/// A decimal port of 1 to 5 digits, 0 to 65535.
fn v1_port(text: &str) -> Result<u16, ProxyError> {
    let bad = ProxyError::Malformed("version 1 port is not a number from 0 to 65535");
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    text.parse().map_err(|_| bad)
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let (ver_cmd, family) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("version 2 header of another version"));
    }
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body_len;
    if len > V2_MAX {
        return Err(ProxyError::Malformed(
            "version 2 header longer than 1040 bytes",
        ));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => {
            return Err(ProxyError::Malformed(
                "version 2 command is not LOCAL or PROXY",
            ))
        }
    };
    // The address block must fit the stated length, whatever the command.
    let need = match family {
        0x11 => 12,
        0x21 => 36,
        0x31 => 216,
        0x00 => 0,
        0x12 | 0x22 | 0x32 => {
            return Err(ProxyError::Malformed(
                "version 2 header for a datagram protocol",
            ))
        }
        _ => return Err(ProxyError::Malformed("version 2 address family unknown")),
    };
    if body_len < need {
        return Err(ProxyError::Malformed(
            "version 2 addresses longer than the header",
        ));
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let body = &buf[16..len];
    // TLVs (after the addresses) are skipped whole: the length covers them.
    let header = match (local, family) {
        (true, _) | (false, 0x00 | 0x31) => Header::Local,
        (false, 0x11) => {
            let ip = |at: usize| Ipv4Addr::from(<[u8; 4]>::try_from(&body[at..at + 4]).unwrap());
            Header::Proxy {
                source: SocketAddr::new(IpAddr::V4(ip(0)), port(body, 8)),
                destination: SocketAddr::new(IpAddr::V4(ip(4)), port(body, 10)),
            }
        }
        (false, _) => {
            let ip = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&body[at..at + 16]).unwrap());
            Header::Proxy {
                source: SocketAddr::new(IpAddr::V6(ip(0)), port(body, 32)),
                destination: SocketAddr::new(IpAddr::V6(ip(16)), port(body, 34)),
            }
        }
    };
    Ok(Parsed::Complete { header, len })
}

fn port(body: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([body[at], body[at + 1]])
}

/// Why [`read`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer sent a header that is not acceptable.
    #[error(transparent)]
    Header(#[from] ProxyError),
    /// The peer closed before a whole header arrived (`true` when it sent
    /// nothing at all, as a bare TCP health check does).
    #[error("connection closed before the PROXY protocol header ended")]
    Closed(bool),
    /// Reading failed.
    #[error("reading the PROXY protocol header failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a PROXY header from the start of `stream`, consuming exactly its
/// bytes. Peeks to find the header's end, so the client's own bytes stay in
/// the socket for TLS or the HTTP reader. Callers bound it with a timeout.
pub async fn read(stream: &mut TcpStream, accept: ProxyProtocol) -> Result<Header, ReadError> {
    let mut buf = vec![0u8; MAX_LEN];
    let mut have = 0;
    loop {
        let n = stream.peek(&mut buf[have..]).await?;
        if n == 0 {
            return Err(ReadError::Closed(have == 0));
        }
        match parse(&buf[..have + n], accept)? {
            Parsed::Complete { header, len } => {
                stream.read_exact(&mut buf[have..len]).await?;
                return Ok(header);
            }
            // All of it is header: take it, so the next peek waits for more.
            Parsed::Incomplete => {
                stream.read_exact(&mut buf[have..have + n]).await?;
                have += n;
                if have == buf.len() {
                    return Err(ProxyError::Malformed("header too long").into());
                }
            }
        }
    }
}

/// Appends a header saying that `source` connected to `destination`. When
/// the two are of different families, the IPv4 one is written as an
/// IPv4-mapped IPv6 address, since a header carries one family.
pub fn write(
    version: ProxyVersion,
    source: SocketAddr,
    destination: SocketAddr,
    out: &mut Vec<u8>,
) {
    let (src, dst) = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
        (s, d) => (IpAddr::V6(to_v6(s)), IpAddr::V6(to_v6(d))),
    };
    match version {
        ProxyVersion::V1 => {
            let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            let line = format!(
                "PROXY {family} {src} {dst} {} {}\r\n",
                source.port(),
                destination.port()
            );
            out.extend_from_slice(line.as_bytes());
        }
        ProxyVersion::V2 => {
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21);
            match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.extend_from_slice(&[0x11, 0, 12]);
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.extend_from_slice(&[0x21, 0, 36]);
                    out.extend_from_slice(&to_v6(s).octets());
                    out.extend_from_slice(&to_v6(d).octets());
                }
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&destination.port().to_be_bytes());
        }
    }
}

/// Appends a header for a connection of the proxy's own (a health check):
/// v1 `UNKNOWN`, v2 `LOCAL`. The backend then uses the socket's addresses.
pub fn write_local(version: ProxyVersion, out: &mut Vec<u8>) {
    match version {
        ProxyVersion::V1 => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
        ProxyVersion::V2 => {
            out.extend_from_slice(&V2_SIGNATURE);
            out.extend_from_slice(&[0x20, 0x00, 0, 0]);
        }
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests;
