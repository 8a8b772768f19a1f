//! Closes client connections that hold a place without using it: one that takes too long
//! over a request head (slowloris; HAProxy's `timeout http-request`, Go's and Traefik's
//! `ReadHeaderTimeout`), and one idle between requests for too long (HAProxy's
//! `timeout http-keep-alive`, Traefik's `idleTimeout`).
//!
//! hyper 1.x has only `header_read_timeout`, and it runs from the end of one response to
//! the end of the next head, so it is also the idle timeout, with the same value (hyper
//! #3756, #3828); HTTP/2 connections have neither. Here the connection's reads and its
//! requests are watched instead, and [`Watchdog::expired`] resolves when the connection
//! should go. A connection with a request in flight is never cut, however quiet.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// What a connection has been doing, and whether its entrypoint is stopping; shared by its
/// I/O, its requests and its watchdog.
pub struct Activity {
    born: Instant,
    /// Requests whose response has not been fully sent yet.
    in_flight: AtomicUsize,
    /// When the last request ended, or the connection began (ms since `born`).
    last_done: AtomicU64,
    /// When the current request head began (ms since `born`, plus one); 0 when none is
    /// being read. Only HTTP/1 heads are timed: HTTP/2 frames its requests itself.
    head_since: AtomicU64,
    http1: bool,
    /// The entrypoint's, set when it stops (see [`InFlight::is_last`]).
    closing: Arc<AtomicBool>,
}

impl Activity {
    /// A new connection. An HTTP/1 connection is reading its first head from the start:
    /// a client that connects and sends nothing is the plainest slowloris.
    pub fn new(http1: bool, closing: Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done: AtomicU64::new(0),
            head_since: AtomicU64::new(u64::from(http1)),
            http1,
            closing,
        })
    }

    fn now(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Bytes arrived. Between requests on HTTP/1, they begin the next head.
    pub fn read(&self) {
        if self.http1 && self.is_idle() {
            self.head_since.store(self.now() + 1, Ordering::Release);
        }
    }

    /// No request in flight and none begun: the connection is waiting for its client.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.head_since.load(Ordering::Acquire) == 0
    }

    /// A request head is complete; the request holds the connection until its response has
    /// been sent, which the returned guard marks by being dropped.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        InFlight(Arc::clone(self))
    }
}

/// A request in flight on its connection.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// The entrypoint has begun to stop, so on HTTP/1 this request's response is the
    /// connection's last and should say so (HTTP/2 has its GOAWAY). The connection's task
    /// looks at the stop only when a poll begins, and a poll under way when it comes may
    /// still receive this response and have hyper encode it as keep-alive.
    pub fn is_last(&self) -> bool {
        self.0.http1 && self.0.closing.load(Ordering::Acquire)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_done.store(self.0.now(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Head,
    Idle,
}

/// The timeouts of client connections; `None` switches one off.
#[derive(Debug, Clone, Copy)]
pub struct Watchdog {
    pub head: Option<Duration>,
    pub idle: Option<Duration>,
}

impl Watchdog {
    /// Resolves when the connection has spent too long over a head or idle.
    pub async fn expired(self, activity: &Activity) -> Expiry {
        let ms = |d: Duration| d.as_millis() as u64;
        // Rechecked this often while requests are in flight; their end does not wake us.
        let busy_poll = [self.head, self.idle]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(3600))
            .max(Duration::from_millis(50));
        loop {
            let now = activity.now();
            let wait = if activity.in_flight.load(Ordering::Acquire) > 0 {
                busy_poll
            } else {
                let head_since = activity.head_since.load(Ordering::Acquire);
                let (since, limit, expiry) = if head_since > 0 {
                    (head_since - 1, self.head, Expiry::Head)
                } else {
                    (
                        activity.last_done.load(Ordering::Acquire),
                        self.idle,
                        Expiry::Idle,
                    )
                };
                match limit {
                    Some(limit) => {
                        let deadline = since + ms(limit);
                        if now >= deadline {
                            return expiry;
                        }
                        let wait = Duration::from_millis(deadline - now);
                        // A head that begins now does not wake us. An idle HTTP/1
                        // connection is parked soon, which ends this watch and starts the
                        // head clock when the client speaks; until then, look again often.
                        if expiry == Expiry::Idle && activity.http1 {
                            wait.min(super::PARK_AFTER)
                        } else {
                            wait
                        }
                    }
                    // No limit for this state: look again when it may have changed.
                    None => busy_poll,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A client connection's I/O, reporting reads to its [`Activity`].
pub struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body that holds its request's place on the connection until it is sent.
pub struct Held<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Held<B> {
    pub fn new(body: B, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(40);

    #[tokio::test]
    async fn head_then_idle_then_head_again() {
        let dog = Watchdog {
            head: Some(SHORT),
            idle: Some(SHORT * 3),
        };
        // A fresh HTTP/1 connection is on its head clock.
        let a = Activity::new(true, Arc::default());
        assert_eq!(dog.expired(&a).await, Expiry::Head);

        // After a request, the idle clock runs; bytes of a new head switch back.
        let a = Activity::new(true, Arc::default());
        drop(a.request());
        let start = Instant::now();
        assert_eq!(dog.expired(&a).await, Expiry::Idle);
        assert!(start.elapsed() >= SHORT * 3, "idle limit not honoured");
        a.read();
        assert_eq!(dog.expired(&a).await, Expiry::Head);

        // HTTP/2 has no head clock.
        let a = Activity::new(false, Arc::default());
        a.read();
        assert_eq!(dog.expired(&a).await, Expiry::Idle);

        // Switched off, a clock never fires.
        let off = Watchdog {
            head: None,
            idle: Some(SHORT),
        };
        let a = Activity::new(true, Arc::default());
        assert!(tokio::time::timeout(SHORT * 4, off.expired(&a))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_request_in_flight_is_never_cut() {
        let dog = Watchdog {
            head: Some(SHORT),
            idle: Some(SHORT),
        };
        let a = Activity::new(true, Arc::default());
        let held = a.request();
        let waited = tokio::time::timeout(SHORT * 6, dog.expired(&a)).await;
        assert!(waited.is_err(), "expired with a request in flight");
        drop(held);
        assert_eq!(dog.expired(&a).await, Expiry::Idle);
    }
}
