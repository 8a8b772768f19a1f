//! Bodies go through limpet as streams, both ways: large ones arrive intact, and the first
//! bytes are forwarded while the sender is still holding back the rest.

use crate::support;

use bytes::Bytes;
use http_body_util::BodyExt;
use support::client::{channel_body, pattern_body};
use support::pattern::{self, Check};
use support::{servers, spawn_backend, spawn_limpet_with_file, within, Backend, Limpet, Req};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UPLOAD: u64 = 32 * 1024 * 1024;
const DOWNLOAD: u64 = 64 * 1024 * 1024;

async fn limpet_for(app: &Backend) -> Limpet {
    spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
        servers(&[&app.url])
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunked_upload_arrives_intact() {
    let app = spawn_backend("app").await;
    let limpet = limpet_for(&app).await;
    let reply = limpet
        .send(Req::post("/upload", pattern_body(UPLOAD)))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), format!("{UPLOAD} bytes intact"));
    assert_eq!(
        app.last_request().header("transfer-encoding"),
        Some("chunked")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_with_content_length_arrives_intact() {
    let app = spawn_backend("app").await;
    let limpet = limpet_for(&app).await;
    let req =
        Req::post("/upload", pattern_body(UPLOAD)).header("content-length", &UPLOAD.to_string());
    let reply = limpet.send(req).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), format!("{UPLOAD} bytes intact"));
    let seen = app.last_request();
    assert_eq!(
        seen.header("content-length"),
        Some(UPLOAD.to_string().as_str())
    );
    assert_eq!(seen.header("transfer-encoding"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams_back_intact() {
    let app = spawn_backend("app").await;
    let limpet = limpet_for(&app).await;
    let mut conn = limpet.connect().await;
    let response = conn
        .start(Req::get(&format!("/download/{DOWNLOAD}")))
        .await
        .expect("response headers");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], DOWNLOAD.to_string());
    // Checked frame by frame, so the test itself never holds the 64 MiB either.
    let mut body = response.into_body();
    let mut check = Check::default();
    within("the download", async {
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.expect("the body streams without error").data_ref() {
                check.feed(data);
            }
        }
    })
    .await;
    assert_eq!(check.verdict(), format!("{DOWNLOAD} bytes intact"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bytes_are_forwarded_before_the_backend_finished() {
    let app = spawn_backend("app").await;
    let limpet = limpet_for(&app).await;
    let mut conn = limpet.connect().await;
    let response = conn
        .start(Req::get("/gate"))
        .await
        .expect("response headers");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // The backend sends the second chunk only after the gate opens, which this test does
    // only once the first chunk is here: a buffering proxy would make this wait forever.
    let first = within("the first chunk while the backend is held", body.frame())
        .await
        .expect("a frame")
        .expect("no error")
        .into_data()
        .expect("data");
    assert_eq!(first, Bytes::from_static(b"first chunk\n"));
    app.open_gate();
    let rest = within("the rest", body.collect())
        .await
        .expect("no error")
        .to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second chunk\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_are_forwarded_before_the_client_finished() {
    let app = spawn_backend("app").await;
    let limpet = limpet_for(&app).await;
    let (tx, body) = channel_body();
    let mut conn = limpet.connect().await;
    let reply = tokio::spawn(async move { conn.send(Req::post("/upload-gate", body)).await });
    tx.send(Bytes::from_static(b"first part, "))
        .await
        .expect("body open");
    // The rest of the body is sent only after the backend reported the first part.
    assert_eq!(app.arrival().await, Bytes::from_static(b"first part, "));
    tx.send(Bytes::from_static(b"second part"))
        .await
        .expect("body open");
    drop(tx);
    let reply = within("the reply", reply).await.expect("client task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "first part, second part");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_waits_for_100_continue_goes_through() {
    let app = spawn_backend("app").await;
    let limpet = limpet_for(&app).await;
    // What curl does for bodies over 1 MiB: headers first, the body only after `100 Continue`.
    // Written by hand because hyper's client does not wait for it.
    let mut stream = within("connecting", TcpStream::connect(limpet.addr))
        .await
        .expect("connect");
    let head = format!(
        "PUT /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: {UPLOAD}\r\nExpect: 100-continue\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
    let interim = read_head(&mut stream).await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    for chunk in pattern::chunks(UPLOAD) {
        stream.write_all(&chunk).await.expect("send the body");
    }
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let expected = format!("{UPLOAD} bytes intact");
    let mut body = vec![0; expected.len()];
    within("the reply body", stream.read_exact(&mut body))
        .await
        .expect("read the body");
    assert_eq!(String::from_utf8_lossy(&body), expected);
}

/// Reads one response head, up to and including the blank line, byte by byte so that
/// nothing after it is consumed.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    within("a response head", async {
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.expect("the head"));
        }
    })
    .await;
    String::from_utf8_lossy(&head).into_owned()
}
