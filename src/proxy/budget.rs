//! The memory budget for bytes in transit (the Azure broker's memory profiles): every body
//! frame limpet holds between reading it from one side and handing it to the other is
//! charged here.
//!
//! Two rules keep memory bounded. New requests are refused (503 with Retry-After) once 75 %
//! of the budget is in use, so work already accepted can finish; and a body stops reading
//! while the budget is full, so TCP flow control slows the sender instead of limpet growing.
//! Bytes that hyper holds in its per-connection buffers come on top, bounded by the buffer
//! size times the connection limit.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// The share of the budget above which new requests are turned away.
const ADMISSION_PERCENT: usize = 75;

#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    /// The most ever in use, for the status page and the benchmark.
    peak: AtomicUsize,
    /// Requests refused because the budget was past the admission threshold.
    refused: AtomicU64,
    freed: Arc<Notify>,
}

/// A snapshot for the status page.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct BudgetStats {
    pub limit: usize,
    pub used: usize,
    pub peak: usize,
    pub refused: u64,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            freed: Arc::new(Notify::new()),
        })
    }

    /// Whether a new request may start; counts the refusal when not.
    pub fn admit(&self) -> bool {
        let ok = self.used.load(Ordering::Relaxed) * 100 < self.limit * ADMISSION_PERCENT;
        if !ok {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            limit: self.limit,
            used: self.used.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    fn is_full(&self) -> bool {
        self.used.load(Ordering::Relaxed) >= self.limit
    }

    fn charge(&self, n: usize) {
        let now = self.used.fetch_add(n, Ordering::AcqRel) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_waiters();
    }
}

/// Why a body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Read(#[from] hyper::Error),
    #[error("request body exceeds the maximum of {0} bytes")]
    TooLarge(u64),
}

/// A body whose frames are charged to the budget while limpet holds them, and which waits
/// while the budget is full. With `max_len`, it fails once more bytes than that have passed.
pub struct Metered<B> {
    inner: B,
    budget: Arc<Budget>,
    /// Bytes of the frame handed out last: released when the next one is asked for, which
    /// is when the previous has been taken over by the other side.
    held: usize,
    max_len: Option<u64>,
    seen: u64,
    waiting: Option<Pin<Box<OwnedNotified>>>,
}

impl<B> Metered<B> {
    pub fn new(inner: B, budget: Arc<Budget>, max_len: Option<u64>) -> Self {
        Self {
            inner,
            budget,
            held: 0,
            max_len,
            seen: 0,
            waiting: None,
        }
    }

    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        self.budget.release(self.held);
    }
}

impl<B> std::fmt::Debug for Metered<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered").field("held", &self.held).finish()
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let held = std::mem::take(&mut this.held);
        this.budget.release(held);
        while this.budget.is_full() {
            let waiting = this
                .waiting
                .get_or_insert_with(|| Box::pin(Arc::clone(&this.budget.freed).notified_owned()));
            // Registered before the re-check, so a release in between is not missed.
            waiting.as_mut().enable();
            if !this.budget.is_full() {
                break;
            }
            match waiting.as_mut().poll(cx) {
                Poll::Ready(()) => this.waiting = None,
                Poll::Pending => return Poll::Pending,
            }
        }
        this.waiting = None;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len();
                    this.seen += n as u64;
                    if let Some(max) = this.max_len.filter(|m| this.seen > *m) {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(max))));
                    }
                    this.budget.charge(n);
                    this.held = n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn body_of(
        chunks: Vec<&'static [u8]>,
    ) -> impl Body<Data = Bytes, Error = hyper::Error> + Unpin {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(c))));
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn frames_are_charged_while_held_and_released_after() {
        let budget = Budget::new(1_000);
        let mut body = Metered::new(
            body_of(vec![b"hello", b"world!"]),
            Arc::clone(&budget),
            None,
        );
        body.frame().await.unwrap().unwrap();
        assert_eq!(budget.stats().used, 5);
        body.frame().await.unwrap().unwrap();
        assert_eq!(budget.stats().used, 6);
        assert!(body.frame().await.is_none());
        assert_eq!(budget.stats().used, 0);
        assert_eq!(budget.stats().peak, 6);
        drop(body);
    }

    #[tokio::test]
    async fn admission_stops_at_three_quarters_and_counts_refusals() {
        let budget = Budget::new(100);
        budget.charge(74);
        assert!(budget.admit());
        budget.charge(1);
        assert!(!budget.admit());
        assert_eq!(budget.stats().refused, 1);
        budget.release(75);
        assert!(budget.admit());
    }

    #[tokio::test]
    async fn a_full_budget_pauses_reading_until_released() {
        let budget = Budget::new(10);
        budget.charge(10);
        let mut body = Metered::new(body_of(vec![b"abc"]), Arc::clone(&budget), None);
        let read = tokio::spawn(async move { body.frame().await.is_some() });
        tokio::task::yield_now().await;
        assert!(!read.is_finished(), "must wait while the budget is full");
        budget.release(10);
        assert!(read.await.unwrap());
    }

    #[tokio::test]
    async fn too_large_bodies_fail() {
        let budget = Budget::new(1_000);
        let mut body = Metered::new(body_of(vec![b"12345", b"6789"]), budget, Some(8));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(matches!(
            body.frame().await.unwrap(),
            Err(BodyError::TooLarge(8))
        ));
    }
}
