//! One request: route, choose a server (cookie first, balancer otherwise), rewrite, send,
//! retry on another server when that is safe, and return the backend's response with the
//! sticky cookie when the client needs one.
//!
//! Retry rules: a connection that could not be made sent nothing, so any request may go to
//! another server (its body comes back through [`ReclaimBody`]). Once a request was sent, only
//! bodiless requests can be replayed, and only idempotent ones unless the service allows
//! more. A retry never goes to a server that already failed this request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{self, FutureExt};

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, Version};
use http_body_util::{Either, Empty};
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::body::{ReclaimBody, TrackedBody};
use super::budget::{BodyError, Metered};
use super::error::{ProxyError, UpstreamError};
use super::grpc;
use super::headers::{
    add_forwarded, host_without_port, strip_hop_by_hop, ClientConn, X_FORWARDED_PREFIX,
};
use super::pool::{self, Pooled, ServerPool};
use super::upload::Upload;
use super::{Body, Proxy};
use crate::sticky::find_cookie;
use crate::table::rule::RequestFacts;
use crate::table::spec::BackendProtocol;
use crate::table::state::InflightGuard;
use crate::table::{CookieVerdict, Fallback, Readiness, Server, Service, SessionKey, Table};

/// Answers one request. A plain function rather than an `async fn`: each async layer would
/// keep its own copy of the request in a future that is allocated and moved for every
/// request, and this one adds nothing that has to live across an await.
pub fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
    conn: ClientConn,
) -> impl Future<Output = Response<Body>> + Send {
    if let (false, Some(port)) = (conn.tls, proxy.settings.redirect_to_https) {
        return future::Either::Left(future::ready(redirect_to_https(&req, port)));
    }
    let grpc = grpc::is_grpc(req.headers());
    future::Either::Right(
        forward(proxy, req, conn, grpc).map(move |result| match result {
            Ok(response) => response,
            Err(e) if grpc => e.into_grpc_response(),
            Err(e) => e.into_response(),
        }),
    )
}

/// 308 rather than 301, so that a POST stays a POST on the way to HTTPS.
fn redirect_to_https(req: &Request<Incoming>, port: u16) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .map(host_without_port)
        .unwrap_or("localhost");
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let authority = if port == 443 {
        host
    } else {
        format!("{host}:{port}")
    };
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let mut response = Response::new(Either::Right(http_body_util::Full::new(
        bytes::Bytes::from_static(b"Permanent Redirect\n"),
    )));
    *response.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = HeaderValue::from_str(&format!("https://{authority}{target}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// How the client's request headers become the backend's: hop-by-hop headers out (but
/// gRPC's `te: trailers` and an upgrade's own), the forwarded headers in. Kept, rather than
/// applied once, so that a request sent again is rewritten from a copy of the client's
/// headers.
struct Rewrite<'a> {
    te_trailers: bool,
    /// The protocol a WebSocket (or other HTTP/1.1 upgrade) asks for.
    upgrade: Option<HeaderValue>,
    conn: &'a ClientConn,
    host: Option<&'a HeaderValue>,
    /// What a router or service stripped from the path.
    prefix: Option<HeaderValue>,
}

impl Rewrite<'_> {
    fn apply(&self, headers: &mut HeaderMap) {
        strip_hop_by_hop(headers);
        if self.te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(protocol) = &self.upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        add_forwarded(headers, self.conn, self.host);
        // As Traefik's strip-prefix does, so that a backend can build links under the
        // public path. A client's own value passes on when nothing was stripped here: an
        // outer proxy may have stripped it.
        if let Some(prefix) = &self.prefix {
            headers.insert(&X_FORWARDED_PREFIX, prefix.clone());
        }
    }

    fn applied(&self, raw: &HeaderMap) -> HeaderMap {
        let mut headers = raw.clone();
        self.apply(&mut headers);
        headers
    }
}

/// The server's own authority as Host, unless the service passes the client's on.
fn set_host(headers: &mut HeaderMap, service: &Service, server: &Server) {
    if !service.pass_host_header || !headers.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(server.authority.as_str()) {
            headers.insert(header::HOST, v);
        }
    }
}

/// How the server for this request was chosen.
#[derive(Debug, Clone, Copy)]
struct Choice {
    server: usize,
    /// The client has no valid cookie for this service and must be given one.
    needs_cookie: bool,
}

/// What one attempt came to.
enum Outcome {
    /// With the connection to give back once the response is read, if it can be reused.
    Answered(Response<Incoming>, Option<Pooled>),
    /// The connection could not be made: nothing was sent.
    NotSent(UpstreamError),
    /// The request may have reached the backend.
    Sent(UpstreamError),
    TimedOut,
}

async fn forward(
    proxy: Arc<Proxy>,
    mut req: Request<Incoming>,
    conn: ClientConn,
    grpc: bool,
) -> Result<Response<Body>, ProxyError> {
    let proxy = &*proxy;
    // One load per request; the Arc keeps this table alive across the await points even if
    // the control plane swaps in a new one meanwhile.
    let table: Arc<Table> = proxy.table.load_full();
    if table.readiness == Readiness::Loading {
        return Err(ProxyError::NotReady);
    }
    target_host_replaces_host_header(&mut req);
    // Work already accepted must be able to finish: past the admission threshold of the
    // memory budget, new requests are turned away at once rather than queued.
    if !proxy.budget.admit() {
        return Err(ProxyError::Overloaded);
    }
    // A gRPC stream lasts as long as its call: a limit on its total would cut a long-lived
    // stream (a reset the client reports as INTERNAL) however small its messages. Message
    // sizes are the gRPC server's to limit; the memory budget still bounds what is held.
    let max_body = if grpc { None } else { proxy.settings.max_body };
    // A gRPC client that set a deadline waits that long, longer or shorter than limpet's
    // header timeout: a unary call's headers come only with its answer.
    let deadline = grpc.then(|| grpc::deadline(req.headers())).flatten();
    if let Some(len) = req.body().size_hint().exact() {
        if max_body.is_some_and(|max| len > max) {
            return Err(ProxyError::TooLarge {
                max: max_body.unwrap_or_default(),
            });
        }
    }
    let (mut parts, body) = req.into_parts();
    // A WebSocket (or any HTTP/1.1 upgrade) keeps its Connection and Upgrade headers to the
    // backend, and the client's connection is taken over once the backend agrees.
    let upgrade = upgrade_request(&mut parts);
    let host_header = parts.headers.get(header::HOST).cloned();
    let router = {
        let host = host_header
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.host())
            .map(host_without_port)
            .unwrap_or("");
        let facts = RequestFacts {
            host,
            path: parts.uri.path(),
            method: parts.method.as_str(),
            tls: conn.tls,
        };
        table.route(&facts).ok_or_else(|| ProxyError::NoRoute {
            host: host.to_owned(),
            path: facts.path.to_owned(),
        })?
    };
    let primary: &Service = &table.services[router.service];
    let (service, choice, session_key) = match choose(primary, &parts.headers) {
        (Some(choice), key) => (primary, choice, key),
        // Nothing in rotation: Apigee's IsFallback. The fallback's own fallback is not
        // followed, so two services pointing at each other cannot loop.
        (None, _) => match fallback(&table, primary) {
            Some((service, server)) => {
                tracing::debug!(service = %primary.name, fallback = %service.name, "no server in rotation; using the fallback");
                let choice = Choice {
                    server,
                    needs_cookie: false,
                };
                (service, choice, None)
            }
            None => {
                return Err(ProxyError::NoServer {
                    service: primary.name.to_string(),
                })
            }
        },
    };
    let mut choice = choice;
    let on_fallback = !std::ptr::eq(service, primary);

    let (path_and_query, stripped_prefix) =
        rewrite_path(&router.def.rule.rewrite, service, &parts.uri)?;
    // gRPC needs `te: trailers` end to end; any other TE value is hop-by-hop.
    let te_trailers = parts
        .headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    let rewrite = Rewrite {
        te_trailers,
        upgrade: upgrade.as_ref().map(|(protocol, _)| protocol.clone()),
        conn: &conn,
        host: host_header.as_ref(),
        prefix: stripped_prefix,
    };
    let header_timeout = deadline
        .or(service.response_header_timeout)
        .unwrap_or(proxy.settings.response_header_timeout);

    let retry = &service.retry;
    let retries_possible = retry.attempts > 0 && service.servers.len() > 1;
    let http1 = service.protocol == BackendProtocol::Http;
    let bodiless = body.is_end_stream();
    let replayable_after_send = bodiless
        && (retry.unsafe_after_send
            || (retry.idempotent_after_send && is_idempotent(&parts.method)));
    // A bodiless idempotent request on a reused HTTP/1.1 connection is sent again on a new
    // one when the backend closed the old one just as it was reused (see `pool::send`).
    let replay_on_fresh = http1 && bodiless && is_idempotent(&parts.method);
    // The client consumes each request it is given, so a request sent again is rebuilt from
    // a copy of the method and the client's headers, taken only when that can happen: the
    // client's, before the rewrite adds to them, are about half as many to copy. A plain
    // HTTP/1.1 connection is had before the request is built, so a connect failure needs no
    // copy.
    let template = ((retries_possible && (replayable_after_send || !http1)) || replay_on_fresh)
        .then(|| (parts.method.clone(), parts.headers.clone()));
    rewrite.apply(&mut parts.headers);

    let (mut next_body, mut reclaimed) = upstream_body(body, proxy, max_body);
    let mut first = Some(parts);
    let mut tried: Vec<usize> = Vec::new();
    loop {
        let server = &service.servers[choice.server];
        let guard = admit(service, choice.server).await?;
        let started = service
            .balancer
            .method()
            .uses_latency()
            .then(std::time::Instant::now);
        let outcome = 'attempt: {
            let conn = if http1 {
                let pool = ServerPool::of(&server.state, &server.authority);
                match pool::checkout(&pool, &server.authority, &proxy.clients.http1).await {
                    Ok(conn) => Some((pool, conn)),
                    Err(e) => break 'attempt Outcome::NotSent(e.into()),
                }
            } else {
                None
            };
            let (body, mut body_sent) =
                match next_body.take().unwrap_or(Either::Right(Empty::new())) {
                    Either::Left(streamed) => {
                        let (watched, sent) = Upload::new(streamed);
                        (Either::Left(watched), Some(sent))
                    }
                    Either::Right(empty) => (Either::Right(empty), None),
                };
            let mut outgoing = match first.take() {
                Some(parts) => Request::from_parts(parts, body),
                None => {
                    let (method, headers) = template
                        .as_ref()
                        .expect("retries only happen with a template");
                    let mut r = Request::new(body);
                    *r.method_mut() = method.clone();
                    *r.headers_mut() = rewrite.applied(headers);
                    r
                }
            };
            if conn.is_some() {
                // An HTTP/1.1 connection of our own is already to the server: the request
                // goes in origin form (RFC 9112 §3.2.1), as the pooled clients send it.
                *outgoing.uri_mut() = Uri::from(path_and_query.clone());
            } else {
                *outgoing.uri_mut() = Uri::builder()
                    .scheme(server.scheme.clone())
                    .authority(server.authority.clone())
                    .path_and_query(path_and_query.clone())
                    .build()
                    .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
            }
            set_host(outgoing.headers_mut(), service, server);
            *outgoing.version_mut() = if service.protocol.is_http2() {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            let answered = match conn {
                Some((pool, conn)) => {
                    // The same request again, for the same server.
                    let again =
                        template
                            .as_ref()
                            .filter(|_| replay_on_fresh)
                            .map(|(method, raw)| {
                                let rewrite = &rewrite;
                                let headers = move || {
                                    let mut headers = rewrite.applied(raw);
                                    set_host(&mut headers, service, server);
                                    headers
                                };
                                (method, headers)
                            });
                    let replay = again
                        .as_ref()
                        .map(|(method, headers)| pool::Again { method, headers });
                    let settings = &proxy.clients.http1;
                    let sending =
                        pool::send(&pool, &server.authority, settings, conn, outgoing, replay);
                    wait_for_headers(header_timeout, sending, body_sent.take())
                        .await
                        .map(|r| {
                            r.map(|(response, c)| (response, Some(c)))
                                .map_err(Into::into)
                        })
                }
                None => {
                    let sending = proxy
                        .clients
                        .request(service.protocol, &service.backend_tls, outgoing)
                        .map_err(|e| ProxyError::BackendTls {
                            service: service.name.to_string(),
                            source: e,
                        })?;
                    // Boxed, so that the plain HTTP/1.1 path does not carry this one's
                    // future in its own.
                    Box::pin(wait_for_headers(header_timeout, sending, body_sent.take()))
                        .await
                        .map(|r| r.map(|response| (response, None)).map_err(Into::into))
                }
            };
            match answered {
                Ok(Ok((response, conn))) => Outcome::Answered(response, conn),
                Ok(Err(e)) if too_large(&e) => {
                    return Err(ProxyError::TooLarge {
                        max: max_body.unwrap_or_default(),
                    })
                }
                Ok(Err(e)) if e.not_sent() => Outcome::NotSent(e),
                Ok(Err(e)) => Outcome::Sent(e),
                Err(_) => Outcome::TimedOut,
            }
        };

        let passive = &service.passive;
        let failed = match &outcome {
            Outcome::Answered(r, _) => passive.unhealthy_statuses.contains(&r.status().as_u16()),
            _ => true,
        };
        if failed {
            if service.record_failure(choice.server) {
                tracing::warn!(
                    service = %service.name,
                    server = %server.url,
                    "server failed {} times in a row; out of rotation {}",
                    passive.max_failures,
                    if service.health_check.is_some() {
                        "until its health check passes".to_owned()
                    } else {
                        format!("for {} ms", passive.cooldown.as_millis())
                    }
                );
            }
        } else {
            server.state.record_success();
            if let Some(started) = started {
                server.state.record_latency(started.elapsed());
            }
        }

        let may_retry = retries_possible
            && tried.len() < retry.attempts as usize
            && (first.is_some() || template.is_some())
            && match &outcome {
                Outcome::Answered(..) => failed && replayable_after_send,
                Outcome::NotSent(_) => true,
                Outcome::Sent(_) | Outcome::TimedOut => replayable_after_send,
            };
        if may_retry {
            // The body comes back only if the failed attempt never read it. An attempt that
            // found no connection never took it.
            if next_body.is_none() {
                if let Some(rx) = reclaimed.take() {
                    match rx.await {
                        Ok(body) => (next_body, reclaimed) = upstream_body(body, proxy, max_body),
                        Err(_) => next_body = None,
                    }
                }
            }
            let body_ready = bodiless || next_body.is_some();
            tried.push(choice.server);
            let next = if body_ready {
                match session_key {
                    Some(key) => service.rendezvous(key, &tried),
                    _ => service.balance(&tried),
                }
            } else {
                None
            };
            if let Some(other) = next {
                tracing::warn!(
                    service = %service.name,
                    server = %server.url,
                    retry = %service.servers[other].url,
                    "{}; retrying on another server",
                    describe(&outcome)
                );
                // A pinned client whose server failed is re-pinned to the one that answers.
                choice = Choice {
                    server: other,
                    needs_cookie: service.sticky.is_some(),
                };
                continue;
            }
        }

        return match outcome {
            Outcome::Answered(response, conn) => Ok(respond(
                response,
                guard,
                conn,
                service,
                choice,
                upgrade,
                Arc::clone(&proxy.budget),
            )),
            Outcome::TimedOut => Err(ProxyError::Timeout {
                service: service.name.to_string(),
                server: server.url.to_string(),
                timeout_ms: header_timeout.as_millis(),
                deadline: deadline.is_some(),
            }),
            // The primary has nothing in rotation either, so nothing could take the
            // request: unavailable (503), as when the fallback is already marked down,
            // rather than 502 until passive health catches up.
            Outcome::NotSent(source) if on_fallback => Err(ProxyError::FallbackDown {
                service: primary.name.to_string(),
                fallback: server.url.to_string(),
                source,
            }),
            Outcome::NotSent(source) => Err(ProxyError::Connect {
                service: service.name.to_string(),
                server: server.url.to_string(),
                source,
            }),
            Outcome::Sent(source) => Err(ProxyError::Upstream {
                service: service.name.to_string(),
                server: server.url.to_string(),
                source,
            }),
        };
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Answered(r, _) => format!("server answered {}", r.status().as_u16()),
        Outcome::NotSent(e) | Outcome::Sent(e) => {
            let mut text = e.to_string();
            if let Some(source) = std::error::Error::source(e) {
                text = format!("{text}: {source}");
            }
            text
        }
        Outcome::TimedOut => "server did not answer in time".into(),
    }
}

/// The upstream body for a client body: nothing for a bodiless request (so a retry can send
/// nothing too), otherwise the stream wrapped so that it can be reclaimed.
fn upstream_body(
    body: Incoming,
    proxy: &Proxy,
    max_body: Option<u64>,
) -> (Option<Prepared>, Option<oneshot::Receiver<Incoming>>) {
    if body.is_end_stream() {
        return (Some(Either::Right(Empty::new())), None);
    }
    let (body, rx) = ReclaimBody::new(body);
    let metered = Metered::new(body, Arc::clone(&proxy.budget), max_body);
    (Some(Either::Left(metered)), Some(rx))
}

/// A request body before it is sent: metered, reclaimable, or nothing at all.
type Prepared = Either<Metered<ReclaimBody>, Empty<bytes::Bytes>>;

pin_project_lite::pin_project! {
    /// Waits for the response headers. The response-header timeout starts once the request
    /// body has been sent: a client uploading for longer than the timeout is not the backend
    /// being slow (Go's `ResponseHeaderTimeout`, which Traefik uses, counts the same way). A
    /// backend may answer before the upload ends (a 413, say); that answer is taken at once.
    ///
    /// Written out rather than as an `async fn` with `select!` and `timeout`: that kept two
    /// copies of the sending future and two timers, and this future is part of every
    /// request's.
    struct HeaderWait<F> {
        #[pin]
        sending: F,
        // Resolves when the request body has been sent; the clock starts then.
        body_sent: Option<oneshot::Receiver<()>>,
        timeout: Duration,
        #[pin]
        deadline: Sleep,
    }
}

/// The backend sent no response headers within the timeout.
struct TimedOut;

fn wait_for_headers<F: Future>(
    timeout: Duration,
    sending: F,
    body_sent: Option<oneshot::Receiver<()>>,
) -> HeaderWait<F> {
    HeaderWait {
        sending,
        body_sent,
        timeout,
        // Not registered with the timer until first polled, and reset once a body is sent.
        deadline: tokio::time::sleep(timeout),
    }
}

impl<F: Future> Future for HeaderWait<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(answered) = this.sending.poll(cx) {
            return Poll::Ready(Ok(answered));
        }
        if let Some(sent) = this.body_sent {
            // A dropped sender (the body failed) counts as sent: the clock runs either way.
            if Pin::new(sent).poll(cx).is_pending() {
                return Poll::Pending;
            }
            *this.body_sent = None;
            let deadline = Instant::now() + *this.timeout;
            this.deadline.as_mut().reset(deadline);
        }
        this.deadline.poll(cx).map(|()| Err(TimedOut))
    }
}

/// Whether the request failed because its body outgrew the maximum.
fn too_large(e: &UpstreamError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if matches!(s.downcast_ref::<BodyError>(), Some(BodyError::TooLarge(_))) {
            return true;
        }
        source = s.source();
    }
    false
}

/// RFC 9112 §3.2.2: with an absolute-form target (`GET http://b.example/ HTTP/1.1`), the
/// target's host is the request's host and the Host header is ignored. Go's net/http does
/// the same, so Traefik routes such a request, and forwards its Host, by the target; routing
/// by the header instead would let the two disagree about where a request goes. HTTP/2
/// requests carry their host this way (`:authority`) too.
fn target_host_replaces_host_header(req: &mut Request<Incoming>) {
    let Some(authority) = req.uri().authority() else {
        return;
    };
    // Host and port only: userinfo (`user@`) never belongs in a Host header.
    let host = match authority.port() {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&host) {
        req.headers_mut().insert(header::HOST, value);
    }
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Stickiness first: a cookie naming one of this service's current servers pins the
/// request there. A cookie that names a server no longer available is re-pinned by
/// rendezvous hashing on its value, so every replica moves it to the same place; anything
/// else is balanced. Returns the choice (none when no server is available) and the session
/// key that retries re-pin by.
fn choose(service: &Service, headers: &HeaderMap) -> (Option<Choice>, Option<SessionKey>) {
    let mut stale = None;
    if let Some(sticky) = &service.sticky {
        for header in headers.get_all(header::COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            let Some(value) = find_cookie(text, &sticky.cookie_name) else {
                continue;
            };
            match service.resolve_cookie(value) {
                CookieVerdict::Pinned(server) => {
                    let choice = Choice {
                        server,
                        needs_cookie: sticky.sliding,
                    };
                    return (Some(choice), Some(SessionKey::of(value)));
                }
                CookieVerdict::Stale => stale = Some(SessionKey::of(value)),
                // Debug only: hostile clients must not be able to flood the log.
                CookieVerdict::Invalid => {
                    tracing::debug!(service = %service.name, cookie = %sticky.cookie_name, "malformed sticky cookie ignored")
                }
            }
        }
        if stale.is_some() {
            tracing::debug!(service = %service.name, cookie = %sticky.cookie_name, "sticky cookie names no available server; re-pinning");
        }
    }
    // Header affinity: a client without a usable cookie that names its session in a header
    // (gRPC metadata) lands where the same header value always lands, on every replica.
    if stale.is_none() {
        if let Some(name) = &service.affinity_header {
            if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
                stale = Some(SessionKey::of(value));
            }
        }
    }
    let server = match stale {
        Some(key) => service.rendezvous(key, &[]),
        None => service.balance(&[]),
    };
    let choice = server.map(|server| Choice {
        server,
        needs_cookie: service.sticky.is_some(),
    });
    (choice, stale)
}

/// The path and query to send, and the `X-Forwarded-Prefix` to send with them when a
/// prefix was stripped: the router's, then the service's, as one path.
fn rewrite_path(
    rule_rewrite: &crate::table::rule::PathRewrite,
    service: &Service,
    uri: &Uri,
) -> Result<(PathAndQuery, Option<HeaderValue>), ProxyError> {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let by_rule = rule_rewrite.apply(original.path());
    let (rule_path, rule_prefix) = match &by_rule {
        Some((path, prefix)) => (path.as_str(), Some(*prefix)),
        None => (original.path(), None),
    };
    let (path, service_prefix) = match (service.rewrite_path(rule_path), by_rule) {
        (Some((path, prefix)), _) => (path, prefix),
        (None, Some((path, _))) => (path, None),
        (None, None) => return Ok((original, None)),
    };
    let prefix = match (rule_prefix, service_prefix) {
        (Some(first), Some(then)) => Some(format!("{}{then}", first.trim_end_matches('/'))),
        (Some(only), None) | (None, Some(only)) => Some(only.to_owned()),
        (None, None) => None,
    };
    let text = match original.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let path_and_query = text
        .parse()
        .map_err(|_| ProxyError::BadRequest("rewritten path is not valid"))?;
    // Prefixes come from the configuration, where they are paths; one that is not a valid
    // header value is left out rather than failing the request.
    let prefix = prefix.and_then(|p| HeaderValue::from_str(&p).ok());
    Ok((path_and_query, prefix))
}

/// Takes the client's upgrade handle when the request asks to switch protocols; the
/// `Upgrade` value is kept to send on.
fn upgrade_request(parts: &mut http::request::Parts) -> Option<(HeaderValue, OnUpgrade)> {
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let asks = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = parts.headers.get(header::UPGRADE)?.clone();
    if !asks {
        return None;
    }
    let on = parts.extensions.remove::<OnUpgrade>()?;
    Some((protocol, on))
}

/// The fallback service and a server of it, when the primary has none in rotation.
fn fallback<'t>(table: &'t Table, primary: &'t Service) -> Option<(&'t Service, usize)> {
    let service = match primary.fallback.as_ref()? {
        Fallback::Service(i) => &*table.services[*i],
        Fallback::Own(s) => s,
    };
    Some((service, service.balance(&[])?))
}

/// Takes a slot on the server, waiting in its queue when it is at its connection limit.
async fn admit(service: &Service, server: usize) -> Result<InflightGuard, ProxyError> {
    let state = &service.servers[server].state;
    let limits = &service.limits;
    if limits.max_conn == 0 {
        return Ok(state.start_request());
    }
    state
        .queue_for(limits.max_conn, limits.queue, limits.queue_timeout)
        .await
        .ok_or_else(|| ProxyError::QueueFull {
            service: service.name.to_string(),
            server: service.servers[server].url.to_string(),
        })
}

fn respond(
    mut response: Response<Incoming>,
    guard: InflightGuard,
    conn: Option<Pooled>,
    service: &Service,
    choice: Choice,
    upgrade: Option<(HeaderValue, OnUpgrade)>,
    budget: Arc<super::Budget>,
) -> Response<Body> {
    let conn = conn.filter(|c| c.keep_alive(&response));
    let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    let tunnel = match upgrade {
        Some((_, client)) if switching => Some((client, hyper::upgrade::on(&mut response))),
        _ => None,
    };
    let (mut parts, body) = response.into_parts();
    let backend_upgrade = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some((client, backend)) = tunnel {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = backend_upgrade {
            parts.headers.insert(header::UPGRADE, protocol);
        }
        let name = service.name.clone();
        tokio::spawn(async move {
            // The server stays busy for as long as the tunnel is open.
            let _guard = guard;
            match tokio::try_join!(client, backend) {
                Ok((client, backend)) => {
                    let mut client = TokioIo::new(client);
                    let mut backend = TokioIo::new(backend);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                        tracing::debug!(service = %name, error = %e, "upgraded connection ended with an error");
                    }
                }
                Err(e) => tracing::debug!(service = %name, error = %e, "upgrade did not complete"),
            }
        });
        if choice.needs_cookie {
            if let Some(cookie) = service.set_cookie(choice.server) {
                parts.headers.append(header::SET_COOKIE, cookie);
            }
        }
        return Response::from_parts(parts, Either::Right(http_body_util::Full::default()));
    }
    if choice.needs_cookie {
        if let Some(cookie) = service.set_cookie(choice.server) {
            parts.headers.append(header::SET_COOKIE, cookie);
        }
    }
    let body = TrackedBody::new(body, guard, conn);
    Response::from_parts(parts, Either::Left(Metered::new(body, budget, None)))
}
