//! limpet with both entrypoints, as `limpet::run` wires them: the plain one (optionally
//! accepting h2c, or redirecting to HTTPS) and the TLS one (certificates by SNI, reloaded
//! from their files); TLS and HTTP/2 clients for them; and backends that speak HTTP/2, TLS
//! or mutual TLS, for the protocols limpet speaks to backends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use limpet::discovery::{file, Publisher, SharedTable};
use limpet::proxy::{self, Proxy, ProxySettings, Transport};
use limpet::table::spec::Provider;
use limpet::table::{StickyGlobals, Table};
use limpet::tls::certs::{self, CertFiles};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use super::backend::Seen;
use super::certs::{Ca, Leaf, TempDir};
use super::client::Reply;
use super::limpet::{Options, POLL};
use super::{eventually, within};

/// How the certificate files are polled: short, so reload tests are quick.
pub const CERT_POLL: Duration = Duration::from_millis(50);

pub struct EdgeOptions {
    /// The first is the default certificate.
    pub certificates: Vec<CertFiles>,
    /// Accept HTTP/2 with prior knowledge on the plain entrypoint.
    pub h2c: bool,
    /// Answer the plain entrypoint with a redirect to the TLS one.
    pub redirect: bool,
    pub proxy: ProxySettings,
}

impl EdgeOptions {
    pub fn new(certificates: Vec<CertFiles>) -> Self {
        Self {
            certificates,
            h2c: false,
            redirect: false,
            proxy: Options::default().proxy,
        }
    }
}

/// limpet in-process with a plain and a TLS entrypoint on 127.0.0.1, fed by its file provider.
pub struct Edge {
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub file: std::path::PathBuf,
    table: SharedTable,
    tasks: Vec<JoinHandle<()>>,
    _dir: TempDir,
}

pub async fn spawn_edge(toml: &str, options: EdgeOptions) -> Edge {
    let dir = TempDir::new("edge");
    let path = dir.path().join("limpet.toml");
    std::fs::write(&path, toml).expect("write the file");
    let publisher = Arc::new(Publisher::new(
        vec![Provider::File],
        StickyGlobals::default(),
    ));
    let (specs, text) =
        file::read_initial(&path).unwrap_or_else(|e| panic!("the test's file is bad: {e}"));
    publisher.update(Provider::File, specs);
    let mut tasks = vec![tokio::spawn(file::watch(
        path.clone(),
        POLL,
        Arc::clone(&publisher),
        text,
    ))];

    let bind = || async {
        TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a limpet port")
    };
    let (plain, tls) = (bind().await, bind().await);
    let (plain_addr, tls_addr) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
    let mut settings = options.proxy;
    if options.redirect {
        settings.redirect_to_https = Some(tls_addr.port());
    }
    let proxy = Arc::new(Proxy::new(publisher.table(), settings));
    let workers = super::two_workers();

    let store = certs::CertStore::load(&options.certificates)
        .unwrap_or_else(|e| panic!("the test's certificates are bad: {e}"));
    let resolver = certs::Resolver::new(store);
    tasks.push(tokio::spawn(certs::watch(
        options.certificates,
        Arc::clone(&resolver),
        CERT_POLL,
    )));
    let acceptor = tokio_rustls::TlsAcceptor::from(certs::server_config(resolver));
    tasks.push(tokio::spawn(proxy::serve_with(
        tls,
        Transport::Tls(acceptor),
        Arc::clone(&proxy),
        Arc::clone(&workers),
        std::future::pending(),
    )));
    tasks.push(tokio::spawn(proxy::serve_with(
        plain,
        Transport::Plain { h2c: options.h2c },
        proxy,
        workers,
        std::future::pending(),
    )));
    Edge {
        plain: plain_addr,
        tls: tls_addr,
        file: path,
        table: publisher.table(),
        tasks,
        _dir: dir,
    }
}

impl Edge {
    /// Replaces the file and waits until limpet has published a table built from it.
    pub async fn reload(&self, toml: &str) {
        let before: Arc<Table> = self.table.load_full();
        let aside = self.file.with_extension("new");
        std::fs::write(&aside, toml).expect("write the new file");
        std::fs::rename(&aside, &self.file).expect("replace the file");
        eventually("limpet to publish the edited file", || {
            !Arc::ptr_eq(&before, &self.table.load_full())
        })
        .await;
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A client configuration trusting only `ca`, offering `alpn`.
pub fn client_config(ca: &Ca, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add the CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(limpet::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr` asking for `sni`; the certificate is verified for that name.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = within("connecting", TcpStream::connect(addr)).await?;
    let name = ServerName::try_from(sni.to_owned()).expect("a valid server name");
    within(
        "a TLS handshake",
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
}

/// The certificate the server presented on this connection.
pub fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("the server presented a certificate")
        .clone()
        .into_owned()
}

/// The protocol ALPN settled on, if any.
pub fn negotiated(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// Sends one request over `io`, as HTTP/2 when `h2` (prior knowledge, or what ALPN chose),
/// and reads the reply whole. Returns the version the reply came in.
pub async fn send_over<IO>(io: IO, h2: bool, req: Request<Full<Bytes>>) -> (Version, Reply)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        within("response headers", sender.send_request(req)).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("HTTP/1 handshake");
        tokio::spawn(conn);
        within("response headers", sender.send_request(req)).await
    }
    .expect("a response");
    let (parts, body) = response.into_parts();
    let body = within("the response body", body.collect())
        .await
        .expect("the whole body")
        .to_bytes();
    (
        parts.version,
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        },
    )
}

/// `GET https://<host><path>` as HTTP/2 wants it (absolute, for `:authority`); HTTP/1.1
/// sends it with a Host header.
pub fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(format!("https://{host}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

/// A GET over TLS to limpet's TLS entrypoint, with `sni`, trusting `ca`, offering one ALPN
/// protocol; returns the reply and the version it came in.
pub async fn https_get(
    addr: SocketAddr,
    ca: &Ca,
    sni: &str,
    alpn: &[u8],
    path: &str,
) -> (Version, Reply) {
    let stream = tls_connect(addr, client_config(ca, &[alpn]), sni)
        .await
        .expect("TLS handshake with limpet");
    let h2 = negotiated(&stream).as_deref() == Some(b"h2");
    let mut req = get(sni, path);
    if !h2 {
        *req.version_mut() = Version::HTTP_11;
    }
    send_over(stream, h2, req).await
}

/// How a [`TlsBackend`] is reached.
pub enum Speaks {
    /// HTTP/1.1 or HTTP/2 with prior knowledge, no TLS.
    Plain,
    /// TLS with this configuration (its ALPN decides what is offered).
    Tls(Arc<rustls::ServerConfig>),
}

/// A backend that answers `<name> <version>` (and `X-Backend: <name>`), speaking either
/// HTTP version, over TLS or not, and records what it received.
pub struct TlsBackend {
    pub name: String,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`, as limpet's file takes it whatever the protocol.
    pub url: String,
    requests: Arc<Mutex<Vec<Seen>>>,
    handshake_failures: Arc<AtomicUsize>,
    /// The server name each TLS client asked for.
    names: Arc<Mutex<Vec<Option<String>>>>,
    /// TCP connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// TCP connections open now.
    open: Arc<AtomicUsize>,
    /// The status `/health` answers.
    health: Arc<AtomicU16>,
    task: JoinHandle<()>,
}

impl TlsBackend {
    pub fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }

    /// TLS handshakes that failed (no client certificate, say).
    pub fn handshake_failures(&self) -> usize {
        self.handshake_failures.load(Ordering::SeqCst)
    }

    /// The SNI of every TLS connection accepted so far.
    pub fn server_names(&self) -> Vec<Option<String>> {
        self.names.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Makes `/health` answer `status` (200 at first).
    pub fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A backend's TLS configuration: `leaf` as its certificate, `alpn` offered, and when
/// `client_ca` is given, a client certificate signed by it required.
pub fn backend_tls(
    leaf: &Leaf,
    client_ca: Option<&Ca>,
    alpn: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    let provider = limpet::tls::provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("default versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut ca.pem.as_bytes()) {
                roots.add(cert.expect("CA PEM")).expect("add the CA");
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let (chain, key) = leaf.rustls_pair();
    let mut config = builder
        .with_single_cert(chain, key)
        .expect("the backend's certificate");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub async fn spawn_tls_backend(name: &str, speaks: Speaks) -> TlsBackend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a backend port");
    let addr = listener.local_addr().expect("backend address");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let handshake_failures = Arc::new(AtomicUsize::new(0));
    let names = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepted);
    let open = Arc::new(AtomicUsize::new(0));
    let open_now = Arc::clone(&open);
    let health = Arc::new(AtomicU16::new(200));
    let health_status = Arc::clone(&health);
    let acceptor = match speaks {
        Speaks::Plain => None,
        Speaks::Tls(config) => Some(tokio_rustls::TlsAcceptor::from(config)),
    };
    let (seen, failures, sni, own) = (
        Arc::clone(&requests),
        Arc::clone(&handshake_failures),
        Arc::clone(&names),
        name.to_owned(),
    );
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let open_now = Arc::clone(&open_now);
            open_now.fetch_add(1, Ordering::SeqCst);
            let (seen, failures, own) = (Arc::clone(&seen), Arc::clone(&failures), own.clone());
            let health = Arc::clone(&health_status);
            let sni = Arc::clone(&sni);
            let acceptor = acceptor.clone();
            // Owned by the set, so aborting the backend closes its connections too.
            connections.spawn(async move {
                let service = service_fn(move |req| {
                    let (seen, own) = (Arc::clone(&seen), own.clone());
                    let health = health.load(Ordering::SeqCst);
                    async move { Ok::<_, Infallible>(answer(&own, &seen, health, req)) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => {
                            let name = tls.get_ref().1.server_name().map(str::to_owned);
                            sni.lock().unwrap().push(name);
                            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    },
                }
                open_now.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    TlsBackend {
        name: name.to_owned(),
        addr,
        url: format!("http://{addr}"),
        requests,
        handshake_failures,
        names,
        accepted,
        open,
        health,
        task,
    }
}

fn answer(
    name: &str,
    seen: &Mutex<Vec<Seen>>,
    health: u16,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    let req_path = req.uri().path().to_owned();
    seen.lock().unwrap().push(Seen {
        method: req.method().clone(),
        target,
        headers: req.headers().clone(),
        authority: req.uri().authority().map(ToString::to_string),
    });
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "{name} {:?}",
        req.version()
    ))));
    *response.status_mut() = if req_path == "/health" {
        StatusCode::from_u16(health).expect("a valid status")
    } else {
        StatusCode::OK
    };
    response
        .headers_mut()
        .insert("x-backend", name.parse().expect("a header-safe name"));
    response
}

/// Whether `program` can be run here; tests that drive external clients (curl, h2load)
/// skip, saying so, where it cannot.
pub fn have(program: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("SKIPPED: `{program}` is not installed on this machine");
    }
    found
}
