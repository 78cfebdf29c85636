//! The request head: read under its size and time limits before hyper sees
//! it, then handed to hyper, which parses it and drives the upgrade or the
//! kept-alive exchange; and the raw answers written before hyper has the
//! connection.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::access::access_rejected;
use super::admit::pending;
use super::dispatch::answer;
use super::Context;
use crate::handshake::{self, FirstByte, ReadHeadError, Reject, Rewind};
use crate::http_proxy::framing::Scanned;
use crate::relay;

/// Reads the request head, then lets hyper parse it and drive the upgrade.
pub(super) async fn serve_http<IO>(
    mut io: IO,
    accepted: Arc<Context>,
    deadline: Instant,
    limit: usize,
    first_byte: Option<FirstByte>,
    tls: bool,
    dropped: Arc<Notify>,
) where
    IO: AsyncRead + AsyncWrite + relay::Socket + Unpin + Send + 'static,
{
    let read = timeout_at(deadline, handshake::read_head(&mut io, limit, first_byte));
    let head = match pending(&dropped, read).await {
        None => return accepted.pending_dropped(),
        Some(Ok(Ok(head))) => head,
        Some(Ok(Err(ReadHeadError::Reject(reject)))) => {
            reject_raw(&mut io, &accepted, reject).await;
            return;
        }
        Some(Ok(Err(e))) => {
            debug!(peer = %accepted.peer, error = %e, "no request");
            return;
        }
        Some(Err(_)) => {
            // RFC 9110 section 15.5.9: the server gave up waiting.
            let answer = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: 49\r\n\r\nrequest not received in time (handshake_timeout)\n";
            let _ = io.write_all(answer).await;
            linger(&mut io).await;
            access_rejected(
                &accepted,
                accepted.peer,
                None,
                None,
                408,
                "request not received in time (handshake_timeout)",
            );
            return;
        }
    };
    if let Some(ticket) = accepted.ticket.lock().expect("not poisoned").as_mut() {
        ticket.head_read();
    }
    let keepalive = accepted.keepalive;
    let tracker = accepted.shared.tracker.clone();
    let scanned = Scanned::new(Rewind::new(head.freeze(), io), accepted.framing.clone());
    let io = TokioIo::new(scanned);
    let service = service_fn(move |req| {
        let accepted = accepted.clone();
        // Answers are the proxy's own (a rejection, the backend's 101), a
        // backend's refusal passed on, or a proxied HTTP response.
        async move { Ok::<_, Infallible>(answer::<IO>(req, accepted, tls).await) }
    });
    let conn = http1::Builder::new()
        .max_headers(handshake::MAX_HEADERS)
        .max_buf_size((limit + 1024).max(8192))
        // Between requests on a kept-alive connection: how long the next
        // request head may take to arrive, idle time included.
        .timer(TokioTimer::new())
        .header_read_timeout(keepalive)
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = tracker.keepalive_stopped() => {
            // Shutdown: no further request on this connection; one in
            // flight is still answered.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "client connection ended during the handshake");
    }
}

/// Writes a rejection straight to the socket (hyper does not have the
/// connection yet) and closes.
pub(super) async fn reject_raw<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    accepted: &Context,
    reject: Reject,
) {
    access_rejected(
        accepted,
        accepted.peer,
        None,
        None,
        reject.status().as_u16(),
        &reject.to_string(),
    );
    let _ = io.write_all(&reject.raw_response()).await;
    linger(io).await;
}

/// Half-closes, then reads and discards what the client still sends for a
/// moment: closing a socket with unread input makes the kernel send a
/// reset, which can destroy the answer before the client reads it.
pub(super) async fn linger<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO) {
    let _ = io.shutdown().await;
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + LINGER;
    for _ in 0..LINGER_READS {
        match timeout_at(deadline, io.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

/// How long, and for how many reads, a rejected client's leftover input is
/// drained before the socket is closed.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_READS: usize = 64;
