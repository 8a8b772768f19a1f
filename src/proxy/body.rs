//! Body wrappers of the forwarding path.
//!
//! - [`ReclaimBody`]: a client's request body that comes back to the proxy if the backend
//!   connection failed before any of it was read, so the request can go to another server.
//! - [`TrackedBody`]: a backend's response body that keeps the server's in-flight count up
//!   until the client has it all (or goes away), which is what least-connections must see.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::table::state::InflightGuard;

/// A request body that is handed back through `reclaim` when dropped unread.
///
/// The HTTP client owns the request while it connects; when the connection fails it drops the
/// request. Nothing was sent, so the body is intact, and dropping it here returns it.
#[derive(Debug)]
pub struct ReclaimBody {
    inner: Option<Incoming>,
    /// Set once a frame was read: from then on the body cannot be replayed.
    started: bool,
    reclaim: Option<oneshot::Sender<Incoming>>,
}

impl ReclaimBody {
    pub fn new(inner: Incoming) -> (Self, oneshot::Receiver<Incoming>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                inner: Some(inner),
                started: false,
                reclaim: Some(tx),
            },
            rx,
        )
    }
}

impl Drop for ReclaimBody {
    fn drop(&mut self) {
        if !self.started {
            if let (Some(inner), Some(tx)) = (self.inner.take(), self.reclaim.take()) {
                let _ = tx.send(inner);
            }
        }
    }
}

impl Body for ReclaimBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.started = true;
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// A response body that holds its server's in-flight count until it is done.
#[derive(Debug)]
pub struct TrackedBody {
    inner: Incoming,
    guard: Option<InflightGuard>,
}

impl TrackedBody {
    pub fn new(inner: Incoming, guard: InflightGuard) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = polled {
            // Done: the request no longer occupies the server, even if the client connection
            // lingers in keep-alive.
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
