//! A request whose server refuses the connection was never sent, so limpet tries another
//! server of the service, and re-pins a sticky client that was pinned to the dead one.

use crate::support;

use limpet::sticky::traefik_v1_cookie_name;
use support::{closed_port, servers, spawn_backend, spawn_limpet_with_file, Req};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_on_another_server() {
    let live = spawn_backend("live").await;
    let dead = format!("http://{}", closed_port());
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
        servers(&[&dead, &live.url])
    ))
    .await;

    for i in 0..20 {
        let reply = limpet.get(&format!("/r/{i}")).await;
        assert_eq!(reply.status, 200, "request {i}");
        assert_eq!(reply.backend(), "live", "request {i}");
    }
    assert_eq!(
        live.request_count(),
        20,
        "each request reached the live server exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pinned_to_a_dead_server_is_repinned() {
    let live = spawn_backend("live").await;
    let dead = format!("http://{}", closed_port());
    let limpet = spawn_limpet_with_file(&format!(
        "[services.whoami]\nrule = \"PathPrefix:/\"\nsticky = true\nservers = {}\n",
        servers(&[&dead, &live.url])
    ))
    .await;
    let name = traefik_v1_cookie_name("whoami");

    let reply = limpet
        .send(Req::get("/").cookie(&format!("{name}={dead}")))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "live");
    assert_eq!(
        reply.set_cookie(),
        format!("{name}={}; HttpOnly; Path=/", live.url)
    );

    let again = limpet.send(Req::get("/").cookie(reply.cookie_pair())).await;
    assert_eq!(again.backend(), "live");
    assert!(again.set_cookies().is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_servers_refusing_is_502() {
    let dead = [
        format!("http://{}", closed_port()),
        format!("http://{}", closed_port()),
    ];
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"PathPrefix:/\"\nsticky = true\nservers = {}\n",
        servers(&[&dead[0], &dead[1]])
    ))
    .await;
    for i in 0..3 {
        let reply = limpet.get("/").await;
        assert_eq!(reply.status, 502, "request {i}: {reply:?}");
        assert!(
            reply.set_cookies().is_empty(),
            "no server answered, so no cookie: {reply:?}"
        );
    }
}
