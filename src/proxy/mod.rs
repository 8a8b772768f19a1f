//! The data plane: accepts client connections, routes each request through the current
//! table, and forwards it to the chosen backend with a pooled client.
//!
//! It reads the table, and nothing else, from the control plane: one atomic load per request.
//!
//! - `forward`: one request, from routing to the response (stickiness, retry, rewriting).
//! - `grpc`: deadlines and error statuses for gRPC calls.
//! - `headers`: hop-by-hop and `X-Forwarded-*` headers.
//! - `upload`: the request body towards a backend, reporting when it has been sent.
//! - `budget`: the memory budget for bytes in transit.
//! - `client_timeouts`: closing client connections slow over a request head, or idle.
//! - `clients`: the client pools towards backends, per protocol.
//! - `multiplex`: the HTTP/2 client, one shared connection per backend.
//! - `batching`: writes that wait for the worker's other ready tasks, so they leave in bursts.
//! - `parking`: idle HTTP/1.1 client connections without buffers.
//! - `branches`: a connection's task polls its watchdog and stop signal only when they woke it.
//! - `pool`: limpet's own pool of HTTP/1.1 connections to plain-HTTP backends.
//! - `error`: every failure, and the one place that maps failures to responses.
//! - `workers`: the threads connections are served on, one runtime each.

mod batching;
mod body;
mod branches;
mod budget;
mod client_timeouts;
mod clients;
mod error;
mod forward;
mod grpc;
mod headers;
mod multiplex;
mod parking;
mod pool;
mod upload;
mod workers;

pub use budget::{Budget, BudgetStats};
pub use error::{ProxyError, UpstreamError};
pub use headers::ClientConn;
pub use parking::PARK_AFTER;
pub use pool::{ConnectError, SendError};
pub use workers::{Workers, THREAD_NAME as WORKER_THREAD_NAME};

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::{http1, http2};
use hyper::service::{service_fn, HttpService};
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::discovery::SharedTable;
use branches::Branches;
use client_timeouts::{Activity, Held, Watchdog, Watched};
use parking::Parking;

/// Response bodies: streamed from the backend (charged to the memory budget), or a short one
/// limpet wrote itself.
pub type Body = Either<budget::Metered<body::TrackedBody>, Full<Bytes>>;

/// Request bodies towards backends: the client's stream (reclaimable if never read, charged
/// to the memory budget, watched so the response-header timeout starts once it is sent), or
/// nothing.
pub type UpstreamBody = Either<upload::Upload<budget::Metered<body::ReclaimBody>>, Empty<Bytes>>;

/// Settings of the forwarding path.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// How long to wait for a TCP connection to a backend.
    pub dial_timeout: Duration,
    /// How long to wait for a backend's response headers once the request is sent; 504 after.
    pub response_header_timeout: Duration,
    /// How long an unused backend connection stays in the pool.
    pub idle_conn_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per backend server and worker; more are closed when
    /// released.
    pub max_idle_per_server: usize,
    /// How long to wait for in-flight requests when shutting down.
    pub grace_period: Duration,
    /// Answer plain-HTTP requests with a redirect to HTTPS on this port.
    pub redirect_to_https: Option<u16>,
    /// Bytes in transit limpet may hold; see [`Budget`].
    pub memory_budget: usize,
    /// Largest request body accepted; 413 beyond it.
    pub max_body: Option<u64>,
    /// Client connections served at once; more are refused with a short 503.
    pub max_connections: usize,
    /// How long a client may take to send a complete HTTP/1 request head, from connecting
    /// or from the head's first byte; the connection is closed after. `None`: no limit.
    pub client_header_timeout: Option<Duration>,
    /// How long a client connection may stay open with no request in flight. `None`: no
    /// limit.
    pub client_idle_timeout: Option<Duration>,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            dial_timeout: Duration::from_secs(30),
            response_header_timeout: Duration::from_secs(60),
            idle_conn_timeout: Duration::from_secs(90),
            // More than the concurrent requests one server usually has; a burst beyond it
            // closes its extra connections once it is over rather than keeping them.
            max_idle_per_server: 256,
            grace_period: Duration::from_secs(10),
            redirect_to_https: None,
            memory_budget: 64 << 20,
            max_body: Some(64 << 20),
            max_connections: 16_384,
            client_header_timeout: Some(Duration::from_secs(10)),
            client_idle_timeout: Some(Duration::from_secs(180)),
        }
    }
}

/// Everything a request needs, shared by all connections of an entrypoint.
pub struct Proxy {
    table: SharedTable,
    clients: clients::Clients,
    settings: ProxySettings,
    budget: Arc<Budget>,
    /// Client connections open now, against `max_connections`.
    connections: std::sync::atomic::AtomicUsize,
}

impl Proxy {
    pub fn new(table: SharedTable, settings: ProxySettings) -> Self {
        Self {
            table,
            clients: clients::Clients::new(&settings),
            budget: Budget::new(settings.memory_budget),
            connections: std::sync::atomic::AtomicUsize::new(0),
            settings,
        }
    }

    pub fn budget(&self) -> Arc<Budget> {
        Arc::clone(&self.budget)
    }
}

/// How an entrypoint's connections arrive.
#[derive(Clone)]
pub enum Transport {
    /// Plain TCP; `h2c` also accepts HTTP/2 with prior knowledge.
    Plain { h2c: bool },
    /// TLS, with HTTP/2 or HTTP/1.1 chosen by ALPN.
    Tls(tokio_rustls::TlsAcceptor),
}

/// The largest read buffer of a backend connection: big enough for a 64 KiB response and
/// its head in one read, so that the response goes on to the client in one write too.
pub const MAX_BUF: usize = 80 * 1024;

/// The largest read buffer of a client connection, and so the largest request head; also
/// what it may queue to write, because hyper bounds both with one setting: one backend read
/// and room for the response head in front of it. With 64 KiB on both sides, a 64 KiB
/// response took two backend reads and, once a `Set-Cookie` had made its head a little
/// longer, two writes to the client: 64 KiB responses to new sessions were served 15 %
/// slower than to pinned ones (bench/RESULTS.md).
const CLIENT_MAX_BUF: usize = MAX_BUF + 16 * 1024;

/// Holds one of the `max_connections` places for as long as a client connection lives.
struct ConnectionSlot(Arc<Proxy>);

impl ConnectionSlot {
    fn take(proxy: &Arc<Proxy>) -> Option<Self> {
        use std::sync::atomic::Ordering;
        let before = proxy.connections.fetch_add(1, Ordering::AcqRel);
        if before >= proxy.settings.max_connections {
            proxy.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(Arc::clone(proxy)))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Turns a connection away beyond the limit: a short 503 on plain HTTP (the client learns
/// why and when to retry), a plain close on TLS, where answering would mean a handshake.
fn refuse(stream: tokio::net::TcpStream, transport: &Transport, peer: std::net::SocketAddr) {
    tracing::debug!(client = %peer, "connection limit reached; connection refused");
    if let Transport::Plain { .. } = transport {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut stream = stream;
            let _ = stream
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 20\r\n\r\nService Unavailable\n")
                .await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Whether a plain connection opens with the HTTP/2 preface. hyper-util's
/// `serve_connection_with_upgrades` ignores `http1_only` and would serve it as h2c, so an
/// entrypoint without h2c checks for itself. `PRI` is the method RFC 9113 §3.4 reserves for
/// the preface: no HTTP/1.1 request starts with it. Peeking consumes nothing.
async fn h2_preface(stream: &tokio::net::TcpStream) -> bool {
    const PRI: &[u8; 4] = b"PRI ";
    let mut buf = [0u8; 4];
    // A first segment shorter than four bytes is rare; it is waited for briefly, then the
    // connection goes to HTTP/1.1, whose parser refuses the preface anyway.
    for _ in 0..50 {
        match stream.peek(&mut buf).await {
            Ok(4) => return &buf == PRI,
            Ok(n) if n > 0 && PRI.starts_with(&buf[..n]) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            _ => return false,
        }
    }
    false
}

/// How long a client may take over its TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP on an already-bound listener until `shutdown` completes, then lets in-flight
/// requests finish for up to the grace period. Taking a bound listener lets tests use port 0.
/// Connections are served on the calling runtime.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, shutdown: impl Future<Output = ()>) {
    let workers = Arc::new(Workers::here());
    serve_with(
        listener,
        Transport::Plain { h2c: false },
        proxy,
        workers,
        shutdown,
    )
    .await
}

/// How a connection is served once its protocol is known (by the h2c preface or by ALPN).
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

/// [`serve`], for any transport, with connections spread over `workers`. Called on the first
/// worker's runtime.
pub async fn serve_with(
    listener: TcpListener,
    transport: Transport,
    proxy: Arc<Proxy>,
    workers: Arc<Workers>,
    shutdown: impl Future<Output = ()>,
) {
    let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    // Every connection holds a receiver; the sender learns when the last one has gone.
    let (stopping, stop) = watch::channel(false);
    let closing = Arc::new(AtomicBool::new(false));
    let protocols = {
        let mut http1 = http1::Builder::new();
        // A bounded read buffer per connection bounds what one connection can hold outside
        // the memory budget. hyper's header timeout doubles as an idle timeout of the same
        // length; both are `client_timeouts`' job, with a value each.
        http1
            .timer(TokioTimer::new())
            .max_buf_size(CLIENT_MAX_BUF)
            .header_read_timeout(None);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new());
        Arc::new(Protocols { http1, http2 })
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the accept loop.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = ConnectionSlot::take(&proxy) else {
            refuse(stream, &transport, peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = ClientConn::new(
            peer.ip(),
            local_port,
            matches!(transport, Transport::Tls(_)),
        );
        let client = Client {
            proxy: Arc::clone(&proxy),
            conn,
            peer,
            watchdog: Watchdog {
                head: proxy.settings.client_header_timeout,
                idle: proxy.settings.client_idle_timeout,
            },
            stop: stop.clone(),
            closing: Arc::clone(&closing),
        };
        let protocols = Arc::clone(&protocols);
        // One task per transport: a plain connection's task then holds no TLS state, which
        // would otherwise size every connection's task for the largest of them.
        match transport.clone() {
            Transport::Plain { h2c } => {
                workers.serve(stream, move |stream| async move {
                    let _slot = slot;
                    // The first bytes are the first head's: the head timeout bounds the wait.
                    let preface = match client.watchdog.head {
                        Some(limit) => tokio::time::timeout(limit, h2_preface(&stream)).await,
                        None => Ok(h2_preface(&stream).await),
                    };
                    let Ok(http2) = preface else {
                        tracing::debug!(client = %peer, "no request head in time; connection closed");
                        return;
                    };
                    if !h2c && http2 {
                        tracing::debug!(client = %peer, "HTTP/2 with prior knowledge, but h2c is off on this entrypoint; connection closed");
                        return;
                    }
                    client.serve(stream, http2, &protocols).await
                });
            }
            Transport::Tls(acceptor) => {
                workers.serve(stream, move |stream| async move {
                    let _slot = slot;
                    // A failed handshake concerns this client only: log it quietly.
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(client = %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    client.serve(tls, http2, &protocols).await
                });
            }
        }
    }
    // In this order, so that a client finding the port closed knows that every response
    // made from then on says that its connection closes.
    closing.store(true, Ordering::Release);
    drop(stop);
    let _ = stopping.send(true);
    drop(listener);
    let grace = proxy.settings.grace_period;
    if tokio::time::timeout(grace, stopping.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "connections still open after the grace period; closing them"
        );
    }
}

/// One client connection, with everything its requests need.
struct Client {
    proxy: Arc<Proxy>,
    conn: ClientConn,
    peer: std::net::SocketAddr,
    watchdog: Watchdog,
    /// Turns true when the entrypoint shuts down.
    stop: watch::Receiver<bool>,
    /// Set when the entrypoint stops, before `stop` changes; each connection's [`Activity`]
    /// holds it, for its requests to see.
    closing: Arc<AtomicBool>,
}

/// Why a connection was closed before it ended by itself.
enum Cut {
    Expired(client_timeouts::Expiry),
    Stopped,
}

impl Client {
    /// Serves the connection until it ends, has been idle or slow over a request head for
    /// too long, or the entrypoint has shut down and its last request is answered.
    async fn serve<IO>(mut self, io: IO, http2: bool, protocols: &Protocols)
    where
        IO: parking::ReadReady + AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let activity = Activity::new(!http2, Arc::clone(&self.closing));
        let service = {
            let proxy = Arc::clone(&self.proxy);
            let conn = self.conn.clone();
            let activity = Arc::clone(&activity);
            service_fn(move |req| {
                let in_flight = activity.request();
                // Boxed: hyper moves the service future into its connection state, and the
                // forwarding future is about 3 KiB. Boxing also makes it `Unpin`, which
                // taking a parked connection apart needs.
                Box::pin(forward::handle(Arc::clone(&proxy), req, conn.clone())).map(
                    move |mut response| {
                        if in_flight.is_last() {
                            say_close(&mut response);
                        }
                        Ok::<_, Infallible>(response.map(|body| Held::new(body, in_flight)))
                    },
                )
            })
        };
        let io = Watched::new(batching::Batched::new(io), Arc::clone(&activity));
        let ended = if http2 {
            // Boxed, as HTTP/1.1's is, so that the task is not sized for HTTP/2's state.
            let mut connection =
                Box::pin(protocols.http2.serve_connection(TokioIo::new(io), service));
            self.drive(connection.as_mut(), |c| c.graceful_shutdown(), &activity)
                .await
        } else {
            let io = Parking::new(io);
            self.serve_http1(io, service, protocols, &activity).await
        };
        if let Err(Cut::Expired(expiry)) = ended {
            tracing::debug!(client = %self.peer, ?expiry, "client connection timed out; closed");
        }
    }

    /// HTTP/1.1, parking the connection whenever it goes idle (see `parking`).
    async fn serve_http1<IO, S>(
        &mut self,
        mut io: Parking<IO>,
        mut service: S,
        protocols: &Protocols,
        activity: &Activity,
    ) -> Result<(), Cut>
    where
        IO: parking::ReadReady + AsyncRead + AsyncWrite + Send + Unpin + 'static,
        S: HttpService<Incoming, ResBody = Held<Body>> + Unpin,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // A fresh connection has bytes waiting (the preface check saw them) or buffered in
        // TLS, where the socket may have nothing more to say; hyper takes it at once.
        let mut fresh = true;
        loop {
            if !fresh && !io.has_leftover() {
                // Parked: nothing is held but the socket until the client speaks again.
                tokio::select! {
                    ready = io.readable() => {
                        // A failed socket has no one left to answer.
                        if ready.is_err() {
                            return Ok(());
                        }
                        // The next head begins: its clock runs from now.
                        activity.read();
                    }
                    expiry = self.watchdog.expired(activity) => return Err(Cut::Expired(expiry)),
                    () = stopped(&mut self.stop) => return Err(Cut::Stopped),
                }
            }
            fresh = false;
            let connection = protocols
                .http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            // Boxed so that a parked connection's task holds none of hyper's state.
            let mut connection = Box::pin(connection);
            self.drive(connection.as_mut(), |c| c.graceful_shutdown(), activity)
                .await?;
            // Still there unless hyper handed the socket to an upgrade.
            let Some(parts) = Pin::into_inner(connection).into_parts() else {
                return Ok(());
            };
            io = parts.io.into_inner();
            if !io.is_parked() {
                // Boxed: only a connection's last moments need its state.
                tokio::select! {
                    () = Box::pin(io.linger()) => {}
                    () = stopped(&mut self.stop) => {}
                }
                return Ok(());
            }
            io.unpark(parts.read_buf);
            service = parts.service;
        }
    }

    /// Polls a hyper connection to its end, cutting it when the watchdog says so and
    /// shutting it down gracefully when the entrypoint stops.
    async fn drive<C, E>(
        &mut self,
        mut connection: Pin<&mut C>,
        graceful_shutdown: impl Fn(Pin<&mut C>),
        activity: &Activity,
    ) -> Result<(), Cut>
    where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        // Polled apart (see `branches`): the connection wakes the task for nearly every
        // event of a request, the other two almost never.
        const CONNECTION: usize = 0;
        const WATCHDOG: usize = 1;
        const STOP: usize = 2;
        let branches = Branches::<3>::new();
        let mut expired = pin!(self.watchdog.expired(activity));
        let mut stopped = pin!(stopped(&mut self.stop));
        let mut stopping = false;
        let peer = self.peer;
        std::future::poll_fn(|cx| {
            let woken = branches.take(cx);
            // The stop is looked at first: a response the connection is about to write then
            // says that the connection closes.
            let stops_now = !stopping
                && woken.has(STOP)
                && stopped.as_mut().poll(&mut branches.context(STOP)).is_ready();
            if stops_now {
                stopping = true;
                graceful_shutdown(connection.as_mut());
            }
            if woken.has(CONNECTION) || stops_now {
                if let Poll::Ready(result) =
                    connection.as_mut().poll(&mut branches.context(CONNECTION))
                {
                    if let Err(e) = result {
                        tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
                    }
                    return Poll::Ready(Ok(()));
                }
            }
            if woken.has(WATCHDOG) {
                if let Poll::Ready(expiry) = expired.as_mut().poll(&mut branches.context(WATCHDOG))
                {
                    return Poll::Ready(Err(Cut::Expired(expiry)));
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Marks an HTTP/1 response as the connection's last, as hyper does itself once shut down
/// gracefully. A switch of protocols keeps its `Connection: upgrade`.
fn say_close<B>(response: &mut Response<B>) {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Resolves once the entrypoint is shutting down.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender means the entrypoint is gone as well.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: StatusCode, connection: Option<&'static str>) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = status;
        if let Some(value) = connection {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static(value));
        }
        response
    }

    #[test]
    fn a_last_response_says_close_but_a_switch_of_protocols_keeps_upgrade() {
        let mut ok = response(StatusCode::OK, None);
        say_close(&mut ok);
        assert_eq!(
            ok.headers().get_all(CONNECTION).iter().collect::<Vec<_>>(),
            ["close"]
        );

        let mut switching = response(StatusCode::SWITCHING_PROTOCOLS, Some("upgrade"));
        say_close(&mut switching);
        assert_eq!(switching.headers()[CONNECTION], "upgrade");
    }
}
