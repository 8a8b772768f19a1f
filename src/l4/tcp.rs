//! TCP forwarding: accepts on a front port and splices each connection to a server.
//!
//! Per connection: when the port has TLS passthrough routes, read the ClientHello (without
//! terminating TLS) to pick the route by server name; choose a server (retrying another
//! when a connect fails); forward what was read, then copy both ways until both sides have
//! closed. A half-close is passed on (one side's FIN becomes a shutdown of the other's write
//! side, the other direction keeps flowing), and no byte either way for the route's idle
//! timeout closes both. Whatever a client sends, only its own connection suffers.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::sni::{self, Hello, SniError};
use super::Throttle;
use crate::discovery::SharedTable;
use crate::table::l4::{route_for_sni, L4Route, Protocol};
use crate::table::state::{now_ms, InflightGuard};

/// How long a client on a port with passthrough routes gets to send its ClientHello.
/// HAProxy's usual `tcp-request inspect-delay` is 5 s too. A port's default route behind
/// SNI routes waits this long for server-speaks-first protocols, so those want a port of
/// their own.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Servers tried per connection before giving up.
const MAX_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub(super) enum TcpError {
    #[error("the port has no route any more")]
    NoRoute,
    #[error("no route for server name `{0}`")]
    NoRouteForName(String),
    #[error("no route for a connection without a server name (TLS passthrough routes only)")]
    NoDefaultRoute,
    #[error(transparent)]
    Hello(#[from] SniError),
    #[error("no TLS ClientHello within {} s", HELLO_TIMEOUT.as_secs())]
    HelloTimeout,
    #[error("the client closed before its ClientHello was complete")]
    ClosedEarly,
    #[error("reading the client: {0}")]
    Client(#[source] io::Error),
    #[error("route `{route}` has no server available")]
    NoServer { route: String },
    #[error("route `{route}`: connecting to {server} failed: {source}")]
    Connect {
        route: String,
        server: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("route `{route}`: connecting to {server} timed out after {timeout:?}")]
    ConnectTimeout {
        route: String,
        server: SocketAddr,
        timeout: Duration,
    },
}

impl TcpError {
    /// The client's doing (or nobody's): logged at debug, since any client can cause it at
    /// will. The rest is the operator's business: no server, servers refusing.
    fn is_client_side(&self) -> bool {
        !matches!(
            self,
            TcpError::NoServer { .. } | TcpError::Connect { .. } | TcpError::ConnectTimeout { .. }
        )
    }
}

/// The places for TCP connections shared by every L4 port: a connection holds one for its
/// whole life, so that what L4 holds in memory (two copy buffers per connection) is bounded.
#[derive(Debug)]
pub(super) struct Slots {
    max: usize,
    open: AtomicUsize,
}

impl Slots {
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: AtomicUsize::new(0),
        })
    }

    fn take(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(self)))
    }
}

struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one front port until the task is aborted. Each connection runs in a task of its
/// own, which outlives the listener: releasing a port stops new connections, not open ones.
pub(super) async fn serve(listener: TcpListener, table: SharedTable, slots: Arc<Slots>) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let throttle = Arc::new(Throttle::new(Duration::from_secs(10)));
    let full = Throttle::new(Duration::from_secs(10));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the accept loop.
                tracing::warn!(port, error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = slots.take() else {
            // Closed at once: there is no protocol to say "busy" in, and a client retrying
            // later is better served than one whose connection hangs.
            if let Some(suppressed) = full.allow() {
                tracing::warn!(port, client = %peer, max = slots.max, suppressed, "L4 connection limit reached; connection closed (see --maxconnections)");
            }
            drop(stream);
            continue;
        };
        let table = Arc::clone(&table);
        let throttle = Arc::clone(&throttle);
        tokio::spawn(async move {
            let _slot = slot;
            match handle(stream, peer, port, &table).await {
                Ok(()) => {}
                Err(e) if e.is_client_side() => {
                    tracing::debug!(client = %peer, port, error = %e, "tcp connection closed");
                }
                Err(e) => {
                    if let Some(suppressed) = throttle.allow() {
                        tracing::warn!(client = %peer, port, suppressed, error = %e, "tcp connection not forwarded");
                    }
                }
            }
        });
    }
}

async fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    port: u16,
    table: &SharedTable,
) -> Result<(), TcpError> {
    let _ = client.set_nodelay(true);
    let (wants_hello, has_default) = {
        let t = table.load();
        let routes = t.l4_routes(Protocol::Tcp, port);
        if routes.is_empty() {
            return Err(TcpError::NoRoute);
        }
        (
            routes.iter().any(|r| !r.is_default()),
            routes.iter().any(|r| r.is_default()),
        )
    };
    // Only a port with passthrough routes reads first: on any other, a server that speaks
    // first (SMTP, MySQL, Redis' replicas) must not wait for the client.
    let mut hello = Vec::new();
    let server_name = if wants_hello {
        read_hello(&mut client, &mut hello, has_default).await?
    } else {
        None
    };
    // The table may have changed while the hello came in; route by the current one. The
    // connection keeps only what it needs (the server's state, a timeout), not the table,
    // so a long-lived connection does not pin an old table in memory.
    let (backend, inflight, idle) = {
        let t = table.load_full();
        let routes = t.l4_routes(Protocol::Tcp, port);
        let route =
            route_for_sni(routes, server_name.as_deref()).ok_or_else(|| match &server_name {
                Some(name) => TcpError::NoRouteForName(name.clone()),
                None if routes.is_empty() => TcpError::NoRoute,
                None => TcpError::NoDefaultRoute,
            })?;
        let (backend, inflight) = connect(route, peer.ip()).await?;
        (backend, inflight, route.idle_timeout)
    };
    let _inflight = inflight;
    splice(client, backend, &hello, idle).await;
    Ok(())
}

/// Reads until `buf` holds a complete ClientHello (or proves not to be one) and returns its
/// server name. A client that sends nothing in time goes to the default route, if any.
async fn read_hello(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    has_default: bool,
) -> Result<Option<String>, TcpError> {
    use tokio::io::AsyncReadExt;
    buf.resize(sni::MAX_HELLO, 0);
    let mut len = 0;
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let result = loop {
        match sni::parse(&buf[..len]) {
            Ok(Hello::ClientHello { server_name }) => break Ok(server_name),
            Ok(Hello::NotTls) => break Ok(None),
            Ok(Hello::Incomplete) => {}
            Err(e) => break Err(e.into()),
        }
        match tokio::time::timeout_at(deadline, client.read(&mut buf[len..])).await {
            Ok(Ok(0)) => break Err(TcpError::ClosedEarly),
            Ok(Ok(n)) => len += n,
            Ok(Err(e)) => break Err(TcpError::Client(e)),
            Err(_) if len == 0 && has_default => break Ok(None),
            Err(_) => break Err(TcpError::HelloTimeout),
        }
    };
    buf.truncate(len);
    result
}

/// Connects to a server of `route`, trying up to [`MAX_ATTEMPTS`] servers. The connection
/// counts as in flight from the first attempt, so a burst spreads under least-connections.
async fn connect(route: &L4Route, client: IpAddr) -> Result<(TcpStream, InflightGuard), TcpError> {
    let mut tried = Vec::new();
    let mut last_error = None;
    while tried.len() < MAX_ATTEMPTS {
        let Some(i) = route.pick(client, &tried) else {
            break;
        };
        tried.push(i);
        let server = &route.servers[i];
        let inflight = server.state.start_request();
        let started = Instant::now();
        let error = match tokio::time::timeout(
            route.connect_timeout,
            TcpStream::connect(server.addr),
        )
        .await
        {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                server.state.record_latency(started.elapsed());
                server.state.record_success();
                return Ok((stream, inflight));
            }
            Ok(Err(source)) => TcpError::Connect {
                route: route.name.to_string(),
                server: server.addr,
                source,
            },
            Err(_) => TcpError::ConnectTimeout {
                route: route.name.to_string(),
                server: server.addr,
                timeout: route.connect_timeout,
            },
        };
        if server
            .state
            .record_failure(route.passive.max_failures, route.passive.cooldown)
        {
            tracing::warn!(
                route = %route.name,
                server = %server.id,
                cooldown_ms = route.passive.cooldown.as_millis() as u64,
                error = %error,
                "server out of rotation after failed connects"
            );
        } else {
            tracing::debug!(route = %route.name, server = %server.id, error = %error, "connect failed; trying another server");
        }
        last_error = Some(error);
    }
    Err(last_error.unwrap_or_else(|| TcpError::NoServer {
        route: route.name.to_string(),
    }))
}

/// Copies both ways until both directions are done, or until nothing moved for `idle`.
/// `hello` (bytes read while routing) goes to the server first.
async fn splice(client: TcpStream, backend: TcpStream, hello: &[u8], idle: Duration) {
    let activity = AtomicU64::new(now_ms());
    let mut client = Watched {
        io: client,
        activity: &activity,
    };
    let mut backend = Watched {
        io: backend,
        activity: &activity,
    };
    let copy = async {
        backend.write_all(hello).await?;
        tokio::io::copy_bidirectional(&mut client, &mut backend).await
    };
    tokio::select! {
        result = copy => match result {
            Ok((up, down)) => tracing::trace!(up, down, "tcp connection done"),
            // A reset on either side ends both: nothing more can be delivered faithfully.
            Err(e) => tracing::debug!(error = %e, "tcp connection ended with an error"),
        },
        () = idle_expired(&activity, idle) => {
            tracing::debug!(idle_ms = idle.as_millis() as u64, "tcp connection idle; closed");
        }
    }
}

/// Completes once `activity` is older than `idle`.
async fn idle_expired(activity: &AtomicU64, idle: Duration) {
    let idle = idle.as_millis() as u64;
    loop {
        let deadline = activity.load(Ordering::Relaxed) + idle;
        let now = now_ms();
        if now >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(deadline - now)).await;
    }
}

/// A stream that records when bytes last moved through it, for the idle timeout; shared by
/// both sides so that traffic either way keeps the connection open.
struct Watched<'a> {
    io: TcpStream,
    activity: &'a AtomicU64,
}

impl Watched<'_> {
    fn moved(&self) {
        self.activity.store(now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for Watched<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.moved();
        }
        poll
    }
}

impl AsyncWrite for Watched<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn slots_bound_connections_and_come_back() {
        let slots = Slots::new(2);
        let a = slots.take().unwrap();
        let _b = slots.take().unwrap();
        assert!(slots.take().is_none());
        drop(a);
        assert!(slots.take().is_some());
    }
}
