//! A WebSocket echo backend for `wsgate demo`, the tests and the benchmarks:
//! it answers any path, echoes every data frame as it arrives (without
//! reassembling messages, so huge messages cost no memory), answers pings,
//! and returns a close with the client's code.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::handshake::{accept_for, read_head};

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
    let key = {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let _ = req.parse(&buf[..head_len]);
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
            .map(|h| h.value.to_vec())
            .unwrap_or_default()
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

/// The echo's per-connection frame state: where it is in the current frame.
#[derive(Debug, Default)]
struct Echoer {
    /// Payload bytes of the current data frame still to echo.
    remaining: u64,
    mask: [u8; 4],
    mask_offset: usize,
    closed: bool,
}

impl Echoer {
    /// Echoes what it can of `input` into `out`; returns how much of
    /// `input` it used.
    fn process(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut pos = 0;
        while pos < input.len() && !self.closed {
            if self.remaining > 0 {
                let n = (self.remaining as usize).min(input.len() - pos);
                let start = out.len();
                out.extend_from_slice(&input[pos..pos + n]);
                for (i, b) in out[start..].iter_mut().enumerate() {
                    *b ^= self.mask[(self.mask_offset + i) % 4];
                }
                self.mask_offset = (self.mask_offset + n) % 4;
                self.remaining -= n as u64;
                pos += n;
                continue;
            }
            let Some((fin_op, len, mask, header_len)) = parse_header(&input[pos..]) else {
                break;
            };
            let opcode = fin_op & 0x0f;
            if opcode >= 0x8 {
                // Control frames are answered whole; they are at most 125 bytes.
                let total = header_len + len as usize;
                if input.len() - pos < total {
                    break;
                }
                let mut payload = input[pos + header_len..pos + total].to_vec();
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
                match opcode {
                    0x9 => push_frame_header(out, 0x8A, payload.len() as u64),
                    0x8 => {
                        push_frame_header(out, 0x88, payload.len() as u64);
                        self.closed = true;
                    }
                    _ => {
                        pos += total;
                        continue;
                    }
                }
                out.extend_from_slice(&payload);
                pos += total;
                continue;
            }
            push_frame_header(out, fin_op, len);
            self.remaining = len;
            self.mask = mask;
            self.mask_offset = 0;
            pos += header_len;
        }
        pos
    }
}

/// (first byte, payload length, mask, header length) of a complete header.
fn parse_header(b: &[u8]) -> Option<(u8, u64, [u8; 4], usize)> {
    if b.len() < 2 {
        return None;
    }
    let (len, mut at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as u64, 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().ok()?), 10),
        126 | 127 => return None,
        n => (n as u64, 2),
    };
    let mut mask = [0u8; 4];
    if b[1] & 0x80 != 0 {
        mask.copy_from_slice(b.get(at..at + 4)?);
        at += 4;
    }
    Some((b[0], len, mask, at))
}

fn push_frame_header(out: &mut Vec<u8>, first: u8, len: u64) {
    out.push(first);
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as u64 {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&len.to_be_bytes());
    }
}
