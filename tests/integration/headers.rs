//! Headers on the way through: what backends behind Traefik expect to be told about the
//! client, what describes only one hop and must stop at limpet, and the Host header.

use crate::support;

use support::{servers, spawn_backend, spawn_limpet_with_file, Req};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_describe_the_client_and_cannot_be_spoofed() {
    let app = spawn_backend("app").await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"Host:app.test\"\nservers = {}\n",
        servers(&[&app.url])
    ))
    .await;

    let reply = limpet
        .send(
            Req::get("/")
                .host("app.test:8443")
                .header("x-forwarded-for", "203.0.113.9")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "evil.test")
                .header("x-forwarded-port", "1")
                .header("x-real-ip", "198.51.100.1"),
        )
        .await;
    assert_eq!(reply.backend(), "app");
    let seen = app.last_request();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1"),
        "appended to"
    );
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(
        seen.header("x-forwarded-proto"),
        Some("http"),
        "the client came over plain HTTP"
    );
    assert_eq!(seen.header("x-forwarded-host"), Some("app.test:8443"));
    assert_eq!(seen.header("x-forwarded-port"), Some("8443"));
    assert_eq!(
        seen.header("host"),
        Some("app.test:8443"),
        "Host passes through by default"
    );

    // Without a port in Host, the port is the one the client connected to.
    limpet.get("/").await;
    let seen = app.last_request();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-host"), Some("app.test"));
    let port = limpet.addr.port().to_string();
    assert_eq!(seen.header("x-forwarded-port"), Some(port.as_str()));
    assert_eq!(seen.header("host"), Some("app.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_prior_x_forwarded_for_line_is_kept() {
    let app = spawn_backend("app").await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
        servers(&[&app.url])
    ))
    .await;

    // Repeated lines are one list (RFC 9110 §5.3); a proxy that appended its hop as a second
    // line must not lose it, or the client's own first line passes for that hop.
    limpet
        .send(
            Req::get("/")
                .header("x-forwarded-for", "203.0.113.9")
                .header("x-forwarded-for", "198.51.100.7, 192.0.2.1"),
        )
        .await;
    assert_eq!(
        app.last_request().header("x-forwarded-for"),
        Some("203.0.113.9, 198.51.100.7, 192.0.2.1, 127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_stop_at_limpet() {
    let app = spawn_backend("app").await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
        servers(&[&app.url])
    ))
    .await;

    let reply = limpet
        .send(
            Req::get("/")
                .header("connection", "X-Secret, X-Other-Secret")
                .header("x-secret", "for limpet only")
                .header("x-other-secret", "also")
                .header("keep-alive", "timeout=5")
                .header("proxy-connection", "keep-alive")
                .header("te", "gzip, trailers")
                .header("x-end-to-end", "kept"),
        )
        .await;
    assert_eq!(reply.status, 200);
    let seen = app.last_request();
    for name in [
        "x-secret",
        "x-other-secret",
        "keep-alive",
        "proxy-connection",
    ] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the backend: {:?}",
            seen.headers
        );
    }
    // TE is hop-by-hop, except that a client's willingness to take trailers is passed on
    // (gRPC depends on it), as Go's ReverseProxy and so Traefik do.
    assert_eq!(seen.header("te"), Some("trailers"), "{:?}", seen.headers);
    if let Some(connection) = seen.header("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("secret"),
            "Connection forwarded: {connection}"
        );
    }
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_stop_at_limpet() {
    let app = spawn_backend("app").await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
        servers(&[&app.url])
    ))
    .await;

    let reply = limpet.get("/hop").await;
    assert_eq!(reply.status, 200);
    assert!(
        !reply.headers.contains_key("x-resp-secret"),
        "{:?}",
        reply.headers
    );
    assert!(
        !reply.headers.contains_key("keep-alive"),
        "{:?}",
        reply.headers
    );
    assert_eq!(reply.headers["x-kept"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pass_host_header_the_backend_sees_its_own_address() {
    let app = spawn_backend("app").await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"Host:app.test\"\npass_host_header = false\nservers = {}\n",
        servers(&[&app.url])
    ))
    .await;

    limpet.send(Req::get("/").host("App.Test:8080")).await;
    let seen = app.last_request();
    assert_eq!(seen.header("host"), Some(app.addr.to_string().as_str()));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some("App.Test:8080"),
        "the client's Host is still reported"
    );
}
