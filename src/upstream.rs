//! The backend side of an upgrade: connect, send the client's request with
//! forwarding headers, and accept only a correct 101 (RFC 6455 section 4.1,
//! the client's duties, which the proxy performs towards the backend).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::rfc6455::{accept_for, has_token, list_items, MAX_HEADERS};

/// The most bytes a backend's answer head may take.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The most of a refusal's body passed to the client (contract, handshake
/// table); a longer body is cut here and the client's connection closed.
pub const MAX_REFUSAL_BODY: usize = 64 * 1024;

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

/// How a backend answered an upgrade.
#[derive(Debug)]
pub enum Answer {
    /// A correct 101: relay.
    Upgraded(Upgraded),
    /// A complete answer of its own (401, 403, 429, ...): the
    /// application's decision, passed to the client.
    Refused(Refusal),
}

/// A backend's complete non-101 answer, ready to pass to the client.
#[derive(Debug)]
pub struct Refusal {
    /// The backend's status.
    pub status: StatusCode,
    /// Its headers, hop-by-hop ones and its framing removed.
    pub headers: HeaderMap,
    /// Its body, at most [`MAX_REFUSAL_BODY`] bytes.
    pub body: Bytes,
    /// The body was longer and is cut: the client must see an incomplete
    /// answer and a closed connection, not a short body that looks whole.
    pub cut: bool,
    /// The backend's `Content-Length`, kept for a cut body so that the
    /// client can tell it is incomplete.
    declared: Option<u64>,
}

impl Refusal {
    /// The answer the client gets. The connection closes after it: the
    /// proxy serves one upgrade per connection.
    pub fn into_response(self) -> Response<RefusalBody> {
        let mut response = Response::new(RefusalBody {
            data: Some(self.body),
            cut: self.cut,
        });
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        let headers = response.headers_mut();
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        if let (true, Some(len)) = (self.cut, self.declared) {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        response
    }
}

/// The body of a passed-on refusal: the bytes kept, then, when the
/// backend's body was cut, an error that makes hyper abort the connection
/// instead of ending the answer as if it were whole.
#[derive(Debug)]
pub struct RefusalBody {
    data: Option<Bytes>,
    cut: bool,
}

impl Body for RefusalBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(data) = self.data.take().filter(|d| !d.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if std::mem::take(&mut self.cut) {
            return Poll::Ready(Some(Err(io::Error::other(
                "backend refusal body cut at 64 KiB",
            ))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(Bytes::is_empty) && !self.cut
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.data, self.cut) {
            (_, true) => SizeHint::default(),
            (Some(d), false) => SizeHint::with_exact(d.len() as u64),
            (None, false) => SizeHint::with_exact(0),
        }
    }
}

/// Connects to `addr`, sends `request`, and waits for a correct 101, all
/// within `timeout`; any other answer is an error (a refusal is
/// [`UpstreamFailure::Status`]). For callers that only want a WebSocket.
pub async fn upgrade(
    addr: SocketAddr,
    request: &[u8],
    key: &HeaderValue,
    offer: &Offer,
    timeout: Duration,
) -> Result<Upgraded, UpstreamError> {
    match answer(addr, request, key, offer, timeout).await? {
        Answer::Upgraded(upgraded) => Ok(upgraded),
        Answer::Refused(refusal) => Err(UpstreamError {
            addr,
            kind: UpstreamFailure::Status(refusal.status.as_u16()),
        }),
    }
}

/// Connects to `addr`, sends `request`, and reads the backend's answer, all
/// within `timeout`: a correct 101, or a complete refusal with its body.
pub async fn answer(
    addr: SocketAddr,
    request: &[u8],
    key: &HeaderValue,
    offer: &Offer,
    timeout: Duration,
) -> Result<Answer, UpstreamError> {
    let deadline = Instant::now() + timeout;
    let error = |kind| UpstreamError { addr, kind };
    let (stream, buf) = match timeout_at(deadline, send_and_read_head(addr, request)).await {
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
    match timeout_at(deadline, read_refusal(parsed, stream)).await {
        Ok(result) => result.map(Answer::Refused).map_err(error),
        Err(_) => Err(error(UpstreamFailure::UnfinishedRefusal)),
    }
}

/// Connects, sends the request, and reads until a whole answer head is in
/// the buffer (which may hold more: frames or body bytes).
async fn send_and_read_head(
    addr: SocketAddr,
    request: &[u8],
) -> Result<(TcpStream, BytesMut), UpstreamFailure> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(UpstreamFailure::Connect)?;
    // Small frames must not wait for Nagle's algorithm on either side.
    let _ = stream.set_nodelay(true);
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
    stream: TcpStream,
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

/// How a refusal's body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// 1xx, 204 and 304 answers have none.
    Bodiless,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding` ending in chunked.
    Chunked,
    /// Anything else: the body ends when the backend closes.
    UntilClose,
}

fn framing(status: StatusCode, headers: &HeaderMap) -> Result<Framing, UpstreamFailure> {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Bodiless);
    }
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        let chunked = list_items(headers, http::header::TRANSFER_ENCODING)
            .last()
            .is_some_and(|c| c == "chunked");
        return Ok(if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    let mut length = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        let n = std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or(UpstreamFailure::Malformed)?;
        if length.is_some_and(|l| l != n) {
            return Err(UpstreamFailure::Malformed);
        }
        length = Some(n);
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// Reads a refusal's body (at most [`MAX_REFUSAL_BODY`] of it) and strips
/// the headers that describe the backend's hop or its framing.
async fn read_refusal(head: Head, mut stream: TcpStream) -> Result<Refusal, UpstreamFailure> {
    let Head {
        status,
        mut headers,
        rest,
    } = head;
    let framing = framing(status, &headers)?;
    let (body, cut) = read_body(&mut stream, rest, framing).await?;
    let listed = connection_listed(&headers);
    for name in HOP_BY_HOP[..7]
        .iter()
        .copied()
        .chain(listed.iter().map(String::as_str))
    {
        headers.remove(name);
    }
    headers.remove(http::header::CONTENT_LENGTH);
    Ok(Refusal {
        status,
        headers,
        body,
        cut,
        declared: match framing {
            Framing::Length(n) => Some(n),
            Framing::Bodiless | Framing::Chunked | Framing::UntilClose => None,
        },
    })
}

/// The body as `framing` delimits it, cut at [`MAX_REFUSAL_BODY`]; `true`
/// when it was cut. Memory stays bounded by the cap plus one read.
async fn read_body(
    stream: &mut TcpStream,
    mut raw: BytesMut,
    framing: Framing,
) -> Result<(Bytes, bool), UpstreamFailure> {
    match framing {
        Framing::Bodiless => Ok((Bytes::new(), false)),
        Framing::Length(n) => {
            let want = n.min(MAX_REFUSAL_BODY as u64) as usize;
            while raw.len() < want {
                more(stream, &mut raw).await?;
            }
            raw.truncate(want);
            Ok((raw.freeze(), n > MAX_REFUSAL_BODY as u64))
        }
        Framing::UntilClose => {
            while raw.len() <= MAX_REFUSAL_BODY {
                match stream.read_buf(&mut raw).await {
                    Ok(0) => return Ok((raw.freeze(), false)),
                    Ok(_) => {}
                    Err(_) => return Err(UpstreamFailure::UnfinishedRefusal),
                }
            }
            raw.truncate(MAX_REFUSAL_BODY);
            Ok((raw.freeze(), true))
        }
        Framing::Chunked => {
            let mut body = BytesMut::new();
            let mut dechunk = Dechunk::default();
            loop {
                match dechunk.step(&mut raw, &mut body)? {
                    Step::Done => return Ok((body.freeze(), false)),
                    Step::Full => {
                        body.truncate(MAX_REFUSAL_BODY);
                        return Ok((body.freeze(), true));
                    }
                    Step::NeedMore => more(stream, &mut raw).await?,
                }
            }
        }
    }
}

/// Reads more of a refusal's body; the backend closing or failing first
/// leaves it unfinished.
async fn more(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), UpstreamFailure> {
    match stream.read_buf(buf).await {
        Ok(0) | Err(_) => Err(UpstreamFailure::UnfinishedRefusal),
        Ok(_) => Ok(()),
    }
}

/// A sans-io chunked-body decoder (RFC 9112 section 7.1) that moves chunk
/// data out of the read buffer as it arrives, so that one huge chunk costs
/// no more memory than the cap.
#[derive(Debug, Default)]
struct Dechunk {
    /// Data bytes of the current chunk not yet moved.
    remaining: u64,
    /// The CRLF after a chunk's data is still to be consumed.
    crlf_due: bool,
}

/// What [`Dechunk::step`] needs next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// The last chunk was seen (trailers are not needed and not read).
    Done,
    /// The body holds more than [`MAX_REFUSAL_BODY`].
    Full,
    /// More input is needed.
    NeedMore,
}

/// A chunk-size line longer than this is malformed (extensions included).
const MAX_CHUNK_LINE: usize = 4096;

impl Dechunk {
    fn step(&mut self, raw: &mut BytesMut, body: &mut BytesMut) -> Result<Step, UpstreamFailure> {
        loop {
            if self.remaining > 0 {
                let take = (self.remaining.min(raw.len() as u64)) as usize;
                body.extend_from_slice(&raw[..take]);
                raw.advance(take);
                self.remaining -= take as u64;
                if body.len() > MAX_REFUSAL_BODY {
                    return Ok(Step::Full);
                }
                if self.remaining > 0 {
                    return Ok(Step::NeedMore);
                }
                self.crlf_due = true;
            }
            if self.crlf_due {
                if raw.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &raw[..2] != b"\r\n" {
                    return Err(UpstreamFailure::Malformed);
                }
                raw.advance(2);
                self.crlf_due = false;
            }
            match httparse::parse_chunk_size(raw) {
                Ok(httparse::Status::Complete((used, 0))) => {
                    raw.advance(used);
                    return Ok(Step::Done);
                }
                Ok(httparse::Status::Complete((used, size))) => {
                    raw.advance(used);
                    self.remaining = size;
                }
                Ok(httparse::Status::Partial) if raw.len() < MAX_CHUNK_LINE => {
                    return Ok(Step::NeedMore)
                }
                Ok(httparse::Status::Partial) | Err(_) => return Err(UpstreamFailure::Malformed),
            }
        }
    }
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

    /// Feeds `input` to the decoder in pieces of `split` bytes.
    fn dechunk(input: &[u8], split: usize) -> Result<(Vec<u8>, Step), UpstreamFailure> {
        let mut d = Dechunk::default();
        let mut raw = BytesMut::new();
        let mut body = BytesMut::new();
        for piece in input.chunks(split) {
            raw.extend_from_slice(piece);
            match d.step(&mut raw, &mut body)? {
                Step::NeedMore => {}
                done => return Ok((body.to_vec(), done)),
            }
        }
        Ok((body.to_vec(), Step::NeedMore))
    }

    #[test]
    fn chunked_bodies_decode_across_any_read_split() {
        let input = b"6\r\nnot on\r\n9;ext=1\r\n this map\r\n0\r\nX-Trailer: t\r\n\r\n";
        for split in 1..=input.len() {
            let (body, step) = dechunk(input, split).unwrap();
            assert_eq!(step, Step::Done, "split {split}");
            assert_eq!(body, b"not on this map", "split {split}");
        }
    }

    #[test]
    fn chunked_bodies_stop_at_the_cap_and_reject_garbage() {
        let big = format!(
            "{:x}\r\n{}",
            2 * MAX_REFUSAL_BODY,
            "y".repeat(2 * MAX_REFUSAL_BODY)
        );
        let (body, step) = dechunk(big.as_bytes(), 4096).unwrap();
        assert_eq!(step, Step::Full);
        assert!(body.len() > MAX_REFUSAL_BODY && body.len() <= MAX_REFUSAL_BODY + 4096);
        assert!(matches!(
            dechunk(b"zz\r\n", 8),
            Err(UpstreamFailure::Malformed)
        ));
        assert!(matches!(
            dechunk(b"2\r\nabXY0\r\n\r\n", 64),
            Err(UpstreamFailure::Malformed)
        ));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (n, v) in pairs {
                m.append(*n, HeaderValue::from_static(v));
            }
            m
        };
        let f = |status: u16, headers: HeaderMap| {
            framing(StatusCode::from_u16(status).unwrap(), &headers)
        };
        assert_eq!(
            f(204, h(&[("content-length", "5")])).unwrap(),
            Framing::Bodiless
        );
        assert_eq!(f(304, h(&[])).unwrap(), Framing::Bodiless);
        assert_eq!(
            f(401, h(&[("content-length", "5")])).unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            f(401, h(&[("content-length", "5"), ("content-length", "5")])).unwrap(),
            Framing::Length(5)
        );
        assert!(f(401, h(&[("content-length", "5"), ("content-length", "6")])).is_err());
        assert!(f(401, h(&[("content-length", "-1")])).is_err());
        assert_eq!(
            f(
                401,
                h(&[
                    ("transfer-encoding", "gzip, Chunked"),
                    ("content-length", "5")
                ])
            )
            .unwrap(),
            Framing::Chunked
        );
        assert_eq!(
            f(401, h(&[("transfer-encoding", "gzip")])).unwrap(),
            Framing::UntilClose
        );
        assert_eq!(f(401, h(&[])).unwrap(), Framing::UntilClose);
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
