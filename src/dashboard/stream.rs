//! The live update stream: Server-Sent Events to each viewer of the
//! dashboard.
//!
//! One sampler makes one document a second and offers it to every viewer.
//! A viewer holds at most one document waiting (a channel of one slot):
//! one that reads slower than a document a second skips documents instead
//! of queueing them, so memory per viewer is bounded whatever it does.
//! At most [`MAX_VIEWERS`] watch at once; the next is refused with 503.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

/// Viewers served at once.
pub const MAX_VIEWERS: usize = 16;

/// Why a viewer was turned away.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("too many dashboard viewers: {MAX_VIEWERS} are watching; close one and retry")]
pub struct TooManyViewers;

/// The viewers of one proxy and the latest document.
#[derive(Debug, Default)]
pub struct Viewers {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    senders: Vec<mpsc::Sender<Bytes>>,
    latest: Option<Bytes>,
}

impl Viewers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("viewer lock is never poisoned")
    }

    /// A new viewer, handed the latest document at once; refused when
    /// [`MAX_VIEWERS`] are already watching.
    pub fn subscribe(&self) -> Result<Viewer, TooManyViewers> {
        let mut inner = self.lock();
        inner.senders.retain(|s| !s.is_closed());
        if inner.senders.len() >= MAX_VIEWERS {
            return Err(TooManyViewers);
        }
        let (tx, rx) = mpsc::channel(1);
        if let Some(latest) = &inner.latest {
            let _ = tx.try_send(latest.clone());
        }
        inner.senders.push(tx);
        Ok(Viewer { rx })
    }

    /// Offers `document` (one JSON line) to every viewer; a viewer that has
    /// not taken the previous one yet skips this one.
    pub fn publish(&self, document: &str) {
        let event = Bytes::from(format!("data: {document}\n\n"));
        let mut inner = self.lock();
        inner.senders.retain(|s| !s.is_closed());
        for s in &inner.senders {
            let _ = s.try_send(event.clone());
        }
        inner.latest = Some(event);
    }

    /// Viewers watching now.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        let mut inner = self.lock();
        inner.senders.retain(|s| !s.is_closed());
        inner.senders.len()
    }
}

/// One viewer's `text/event-stream` body; dropping it (the viewer went
/// away) frees its seat.
#[derive(Debug)]
pub struct Viewer {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for Viewer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|event| event.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;

    async fn next(viewer: &mut Viewer) -> Option<String> {
        let frame = tokio::time::timeout(Duration::from_secs(5), viewer.frame())
            .await
            .ok()??
            .ok()?;
        Some(String::from_utf8(frame.into_data().ok()?.to_vec()).unwrap())
    }

    fn pending(viewer: &mut Viewer) -> bool {
        viewer.rx.is_empty()
    }

    #[tokio::test]
    async fn a_new_viewer_gets_the_latest_document_at_once() {
        let viewers = Viewers::default();
        viewers.publish("{\"n\":1}");
        viewers.publish("{\"n\":2}");
        let mut v = viewers.subscribe().unwrap();
        assert_eq!(next(&mut v).await.unwrap(), "data: {\"n\":2}\n\n");
        assert!(pending(&mut v));
        viewers.publish("{\"n\":3}");
        assert_eq!(next(&mut v).await.unwrap(), "data: {\"n\":3}\n\n");
    }

    #[tokio::test]
    async fn a_slow_viewer_skips_documents_instead_of_queueing_them() {
        let viewers = Viewers::default();
        let mut v = viewers.subscribe().unwrap();
        for n in 0..1000 {
            viewers.publish(&format!("{{\"n\":{n}}}"));
        }
        // One slot: the first document offered waits; the rest were skipped.
        assert_eq!(v.rx.len(), 1);
        assert_eq!(next(&mut v).await.unwrap(), "data: {\"n\":0}\n\n");
        assert!(pending(&mut v));
        viewers.publish("{\"n\":1000}");
        assert_eq!(next(&mut v).await.unwrap(), "data: {\"n\":1000}\n\n");
    }

    #[tokio::test]
    async fn the_seventeenth_viewer_is_refused_until_one_leaves() {
        let viewers = Viewers::default();
        let mut seats: Vec<Viewer> = (0..MAX_VIEWERS)
            .map(|_| viewers.subscribe().unwrap())
            .collect();
        assert_eq!(viewers.count(), MAX_VIEWERS);
        assert_eq!(viewers.subscribe().unwrap_err(), TooManyViewers);
        seats.pop();
        assert_eq!(viewers.count(), MAX_VIEWERS - 1);
        let _again = viewers.subscribe().unwrap();
        assert_eq!(viewers.subscribe().unwrap_err(), TooManyViewers);
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_proxy_drops_its_viewers() {
        let viewers = Viewers::default();
        let mut v = viewers.subscribe().unwrap();
        drop(viewers);
        assert_eq!(next(&mut v).await, None);
    }
}
