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

use super::pool::Pooled;
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

/// A response body that holds its server's in-flight count until it is done, and gives the
/// backend connection back to its pool when the body was read to its end.
#[derive(Debug)]
pub struct TrackedBody {
    inner: Incoming,
    guard: Option<InflightGuard>,
    /// The connection the body arrives on, when it may carry another request afterwards.
    conn: Option<Pooled>,
}

impl TrackedBody {
    pub fn new(inner: Incoming, guard: InflightGuard, conn: Option<Pooled>) -> Self {
        Self {
            inner,
            guard: Some(guard),
            conn,
        }
    }

    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.release();
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        // A server does not poll a body that says it has ended (a HEAD, a 204, the last
        // frame of a sized body): that end counts too. A body dropped half-read leaves its
        // connection unusable, and `conn` is then dropped with it.
        if self.inner.is_end_stream() {
            self.release();
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
        match polled {
            // Done: the request no longer occupies the server, even if the client connection
            // lingers in keep-alive.
            Poll::Ready(None) => {
                self.guard = None;
                self.release();
            }
            Poll::Ready(Some(Err(_))) => {
                self.guard = None;
                self.conn = None;
            }
            _ => {}
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
