//! The HTTP clients towards backends, one per way of speaking to them (h2c, h2, and TLS
//! with its settings), each with its own connection pool. HTTP/2 goes through [`H2Client`],
//! which keeps the client's authority (see `multiplex`).
//!
//! The table only names the protocol and TLS settings a service needs; the clients live
//! here, outside the table, so their pools survive table swaps. Plain HTTP/1.1, by far the
//! most common, goes through limpet's own per-server pool instead ([`super::pool`]), whose
//! settings are kept here; the others are built on first use and then found in an
//! `ArcSwap`'d map without locking.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::multiplex::{Dialer, H2Client, H2Error};
use super::pool::PoolSettings;
use super::{ProxySettings, UpstreamBody};
use crate::table::spec::{BackendProtocol, BackendTls};
use crate::tls::backend::{client_config, BackendTlsError, FilesStamp};

/// One client, whatever its connector.
pub enum Upstream {
    /// HTTPS over HTTP/1.1. Boxed: built once per TLS setting, and far larger than the other.
    Tls(Box<Client<HttpsConnector<HttpConnector>, UpstreamBody>>),
    /// HTTP/2, plain or TLS.
    Multiplexed(Arc<H2Client>),
}

impl Upstream {
    pub fn request(&self, req: http::Request<UpstreamBody>) -> Sending {
        match self {
            Upstream::Tls(c) => Sending::Pooled(c.request(req)),
            Upstream::Multiplexed(c) => Sending::Multiplexed(c.request(req)),
        }
    }
}

/// A request on its way to a backend, until its response headers arrive.
pub enum Sending {
    Pooled(ResponseFuture),
    Multiplexed(Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, H2Error>> + Send>>),
}

impl Future for Sending {
    type Output = Result<http::Response<Incoming>, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Both variants are Unpin (a hyper-util future is boxed inside).
        match self.get_mut() {
            Sending::Pooled(f) => Pin::new(f).poll(cx).map_err(SendError::Pooled),
            Sending::Multiplexed(f) => f.as_mut().poll(cx).map_err(SendError::Multiplexed),
        }
    }
}

/// Why a request got no response, from whichever client sent it.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Pooled(hyper_util::client::legacy::Error),
    #[error(transparent)]
    Multiplexed(H2Error),
}

impl SendError {
    /// No connection could be made: nothing reached the backend.
    pub fn is_connect(&self) -> bool {
        match self {
            SendError::Pooled(e) => e.is_connect(),
            SendError::Multiplexed(e) => matches!(e, H2Error::Dial { .. }),
        }
    }
}

type Key = (BackendProtocol, BackendTls);

/// How often a TLS client's files are looked at for changes; as often as the entrypoint's
/// own certificates.
const TLS_FILES_RECHECK: Duration = Duration::from_secs(2);

/// A client that is not plain HTTP/1.1, with what it was built from.
struct Built {
    upstream: ArcSwap<Upstream>,
    /// The TLS files as last seen, whether or not they could be used.
    seen: Mutex<FilesStamp>,
    /// When to look at the files again (ms since the clients were made).
    recheck_at: AtomicU64,
}

pub struct Clients {
    /// For plain HTTP/1.1 backends, served by [`super::pool`].
    pub http1: PoolSettings,
    others: ArcSwap<HashMap<Key, Arc<Built>>>,
    /// Serialises building new clients, which is rare; lookups never take it.
    building: Mutex<()>,
    settings: ProxySettings,
    born: Instant,
}

impl Clients {
    pub fn new(settings: &ProxySettings) -> Self {
        Self {
            http1: PoolSettings {
                dial_timeout: settings.dial_timeout,
                idle_timeout: settings.idle_conn_timeout,
                max_idle_per_server: settings.max_idle_per_server,
            },
            others: ArcSwap::from_pointee(HashMap::new()),
            building: Mutex::new(()),
            settings: settings.clone(),
            born: Instant::now(),
        }
    }

    /// Sends through the client for this protocol, building it on first use. Plain
    /// HTTP/1.1 never comes here: it goes through the pool, whose settings are `http1`.
    pub fn request(
        &self,
        protocol: BackendProtocol,
        tls: &BackendTls,
        req: http::Request<UpstreamBody>,
    ) -> Result<Sending, BackendTlsError> {
        let key = (protocol, tls.clone());
        if let Some(built) = self.others.load().get(&key) {
            if protocol.uses_tls() {
                self.refresh(built, protocol, tls);
            }
            return Ok(built.upstream.load().request(req));
        }
        let _building = self.building.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(built) = self.others.load().get(&key) {
            return Ok(built.upstream.load().request(req));
        }
        // Stamped before reading, so that a change during the build is seen next time.
        let seen = tls.stamp();
        let upstream = self.build(protocol, tls)?;
        let built = Arc::new(Built {
            upstream: ArcSwap::from_pointee(upstream),
            seen: Mutex::new(seen),
            recheck_at: AtomicU64::new(self.now_ms() + TLS_FILES_RECHECK.as_millis() as u64),
        });
        let mut map = HashMap::clone(&self.others.load());
        map.insert(key, Arc::clone(&built));
        self.others.store(Arc::new(map));
        Ok(built.upstream.load().request(req))
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Rebuilds a TLS client whose CA bundle or client certificate files changed. New
    /// connections use the new files; requests under way finish on the old ones. Files that
    /// cannot be used are reported once, and the client built from the previous ones stays.
    fn refresh(&self, built: &Built, protocol: BackendProtocol, tls: &BackendTls) {
        let now = self.now_ms();
        if now < built.recheck_at.load(Ordering::Relaxed) {
            return;
        }
        // One request looks; the others go on with the client they have.
        let Ok(mut seen) = built.seen.try_lock() else {
            return;
        };
        built.recheck_at.store(
            now + TLS_FILES_RECHECK.as_millis() as u64,
            Ordering::Relaxed,
        );
        let stamp = tls.stamp();
        if stamp == *seen {
            return;
        }
        *seen = stamp;
        match self.build(protocol, tls) {
            Ok(upstream) => {
                built.upstream.store(Arc::new(upstream));
                tracing::info!(files = %tls.describe_files(), "backend TLS files changed; new connections use them");
            }
            Err(e) => tracing::warn!(
                files = %tls.describe_files(),
                error = %crate::report(&e),
                "backend TLS files changed but cannot be used; keeping the previous ones"
            ),
        }
    }

    fn build(
        &self,
        protocol: BackendProtocol,
        tls: &BackendTls,
    ) -> Result<Upstream, BackendTlsError> {
        let settings = &self.settings;
        Ok(match protocol {
            BackendProtocol::Http => {
                unreachable!("plain HTTP/1.1 goes through limpet's pool (proxy::pool)")
            }
            BackendProtocol::H2c => Upstream::Multiplexed(H2Client::new(
                Dialer::Plain,
                settings.dial_timeout,
                settings.idle_conn_timeout,
            )),
            BackendProtocol::Https | BackendProtocol::H2 => {
                if tls.insecure {
                    tracing::warn!("backend TLS certificates are not verified (insecure switch); traffic can be intercepted");
                }
                let mut config = client_config(tls)?;
                if let Some(name) = &tls.server_name {
                    rustls::pki_types::ServerName::try_from(name.clone())
                        .map_err(|_| BackendTlsError::BadServerName(name.clone()))?;
                }
                if protocol == BackendProtocol::H2 {
                    config.alpn_protocols = vec![b"h2".to_vec()];
                    let dialer = Dialer::Tls {
                        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
                        server_name: tls.server_name.clone(),
                    };
                    return Ok(Upstream::Multiplexed(H2Client::new(
                        dialer,
                        settings.dial_timeout,
                        settings.idle_conn_timeout,
                    )));
                }
                let builder = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_only();
                let builder = match &tls.server_name {
                    Some(name) => {
                        let name = rustls::pki_types::ServerName::try_from(name.clone())
                            .map_err(|_| BackendTlsError::BadServerName(name.clone()))?;
                        builder.with_server_name_resolver(
                            hyper_rustls::FixedServerNameResolver::new(name),
                        )
                    }
                    None => builder,
                };
                let connector = builder
                    .enable_http1()
                    .wrap_connector(http_connector(settings));
                let mut client = Client::builder(TokioExecutor::new());
                client
                    .pool_idle_timeout(settings.idle_conn_timeout)
                    .pool_timer(TokioTimer::new())
                    .http1_max_buf_size(super::MAX_BUF);
                Upstream::Tls(Box::new(client.build(connector)))
            }
        })
    }
}

fn http_connector(settings: &ProxySettings) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(settings.dial_timeout));
    // TLS connectors hand https URIs to this one.
    connector.enforce_http(false);
    connector
}
