//! A WebSocket echo backend for `wsgate demo`, the tests and the benchmarks:
//! it answers any path, echoes every data frame as it arrives (without
//! reassembling messages, so huge messages cost no memory), answers pings,
//! and returns a close with the client's code. A plain HTTP `GET /` gets
//! the demo's page, which opens a WebSocket to `/echo` and shows the echoes.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::frame::{apply_mask, parse_header, FrameHeader, Opcode, MAX_HEADER_LEN};
use crate::handshake::read_head;
use crate::rfc6455::accept_for;

/// Accepts connections on `listener` forever, echoing on each.
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = echo(stream).await {
                debug!(%peer, error = %e, "echo connection ended");
            }
        });
    }
}

/// Binds `addr` and serves it.
pub async fn bind_and_serve(addr: SocketAddr) -> io::Result<()> {
    serve(TcpListener::bind(addr).await?).await
}

async fn echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = read_head(&mut stream, 16 * 1024, None)
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let head_len = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
    let (key, path) = {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let _ = req.parse(&buf[..head_len]);
        let key = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
            .map(|h| h.value.to_vec());
        (key, req.path.unwrap_or("/").to_string())
    };
    let Some(key) = key else {
        return page(&mut stream, &path).await;
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        accept_for(&key)
    );
    stream.write_all(answer.as_bytes()).await?;
    let _ = buf.split_to(head_len);

    let mut input = buf.to_vec();
    input.reserve(64 * 1024);
    let mut out = Vec::with_capacity(64 * 1024);
    let mut echoer = Echoer::default();
    loop {
        let used = echoer.process(&input, &mut out);
        input.drain(..used);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if echoer.closed {
            stream.shutdown().await?;
            return Ok(());
        }
        if input.capacity() - input.len() < 16 * 1024 {
            input.reserve(64 * 1024);
        }
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
    }
}

/// The demo's page, served to plain HTTP requests for `/`.
const PAGE: &str = include_str!("echo/page.html");

/// Answers a request without a WebSocket key: the page for `/`, 404 for
/// anything else; one answer per connection.
async fn page(stream: &mut TcpStream, path: &str) -> io::Result<()> {
    let (status, kind, body) = match path.split('?').next() {
        Some("/") | Some("/index.html") => ("200 OK", "text/html; charset=utf-8", PAGE),
        _ => ("404 Not Found", "text/plain; charset=utf-8", "not found\n"),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The echo's per-connection frame state: where it is in the current frame.
#[derive(Debug, Default)]
struct Echoer {
    /// Payload bytes of the current data frame still to echo.
    remaining: u64,
    /// The current data frame's masking key, if it had one.
    mask: Option<[u8; 4]>,
    /// Payload bytes of the current data frame already unmasked.
    offset: usize,
    closed: bool,
}

impl Echoer {
    /// Echoes what it can of `input` into `out`; returns how much of
    /// `input` it used. A malformed header ends the connection.
    fn process(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut pos = 0;
        while pos < input.len() && !self.closed {
            if self.remaining > 0 {
                let n = (self.remaining as usize).min(input.len() - pos);
                let start = out.len();
                out.extend_from_slice(&input[pos..pos + n]);
                if let Some(key) = self.mask {
                    apply_mask(&mut out[start..], key, self.offset);
                }
                self.offset += n;
                self.remaining -= n as u64;
                pos += n;
                continue;
            }
            let header = match parse_header(&input[pos..]) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            };
            let header_len = header.header_len();
            // Echoed frames go to a client: never masked (RFC 6455 section 5.1).
            let reply = FrameHeader {
                mask: None,
                ..header
            };
            let mut head = [0u8; MAX_HEADER_LEN];
            if header.opcode.is_control() {
                // Control frames are answered whole; they are at most 125 bytes.
                let total = header_len + header.payload_len as usize;
                if input.len() - pos < total {
                    break;
                }
                let opcode = match header.opcode {
                    Opcode::Ping => Opcode::Pong,
                    Opcode::Close => {
                        self.closed = true;
                        Opcode::Close
                    }
                    _ => {
                        pos += total;
                        continue;
                    }
                };
                out.extend_from_slice(FrameHeader { opcode, ..reply }.encode(&mut head));
                let start = out.len();
                out.extend_from_slice(&input[pos + header_len..pos + total]);
                if let Some(key) = header.mask {
                    apply_mask(&mut out[start..], key, 0);
                }
                pos += total;
                continue;
            }
            out.extend_from_slice(reply.encode(&mut head));
            self.remaining = header.payload_len;
            self.mask = header.mask;
            self.offset = 0;
            pos += header_len;
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first, 0x80 | payload.len() as u8];
        out.extend_from_slice(&key);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], key, 0);
        out
    }

    #[test]
    fn echoes_unmasked_across_reads_answers_pings_and_closes() {
        let mut input = masked(0x81, b"hello", [1, 2, 3, 4]);
        input.extend(masked(0x89, b"ping", [9, 8, 7, 6]));
        input.extend(masked(0x88, &[0x03, 0xe8, b'o', b'k'], [5, 5, 5, 5]));
        let mut echo = Echoer::default();
        let mut out = Vec::new();
        // Fed in reads that split the first frame's payload.
        let mut used = 0;
        for end in [9, input.len()] {
            used += echo.process(&input[used..end], &mut out);
        }
        assert_eq!(used, input.len());
        let mut expected = vec![0x81, 5];
        expected.extend_from_slice(b"hello");
        expected.extend_from_slice(&[0x8A, 4]);
        expected.extend_from_slice(b"ping");
        expected.extend_from_slice(&[0x88, 4, 0x03, 0xe8, b'o', b'k']);
        assert_eq!(out, expected);
        assert!(echo.closed);
    }
}
