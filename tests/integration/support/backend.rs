//! Real HTTP backends on 127.0.0.1 for limpet to forward to.
//!
//! Each answers with its own name (body and `X-Backend` header), records every request it
//! receives and counts the TCP connections it accepts. [`Mode`] makes it misbehave on every
//! request; in the normal mode a few paths make it do something particular, so one backend
//! serves many scenarios:
//!
//! - `/gate`: the first body chunk at once, the second when the test opens the gate.
//! - `/held`: signals its arrival, answers when the test opens the gate.
//! - `/upload`: checks the body against [`pattern`] and says how much arrived intact.
//! - `/upload-gate`: signals the first body chunk, then echoes the whole body.
//! - `/download/<n>`: `n` bytes of [`pattern`], with a Content-Length.
//! - `/trickle`: the body in five pieces 100 ms apart.
//! - `/hop`, `/set-cookie`: hop-by-hop response headers; the application's own cookies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::pattern;
use super::{within, BoxError};

type BackendBody = BoxBody<Bytes, BoxError>;

/// How a backend treats every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers normally (and honours the special paths below).
    Answer,
    /// Reads the request and never sends response headers.
    Hang,
    /// Answers `500` with a body naming itself.
    Fail,
    /// Reads the request and closes the connection without a word.
    Close,
    /// Sends headers promising 1000 bytes and 10 bytes of body, then closes the connection.
    Cut,
    /// The same with a chunked body: only the missing last chunk tells that it was cut.
    CutChunked,
}

/// A request as the backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    /// Path and query, as forwarded.
    pub target: String,
    pub headers: HeaderMap,
    /// The request target's authority: HTTP/2's `:authority`, absent in HTTP/1.1's
    /// origin form.
    pub authority: Option<String>,
}

impl Seen {
    /// The single value of header `name`, or `None`; panics on a repeated header so a
    /// duplicated forwarding header cannot slip through.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut all = self.headers.get_all(name).iter();
        let first = all.next()?;
        assert!(
            all.next().is_none(),
            "header {name} arrived more than once: {:?}",
            self.headers
        );
        Some(first.to_str().expect("header is text"))
    }
}

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`: how limpet's file, cookies and logs name this backend.
    pub url: String,
    state: Arc<State>,
    /// Signals from the backend to the test, see [`Backend::arrival`].
    arrivals: tokio::sync::Mutex<mpsc::UnboundedReceiver<Bytes>>,
    server: JoinHandle<()>,
}

struct State {
    name: String,
    mode: Mode,
    connections: AtomicUsize,
    requests: Mutex<Vec<Seen>>,
    /// Permits the test hands out to let `/gate` and `/held` requests proceed.
    gate: Semaphore,
    arrivals: mpsc::UnboundedSender<Bytes>,
}

/// A backend that answers normally.
pub async fn spawn_backend(name: &str) -> Backend {
    spawn_backend_with(name, Mode::Answer).await
}

pub async fn spawn_backend_with(name: &str, mode: Mode) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a backend port");
    let addr = listener.local_addr().expect("backend address");
    let (arrivals_tx, arrivals_rx) = mpsc::unbounded_channel();
    let state = Arc::new(State {
        name: name.to_owned(),
        mode,
        connections: AtomicUsize::new(0),
        requests: Mutex::new(Vec::new()),
        gate: Semaphore::new(0),
        arrivals: arrivals_tx,
    });
    let server = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
    Backend {
        name: name.to_owned(),
        addr,
        url: format!("http://{addr}"),
        state,
        arrivals: tokio::sync::Mutex::new(arrivals_rx),
        server,
    }
}

/// An address on 127.0.0.1 where nothing listens: connections to it are refused.
pub fn closed_port() -> SocketAddr {
    // Bound and released at once. Linux spreads ephemeral port choices, so another bind
    // taking this one again during the test is unlikely; and it would have to listen too.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("local address")
}

impl Backend {
    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    pub fn last_request(&self) -> Seen {
        self.requests()
            .pop()
            .unwrap_or_else(|| panic!("backend {} received no request", self.name))
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Lets one waiting `/gate` or `/held` request proceed (or the next one, if none waits yet).
    pub fn open_gate(&self) {
        self.state.gate.add_permits(1);
    }

    /// Waits for the backend's next signal: a `/held` request arrived (empty), or an
    /// `/upload-gate` request's first body chunk arrived (that chunk).
    pub async fn arrival(&self) -> Bytes {
        let mut rx = self.arrivals.lock().await;
        within(&format!("a signal from backend {}", self.name), rx.recv())
            .await
            .expect("backend is running")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = Vec::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let state = Arc::clone(&state);
        if matches!(state.mode, Mode::Close | Mode::Cut | Mode::CutChunked) {
            connections.push(AbortOnDrop(tokio::spawn(cut_off(stream, state))));
            continue;
        }
        // Owned here so that aborting the backend also closes its open connections.
        connections.push(AbortOnDrop(tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(answer(state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        })));
        connections.retain(|c| !c.0.is_finished());
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Response<BackendBody> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    state.requests.lock().unwrap().push(Seen {
        method: req.method().clone(),
        target: target.clone(),
        headers: req.headers().clone(),
        authority: req.uri().authority().map(ToString::to_string),
    });
    let name = state.name.as_str();
    match state.mode {
        Mode::Answer => {}
        Mode::Hang => std::future::pending().await,
        Mode::Fail => {
            return reply(
                name,
                full(format!("{name} failed")),
                StatusCode::INTERNAL_SERVER_ERROR,
            );
        }
        Mode::Close | Mode::Cut | Mode::CutChunked => unreachable!("answered without hyper"),
    }
    let path = req.uri().path().to_owned();
    match path.as_str() {
        // First chunk at once, the rest only when the test opens the gate: a client that
        // sees the first chunk before that proves limpet streams responses.
        "/gate" => {
            let body = stream::unfold((0u8, Arc::clone(&state)), |(step, state)| async move {
                match step {
                    0 => Some((
                        Ok(Frame::data(Bytes::from_static(b"first chunk\n"))),
                        (1, state),
                    )),
                    1 => {
                        state.gate.acquire().await.expect("gate open").forget();
                        Some((
                            Ok(Frame::data(Bytes::from_static(b"second chunk\n"))),
                            (2, state),
                        ))
                    }
                    _ => None,
                }
            });
            reply(name, BodyExt::boxed(StreamBody::new(body)), StatusCode::OK)
        }
        // Tells the test it arrived, then answers only when the gate opens: an in-flight
        // request the test controls.
        "/held" => {
            let _ = state.arrivals.send(Bytes::new());
            state.gate.acquire().await.expect("gate open").forget();
            reply(
                name,
                full(format!("held response from {name}")),
                StatusCode::OK,
            )
        }
        // Reports the first body chunk to the test before reading on: the test sends the
        // rest only after that, which a proxy buffering the whole upload would never allow.
        "/upload-gate" => {
            let mut body = req.into_body();
            let mut received = Vec::new();
            let mut signalled = false;
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame.map(|f| f.into_data().unwrap_or_default()) else {
                    return reply(name, full("upload broke off"), StatusCode::BAD_REQUEST);
                };
                if !signalled && !data.is_empty() {
                    let _ = state.arrivals.send(data.clone());
                    signalled = true;
                }
                received.extend_from_slice(&data);
            }
            reply(name, full(received), StatusCode::OK)
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut check = pattern::Check::default();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => check.feed(f.data_ref().map_or(&[][..], |d| &d[..])),
                    Err(_) => {
                        return reply(name, full("upload broke off"), StatusCode::BAD_REQUEST)
                    }
                }
            }
            reply(name, full(check.verdict()), StatusCode::OK)
        }
        // Headers at once, body in five pieces 100 ms apart: longer in total than the tests'
        // response-header timeout, which must not cut a response that already started.
        "/trickle" => {
            let body = stream::unfold(0u8, |i| async move {
                if i == 5 {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Some((Ok(Frame::data(Bytes::from(format!("piece {i}\n")))), i + 1))
            });
            reply(name, BodyExt::boxed(StreamBody::new(body)), StatusCode::OK)
        }
        // The application's own cookies, which must reach the client next to limpet's.
        "/set-cookie" => {
            let mut r = reply(name, full(name.to_owned()), StatusCode::OK);
            let h = r.headers_mut();
            h.append(
                "set-cookie",
                HeaderValue::from_static("app-session=42; Path=/; HttpOnly"),
            );
            h.append("set-cookie", HeaderValue::from_static("theme=dark"));
            r
        }
        // Hop-by-hop headers on the response, which limpet must drop.
        "/hop" => {
            let mut r = reply(name, full(name.to_owned()), StatusCode::OK);
            let h = r.headers_mut();
            h.insert("connection", HeaderValue::from_static("X-Resp-Secret"));
            h.insert("x-resp-secret", HeaderValue::from_static("1"));
            h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            h.insert("x-kept", HeaderValue::from_static("1"));
            r
        }
        _ => {
            if let Some(n) = path.strip_prefix("/download/") {
                let total: u64 = n.parse().expect("/download/<bytes>");
                let body = stream::iter(pattern::chunks(total).map(|b| Ok(Frame::data(b))));
                let mut r = reply(name, BodyExt::boxed(StreamBody::new(body)), StatusCode::OK);
                r.headers_mut()
                    .insert("content-length", HeaderValue::from(total));
                return r;
            }
            reply(name, full(name.to_owned()), StatusCode::OK)
        }
    }
}

/// Written by hand rather than through hyper, which would not flush a response whose body
/// fails: the point is a response that has visibly started when the connection drops.
async fn cut_off(mut stream: TcpStream, state: Arc<State>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let mut start = lines.next().unwrap_or_default().split(' ');
    let mut headers = HeaderMap::new();
    for (k, v) in lines.filter_map(|l| l.split_once(':')) {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.trim().as_bytes()),
            HeaderValue::from_str(v.trim()),
        ) {
            headers.append(k, v);
        }
    }
    state.requests.lock().unwrap().push(Seen {
        method: start.next().unwrap_or_default().parse().unwrap_or_default(),
        target: start.next().unwrap_or_default().to_owned(),
        headers,
        authority: None,
    });
    let response: &[u8] = match state.mode {
        Mode::Close => return,
        Mode::CutChunked => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-backend: cut\r\n\r\na\r\n0123456789\r\n",
        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nx-backend: cut\r\n\r\n0123456789",
    };
    let _ = stream.write_all(response).await;
    let _ = stream.flush().await;
}

fn full(body: impl Into<Bytes>) -> BackendBody {
    BodyExt::boxed(Full::new(body.into()).map_err(|e: Infallible| match e {}))
}

fn reply(name: &str, body: BackendBody, status: StatusCode) -> Response<BackendBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        "x-backend",
        HeaderValue::from_str(name).expect("backend names are header-safe"),
    );
    r
}
