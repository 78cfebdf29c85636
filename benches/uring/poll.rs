//! The epoll engine: the relay on Tokio's current-thread runtime, one task
//! per connection, each direction a read, an examination and a write, as
//! wsgate's relay does on its worker (whose runtime also waits in
//! `epoll_wait` and reads with `recvfrom` until the socket runs dry).

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsgate::relay::state::DirectionState;

use crate::{examine, head_end, states, switches, Settings, MAX_HEAD, READ_LEN};

/// Limit for each step of the upgrade (reading the request, connecting,
/// reading the answer). The relay itself has no timer, as in the io_uring
/// engine: a timer per read would be work the other engine does not do.
const HANDSHAKE_STEP: Duration = Duration::from_secs(10);

/// Runs the relay until the process is stopped (or `max_accepts`
/// connections have come and gone).
pub fn run(settings: Settings) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(settings))
}

async fn serve(settings: Settings) -> io::Result<()> {
    let listener = TcpListener::bind(settings.listen).await?;
    eprintln!(
        "uring (epoll): relaying {} to {}",
        listener.local_addr()?,
        settings.backend
    );
    let open = Rc::new(Cell::new(0usize));
    let mut accepted = 0u64;
    while accepted < settings.max_accepts {
        let (client, _) = listener.accept().await?;
        accepted += 1;
        if open.get() >= crate::MAX_CONNECTIONS {
            continue;
        }
        open.set(open.get() + 1);
        let open = Rc::clone(&open);
        tokio::task::spawn_local(async move {
            if let Err(e) = connection(client, settings).await {
                // A reset, or a probe that connected and left, is no news.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                ) {
                    eprintln!("uring (epoll): connection: {e}");
                }
            }
            open.set(open.get() - 1);
        });
    }
    // The last connections finish before the process ends; at most a
    // minute, as each ends with its peers.
    for _ in 0..6000 {
        if open.get() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// One connection: the upgrade, then both directions until both ended.
async fn connection(mut client: TcpStream, settings: Settings) -> io::Result<()> {
    client.set_nodelay(true)?;
    let [mut up, mut down] = states();
    let mut head = Vec::with_capacity(1024);
    let end = step(read_head(&mut client, &mut head)).await??;
    let mut backend = step(TcpStream::connect(settings.backend)).await??;
    backend.set_nodelay(true)?;
    backend.write_all(&head).await?;
    // Bytes that came with the request are the client's first frames.
    examine(&mut up, &head[end..]).map_err(io::Error::other)?;
    head.clear();
    let end = step(read_head(&mut backend, &mut head)).await??;
    client.write_all(&head).await?;
    if !switches(&head[..end]) {
        return Ok(());
    }
    examine(&mut down, &head[end..]).map_err(io::Error::other)?;
    drop(head);

    let (client_read, client_write) = client.split();
    let (backend_read, backend_write) = backend.split();
    tokio::try_join!(
        pump(client_read, backend_write, &mut up),
        pump(backend_read, client_write, &mut down),
    )?;
    Ok(())
}

/// `future` within [`HANDSHAKE_STEP`].
async fn step<T>(future: impl std::future::Future<Output = T>) -> io::Result<T> {
    tokio::time::timeout(HANDSHAKE_STEP, future)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upgrade step timed out"))
}

/// Reads into `buf` until it holds a whole HTTP head; returns where the
/// head ends (what follows is frames).
async fn read_head<R: AsyncRead + Unpin>(src: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 2048];
    while buf.len() < MAX_HEAD {
        let n = src.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(buf) {
            return Ok(end);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "HTTP head over 16 KiB",
    ))
}

/// One direction: read, examine, write, until the source ends; then the
/// destination's write side is shut, as wsgate does after a close.
async fn pump<R, W>(mut src: R, mut dst: W, state: &mut DirectionState) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; READ_LEN];
    // Ends at EOF or an error; each turn moves at least one byte.
    loop {
        let n = src.read(&mut buf).await?;
        if n == 0 {
            return dst.shutdown().await;
        }
        examine(state, &buf[..n]).map_err(io::Error::other)?;
        dst.write_all(&buf[..n]).await?;
    }
}
