//! Idle HTTP/1.1 client connections without buffers.
//!
//! hyper gives every HTTP/1 connection a read and a write buffer of 8 KiB each and keeps
//! them for as long as the connection lives, so 10,000 idle keep-alive clients cost about
//! 190 MiB. HAProxy and nginx hand their buffers back between requests. Here a connection
//! idle for [`PARK_AFTER`] is *parked*: its hyper state is dropped and only the socket is
//! kept, and when the client's next bytes arrive a fresh hyper connection takes over.
//!
//! hyper has no "stop between requests" call. [`Parking`] makes the connection's read
//! report end of stream once it has been idle long enough, which hyper answers by ending
//! the connection cleanly; the shutdown that follows is kept from the socket, and the
//! socket is taken back with `into_parts`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::client_timeouts::Watched;

/// How long a connection stays idle, with its buffers, before it is parked. Long enough
/// that a client sending requests back to back never pays for a new hyper connection;
/// short enough that a burst of clients that then go quiet does not pile up buffers.
pub const PARK_AFTER: Duration = Duration::from_millis(50);

/// How long an ended connection keeps reading what its client still sends (see
/// [`Parking::linger`]); nginx's `lingering_timeout` is 5 s too.
const LINGER: Duration = Duration::from_secs(5);

/// A client connection's I/O that can be parked; see the module documentation.
pub struct Parking<IO> {
    /// The connection's watched I/O, whose activity tells when it is idle.
    io: Watched<IO>,
    /// Bytes hyper had read but not parsed when the connection was parked; read first.
    leftover: Bytes,
    /// Fires [`PARK_AFTER`] into an idle period; boxed because hyper wants `Unpin` I/O.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` is set for the current idle period. Every request begins with
    /// bytes read, and reading disarms it.
    armed: bool,
    /// Written but not flushed: the response is not out yet, so the connection is busy.
    unflushed: bool,
    parked: bool,
}

impl<IO> Parking<IO> {
    pub fn new(io: Watched<IO>) -> Self {
        Self {
            io,
            leftover: Bytes::new(),
            timer: None,
            armed: false,
            unflushed: false,
            parked: false,
        }
    }

    /// Whether hyper ended the connection because it was parked, rather than because the
    /// client closed it, failed, or switched protocols.
    pub fn is_parked(&self) -> bool {
        self.parked
    }

    /// Makes the connection readable again for a new hyper connection, with the bytes the
    /// previous one had not used.
    pub fn unpark(&mut self, leftover: Bytes) {
        self.parked = false;
        self.armed = false;
        // hyper's leftover shares its whole read buffer; keeping it would keep the buffer.
        self.leftover = if leftover.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&leftover)
        };
    }

    /// After hyper has ended the connection and sent its shutdown: reads and discards what
    /// the client still sends, until it closes or [`LINGER`] passes. A client refused while
    /// uploading (413, 503) is still writing its body; closing a socket with unread bytes
    /// sends a reset, which can destroy the answer before the client reads it. nginx and
    /// HAProxy linger the same way.
    pub async fn linger(&mut self)
    where
        IO: AsyncRead + Unpin,
    {
        use tokio::io::AsyncReadExt;
        // Kept in the future itself, which `Client::serve` boxes: no second allocation.
        let mut scrap = [0u8; 4096];
        let deadline = Instant::now() + LINGER;
        // The watched I/O, not `self`: a pause in the client's upload must not look like
        // an idle connection to be parked.
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, self.io.read(&mut scrap)).await {
            if n == 0 {
                return;
            }
        }
    }

    pub fn has_leftover(&self) -> bool {
        !self.leftover.is_empty()
    }

    /// Whether a read that found nothing should count towards parking.
    fn idle(&self) -> bool {
        !self.unflushed && self.io.activity().is_idle()
    }

    /// Notes a write that put bytes out: the connection is busy until they are flushed.
    fn wrote(&mut self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.unflushed = true;
        }
        polled
    }

    /// Polls the park timer of the current idle period, arming it if needed.
    fn poll_park(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            // Read the clock only when arming: an idle connection is polled more often.
            let deadline = Instant::now() + PARK_AFTER;
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        // Armed, so the timer exists.
        self.timer
            .as_mut()
            .map_or(Poll::Pending, |timer| timer.as_mut().poll(cx))
    }
}

/// Waiting for a client's next bytes without reading them.
pub trait ReadReady {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

/// A TLS connection is parked only after a read found no plaintext and no complete record
/// (see [`Parking`]), so whatever comes next arrives on the socket.
impl ReadReady for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

impl<IO: ReadReady> Parking<IO> {
    /// Resolves when the client has sent something (or closed, or failed).
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.io.get_ref().poll_read_ready(cx)).await
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Parking<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.parked {
            return Poll::Ready(Ok(()));
        }
        if !this.leftover.is_empty() {
            let n = this.leftover.len().min(buf.remaining());
            buf.put_slice(&this.leftover[..n]);
            this.leftover.advance(n);
            this.armed = false;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending if this.idle() => match this.poll_park(cx) {
                Poll::Ready(()) => {
                    this.parked = true;
                    Poll::Ready(Ok(()))
                }
                Poll::Pending => Poll::Pending,
            },
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.armed = false;
                Poll::Ready(Ok(()))
            }
            polled => polled,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Parking<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = polled {
            self.unflushed = false;
            // The response is out. hyper read (and found nothing) before it finished, and
            // will not read again until the client sends something: the timer must be
            // running now, so that its firing brings hyper back to the read that parks.
            if self.idle() {
                let _ = self.poll_park(cx);
            }
        }
        polled
    }

    /// hyper shuts the connection down once it has ended; a parked one stays open.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.parked {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
