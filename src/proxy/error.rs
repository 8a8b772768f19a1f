//! Every way a request can fail, and the one place that turns a failure into a response.
//!
//! Each variant records whose fault it is through its status: 4xx for the client, 502/504
//! for the backend, 503 when limpet has nothing to send the request to.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::Body;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no configuration received yet")]
    NotReady,
    #[error("no route matches host `{host}` path `{path}`")]
    NoRoute { host: String, path: String },
    #[error("service `{service}` has no server available")]
    NoServer { service: String },
    /// The service had no server in rotation and its fallback could not be reached either:
    /// as unavailable as a service without servers, whether the fallback has been marked
    /// down yet or not.
    #[error("service `{service}` has no server available and its fallback {fallback} refused the connection: {source}")]
    FallbackDown {
        service: String,
        fallback: String,
        #[source]
        source: UpstreamError,
    },
    #[error("service `{service}`: cannot connect to server {server}: {source}")]
    Connect {
        service: String,
        server: String,
        #[source]
        source: UpstreamError,
    },
    #[error("service `{service}`: server {server} did not answer within {timeout_ms} ms")]
    Timeout {
        service: String,
        server: String,
        timeout_ms: u128,
        /// The limit was the gRPC client's deadline, not limpet's header timeout.
        deadline: bool,
    },
    #[error("service `{service}`: server {server} failed: {source}")]
    Upstream {
        service: String,
        server: String,
        #[source]
        source: UpstreamError,
    },
    #[error(
        "service `{service}`: server {server} is at its connection limit and its queue is full"
    )]
    QueueFull { service: String, server: String },
    #[error("service `{service}`: cannot set up TLS to its backends: {source}")]
    BackendTls {
        service: String,
        #[source]
        source: crate::tls::backend::BackendTlsError,
    },
    #[error("memory budget past its admission threshold; request refused")]
    Overloaded,
    #[error("request body larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error("bad request: {0}")]
    BadRequest(&'static str),
}

/// How an exchange with a backend failed, whichever client carried it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Plain HTTP/1.1, through limpet's own pool.
    #[error(transparent)]
    Http1(#[from] super::pool::SendError),
    /// The other protocols: HTTP/2 through limpet's multiplexed client, HTTPS/1.1 through
    /// hyper-util's pooled one.
    #[error(transparent)]
    Client(#[from] super::clients::SendError),
}

impl UpstreamError {
    /// Nothing reached the backend: any request may go to another server.
    pub fn not_sent(&self) -> bool {
        use super::pool::SendError;
        match self {
            UpstreamError::Http1(SendError::Connect(_) | SendError::Unsent(_)) => true,
            UpstreamError::Http1(SendError::Sent(_)) => false,
            UpstreamError::Client(e) => e.is_connect(),
        }
    }
}

impl From<super::pool::ConnectError> for UpstreamError {
    fn from(e: super::pool::ConnectError) -> Self {
        UpstreamError::Http1(e.into())
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotReady
            | ProxyError::NoServer { .. }
            | ProxyError::QueueFull { .. }
            | ProxyError::FallbackDown { .. }
            | ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::BackendTls { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Logs the failure at a level that matches whose fault it is, and builds the response.
    pub fn into_response(self) -> Response<Body> {
        self.log();
        let status = self.status();
        let reason = status.canonical_reason().unwrap_or("Error");
        let mut response =
            Response::new(Body::Right(Full::new(Bytes::from(format!("{reason}\n")))));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if matches!(
            self,
            ProxyError::QueueFull { .. } | ProxyError::NotReady | ProxyError::Overloaded
        ) {
            // Both pass quickly: a slot frees up, or the first configuration arrives.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }

    /// The same failure for a gRPC client: a gRPC status rather than an HTTP error page.
    pub fn into_grpc_response(self) -> Response<Body> {
        self.log();
        super::grpc::error_response(&self)
    }

    /// Client mistakes log at debug so hostile traffic cannot flood the log.
    fn log(&self) {
        let status = self.status().as_u16();
        match self {
            ProxyError::NoRoute { .. }
            | ProxyError::BadRequest(_)
            | ProxyError::TooLarge { .. }
            | ProxyError::Overloaded => tracing::debug!(status, "{self}"),
            ProxyError::NotReady => tracing::info!(status, "{self}"),
            _ => tracing::warn!(status, "{}", crate::report(self)),
        }
    }
}
