//! A plain HTTP/1.1 client for talking to limpet: one real TCP connection per [`Conn`], every
//! header sent exactly as the test wrote it (no Host added, nothing folded), and replies
//! collected whole with all their `Set-Cookie` values.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{within, BoxError};

pub type ClientBody = BoxBody<Bytes, BoxError>;

/// The Host every request carries unless the test says otherwise; the tests' files route it.
pub const DEFAULT_HOST: &str = "app.test";

/// A request under construction: `Req::get("/x").host("a.test").header("cookie", "...")`.
pub struct Req {
    method: Method,
    target: String,
    headers: HeaderMap,
    body: ClientBody,
}

impl Req {
    pub fn get(target: &str) -> Self {
        Self::new(Method::GET, target, empty())
    }

    pub fn post(target: &str, body: ClientBody) -> Self {
        Self::new(Method::POST, target, body)
    }

    pub fn new(method: Method, target: &str, body: ClientBody) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static(DEFAULT_HOST));
        Self {
            method,
            target: target.to_owned(),
            headers,
            body,
        }
    }

    pub fn host(mut self, host: &str) -> Self {
        self.headers
            .insert(header::HOST, host.parse().expect("valid Host"));
        self
    }

    /// Appends, so calling it twice sends the header twice.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name: HeaderName = name.parse().expect("valid header name");
        self.headers
            .append(name, value.parse().expect("valid header value"));
        self
    }

    pub fn cookie(self, value: &str) -> Self {
        self.header("cookie", value)
    }

    fn build(self) -> Request<ClientBody> {
        let mut r = Request::new(self.body);
        *r.method_mut() = self.method;
        *r.uri_mut() = self.target.parse().expect("valid request target");
        *r.headers_mut() = self.headers;
        r
    }
}

/// A reply read to its end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is text")
    }

    /// The backend that answered, from the header every test backend sets.
    pub fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .unwrap_or_else(|| panic!("no X-Backend header; limpet answered itself: {self:?}"))
            .to_str()
            .expect("backend name is text")
    }

    /// Every `Set-Cookie` value, in order.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("Set-Cookie is text"))
            .collect()
    }

    /// The one `Set-Cookie` value; panics when there is none or several.
    pub fn set_cookie(&self) -> &str {
        match self.set_cookies()[..] {
            [one] => one,
            ref other => panic!("expected exactly one Set-Cookie, got {other:?}"),
        }
    }

    /// `name=value` of the `Set-Cookie`, ready to send back in a `Cookie` header.
    pub fn cookie_pair(&self) -> &str {
        self.set_cookie().split(';').next().expect("a cookie pair")
    }
}

/// One client connection to limpet; requests on it are sent one after the other.
pub struct Conn {
    sender: SendRequest<ClientBody>,
    driver: JoinHandle<()>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Self {
        let stream = within("connecting to limpet", TcpStream::connect(addr))
            .await
            .expect("limpet accepts connections");
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1 handshake");
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Self { sender, driver }
    }

    /// Sends a request and reads the whole reply; panics if anything fails on the way.
    pub async fn send(&mut self, req: Req) -> Reply {
        let what = format!("{} {}", req.method, req.target);
        match self.try_send(req).await {
            Ok(reply) => reply,
            Err(e) => panic!("{what}: {e}"),
        }
    }

    /// Like [`Conn::send`], returning failures (a connection cut mid-body, say) to the test.
    pub async fn try_send(&mut self, req: Req) -> Result<Reply, BoxError> {
        let response = self.start(req).await?;
        let (parts, body) = response.into_parts();
        let body = within("reading a response body", body.collect())
            .await?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends a request and returns once the response headers arrived, body unread.
    pub async fn start(&mut self, req: Req) -> Result<Response<Incoming>, BoxError> {
        within("the connection to become ready", self.sender.ready()).await?;
        Ok(within("response headers", self.sender.send_request(req.build())).await?)
    }

    pub async fn get(&mut self, target: &str) -> Reply {
        self.send(Req::get(target)).await
    }

    /// Whether limpet closed this connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

pub fn empty() -> ClientBody {
    BodyExt::boxed(Empty::new().map_err(|e| match e {}))
}

pub fn full(body: impl Into<Bytes>) -> ClientBody {
    BodyExt::boxed(Full::new(body.into()).map_err(|e| match e {}))
}

/// A request body the test feeds chunk by chunk; it ends when the sender is dropped.
pub fn channel_body() -> (mpsc::Sender<Bytes>, ClientBody) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|data| (Ok(Frame::data(data)), rx))
    });
    (tx, BodyExt::boxed(StreamBody::new(stream)))
}

/// A streamed request body of `total` pattern bytes with no length known in advance, so it
/// goes out chunked.
pub fn pattern_body(total: u64) -> ClientBody {
    let stream =
        futures_util::stream::iter(super::pattern::chunks(total).map(|b| Ok(Frame::data(b))));
    BodyExt::boxed(StreamBody::new(stream))
}
