//! Provider-neutral service definitions: what the Docker labels and the static file are
//! converted into before a table is built. Plain data, compared for equality so that an
//! unchanged poll publishes nothing.

use std::fmt;
use std::time::Duration;

use http::uri::{Authority, Scheme};

use super::rule::ParsedRule;
use crate::balance::Method;
pub use crate::tls::backend::BackendTls;

/// Where a service definition came from. Part of a service's identity, so the same name from
/// the file and from Docker does not collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Provider {
    Docker,
    File,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Docker => "docker",
            Provider::File => "file",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Unique within its provider: the Swarm service name, the container name or the file key.
    pub name: String,
    pub provider: Provider,
    pub routers: Vec<RouterSpec>,
    pub servers: Vec<ServerSpec>,
    pub options: ServiceOptions,
    /// Layer-4 (TCP/UDP) routes, each with servers of its own (the tasks at another port).
    pub l4: Vec<super::l4::L4Spec>,
}

/// How a service balances, pins, retries and checks its servers: everything labels and the
/// file can say about a service besides where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOptions {
    pub method: Method,
    pub sticky: Option<StickySpec>,
    /// Forward the client's Host header (Traefik's `passHostHeader`, on by default).
    pub pass_host_header: bool,
    pub retry: RetryPolicy,
    pub passive: PassiveHealth,
    /// How long a server new to rotation takes to reach its full share; zero disables.
    pub slow_start: Duration,
    /// Apigee's IsFallback: where requests go while none of the servers is in rotation.
    pub fallback: Option<FallbackSpec>,
    /// Apigee's target `Path`: prepended to every forwarded path.
    pub base_path: Option<String>,
    /// Prefixes removed from the path before forwarding (Traefik's `PathPrefixStrip`),
    /// longest first.
    pub strip_prefixes: Vec<String>,
    pub limits: ServerLimits,
    pub health_check: Option<HealthCheckSpec>,
    /// How backends are spoken to.
    pub protocol: BackendProtocol,
    /// TLS towards backends, for the `https` and `h2` protocols.
    pub backend_tls: BackendTls,
    /// A request header whose value pins a client when it carries no cookie (gRPC clients
    /// that keep no cookies send a metadata key instead).
    pub affinity_header: Option<String>,
    /// This service's own wait for response headers, instead of
    /// `--forwardingtimeouts.responseheadertimeout` (a gRPC client's deadline still wins).
    pub response_header_timeout: Option<Duration>,
}

/// The protocol limpet speaks to a service's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendProtocol {
    #[default]
    Http,
    /// HTTP/2 without TLS, with prior knowledge: gRPC backends.
    H2c,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 over TLS.
    H2,
}

impl BackendProtocol {
    pub fn uses_tls(self) -> bool {
        matches!(self, BackendProtocol::Https | BackendProtocol::H2)
    }

    pub fn is_http2(self) -> bool {
        matches!(self, BackendProtocol::H2c | BackendProtocol::H2)
    }
}

impl std::str::FromStr for BackendProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http" => Ok(BackendProtocol::Http),
            "h2c" | "grpc" => Ok(BackendProtocol::H2c),
            "https" => Ok(BackendProtocol::Https),
            "h2" | "grpcs" => Ok(BackendProtocol::H2),
            _ => Err(format!("`{s}`: expected http, https, h2c or h2")),
        }
    }
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            method: Method::default(),
            sticky: None,
            pass_host_header: true,
            retry: RetryPolicy::default(),
            passive: PassiveHealth::default(),
            slow_start: Duration::ZERO,
            fallback: None,
            base_path: None,
            strip_prefixes: Vec::new(),
            limits: ServerLimits::default(),
            health_check: None,
            protocol: BackendProtocol::default(),
            backend_tls: BackendTls::default(),
            affinity_header: None,
            response_header_timeout: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackSpec {
    /// Another service of the table, by name.
    Service(String),
    Url(ServerUrl),
}

/// Per-server concurrency limits (HAProxy's `maxconn` and queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Requests in flight per server; 0 means unlimited.
    pub max_conn: u32,
    /// Requests that may wait for a free slot, per server; beyond it, 503 with Retry-After.
    pub queue: u32,
    pub queue_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_conn: 0,
            queue: 0,
            queue_timeout: Duration::from_secs(5),
        }
    }
}

/// An active health monitor (Apigee's HealthMonitor with a TCP or HTTP monitor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    pub probe: Probe,
    pub interval: Duration,
    pub connect_timeout: Duration,
    /// For HTTP probes: time allowed for the whole response.
    pub timeout: Duration,
    /// Probe this port instead of the server's.
    pub port: Option<u16>,
    /// Passes in a row that bring a server back.
    pub rise: u32,
    /// Failures in a row that take a server out.
    pub fall: u32,
    /// A new server stays out of rotation until its first pass (Traefik #4544).
    pub start_down: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection is enough.
    Tcp,
    Http(HttpProbe),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    pub method: String,
    pub path: String,
    /// Host header to send; the server's address when unset.
    pub hostname: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub tls: bool,
    /// Statuses that pass; empty means any 2xx or 3xx, as Traefik does.
    pub expect_status: Vec<u16>,
    pub expect_headers: Vec<(String, String)>,
    /// Send `X-Limpet-Healthcheck-Id: <instance>/<service>/<server>/<epoch-ms>`, as Apigee
    /// sends its health-check id, so backends can tell probes from traffic.
    pub id_header: bool,
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        Self {
            probe: Probe::Tcp,
            interval: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            port: None,
            rise: 2,
            fall: 3,
            start_down: false,
        }
    }
}

impl Default for HttpProbe {
    fn default() -> Self {
        Self {
            method: "GET".into(),
            path: "/".into(),
            hostname: None,
            headers: Vec::new(),
            body: None,
            tls: false,
            expect_status: Vec::new(),
            expect_headers: Vec::new(),
            id_header: false,
        }
    }
}

/// When a failed request is tried again on another server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Further attempts after the first, each on a server that has not failed this request.
    pub attempts: u32,
    /// Retry idempotent methods whose connection broke after the request was sent. Only
    /// bodiless requests qualify: a streamed body cannot be replayed.
    pub idempotent_after_send: bool,
    /// Retry non-idempotent methods after sending too; off by default because the backend
    /// may already have acted on the request.
    pub unsafe_after_send: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 2,
            idempotent_after_send: true,
            unsafe_after_send: false,
        }
    }
}

/// Passive health (Apigee's MaxFailures): consecutive failures take a server out of
/// rotation for a cool-down, after which it is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Failures in a row that take a server out; 0 disables passive health.
    pub max_failures: u32,
    pub cooldown: Duration,
    /// Response statuses that count as failures (Apigee's ServerUnhealthyResponse), besides
    /// connection errors and timeouts, which always do.
    pub unhealthy_statuses: Vec<u16>,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            max_failures: 3,
            cooldown: Duration::from_secs(10),
            unhealthy_statuses: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSpec {
    pub name: String,
    pub rule: ParsedRule,
    /// Higher wins; 0 means "use the rule length", as Traefik v1 does.
    pub priority: i32,
    /// Matches only requests that came over TLS (Traefik's router `tls`, v1's
    /// `entryPoints=https`); on the plain entrypoint the route does not exist.
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Stable identity that outlives table swaps: the Swarm task id, the container id, or
    /// `file:<service>/<server>`. Runtime state (health, drain) is keyed by it, never by address.
    pub id: String,
    pub url: ServerUrl,
    pub weight: u32,
    /// False while the server drains (its task is shutting down) or is disabled by its
    /// operator: it keeps its pinned clients but takes no new sessions.
    pub accepts_new: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickySpec {
    pub cookie_name: String,
    /// How the cookie names the server; `None` takes the global `--sticky.mode`.
    pub mode: Option<CookieMode>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<SameSite>,
    /// Cookie lifetime in the browser; `None` makes a session cookie.
    pub max_age: Option<Duration>,
    pub path: String,
    pub domain: Option<String>,
    /// Refresh the cookie (and its seal) on every response, not only when it is issued.
    pub sliding: bool,
    /// How long a sealed value stays valid, checked against wall-clock time so that every
    /// replica agrees; `None` takes the global `--sticky.ttl`.
    pub ttl: Option<Duration>,
}

impl StickySpec {
    /// Stickiness as the tutorial has it: a session cookie on `/`, HttpOnly.
    pub fn named(cookie_name: String) -> Self {
        Self {
            cookie_name,
            mode: None,
            secure: false,
            http_only: true,
            same_site: None,
            max_age: None,
            path: "/".into(),
            domain: None,
            sliding: false,
            ttl: None,
        }
    }
}

/// What the sticky cookie's value carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CookieMode {
    /// The backend URL, `http://10.0.0.5:8000`, as the Swarm tutorial shows Traefik v1 doing.
    #[default]
    Url,
    /// An unkeyed hash of the URL: opaque, but anyone can compute it.
    Hash,
    /// AES-256-GCM over the server identity and issue time, with the shared key file.
    Sealed,
}

impl std::str::FromStr for CookieMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "url" => Ok(CookieMode::Url),
            "hash" => Ok(CookieMode::Hash),
            "sealed" => Ok(CookieMode::Sealed),
            _ => Err(format!("`{s}`: expected url, hash or sealed")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl std::str::FromStr for SameSite {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "strict" => Ok(SameSite::Strict),
            "lax" => Ok(SameSite::Lax),
            "none" => Ok(SameSite::None),
            _ => Err(format!("`{s}`: expected strict, lax or none")),
        }
    }
}

/// `scheme://authority` of a backend, the value the tutorial's cookie carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    pub scheme: Scheme,
    pub authority: Authority,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServerUrlError {
    #[error("`{0}` is not a URL of the form http://host:port")]
    Invalid(String),
    #[error("`{0}`: only http backends are supported here")]
    Scheme(String),
    #[error("`{0}`: a backend URL carries no path or query")]
    HasPath(String),
}

impl ServerUrl {
    pub fn http(host: &str, port: u16) -> Result<Self, ServerUrlError> {
        let text = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let authority = text
            .parse()
            .map_err(|_| ServerUrlError::Invalid(format!("http://{text}")))?;
        Ok(Self {
            scheme: Scheme::HTTP,
            authority,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ServerUrlError> {
        let uri: http::Uri = text
            .parse()
            .map_err(|_| ServerUrlError::Invalid(text.to_owned()))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(ServerUrlError::Invalid(text.to_owned()));
        };
        if scheme != &Scheme::HTTP {
            return Err(ServerUrlError::Scheme(text.to_owned()));
        }
        if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
            return Err(ServerUrlError::HasPath(text.to_owned()));
        }
        let authority = if authority.port().is_some() {
            authority.clone()
        } else {
            // The cookie value must be canonical, so the default port is written out.
            format!("{}:80", authority.host())
                .parse()
                .map_err(|_| ServerUrlError::Invalid(text.to_owned()))?
        };
        Ok(Self {
            scheme: scheme.clone(),
            authority,
        })
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_round_trips_in_tutorial_form() {
        let url = ServerUrl::http("10.0.0.5", 8000).unwrap();
        assert_eq!(url.to_string(), "http://10.0.0.5:8000");
        assert_eq!(ServerUrl::parse("http://10.0.0.5:8000").unwrap(), url);
        assert_eq!(ServerUrl::parse("http://10.0.0.5:8000/").unwrap(), url);
    }

    #[test]
    fn default_port_is_made_explicit() {
        assert_eq!(
            ServerUrl::parse("http://backend").unwrap().to_string(),
            "http://backend:80"
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(
            ServerUrl::http("fd00::5", 8000).unwrap().to_string(),
            "http://[fd00::5]:8000"
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(matches!(
            ServerUrl::parse("10.0.0.5"),
            Err(ServerUrlError::Invalid(_))
        ));
        assert!(matches!(
            ServerUrl::parse("ftp://10.0.0.5:21"),
            Err(ServerUrlError::Scheme(_))
        ));
        assert!(matches!(
            ServerUrl::parse("http://10.0.0.5:80/app"),
            Err(ServerUrlError::HasPath(_))
        ));
    }
}
