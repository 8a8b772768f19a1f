//! Connections are kept and reused on both sides: a client can send many requests on one
//! connection, and limpet pools its connections to backends instead of dialing per request.

use crate::support;

use support::{closed_port, servers, spawn_backend, spawn_limpet_with_file, Req};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_on_one_client_connection_reuse_backend_connections() {
    let app = spawn_backend("app").await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
        servers(&[&app.url])
    ))
    .await;

    let mut conn = limpet.connect().await;
    for i in 0..100 {
        let reply = conn.get(&format!("/n/{i}")).await;
        assert_eq!(
            (reply.status.as_u16(), reply.text()),
            (200, "app"),
            "request {i}"
        );
    }
    assert_eq!(app.request_count(), 100);
    assert!(
        app.connections() <= 2,
        "100 requests took {} backend connections",
        app.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_are_shared_between_client_connections() {
    let app = spawn_backend("app").await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
        servers(&[&app.url])
    ))
    .await;

    for i in 0..30 {
        let reply = limpet.get("/").await;
        assert_eq!(reply.backend(), "app", "client connection {i}");
    }
    assert!(
        app.connections() <= 2,
        "30 clients took {} backend connections",
        app.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limpets_own_error_replies_keep_the_client_connection() {
    let app = spawn_backend("app").await;
    let dead = format!("http://{}", closed_port());
    let limpet = spawn_limpet_with_file(&format!(
        r#"
        [services.app]
        rule = "Host:app.test"
        servers = {}
        [services.empty]
        rule = "Host:empty.test"
        servers = []
        [services.dead]
        rule = "Host:dead.test"
        servers = {}
        "#,
        servers(&[&app.url]),
        servers(&[&dead]),
    ))
    .await;

    let mut conn = limpet.connect().await;
    for (host, status) in [
        ("nowhere.test", 404),
        ("empty.test", 503),
        ("dead.test", 502),
        ("app.test", 200),
    ] {
        let reply = conn.send(Req::get("/").host(host)).await;
        assert_eq!(reply.status, status, "{host}");
        assert!(
            !conn.is_closed(),
            "limpet closed the connection after answering {status}"
        );
    }
}
