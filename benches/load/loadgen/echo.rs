//! A fast WebSocket echo backend: answers an upgrade on any path and sends
//! every frame back as it arrives (same opcode, same fragmentation,
//! unmasked), answers pings, and returns the close frame before closing TCP.
//!
//! It is the benchmark's stand-in for `wsgate echo` while that does not
//! exist, and relays frame by frame rather than message by message, so a
//! message of any size costs no more memory than the read buffer.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::client::accept_key;
use super::codec::{self, close_code, Decoder, Event, OpCode, Role};

/// Read buffer per connection; grows to fit a large upgrade request.
const READ_BYTES: usize = 16 * 1024;

/// The whole upgrade request must arrive within this.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Serves connections from `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    let _ = connection(stream).await;
                });
            }
            // Out of descriptors, say: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// One connection: the upgrade, then the echo loop.
async fn connection(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; READ_BYTES];
    let (filled, consumed) = tokio::time::timeout(HANDSHAKE_LIMIT, upgrade(&mut stream, &mut buf))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    buf.copy_within(consumed..filled, 0);
    let mut filled = filled - consumed;

    let mut decoder = Decoder::new(Role::Server);
    let mut out = Vec::with_capacity(READ_BYTES + 64);
    loop {
        let mut close = None;
        let decoded = decoder.decode(&mut buf[..filled], &mut |ev| match ev {
            Event::FrameStart { opcode, fin, len } => {
                codec::put_header(&mut out, fin, opcode, None, len)
            }
            Event::Data(chunk) => out.extend_from_slice(chunk),
            Event::FrameEnd { .. } => {}
            Event::Control { opcode, payload } => match opcode {
                OpCode::Ping => codec::put_frame(&mut out, OpCode::Pong, None, payload),
                OpCode::Close => close = Some(close_code(payload).unwrap_or(1000)),
                _ => {}
            },
        });
        let used = match decoded {
            Ok(used) => used,
            // Protocol error: close 1002 (RFC 6455 section 7.4.1).
            Err(_) => {
                close = Some(1002);
                filled
            }
        };
        buf.copy_within(used..filled, 0);
        filled -= used;
        if let Some(code) = close {
            codec::put_frame(&mut out, OpCode::Close, None, &code.to_be_bytes());
            stream.write_all(&out).await?;
            // The server closes TCP first (section 7.1.1).
            return stream.shutdown().await;
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}

/// Reads the request and answers 101. Returns the bytes in `buf` and how
/// many of them the request used (the rest are frames).
async fn upgrade(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<(usize, usize)> {
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if buf.len() >= 64 * 1024 {
                return Err(io::ErrorKind::InvalidData.into());
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        let used = match request.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err(io::ErrorKind::InvalidData.into()),
        };
        let key = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
            .map(|h| h.value);
        let Some(key) = key else {
            stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await?;
            return Err(io::ErrorKind::InvalidData.into());
        };
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(key)
        );
        stream.write_all(answer.as_bytes()).await?;
        return Ok((filled, used));
    }
}
