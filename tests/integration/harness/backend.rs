//! A real HTTP backend on 127.0.0.1 that misbehaves on command.
//!
//! Traffic is answered with status 200, an `x-backend: <name>` header and the name as body,
//! unless the [`Mode`] says otherwise. Health probes (recognised by limpet's
//! `limpet-healthcheck/` User-Agent) are answered by the separate [`Health`] setting, so a
//! test can fail the monitor while traffic still flows, or the reverse. Everything received
//! is recorded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How traffic (not probes) is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Ok,
    /// Answer with this status (and the usual headers).
    Status(u16),
    /// Wait, then answer 200.
    Delay(Duration),
    /// Wait until [`Backend::release`], then answer 200.
    Hold,
    /// Read the request, then close the connection without answering.
    CloseWithoutAnswer,
}

/// How health probes are answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: u16,
    /// Added to the answer, for `expect_headers`.
    pub headers: Vec<(String, String)>,
    /// Never answer.
    pub hang: bool,
}

impl Health {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            hang: false,
        }
    }

    pub fn hang() -> Self {
        Self {
            hang: true,
            ..Self::status(200)
        }
    }
}

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub target: String,
    pub headers: HeaderMap,
    /// Read in full before answering.
    pub body: Bytes,
    /// When it arrived, to order traffic against probes.
    pub at: Instant,
    /// For probes: the status answered (0 when the probe was left hanging).
    pub answered: u16,
}

struct Inner {
    name: String,
    /// How traffic is answered; read per request, so a change applies at once.
    mode: Mutex<Mode>,
    /// How probes are answered.
    health: Mutex<Health>,
    /// Every traffic request, including those closed without an answer: attempts count.
    traffic: Mutex<Vec<Seen>>,
    /// Every probe, with the status given.
    probes: Mutex<Vec<Seen>>,
    /// True while [`Mode::Hold`] requests must wait.
    gate: watch::Sender<bool>,
    held: AtomicUsize,
    /// False while the backend refuses connections (its listener is closed).
    listening: watch::Sender<bool>,
}

pub struct Backend {
    /// What it answers in `x-backend` and the body, so tests see who answered.
    pub name: String,
    pub addr: SocketAddr,
    /// Shared with the accept loop and every connection.
    inner: Arc<Inner>,
    /// The accept loop, stopped when the backend is dropped.
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            mode: Mutex::new(Mode::Ok),
            health: Mutex::new(Health::status(200)),
            traffic: Mutex::new(Vec::new()),
            probes: Mutex::new(Vec::new()),
            gate: watch::channel(false).0,
            held: AtomicUsize::new(0),
            listening: watch::channel(true).0,
        });
        let task = tokio::spawn(serve(Arc::clone(&inner), addr, listener));
        Self {
            name: name.to_owned(),
            addr,
            inner,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.inner.mode.lock().unwrap() = mode;
    }

    pub fn set_health(&self, health: Health) {
        *self.inner.health.lock().unwrap() = health;
    }

    /// Holds every traffic request until [`Backend::release`].
    pub fn hold(&self) {
        self.inner.gate.send_replace(true);
        self.set_mode(Mode::Hold);
    }

    /// Lets held requests finish, and answers later ones at once.
    pub fn release(&self) {
        self.set_mode(Mode::Ok);
        self.inner.gate.send_replace(false);
    }

    /// Requests currently waiting in [`Mode::Hold`].
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection; returns once connections are refused.
    pub async fn refuse(&self) {
        self.inner.listening.send_replace(false);
        self.wait_connectable(false).await;
    }

    /// Listens again on the same port; returns once connections are accepted.
    pub async fn accept(&self) {
        self.inner.listening.send_replace(true);
        self.wait_connectable(true).await;
    }

    async fn wait_connectable(&self, wanted: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() != wanted {
            assert!(
                Instant::now() < deadline,
                "{}: listener state did not change",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Traffic requests received so far (probes excluded).
    pub fn traffic(&self) -> Vec<Seen> {
        self.inner.traffic.lock().unwrap().clone()
    }

    pub fn hits(&self) -> usize {
        self.inner.traffic.lock().unwrap().len()
    }

    pub fn probes(&self) -> Vec<Seen> {
        self.inner.probes.lock().unwrap().clone()
    }

    pub fn probe_count(&self) -> usize {
        self.inner.probes.lock().unwrap().len()
    }

    pub fn forget(&self) {
        self.inner.traffic.lock().unwrap().clear();
        self.inner.probes.lock().unwrap().clear();
    }
}

async fn serve(inner: Arc<Inner>, addr: SocketAddr, first: TcpListener) {
    let mut listening = inner.listening.subscribe();
    let mut listener = Some(first);
    loop {
        let current = match listener.take() {
            Some(l) => l,
            None => {
                if listening.wait_for(|on| *on).await.is_err() {
                    return;
                }
                rebind(addr).await
            }
        };
        // Dropping the set aborts the connection tasks, closing their sockets, so that
        // limpet's pooled connections to this backend die with the listener.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = current.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let inner = Arc::clone(&inner);
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(Arc::clone(&inner), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                changed = listening.wait_for(|on| !*on) => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// Binds the port again. It was ours a moment ago; the kernel may briefly hand it to an
/// outgoing connection, so retry for a while.
async fn rebind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot listen on {addr} again: {e}"),
        }
    }
}

type Reply = Response<Full<Bytes>>;

/// An error makes hyper close the connection without writing a response.
#[derive(Debug)]
struct Hangup;

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closing without an answer, as told")
    }
}

impl std::error::Error for Hangup {}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Reply, Hangup> {
    let is_probe = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("limpet-healthcheck"));
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Hangup),
    };
    let mut seen = Seen {
        method: parts.method.clone(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.to_string()),
        headers: parts.headers.clone(),
        body,
        at: Instant::now(),
        answered: 0,
    };
    if is_probe {
        let health = inner.health.lock().unwrap().clone();
        if health.hang {
            inner.probes.lock().unwrap().push(seen);
            return std::future::pending().await;
        }
        seen.answered = health.status;
        inner.probes.lock().unwrap().push(seen);
        let mut r = reply(&inner.name, health.status);
        for (k, v) in &health.headers {
            r.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        return Ok(r);
    }
    inner.traffic.lock().unwrap().push(seen);
    let mode = inner.mode.lock().unwrap().clone();
    match mode {
        Mode::Ok => Ok(reply(&inner.name, 200)),
        Mode::Status(s) => Ok(reply(&inner.name, s)),
        Mode::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(reply(&inner.name, 200))
        }
        Mode::Hold => {
            let mut gate = inner.gate.subscribe();
            inner.held.fetch_add(1, Ordering::SeqCst);
            let _ = gate.wait_for(|closed| !*closed).await;
            inner.held.fetch_sub(1, Ordering::SeqCst);
            Ok(reply(&inner.name, 200))
        }
        Mode::CloseWithoutAnswer => Err(Hangup),
    }
}

fn reply(name: &str, status: u16) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(name.to_owned())));
    *r.status_mut() = StatusCode::from_u16(status).expect("valid status");
    r.headers_mut()
        .insert("x-backend", http::HeaderValue::from_str(name).unwrap());
    r
}

/// An address on which nothing listens: connections to it are refused.
pub fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}
