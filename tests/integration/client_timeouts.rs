//! Client connections that hold a place without using it are closed: one slow over its
//! request head (slowloris; HAProxy's `timeout http-request`), one idle between requests
//! (HAProxy's `timeout http-keep-alive`, Traefik's `idleTimeout`), over HTTP/1 and HTTP/2.
//! A request in flight is never cut, however long its backend takes.
//!
//! The timeouts are short so the tests are quick; every check of a closing polls for it,
//! and the only fixed waits are those proving that something did *not* happen.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::certs::Ca;
use support::edge::{spawn_edge, EdgeOptions};
use support::{servers, spawn_backend, spawn_limpet, within, Conn, Limpet, Options, Req};

async fn limpet_with(head: Duration, idle: Duration, backend_url: &str) -> Limpet {
    let mut options = Options::default();
    options.proxy.client_header_timeout = Some(head);
    options.proxy.client_idle_timeout = Some(idle);
    spawn_limpet(
        &format!(
            "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
            servers(&[backend_url])
        ),
        options,
    )
    .await
}

/// Reads until limpet closes the connection (end of stream or a reset).
async fn closed_by_limpet(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    within("limpet to close the connection", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_nothing_is_closed_after_the_header_timeout() {
    let app = spawn_backend("app").await;
    let limpet = limpet_with(
        Duration::from_millis(300),
        Duration::from_secs(60),
        &app.url,
    )
    .await;
    let mut stream = TcpStream::connect(limpet.addr).await.unwrap();
    closed_by_limpet(&mut stream).await;
    assert_eq!(app.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_byte_by_byte_is_cut_at_the_header_timeout() {
    let app = spawn_backend("app").await;
    let limpet = limpet_with(
        Duration::from_millis(400),
        Duration::from_secs(60),
        &app.url,
    )
    .await;
    let stream = TcpStream::connect(limpet.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // The client keeps sending, so the connection is never idle; only its head is late.
    let trickle = tokio::spawn(async move {
        let mut head = b"GET / HTTP/1.1\r\nHost: app.test\r\n".to_vec();
        head.extend(std::iter::repeat_n(b"X-Slow: 1\r\n".as_slice(), 1000).flatten());
        for byte in head {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    support::closed_unanswered(&mut reader, "limpet to cut the slow head").await;
    trickle.abort();
    assert_eq!(app.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_lasts_the_idle_timeout_not_the_header_timeout() {
    let app = spawn_backend("app").await;
    let limpet = limpet_with(
        Duration::from_millis(200),
        Duration::from_millis(1500),
        &app.url,
    )
    .await;
    let mut conn = Conn::open(limpet.addr).await;
    assert_eq!(conn.get("/one").await.status, 200);
    // Idle for more than the header timeout: the connection is still good.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!conn.is_closed(), "closed by the header timeout while idle");
    assert_eq!(conn.get("/two").await.status, 200);
    within("limpet to close the idle connection", async {
        while !conn.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(app.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_response_is_not_cut_by_either_timeout() {
    let app = spawn_backend("app").await;
    let limpet = limpet_with(
        Duration::from_millis(200),
        Duration::from_millis(200),
        &app.url,
    )
    .await;
    let mut conn = Conn::open(limpet.addr).await;
    let reply = async { conn.send(Req::get("/held")).await };
    let release = async {
        app.arrival().await;
        // Five times both timeouts with nothing on the client connection.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        app.open_gate();
    };
    let (reply, ()) = tokio::join!(reply, release);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "held response from app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_too() {
    let app = spawn_backend("app").await;
    let ca = Ca::new("client-timeouts");
    let leaf = ca.server("edge", &["app.test"]);
    let mut options = EdgeOptions::new(vec![leaf.files]);
    options.h2c = true;
    options.proxy.client_header_timeout = Some(Duration::from_millis(200));
    options.proxy.client_idle_timeout = Some(Duration::from_millis(800));
    let edge = spawn_edge(
        &format!(
            "[services.app]\nrule = \"Host:app.test\"\nservers = {}\n",
            servers(&[&app.url])
        ),
        options,
    )
    .await;
    let stream = TcpStream::connect(edge.plain).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    let driver = tokio::spawn(connection);
    let request = http::Request::builder()
        .uri("http://app.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = within("an h2c answer", sender.send_request(request))
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    drop(response);
    // HTTP/2 has no head clock: quiet for longer than the header timeout, still open.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!sender.is_closed(), "closed by the header timeout");
    within("limpet to close the idle HTTP/2 connection", driver)
        .await
        .expect("the connection task")
        .ok();
    assert!(sender.is_closed());
}
