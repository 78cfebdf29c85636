//! Request smuggling guard: a second, minimal reading of the client's byte
//! stream beside hyper's, which finds requests that carry both
//! `Content-Length` and `Transfer-Encoding`.
//!
//! hyper frames such a request by `Transfer-Encoding` and closes the
//! connection after it (RFC 9112 section 6.1 allows that), but drops the
//! `Content-Length` field before the request reaches the proxy, so the
//! proxy cannot see the conflict in the request it gets. A front proxy
//! must not forward a message that two parsers could frame differently:
//! this scanner follows the message boundaries (heads, fixed-length and
//! chunked bodies) and records the index of the first ambiguous request,
//! which the connection then answers with 400 and closes.
//!
//! The scanner only observes: it never changes or holds back a byte. On
//! anything it does not understand (a protocol switch, a malformed head or
//! chunk, which hyper refuses on its own) it stops scanning.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::handshake::{content_length, ends_chunked, MAX_HEADERS};

/// The longest head or chunk line the scanner follows; hyper refuses
/// longer ones itself.
const MAX_LINE: usize = 64 * 1024;

/// Which request of a connection, counted from 0, was ambiguous.
#[derive(Debug)]
pub struct Verdict {
    ambiguous_at: AtomicUsize,
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict {
            ambiguous_at: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Verdict {
    /// Whether request `index` (from 0) carried both framings.
    pub fn is_ambiguous(&self, index: usize) -> bool {
        self.ambiguous_at.load(Ordering::Acquire) == index
    }
}

/// Where in the request stream the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Skipping a body of known length.
    Fixed(u64),
    /// Collecting a chunk-size line.
    ChunkSize,
    /// Skipping chunk data.
    ChunkData(u64),
    /// Skipping the CRLF after chunk data.
    ChunkEnd(u8),
    /// Collecting trailer lines up to the empty one.
    Trailers,
    /// Not following the stream any more.
    Off,
}

/// The sans-io scanner: fed every byte the client sends, in order.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    line: Vec<u8>,
    heads: usize,
    verdict: Arc<Verdict>,
}

impl Scanner {
    /// A scanner at the start of a connection, reporting into `verdict`.
    pub fn new(verdict: Arc<Verdict>) -> Scanner {
        Scanner {
            state: State::Head,
            line: Vec::new(),
            heads: 0,
            verdict,
        }
    }

    /// Follows `bytes`, the next ones the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return,
                State::Head | State::ChunkSize | State::Trailers => {
                    let end = match self.state {
                        State::Head => head_end(&self.line, bytes),
                        _ => bytes.iter().position(|&b| b == b'\n').map(|p| p + 1),
                    };
                    let take = end.unwrap_or(bytes.len());
                    self.line.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if end.is_some() {
                        self.state = self.finish_line();
                        self.line.clear();
                    } else if self.line.len() > MAX_LINE {
                        self.state = State::Off;
                    }
                }
                State::Fixed(left) | State::ChunkData(left) => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    let left = left - take;
                    self.state = match (self.state, left) {
                        (State::Fixed(_), 0) => State::Head,
                        (State::Fixed(_), n) => State::Fixed(n),
                        (_, 0) => State::ChunkEnd(2),
                        (_, n) => State::ChunkData(n),
                    };
                }
                State::ChunkEnd(left) => {
                    let take = usize::from(left).min(bytes.len());
                    bytes = &bytes[take..];
                    self.state = match left - take as u8 {
                        0 => State::ChunkSize,
                        n => State::ChunkEnd(n),
                    };
                }
            }
        }
    }

    /// Acts on a whole head or line in `self.line`.
    fn finish_line(&mut self) -> State {
        match self.state {
            State::Head => self.head(),
            State::ChunkSize => {
                let text = self.line.split(|&b| b == b';').next().unwrap_or_default();
                let text = std::str::from_utf8(text).unwrap_or("").trim();
                match u64::from_str_radix(text, 16) {
                    Ok(0) => State::Trailers,
                    Ok(n) => State::ChunkData(n),
                    Err(_) => State::Off,
                }
            }
            State::Trailers if self.line.trim_ascii().is_empty() => State::Head,
            State::Trailers => State::Trailers,
            other => other,
        }
    }

    /// Parses a request head and finds its body's framing.
    fn head(&mut self) -> State {
        // Empty lines before a request line are allowed (RFC 9112 section 2.2).
        if self.line.trim_ascii().is_empty() {
            return State::Head;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&self.line), Ok(httparse::Status::Complete(_))) {
            return State::Off;
        }
        let index = self.heads;
        self.heads += 1;
        let mut length = None;
        let mut chunked = None;
        let mut switches = req.method == Some("CONNECT");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                length = content_length(h.value);
                if length.is_none() {
                    return State::Off;
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = Some(ends_chunked(h.value));
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                switches = true;
            }
        }
        match (length, chunked) {
            (Some(_), Some(_)) => {
                let _ = self.verdict.ambiguous_at.compare_exchange(
                    usize::MAX,
                    index,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                State::Off
            }
            // After a possible protocol switch the bytes are not HTTP.
            _ if switches => State::Off,
            (None, Some(true)) => State::ChunkSize,
            (None, Some(false)) => State::Off,
            (Some(0), None) | (None, None) => State::Head,
            (Some(n), None) => State::Fixed(n),
        }
    }
}

/// Where the head ends in `more`, given `seen` before it.
fn head_end(seen: &[u8], more: &[u8]) -> Option<usize> {
    // The terminator may straddle the two: look at up to three bytes back.
    let back = seen.len().min(3);
    let mut window = Vec::with_capacity(back + more.len().min(4));
    window.extend_from_slice(&seen[seen.len() - back..]);
    window.extend_from_slice(&more[..more.len().min(4)]);
    if let Some(p) = window.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(p + 4 - back);
    }
    more.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// The client's IO with a [`Scanner`] watching what is read from it.
#[derive(Debug)]
pub struct Scanned<IO> {
    inner: IO,
    scanner: Scanner,
}

impl<IO> Scanned<IO> {
    /// Watches `inner`, reporting into `verdict`.
    pub fn new(inner: IO, verdict: Arc<Verdict>) -> Scanned<IO> {
        Scanned {
            inner,
            scanner: Scanner::new(verdict),
        }
    }

    /// The IO, once HTTP is over (after an upgrade).
    pub fn into_inner(self) -> IO {
        self.inner
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Scanned<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.scanner.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Scanned<IO> {
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

    /// Feeds `stream` split at every position and returns the verdict.
    fn ambiguous_index(stream: &[u8]) -> Option<usize> {
        let mut found = Vec::new();
        for split in 0..=stream.len() {
            let verdict = Arc::new(Verdict::default());
            let mut s = Scanner::new(verdict.clone());
            s.feed(&stream[..split]);
            s.feed(&stream[split..]);
            let at = verdict.ambiguous_at.load(Ordering::Acquire);
            found.push((at != usize::MAX).then_some(at));
        }
        assert!(found.windows(2).all(|w| w[0] == w[1]), "{found:?}");
        found[0]
    }

    #[test]
    fn both_framings_are_found_behind_earlier_bodies() {
        let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nx-t: 1\r\n\r\n\
POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n";
        assert_eq!(ambiguous_index(stream), Some(3));
    }

    #[test]
    fn clean_streams_have_no_verdict() {
        let stream = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n\r\n";
        assert_eq!(ambiguous_index(stream), None);
    }

    #[test]
    fn a_protocol_switch_stops_the_scan() {
        // Frame bytes after an upgrade may look like anything.
        let stream =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(ambiguous_index(stream), None);
    }
}
