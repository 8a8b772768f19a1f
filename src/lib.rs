//! limpet: a Docker Swarm-aware reverse proxy that pins each client to one container with a
//! sticky-session cookie.
//!
//! # Layout
//!
//! The data flows through the modules in this order:
//! `discovery (docker, file) → labels → table → ArcSwap → proxy (router, balance, sticky)`.
//!
//! - [`discovery`]: the control plane. Providers (Docker, file) produce service specs; the
//!   publisher builds a routing table from them and swaps it in.
//! - [`labels`]: service labels (`traefik.*`, `limpet.*`) to typed settings. Pure.
//! - [`table`]: the routing table, the one thing both planes share; rules and specs. Pure.
//! - [`health`]: active health monitors, recording verdicts in the servers' runtime state.
//! - [`balance`]: choosing a server for a request that is not pinned. Pure.
//! - [`sticky`]: the sticky cookie's name and value. Pure.
//! - [`proxy`]: the data plane: accepts clients, routes, forwards.
//! - [`l4`]: the layer-4 data plane: TCP and UDP front ports from the table, forwarded to
//!   tasks (TLS passthrough by server name), and the manager binding those ports.
//! - [`web`]: the status page.
//! - [`cli`] and [`config`]: flags, validated once into a typed [`config::Config`].
//!
//! The pure modules import neither tokio's I/O, hyper nor bollard.

pub mod balance;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod health;
pub mod l4;
pub mod labels;
pub mod proxy;
pub mod sticky;
pub mod table;
pub mod threads;
pub mod tls;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use config::Config;
use discovery::{ControlPlane, Publisher};
use table::spec::Provider;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    File(#[from] discovery::file::FileError),
    #[error(transparent)]
    KeyFile(#[from] sticky::seal::KeyFileError),
    #[error("TLS entrypoint: {0}")]
    Tls(#[from] tls::certs::CertError),
    #[error("cannot start the control-plane thread: {0}")]
    ControlPlane(#[source] std::io::Error),
    #[error("cannot start the worker threads: {0}")]
    Workers(#[source] std::io::Error),
}

/// Runs limpet until `shutdown` completes: binds the listeners, starts the providers, and
/// serves. Start-up problems (a port in use, a bad file) are returned; once running, provider
/// trouble is logged and the last good table keeps serving.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, what, source })
    };
    let entrypoint = bind(config.entrypoint, "entrypoint").await?;
    let web = match config.web {
        Some(addr) => Some(bind(addr, "status page").await?),
        None => None,
    };
    let tls = match &config.tls {
        Some(t) => {
            let resolver = tls::certs::Resolver::new(tls::certs::CertStore::load(&t.certificates)?);
            let listener = bind(t.address, "TLS entrypoint").await?;
            Some((listener, resolver, t.clone()))
        }
        None => None,
    };

    let mut expected = Vec::new();
    if config.docker.is_some() {
        expected.push(Provider::Docker);
    }
    if config.file.is_some() {
        expected.push(Provider::File);
    }
    let keyring = match &config.sticky.keyfile {
        Some(path) => Some(Arc::new(sticky::Keyring::load(path)?)),
        None => None,
    };
    let sticky = table::StickyGlobals {
        mode: config.sticky.mode,
        ttl: config.sticky.ttl,
        keyring,
    };
    let publisher = Arc::new(Publisher::new(expected, sticky));
    let mut background = Vec::new();
    let control = ControlPlane::start().map_err(StartError::ControlPlane)?;

    if let Some(file) = config.file {
        let (specs, text) = discovery::file::read_initial(&file.path)?;
        publisher.update(Provider::File, specs);
        background.push(control.spawn(discovery::file::watch(
            file.path,
            file.poll_interval,
            Arc::clone(&publisher),
            text,
        )));
    }
    if let Some(docker) = config.docker {
        background.push(control.spawn(discovery::docker::watch(docker, Arc::clone(&publisher))));
    }

    background.push(tokio::spawn(health::supervise(
        publisher.table(),
        instance_name(),
    )));

    // Layer-4 front ports come and go with the table; limpet's own ports are not theirs.
    let mut reserved = vec![l4::Reserved {
        protocol: table::l4::Protocol::Tcp,
        port: config.entrypoint.port(),
        owner: "limpet's HTTP entrypoint".into(),
    }];
    if let Some(addr) = config.web {
        reserved.push(l4::Reserved {
            protocol: table::l4::Protocol::Tcp,
            port: addr.port(),
            owner: "limpet's status page".into(),
        });
    }
    if let Some(t) = &config.tls {
        reserved.push(l4::Reserved {
            protocol: table::l4::Protocol::Tcp,
            port: t.address.port(),
            owner: "limpet's TLS entrypoint".into(),
        });
    }
    background.push(tokio::spawn(l4::supervise(
        publisher.table(),
        config.l4.clone(),
        reserved,
    )));

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let proxy = Arc::new(proxy::Proxy::new(publisher.table(), config.proxy));
    let workers = config
        .workers
        .and_then(std::num::NonZeroUsize::new)
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(std::num::NonZeroUsize::MIN);
    let workers = Arc::new(proxy::Workers::start(workers).map_err(StartError::Workers)?);
    if let Some(listener) = web {
        tracing::info!(address = %config.web.expect("bound"), "status page listening");
        background.push(tokio::spawn(web::serve(
            listener,
            publisher.table(),
            proxy.budget(),
            Arc::clone(&workers),
            stopped(stop_rx.clone()),
        )));
    }
    if let Some((listener, resolver, settings)) = tls {
        tracing::info!(address = %settings.address, certificates = settings.certificates.len(), "TLS entrypoint listening");
        background.push(tokio::spawn(tls::certs::watch(
            settings.certificates,
            Arc::clone(&resolver),
            settings.reload_interval,
        )));
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::certs::server_config(resolver));
        background.push(tokio::spawn(proxy::serve_with(
            listener,
            proxy::Transport::Tls(acceptor),
            Arc::clone(&proxy),
            Arc::clone(&workers),
            stopped(stop_rx.clone()),
        )));
    }
    tracing::info!(address = %config.entrypoint, "entrypoint listening");
    let plain = proxy::Transport::Plain { h2c: config.h2c };
    proxy::serve_with(entrypoint, plain, proxy, workers, async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, letting requests finish");
        let _ = stop_tx.send(true);
    })
    .await;
    for task in background {
        task.abort();
    }
    drop(control);
    Ok(())
}

/// This replica's name for the health-check id header: the container's hostname.
fn instance_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "limpet".into())
}

/// An error with its causes on one line, for logs and the exit message: "connection refused"
/// rather than only "client error (Connect)". A cause whose text the message already
/// contains is not repeated.
pub fn report(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
