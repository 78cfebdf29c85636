//! Opening one client connection: TCP (from a chosen loopback source
//! address), TLS when the URL says `wss`, and the HTTP/1.1 upgrade
//! (RFC 6455 section 4.1), with the server's answer checked.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Where to connect, parsed from a `ws://` or `wss://` URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given, for reports.
    pub url: String,
    /// `wss://`.
    pub tls: bool,
    /// The URL's host without brackets: the TLS server name.
    pub host: String,
    /// The `Host` header value: the URL's authority as written.
    pub host_header: String,
    /// Path and query, at least `/`.
    pub path: String,
    /// The resolved address (IPv4 preferred, so that source spreading over
    /// 127.0.0.x applies to `localhost`).
    pub addr: SocketAddr,
}

impl Target {
    /// Parses and resolves a WebSocket URL.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else {
            return Err(format!("{url}: the URL must start with ws:// or wss://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let (host, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("{url}: unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{url}: bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("{url}: unexpected text after the host")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| format!("{url}: bad port"))?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve {host}: {e}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("{url}: {host} resolves to nothing"))?;
        Ok(Target {
            url: url.to_string(),
            tls,
            host: host.to_string(),
            host_header: authority.to_string(),
            path: path.to_string(),
            addr,
        })
    }

    /// The source address for connection number `i` when spreading over
    /// `sources` loopback addresses, so that tens of thousands of
    /// connections do not exhaust one address's ephemeral ports (about 28k
    /// by default). Only for IPv4 loopback targets.
    pub fn source_for(&self, i: u64, sources: u32) -> Option<IpAddr> {
        match self.addr.ip() {
            IpAddr::V4(v4) if v4.is_loopback() && sources > 0 => {
                let n = (i % u64::from(sources.min(250))) as u8;
                Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + n)))
            }
            _ => None,
        }
    }
}

/// Builds the TLS client configuration: roots from `ca` (PEM), or no
/// certificate check at all with `insecure`. Session resumption is off, so
/// that every TLS handshake the benchmark counts is a full one.
pub fn tls_config(ca: Option<&Path>, insecure: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = ca {
            for cert in
                CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?
            {
                let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
        }
        if roots.is_empty() {
            return Err("wss:// needs --ca FILE or --insecure".to_string());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// `--insecure`: accepts any certificate for any name, but still checks the
/// handshake signatures, as `curl -k` does.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Why a connection could not be opened; each is counted apart.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP connect (or bind of the source address) failed.
    Tcp(io::Error),
    /// The TLS handshake failed.
    Tls(io::Error),
    /// The upgrade failed: I/O error, or not a valid 101 answer.
    Upgrade(UpgradeError),
}

/// What was wrong with the upgrade.
#[derive(Debug)]
pub enum UpgradeError {
    /// Reading or writing failed, or the server closed early.
    Io(io::Error),
    /// The answer is not parseable HTTP or is over 16 KiB.
    Malformed,
    /// The status is not 101.
    Status(u16),
    /// `Sec-WebSocket-Accept` is missing or wrong for our key.
    Accept,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Tcp(e) => write!(f, "TCP connect: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake: {e}"),
            ConnectError::Upgrade(UpgradeError::Io(e)) => write!(f, "upgrade: {e}"),
            ConnectError::Upgrade(UpgradeError::Malformed) => {
                write!(f, "upgrade: the answer is not HTTP/1.1 or is over 16 KiB")
            }
            ConnectError::Upgrade(UpgradeError::Status(code)) => {
                write!(f, "upgrade: answered {code} instead of 101")
            }
            ConnectError::Upgrade(UpgradeError::Accept) => {
                write!(f, "upgrade: Sec-WebSocket-Accept missing or wrong")
            }
        }
    }
}

/// One client connection, plain or TLS.
pub enum Conn {
    /// ws://
    Plain(TcpStream),
    /// wss://
    Tls(Box<TlsStream<TcpStream>>),
}

/// The reading half of a [`Conn`].
pub enum ConnRead {
    /// ws://: the socket's own half, no lock.
    Plain(tokio::net::tcp::OwnedReadHalf),
    /// wss://: one TLS session behind tokio's split lock.
    Tls(tokio::io::ReadHalf<Box<TlsStream<TcpStream>>>),
}

/// The writing half of a [`Conn`].
pub enum ConnWrite {
    /// ws://
    Plain(tokio::net::tcp::OwnedWriteHalf),
    /// wss://
    Tls(tokio::io::WriteHalf<Box<TlsStream<TcpStream>>>),
}

impl Conn {
    /// Splits into halves that separate tasks can drive, so that a writer
    /// blocked by a full socket never stops the reader.
    pub fn split(self) -> (ConnRead, ConnWrite) {
        match self {
            Conn::Plain(s) => {
                let (r, w) = s.into_split();
                (ConnRead::Plain(r), ConnWrite::Plain(w))
            }
            Conn::Tls(s) => {
                let (r, w) = tokio::io::split(s);
                (ConnRead::Tls(r), ConnWrite::Tls(w))
            }
        }
    }
}

macro_rules! delegate_read {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($ty:ty) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

delegate_read!(Conn);
delegate_read!(ConnRead);
delegate_write!(Conn);
delegate_write!(ConnWrite);

/// The magic GUID of RFC 6455 section 1.3.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (section 4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Opens connection number `id`: TCP from `source`, TLS when `tls` is given,
/// then the upgrade. Returns the connection and any bytes that arrived after
/// the 101 answer (frames the server sent at once).
pub async fn connect(
    target: &Target,
    tls: Option<&TlsConnector>,
    source: Option<IpAddr>,
    key_seed: u64,
) -> Result<(Conn, Vec<u8>), ConnectError> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(ConnectError::Tcp)?;
    if let Some(ip) = source {
        socket.set_reuseaddr(true).map_err(ConnectError::Tcp)?;
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(ConnectError::Tcp)?;
    }
    let tcp = socket
        .connect(target.addr)
        .await
        .map_err(ConnectError::Tcp)?;
    // Messages are small and latency is measured: no Nagle delay.
    tcp.set_nodelay(true).map_err(ConnectError::Tcp)?;
    let mut conn = match tls {
        None => Conn::Plain(tcp),
        Some(connector) => {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| ConnectError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(ConnectError::Tls)?;
            Conn::Tls(Box::new(stream))
        }
    };
    let leftover = upgrade(&mut conn, target, key_seed)
        .await
        .map_err(ConnectError::Upgrade)?;
    Ok((conn, leftover))
}

/// Sends the upgrade request and checks the answer (section 4.1).
async fn upgrade(conn: &mut Conn, target: &Target, key_seed: u64) -> Result<Vec<u8>, UpgradeError> {
    let mut raw = [0u8; 16];
    let mut state = key_seed | 1;
    for b in &mut raw {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    let key = base64::engine::general_purpose::STANDARD.encode(raw);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.path, target.host_header
    );
    conn.write_all(request.as_bytes())
        .await
        .map_err(UpgradeError::Io)?;
    conn.flush().await.map_err(UpgradeError::Io)?;

    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() >= 16 * 1024 {
            return Err(UpgradeError::Malformed);
        }
        let n = conn.read_buf(&mut buf).await.map_err(UpgradeError::Io)?;
        if n == 0 {
            return Err(UpgradeError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err(UpgradeError::Malformed),
        };
        let code = response.code.unwrap_or(0);
        if code != 101 {
            return Err(UpgradeError::Status(code));
        }
        let expected = accept_key(key.as_bytes());
        let accepted = response.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("sec-websocket-accept") && h.value == expected.as_bytes()
        });
        if !accepted {
            return Err(UpgradeError::Accept);
        }
        return Ok(buf.split_off(len));
    }
}
