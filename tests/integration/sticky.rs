//! Sticky sessions as the Swarm tutorial uses them: the cookie names the backend's URL, a
//! client that sends it back stays there, and only the service's current servers can be
//! named by it.

use crate::support;

use limpet::sticky::traefik_v1_cookie_name;
use support::{
    closed_port, servers, spawn_backend, spawn_limpet_with_file, Backend, Limpet, Reply, Req,
};

async fn two_backends() -> (Backend, Backend) {
    (spawn_backend("a").await, spawn_backend("b").await)
}

async fn sticky_limpet(a: &Backend, b: &Backend) -> Limpet {
    spawn_limpet_with_file(&format!(
        "[services.whoami]\nrule = \"Host:app.test\"\nsticky = true\nservers = {}\n",
        servers(&[&a.url, &b.url])
    ))
    .await
}

/// `<name>=<url>` as a client sends it back.
fn pair(name: &str, backend: &Backend) -> String {
    format!("{name}={}", backend.url)
}

/// The reply came from `backend` and set no cookie: the client was already pinned there.
fn assert_pinned(reply: &Reply, backend: &Backend, context: &str) {
    assert_eq!(reply.status, 200, "{context}");
    assert_eq!(reply.backend(), backend.name, "{context}");
    assert!(
        reply.set_cookies().is_empty(),
        "{context}: a pinned client got a new cookie: {reply:?}"
    );
}

/// The reply was balanced to one of `backends` and pins the client to the one that answered.
fn assert_repinned(reply: &Reply, cookie: &str, backends: &[&Backend], context: &str) {
    assert_eq!(reply.status, 200, "{context}");
    let answered = backends
        .iter()
        .find(|b| b.name == reply.backend())
        .unwrap_or_else(|| {
            panic!(
                "{context}: answered by {}, not one of the service's servers",
                reply.backend()
            )
        });
    assert_eq!(
        reply.set_cookie(),
        format!("{cookie}={}; HttpOnly; Path=/", answered.url),
        "{context}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_is_pinned_with_traefiks_cookie_and_stays() {
    let (a, b) = two_backends().await;
    let limpet = sticky_limpet(&a, &b).await;
    let name = traefik_v1_cookie_name("whoami");

    let first = limpet.get("/").await;
    assert_repinned(&first, &name, &[&a, &b], "first visit");
    let (pinned, other) = if first.backend() == "a" {
        (&a, &b)
    } else {
        (&b, &a)
    };

    let mut conn = limpet.connect().await;
    for i in 0..20 {
        let reply = conn.send(Req::get("/").cookie(first.cookie_pair())).await;
        assert_pinned(&reply, pinned, &format!("request {i} with the cookie"));
    }
    for i in 0..4 {
        let reply = conn.send(Req::get("/").cookie(&pair(&name, other))).await;
        assert_pinned(
            &reply,
            other,
            &format!("request {i} with the other server's cookie"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_own_cookies_are_kept_next_to_limpets() {
    let (a, b) = two_backends().await;
    let limpet = sticky_limpet(&a, &b).await;
    let name = traefik_v1_cookie_name("whoami");

    let reply = limpet.get("/set-cookie").await;
    let cookies = reply.set_cookies();
    assert_eq!(cookies.len(), 3, "{cookies:?}");
    assert_eq!(
        cookies[..2],
        ["app-session=42; Path=/; HttpOnly", "theme=dark"]
    );
    let answered = if reply.backend() == "a" { &a } else { &b };
    assert_eq!(
        cookies[2],
        format!("{name}={}; HttpOnly; Path=/", answered.url)
    );

    let pinned = limpet
        .send(Req::get("/set-cookie").cookie(&format!("app-session=42; {}", pair(&name, answered))))
        .await;
    assert_eq!(pinned.backend(), answered.name);
    assert_eq!(
        pinned.set_cookies(),
        ["app-session=42; Path=/; HttpOnly", "theme=dark"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_name_overrides_traefiks_name() {
    let (a, b) = two_backends().await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.whoami]\nrule = \"Host:app.test\"\ncookie_name = \"session\"\nservers = {}\n",
        servers(&[&a.url, &b.url])
    ))
    .await;

    let reply = limpet.get("/").await;
    assert_repinned(&reply, "session", &[&a, &b], "first visit");
    for i in 0..4 {
        assert_pinned(
            &limpet
                .send(Req::get("/").cookie(&pair("session", &b)))
                .await,
            &b,
            "session cookie",
        );
        // Traefik's default name means nothing to this service any more.
        let reply = limpet
            .send(Req::get("/").cookie(&pair(&traefik_v1_cookie_name("whoami"), &a)))
            .await;
        assert_repinned(
            &reply,
            "session",
            &[&a, &b],
            &format!("default-named cookie, round {i}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_naming_anything_but_a_current_server_of_the_service_are_not_followed() {
    let (a, b) = two_backends().await;
    let elsewhere = spawn_backend("elsewhere").await;
    // Both services use the same cookie name, so a cookie from one is offered to the other.
    let limpet = spawn_limpet_with_file(&format!(
        r#"
        [services.whoami]
        rule = "Host:app.test"
        cookie_name = "sess"
        servers = {}
        [services.other]
        rule = "Host:other.test"
        cookie_name = "sess"
        servers = {}
        "#,
        servers(&[&a.url, &b.url]),
        servers(&[&elsewhere.url]),
    ))
    .await;

    let values = [
        elsewhere.url.clone(),
        // Loopback addresses that are no backend: limpet must not dial what a cookie says.
        "http://127.0.0.77:8000".to_owned(),
        format!("http://{}", closed_port()),
        format!("{}/", a.url),
        format!("{}/admin", a.url),
        a.url.replace("http://", "https://"),
        a.url.replace("127.0.0.1", "localhost"),
        a.addr.to_string(),
        "garbage".to_owned(),
        String::new(),
        "\"\"".to_owned(),
    ];
    for value in &values {
        let reply = limpet
            .send(Req::get("/").cookie(&format!("sess={value}")))
            .await;
        assert_repinned(
            &reply,
            "sess",
            &[&a, &b],
            &format!("cookie value {value:?}"),
        );
    }
    assert_eq!(
        elsewhere.request_count(),
        0,
        "a cookie led to another service's backend"
    );
    // The other service still honours its own servers.
    let reply = limpet
        .send(
            Req::get("/")
                .host("other.test")
                .cookie(&pair("sess", &elsewhere)),
        )
        .await;
    assert_pinned(&reply, &elsewhere, "the other service's own cookie");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_found_among_others_and_in_a_second_cookie_header() {
    let (a, b) = two_backends().await;
    let limpet = sticky_limpet(&a, &b).await;
    let name = traefik_v1_cookie_name("whoami");
    let ours = pair(&name, &b);

    let cases = [
        Req::get("/").cookie(&format!("theme=dark; {ours}; lang=en")),
        Req::get("/").cookie(&format!("{ours};lang=en")),
        Req::get("/").cookie("theme=dark").cookie(&ours),
        Req::get("/")
            .cookie(&format!("theme=dark; {name}=http://127.0.0.77:1"))
            .cookie(&ours),
        Req::get("/").cookie(&format!("{name}=\"{}\"", b.url)),
        Req::get("/").cookie(&format!("broken; =; {ours}")),
    ];
    // Round robin alone would send every other request to `a`; each case runs twice.
    for (i, case) in cases.into_iter().enumerate() {
        let mut conn = limpet.connect().await;
        let reply = conn.send(case).await;
        assert_pinned(&reply, &b, &format!("case {i}"));
        let reply = limpet.get("/").await;
        assert_eq!(reply.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_pinned_server_from_the_file_repins_its_clients() {
    let (a, b) = two_backends().await;
    let limpet = sticky_limpet(&a, &b).await;
    let name = traefik_v1_cookie_name("whoami");
    assert_pinned(
        &limpet.send(Req::get("/").cookie(&pair(&name, &a))).await,
        &a,
        "before the edit",
    );

    limpet
        .reload(&format!(
            "[services.whoami]\nrule = \"Host:app.test\"\nsticky = true\nservers = {}\n",
            servers(&[&b.url])
        ))
        .await;
    let before = a.request_count();
    let reply = limpet.send(Req::get("/").cookie(&pair(&name, &a))).await;
    assert_repinned(&reply, &name, &[&b], "the old cookie after its server left");
    assert_pinned(
        &limpet.send(Req::get("/").cookie(reply.cookie_pair())).await,
        &b,
        "the new cookie",
    );
    assert_eq!(a.request_count(), before, "the removed server got traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_of_weight_zero_keeps_its_sessions_but_takes_no_new_ones() {
    let (a, b) = two_backends().await;
    let limpet = spawn_limpet_with_file(&format!(
        r#"
        [services.whoami]
        rule = "Host:app.test"
        sticky = true
        servers = [{{ url = "{}", weight = 0 }}, {{ url = "{}" }}]
        "#,
        a.url, b.url
    ))
    .await;
    let name = traefik_v1_cookie_name("whoami");
    for i in 0..6 {
        assert_repinned(
            &limpet.get("/").await,
            &name,
            &[&b],
            &format!("new client {i}"),
        );
        assert_pinned(
            &limpet.send(Req::get("/").cookie(&pair(&name, &a))).await,
            &a,
            "draining server",
        );
    }
}
