//! A backend's refusal of an upgrade (401, 403, 429, ...): its body read
//! under a cap as RFC 9112 section 6.3 delimits it, and the answer that
//! passes it on to the client (contract, handshake table).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncReadExt;

use super::{connection_listed, BackendStream, Head, UpstreamFailure, HOP_BY_HOP};
use crate::rfc6455::list_items;

/// The most of a refusal's body passed to the client (contract, handshake
/// table); a longer body is cut here and the client's connection closed.
pub const MAX_REFUSAL_BODY: usize = 64 * 1024;

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
    pub(super) declared: Option<u64>,
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
pub(super) async fn read(
    head: Head,
    mut stream: BackendStream,
) -> Result<Refusal, UpstreamFailure> {
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
    stream: &mut BackendStream,
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
async fn more(stream: &mut BackendStream, buf: &mut BytesMut) -> Result<(), UpstreamFailure> {
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
}
