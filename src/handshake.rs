//! The client's upgrade request: reading it under a size limit and a deadline,
//! checking it against RFC 6455 section 4.2.1 in the order of the contract's
//! handshake table, and the rejections that answer a bad one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::Full;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::config::Route;
use crate::rfc6455::{has_token, valid_key};
use crate::upstream::UpstreamFailure;

/// Re-exported where callers have always found them; they live in the leaf
/// [`crate::rfc6455`] so that `upstream` need not import this module.
pub use crate::rfc6455::{accept_for, MAX_HEADERS};

/// Why a request is refused; each maps to one status code and one reason.
#[derive(Debug, thiserror::Error)]
pub enum Reject {
    /// Request line plus headers exceed the listener's `max_header_bytes`.
    #[error("request header too large")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    #[error("too many request header fields")]
    TooManyHeaders,
    /// Not parsable as an HTTP/1.x request.
    #[error("malformed HTTP request: {0}")]
    Malformed(&'static str),
    /// A TLS ClientHello arrived on a plain listener.
    #[error("TLS handshake sent to a plain ws:// listener; use ws:// or the wss:// port")]
    TlsOnPlainListener,
    /// Plain bytes arrived on a TLS listener.
    #[error("plain HTTP sent to a TLS listener; use wss://")]
    PlainOnTlsListener,
    /// No route matches the host and path.
    #[error("no route for this host and path")]
    NoRoute,
    /// The method is not GET.
    #[error("method not allowed: a WebSocket upgrade is a GET")]
    NotGet,
    /// HTTP/1.0 cannot upgrade.
    #[error("HTTP/1.1 is required for a WebSocket upgrade")]
    Http10,
    /// No Host header.
    #[error("missing Host header")]
    NoHost,
    /// More than one Host header (RFC 9112 section 3.2 requires a 400):
    /// the proxy would route on one and the backend might use another.
    #[error("more than one Host header")]
    DuplicateHost,
    /// No `websocket` token in `Upgrade`.
    #[error("this route only accepts WebSocket upgrades (Upgrade: websocket); set http = \"proxy\" on the route to proxy plain HTTP")]
    NotWebSocket,
    /// An upgrade request with a body (`Transfer-Encoding`, or a non-zero
    /// `Content-Length`): the proxy and the backend would disagree about
    /// where the first frame starts.
    #[error(
        "a WebSocket upgrade request must not have a body (Transfer-Encoding or Content-Length)"
    )]
    BodyOnUpgrade,
    /// No `upgrade` token in `Connection`.
    #[error("Connection header lacks the upgrade token")]
    NoConnectionUpgrade,
    /// The route's push tags could not be read from the request.
    #[error("{0}")]
    BadTags(crate::push::tags::TagError),
    /// `Sec-WebSocket-Key` missing or not base64 of 16 bytes.
    #[error("Sec-WebSocket-Key missing or not base64 of 16 bytes")]
    BadKey,
    /// `Sec-WebSocket-Version` missing or not 13.
    #[error("unsupported Sec-WebSocket-Version: only 13 is supported")]
    BadVersion,
    /// More than one `Origin` header: the check would see one and the
    /// backend might use another.
    #[error("more than one Origin header")]
    DuplicateOrigin,
    /// `Origin` not in the route's `allowed_origins`.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// Every backend is down, draining or at its cap.
    #[error("no backend available")]
    NoBackend,
    /// The pool's backends come from names that have not resolved yet
    /// (the names are the configuration's, not backend addresses).
    #[error("no backend available: {}", not_resolving(.0))]
    Unresolved(Vec<String>),
    /// The proxy itself ran short (file descriptors, buffers, local
    /// ports) while connecting to a backend; the backend is not at fault.
    #[error("proxy out of local resources; try again shortly")]
    LocalShortage,
    /// Backends were tried and every attempt failed. The reason names no
    /// address: backends are internal, and the log names them.
    #[error("backend unreachable: {0}")]
    BackendsFailed(UpstreamFailure),
    /// A backend answered, but neither with a valid 101 nor with a complete
    /// refusal of its own.
    #[error("bad answer from backend: {0}")]
    BadBackendAnswer(UpstreamFailure),
}

/// At most three names, so that a reason stays short (contract: under
/// 1 KiB) however many entries a pool has.
fn not_resolving(names: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    match names.len() {
        1 => text + " does not resolve yet",
        _ => text + " do not resolve yet",
    }
}

impl Reject {
    /// The status code the contract assigns to this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::HeadTooLarge | Reject::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Reject::Malformed(_)
            | Reject::TlsOnPlainListener
            | Reject::PlainOnTlsListener
            | Reject::Http10
            | Reject::NoHost
            | Reject::DuplicateHost
            | Reject::BodyOnUpgrade
            | Reject::DuplicateOrigin
            | Reject::NoConnectionUpgrade
            | Reject::BadTags(_)
            | Reject::BadKey => StatusCode::BAD_REQUEST,
            Reject::NoRoute => StatusCode::NOT_FOUND,
            Reject::NotGet => StatusCode::METHOD_NOT_ALLOWED,
            Reject::NotWebSocket | Reject::BadVersion => StatusCode::UPGRADE_REQUIRED,
            Reject::OriginNotAllowed => StatusCode::FORBIDDEN,
            Reject::NoBackend | Reject::Unresolved(_) | Reject::LocalShortage => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Reject::BackendsFailed(_) | Reject::BadBackendAnswer(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The header the status code requires (RFC 6455 section 4.2.2 and
    /// RFC 9110 section 15.5.22 for 426), if any.
    fn extra_header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Reject::NotWebSocket => Some(("upgrade", "websocket")),
            Reject::BadVersion => Some(("sec-websocket-version", "13")),
            Reject::NotGet => Some(("allow", "GET")),
            _ => None,
        }
    }

    /// The whole response: status, the headers its status requires, and a
    /// one-line plain-text reason. The connection closes after it.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let mut builder = Response::builder()
            .status(self.status())
            .header("content-type", "text/plain; charset=utf-8")
            .header("connection", "close");
        if let Some((name, value)) = self.extra_header() {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(Bytes::from(format!("{self}\n"))))
            .expect("static status and headers are valid")
    }

    /// The response as raw HTTP/1.1 bytes, for answers written before hyper
    /// has the connection (head too large, malformed, wrong protocol).
    pub fn raw_response(&self) -> Vec<u8> {
        let body = format!("{self}\n");
        let status = self.status();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if let Some((name, value)) = self.extra_header() {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&body);
        out.into_bytes()
    }
}

/// Reads until the end of the request head (`\r\n\r\n`) or until more than
/// `limit` bytes arrived without one. The returned buffer holds the head
/// and whatever the client sent after it (its first frames, possibly), and
/// the head has been checked to parse.
///
/// The caller bounds this with the handshake deadline: a client that sends
/// its request slowly, or never, is cut off there.
pub async fn read_head<IO: AsyncRead + Unpin>(
    io: &mut IO,
    limit: usize,
    first_byte_check: Option<FirstByte>,
) -> Result<BytesMut, ReadHeadError> {
    let mut buf = BytesMut::with_capacity(1024.min(limit + 4));
    let mut scanned: usize = 0;
    loop {
        if buf.capacity() - buf.len() < 256 {
            // Growth stops once the limit is passed, so this stays bounded.
            buf.reserve(2048);
        }
        let n = io.read_buf(&mut buf).await.map_err(ReadHeadError::Io)?;
        if n == 0 {
            return Err(ReadHeadError::Eof);
        }
        if scanned == 0 {
            if let Some(check) = first_byte_check {
                check.verify(buf[0])?;
            }
        }
        // Resume the search three bytes back: the terminator may straddle reads.
        let from = scanned.saturating_sub(3);
        let head_end = find_head_end(&buf[from..]).map(|pos| from + pos + 4);
        // A head with bare LF line endings never shows `\r\n\r\n`: refuse
        // it now rather than let it wait for the 408.
        if has_bare_lf(&buf[..head_end.unwrap_or(buf.len())], scanned) {
            return Err(ReadHeadError::Reject(Reject::Malformed(
                "bare LF line ending: lines end with CRLF",
            )));
        }
        if let Some(head_len) = head_end {
            if head_len > limit {
                return Err(ReadHeadError::Reject(Reject::HeadTooLarge));
            }
            check_parses(&buf[..head_len])?;
            return Ok(buf);
        }
        if buf.len() > limit {
            return Err(ReadHeadError::Reject(Reject::HeadTooLarge));
        }
        scanned = buf.len();
    }
}

/// What the first byte of a connection must (not) be on this listener.
#[derive(Debug, Clone, Copy)]
pub enum FirstByte {
    /// A plain listener: a TLS handshake record is a mistake worth naming.
    NotTls,
}

impl FirstByte {
    fn verify(self, byte: u8) -> Result<(), ReadHeadError> {
        match self {
            FirstByte::NotTls if byte == crate::tls::TLS_HANDSHAKE_RECORD => {
                Err(ReadHeadError::Reject(Reject::TlsOnPlainListener))
            }
            FirstByte::NotTls => Ok(()),
        }
    }
}

/// Why no request head could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadHeadError {
    /// Answer the client with this rejection, then close.
    #[error("{0}")]
    Reject(Reject),
    /// The client closed before finishing its request.
    #[error("client closed before completing its request")]
    Eof,
    /// The socket failed.
    #[error("reading request: {0}")]
    Io(io::Error),
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Whether `buf` holds a LF not preceded by CR at or after `from`
/// (RFC 9112 section 2.2 lets a server refuse them).
fn has_bare_lf(buf: &[u8], from: usize) -> bool {
    (from..buf.len()).any(|i| buf[i] == b'\n' && (i == 0 || buf[i - 1] != b'\r'))
}

/// Parses the head as hyper will, refusing here, with a reason and an
/// access-log line, what hyper would refuse with an empty 400: message
/// framing it cannot trust (RFC 9112 section 6.3) and a target that is not a
/// URI.
fn check_parses(head: &[u8]) -> Result<(), ReadHeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let malformed = |why| Err(ReadHeadError::Reject(Reject::Malformed(why)));
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {
            let headers: &[httparse::Header<'_>] = req.headers;
            let named = |name: &'static str| {
                headers
                    .iter()
                    .filter(move |h| h.name.eq_ignore_ascii_case(name))
            };
            let lengths: Vec<&[u8]> = named("content-length").map(|h| h.value).collect();
            if lengths.len() > 1 {
                return malformed("more than one Content-Length header");
            }
            if let Some(value) = lengths.first() {
                if content_length(value).is_none() {
                    return malformed("invalid Content-Length");
                }
                if named("transfer-encoding").next().is_some() {
                    return malformed("both Transfer-Encoding and Content-Length");
                }
            }
            // RFC 9112 section 6.3: a request body's length is only known
            // when chunked is its last coding.
            let last = named("transfer-encoding").next_back();
            if last.is_some_and(|h| !ends_chunked(h.value)) {
                return malformed("Transfer-Encoding must end with chunked");
            }
            let target = req.path.unwrap_or("");
            if http::Uri::try_from(target).is_err() {
                return malformed("invalid request target");
            }
            Ok(())
        }
        Ok(httparse::Status::Partial) => Err(ReadHeadError::Reject(Reject::Malformed(
            "incomplete request head",
        ))),
        Err(httparse::Error::TooManyHeaders) => Err(ReadHeadError::Reject(Reject::TooManyHeaders)),
        Err(httparse::Error::Version) => Err(ReadHeadError::Reject(Reject::Malformed(
            "not an HTTP/1.x request",
        ))),
        Err(_) => Err(ReadHeadError::Reject(Reject::Malformed(
            "invalid request line or header",
        ))),
    }
}

/// A `Content-Length` value as a number: digits only, at most 19 of them
/// so that any fits in a `u64`. The request head check and the scan of
/// kept-alive requests for ambiguous framing read it alike.
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether a `Transfer-Encoding` value's last coding is chunked, the only
/// way a request body's length is known with it (RFC 9112 section 6.3).
pub(crate) fn ends_chunked(value: &[u8]) -> bool {
    let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// What a request that passed every check carries forward.
#[derive(Debug)]
pub struct Checked {
    /// The client's `Sec-WebSocket-Key`, to verify the backend's accept.
    pub key: HeaderValue,
}

/// Checks a routed request against the rows of the contract's handshake
/// table that follow routing, in table order: the first failing row answers.
pub fn check(req: &Request<hyper::body::Incoming>, route: &Route) -> Result<Checked, Reject> {
    if req.method() != Method::GET {
        return Err(Reject::NotGet);
    }
    if req.version() != Version::HTTP_11 {
        return Err(Reject::Http10);
    }
    let headers = req.headers();
    match headers.get_all(http::header::HOST).iter().count() {
        0 => return Err(Reject::NoHost),
        1 => {}
        _ => return Err(Reject::DuplicateHost),
    }
    if !has_token(headers, http::header::UPGRADE, "websocket") {
        return Err(Reject::NotWebSocket);
    }
    if has_body(headers) {
        return Err(Reject::BodyOnUpgrade);
    }
    if !has_token(headers, http::header::CONNECTION, "upgrade") {
        return Err(Reject::NoConnectionUpgrade);
    }
    let key = single(headers, http::header::SEC_WEBSOCKET_KEY).ok_or(Reject::BadKey)?;
    if !valid_key(key.as_bytes()) {
        return Err(Reject::BadKey);
    }
    match single(headers, http::header::SEC_WEBSOCKET_VERSION) {
        Some(v) if v.as_bytes().trim_ascii() == b"13" => {}
        _ => return Err(Reject::BadVersion),
    }
    if headers
        .get_all(http::header::ORIGIN)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(Reject::DuplicateOrigin);
    }
    if let (Some(allowed), Some(origin)) =
        (&route.allowed_origins, headers.get(http::header::ORIGIN))
    {
        let origin = origin.as_bytes();
        if !allowed
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(origin))
        {
            return Err(Reject::OriginNotAllowed);
        }
    }
    Ok(Checked { key: key.clone() })
}

/// The one value of a header that must appear once; `None` when absent or
/// repeated (RFC 6455 section 4.1 allows only one key and one version).
fn single(headers: &HeaderMap, name: http::header::HeaderName) -> Option<&HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// Whether the request announces a body: any `Transfer-Encoding`, or a
/// `Content-Length` other than 0 (RFC 9112 section 6.3).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| !v.as_bytes().trim_ascii().iter().all(|&b| b == b'0'))
}

/// An IO that first yields bytes already read from it (the request head the
/// proxy read itself, so that hyper parses the same bytes).
#[derive(Debug)]
pub struct Rewind<IO> {
    prefix: Bytes,
    inner: IO,
}

impl<IO> Rewind<IO> {
    /// Wraps `inner`, replaying `prefix` before reading from it.
    pub fn new(prefix: Bytes, inner: IO) -> Self {
        Rewind { prefix, inner }
    }

    /// The bytes not yet replayed and the inner IO.
    pub fn into_parts(self) -> (Bytes, IO) {
        (self.prefix, self.inner)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unresolved_reason_names_at_most_three() {
        let names: Vec<String> = (1..=5).map(|i| format!("n{i}.internal:9000")).collect();
        let reject = Reject::Unresolved(names);
        assert_eq!(reject.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            reject.to_string(),
            "no backend available: n1.internal:9000, n2.internal:9000, n3.internal:9000 \
             and 2 more do not resolve yet"
        );
    }

    #[tokio::test]
    async fn head_end_found_across_reads_and_limit_enforced() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in [&b"GET / HTTP/1.1\r\nHost: a\r"[..], b"\n\r", b"\nrest"] {
                client.write_all(chunk).await.unwrap();
                client.flush().await.unwrap();
            }
            client
        });
        let buf = read_head(&mut server, 1024, None).await.unwrap();
        assert!(buf.starts_with(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        drop(writer.await.unwrap());

        let mut input: &[u8] = b"GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        match read_head(&mut input, 20, None).await {
            Err(ReadHeadError::Reject(Reject::HeadTooLarge)) => {}
            other => panic!("expected 431, got {other:?}"),
        }
    }

    #[test]
    fn every_rejection_has_a_short_reason() {
        let r = Reject::NotWebSocket.raw_response();
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("upgrade: websocket\r\n"));
    }

    #[test]
    fn bare_lf_is_found_even_across_reads() {
        assert!(has_bare_lf(b"GET / HTTP/1.1\nHost: a\n\n", 0));
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0));
        // The CR came in an earlier read.
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\n", 15));
        assert!(has_bare_lf(b"\n", 0));
    }

    #[test]
    fn framing_hyper_would_refuse_is_refused_with_a_reason() {
        let reason = |head: &str| match check_parses(head.as_bytes()) {
            Err(ReadHeadError::Reject(r)) => Some(r.to_string()),
            Err(e) => panic!("{e}"),
            Ok(()) => None,
        };
        let ok = "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(reason(ok), None);
        for (head, why) in [
            (
                "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                "more than one",
            ),
            (
                "GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "both",
            ),
            (
                "GET / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                "end with chunked",
            ),
        ] {
            let got = reason(head).unwrap_or_default();
            assert!(got.contains(why), "{head:?}: {got}");
        }
    }
}
