//! Service options from the file: path rewriting, and settings that contradict themselves,
//! refused at start-up and on reload with a message naming the service and the setting.

use crate::harness;

use harness::limpet::{write_atomically, TempDir};
use harness::process::run_to_exit;
use harness::{servers, Backend, Client, Limpet, Process};
use http::StatusCode;

/// The path and query the backend received for `path`.
async fn forwarded(l: &Limpet, backend: &Backend, path: &str) -> String {
    let r = l.client.get(path).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    backend.traffic().last().unwrap().target.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_path_strip_prefix_and_path_prefix_strip_rewrite_the_path() {
    let based = Backend::start("based").await;
    let stripped = Backend::start("stripped").await;
    let both = Backend::start("both").await;
    let v1 = Backend::start("v1").await;
    let toml = format!(
        r#"
[services.based]
rule = "PathPrefix:/"
base_path = "/v1"
servers = {}

[services.stripped]
rule = "PathPrefix:/api"
strip_prefix = ["/api"]
servers = {}

[services.both]
rule = "PathPrefix:/both"
strip_prefix = ["/both"]
base_path = "/v2/"
servers = {}

[services.traefik]
rule = "PathPrefixStrip:/legacy"
servers = {}
"#,
        servers(&[(&based, "")]),
        servers(&[(&stripped, "")]),
        servers(&[(&both, "")]),
        servers(&[(&v1, "")]),
    );
    let l = Limpet::start(&toml).await;
    for (backend, sent, received) in [
        (&based, "/users?id=7", "/v1/users?id=7"),
        (&based, "/", "/v1/"),
        (&stripped, "/api/users?id=7", "/users?id=7"),
        (&stripped, "/api", "/"),
        (&both, "/both/users", "/v2/users"),
        (&v1, "/legacy/users?q=1", "/users?q=1"),
        (&v1, "/legacy", "/"),
    ] {
        assert_eq!(forwarded(&l, backend, sent).await, received, "{sent}");
    }
    // The prefix a service's strip_prefix took off reaches the backend, as a router's does.
    for (backend, sent, prefix) in [
        (&based, "/users", None),
        (&stripped, "/api/users", Some("/api")),
        (&both, "/both/users", Some("/both")),
        (&v1, "/legacy/users", Some("/legacy")),
    ] {
        forwarded(&l, backend, sent).await;
        let seen = backend.traffic().pop().unwrap();
        assert_eq!(
            seen.headers
                .get("x-forwarded-prefix")
                .map(|v| v.to_str().unwrap()),
            prefix,
            "{sent}"
        );
    }
}

/// A router that strips a prefix in front of a service that strips another: the backend is
/// told both, as the one path they make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_stripped_by_router_and_service_are_forwarded_as_one() {
    let backend = Backend::start("app").await;
    let toml = format!(
        r#"
[services.app]
rule = "PathPrefixStrip:/app/"
strip_prefix = ["/v1"]
servers = {}
"#,
        servers(&[(&backend, "")])
    );
    let l = Limpet::start(&toml).await;
    assert_eq!(
        forwarded(&l, &backend, "/app/v1/users?x=1").await,
        "/users?x=1"
    );
    let seen = backend.traffic().pop().unwrap();
    assert_eq!(seen.headers["x-forwarded-prefix"], "/app/v1");
}

/// A good file for `api`, to which `bad` adds one contradictory setting.
fn api(backend: &Backend, bad: &str) -> String {
    format!(
        r#"
[services.other]
rule = "PathPrefix:/other"
servers = {servers}

[services.api]
rule = "PathPrefix:/"
servers = {servers}
{bad}
"#,
        servers = servers(&[(backend, "")])
    )
}

/// Each contradictory setting, with the name the message must use for it.
const BAD: [(&str, &str); 9] = [
    (r#"fallback = "api""#, "fallback"),
    (r#"method = "fastest""#, "method"),
    (
        r#"passive_health = { statuses = [500, 999] }"#,
        "passive_health.statuses",
    ),
    (
        r#"health_check = { path = "/health", expect_status = [999] }"#,
        "health_check.expect_status",
    ),
    (
        r#"health_check = { type = "tcp", rise = 0 }"#,
        "health_check.rise",
    ),
    (
        r#"health_check = { type = "tcp", fall = 0 }"#,
        "health_check.fall",
    ),
    (
        r#"health_check = { type = "tcp", path = "/health" }"#,
        "health_check.path",
    ),
    (
        r#"health_check = { type = "tcp", port = 0 }"#,
        "health_check.port",
    ),
    (r#"retry = { attempts = 11 }"#, "retry.attempts"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradictory_settings_stop_the_binary_at_start_naming_file_service_and_setting() {
    let dir = TempDir::new();
    let a = Backend::start("a").await;
    let file = dir.path("limpet.toml");
    let path = file.to_str().unwrap();
    for (bad, setting) in BAD {
        write_atomically(&file, &api(&a, bad));
        let (status, stderr) = run_to_exit(&["--file.filename", path]).await;
        assert_eq!(status.code(), Some(1), "{bad}: {stderr}");
        for part in [path, "`api`", setting] {
            assert!(stderr.contains(part), "{bad}: no `{part}` in: {stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contradictory_edit_is_refused_and_the_last_good_table_keeps_serving() {
    let dir = TempDir::new();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let file = dir.path("limpet.toml");
    let path = file.to_str().unwrap();
    write_atomically(&file, &api(&a, ""));
    let p = Process::start(&["--file.filename", path, "--file.pollinterval", "50ms"]).await;
    let client = Client::new(p.addr);
    assert_eq!(client.get("/").await.backend().as_deref(), Some("a"));
    for (bad, setting) in BAD {
        write_atomically(&file, &api(&a, bad));
        let line = p
            .wait_for_line(&["ignoring the edit", "`api`", setting])
            .await;
        assert!(line.contains(path), "{line}");
        let r = client.get("/").await;
        assert_eq!(r.backend().as_deref(), Some("a"), "after `{bad}`");
        assert_eq!(
            client.get("/other").await.status,
            StatusCode::OK,
            "the other service keeps serving after `{bad}`"
        );
    }
    // Watching goes on: the next good edit is applied.
    write_atomically(&file, &api(&b, ""));
    harness::eventually(
        "the good edit is applied",
        std::time::Duration::from_secs(10),
        || async { client.get("/").await.backend().as_deref() == Some("b") },
    )
    .await;
}
