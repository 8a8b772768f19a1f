//! limpet's own pool of HTTP/1.1 backend connections: an idle connection is reused, one the
//! backend closed is not, one that dies as it is reused is replaced without the client
//! noticing when the request may be sent again, and an idle one is closed after the idle
//! timeout.
//!
//! The backend here is a scripted HTTP/1.1 server on 127.0.0.1 that decides, per connection
//! and per request on it, whether to answer, answer and close, or close without answering:
//! what a real backend does at the edges of its keep-alive handling, on demand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support;

use support::client::full;
use support::{eventually, servers, spawn_limpet, spawn_limpet_with_file, Options, Req};

/// What the backend does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// Answers and keeps the connection.
    Answer,
    /// Answers with `Connection: close`, then closes.
    AnswerClose,
    /// Answers (keep-alive, as far as the headers say), then closes without a word.
    AnswerThenVanish,
    /// Reads the request and closes without answering.
    Drop,
}

/// Decides per (connection number, request number on it), both from 0.
type Script = fn(usize, usize) -> Act;

struct Scripted {
    url: String,
    accepted: Arc<AtomicUsize>,
    /// Connections that ended because limpet closed them.
    closed_by_peer: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// Every request head, in the order they arrived, lower-cased.
    heads: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn closed_by_peer(&self) -> usize {
        self.closed_by_peer.load(Ordering::SeqCst)
    }
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn scripted_backend(script: Script) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed_by_peer = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (a, c, r, h) = (
        Arc::clone(&accepted),
        Arc::clone(&closed_by_peer),
        Arc::clone(&requests),
        Arc::clone(&heads),
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let n = a.fetch_add(1, Ordering::SeqCst);
            let (c, r, h) = (Arc::clone(&c), Arc::clone(&r), Arc::clone(&h));
            tokio::spawn(async move {
                if serve(stream, n, script, &r, &h).await {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    Scripted {
        url,
        accepted,
        closed_by_peer,
        requests,
        heads,
    }
}

/// Serves one connection; true when it ended by the peer closing it.
async fn serve(
    mut stream: TcpStream,
    conn: usize,
    script: Script,
    requests: &AtomicUsize,
    heads: &Mutex<Vec<String>>,
) -> bool {
    let mut buf = Vec::new();
    for i in 0.. {
        let Some(head_end) = read_head(&mut stream, &mut buf).await else {
            return true;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        heads.lock().unwrap().push(head);
        requests.fetch_add(1, Ordering::SeqCst);
        let body = format!("conn {conn} request {i}");
        let act = script(conn, i);
        if act == Act::Drop {
            return false;
        }
        let close = if act == Act::AnswerClose {
            "connection: close\r\n"
        } else {
            ""
        };
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{close}\r\n{body}",
            body.len()
        );
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return false;
        }
        if act != Act::Answer {
            return false;
        }
    }
    unreachable!()
}

/// Reads until a request head is complete; the offset past its blank line, or `None` when
/// the peer closed the connection first.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn one_service(url: &str) -> String {
    format!(
        "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
        servers(&[url])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_reused_by_the_next_client() {
    let app = scripted_backend(|_, _| Act::Answer).await;
    let limpet = spawn_limpet_with_file(&one_service(&app.url)).await;

    // One request at a time, each from a new client connection: the backend connection is
    // idle in the pool between them.
    for i in 0..20 {
        let reply = limpet.get("/").await;
        assert_eq!(reply.status, 200, "request {i}");
        assert_eq!(reply.text(), format!("conn 0 request {i}"));
    }
    assert_eq!(
        app.accepted(),
        1,
        "sequential requests took new connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_backend_closes_is_not_reused() {
    // Every connection serves one request: the first with `Connection: close`, the others
    // by closing silently after their answer.
    let app = scripted_backend(|conn, _| {
        if conn == 0 {
            Act::AnswerClose
        } else {
            Act::AnswerThenVanish
        }
    })
    .await;
    let limpet = spawn_limpet_with_file(&one_service(&app.url)).await;

    for i in 0..4 {
        let reply = limpet
            .send(Req::new(http::Method::POST, "/", full("x")))
            .await;
        assert_eq!(
            (reply.status.as_u16(), reply.text()),
            (200, format!("conn {i} request 0").as_str()),
            "request {i}"
        );
    }
    // A POST is never sent twice, so each one reaching a fresh connection shows that no
    // closed connection was picked from the pool.
    assert_eq!((app.accepted(), app.requests()), (4, 4));
}

/// The first connection answers once, then takes the next request and closes without a
/// word: a backend closing an idle connection just as limpet reuses it.
fn dies_on_reuse(conn: usize, request: usize) -> Act {
    match (conn, request) {
        (0, 0) => Act::Answer,
        (0, _) => Act::Drop,
        _ => Act::Answer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_dying_as_it_is_reused_is_replaced_for_idempotent_requests() {
    let app = scripted_backend(dies_on_reuse).await;
    let limpet = spawn_limpet_with_file(&one_service(&app.url)).await;

    assert_eq!(limpet.get("/").await.text(), "conn 0 request 0");
    let reply = limpet.get("/again").await;
    assert_eq!(
        (reply.status.as_u16(), reply.text()),
        (200, "conn 1 request 0"),
        "the GET was not sent again on a new connection"
    );
    assert_eq!((app.accepted(), app.requests()), (2, 3));
}

/// The request sent again is the one that was lost, head for head: the forwarded headers
/// limpet adds, and the server's own Host where the service does not pass the client's on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_again_carries_the_same_head() {
    let app = scripted_backend(dies_on_reuse).await;
    let file = format!(
        "[services.app]\nrule = \"PathPrefix:/\"\npass_host_header = false\nservers = {}\n",
        servers(&[&app.url])
    );
    let limpet = spawn_limpet_with_file(&file).await;

    assert_eq!(limpet.get("/").await.status, 200);
    let reply = limpet.send(Req::get("/again").header("x-trace", "7")).await;
    assert_eq!(reply.text(), "conn 1 request 0");
    let heads = app.heads();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert_eq!(
        heads[2], heads[1],
        "the head sent again differs from the lost one"
    );
    let authority = app.url.trim_start_matches("http://");
    for line in [
        format!("host: {authority}"),
        "x-trace: 7".to_owned(),
        "x-forwarded-for: 127.0.0.1".to_owned(),
        "x-forwarded-proto: http".to_owned(),
    ] {
        assert!(
            heads[2].lines().any(|l| l == line),
            "{line} missing: {}",
            heads[2]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_may_not_be_repeated_is_not_sent_again() {
    let app = scripted_backend(dies_on_reuse).await;
    let limpet = spawn_limpet_with_file(&one_service(&app.url)).await;

    assert_eq!(limpet.get("/").await.status, 200);
    let reply = limpet
        .send(Req::new(http::Method::POST, "/", full("x")))
        .await;
    assert_eq!(
        reply.status, 502,
        "a POST that may have arrived was sent twice"
    );
    assert_eq!((app.accepted(), app.requests()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let app = scripted_backend(|_, _| Act::Answer).await;
    let options = Options {
        proxy: limpet::proxy::ProxySettings {
            idle_conn_timeout: Duration::from_millis(300),
            ..Options::default().proxy
        },
        ..Options::default()
    };
    let limpet = spawn_limpet(&one_service(&app.url), options).await;

    assert_eq!(limpet.get("/").await.status, 200);
    eventually("limpet to close its idle backend connection", || {
        app.closed_by_peer() == 1
    })
    .await;
    assert_eq!(limpet.get("/").await.text(), "conn 1 request 0");
    assert_eq!(app.accepted(), 2);
}
