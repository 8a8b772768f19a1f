//! Writes that wait for the worker's other ready tasks once before going out.
//!
//! On loopback and in VMs, most of a small request's cost is the kernel waking the peer a
//! write is for: a write to a peer asleep in `epoll_wait` wakes it, across CPUs with an
//! inter-processor interrupt. HAProxy reads everything that is ready, then writes
//! everything, so a peer woken by the first write is still awake for the next ones. A
//! tokio task writes as soon as its response is ready, and the next task's work in between
//! gives the peer time to fall asleep again. [`Batched`] sends a write's task to the back
//! of the worker's run queue once, so that writes leave in a burst after the reads.
//!
//! The task wakes itself rather than calling `tokio::task::yield_now`: tokio holds a
//! yielded task back until it has polled for I/O again, which added a scheduler turn to
//! every request (its p99 was about 5 % higher, bench/RESULTS.md) for no fewer wake-ups.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes at least this long go out at once: one is a burst by itself, and holding it back
/// let the next backend read join it, which made writes of 128 KiB that the client then
/// received later (1 MiB responses were served 5–10 % slower).
const LARGE: usize = 32 * 1024;

pub struct Batched<IO> {
    io: IO,
    /// This write has already yielded once and now goes out.
    yielded: bool,
}

impl<IO> Batched<IO> {
    pub fn new(io: IO) -> Self {
        Self { io, yielded: false }
    }

    /// Ready when the write may go: after one trip to the back of the run queue per write.
    fn poll_turn(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<()> {
        if self.yielded || len >= LARGE {
            self.yielded = false;
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Batched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Batched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_turn(cx, buf.len()));
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_turn(cx, bufs.iter().map(|b| b.len()).sum()));
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO: super::parking::ReadReady> super::parking::ReadReady for Batched<IO> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_read_ready(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_waits_one_turn_then_goes_out_whole() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut batched = Batched::new(near);
        let mut first = true;
        let written = std::future::poll_fn(|cx| {
            let polled = Pin::new(&mut batched).poll_write(cx, b"hello");
            if first {
                // The first poll yields (and has asked to be polled again).
                assert!(
                    polled.is_pending(),
                    "the first poll of a write went out at once"
                );
                first = false;
            }
            polled
        })
        .await
        .unwrap();
        assert_eq!(written, 5);
        batched.flush().await.unwrap();
        let mut got = [0u8; 5];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }

    #[tokio::test]
    async fn a_large_write_goes_out_at_once() {
        let (near, mut far) = tokio::io::duplex(2 * LARGE);
        let mut batched = Batched::new(near);
        let data = vec![7u8; LARGE];
        let polled = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(Pin::new(&mut batched).poll_write(cx, &data))
        })
        .await;
        assert!(
            matches!(polled, Poll::Ready(Ok(n)) if n == LARGE),
            "a write of {LARGE} bytes was held back: {polled:?}"
        );
        let mut got = vec![0u8; LARGE];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, data);
    }
}
