//! What a client gets when limpet cannot deliver a normal answer: its own short plain-text
//! errors with the right status, and the backend's failures passed on, never disguised.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use support::client::channel_body;

use support::{
    closed_port, servers, spawn_backend, spawn_backend_with, spawn_limpet, spawn_limpet_with_file,
    within, Mode, Options, Reply, Req,
};

/// limpet's own error pages: the status's reason phrase, as plain text.
fn assert_limpet_error(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{reply:?}");
    let reason = reply.status.canonical_reason().expect("a standard status");
    assert_eq!(reply.text(), format!("{reason}\n"));
    assert_eq!(reply.headers["content-type"], "text/plain; charset=utf-8");
    assert!(
        reply.headers.get("x-backend").is_none(),
        "no backend was involved: {reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_is_404() {
    let app = spawn_backend("app").await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"Host:app.test\"\nservers = {}\n",
        servers(&[&app.url])
    ))
    .await;
    assert_limpet_error(&limpet.send(Req::get("/").host("nothing.test")).await, 404);
    assert_eq!(app.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_without_servers_is_503() {
    let limpet =
        spawn_limpet_with_file("[services.app]\nrule = \"PathPrefix:/\"\nservers = []\n").await;
    assert_limpet_error(&limpet.get("/").await, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_502() {
    let dead = closed_port();
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
        servers(&[&format!("http://{dead}")])
    ))
    .await;
    assert_limpet_error(&limpet.get("/").await, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_that_never_answers_is_504_after_the_response_header_timeout() {
    let hung = spawn_backend_with("hung", Mode::Hang).await;
    let mut options = Options::default();
    options.proxy.response_header_timeout = Duration::from_millis(300);
    let limpet = spawn_limpet(
        &format!(
            "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
            servers(&[&hung.url])
        ),
        options,
    )
    .await;
    assert_limpet_error(&limpet.get("/").await, 504);
    assert_eq!(hung.request_count(), 1, "the request did reach the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_timeout_does_not_cut_a_body_that_is_still_coming() {
    let slow = spawn_backend("slow").await;
    let mut options = Options::default();
    options.proxy.response_header_timeout = Duration::from_millis(300);
    let limpet = spawn_limpet(
        &format!(
            "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
            servers(&[&slow.url])
        ),
        options,
    )
    .await;
    // The backend spends about 400 ms on the body, well past the 300 ms header timeout.
    let reply = limpet.get("/trickle").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        "piece 0\npiece 1\npiece 2\npiece 3\npiece 4\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_timeout_starts_only_once_the_upload_is_sent() {
    let app = spawn_backend("app").await;
    let mut options = Options::default();
    options.proxy.response_header_timeout = Duration::from_millis(300);
    let limpet = spawn_limpet(
        &format!(
            "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
            servers(&[&app.url])
        ),
        options,
    )
    .await;

    // A client uploading for longer than the header timeout: the backend cannot answer
    // before it has the whole body, so only the time after the upload may count (as with
    // Go's ResponseHeaderTimeout, which Traefik uses).
    let (tx, body) = channel_body();
    let mut conn = limpet.connect().await;
    let reply = tokio::spawn(async move { conn.try_send(Req::post("/upload-gate", body)).await });
    tx.send(Bytes::from_static(b"first part, "))
        .await
        .expect("body open");
    assert_eq!(app.arrival().await, Bytes::from_static(b"first part, "));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // If limpet gave up meanwhile, the body is closed and the reply says why.
    let _ = tx.send(Bytes::from_static(b"second part")).await;
    drop(tx);
    let reply = within("the reply", reply)
        .await
        .expect("client task")
        .expect("a complete reply");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "first part, second part");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_before_every_provider_reported_is_503_even_for_known_routes() {
    let app = spawn_backend("app").await;
    let options = Options {
        wait_for_docker: true,
        ..Options::default()
    };
    let limpet = spawn_limpet(
        &format!(
            "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
            servers(&[&app.url])
        ),
        options,
    )
    .await;
    assert_limpet_error(&limpet.get("/").await, 503);
    assert_limpet_error(&limpet.send(Req::get("/").host("unknown.test")).await, 503);
    assert_eq!(app.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_are_passed_on_unchanged_and_not_retried() {
    let failing = spawn_backend_with("failing", Mode::Fail).await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
        servers(&[&failing.url])
    ))
    .await;
    let reply = limpet.get("/").await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.text(), "failing failed");
    assert_eq!(reply.backend(), "failing");
    assert_eq!(failing.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_closing_without_an_answer_is_502() {
    let closing = spawn_backend_with("closing", Mode::Close).await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
        servers(&[&closing.url])
    ))
    .await;
    assert_limpet_error(&limpet.get("/").await, 502);
    assert_eq!(closing.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_short_by_the_backend_is_not_passed_on_as_complete() {
    for mode in [Mode::Cut, Mode::CutChunked] {
        let cut = spawn_backend_with("cut", mode).await;
        let limpet = spawn_limpet_with_file(&format!(
            "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
            servers(&[&cut.url])
        ))
        .await;
        let mut conn = limpet.connect().await;
        // limpet's writes wait one scheduler turn (`proxy::batching`), so the backend's
        // break may be seen before the head has left: then the client's connection ends
        // with no response at all. Either way the client must see a failure.
        let Ok(response) = conn.start(Req::get("/")).await else {
            continue;
        };
        assert_eq!(response.status(), 200, "{mode:?}");
        let body = within("the cut body", response.into_body().collect()).await;
        assert!(
            body.is_err(),
            "{mode:?}: the backend broke off after 10 bytes, but the client got a complete body: {:?}",
            body.map(|b| b.to_bytes())
        );
    }
}
