//! Failures: retries that never bounce back, re-pinning instead of failing, maintenance,
//! per-server connection limits and fallbacks, over real sockets.

use crate::harness;

use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::{servers, Backend, Limpet, Mode, Session};
use http::{Method, StatusCode};
use http_body_util::Full;

/// A sticky service on `/` (cookie `sid`, URL values) with passive health off, so that a
/// server keeps being tried first however often it fails.
fn sticky_service(name: &str, rule: &str, list: &[&Backend], extra: &str) -> String {
    let list: Vec<(&Backend, &str)> = list.iter().map(|b| (*b, "")).collect();
    format!(
        r#"
[services.{name}]
rule = "{rule}"
method = "roundrobin"
cookie_name = "sid"
passive_health = {{ max_failures = 0 }}
servers = {}
{extra}
"#,
        servers(&list)
    )
}

/// A request with a body, pinned by cookie to `server`.
fn pinned(
    l: &Limpet,
    method: Method,
    path: &str,
    server: &Backend,
    body: &[u8],
) -> http::Request<Full<Bytes>> {
    l.client
        .request(method, path)
        .header("cookie", format!("sid={}", server.url()))
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap()
}

/// 256 KiB that a truncation or reordering would change.
fn big_body() -> Vec<u8> {
    (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_elsewhere_whatever_the_method_body_intact() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    a.refuse().await;
    let l = Limpet::start(&sticky_service("web", "PathPrefix:/", &[&a, &b], "")).await;
    let body = big_body();
    let methods = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    for m in methods.clone() {
        // Pinned to the refusing server, so the first attempt is certainly there.
        let r = l
            .client
            .send(pinned(&l, m.clone(), "/upload", &a, &body))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{m}: {}", r.text());
        assert_eq!(r.backend().as_deref(), Some("b"), "{m}");
        assert_eq!(r.cookie("sid"), Some(b.url()), "{m}: re-pinned to b");
    }
    let seen = b.traffic();
    assert_eq!(seen.len(), methods.len());
    for (s, m) in seen.iter().zip(methods) {
        assert_eq!(s.method, m);
        assert_eq!(s.target, "/upload");
        assert!(
            s.body[..] == body[..],
            "{m}: body of {} bytes arrived changed",
            s.body.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sending_only_idempotent_bodiless_requests_are_retried() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    a.set_mode(Mode::CloseWithoutAnswer);
    let toml = sticky_service("strict", "PathPrefix:/strict", &[&a, &b], "")
        + &sticky_service(
            "lenient",
            "PathPrefix:/lenient",
            &[&a, &b],
            "retry = { non_idempotent = true }",
        )
        + &sticky_service(
            "never",
            "PathPrefix:/never",
            &[&a, &b],
            "retry = { idempotent = false }",
        );
    let l = Limpet::start(&toml).await;

    // (service, method, body, expected status); the request always reaches `a` first.
    let cases: [(&str, Method, &[u8], StatusCode); 8] = [
        ("/strict", Method::GET, b"", StatusCode::OK),
        ("/strict", Method::DELETE, b"", StatusCode::OK),
        ("/strict", Method::POST, b"", StatusCode::BAD_GATEWAY),
        ("/strict", Method::POST, b"payload", StatusCode::BAD_GATEWAY),
        ("/strict", Method::PUT, b"payload", StatusCode::BAD_GATEWAY),
        ("/lenient", Method::POST, b"", StatusCode::OK),
        (
            "/lenient",
            Method::POST,
            b"payload",
            StatusCode::BAD_GATEWAY,
        ),
        ("/never", Method::GET, b"", StatusCode::BAD_GATEWAY),
    ];
    for (path, method, body, expected) in cases {
        let (a_before, b_before) = (a.hits(), b.hits());
        let r = l
            .client
            .send(pinned(&l, method.clone(), path, &a, body))
            .await;
        let what = format!("{method} {path} with {} body bytes", body.len());
        assert_eq!(r.status, expected, "{what}: {}", r.text());
        assert_eq!(a.hits(), a_before + 1, "{what}: a got it once");
        let retried = usize::from(expected == StatusCode::OK);
        assert_eq!(
            b.hits(),
            b_before + retried,
            "{what}: retried on b or not at all"
        );
        if expected == StatusCode::OK {
            assert_eq!(r.backend().as_deref(), Some("b"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_never_returns_to_a_server_that_already_failed_the_request() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    for b in &backends {
        b.set_mode(Mode::CloseWithoutAnswer);
    }
    let refs: Vec<&Backend> = backends.iter().collect();
    // More attempts allowed than there are other servers: only "never twice" stops them.
    let l = Limpet::start(&sticky_service(
        "web",
        "PathPrefix:/",
        &refs,
        "retry = { attempts = 10 }",
    ))
    .await;
    for round in 1..=5 {
        let r = l.client.get("/").await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        for b in &backends {
            assert_eq!(b.hits(), round, "{} after request {round}", b.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_attempts_cap_the_number_of_tries() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
        Backend::start("d").await,
    ];
    for b in &backends {
        b.set_mode(Mode::CloseWithoutAnswer);
    }
    let refs: Vec<&Backend> = backends.iter().collect();
    let toml = sticky_service(
        "zero",
        "PathPrefix:/zero",
        &refs,
        "retry = { attempts = 0 }",
    ) + &sticky_service("one", "PathPrefix:/one", &refs, "retry = { attempts = 1 }")
        + &sticky_service("default", "PathPrefix:/default", &refs, "");
    let l = Limpet::start(&toml).await;
    let total = || backends.iter().map(Backend::hits).sum::<usize>();
    for (path, tries) in [("/zero", 1), ("/one", 2), ("/default", 3)] {
        let before = total();
        let r = l.client.get(path).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(total() - before, tries, "{path}: attempts in all");
    }
    // Never twice on one server, whatever the cap.
    for b in &backends {
        assert!(b.hits() <= 3, "{}: {}", b.name, b.hits());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_zero_disables_retries_even_when_nothing_was_sent() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    a.refuse().await;
    let l = Limpet::start(&sticky_service(
        "web",
        "PathPrefix:/",
        &[&a, &b],
        "retry = { attempts = 0 }",
    ))
    .await;
    let r = l.client.send(pinned(&l, Method::GET, "/", &a, b"")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(b.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pinned_to_a_refusing_server_is_repinned_and_never_sees_a_502() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    a.refuse().await;
    // Default passive health: the server also leaves rotation after a few failures.
    let toml = format!(
        r#"
[services.web]
rule = "PathPrefix:/"
cookie_name = "sid"
servers = {}
"#,
        servers(&[(&a, ""), (&b, ""), (&c, "")])
    );
    let l = Limpet::start(&toml).await;
    let mut s = Session::with_cookie(&l.client, "sid", &a.url());
    let first = s.get("/").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let new_home = first.backend().unwrap();
    assert_ne!(new_home, "a");
    let cookie = first
        .cookie("sid")
        .expect("a new cookie for the new server");
    assert_ne!(cookie, a.url());
    for i in 1..20 {
        let r = s.get("/").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text());
        assert_eq!(
            r.backend().unwrap(),
            new_home,
            "request {i} stays on the new server"
        );
        assert_eq!(r.cookie("sid"), None, "request {i}: pinned, no new cookie");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_for_a_server_removed_from_the_file_is_repinned() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let l = Limpet::start(&sticky_service("web", "PathPrefix:/", &[&a, &b, &c], "")).await;
    let mut s = Session::with_cookie(&l.client, "sid", &a.url());
    assert_eq!(s.get("/").await.backend().as_deref(), Some("a"));
    l.reload(&sticky_service("web", "PathPrefix:/", &[&b, &c], ""))
        .await;
    let r = s.get("/").await;
    assert_eq!(r.status, StatusCode::OK);
    let home = r.backend().unwrap();
    assert!(home == "b" || home == "c", "{home}");
    assert_eq!(
        r.cookie("sid"),
        Some(if home == "b" { b.url() } else { c.url() })
    );
    for _ in 0..5 {
        assert_eq!(s.get("/").await.backend().unwrap(), home);
    }
    assert_eq!(a.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_server_keeps_its_pinned_clients_but_takes_no_new_sessions() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let file = |a_extra: &str| {
        format!(
            r#"
[services.web]
rule = "PathPrefix:/"
cookie_name = "sid"
servers = {}
"#,
            servers(&[(&a, a_extra), (&b, "")])
        )
    };
    let l = Limpet::start(&file("")).await;
    let mut pinned = Session::with_cookie(&l.client, "sid", &a.url());
    assert_eq!(pinned.get("/").await.backend().as_deref(), Some("a"));

    l.reload(&file("enabled = false")).await;
    for i in 0..10 {
        let r = pinned.get("/").await;
        assert_eq!(r.backend().as_deref(), Some("a"), "pinned request {i}");
        assert_eq!(r.cookie("sid"), None);
    }
    for i in 0..20 {
        let r = l.client.get("/").await;
        assert_eq!(r.backend().as_deref(), Some("b"), "new session {i}");
        assert_eq!(r.cookie("sid"), Some(b.url()));
    }

    l.reload(&file("enabled = true")).await;
    let news: Vec<String> = new_sessions(&l, 10).await;
    assert!(
        news.iter().any(|n| n == "a"),
        "re-enabled server takes sessions: {news:?}"
    );
}

/// The backends of `n` new sessions, one after the other.
async fn new_sessions(l: &Limpet, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(l.client.get("/").await.backend().unwrap_or_default());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_a_request_queues_and_beyond_the_queue_gets_503() {
    let a = Backend::start("a").await;
    let toml = format!(
        r#"
[services.web]
rule = "PathPrefix:/"
max_conn = 1
queue = 1
queue_timeout = "5s"
servers = {}
"#,
        servers(&[(&a, "")])
    );
    let l = Limpet::start(&toml).await;
    a.hold();
    let first = tokio::spawn({
        let c = l.client.clone();
        async move { c.get("/1").await }
    });
    harness::eventually(
        "the first request is held",
        Duration::from_secs(10),
        || async { a.held() == 1 },
    )
    .await;
    let mut second = tokio::spawn({
        let c = l.client.clone();
        async move { c.get("/2").await }
    });
    let mut third = tokio::spawn({
        let c = l.client.clone();
        async move { c.get("/3").await }
    });
    // Whichever of the two arrives second finds the queue full: 503 at once.
    let (refused, waiting) = tokio::select! {
        r = &mut second => (r.unwrap(), third),
        r = &mut third => (r.unwrap(), second),
    };
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text()
    );
    assert!(
        refused.headers.contains_key("retry-after"),
        "503 for a full queue says when to retry: {:?}",
        refused.headers
    );
    assert_eq!(
        a.hits(),
        1,
        "the queued request waits in limpet, not at the server"
    );
    a.release();
    let queued = waiting.await.unwrap();
    assert_eq!(queued.status, StatusCode::OK, "{}", queued.text());
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    assert_eq!(a.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_gives_up_after_the_queue_timeout() {
    let a = Backend::start("a").await;
    let toml = format!(
        r#"
[services.web]
rule = "PathPrefix:/"
max_conn = 1
queue = 1
queue_timeout = "500ms"
servers = {}
"#,
        servers(&[(&a, "")])
    );
    let l = Limpet::start(&toml).await;
    a.hold();
    let first = tokio::spawn({
        let c = l.client.clone();
        async move { c.get("/1").await }
    });
    harness::eventually(
        "the first request is held",
        Duration::from_secs(10),
        || async { a.held() == 1 },
    )
    .await;
    let started = Instant::now();
    let r = l.client.get("/2").await;
    let waited = started.elapsed();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));
    // A lower bound only: it waited in the queue rather than being refused at once.
    assert!(
        waited >= Duration::from_millis(400),
        "gave up after {waited:?}"
    );
    a.release();
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    assert_eq!(a.hits(), 1);
}

/// `web` on `/` with `primary` under a TCP monitor, falling back to `fallback`.
fn with_fallback(primary: &Backend, fallback: &str, extra: &str) -> String {
    format!(
        r#"
[services.web]
rule = "PathPrefix:/"
fallback = "{fallback}"
health_check = {{ type = "tcp", interval = "100ms", rise = 1, fall = 1, connect_timeout = "500ms" }}
servers = {}
{extra}
"#,
        servers(&[(primary, "")])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_service_is_used_only_while_every_server_is_out() {
    let a = Backend::start("a").await;
    let spare = Backend::start("spare").await;
    let toml = with_fallback(&a, "spare", "")
        + &format!(
            r#"
[services.spare]
rule = "Host:spare.invalid"
health_check = {{ type = "tcp", interval = "100ms", rise = 1, fall = 1, connect_timeout = "500ms" }}
servers = {}
"#,
            servers(&[(&spare, "")])
        );
    let l = Limpet::start(&toml).await;
    for _ in 0..5 {
        assert_eq!(l.client.get("/").await.backend().as_deref(), Some("a"));
    }
    assert_eq!(
        spare.hits(),
        0,
        "no fallback while the server is in rotation"
    );

    a.refuse().await;
    harness::eventually("the fallback answers", Duration::from_secs(10), || async {
        l.client.get("/").await.backend().as_deref() == Some("spare")
    })
    .await;

    spare.refuse().await;
    harness::eventually(
        "503 once the fallback is down too",
        Duration::from_secs(10),
        || async { l.client.get("/").await.status == StatusCode::SERVICE_UNAVAILABLE },
    )
    .await;

    a.accept().await;
    harness::eventually("the server is back", Duration::from_secs(10), || async {
        l.client.get("/").await.backend().as_deref() == Some("a")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_url_is_used_while_every_server_is_out_and_503_when_it_is_down_too() {
    let a = Backend::start("a").await;
    let spare = Backend::start("spare").await;
    let l = Limpet::start(&with_fallback(&a, &spare.url(), "")).await;
    assert_eq!(l.client.get("/").await.backend().as_deref(), Some("a"));
    a.refuse().await;
    harness::eventually(
        "the fallback URL answers",
        Duration::from_secs(10),
        || async { l.client.get("/").await.backend().as_deref() == Some("spare") },
    )
    .await;
    spare.refuse().await;
    for i in 0..5 {
        let r = l.client.get("/").await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "request {i} with the server and its fallback both down"
        );
    }
}
