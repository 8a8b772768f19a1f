//! Routing through Traefik v1 rules: which backend a request reaches, and with what path.

use crate::support;

use support::{servers, spawn_backend, spawn_limpet_with_file, Req};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rules_ignore_the_port_and_case_and_commas_offer_alternatives() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let limpet = spawn_limpet_with_file(&format!(
        r#"
        [services.a]
        rule = "Host:a.test"
        servers = {}
        [services.b]
        rule = "Host:b.test,www.b.test"
        servers = {}
        "#,
        servers(&[&a.url]),
        servers(&[&b.url]),
    ))
    .await;

    for (host, expected) in [
        ("a.test", "a"),
        ("a.test:8080", "a"),
        ("A.Test", "a"),
        ("A.TEST:1", "a"),
        ("b.test", "b"),
        ("www.b.test", "b"),
        ("WWW.B.Test:443", "b"),
    ] {
        let reply = limpet.send(Req::get("/").host(host)).await;
        assert_eq!(reply.status, 200, "Host: {host}");
        assert_eq!(reply.backend(), expected, "Host: {host}");
        assert_eq!(reply.text(), expected, "Host: {host}");
    }
    for host in ["c.test", "a.test.evil", "www.a.test", "a"] {
        let reply = limpet.send(Req::get("/").host(host)).await;
        assert_eq!(
            reply.status, 404,
            "Host: {host} must match no rule, got {reply:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_is_exact_and_path_prefix_compares_leading_bytes() {
    let exact = spawn_backend("exact").await;
    let prefix = spawn_backend("prefix").await;
    let limpet = spawn_limpet_with_file(&format!(
        r#"
        [services.exact]
        rule = "Path:/health"
        servers = {}
        [services.prefix]
        rule = "PathPrefix:/static"
        servers = {}
        "#,
        servers(&[&exact.url]),
        servers(&[&prefix.url]),
    ))
    .await;

    assert_eq!(limpet.get("/health").await.backend(), "exact");
    assert_eq!(
        limpet.get("/health?verbose=1").await.backend(),
        "exact",
        "the query is not part of the path"
    );
    assert_eq!(limpet.get("/health/deep").await.status, 404);
    assert_eq!(limpet.get("/healthz").await.status, 404);
    assert_eq!(limpet.get("/static").await.backend(), "prefix");
    assert_eq!(limpet.get("/static/app.css").await.backend(), "prefix");
    // Traefik v1 compares bytes, not path segments.
    assert_eq!(limpet.get("/staticfiles").await.backend(), "prefix");
    assert_eq!(limpet.get("/").await.status, 404);
    assert_eq!(exact.last_request().target, "/health?verbose=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semicolon_requires_every_matcher() {
    let api = spawn_backend("api").await;
    let site = spawn_backend("site").await;
    let limpet = spawn_limpet_with_file(&format!(
        r#"
        [services.api]
        rule = "Host:app.test;PathPrefix:/api,/v2"
        servers = {}
        [services.site]
        rule = "Host:app.test"
        servers = {}
        "#,
        servers(&[&api.url]),
        servers(&[&site.url]),
    ))
    .await;

    assert_eq!(limpet.get("/api/users").await.backend(), "api");
    assert_eq!(limpet.get("/v2/users").await.backend(), "api");
    assert_eq!(limpet.get("/home").await.backend(), "site");
    assert_eq!(
        limpet
            .send(Req::get("/api/users").host("other.test"))
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longer_rules_win_unless_a_priority_overrides_the_length() {
    let root = spawn_backend("root").await;
    let api = spawn_backend("api").await;
    let admin = spawn_backend("admin").await;
    let toml = |root_priority: i32, admin_priority: i32| {
        format!(
            r#"
            [services.root]
            rule = "PathPrefix:/"
            priority = {root_priority}
            servers = {}
            [services.api]
            rule = "PathPrefix:/api"
            servers = {}
            [services.admin]
            rule = "PathPrefix:/api/admin"
            priority = {admin_priority}
            servers = {}
            "#,
            servers(&[&root.url]),
            servers(&[&api.url]),
            servers(&[&admin.url]),
        )
    };
    let limpet = spawn_limpet_with_file(&toml(0, 0)).await;
    assert_eq!(limpet.get("/api/admin/users").await.backend(), "admin");
    assert_eq!(limpet.get("/api/users").await.backend(), "api");
    assert_eq!(limpet.get("/index.html").await.backend(), "root");

    // As in Traefik v1, a priority replaces the rule's length in the ordering: 1 sorts below
    // every rule without one, 100 above.
    limpet.reload(&toml(0, 1)).await;
    assert_eq!(limpet.get("/api/admin/users").await.backend(), "api");
    limpet.reload(&toml(100, 0)).await;
    assert_eq!(limpet.get("/api/admin/users").await.backend(), "root");
    assert_eq!(limpet.get("/api/users").await.backend(), "root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_prefix_strip_forwards_the_rest_of_the_path() {
    let stripped = spawn_backend("stripped").await;
    let kept = spawn_backend("kept").await;
    let limpet = spawn_limpet_with_file(&format!(
        r#"
        [services.stripped]
        rule = "PathPrefixStrip:/api"
        servers = {}
        [services.kept]
        rule = "PathPrefix:/keep"
        servers = {}
        "#,
        servers(&[&stripped.url]),
        servers(&[&kept.url]),
    ))
    .await;

    for (sent, forwarded) in [
        ("/api/users/7?fields=name", "/users/7?fields=name"),
        ("/api/", "/"),
        ("/api", "/"),
    ] {
        let reply = limpet.get(sent).await;
        assert_eq!(reply.backend(), "stripped", "{sent}");
        let seen = stripped.last_request();
        assert_eq!(seen.target, forwarded, "{sent}");
        // As Traefik's strip-prefix does, so that the backend can build public links.
        assert_eq!(seen.header("x-forwarded-prefix"), Some("/api"), "{sent}");
    }
    limpet.get("/keep/this?x=1").await;
    let seen = kept.last_request();
    assert_eq!(seen.target, "/keep/this?x=1");
    assert_eq!(seen.header("x-forwarded-prefix"), None, "nothing stripped");
    // A client's (or an outer proxy's) prefix is replaced by what limpet stripped, and
    // passes on where limpet strips nothing.
    for (sent, backend, prefix) in [("/api/x", &stripped, "/api"), ("/keep/x", &kept, "/outer")] {
        limpet
            .send(Req::get(sent).header("x-forwarded-prefix", "/outer"))
            .await;
        let seen = backend.last_request();
        assert_eq!(seen.header("x-forwarded-prefix"), Some(prefix), "{sent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_routes_by_its_own_host() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.a]\nrule = \"Host:a.test\"\nservers = {}\n[services.b]\nrule = \"Host:b.test\"\nservers = {}\n",
        servers(&[&a.url]),
        servers(&[&b.url]),
    ))
    .await;

    // RFC 9112 §3.2.2: the target's authority replaces the Host header; Go's net/http, and
    // so Traefik v1, route by it too.
    let reply = limpet
        .send(Req::get("http://B.test:8080/x?y=1").host("a.test"))
        .await;
    assert_eq!(reply.backend(), "b");
    let seen = b.last_request();
    assert_eq!(seen.target, "/x?y=1", "forwarded in origin form");
    assert_eq!(seen.header("host"), Some("B.test:8080"));
    assert_eq!(seen.header("x-forwarded-host"), Some("B.test:8080"));
    assert_eq!(seen.header("x-forwarded-port"), Some("8080"));
    assert_eq!(a.request_count(), 0);
}
