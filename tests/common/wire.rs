//! A raw wire peer: writes exact bytes and frames, reads answers and
//! frames as they arrived on the socket.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

use super::{raw_backend, simple_config, start_proxy, within, Proxy};

/// A raw HTTP exchange: what came back before the connection closed.
#[derive(Debug)]
pub struct RawAnswer {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl RawAnswer {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` bytes and reads the answer until the proxy closes.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> RawAnswer {
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    within(stream.read_to_end(&mut out)).await.unwrap();
    parse_answer(&out)
}

/// Parses an HTTP/1.1 response head and body.
pub fn parse_answer(bytes: &[u8]) -> RawAnswer {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawAnswer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A valid upgrade request for `path`, with `extra` header lines.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Connects a tungstenite client to `ws://{addr}{path}`.
pub async fn ws_connect(addr: SocketAddr, path: &str) -> WebSocketStream<TcpStream> {
    let stream = within(TcpStream::connect(addr)).await.unwrap();
    let url = format!("ws://{addr}{path}");
    let (ws, _) = within(tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgrade succeeds");
    ws
}

/// One frame as seen on the wire (payload unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// FIN bit.
    pub fin: bool,
    /// Opcode.
    pub opcode: u8,
    /// Whether it arrived masked.
    pub masked: bool,
    /// Payload, unmasked.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame (1005 when it has none).
    pub fn close_code(&self) -> u16 {
        if self.payload.len() >= 2 {
            u16::from_be_bytes([self.payload[0], self.payload[1]])
        } else {
            1005
        }
    }
}

/// A frame-level WebSocket peer: sends exactly the frames it is told to.
pub struct RawWs {
    /// The connection.
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Whether frames it sends are masked (a client's are).
    pub mask: bool,
}

impl RawWs {
    /// Upgrades a client connection to `addr` with `request`; returns the
    /// peer and the proxy's answer head.
    pub async fn connect(addr: SocketAddr, request: &str) -> (RawWs, RawAnswer) {
        let mut stream = within(TcpStream::connect(addr)).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = within(stream.read(&mut chunk)).await.unwrap();
            assert!(
                n > 0,
                "closed before an answer: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let answer = parse_answer(&buf[..head_end]);
        buf.drain(..head_end);
        (
            RawWs {
                stream,
                buf,
                mask: true,
            },
            answer,
        )
    }

    /// Wraps an already upgraded server-side connection.
    pub fn server(stream: TcpStream, leftover: Vec<u8>) -> RawWs {
        RawWs {
            stream,
            buf: leftover,
            mask: false,
        }
    }

    /// Sends one frame with `len` encoded minimally.
    pub async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let bytes = encode_frame(fin, opcode, payload, self.mask);
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends a close frame with `code` and `reason`.
    pub async fn send_close(&mut self, code: u16, reason: &str) {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        self.send(true, 0x8, &p).await;
    }

    /// The next frame, or `None` when the connection ends first.
    pub async fn recv(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = decode_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = within(self.stream.read(&mut chunk)).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until a close arrives; returns it.
    pub async fn recv_close(&mut self) -> Option<RawFrame> {
        for _ in 0..10_000 {
            let f = self.recv().await?;
            if f.opcode == 0x8 {
                return Some(f);
            }
        }
        None
    }

    /// Whether the peer closed the TCP connection (reads to EOF).
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        for _ in 0..10_000 {
            match within(self.stream.read(&mut chunk)).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
        false
    }
}

/// Encodes one frame; masked with a fixed key when `mask`.
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let m = if mask { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if mask {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Decodes one whole frame from the front of `buf`.
pub fn decode_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let key = if masked {
        let k: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        k
    } else {
        [0; 4]
    };
    let payload: Vec<u8> = buf
        .get(at..at + len)?
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    let frame = RawFrame {
        fin: buf[0] & 0x80 != 0,
        opcode: buf[0] & 0x0f,
        masked,
        payload,
    };
    Some((frame, at + len))
}

/// A proxy in front of a raw backend with `defaults` (TOML lines for the
/// `[defaults]` table); returns the client and backend ends of one
/// connection.
pub async fn raw_pair(defaults: &str) -> (Proxy, RawWs, RawWs) {
    let (addr, mut accepted) = raw_backend().await;
    let toml = simple_config(&[addr], &format!("[defaults]\n{defaults}\n"));
    let proxy = start_proxy(&toml).await;
    let (client, answer) = RawWs::connect(proxy.addr("main"), &upgrade_request("/echo", "")).await;
    assert_eq!(answer.status, 101);
    let backend = within(accepted.recv()).await.expect("backend connection");
    (proxy, client, backend)
}
