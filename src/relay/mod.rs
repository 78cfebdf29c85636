//! The relay: after both upgrades, frames flow both ways.

use std::io;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Limits;

/// What the relay enforces on one connection.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The route's limits and timeouts, fixed at accept time.
    pub limits: Limits,
    /// `permessage-deflate` was negotiated.
    pub deflate: bool,
}

/// Relays until either side ends, then closes both.
pub async fn run<C>(
    mut client: C,
    client_pre: Bytes,
    mut backend: TcpStream,
    backend_pre: Bytes,
    _settings: Settings,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    backend.write_all(&client_pre).await?;
    client.write_all(&backend_pre).await?;
    tokio::io::copy_bidirectional(&mut client, &mut backend).await?;
    Ok(())
}
