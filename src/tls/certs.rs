//! Server certificates: loaded from PEM files (Docker secrets), chosen per connection by
//! the name the client asks for (SNI), the first one being the default, and reloaded when
//! the files change. A bad reload keeps the certificates in use and logs why.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate chain and key, as files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{key} does not fit {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("no certificate configured")]
    Empty,
}

/// The loaded certificates, the first being the default.
#[derive(Debug)]
pub struct CertStore {
    entries: Vec<Arc<CertifiedKey>>,
    /// A DNS name of the certificates' (lowercase) to the first entry that names it, so
    /// that a handshake does not parse every certificate in turn to find its own.
    exact: HashMap<Box<str>, usize>,
    /// The same for wildcard names, keyed by what follows `*.`.
    wildcard: HashMap<Box<str>, usize>,
}

impl CertStore {
    pub fn load(files: &[CertFiles]) -> Result<Self, CertError> {
        if files.is_empty() {
            return Err(CertError::Empty);
        }
        let entries = files
            .iter()
            .map(|f| load_pair(f).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        for (i, entry) in entries.iter().enumerate() {
            let Some(ee) = end_entity(entry) else {
                continue;
            };
            for name in ee.valid_dns_names() {
                let name = name.to_ascii_lowercase();
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent.into()),
                    None => (&mut exact, name.into_boxed_str()),
                };
                map.entry(key).or_insert(i);
            }
        }
        Ok(Self {
            entries,
            exact,
            wildcard,
        })
    }

    /// The certificate valid for `name`, or the default one: a client that sends no SNI, or
    /// one limpet has no certificate for, still gets an answer (and its own error).
    fn choose(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let chosen = match name {
            Some(name) if self.entries.len() > 1 => self.valid_for(name),
            _ => None,
        };
        Arc::clone(chosen.unwrap_or(&self.entries[0]))
    }

    /// The first certificate valid for `name`. The name maps find the candidates; webpki
    /// still decides, as its documentation asks of anyone choosing by presented names.
    fn valid_for(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let reference = ServerName::try_from(name).ok()?;
        let verifies = |ck: &Arc<CertifiedKey>| {
            end_entity(ck).is_some_and(|ee| ee.verify_is_valid_for_subject_name(&reference).is_ok())
        };
        if !matches!(reference, ServerName::DnsName(_)) {
            // An IP address (which SNI should never carry): no map holds those.
            return self.entries.iter().find(|ck| verifies(ck));
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let exact = self.exact.get(name.as_str()).copied();
        let wildcard = name
            .split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent).copied());
        let mut candidates = [exact, wildcard];
        candidates.sort_unstable_by_key(|c| c.unwrap_or(usize::MAX));
        candidates
            .into_iter()
            .flatten()
            .map(|i| &self.entries[i])
            .find(|ck| verifies(ck))
    }
}

/// The leaf certificate of `ck`, parsed for its names.
fn end_entity(ck: &CertifiedKey) -> Option<webpki::EndEntityCert<'_>> {
    let der = ck.end_entity_cert().ok()?;
    webpki::EndEntityCert::try_from(der).ok()
}

fn load_pair(files: &CertFiles) -> Result<CertifiedKey, CertError> {
    let (chain, key) = read_pair(files)?;
    CertifiedKey::from_der(chain, key, &super::provider()).map_err(|e| CertError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })
}

/// Reads a PEM certificate chain and its private key; errors name the file at fault. Used
/// for server certificates and for client certificates towards backends alike.
pub fn read_pair(
    files: &CertFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CertError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(&files.cert)?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key_pem = read(&files.key)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| CertError::NoKey {
            path: files.key.clone(),
        })?;
    Ok((chain, key))
}

/// Picks the certificate per handshake from whatever store is current.
#[derive(Debug)]
pub struct Resolver {
    store: ArcSwap<CertStore>,
}

impl Resolver {
    pub fn new(store: CertStore) -> Arc<Self> {
        Arc::new(Self {
            store: ArcSwap::from_pointee(store),
        })
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.store.load().choose(hello.server_name()))
    }
}

/// The server configuration for the TLS entrypoint: ALPN offers h2 first, then http/1.1.
pub fn server_config(resolver: Arc<Resolver>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Reloads the certificates whenever one of their files changes, until dropped. Polling the
/// contents rather than watching inodes, because Docker secrets are swapped by symlink.
pub async fn watch(files: Vec<CertFiles>, resolver: Arc<Resolver>, interval: Duration) {
    let fingerprint = |files: &[CertFiles]| -> Vec<Option<Vec<u8>>> {
        files
            .iter()
            .flat_map(|f| [std::fs::read(&f.cert).ok(), std::fs::read(&f.key).ok()])
            .collect()
    };
    let mut last = fingerprint(&files);
    loop {
        tokio::time::sleep(interval).await;
        let now = fingerprint(&files);
        if now == last {
            continue;
        }
        last = now;
        match CertStore::load(&files) {
            Ok(store) => {
                resolver.store.store(Arc::new(store));
                tracing::info!("TLS certificates reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %crate::report(&e), "TLS certificates changed but cannot be loaded; keeping the ones in use")
            }
        }
    }
}
