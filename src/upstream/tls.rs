//! How a backend is reached: plain TCP, or TLS (wss://) verified against
//! the pool's roots for the backend's name, with ALPN `http/1.1` and the
//! pool's client certificate when it has one.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::UpstreamFailure;
use crate::config;

/// Where and how to reach one backend.
#[derive(Clone)]
pub struct Dial {
    /// The backend's address.
    pub addr: SocketAddr,
    /// TLS on top of the TCP connection, for pools with `tls`.
    pub tls: Option<DialTls>,
}

/// The TLS half of a [`Dial`].
#[derive(Clone)]
pub struct DialTls {
    /// The pool's client configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// Sent as SNI; the backend's certificate must be valid for it.
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dial")
            .field("addr", &self.addr)
            .field("tls", &self.tls.as_ref().map(|t| &t.server_name))
            .finish()
    }
}

impl Dial {
    /// How to reach `backend` of a pool with `tls`: the pool's
    /// `server_name`, else the name the backend was resolved from
    /// (validation demands one of them).
    pub fn to_backend(tls: Option<&config::BackendTls>, backend: &config::Backend) -> Dial {
        let tls = tls.and_then(|t| {
            let name = t.server_name.as_deref().or(backend.name.as_deref())?;
            let server_name = ServerName::try_from(name.to_string()).ok()?;
            Some(DialTls {
                config: t.client_config.clone(),
                server_name,
            })
        });
        Dial {
            addr: backend.addr,
            tls,
        }
    }

    /// Connects, and for TLS completes the handshake: a certificate that
    /// fails verification is a failed connect, like a refused one.
    pub async fn connect(&self) -> Result<BackendStream, UpstreamFailure> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(UpstreamFailure::Connect)?;
        // Small frames must not wait for Nagle's algorithm on either side.
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(BackendStream::Plain(tcp));
        };
        let connector = TlsConnector::from(tls.config.clone());
        let stream = connector
            .connect(tls.server_name.clone(), tcp)
            .await
            .map_err(UpstreamFailure::Tls)?;
        Ok(BackendStream::Tls(Box::new(stream)))
    }
}

/// A backend connection, plain or TLS; the relay is generic over it.
#[derive(Debug)]
pub enum BackendStream {
    /// ws:// backends.
    Plain(TcpStream),
    /// wss:// backends (boxed: the TLS state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(s) => s.is_write_vectored(),
            BackendStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl crate::relay::Socket for BackendStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            BackendStream::Plain(s) => s,
            BackendStream::Tls(s) => s.get_ref().0,
        }
    }
}
