//! The HTTP/2 client towards h2c and h2 (TLS) backends: one multiplexed connection per
//! backend address, shared by every request to it.
//!
//! hyper-util's pooled client takes both the address to dial and `:authority` from the
//! request URI, so a backend behind it would see its own address as `:authority`, where an
//! HTTP/1.1 backend sees the client's `Host` (Traefik's passHostHeader). Here the two are
//! apart: connections are keyed by the server's address and each request carries the
//! authority the client asked for.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme, Uri};
use http::{header, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::UpstreamBody;

/// Why an HTTP/2 exchange failed; [`Dial`](H2Error::Dial) means nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    #[error("cannot connect to {addr}: {source}")]
    Dial {
        addr: String,
        #[source]
        source: DialError,
    },
    #[error("HTTP/2 exchange failed: {0}")]
    Exchange(#[source] hyper::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Boxed: it is large, and every error of a request carries this type.
    #[error(transparent)]
    Connect(Box<super::pool::ConnectError>),
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
}

/// How connections are opened: plain TCP (h2c with prior knowledge) or TLS offering `h2`.
#[derive(Clone)]
pub enum Dialer {
    Plain,
    Tls {
        connector: tokio_rustls::TlsConnector,
        /// Sent (SNI) and verified instead of the backend's address.
        server_name: Option<String>,
    },
}

/// One backend's connection. Requests take a clone of its sender under a short lock that is
/// never held across an await; dialling is serialised apart, so that requests arriving
/// meanwhile wait for that one connection instead of each opening its own.
#[derive(Default)]
struct Slot {
    current: Mutex<Current>,
    dialling: tokio::sync::Mutex<()>,
    /// When a request last took the connection (ms since the client was made).
    last_used: AtomicU64,
}

/// The connection and its generation, which tells a request whose connection failed whether
/// another has replaced it already.
#[derive(Default)]
struct Current {
    sender: Option<SendRequest<UpstreamBody>>,
    generation: u64,
}

impl Slot {
    /// The open connection, unless it is the generation `failed`.
    fn open(&self, failed: Option<u64>) -> Option<(SendRequest<UpstreamBody>, u64)> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let sender = current.sender.as_ref()?;
        (!sender.is_closed() && Some(current.generation) != failed)
            .then(|| (sender.clone(), current.generation))
    }
}

type Shared = Arc<Slot>;

pub struct H2Client {
    dialer: Dialer,
    dial_timeout: Duration,
    /// An unused connection is closed after this long, as the pooled clients do.
    idle_timeout: Duration,
    slots: Mutex<HashMap<Authority, Shared>>,
    born: Instant,
}

impl H2Client {
    pub fn new(dialer: Dialer, dial_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            dialer,
            dial_timeout,
            idle_timeout,
            slots: Mutex::new(HashMap::new()),
            born: Instant::now(),
        })
    }

    /// Sends `req`, whose URI names the backend to dial, with its `Host` header (if any) as
    /// `:authority`.
    pub fn request(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Incoming>, H2Error>> + Send>> {
        let this = Arc::clone(self);
        Box::pin(async move { this.send(req).await })
    }

    async fn send(
        self: Arc<Self>,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, H2Error> {
        let (mut parts, body) = req.into_parts();
        let Some(addr) = parts.uri.authority().cloned() else {
            return Err(H2Error::Dial {
                addr: parts.uri.to_string(),
                source: DialError::Io(std::io::Error::other("request names no backend")),
            });
        };
        let scheme = match self.dialer {
            Dialer::Plain => Scheme::HTTP,
            Dialer::Tls { .. } => Scheme::HTTPS,
        };
        // RFC 9113 §8.3.1: the host goes in `:authority`; a Host header beside it would only
        // be a second, possibly disagreeing, copy.
        let authority = parts
            .headers
            .remove(header::HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| addr.clone());
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| H2Error::Dial {
                addr: addr.to_string(),
                source: DialError::Io(std::io::Error::other(e)),
            })?;
        let mut req = Request::from_parts(parts, body);

        let slot = self.slot(&addr);
        // A connection that went away between requests (GOAWAY, idle close by the backend)
        // hands the request back unsent: it is sent once more on another connection.
        let mut failed = None;
        loop {
            let (mut sender, generation) = self.sender(&slot, &addr, failed).await?;
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if failed.is_none() => {
                        tracing::debug!(backend = %addr, error = %e.error(), "HTTP/2 connection not usable; reconnecting");
                        req = unsent;
                        failed = Some(generation);
                    }
                    _ => return Err(H2Error::Exchange(e.into_error())),
                },
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn slot(self: &Arc<Self>, addr: &Authority) -> Shared {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(slots.entry(addr.clone()).or_default())
    }

    /// The backend's connection, dialled when there is none, it closed, or it is the
    /// generation that just `failed`.
    async fn sender(
        self: &Arc<Self>,
        slot: &Shared,
        addr: &Authority,
        failed: Option<u64>,
    ) -> Result<(SendRequest<UpstreamBody>, u64), H2Error> {
        slot.last_used.store(self.now_ms(), Ordering::Relaxed);
        if let Some(open) = slot.open(failed) {
            return Ok(open);
        }
        let _dialling = slot.dialling.lock().await;
        // Dialled by another request while this one waited.
        if let Some(open) = slot.open(failed) {
            return Ok(open);
        }
        let sender = self.dial(addr).await.map_err(|source| H2Error::Dial {
            addr: addr.to_string(),
            source,
        })?;
        let generation = {
            let mut current = slot.current.lock().unwrap_or_else(|e| e.into_inner());
            current.sender = Some(sender.clone());
            current.generation += 1;
            current.generation
        };
        self.reap_when_idle(addr.clone(), Arc::downgrade(slot), generation);
        Ok((sender, generation))
    }

    async fn dial(&self, addr: &Authority) -> Result<SendRequest<UpstreamBody>, DialError> {
        let (tcp, _) = super::pool::connect(addr, self.dial_timeout)
            .await
            .map_err(|e| DialError::Connect(Box::new(e)))?;
        match &self.dialer {
            Dialer::Plain => handshake(tcp).await,
            Dialer::Tls {
                connector,
                server_name,
            } => {
                let name = server_name.clone().unwrap_or_else(|| {
                    addr.host()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned()
                });
                let name = rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|_| DialError::ServerName(name))?;
                // The handshake counts against the dial timeout too: a backend that accepts
                // and then says nothing is as unreachable as one that never accepts.
                let tls = tokio::time::timeout(self.dial_timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| DialError::Timeout(self.dial_timeout))??;
                handshake(tls).await
            }
        }
    }

    /// Drops the backend's connection once unused for the idle timeout; its streams still
    /// open finish first (hyper closes the connection when the last sender is gone and its
    /// streams are done). One reaper per connection; it ends with its connection.
    fn reap_when_idle(self: &Arc<Self>, addr: Authority, slot: Weak<Slot>, generation: u64) {
        let client = Arc::downgrade(self);
        let idle = self.idle_timeout.as_millis() as u64;
        tokio::spawn(async move {
            let mut wait = idle;
            loop {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let (Some(slot), Some(client)) = (slot.upgrade(), client.upgrade()) else {
                    return;
                };
                let unused_for = client
                    .now_ms()
                    .saturating_sub(slot.last_used.load(Ordering::Relaxed));
                {
                    let mut current = slot.current.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(sender) = &current.sender else {
                        return;
                    };
                    if current.generation != generation {
                        return;
                    }
                    if !sender.is_closed() && unused_for < idle {
                        wait = idle - unused_for;
                        continue;
                    }
                    current.sender = None;
                }
                let mut slots = client.slots.lock().unwrap_or_else(|e| e.into_inner());
                if slots.get(&addr).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    slots.remove(&addr);
                }
                return;
            }
        });
    }
}

async fn handshake<IO>(io: IO) -> Result<SendRequest<UpstreamBody>, DialError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(DialError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "HTTP/2 backend connection ended with an error");
        }
    });
    Ok(sender)
}
