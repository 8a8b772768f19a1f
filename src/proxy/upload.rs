//! The request body on its way to a backend, reporting when it has all been sent, so that
//! the response-header timeout measures the backend and not the client's upload.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

/// Wraps a request body; the paired receiver completes once the body is sent or given up.
#[derive(Debug)]
pub struct Upload<B> {
    inner: B,
    /// Fired at the end of the body, or when hyper drops it: both mean nothing more will be
    /// sent. Taken when fired.
    sent: Option<oneshot::Sender<()>>,
}

impl<B> Upload<B> {
    pub fn new(inner: B) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                inner,
                sent: Some(tx),
            },
            rx,
        )
    }

    fn finish(&mut self) {
        if let Some(tx) = self.sent.take() {
            let _ = tx.send(());
        }
    }
}

impl<B: Body + Unpin> Body for Upload<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if frame.is_none() || this.inner.is_end_stream() {
            this.finish();
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

impl<B> Drop for Upload<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn reports_once_the_last_frame_is_taken() {
        let (mut body, mut sent) = Upload::new(Full::new(Bytes::from_static(b"data")));
        assert!(sent.try_recv().is_err(), "nothing sent yet");
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "data");
        assert!(sent.try_recv().is_ok());
    }

    #[tokio::test]
    async fn reports_when_dropped_unsent() {
        let (body, sent) = Upload::new(Full::new(Bytes::from_static(b"data")));
        drop(body);
        assert!(sent.await.is_ok());
    }
}
