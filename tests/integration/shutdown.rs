//! Graceful shutdown: when the shutdown future fires, limpet stops accepting connections
//! but lets the requests already in flight finish.

use crate::support;

use std::time::Duration;

use support::{
    eventually, servers, spawn_backend, spawn_limpet, within, Backend, Limpet, Options, Req,
};

/// limpet in front of `app` with a grace period far beyond the test's patience:
/// `stopped` only returns in time if limpet closes idle connections instead of waiting the
/// grace period out.
async fn limpet_with_long_grace(app: &Backend) -> Limpet {
    let mut options = Options::default();
    options.proxy.grace_period = Duration::from_secs(600);
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
    let mut limpet = limpet_with_long_grace(&app).await;
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
    limpet.stopped().await;
    eventually("the idle connection to be closed", || idle.is_closed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_are_closed_at_once() {
    let app = spawn_backend("app").await;
    let mut limpet = limpet_with_long_grace(&app).await;
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
