//! TLS with rustls: terminating client connections (certificates chosen by SNI, reloaded
//! when their files change) and connecting to backends (CA bundle or system roots, server
//! name override, client certificate, an explicit insecure switch).
//!
//! - `certs`: certificate files, the SNI resolver, and the reload watcher.
//! - `backend`: client configurations for HTTPS and h2 backends.

pub mod backend;
pub mod certs;

use std::sync::Arc;

/// The crypto provider for every TLS configuration limpet builds. Chosen explicitly rather
/// than through rustls' process default so that no other crate's feature flags can change
/// which implementation runs.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
