//! WebSocket through limpet with real peers (tokio-tungstenite on both ends): frames both
//! ways, text and binary, over the plain and the TLS entrypoint; the upgrade request is
//! sticky like any other and its 101 carries the Set-Cookie (Traefik #3343), which then
//! pins the next upgrade to the same backend.

use crate::support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use support::certs::Ca;
use support::edge::{client_config, spawn_edge, tls_connect, EdgeOptions};
use support::{servers, spawn_limpet_with_file, within};

/// A WebSocket echo server that greets each client with its name and echoes every frame.
struct WsBackend {
    name: String,
    url: String,
    /// The upgrade requests' headers, as the backend received them.
    upgrades: Arc<Mutex<Vec<HeaderMap>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn spawn_ws_backend(name: &str) -> WsBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upgrades = Arc::new(Mutex::new(Vec::new()));
    let (seen, own) = (Arc::clone(&upgrades), name.to_owned());
    let task = tokio::spawn(async move {
        let mut sessions = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (seen, own) = (Arc::clone(&seen), own.clone());
            sessions.spawn(async move {
                let header_name = own.clone();
                // The signature is tungstenite's, large error type included.
                #[allow(clippy::result_large_err)]
                let callback = move |req: &Request, mut resp: Response| {
                    seen.lock().unwrap().push(req.headers().clone());
                    resp.headers_mut()
                        .insert("x-backend", header_name.parse().unwrap());
                    Ok::<_, ErrorResponse>(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                if ws
                    .send(Message::text(format!("hello from {own}")))
                    .await
                    .is_err()
                {
                    return;
                }
                while let Some(Ok(message)) = ws.next().await {
                    // tungstenite answers pings and closes by itself.
                    let echo = matches!(message, Message::Text(_) | Message::Binary(_));
                    if echo && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    WsBackend {
        name: name.to_owned(),
        url: format!("http://{addr}"),
        upgrades,
        task,
    }
}

/// Opens a WebSocket over `stream` (to limpet), for `app.test`, with an optional cookie.
async fn open<S>(
    stream: S,
    authority: SocketAddr,
    cookie: Option<&str>,
) -> (WebSocketStream<S>, http::Response<Option<Vec<u8>>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!("ws://{authority}/chat")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("host", "app.test".parse().unwrap());
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", cookie.parse().unwrap());
    }
    within(
        "the WebSocket handshake",
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .expect("the upgrade succeeds")
}

async fn next<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Message {
    within("a WebSocket message", ws.next())
        .await
        .expect("the socket is open")
        .expect("a message")
}

/// Frames both ways: the backend's greeting, then text and binary echoes (one larger than
/// any single read), then a clean close.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, backend: &str) {
    assert_eq!(
        next(ws).await,
        Message::text(format!("hello from {backend}"))
    );
    ws.send(Message::text("ping ✓")).await.unwrap();
    assert_eq!(next(ws).await, Message::text("ping ✓"));
    let binary: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    ws.send(Message::binary(binary.clone())).await.unwrap();
    assert_eq!(next(ws).await, Message::binary(binary));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(next(ws).await, Message::binary(vec![0u8, 1, 2, 255]));
    ws.close(None).await.unwrap();
    // The close comes back, then the stream ends.
    loop {
        match within("the close handshake", ws.next()).await {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("closing: {e}"),
        }
    }
}

fn header<'a>(response: &'a http::Response<Option<Vec<u8>>>, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_pass_both_ways_and_the_upgrade_is_sticky() {
    let (a, b) = (spawn_ws_backend("a").await, spawn_ws_backend("b").await);
    let limpet = spawn_limpet_with_file(&format!(
        "[services.chat]\nrule = \"Host:app.test\"\nsticky = true\nservers = {}\n",
        servers(&[&a.url, &b.url])
    ))
    .await;

    let tcp = TcpStream::connect(limpet.addr).await.unwrap();
    let (mut ws, response) = open(tcp, limpet.addr, None).await;
    assert_eq!(response.status(), 101);
    let first = header(&response, "x-backend")
        .expect("the backend's header")
        .to_owned();
    let (pinned, other) = if first == "a" { (&a, &b) } else { (&b, &a) };
    let cookie = header(&response, "set-cookie").expect("the 101 carries the sticky cookie");
    let expected = format!(
        "{}={}; HttpOnly; Path=/",
        limpet::sticky::traefik_v1_cookie_name("chat"),
        pinned.url
    );
    assert_eq!(cookie, expected);
    let pair = cookie.split(';').next().unwrap().to_owned();
    exchange(&mut ws, &pinned.name).await;

    let seen = pinned.upgrades.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen["upgrade"], "websocket");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert!(seen.contains_key("sec-websocket-key"));

    // The cookie pins the next upgrades to the same backend; no new cookie is sent.
    for i in 0..4 {
        let tcp = TcpStream::connect(limpet.addr).await.unwrap();
        let (mut ws, response) = open(tcp, limpet.addr, Some(&pair)).await;
        assert_eq!(
            header(&response, "x-backend"),
            Some(pinned.name.as_str()),
            "upgrade {i}"
        );
        assert_eq!(header(&response, "set-cookie"), None, "upgrade {i}");
        exchange(&mut ws, &pinned.name).await;
    }
    assert!(other.upgrades.lock().unwrap().is_empty());

    // Several sockets open at once on the same backend stay apart.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let tcp = TcpStream::connect(limpet.addr).await.unwrap();
        sockets.push(open(tcp, limpet.addr, Some(&pair)).await.0);
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        assert_eq!(
            next(ws).await,
            Message::text(format!("hello from {}", pinned.name))
        );
        ws.send(Message::text(format!("socket {i}"))).await.unwrap();
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        assert_eq!(next(ws).await, Message::text(format!("socket {i}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_the_tls_entrypoint() {
    let backend = spawn_ws_backend("a").await;
    let ca = Ca::new("wss");
    let leaf = ca.server("app", &["app.test"]);
    let edge = spawn_edge(
        &format!(
            "[services.chat]\nrule = \"Host:app.test\"\nsticky = true\nservers = {}\n",
            servers(&[&backend.url])
        ),
        EdgeOptions::new(vec![leaf.files]),
    )
    .await;
    // WebSocket is an HTTP/1.1 upgrade: the client offers http/1.1 only, as browsers do
    // for a WebSocket connection.
    let tls = tls_connect(edge.tls, client_config(&ca, &[b"http/1.1"]), "app.test")
        .await
        .unwrap();
    let (mut ws, response) = open(tls, edge.tls, None).await;
    assert_eq!(response.status(), 101);
    assert!(header(&response, "set-cookie").is_some());
    exchange(&mut ws, "a").await;
    let seen = backend.upgrades.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_on_a_connection_that_was_parked_works() {
    let chat = spawn_ws_backend("chat").await;
    let plain = support::spawn_backend("plain").await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.chat]\nrule = \"Host:app.test\"\nservers = {}\n\
         [services.plain]\nrule = \"Host:plain.test\"\nservers = {}\n",
        servers(&[&chat.url]),
        servers(&[&plain.url])
    ))
    .await;

    // An ordinary request first, then a pause that parks the connection (limpet drops its
    // HTTP state), then the upgrade on the same connection.
    let mut tcp = TcpStream::connect(limpet.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: plain.test\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    within("the plain response", async {
        // The backend's body is its name, last: reading stops once it is in, so that
        // nothing of this response is left for the WebSocket client to trip over.
        while !head.ends_with(b"\r\n\r\nplain") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the response");
            head.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(head.starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(limpet::proxy::PARK_AFTER * 6).await;

    let (mut ws, response) = open(tcp, limpet.addr, None).await;
    assert_eq!(response.status(), 101);
    exchange(&mut ws, &chat.name).await;
}
