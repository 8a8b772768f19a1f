//! limpet's own pool of HTTP/1.1 connections to plain-HTTP backends.
//!
//! hyper-util's pooled client keeps every idle connection in one map behind a mutex, keyed by
//! a SipHash of scheme and authority, and races a checkout against a connect on every
//! request: about a sixth of a proxied request's instructions (bench/RESULTS.md). Here each
//! server has a small stack of idle connections per worker, found through the server's state
//! without any lookup, and a connection is checked out (or dialed) before the request is
//! built. A connect failure is therefore known while the request is still whole, and can go
//! to another server without a copy made "in case".
//!
//! A connection goes back to its server's stack when the response body has been read to
//! its end (see [`super::body::TrackedBody`]); one whose response was cut, upgraded or said
//! `Connection: close` is dropped, and hyper closes it. An idle connection is used at most
//! `idle_timeout` after it was last released: a reaper closes older ones, so the backend
//! does not keep them open for nothing either.
//!
//! Depends on hyper's client connection, tokio's TCP and the server's state (where the
//! stack is attached).

use std::any::Any;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::{self, FutureExt};
use http::uri::{Authority, Uri};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{workers, UpstreamBody};
use crate::table::state::ServerState;

/// How connections are made and kept.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// How long a TCP connect may take.
    pub dial_timeout: Duration,
    /// How long a released connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Idle connections kept per server; more are closed when released.
    pub max_idle_per_server: usize,
}

/// Why no connection to a backend could be had. Nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {authority}: {source}")]
    Resolve {
        authority: String,
        #[source]
        source: io::Error,
    },
    #[error("{authority} resolves to no address")]
    NoAddress { authority: String },
    #[error("connect to {addr} timed out after {timeout_ms} ms")]
    Timeout { addr: SocketAddr, timeout_ms: u128 },
    #[error("connect to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("HTTP/1.1 handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

/// One server's idle connections, most recently released last.
#[derive(Debug)]
pub struct ServerPool {
    /// The address every connection here goes to.
    authority: Authority,
    /// One stack per worker: a connection's task runs on the worker that dialed it, and is
    /// used from there only. Each behind a per-server lock, held for a push or a pop.
    idle: Box<[Stack]>,
    /// Whether a reaper task is watching `idle` for connections past their idle timeout.
    reaping: AtomicBool,
}

/// On a cache line of its own: two workers' stacks of one server must not share one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stack(Mutex<Vec<Idle>>);

#[derive(Debug)]
struct Idle {
    send: SendRequest<UpstreamBody>,
    since: Instant,
}

impl ServerPool {
    /// The pool attached to this server's state, attached now if it has none. It lives with
    /// the state so that it survives table swaps and closes its connections when the server
    /// is gone; the state holds it as `Any` so the table does not depend on hyper.
    pub fn of(state: &ServerState, authority: &Authority) -> Arc<ServerPool> {
        let attached = state.attachment(|| {
            Arc::new(ServerPool {
                authority: authority.clone(),
                idle: (0..workers::count()).map(|_| Stack::default()).collect(),
                reaping: AtomicBool::new(false),
            }) as Arc<dyn Any + Send + Sync>
        });
        Arc::clone(attached)
            .downcast::<ServerPool>()
            .expect("a server state only ever has a connection pool attached")
    }

    /// The idle connections whose task runs on worker `home`.
    fn stack(&self, home: usize) -> &Mutex<Vec<Idle>> {
        // A pool made before more workers started has fewer stacks; they share the last.
        &self.idle[home.min(self.idle.len() - 1)].0
    }

    /// An idle connection ready for a request, if there is one: the calling worker's own if
    /// it has one, else another's, which is still cheaper than a dial.
    fn take_idle(&self, settings: &PoolSettings) -> Option<Conn> {
        let now = Instant::now();
        let here = workers::index().min(self.idle.len() - 1);
        let others = (0..self.idle.len()).filter(|&i| i != here);
        for home in std::iter::once(here).chain(others) {
            let mut idle = self.stack(home).lock().unwrap_or_else(|e| e.into_inner());
            // Newest first: the freshest connection is the least likely to have been closed
            // by the backend, and the oldest ones are left to time out when load drops.
            while let Some(entry) = idle.pop() {
                if entry.send.is_closed()
                    || now.duration_since(entry.since) >= settings.idle_timeout
                {
                    continue;
                }
                return Some(Conn {
                    send: entry.send,
                    home,
                    reused: true,
                });
            }
        }
        None
    }

    /// Puts a connection whose exchange ended cleanly back for the next request, with the
    /// other connections of the worker its task runs on.
    fn put(
        self: &Arc<Self>,
        send: SendRequest<UpstreamBody>,
        home: usize,
        settings: &PoolSettings,
    ) {
        if send.is_closed() {
            return;
        }
        let start_reaper = {
            let mut idle = self.stack(home).lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() >= settings.max_idle_per_server {
                return;
            }
            idle.push(Idle {
                send,
                since: Instant::now(),
            });
            !self.reaping.swap(true, Ordering::AcqRel)
        };
        if start_reaper {
            // A body dropped while the runtime shuts down has no runtime to reap with; its
            // connections go with the pool then.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(reap(Arc::downgrade(self), settings.idle_timeout));
                }
                Err(_) => self.reaping.store(false, Ordering::Release),
            }
        }
    }
}

/// Closes connections idle for longer than `timeout`; ends when the pool is empty (the next
/// release starts another) or gone.
async fn reap(pool: Weak<ServerPool>, timeout: Duration) {
    let mut wake = Instant::now() + timeout;
    loop {
        tokio::time::sleep_until(wake).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        let mut oldest: Option<Instant> = None;
        for stack in pool.idle.iter() {
            let mut idle = stack.0.lock().unwrap_or_else(|e| e.into_inner());
            // Oldest first, so the expired ones are a prefix.
            let expired = idle
                .iter()
                .take_while(|e| now.duration_since(e.since) >= timeout || e.send.is_closed())
                .count();
            idle.drain(..expired);
            if let Some(first) = idle.first() {
                oldest = Some(oldest.map_or(first.since, |o| o.min(first.since)));
            }
        }
        match oldest {
            Some(oldest) => wake = oldest + timeout,
            None => {
                pool.reaping.store(false, Ordering::Release);
                return;
            }
        }
    }
}

/// A connection checked out for one exchange.
pub struct Conn {
    send: SendRequest<UpstreamBody>,
    /// The worker its connection task runs on.
    home: usize,
    /// Taken from the pool rather than dialed for this request: it may have been closed by
    /// the backend meanwhile.
    pub reused: bool,
}

/// An idle connection of the server, or a new one.
pub async fn checkout(
    pool: &ServerPool,
    authority: &Authority,
    settings: &PoolSettings,
) -> Result<Conn, ConnectError> {
    // A server whose address changed under the same identity must not get connections to
    // the old one; its new connections are not pooled (see `Pooled::release`).
    if pool.authority == *authority {
        if let Some(conn) = pool.take_idle(settings) {
            return Ok(conn);
        }
    }
    // Boxed: dialing is rare once the pool is warm, and its future (resolve, connect,
    // handshake) would otherwise make every request's future larger, and hyper moves that
    // future by copying it.
    Box::pin(dial(authority, settings)).await
}

/// A new connection, with the dial timeout; its connection task runs on its own.
pub async fn dial(authority: &Authority, settings: &PoolSettings) -> Result<Conn, ConnectError> {
    let (stream, addr) = connect(authority, settings.dial_timeout).await?;
    let (send, connection) = http1::Builder::new()
        .max_buf_size(super::MAX_BUF)
        .handshake(TokioIo::new(super::batching::Batched::new(stream)))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    tokio::spawn(async move {
        // Errors here reach the request that was in flight, which reports them.
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(backend = %addr, error = %e, "backend connection ended with an error");
        }
    });
    Ok(Conn {
        send,
        home: workers::index(),
        reused: false,
    })
}

/// A TCP connection to a backend, for any protocol spoken over it: the authority resolved
/// (an IP needs no lookup), its addresses tried in turn within one `timeout`, Nagle off.
pub async fn connect(
    authority: &Authority,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let addrs: Vec<SocketAddr> = match authority.as_str().parse::<SocketAddr>() {
        Ok(addr) => vec![addr],
        Err(_) => {
            let port = authority.port_u16().unwrap_or(80);
            tokio::net::lookup_host((authority.host(), port))
                .await
                .map_err(|source| ConnectError::Resolve {
                    authority: authority.to_string(),
                    source,
                })?
                .collect()
        }
    };
    let mut last = None;
    let deadline = Instant::now() + timeout;
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
            Ok(Err(source)) => last = Some(ConnectError::Io { addr, source }),
            Err(_) => {
                return Err(ConnectError::Timeout {
                    addr,
                    timeout_ms: timeout.as_millis(),
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::NoAddress {
        authority: authority.to_string(),
    }))
}

/// How an exchange on a pooled connection failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connection was found closed before the request was written, and no other could
    /// be had. Nothing was sent.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection broke before the request was written: nothing was sent.
    #[error("backend connection closed before the request was sent: {0}")]
    Unsent(#[source] hyper::Error),
    /// The request may have reached the backend.
    #[error(transparent)]
    Sent(hyper::Error),
}

/// How to send the same bodiless request again, if it may be.
pub type Replay<'a> = Option<Again<'a>>;

/// A request's method, and how to make its headers anew: only when it is sent again, which
/// is seldom.
#[derive(Clone, Copy)]
pub struct Again<'a> {
    pub method: &'a http::Method,
    pub headers: &'a (dyn Fn() -> http::HeaderMap + Send + Sync + 'a),
}

/// Sends the request on `conn`. A reused connection that turns out to be dead is replaced by
/// a fresh one to the same server, transparently: always when the request was handed back
/// unsent, and for a request given with a `replay` (bodiless and idempotent) also when the
/// connection closed with no response at all, the race of a backend closing an idle
/// connection just as it is reused.
pub fn send<'a>(
    pool: &'a Arc<ServerPool>,
    authority: &'a Authority,
    settings: &'a PoolSettings,
    mut conn: Conn,
    req: Request<UpstreamBody>,
    replay: Replay<'a>,
) -> impl Future<Output = Result<(Response<Incoming>, Pooled), SendError>> + 'a {
    // Not an `async fn` nor an async block: either would keep hyper's future twice, once as
    // captured and once as awaited, and every request's future would be larger by that.
    let uri = replay.map(|_| req.uri().clone());
    let sending = conn.send.try_send_request(req);
    sending.then(move |result| match result {
        Ok(response) => future::Either::Left(future::ready(Ok((
            response,
            Pooled::new(conn, pool, authority, settings),
        )))),
        // Boxed: rare, and every request's future would otherwise carry its state.
        Err(failed) => {
            let lost = Lost { conn, failed, uri };
            future::Either::Right(Box::pin(recover(pool, authority, settings, lost, replay)))
        }
    })
}

/// What is left of an exchange that failed.
struct Lost {
    conn: Conn,
    failed: TrySendError<Request<UpstreamBody>>,
    /// The request's target, to send it again (see [`Replay`]).
    uri: Option<Uri>,
}

/// After a failed exchange: the same request on a new connection when that is safe (see
/// [`send`]), or the error.
async fn recover(
    pool: &Arc<ServerPool>,
    authority: &Authority,
    settings: &PoolSettings,
    lost: Lost,
    replay: Replay<'_>,
) -> Result<(Response<Incoming>, Pooled), SendError> {
    let Lost {
        mut conn,
        mut failed,
        mut uri,
    } = lost;
    let mut waited = false;
    loop {
        let req = match failed.take_message() {
            // Released when its response ended but not yet ready again: its connection
            // task had not caught up. It becomes ready, or turns out closed.
            Some(back)
                if conn.reused
                    && !waited
                    && !conn.send.is_closed()
                    && conn.send.ready().await.is_ok() =>
            {
                waited = true;
                match conn.send.try_send_request(back).await {
                    Ok(response) => {
                        return Ok((response, Pooled::new(conn, pool, authority, settings)))
                    }
                    Err(e) => {
                        failed = e;
                        continue;
                    }
                }
            }
            Some(back) if conn.reused => back,
            Some(_) => return Err(SendError::Unsent(failed.into_error())),
            None => {
                let error = failed.into_error();
                let empty_reply = error.is_incomplete_message() || error.is_canceled();
                match (replay, uri.take()) {
                    (Some(same), Some(uri)) if conn.reused && empty_reply => {
                        tracing::debug!(backend = %authority, error = %error, "reused backend connection closed without a response; sending again on a new one");
                        let mut again =
                            Request::new(UpstreamBody::Right(http_body_util::Empty::new()));
                        *again.method_mut() = same.method.clone();
                        *again.headers_mut() = (same.headers)();
                        *again.uri_mut() = uri;
                        again
                    }
                    _ => return Err(SendError::Sent(error)),
                }
            }
        };
        conn = dial(authority, settings).await?;
        uri = replay.map(|_| req.uri().clone());
        match conn.send.try_send_request(req).await {
            Ok(response) => return Ok((response, Pooled::new(conn, pool, authority, settings))),
            Err(e) => failed = e,
        }
    }
}

/// A connection in use by a response; back to its pool once the response is read.
pub struct Pooled {
    send: SendRequest<UpstreamBody>,
    home: usize,
    pool: Arc<ServerPool>,
    settings: PoolSettings,
    /// False for a connection that must not be reused at all (see [`checkout`]).
    pooled: bool,
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("authority", &self.pool.authority)
            .finish_non_exhaustive()
    }
}

impl Pooled {
    fn new(
        conn: Conn,
        pool: &Arc<ServerPool>,
        authority: &Authority,
        settings: &PoolSettings,
    ) -> Self {
        Pooled {
            send: conn.send,
            home: conn.home,
            pool: Arc::clone(pool),
            settings: *settings,
            pooled: pool.authority == *authority,
        }
    }

    /// Whether the backend's response lets the connection carry another request.
    pub fn keep_alive(&self, response: &Response<Incoming>) -> bool {
        self.pooled
            && response.status() != http::StatusCode::SWITCHING_PROTOCOLS
            && response.version() == http::Version::HTTP_11
            && !response
                .headers()
                .get_all(http::header::CONNECTION)
                .iter()
                .any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
                })
    }

    /// The response was read to its end: the connection can take the next request.
    pub fn release(self) {
        self.pool.put(self.send, self.home, &self.settings);
    }
}
