//! The backend side of an upgrade: connect, send the client's request with
//! forwarding headers, and accept only a correct 101 (RFC 6455 section 4.1,
//! the client's duties, which the proxy performs towards the backend).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::handshake::{accept_for, has_token, MAX_HEADERS};

/// The most bytes a backend's 101 head may take.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Why a backend could not be upgraded; carries the backend's address so an
/// operator reading the 502 reason or the log knows which one to look at.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connect failed (refused, unreachable).
    #[error("{addr}: connect failed: {source}")]
    Connect {
        /// The backend.
        addr: SocketAddr,
        /// The operating system's reason.
        source: io::Error,
    },
    /// No connection and 101 within `connect_timeout`.
    #[error("{addr}: no upgrade answer within {timeout:?} (connect_timeout)")]
    Timeout {
        /// The backend.
        addr: SocketAddr,
        /// The route's `connect_timeout`.
        timeout: Duration,
    },
    /// The connection failed or closed before a whole answer arrived.
    #[error("{addr}: connection lost before the upgrade answer: {source}")]
    Lost {
        /// The backend.
        addr: SocketAddr,
        /// What happened.
        source: io::Error,
    },
    /// The answer was not parsable HTTP/1.1, or its head was too large.
    #[error("{addr}: malformed upgrade answer")]
    Malformed {
        /// The backend.
        addr: SocketAddr,
    },
    /// The backend answered with another status than 101.
    #[error("{addr}: answered {status} instead of 101 Switching Protocols")]
    Status {
        /// The backend.
        addr: SocketAddr,
        /// What it answered.
        status: u16,
    },
    /// 101 without `Upgrade: websocket` and `Connection: upgrade`.
    #[error("{addr}: 101 answer lacks Upgrade: websocket or Connection: upgrade")]
    NotWebSocket {
        /// The backend.
        addr: SocketAddr,
    },
    /// `Sec-WebSocket-Accept` missing or wrong for the client's key.
    #[error("{addr}: wrong Sec-WebSocket-Accept")]
    BadAccept {
        /// The backend.
        addr: SocketAddr,
    },
    /// A subprotocol the client did not offer.
    #[error("{addr}: chose a subprotocol the client did not offer")]
    UnofferedProtocol {
        /// The backend.
        addr: SocketAddr,
    },
    /// An extension the client did not offer.
    #[error("{addr}: chose an extension the client did not offer")]
    UnofferedExtension {
        /// The backend.
        addr: SocketAddr,
    },
}

impl UpstreamError {
    /// Whether another backend should be tried: only when this one never
    /// answered (contract, "Balancing"); a backend that answers wrongly is
    /// misconfigured and another attempt would hide it.
    pub fn is_unreachable(&self) -> bool {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::Timeout { .. }
            | UpstreamError::Lost { .. } => true,
            UpstreamError::Malformed { .. }
            | UpstreamError::Status { .. }
            | UpstreamError::NotWebSocket { .. }
            | UpstreamError::BadAccept { .. }
            | UpstreamError::UnofferedProtocol { .. }
            | UpstreamError::UnofferedExtension { .. } => false,
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
    /// Whether this failure is the proxy's own shortage (see
    /// [`is_local_shortage`]).
    pub fn is_local_shortage(&self) -> bool {
        matches!(self, UpstreamError::Connect { source, .. } if is_local_shortage(source))
    }
}

/// Headers that describe one hop and are not forwarded (RFC 9110 section
/// 7.6.1); the upgrade pair is written anew.
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
const REPLACED: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// The client's request as it goes to the backend: path and query
/// unchanged, hop-by-hop headers removed, forwarding headers added.
pub fn backend_request<B>(req: &Request<B>, client: SocketAddr, tls: bool) -> Vec<u8> {
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
    let listed = connection_listed(headers);
    for (name, value) in headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || REPLACED.contains(&n) || listed.iter().any(|l| l == n) {
            continue;
        }
        push_header(&mut out, n.as_bytes(), value.as_bytes());
    }
    push_header(&mut out, b"connection", b"Upgrade");
    push_header(&mut out, b"upgrade", b"websocket");
    let mut xff = Vec::new();
    for prior in headers.get_all("x-forwarded-for") {
        xff.extend_from_slice(prior.as_bytes());
        xff.extend_from_slice(b", ");
    }
    xff.extend_from_slice(client.ip().to_string().as_bytes());
    push_header(&mut out, b"x-forwarded-for", &xff);
    push_header(
        &mut out,
        b"x-forwarded-proto",
        if tls { b"wss" } else { b"ws" },
    );
    if let Some(host) = headers.get(http::header::HOST) {
        push_header(&mut out, b"x-forwarded-host", host.as_bytes());
    }
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

/// Items of a comma list, each cut at its first `;` (extension parameters).
fn list_items(headers: &HeaderMap, name: HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|item| item.split(|&b| b == b';').next())
        .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
        .filter(|t| !t.is_empty())
        .map(|t| t.to_ascii_lowercase())
        .collect()
}

/// A backend connection past its 101.
#[derive(Debug)]
pub struct Upgraded {
    /// The backend connection.
    pub stream: TcpStream,
    /// Bytes the backend sent right after its 101 (its first frames).
    pub pre_read: Bytes,
    /// The 101 to pass to the client: the backend's status and headers.
    pub response: Response<Full<Bytes>>,
    /// `permessage-deflate` was negotiated: RSV1 is legal on first frames.
    pub deflate: bool,
    /// The subprotocol the backend chose, if any.
    pub protocol: Option<HeaderValue>,
}

/// Connects to `addr`, sends `request`, and waits for a correct 101, all
/// within `timeout`.
pub async fn upgrade(
    addr: SocketAddr,
    request: &[u8],
    key: &HeaderValue,
    offer: &Offer,
    timeout: Duration,
) -> Result<Upgraded, UpstreamError> {
    match tokio::time::timeout(timeout, exchange(addr, request, key, offer)).await {
        Ok(result) => result,
        Err(_) => Err(UpstreamError::Timeout { addr, timeout }),
    }
}

async fn exchange(
    addr: SocketAddr,
    request: &[u8],
    key: &HeaderValue,
    offer: &Offer,
) -> Result<Upgraded, UpstreamError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    // Small frames must not wait for Nagle's algorithm on either side.
    let _ = stream.set_nodelay(true);
    let lost = |source| UpstreamError::Lost { addr, source };
    stream.write_all(request).await.map_err(lost)?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(UpstreamError::Malformed { addr });
        }
        if stream.read_buf(&mut buf).await.map_err(lost)? == 0 {
            return Err(lost(io::ErrorKind::UnexpectedEof.into()));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        match res.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err(UpstreamError::Malformed { addr }),
            Ok(httparse::Status::Complete(len)) => {
                let (response, deflate, protocol) = validate(addr, &res, key, offer)?;
                let pre_read = buf.split_off(len).freeze();
                return Ok(Upgraded {
                    stream,
                    pre_read,
                    response,
                    deflate,
                    protocol,
                });
            }
        }
    }
}

type Validated = (Response<Full<Bytes>>, bool, Option<HeaderValue>);

fn validate(
    addr: SocketAddr,
    res: &httparse::Response<'_, '_>,
    key: &HeaderValue,
    offer: &Offer,
) -> Result<Validated, UpstreamError> {
    let status = res.code.unwrap_or(0);
    if status != 101 {
        return Err(UpstreamError::Status { addr, status });
    }
    let mut builder = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    let headers = builder.headers_mut().expect("fresh builder");
    for h in res.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes());
        let value = HeaderValue::from_bytes(h.value);
        match (name, value) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => return Err(UpstreamError::Malformed { addr }),
        }
    }
    if !has_token(headers, http::header::UPGRADE, "websocket")
        || !has_token(headers, http::header::CONNECTION, "upgrade")
    {
        return Err(UpstreamError::NotWebSocket { addr });
    }
    let expected = accept_for(key.as_bytes());
    match headers.get(http::header::SEC_WEBSOCKET_ACCEPT) {
        Some(v) if v.as_bytes().trim_ascii() == expected.as_bytes() => {}
        _ => return Err(UpstreamError::BadAccept { addr }),
    }
    let chosen = list_items(headers, http::header::SEC_WEBSOCKET_PROTOCOL);
    if chosen.len() > 1 || chosen.iter().any(|p| !offer.protocols.contains(p)) {
        return Err(UpstreamError::UnofferedProtocol { addr });
    }
    let extensions = list_items(headers, http::header::SEC_WEBSOCKET_EXTENSIONS);
    if extensions.iter().any(|e| !offer.extensions.contains(e)) {
        return Err(UpstreamError::UnofferedExtension { addr });
    }
    let deflate = extensions.iter().any(|e| e == "permessage-deflate");
    let protocol = headers.get(http::header::SEC_WEBSOCKET_PROTOCOL).cloned();
    // A 101 has no body; these would only confuse the client's parser.
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(http::header::TRANSFER_ENCODING);
    let response = builder
        .body(Full::new(Bytes::new()))
        .map_err(|_| UpstreamError::Malformed { addr })?;
    Ok((response, deflate, protocol))
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
        let out = backend_request(&req, "127.0.0.7:5000".parse().unwrap(), true);
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
}
