//! Idle HTTP/1.1 client connections are parked: limpet drops its HTTP state and buffers and
//! keeps only the socket (see `proxy::parking`). A client must never notice: the next
//! request on the connection is served as before, over plain TCP and TLS, pipelined or not,
//! and the request-head timeout still covers a head begun after a park.
//!
//! The pauses are a few times limpet's park delay, so that the connection is parked
//! for certain when the client speaks again.

use crate::support;

use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::certs::Ca;
use support::edge::{client_config, get, spawn_edge, tls_connect, EdgeOptions};
use support::{servers, spawn_backend, spawn_limpet, within, Conn, Options};

/// Long enough for an idle connection to be parked.
fn parked() -> Duration {
    limpet::proxy::PARK_AFTER * 6
}

fn one_service(url: &str, rule: &str) -> String {
    format!(
        "[services.app]\nrule = \"{rule}\"\nservers = {}\n",
        servers(&[url])
    )
}

/// Reads complete responses off a raw connection until `count` have arrived; returns
/// their status lines. The backend's responses all carry a Content-Length.
async fn read_responses(stream: &mut TcpStream, count: usize) -> Vec<String> {
    let mut data = Vec::new();
    let mut statuses = Vec::new();
    let mut buf = [0u8; 4096];
    within("the responses", async {
        while statuses.len() < count {
            let n = stream.read(&mut buf).await.expect("reading");
            assert!(n > 0, "limpet closed the connection after {statuses:?}");
            data.extend_from_slice(&buf[..n]);
            while let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().unwrap())
                    })
                    .expect("a Content-Length");
                if data.len() < end + 4 + length {
                    break;
                }
                statuses.push(head.lines().next().unwrap().to_owned());
                data.drain(..end + 4 + length);
            }
        }
    })
    .await;
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_serves_single_and_pipelined_requests() {
    let app = spawn_backend("app").await;
    let limpet = spawn_limpet(&one_service(&app.url, "PathPrefix:/"), Options::default()).await;

    let mut conn = Conn::open(limpet.addr).await;
    for i in 0..3 {
        let reply = conn.get(&format!("/visit/{i}")).await;
        assert_eq!((reply.status.as_u16(), reply.backend()), (200, "app"));
        tokio::time::sleep(parked()).await;
        assert!(!conn.is_closed(), "a parked connection was closed");
    }

    // Two requests in one write, after a park and again right away.
    let mut raw = TcpStream::connect(limpet.addr).await.unwrap();
    let two = b"GET /a HTTP/1.1\r\nHost: app.test\r\n\r\nGET /b HTTP/1.1\r\nHost: app.test\r\n\r\n";
    raw.write_all(two).await.unwrap();
    assert_eq!(read_responses(&mut raw, 2).await, ["HTTP/1.1 200 OK"; 2]);
    tokio::time::sleep(parked()).await;
    raw.write_all(two).await.unwrap();
    raw.write_all(b"GET /c HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_responses(&mut raw, 3).await, ["HTTP/1.1 200 OK"; 3]);
    assert_eq!(app.request_count(), 3 + 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_tls_connection_serves_its_next_request() {
    let app = spawn_backend("app").await;
    let ca = Ca::new("parking");
    let leaf = ca.server("edge", &["app.test"]);
    let edge = spawn_edge(
        &one_service(&app.url, "Host:app.test"),
        EdgeOptions::new(vec![leaf.files]),
    )
    .await;
    let tls = tls_connect(edge.tls, client_config(&ca, &[b"http/1.1"]), "app.test")
        .await
        .expect("a TLS connection");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1 handshake");
    tokio::spawn(connection);
    for i in 0..3 {
        let response = within(
            "response headers",
            sender.send_request(get("app.test", &format!("/tls/{i}"))),
        )
        .await
        .unwrap_or_else(|e| panic!("request {i} after a park: {e}"));
        assert_eq!(response.status(), 200);
        let body = within("the body", response.into_body().collect())
            .await
            .expect("the whole body")
            .to_bytes();
        assert!(!body.is_empty());
        tokio::time::sleep(parked()).await;
    }
    assert_eq!(app.request_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_begun_after_a_park_is_still_cut_at_the_header_timeout() {
    let app = spawn_backend("app").await;
    let mut options = Options::default();
    options.proxy.client_header_timeout = Some(Duration::from_millis(400));
    options.proxy.client_idle_timeout = Some(Duration::from_secs(60));
    let limpet = spawn_limpet(&one_service(&app.url, "PathPrefix:/"), options).await;

    let mut raw = TcpStream::connect(limpet.addr).await.unwrap();
    raw.write_all(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_responses(&mut raw, 1).await, ["HTTP/1.1 200 OK"]);
    tokio::time::sleep(parked()).await;
    // Half a head, then nothing: the connection must be cut, parked or not.
    raw.write_all(b"GET /second HTTP/1.1\r\nHost: app")
        .await
        .unwrap();
    support::closed_unanswered(&mut raw, "limpet to cut the unfinished head").await;
    assert_eq!(app.request_count(), 1);
}
