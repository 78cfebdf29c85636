//! The two streamed bodies of a proxied exchange. [`Upload`] carries the
//! client's request body to the backend, enforcing `max_request_body_bytes`
//! and remembering whether a byte of it has left yet (a request whose body
//! has not started may be retried on a fresh connection). [`Download`]
//! carries the backend's response body to the client and, when the exchange
//! ends, frees the backend slot, returns a reusable connection to its pool
//! and writes the access-log line.
//!
//! Both move one chunk at a time as hyper reads it: nothing is held whole,
//! so memory stays flat whatever the body's size.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;

use super::exchange::Finish;

/// What the client gets back from a proxied request: a proxy-made answer,
/// or the backend's streamed response.
pub type AnswerBody = Either<Full<Bytes>, Download>;

/// How the client's body went, shared between the [`Upload`] that hyper's
/// client polls and the exchange that waits for the answer.
#[derive(Debug, Default)]
pub struct UploadState {
    bytes: AtomicU64,
    done: AtomicBool,
    /// When the body ended, for `response_timeout`.
    done_at: std::sync::Mutex<Option<tokio::time::Instant>>,
    failure: AtomicU8,
}

/// Why an upload stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UploadFailure {
    /// More than the route's `max_request_body_bytes`.
    #[error("request body over max_request_body_bytes")]
    TooLarge,
    /// The client's body was malformed (an invalid chunk) or cut short.
    #[error("request body malformed or cut short")]
    Client,
}

impl UploadState {
    /// Body bytes passed to the backend so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the whole body has passed.
    pub fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// Why the upload stopped early, if it did.
    pub fn failure(&self) -> Option<UploadFailure> {
        match self.failure.load(Ordering::Relaxed) {
            1 => Some(UploadFailure::TooLarge),
            2 => Some(UploadFailure::Client),
            _ => None,
        }
    }

    fn fail(&self, failure: UploadFailure) {
        let code = match failure {
            UploadFailure::TooLarge => 1,
            UploadFailure::Client => 2,
        };
        self.failure.store(code, Ordering::Relaxed);
    }

    /// When the whole body had passed, if it has.
    pub fn done_at(&self) -> Option<tokio::time::Instant> {
        *self.done_at.lock().expect("not poisoned")
    }

    pub(super) fn mark_done(&self) {
        if !self.done.swap(true, Ordering::Relaxed) {
            *self.done_at.lock().expect("not poisoned") = Some(tokio::time::Instant::now());
        }
    }
}

/// The client's request body on its way to the backend.
#[derive(Debug)]
pub struct Upload {
    inner: Option<Incoming>,
    state: Arc<UploadState>,
    /// Zero: no limit.
    limit: u64,
    /// Where the body goes back if it is dropped before its first byte
    /// left, so that the request can be sent again.
    give_back: Option<oneshot::Sender<Incoming>>,
}

impl Upload {
    /// Wraps `inner`; the receiver gets it back if this is dropped before
    /// any of its bytes were taken.
    pub fn new(
        inner: Incoming,
        state: Arc<UploadState>,
        limit: u64,
    ) -> (Upload, oneshot::Receiver<Incoming>) {
        if inner.is_end_stream() {
            state.mark_done();
        }
        let (tx, rx) = oneshot::channel();
        let upload = Upload {
            inner: Some(inner),
            state,
            limit,
            give_back: Some(tx),
        };
        (upload, rx)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let (Some(tx), Some(inner)) = (self.give_back.take(), self.inner.take()) {
            let _ = tx.send(inner);
        }
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = UploadFailure;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UploadFailure>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // From here on the body is being sent: it cannot be sent again.
        this.give_back = None;
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let total = this
                        .state
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed)
                        + data.len() as u64;
                    if this.limit > 0 && total > this.limit {
                        this.state.fail(UploadFailure::TooLarge);
                        return Poll::Ready(Some(Err(UploadFailure::TooLarge)));
                    }
                }
                // hyper stops polling a body of known length once it has
                // it all, so the end is noted here too.
                if frame.is_trailers() || inner_end(&this.inner) {
                    this.state.mark_done();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(_)) => {
                this.state.fail(UploadFailure::Client);
                Poll::Ready(Some(Err(UploadFailure::Client)))
            }
            None => {
                this.state.mark_done();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(Body::size_hint)
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

fn inner_end(inner: &Option<Incoming>) -> bool {
    inner.as_ref().is_none_or(Body::is_end_stream)
}

/// The backend's response body on its way to the client.
#[derive(Debug)]
pub struct Download {
    inner: Incoming,
    bytes: u64,
    complete: bool,
    finish: Option<Finish>,
}

impl Download {
    /// Streams `inner`; `finish` runs once the body ends or is dropped.
    pub fn new(inner: Incoming, finish: Finish) -> Download {
        Download {
            inner,
            bytes: 0,
            complete: false,
            finish: Some(finish),
        }
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            let complete = self.complete || self.inner.is_end_stream();
            finish.run(self.bytes, complete);
        }
    }
}

impl Body for Download {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    this.bytes += data.len() as u64;
                }
                // Trailers end a body: nothing is polled after them.
                if f.is_trailers() {
                    this.complete = true;
                }
            }
            // An error ends the client's connection too: hyper cannot
            // finish a response whose length or chunking it promised.
            Some(Err(_)) => {}
            None => this.complete = true,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
