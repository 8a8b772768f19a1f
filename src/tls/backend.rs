//! TLS towards backends (Apigee's SSLInfo): whom to trust, which name to verify, which
//! client certificate to present.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::certs::CertFiles;

/// How a service's backends are reached over TLS. Plain data, part of the table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct BackendTls {
    /// PEM bundle of CAs to trust; the system's roots when unset.
    pub ca: Option<PathBuf>,
    /// The name to send (SNI) and verify, instead of the backend's address.
    pub server_name: Option<String>,
    /// A client certificate for mutual TLS.
    pub client_cert: Option<CertFiles>,
    /// Accept any certificate. Logged as a warning: it removes the point of TLS.
    pub insecure: bool,
}

impl BackendTls {
    /// The files this configuration is read from.
    pub fn files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = self.ca.iter().map(PathBuf::as_path).collect();
        if let Some(pair) = &self.client_cert {
            files.extend([pair.cert.as_path(), pair.key.as_path()]);
        }
        files
    }

    /// What its files look like now, to tell when they change.
    pub fn stamp(&self) -> FilesStamp {
        FilesStamp(
            self.files()
                .into_iter()
                .map(|f| {
                    std::fs::metadata(f)
                        .ok()
                        .map(|m| (m.modified().ok(), m.len()))
                })
                .collect(),
        )
    }

    /// The files, for a log line.
    pub fn describe_files(&self) -> String {
        let names: Vec<String> = self
            .files()
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        names.join(", ")
    }
}

/// Modification time and length of each file of a [`BackendTls`] (`None`: unreadable). A
/// Docker secret or an edited file changes one or the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesStamp(Vec<Option<(Option<SystemTime>, u64)>>);

#[derive(Debug, thiserror::Error)]
pub enum BackendTlsError {
    #[error("cannot read CA bundle {path}: {source}")]
    Ca {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA bundle {0} holds no usable certificate")]
    EmptyCa(PathBuf),
    #[error("no system root certificates found; set a CA bundle for the backend")]
    NoSystemRoots,
    #[error(transparent)]
    ClientCert(#[from] super::certs::CertError),
    #[error("client certificate rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("`{0}` is not a valid TLS server name")]
    BadServerName(String),
}

/// Builds the client configuration. It offers no ALPN protocol: hyper-rustls sets ALPN
/// from the HTTP versions its connector enables (`h2` for gRPC), and panics when the
/// configuration already has some.
pub fn client_config(tls: &BackendTls) -> Result<rustls::ClientConfig, BackendTlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions");
    let builder = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(super::provider())))
    } else {
        builder.with_root_certificates(roots(tls)?)
    };
    let config = match &tls.client_cert {
        Some(files) => {
            let (chain, key) = super::certs::read_pair(files)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

fn roots(tls: &BackendTls) -> Result<RootCertStore, BackendTlsError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| BackendTlsError::Ca {
                path: path.clone(),
                source,
            })?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()).filter_map(Result::ok) {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(BackendTlsError::EmptyCa(path.clone()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(BackendTlsError::NoSystemRoots);
            }
        }
    }
    Ok(roots)
}

/// The insecure switch: any certificate is accepted, signatures are still checked so the
/// handshake is well-formed.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
