//! Graceful shutdown: when the shutdown future fires, limpet stops accepting connections
//! but lets the requests already in flight finish.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use support::{
    eventually, servers, spawn_backend, spawn_limpet, within, Backend, Limpet, Options, Req,
};

/// limpet in front of `app` with a grace period far beyond the test's patience:
/// `stopped` only returns in time if limpet closes idle connections instead of waiting the
/// grace period out.
async fn limpet_with_long_grace(app: &Backend, h2c: bool) -> Limpet {
    let mut options = Options::default();
    options.proxy.grace_period = Duration::from_secs(600);
    options.h2c = h2c;
    spawn_limpet(
        &format!(
            "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
            servers(&[&app.url])
        ),
        options,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_completes_and_new_connections_are_refused() {
    let app = spawn_backend("app").await;
    let mut limpet = limpet_with_long_grace(&app, false).await;
    // An idle keep-alive connection must not hold the shutdown up.
    let mut idle = limpet.connect().await;
    assert_eq!(idle.get("/").await.backend(), "app");

    let mut conn = limpet.connect().await;
    let in_flight = tokio::spawn(async move { conn.send(Req::get("/held")).await });
    app.arrival().await;

    limpet.begin_shutdown();
    let addr = limpet.addr;
    let refused = tokio::spawn(async move {
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                // A connection still in the backlog when the listener closed is reset.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("unexpected connect error: {e}"),
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    within("new connections to be refused", refused)
        .await
        .expect("probe task");
    assert!(
        !in_flight.is_finished(),
        "the held request cannot have finished: the backend still holds it"
    );

    app.open_gate();
    let reply = within("the in-flight request", in_flight)
        .await
        .expect("client task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "held response from app");
    // The port closed after the stop began, and the gate opened after that.
    assert_eq!(
        reply.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "a response written during the shutdown says that the connection closes"
    );
    limpet.stopped().await;
    eventually("the idle connection to be closed", || idle.is_closed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_are_closed_at_once() {
    let app = spawn_backend("app").await;
    let mut limpet = limpet_with_long_grace(&app, false).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut conn = limpet.connect().await;
        assert_eq!(conn.get("/").await.status, 200);
        idle.push(conn);
    }
    // Idle long enough to be parked: limpet holds only their sockets.
    tokio::time::sleep(limpet::proxy::PARK_AFTER * 6).await;
    limpet.begin_shutdown();
    limpet.stopped().await;
    for conn in &idle {
        eventually("a parked connection to be closed", || conn.is_closed()).await;
    }
}

/// An HTTP/2 connection is never parked: only its own task, told of the stop, can end it,
/// with a GOAWAY that lets its open stream finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_finishes_its_stream_then_goes_away() {
    let app = spawn_backend("app").await;
    let mut limpet = limpet_with_long_grace(&app, true).await;
    let stream = TcpStream::connect(limpet.addr).await.expect("connect");
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    // Held to the end: a client with no sender left would close the connection itself.
    let kept = sender.clone();
    let request = Request::get(format!("http://{}/held", limpet.addr))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let in_flight = tokio::spawn(async move {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    });
    app.arrival().await;

    limpet.begin_shutdown();
    app.open_gate();
    let (status, body) = within("the in-flight stream", in_flight)
        .await
        .expect("client task")
        .expect("the stream's response");
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"held response from app");
    within("limpet to end the connection", connection)
        .await
        .expect("connection task")
        .expect("a clean end after GOAWAY");
    limpet.stopped().await;
    drop(kept);
}
