//! gRPC through limpet with real tonic peers: a tonic server on 127.0.0.1 speaking h2c, limpet
//! in front with its TLS entrypoint and `protocol = "h2c"`, and a tonic client connecting
//! over TLS with the test CA and a server name, as pymilvus does with `secure=True` and
//! `server_name`. Unary, server-streaming and bidirectional calls, error statuses whose
//! trailers must arrive intact, deadlines, stickiness by cookie or by a metadata key, and a
//! TLS backend (`protocol = "h2"`).
//!
//! The messages are written by hand with prost's derive and the service is dispatched by
//! path as tonic's generated code does, so no `protoc` is needed.

use crate::support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderMap;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::codec::ProstCodec;
use tonic::codegen::{BoxFuture, BoxStream, Service};
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status};

use support::certs::{Ca, Leaf};
use support::edge::{spawn_edge, Edge, EdgeOptions};
use support::within;

#[derive(Clone, PartialEq, prost::Message)]
struct SayRequest {
    #[prost(string, tag = "1")]
    text: String,
    /// How long the work takes.
    #[prost(uint32, tag = "2")]
    work_ms: u32,
    /// Answer with this status code instead, when not 0.
    #[prost(int32, tag = "3")]
    fail_code: i32,
    #[prost(string, tag = "4")]
    fail_message: String,
    /// Do the work even past the deadline (the client gives up first).
    #[prost(bool, tag = "5")]
    ignore_deadline: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SayReply {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(string, tag = "2")]
    backend: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CountRequest {
    #[prost(uint32, tag = "1")]
    count: u32,
    /// After this many messages, end with an error status instead (0: never).
    #[prost(uint32, tag = "2")]
    fail_after: u32,
    /// Time between messages (0: all at once).
    #[prost(uint32, tag = "3")]
    interval_ms: u32,
}

const SAY: &str = "/test.Echo/Say";
const COUNT: &str = "/test.Echo/Count";
const CHAT: &str = "/test.Echo/Chat";

/// Where the server's record of a call keeps the `:authority` it arrived with.
const SEEN_AUTHORITY: &str = "x-test-seen-authority";

/// The tonic server: answers with its name, records each call's metadata, and reports
/// calls that were cancelled before they finished.
#[derive(Clone)]
struct Echo {
    name: Arc<str>,
    calls: Arc<Mutex<Vec<HeaderMap>>>,
    cancelled: mpsc::UnboundedSender<String>,
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

impl Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let echo = self.clone();
        Box::pin(async move {
            // The call's `:authority` is kept with its metadata, under a name no client sends.
            let mut seen = req.headers().clone();
            if let Some(authority) = req.uri().authority() {
                seen.insert(
                    SEEN_AUTHORITY,
                    authority.as_str().parse().expect("a header-safe authority"),
                );
            }
            echo.calls.lock().unwrap().push(seen);
            Ok(match req.uri().path() {
                SAY => {
                    let codec = ProstCodec::<SayReply, SayRequest>::default();
                    tonic::server::Grpc::new(codec).unary(Say(echo), req).await
                }
                COUNT => {
                    let codec = ProstCodec::<SayReply, CountRequest>::default();
                    let mut grpc = tonic::server::Grpc::new(codec);
                    grpc.server_streaming(Count(echo), req).await
                }
                CHAT => {
                    let codec = ProstCodec::<SayReply, SayRequest>::default();
                    tonic::server::Grpc::new(codec)
                        .streaming(Chat(echo), req)
                        .await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// Sends the call's text to the test when dropped unfinished: limpet passed the
/// cancellation on.
struct CancelGuard(Option<(mpsc::UnboundedSender<String>, String)>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some((tx, text)) = self.0.take() {
            let _ = tx.send(text);
        }
    }
}

struct Say(Echo);

impl tonic::server::UnaryService<SayRequest> for Say {
    type Response = SayReply;
    type Future = BoxFuture<Response<SayReply>, Status>;

    fn call(&mut self, request: Request<SayRequest>) -> Self::Future {
        let echo = self.0.clone();
        Box::pin(async move {
            let deadline = request
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_grpc_timeout);
            let msg = request.into_inner();
            if msg.fail_code != 0 {
                let mut trailers = MetadataMap::new();
                trailers.insert("x-detail", "42".parse().unwrap());
                return Err(Status::with_metadata(
                    Code::from(msg.fail_code),
                    msg.fail_message,
                    trailers,
                ));
            }
            let work = Duration::from_millis(msg.work_ms.into());
            // As servers that check their remaining time do: work that cannot finish
            // before the deadline the client set is refused at once.
            if let Some(deadline) = deadline.filter(|d| *d < work && !msg.ignore_deadline) {
                return Err(Status::deadline_exceeded(format!(
                    "work takes {} ms, deadline in {} ms",
                    work.as_millis(),
                    deadline.as_millis()
                )));
            }
            let mut guard = CancelGuard(Some((echo.cancelled.clone(), msg.text.clone())));
            tokio::time::sleep(work).await;
            guard.0 = None;
            Ok(Response::new(SayReply {
                text: msg.text,
                backend: echo.name.to_string(),
            }))
        })
    }
}

struct Count(Echo);

impl tonic::server::ServerStreamingService<CountRequest> for Count {
    type Response = SayReply;
    type ResponseStream = BoxStream<SayReply>;
    type Future = BoxFuture<Response<BoxStream<SayReply>>, Status>;

    fn call(&mut self, request: Request<CountRequest>) -> Self::Future {
        let name = self.0.name.to_string();
        Box::pin(async move {
            let msg = request.into_inner();
            let mut items = Vec::new();
            for i in 0..msg.count {
                if msg.fail_after != 0 && i == msg.fail_after {
                    // A status ends the stream: nothing follows it.
                    items.push(Err(Status::resource_exhausted(format!(
                        "stopped after {i}"
                    ))));
                    break;
                }
                items.push(Ok(SayReply {
                    text: i.to_string(),
                    backend: name.clone(),
                }));
            }
            let interval = Duration::from_millis(msg.interval_ms.into());
            let paced = futures_util::StreamExt::then(
                futures_util::stream::iter(items.into_iter().enumerate()),
                move |(i, item)| async move {
                    if i > 0 {
                        tokio::time::sleep(interval).await;
                    }
                    item
                },
            );
            let stream: BoxStream<SayReply> = Box::pin(paced);
            Ok(Response::new(stream))
        })
    }
}

/// Bidirectional: each message is answered as it arrives.
struct Chat(Echo);

// tonic's `Status` is the error of every stream item, large as it is.
#[allow(clippy::result_large_err)]
impl tonic::server::StreamingService<SayRequest> for Chat {
    type Response = SayReply;
    type ResponseStream = BoxStream<SayReply>;
    type Future = BoxFuture<Response<BoxStream<SayReply>>, Status>;

    fn call(&mut self, request: Request<tonic::Streaming<SayRequest>>) -> Self::Future {
        let name = self.0.name.to_string();
        Box::pin(async move {
            let incoming = request.into_inner();
            let replies = futures_util::StreamExt::map(incoming, move |item| {
                item.map(|msg| SayReply {
                    text: format!("re: {}", msg.text),
                    backend: name.clone(),
                })
            });
            let stream: BoxStream<SayReply> = Box::pin(replies);
            Ok(Response::new(stream))
        })
    }
}

/// The grpc-timeout header's value (`<digits><unit>`), as a duration.
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

struct Server {
    name: String,
    url: String,
    calls: Arc<Mutex<Vec<HeaderMap>>>,
    cancelled: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    fn last_call(&self) -> HeaderMap {
        self.calls.lock().unwrap().last().cloned().expect("a call")
    }

    fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Waits for a call to be cancelled, and returns its text.
    async fn cancellation(&self) -> String {
        let mut rx = self.cancelled.lock().await;
        within("the server to see the call cancelled", rx.recv())
            .await
            .expect("the server runs")
    }
}

async fn spawn_server(name: &str) -> Server {
    spawn_server_with(name, None).await
}

/// A tonic server; with `tls`, it serves gRPC over TLS (h2 by ALPN) with that certificate.
async fn spawn_server_with(name: &str, tls: Option<&Leaf>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let echo = Echo {
        name: name.into(),
        calls: Arc::default(),
        cancelled: tx,
    };
    let calls = Arc::clone(&echo.calls);
    let mut builder = tonic::transport::Server::builder();
    if let Some(leaf) = tls {
        let identity = tonic::transport::Identity::from_pem(&leaf.cert_pem, &leaf.key_pem);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .expect("server TLS settings");
    }
    let task = tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = builder
            .add_service(echo)
            .serve_with_incoming(incoming)
            .await;
    });
    Server {
        name: name.to_owned(),
        url: format!("http://{addr}"),
        calls,
        cancelled: tokio::sync::Mutex::new(rx),
        task,
    }
}

/// limpet with its TLS entrypoint, a certificate for `grpc.test`, and the service with
/// `extra` settings (TOML lines) in front of `servers`.
async fn limpet_for(ca: &Ca, servers: &[&Server], extra: &str) -> Edge {
    let leaf = ca.server("grpc", &["grpc.test"]);
    let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
    // h2c unless `extra` names the protocol itself.
    let protocol = if extra.contains("protocol") {
        ""
    } else {
        "protocol = \"h2c\"\n"
    };
    spawn_edge(
        &format!(
            "[services.grpc]\nrule = \"Host:grpc.test\"\n{protocol}{extra}\nservers = {}\n",
            support::servers(&urls)
        ),
        EdgeOptions::new(vec![leaf.files]),
    )
    .await
}

/// A tonic channel to limpet over TLS: it dials 127.0.0.1, asks for `grpc.test` by SNI,
/// verifies the certificate for that name against the test CA, and sends it as
/// `:authority`.
async fn channel(edge: &Edge, ca: &Ca) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("grpc.test");
    let endpoint = Endpoint::from_shared(format!("https://{}", edge.tls))
        .unwrap()
        .origin("https://grpc.test".parse().unwrap())
        .tls_config(tls)
        .expect("TLS settings");
    within("the channel to connect", endpoint.connect())
        .await
        .expect("a TLS connection to limpet")
}

async fn say(
    channel: &Channel,
    request: Request<SayRequest>,
) -> Result<Response<SayReply>, Status> {
    let mut client = tonic::client::Grpc::new(channel.clone());
    within("the client to be ready", client.ready())
        .await
        .expect("ready");
    within(
        "a unary call",
        client.unary(request, SAY.parse().unwrap(), ProstCodec::default()),
    )
    .await
}

fn text(t: &str) -> SayRequest {
    SayRequest {
        text: t.into(),
        ..SayRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_server_streaming_calls_over_tls() {
    let ca = Ca::new("grpc-calls");
    let server = spawn_server("s1").await;
    let edge = limpet_for(&ca, &[&server], "").await;
    let channel = channel(&edge, &ca).await;

    let reply = say(&channel, Request::new(text("hello")))
        .await
        .expect("OK");
    assert_eq!(reply.get_ref().text, "hello");
    assert_eq!(reply.get_ref().backend, "s1");
    let seen = server.last_call();
    assert_eq!(seen["content-type"], "application/grpc");
    assert_eq!(seen["te"], "trailers", "gRPC needs TE: trailers end to end");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen[SEEN_AUTHORITY], "grpc.test", "the client's authority");

    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    let response = within(
        "a streaming call",
        client.server_streaming(
            Request::new(CountRequest {
                count: 5,
                fail_after: 0,
                interval_ms: 0,
            }),
            COUNT.parse().unwrap(),
            ProstCodec::<CountRequest, SayReply>::default(),
        ),
    )
    .await
    .expect("the stream starts");
    let mut stream = response.into_inner();
    let mut got = Vec::new();
    while let Some(item) = within("a message", stream.message())
        .await
        .expect("no error")
    {
        got.push(item.text);
    }
    assert_eq!(got, ["0", "1", "2", "3", "4"]);
    let trailers = within("the trailers", stream.trailers())
        .await
        .expect("trailers");
    assert!(trailers.is_some(), "the stream ended with trailers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_and_their_trailers_arrive_intact() {
    let ca = Ca::new("grpc-errors");
    let server = spawn_server("s1").await;
    let edge = limpet_for(&ca, &[&server], "").await;
    let channel = channel(&edge, &ca).await;

    // A trailers-only answer: grpc-status, grpc-message (percent-encoded on the wire, so
    // spaces and non-ASCII must survive) and the application's own trailer.
    let message = "no widget named “x” — 100% gone";
    let status = say(
        &channel,
        Request::new(SayRequest {
            fail_code: Code::NotFound as i32,
            fail_message: message.into(),
            ..text("x")
        }),
    )
    .await
    .expect_err("an error status");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), message);
    assert_eq!(status.metadata().get("x-detail").unwrap(), "42");

    // An error after messages: the status comes in trailers behind the data.
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    let mut stream = client
        .server_streaming(
            Request::new(CountRequest {
                count: 10,
                fail_after: 3,
                interval_ms: 0,
            }),
            COUNT.parse().unwrap(),
            ProstCodec::<CountRequest, SayReply>::default(),
        )
        .await
        .expect("the stream starts")
        .into_inner();
    let mut got = Vec::new();
    let status = loop {
        match within("a message", stream.message()).await {
            Ok(Some(item)) => got.push(item.text),
            Ok(None) => panic!("the stream ended without its error: {got:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(got, ["0", "1", "2"]);
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "stopped after 3");

    // The connection is still good.
    assert!(say(&channel, Request::new(text("again"))).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_reach_the_server_and_an_expired_call_is_cancelled_there() {
    let ca = Ca::new("grpc-deadline");
    let server = spawn_server("s1").await;
    let edge = limpet_for(&ca, &[&server], "").await;
    let channel = channel(&edge, &ca).await;

    // The deadline travels as grpc-timeout; the server refuses work that cannot make it.
    let mut request = Request::new(SayRequest {
        work_ms: 60_000,
        ..text("slow")
    });
    request.set_timeout(Duration::from_secs(8));
    let status = say(&channel, request).await.expect_err("past the deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().starts_with("work takes 60000 ms"),
        "{status:?}"
    );
    let timeout = server.last_call()["grpc-timeout"]
        .to_str()
        .unwrap()
        .to_owned();
    let passed = parse_grpc_timeout(&timeout).expect("a valid grpc-timeout");
    assert!(
        passed <= Duration::from_secs(8) && passed > Duration::ZERO,
        "{timeout}"
    );

    // A server that ignores its deadline: the client gives up when it passes, and limpet
    // cancels the call on the server rather than leaving it running.
    let mut request = Request::new(SayRequest {
        work_ms: 60_000,
        ignore_deadline: true,
        ..text("abandoned")
    });
    request.set_timeout(Duration::from_millis(300));
    let status = say(&channel, request)
        .await
        .expect_err("the client gave up");
    // tonic reports its own expired deadline as Cancelled ("Timeout expired"); other
    // clients say DeadlineExceeded.
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert_eq!(server.cancellation().await, "abandoned");
    assert!(say(&channel, Request::new(text("after"))).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_the_cookie_stays_on_its_server() {
    let ca = Ca::new("grpc-sticky");
    let (s1, s2) = (spawn_server("s1").await, spawn_server("s2").await);
    let edge = limpet_for(&ca, &[&s1, &s2], "sticky = true").await;
    let channel = channel(&edge, &ca).await;

    let first = say(&channel, Request::new(text("first"))).await.unwrap();
    let pinned = first.get_ref().backend.clone();
    let cookie = first
        .metadata()
        .get("set-cookie")
        .expect("the sticky cookie comes with the response headers")
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    for i in 0..10 {
        let mut request = Request::new(text(&format!("call {i}")));
        request
            .metadata_mut()
            .insert("cookie", cookie.parse().unwrap());
        let reply = say(&channel, request).await.unwrap();
        assert_eq!(reply.get_ref().backend, pinned, "call {i}");
        assert!(
            reply.metadata().get("set-cookie").is_none(),
            "a pinned client gets no new cookie"
        );
    }
    // Without the cookie, round robin moves on.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(
            say(&channel, Request::new(text("free")))
                .await
                .unwrap()
                .get_ref()
                .backend
                .clone(),
        );
    }
    assert_eq!(seen.len(), 2, "both servers serve clients without a cookie");
    assert_eq!(s1.call_count() + s2.call_count(), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_key_pins_clients_that_keep_no_cookie() {
    let ca = Ca::new("grpc-affinity");
    let (s1, s2) = (spawn_server("s1").await, spawn_server("s2").await);
    let edge = limpet_for(&ca, &[&s1, &s2], "affinity_header = \"x-session\"").await;
    let channel = channel(&edge, &ca).await;

    let call = |session: String| {
        let channel = channel.clone();
        async move {
            let mut request = Request::new(text(&session));
            request
                .metadata_mut()
                .insert("x-session", session.parse().unwrap());
            say(&channel, request)
                .await
                .unwrap()
                .get_ref()
                .backend
                .clone()
        }
    };
    let mut spread = std::collections::BTreeSet::new();
    // Enough sessions that all landing on one server by chance is not a worry (2^-23).
    for s in 0..24 {
        let session = format!("session-{s}");
        let home = call(session.clone()).await;
        for _ in 0..3 {
            assert_eq!(call(session.clone()).await, home, "{session} moved");
        }
        spread.insert(home);
    }
    assert_eq!(
        spread.len(),
        2,
        "different sessions spread over both servers"
    );
    assert_eq!(s1.name, "s1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_on_the_plain_entrypoint_carries_grpc_too() {
    let ca = Ca::new("grpc-plain");
    let server = spawn_server("s1").await;
    let leaf = ca.server("grpc", &["grpc.test"]);
    let mut options = EdgeOptions::new(vec![leaf.files]);
    options.h2c = true;
    let edge = spawn_edge(
        &format!(
            "[services.grpc]\nrule = \"Host:grpc.test\"\nprotocol = \"h2c\"\nservers = {}\n",
            support::servers(&[&server.url])
        ),
        options,
    )
    .await;
    let channel = Endpoint::from_shared(format!("http://{}", edge.plain))
        .unwrap()
        .origin("http://grpc.test".parse().unwrap())
        .connect()
        .await
        .expect("an h2c connection");
    let reply = say(&channel, Request::new(text("plain"))).await.unwrap();
    assert_eq!(reply.get_ref().backend, "s1");
    assert_eq!(server.last_call()[SEEN_AUTHORITY], "grpc.test");
    assert_eq!(server.last_call()["x-forwarded-proto"], "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_streaming_is_full_duplex() {
    let ca = Ca::new("grpc-chat");
    let server = spawn_server("s1").await;
    let edge = limpet_for(&ca, &[&server], "").await;
    let channel = channel(&edge, &ca).await;

    let (tx, rx) = mpsc::unbounded_channel::<SayRequest>();
    let outgoing =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    tx.send(text("one")).unwrap();
    let mut replies = within(
        "the call to start",
        client.streaming(
            Request::new(outgoing),
            CHAT.parse().unwrap(),
            ProstCodec::<SayRequest, SayReply>::default(),
        ),
    )
    .await
    .expect("the stream starts")
    .into_inner();
    // Ping-pong: each message is sent only after the previous answer came back, which a
    // proxy holding either direction until the other ends would never allow.
    for i in 0..20 {
        let reply = within("an answer", replies.message())
            .await
            .expect("no error")
            .expect("an answer");
        let expected = if i == 0 {
            "one".to_owned()
        } else {
            format!("msg {i}")
        };
        assert_eq!(reply.text, format!("re: {expected}"));
        tx.send(text(&format!("msg {}", i + 1))).unwrap();
    }
    drop(tx);
    let last = within("the last answer", replies.message()).await.unwrap();
    assert_eq!(last.map(|r| r.text).as_deref(), Some("re: msg 20"));
    assert!(within("the end", replies.message())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_to_a_tls_backend_with_protocol_h2() {
    let ca = Ca::new("grpc-h2");
    let backend_leaf = ca.server("backend", &["127.0.0.1"]);
    let server = spawn_server_with("s1", Some(&backend_leaf)).await;
    let edge = limpet_for(
        &ca,
        &[&server],
        &format!(
            "protocol = \"h2\"\nbackend_tls = {{ ca = \"{}\" }}",
            ca.pem_path.display()
        ),
    )
    .await;
    let channel = channel(&edge, &ca).await;
    let reply = say(&channel, Request::new(text("sealed")))
        .await
        .expect("OK");
    assert_eq!(reply.get_ref().backend, "s1");
    assert_eq!(
        server.last_call()[SEEN_AUTHORITY],
        "grpc.test",
        "the client's authority, not the backend's address"
    );
    let status = say(
        &channel,
        Request::new(SayRequest {
            fail_code: Code::PermissionDenied as i32,
            fail_message: "not you".into(),
            ..text("x")
        }),
    )
    .await
    .expect_err("an error");
    assert_eq!(
        (status.code(), status.message()),
        (Code::PermissionDenied, "not you")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_may_carry_more_than_the_largest_request_body() {
    let ca = Ca::new("grpc-long");
    let server = spawn_server("s1").await;
    let leaf = ca.server("grpc", &["grpc.test"]);
    let mut options = EdgeOptions::new(vec![leaf.files]);
    options.proxy.max_body = Some(256 * 1024);
    let edge = spawn_edge(
        &format!(
            "[services.grpc]\nrule = \"Host:grpc.test\"\nprotocol = \"h2c\"\nservers = {}\n",
            support::servers(&[&server.url])
        ),
        options,
    )
    .await;
    let channel = channel(&edge, &ca).await;

    // 16 messages of 64 KiB: four times the limit over the life of one call, each message
    // far below it.
    let (tx, rx) = mpsc::unbounded_channel::<SayRequest>();
    let outgoing =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    let chunk = "x".repeat(64 * 1024);
    tx.send(text(&chunk)).unwrap();
    let mut replies = within(
        "the call to start",
        client.streaming(
            Request::new(outgoing),
            CHAT.parse().unwrap(),
            ProstCodec::<SayRequest, SayReply>::default(),
        ),
    )
    .await
    .expect("the stream starts")
    .into_inner();
    for i in 0..16 {
        let reply = within("an answer", replies.message())
            .await
            .unwrap_or_else(|s| panic!("message {i}: {s:?}"))
            .expect("an answer");
        assert_eq!(reply.text.len(), chunk.len() + 4);
        tx.send(text(&chunk)).unwrap();
    }
}

/// limpet in front of one h2c tonic server, waiting `header_timeout` for response headers.
async fn limpet_with_header_timeout(ca: &Ca, server: &Server, header_timeout: Duration) -> Edge {
    let leaf = ca.server("grpc", &["grpc.test"]);
    let mut options = EdgeOptions::new(vec![leaf.files]);
    options.proxy.response_header_timeout = header_timeout;
    spawn_edge(
        &format!(
            "[services.grpc]\nrule = \"Host:grpc.test\"\nprotocol = \"h2c\"\nservers = {}\n",
            support::servers(&[&server.url])
        ),
        options,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlasting_the_response_header_timeout_is_not_cut() {
    let ca = Ca::new("grpc-long-stream");
    let server = spawn_server("s1").await;
    let edge = limpet_with_header_timeout(&ca, &server, Duration::from_millis(300)).await;
    let channel = channel(&edge, &ca).await;
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    // Headers at once, then eight messages over about a second: the timeout is for the
    // headers, not for the call.
    let mut stream = within(
        "the stream to start",
        client.server_streaming(
            Request::new(CountRequest {
                count: 8,
                fail_after: 0,
                interval_ms: 150,
            }),
            COUNT.parse().unwrap(),
            ProstCodec::<CountRequest, SayReply>::default(),
        ),
    )
    .await
    .expect("the stream starts")
    .into_inner();
    let mut got = Vec::new();
    while let Some(item) = within("a message", stream.message())
        .await
        .expect("no error")
    {
        got.push(item.text);
    }
    assert_eq!(got, ["0", "1", "2", "3", "4", "5", "6", "7"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_deadline_bounds_the_wait_for_headers_instead_of_the_timeout() {
    let ca = Ca::new("grpc-deadline-wait");
    let server = spawn_server("s1").await;
    let edge = limpet_with_header_timeout(&ca, &server, Duration::from_millis(300)).await;
    let channel = channel(&edge, &ca).await;

    // A unary call sends its headers with its answer, after the work; the client allows
    // longer than limpet's header timeout, and gets its answer.
    let mut request = Request::new(SayRequest {
        work_ms: 900,
        ..text("patient")
    });
    request.set_timeout(Duration::from_secs(8));
    let reply = say(&channel, request)
        .await
        .expect("answered within the deadline");
    assert_eq!(reply.get_ref().text, "patient");

    // Without a deadline, limpet's header timeout ends the call, with a gRPC status the
    // client can act on, and the server's work is cancelled.
    let status = say(
        &channel,
        Request::new(SayRequest {
            work_ms: 60_000,
            ..text("forever")
        }),
    )
    .await
    .expect_err("cut by the header timeout");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("did not answer within 300 ms"),
        "{status:?}"
    );
    assert_eq!(server.cancellation().await, "forever");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_passed_while_waiting_is_deadline_exceeded() {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use prost::Message as _;

    // A backend that never answers and does not enforce deadlines itself (a tonic server
    // would end the call with its own CANCELLED, racing limpet): an h2c server that only
    // reports the metadata each call arrived with.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived, mut arrivals) = mpsc::unbounded_channel::<HeaderMap>();
    let backend = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    let _ = arrived.send(req.headers().clone());
                    std::future::pending::<Result<http::Response<Full<bytes::Bytes>>, Infallible>>()
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let ca = Ca::new("grpc-deadline-status");
    let leaf = ca.server("grpc", &["grpc.test"]);
    let mut options = EdgeOptions::new(vec![leaf.files]);
    options.h2c = true;
    let edge = spawn_edge(
        &format!(
            "[services.grpc]\nrule = \"Host:grpc.test\"\nprotocol = \"h2c\"\nservers = {}\n",
            support::servers(&[&format!("http://{addr}")])
        ),
        options,
    )
    .await;
    // A bare HTTP/2 client, which, unlike tonic, does not enforce the deadline it sends:
    // what comes back is limpet's answer.
    let stream = tokio::net::TcpStream::connect(edge.plain).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    let message = text("late").encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend((message.len() as u32).to_be_bytes());
    frame.extend(message);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://grpc.test{SAY}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(Full::new(bytes::Bytes::from(frame)))
        .unwrap();
    let response = within("limpet's answer", sender.send_request(request))
        .await
        .expect("an answer");
    let seen = within("the call to reach the backend", arrivals.recv())
        .await
        .expect("the backend runs");
    assert_eq!(
        seen["grpc-timeout"], "300m",
        "the deadline goes on to the server"
    );
    assert_eq!(response.status(), 200, "gRPC failures travel as statuses");
    let headers = response.headers();
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(
        headers["grpc-status"], "4",
        "DEADLINE_EXCEEDED: {headers:?}"
    );
    assert!(
        headers["grpc-message"]
            .to_str()
            .unwrap()
            .contains("deadline (300 ms)"),
        "{headers:?}"
    );
    backend.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_own_header_timeout_replaces_the_global_one() {
    let ca = Ca::new("grpc-service-timeout");
    let server = spawn_server("s1").await;
    let leaf = ca.server("grpc", &["grpc.test"]);
    let mut options = EdgeOptions::new(vec![leaf.files]);
    options.proxy.response_header_timeout = Duration::from_millis(300);
    let edge = spawn_edge(
        &format!(
            "[services.grpc]\nrule = \"Host:grpc.test\"\nprotocol = \"h2c\"\n\
             response_header_timeout = \"5s\"\nservers = {}\n",
            support::servers(&[&server.url])
        ),
        options,
    )
    .await;
    let channel = channel(&edge, &ca).await;
    // No deadline, work longer than the global timeout, shorter than the service's.
    let reply = say(
        &channel,
        Request::new(SayRequest {
            work_ms: 900,
            ..text("slow service")
        }),
    )
    .await
    .expect("answered within the service's timeout");
    assert_eq!(reply.get_ref().text, "slow service");
}
