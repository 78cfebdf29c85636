//! The backend side of an upgrade: connect, send the client's request with
//! forwarding headers, and accept only a correct 101 (RFC 6455 section 4.1,
//! the client's duties, which the proxy performs towards the backend).

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use crate::rfc6455::{accept_for, has_token, list_items, MAX_HEADERS};

mod refusal;
mod tls;

pub use refusal::{Refusal, RefusalBody};
pub use tls::{BackendStream, Dial};

/// The most bytes a backend's answer head may take.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Why a backend could not be upgraded, and which backend: the address is
/// for the log; what a client may see is [`UpstreamFailure`] alone, since
/// backend addresses are the internal network's.
#[derive(Debug, thiserror::Error)]
#[error("{addr}: {kind}")]
pub struct UpstreamError {
    /// The backend.
    pub addr: SocketAddr,
    /// What went wrong.
    pub kind: UpstreamFailure,
}

/// What went wrong with a backend's upgrade, without naming the backend.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamFailure {
    /// The TCP connect failed (refused, unreachable).
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// The TLS handshake failed: the certificate did not verify for the
    /// backend's name, or the backend does not speak TLS.
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// No connection and answer within `connect_timeout`.
    #[error("no upgrade answer within {0:?} (connect_timeout)")]
    Timeout(Duration),
    /// The connection failed or closed before a whole answer head arrived.
    #[error("connection lost before the upgrade answer: {0}")]
    Lost(io::Error),
    /// The answer was not parsable HTTP/1.1, or its head was too large.
    #[error("malformed upgrade answer")]
    Malformed,
    /// An interim (1xx) status other than 101, or, for callers of
    /// [`upgrade`], any refusal.
    #[error("answered {0} instead of 101 Switching Protocols")]
    Status(u16),
    /// A refusal whose body did not arrive whole within `connect_timeout`.
    #[error("refusal answer cut short")]
    UnfinishedRefusal,
    /// 101 without `Upgrade: websocket` and `Connection: upgrade`.
    #[error("101 answer lacks Upgrade: websocket or Connection: upgrade")]
    NotWebSocket,
    /// `Sec-WebSocket-Accept` missing or wrong for the client's key.
    #[error("wrong Sec-WebSocket-Accept")]
    BadAccept,
    /// A subprotocol the client did not offer.
    #[error("chose a subprotocol the client did not offer")]
    UnofferedProtocol,
    /// An extension the client did not offer.
    #[error("chose an extension the client did not offer")]
    UnofferedExtension,
}

impl UpstreamError {
    /// See [`UpstreamFailure::is_unreachable`].
    pub fn is_unreachable(&self) -> bool {
        self.kind.is_unreachable()
    }
}

impl UpstreamFailure {
    /// Whether another backend should be tried: only when this one never
    /// answered (contract, "Balancing"); a backend that answers wrongly is
    /// misconfigured and another attempt would hide it.
    pub fn is_unreachable(&self) -> bool {
        match self {
            UpstreamFailure::Connect(_)
            | UpstreamFailure::Tls(_)
            | UpstreamFailure::Timeout(_)
            | UpstreamFailure::Lost(_) => true,
            UpstreamFailure::Malformed
            | UpstreamFailure::Status(_)
            | UpstreamFailure::UnfinishedRefusal
            | UpstreamFailure::NotWebSocket
            | UpstreamFailure::BadAccept
            | UpstreamFailure::UnofferedProtocol
            | UpstreamFailure::UnofferedExtension => false,
        }
    }
}

/// Whether a failed connect is the proxy's own shortage (out of file
/// descriptors, socket buffers or local ports) rather than the backend's
/// fault: such a failure must not mark the backend down.
pub fn is_local_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::EADDRNOTAVAIL)
    )
}

impl UpstreamError {
    /// See [`UpstreamFailure::is_local_shortage`].
    pub fn is_local_shortage(&self) -> bool {
        self.kind.is_local_shortage()
    }
}

impl UpstreamFailure {
    /// Whether this failure is the proxy's own shortage (see
    /// [`is_local_shortage`]).
    pub fn is_local_shortage(&self) -> bool {
        matches!(self, UpstreamFailure::Connect(source) if is_local_shortage(source))
    }
}

/// Headers that describe one hop and are not forwarded (RFC 9110 section
/// 7.6.1); the upgrade pair is written anew. A refusal passed back drops the
/// first seven (the proxy-authentication pair concerns a client's proxy).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Headers the proxy sets itself, replacing whatever the client sent.
const REPLACED: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    crate::push::CONNECTION_ID_HEADER,
];

/// The client's request as it goes to the backend: path and query
/// unchanged, hop-by-hop headers removed, forwarding headers and the
/// connection's id (`X-Wsgate-Connection-Id`) added.
pub fn backend_request<B>(
    req: &Request<B>,
    client: SocketAddr,
    tls: bool,
    connection_id: &str,
) -> Vec<u8> {
    let headers = req.headers();
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || REPLACED.contains(&n) || is_connection_listed(headers, n) {
            continue;
        }
        push_header(&mut out, n.as_bytes(), value.as_bytes());
    }
    push_header(&mut out, b"connection", b"Upgrade");
    push_header(&mut out, b"upgrade", b"websocket");
    // Written in place, not gathered first: no allocation but `out`'s.
    out.extend_from_slice(b"x-forwarded-for: ");
    for prior in headers.get_all("x-forwarded-for") {
        out.extend_from_slice(prior.as_bytes());
        out.extend_from_slice(b", ");
    }
    let _ = write!(out, "{}\r\n", client.ip());
    push_header(
        &mut out,
        b"x-forwarded-proto",
        if tls { b"wss" } else { b"ws" },
    );
    if let Some(host) = headers.get(http::header::HOST) {
        push_header(&mut out, b"x-forwarded-host", host.as_bytes());
    }
    push_header(
        &mut out,
        crate::push::CONNECTION_ID_HEADER.as_bytes(),
        connection_id.as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    out
}

/// Header names the client listed in `Connection` as hop-by-hop.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
        .filter(|t| !t.is_empty())
        .map(|t| t.to_ascii_lowercase())
        .collect()
}

/// Whether `Connection` lists header `name` (lower-case, as `HeaderName`
/// keeps it) as hop-by-hop: [`connection_listed`] without collecting, so
/// that the upgrade request allocates nothing for it; a request has a
/// handful of headers and `Connection` tokens.
fn is_connection_listed(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the client offered, to check the backend's choices against.
#[derive(Debug, Default)]
pub struct Offer {
    protocols: Vec<String>,
    extensions: Vec<String>,
}

impl Offer {
    /// Reads `Sec-WebSocket-Protocol` and the extension names of
    /// `Sec-WebSocket-Extensions` from the client's request.
    pub fn from_request(headers: &HeaderMap) -> Offer {
        Offer {
            protocols: list_items(headers, http::header::SEC_WEBSOCKET_PROTOCOL),
            extensions: list_items(headers, http::header::SEC_WEBSOCKET_EXTENSIONS),
        }
    }
}

/// A backend connection past its 101.
#[derive(Debug)]
pub struct Upgraded {
    /// The backend connection.
    pub stream: BackendStream,
    /// Bytes the backend sent right after its 101 (its first frames).
    pub pre_read: Bytes,
    /// The 101 to pass to the client: the backend's status and headers.
    pub response: Response<Full<Bytes>>,
    /// `permessage-deflate` was negotiated: RSV1 is legal on first frames.
    pub deflate: bool,
    /// The subprotocol the backend chose, if any.
    pub protocol: Option<HeaderValue>,
}

/// How a backend answered an upgrade.
#[derive(Debug)]
pub enum Answer {
    /// A correct 101: relay.
    Upgraded(Upgraded),
    /// A complete answer of its own (401, 403, 429, ...): the
    /// application's decision, passed to the client.
    Refused(Refusal),
}

/// Connects to `addr`, sends `request`, and waits for a correct 101, all
/// within `timeout`; any other answer is an error (a refusal is
/// [`UpstreamFailure::Status`]). For callers that only want a WebSocket.
pub async fn upgrade(
    dial: &Dial,
    request: &[u8],
    key: &HeaderValue,
    offer: &Offer,
    timeout: Duration,
) -> Result<Upgraded, UpstreamError> {
    let addr = dial.addr;
    match answer_via(dial, request, key, offer, timeout).await? {
        Answer::Upgraded(upgraded) => Ok(upgraded),
        Answer::Refused(refusal) => Err(UpstreamError {
            addr,
            kind: UpstreamFailure::Status(refusal.status.as_u16()),
        }),
    }
}

/// Connects to a backend as `dial` says (plain or TLS), writes the upgrade
/// `request` and reads and checks its answer; the TLS handshake counts
/// against `timeout` too.
pub async fn answer_via(
    dial: &Dial,
    request: &[u8],
    key: &HeaderValue,
    offer: &Offer,
    timeout: Duration,
) -> Result<Answer, UpstreamError> {
    let addr = dial.addr;
    let deadline = Instant::now() + timeout;
    let error = |kind| UpstreamError { addr, kind };
    let (stream, buf) = match timeout_at(deadline, send_and_read_head(dial, request)).await {
        Ok(result) => result.map_err(error)?,
        Err(_) => return Err(error(UpstreamFailure::Timeout(timeout))),
    };
    let parsed = parse_head(buf).map_err(error)?;
    if parsed.status == StatusCode::SWITCHING_PROTOCOLS {
        let upgraded = validate(parsed, stream, key, offer).map_err(error)?;
        return Ok(Answer::Upgraded(upgraded));
    }
    if parsed.status.is_informational() {
        return Err(error(UpstreamFailure::Status(parsed.status.as_u16())));
    }
    // The backend has answered: from here on a failure is not a reason to
    // try another backend, so the body's own errors are not `Timeout`.
    match timeout_at(deadline, refusal::read(parsed, stream)).await {
        Ok(result) => result.map(Answer::Refused).map_err(error),
        Err(_) => Err(error(UpstreamFailure::UnfinishedRefusal)),
    }
}

/// Connects, sends the request, and reads until a whole answer head is in
/// the buffer (which may hold more: frames or body bytes).
async fn send_and_read_head(
    dial: &Dial,
    request: &[u8],
) -> Result<(BackendStream, BytesMut), UpstreamFailure> {
    let mut stream = dial.connect().await?;
    stream
        .write_all(request)
        .await
        .map_err(UpstreamFailure::Lost)?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(UpstreamFailure::Malformed);
        }
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(UpstreamFailure::Lost)?
            == 0
        {
            return Err(UpstreamFailure::Lost(io::ErrorKind::UnexpectedEof.into()));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::Response::new(&mut headers).parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(_)) => return Ok((stream, buf)),
            Err(_) => return Err(UpstreamFailure::Malformed),
        }
    }
}

/// An answer head, parsed, and what followed it.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    /// Bytes after the head: the first frames after a 101, or body bytes.
    rest: BytesMut,
}

fn parse_head(mut buf: BytesMut) -> Result<Head, UpstreamFailure> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut raw);
    let len = match res.parse(&buf) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return Err(UpstreamFailure::Malformed),
    };
    let status = res
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(UpstreamFailure::Malformed)?;
    let mut headers = HeaderMap::with_capacity(res.headers.len());
    for h in res.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes());
        let value = HeaderValue::from_bytes(h.value);
        match (name, value) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => return Err(UpstreamFailure::Malformed),
        }
    }
    let rest = buf.split_off(len);
    Ok(Head {
        status,
        headers,
        rest,
    })
}

fn validate(
    head: Head,
    stream: BackendStream,
    key: &HeaderValue,
    offer: &Offer,
) -> Result<Upgraded, UpstreamFailure> {
    let Head {
        mut headers, rest, ..
    } = head;
    if !has_token(&headers, http::header::UPGRADE, "websocket")
        || !has_token(&headers, http::header::CONNECTION, "upgrade")
    {
        return Err(UpstreamFailure::NotWebSocket);
    }
    let expected = accept_for(key.as_bytes());
    match headers.get(http::header::SEC_WEBSOCKET_ACCEPT) {
        Some(v) if v.as_bytes().trim_ascii() == expected.as_bytes() => {}
        _ => return Err(UpstreamFailure::BadAccept),
    }
    let chosen = list_items(&headers, http::header::SEC_WEBSOCKET_PROTOCOL);
    if chosen.len() > 1 || chosen.iter().any(|p| !offer.protocols.contains(p)) {
        return Err(UpstreamFailure::UnofferedProtocol);
    }
    let extensions = list_items(&headers, http::header::SEC_WEBSOCKET_EXTENSIONS);
    if extensions.iter().any(|e| !offer.extensions.contains(e)) {
        return Err(UpstreamFailure::UnofferedExtension);
    }
    let deflate = extensions.iter().any(|e| e == "permessage-deflate");
    let protocol = headers.get(http::header::SEC_WEBSOCKET_PROTOCOL).cloned();
    // A 101 has no body; these would only confuse the client's parser.
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(http::header::TRANSFER_ENCODING);
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = headers;
    Ok(Upgraded {
        stream,
        pre_read: rest.freeze(),
        response,
        deflate,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_drops_hop_by_hop_and_adds_forwarding() {
        let req = Request::builder()
            .uri("/chat?room=1")
            .header("host", "chat.example:8080")
            .header("connection", "keep-alive, Upgrade, X-Secret")
            .header("upgrade", "WebSocket")
            .header("x-secret", "hop")
            .header("keep-alive", "timeout=5")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-proto", "spoofed")
            .header("sec-websocket-protocol", "chat")
            .body(())
            .unwrap();
        let out = backend_request(&req, "127.0.0.7:5000".parse().unwrap(), true, "n.1.1");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /chat?room=1 HTTP/1.1\r\n"));
        assert!(text.contains("host: chat.example:8080\r\n"));
        assert!(text.contains("sec-websocket-protocol: chat\r\n"));
        assert!(text.contains("x-forwarded-for: 10.0.0.1, 127.0.0.7\r\n"));
        assert!(text.contains("x-forwarded-proto: wss\r\n"));
        assert!(text.contains("x-forwarded-host: chat.example:8080\r\n"));
        assert!(!text.contains("x-secret"));
        assert!(!text.contains("keep-alive"));
        assert!(!text.contains("spoofed"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn offer_lists_extension_names_without_parameters() {
        let mut h = HeaderMap::new();
        h.append(
            "sec-websocket-extensions",
            HeaderValue::from_static("permessage-deflate; client_max_window_bits, x-foo"),
        );
        let offer = Offer::from_request(&h);
        assert_eq!(offer.extensions, ["permessage-deflate", "x-foo"]);
    }

    #[test]
    fn reasons_a_client_sees_name_no_backend() {
        let e = UpstreamError {
            addr: "10.1.2.3:4567".parse().unwrap(),
            kind: UpstreamFailure::BadAccept,
        };
        assert!(e.to_string().contains("10.1.2.3:4567"), "the log names it");
        assert!(!e.kind.to_string().contains("4567"));
    }
}
