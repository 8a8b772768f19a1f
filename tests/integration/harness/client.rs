//! An HTTP client for talking to limpet, and a session that keeps a cookie jar.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Generous: a request that takes this long is a hang, not slowness.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct Client {
    /// limpet's entrypoint.
    addr: SocketAddr,
    /// Pooled, as a browser or another proxy in front of limpet would be.
    inner: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Read in full.
    pub body: Bytes,
}

impl Reply {
    /// The backend that answered, from its `x-backend` header.
    pub fn backend(&self) -> Option<String> {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The full `Set-Cookie` header for cookie `name`, if the response sets it.
    pub fn set_cookie_header(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.split_once('=').is_some_and(|(n, _)| n.trim() == name))
            .map(str::to_owned)
    }

    /// The value `Set-Cookie` gives cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let header = self.set_cookie_header(name)?;
        let pair = header.split(';').next()?;
        Some(pair.split_once('=')?.1.trim().to_owned())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .build(HttpConnector::new()),
        }
    }

    /// A request to limpet for `path` (which may carry a query).
    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(
            self.request(Method::GET, path)
                .body(Full::default())
                .unwrap(),
        )
        .await
    }

    /// GET with a `Cookie` header.
    pub async fn get_with_cookie(&self, path: &str, cookie: &str) -> Reply {
        let req = self
            .request(Method::GET, path)
            .header(http::header::COOKIE, cookie)
            .body(Full::default())
            .unwrap();
        self.send(req).await
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let what = format!("{} {}", req.method(), req.uri());
        let response = tokio::time::timeout(REQUEST_LIMIT, self.inner.request(req))
            .await
            .unwrap_or_else(|_| panic!("{what}: no response within {REQUEST_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(REQUEST_LIMIT, body.collect())
            .await
            .unwrap_or_else(|_| panic!("{what}: body not complete within {REQUEST_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("{what}: body: {e:?}"))
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// A client that keeps cookies as a browser would: each `Set-Cookie` replaces the value.
pub struct Session {
    pub client: Client,
    /// Cookie name to value, sent with every request.
    pub jar: BTreeMap<String, String>,
}

impl Session {
    pub fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
            jar: BTreeMap::new(),
        }
    }

    pub fn with_cookie(client: &Client, name: &str, value: &str) -> Self {
        let mut s = Self::new(client);
        s.jar.insert(name.to_owned(), value.to_owned());
        s
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send(Method::GET, path, Bytes::new()).await
    }

    pub async fn send(&mut self, method: Method, path: &str, body: Bytes) -> Reply {
        let mut req = self.client.request(method, path);
        if !self.jar.is_empty() {
            let header: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(http::header::COOKIE, header.join("; "));
        }
        let reply = self.client.send(req.body(Full::new(body)).unwrap()).await;
        for v in reply.headers.get_all(http::header::SET_COOKIE) {
            let Ok(text) = v.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                self.jar.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        reply
    }
}

/// Counts of `names` in `got`, in the order of `names`.
pub fn tally(got: &[String], names: &[&str]) -> Vec<usize> {
    names
        .iter()
        .map(|n| got.iter().filter(|g| g == n).count())
        .collect()
}
