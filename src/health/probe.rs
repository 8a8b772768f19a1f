//! One probe: a TCP connect, or an HTTP exchange whose status and headers are checked.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::table::spec::{HealthCheckSpec, HttpProbe, Probe};
use crate::tls::backend::FilesStamp;

/// What is probed, and the names that go into the health-check id header.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// `host:port` of the server.
    pub authority: String,
    pub service: String,
    pub server: String,
    pub instance: String,
    /// How the service's backends are reached over TLS, for `https` probes: the probe
    /// verifies exactly as the proxy does.
    pub tls: crate::table::spec::BackendTls,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect to {0} failed: {1}")]
    Connect(String, std::io::Error),
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad probe request: {0}")]
    Request(String),
    #[error("status {0} is not an expected one")]
    Status(u16),
    #[error("header `{0}` is missing or differs")]
    Header(String),
    #[error("TLS setup for the probe failed: {0}")]
    TlsConfig(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
}

/// The TLS configuration of a server's `https` probes, read from the service's files and
/// read again when they change. New files that cannot be used are reported once and the
/// previous configuration kept, as the proxy does: a bad CA bundle on disk must not take
/// servers that still answer out of rotation.
#[derive(Default)]
pub struct ProbeTls {
    current: Option<(FilesStamp, Arc<rustls::ClientConfig>)>,
}

impl ProbeTls {
    fn config(&mut self, target: &ProbeTarget) -> Result<Arc<rustls::ClientConfig>, ProbeError> {
        let stamp = target.tls.stamp();
        if let Some((seen, config)) = &self.current {
            if *seen == stamp {
                return Ok(Arc::clone(config));
            }
        }
        match crate::tls::backend::client_config(&target.tls) {
            Ok(config) => {
                let config = Arc::new(config);
                self.current = Some((stamp, Arc::clone(&config)));
                Ok(config)
            }
            Err(e) => match &mut self.current {
                Some((seen, config)) => {
                    tracing::warn!(
                        service = %target.service,
                        files = %target.tls.describe_files(),
                        error = %crate::report(&e),
                        "backend TLS files changed but cannot be used; health probes keep the previous ones"
                    );
                    *seen = stamp;
                    Ok(Arc::clone(config))
                }
                None => Err(ProbeError::TlsConfig(crate::report(&e))),
            },
        }
    }
}

pub async fn probe(
    target: &ProbeTarget,
    check: &HealthCheckSpec,
    tls: &mut ProbeTls,
) -> Result<(), ProbeError> {
    let authority = match check.port {
        Some(port) => {
            let host = target
                .authority
                .rsplit_once(':')
                .map_or(target.authority.as_str(), |(h, _)| h);
            format!("{host}:{port}")
        }
        None => target.authority.clone(),
    };
    let stream = tokio::time::timeout(check.connect_timeout, TcpStream::connect(&authority))
        .await
        .map_err(|_| ProbeError::ConnectTimeout(authority.clone()))?
        .map_err(|e| ProbeError::Connect(authority.clone(), e))?;
    match &check.probe {
        Probe::Tcp => Ok(()),
        Probe::Http(http) if http.tls => {
            let config = tls.config(target)?;
            let probe = async {
                let tls = handshake(stream, config, &authority, target, http).await?;
                exchange(tls, &authority, target, http).await
            };
            tokio::time::timeout(check.timeout, probe)
                .await
                .map_err(|_| ProbeError::Timeout(check.timeout))?
        }
        Probe::Http(http) => {
            tokio::time::timeout(check.timeout, exchange(stream, &authority, target, http))
                .await
                .map_err(|_| ProbeError::Timeout(check.timeout))?
        }
    }
}

async fn handshake(
    stream: TcpStream,
    config: Arc<rustls::ClientConfig>,
    authority: &str,
    target: &ProbeTarget,
    http: &HttpProbe,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeError> {
    // The name to verify: the service's override, else the probe's Host, else the address.
    let host = target
        .tls
        .server_name
        .clone()
        .or_else(|| http.hostname.clone())
        .unwrap_or_else(|| {
            let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        });
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| ProbeError::TlsConfig(format!("`{host}` is not a valid TLS server name")))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(ProbeError::Handshake)
}

async fn exchange<S>(
    stream: S,
    authority: &str,
    target: &ProbeTarget,
    http: &HttpProbe,
) -> Result<(), ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let method = Method::from_bytes(http.method.as_bytes())
        .map_err(|e| ProbeError::Request(e.to_string()))?;
    let mut request = Request::builder()
        .method(method)
        .uri(http.path.as_str())
        .header(
            http::header::HOST,
            http.hostname.as_deref().unwrap_or(authority),
        )
        .header(
            http::header::USER_AGENT,
            concat!("limpet-healthcheck/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in &http.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if http.id_header {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        request = request.header(
            "x-limpet-healthcheck-id",
            format!(
                "{}/{}/{}/{now}",
                target.instance, target.service, target.server
            ),
        );
    }
    let body = Full::new(Bytes::from(http.body.clone().unwrap_or_default()));
    let request = request
        .body(body)
        .map_err(|e| ProbeError::Request(e.to_string()))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // Read the body so that a server which fails mid-answer fails the probe.
    response.into_body().collect().await?;
    driver.abort();
    let status_ok = if http.expect_status.is_empty() {
        (200..400).contains(&status)
    } else {
        http.expect_status.contains(&status)
    };
    if !status_ok {
        return Err(ProbeError::Status(status));
    }
    for (name, expected) in &http.expect_headers {
        let matches = HeaderName::from_bytes(name.as_bytes())
            .ok()
            .and_then(|n| headers.get(n))
            .is_some_and(|v: &HeaderValue| v.as_bytes() == expected.as_bytes());
        if !matches {
            return Err(ProbeError::Header(name.clone()));
        }
    }
    Ok(())
}
