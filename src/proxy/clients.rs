//! The HTTP clients towards backends, one per way of speaking to them (h2c, and TLS with its
//! settings), each with its own connection pool.
//!
//! The table only names the protocol and TLS settings a service needs; the clients live
//! here, outside the table, so their pools survive table swaps. Plain HTTP/1.1, by far the
//! most common, goes through limpet's own per-server pool instead ([`super::pool`]), whose
//! settings are kept here; the others are built on first use and then found in an
//! `ArcSwap`'d map without locking.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::pool::PoolSettings;
use super::{ProxySettings, UpstreamBody};
use crate::table::spec::{BackendProtocol, BackendTls};
use crate::tls::backend::{client_config, BackendTlsError};

/// One client, whatever its connector.
pub enum Upstream {
    Plain(Client<HttpConnector, UpstreamBody>),
    Tls(Client<HttpsConnector<HttpConnector>, UpstreamBody>),
}

impl Upstream {
    pub fn request(&self, req: http::Request<UpstreamBody>) -> ResponseFuture {
        match self {
            Upstream::Plain(c) => c.request(req),
            Upstream::Tls(c) => c.request(req),
        }
    }
}

type Key = (BackendProtocol, BackendTls);

pub struct Clients {
    /// For plain HTTP/1.1 backends, served by [`super::pool`].
    pub http1: PoolSettings,
    others: ArcSwap<HashMap<Key, Arc<Upstream>>>,
    /// Serialises building new clients, which is rare; lookups never take it.
    building: Mutex<()>,
    settings: ProxySettings,
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
        }
    }

    /// Sends through the client for this protocol, building it on first use.
    pub fn request(
        &self,
        protocol: BackendProtocol,
        tls: &BackendTls,
        req: http::Request<UpstreamBody>,
    ) -> Result<ResponseFuture, BackendTlsError> {
        let key = (protocol, tls.clone());
        if let Some(client) = self.others.load().get(&key) {
            return Ok(client.request(req));
        }
        let _building = self.building.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = self.others.load().get(&key) {
            return Ok(client.request(req));
        }
        let client = Arc::new(self.build(protocol, tls)?);
        let mut map = HashMap::clone(&self.others.load());
        map.insert(key, Arc::clone(&client));
        self.others.store(Arc::new(map));
        Ok(client.request(req))
    }

    fn build(
        &self,
        protocol: BackendProtocol,
        tls: &BackendTls,
    ) -> Result<Upstream, BackendTlsError> {
        Ok(match protocol {
            BackendProtocol::Http => Upstream::Plain(build_plain(&self.settings, false)),
            BackendProtocol::H2c => Upstream::Plain(build_plain(&self.settings, true)),
            BackendProtocol::Https | BackendProtocol::H2 => {
                if tls.insecure {
                    tracing::warn!("backend TLS certificates are not verified (insecure switch); traffic can be intercepted");
                }
                let http2 = protocol == BackendProtocol::H2;
                let config = client_config(tls)?;
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
                let connector = if http2 {
                    builder
                        .enable_http2()
                        .wrap_connector(http_connector(&self.settings))
                } else {
                    builder
                        .enable_http1()
                        .wrap_connector(http_connector(&self.settings))
                };
                let mut client = Client::builder(TokioExecutor::new());
                client
                    .pool_idle_timeout(self.settings.idle_conn_timeout)
                    .pool_timer(TokioTimer::new())
                    .http1_max_buf_size(super::MAX_BUF)
                    .http2_only(http2);
                Upstream::Tls(client.build(connector))
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

fn build_plain(settings: &ProxySettings, http2: bool) -> Client<HttpConnector, UpstreamBody> {
    let mut connector = http_connector(settings);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(settings.idle_conn_timeout)
        .pool_timer(TokioTimer::new())
        .http1_max_buf_size(super::MAX_BUF)
        .http2_only(http2)
        .build(connector)
}
