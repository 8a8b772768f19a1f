//! Passive health (failures in a row take a server out for a cool-down) and active
//! monitors (TCP and HTTP probes with rise and fall), against backends that flap on command.

use crate::harness;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::{eventually, servers, Backend, Health, Limpet, Mode, Options};
use http::StatusCode;
use limpet::table::state::now_ms;

const LIMIT: Duration = Duration::from_secs(10);

/// Whether limpet has `server` of `service` in rotation.
fn in_rotation(l: &Limpet, service: &str, server: &Backend) -> bool {
    let table = l.table();
    let svc = table
        .services
        .iter()
        .find(|s| &*s.name == service)
        .unwrap_or_else(|| panic!("no service {service}"));
    let s = svc
        .servers
        .iter()
        .find(|s| *s.url == server.url())
        .unwrap_or_else(|| panic!("{} is not a server of {service}", server.name));
    s.is_up(now_ms())
}

fn web(list: &[&Backend], extra: &str) -> String {
    let list: Vec<(&Backend, &str)> = list.iter().map(|b| (*b, "")).collect();
    format!(
        r#"
[services.web]
rule = "PathPrefix:/"
method = "roundrobin"
servers = {}
{extra}
"#,
        servers(&list)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_takes_a_failing_server_out_for_the_cooldown_then_tries_it_again() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    a.set_mode(Mode::Status(500));
    let l = Limpet::start(&web(
        &[&a, &b],
        r#"passive_health = { max_failures = 2, cooldown = "500ms", statuses = [500] }"#,
    ))
    .await;
    // GETs answered 500 are retried on b: clients never see the failures.
    while a.hits() < 2 {
        let r = l.client.get("/").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.backend().as_deref(), Some("b"));
    }
    let second_failure = a.traffic()[1].at;
    assert!(!in_rotation(&l, "web", &a), "out after 2 failures in a row");
    a.set_mode(Mode::Ok);
    // During the cool-down every request goes to b, with no retry through a.
    let window_end = second_failure + Duration::from_millis(500);
    let mut during = 0;
    while Instant::now() + Duration::from_millis(100) < window_end {
        assert_eq!(l.client.get("/").await.backend().as_deref(), Some("b"));
        during += 1;
    }
    assert_eq!(a.hits(), 2, "a got traffic during its cool-down");
    assert!(during > 0);
    eventually("a is tried again after the cool-down", LIMIT, || async {
        l.client.get("/").await.backend().as_deref() == Some("a")
    })
    .await;
    let back = a.traffic()[2].at;
    assert!(
        back >= window_end,
        "a came back {:?} early",
        window_end - back
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_success_resets_the_failure_streak() {
    let a = Backend::start("a").await;
    let l = Limpet::start(&web(
        &[&a],
        r#"passive_health = { max_failures = 2, cooldown = "1m", statuses = [500] }"#,
    ))
    .await;
    for _ in 0..5 {
        a.set_mode(Mode::Status(500));
        assert_eq!(
            l.client.get("/").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        a.set_mode(Mode::Ok);
        assert_eq!(l.client.get("/").await.status, StatusCode::OK);
    }
    assert!(in_rotation(&l, "web", &a), "failures were never 2 in a row");
    a.set_mode(Mode::Status(500));
    l.client.get("/").await;
    l.client.get("/").await;
    assert!(!in_rotation(&l, "web", &a));
    assert_eq!(
        l.client.get("/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_and_timeouts_count_as_failures() {
    let refusing = Backend::start("refusing").await;
    let slow = Backend::start("slow").await;
    let ok = Backend::start("ok").await;
    refusing.refuse().await;
    slow.set_mode(Mode::Delay(Duration::from_secs(5)));
    // One service per kind of failure, so that a retry never lands on the other bad server.
    let service = |name: &str, bad: &Backend| {
        format!(
            r#"
[services.{name}]
rule = "PathPrefix:/{name}"
cookie_name = "sid"
passive_health = {{ max_failures = 2, cooldown = "1m" }}
servers = {}
"#,
            servers(&[(bad, ""), (&ok, "")])
        )
    };
    let toml = service("refused", &refusing) + &service("timeout", &slow);
    let options = Options {
        proxy: limpet::proxy::ProxySettings {
            response_header_timeout: Duration::from_millis(300),
            ..Options::default().proxy
        },
        ..Options::default()
    };
    let l = Limpet::start_with(&toml, options).await;
    for (name, bad) in [("refused", &refusing), ("timeout", &slow)] {
        let path = format!("/{name}");
        for i in 1..=2 {
            assert!(in_rotation(&l, name, bad), "{name} before failure {i}");
            // Pinned to the bad server, so the first attempt is certainly there; the retry
            // answers.
            let r = l
                .client
                .get_with_cookie(&path, &format!("sid={}", bad.url()))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            assert_eq!(r.backend().as_deref(), Some("ok"));
        }
        assert!(!in_rotation(&l, name, bad), "{name} after 2 failures");
        assert!(in_rotation(&l, name, &ok));
    }
    assert_eq!(slow.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_passive_failures_a_monitored_server_returns_only_when_its_monitor_passes() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    // A `fall` this high keeps the monitor itself from taking `a` out: only passive health
    // does, and only the monitor may bring it back.
    let l = Limpet::start(&web(
        &[&a, &b],
        r#"passive_health = { max_failures = 2, cooldown = "200ms", statuses = [500] }
health_check = { path = "/health", interval = "100ms", rise = 1, fall = 100 }"#,
    ))
    .await;
    eventually("a first probe passed", LIMIT, || async {
        a.probe_count() > 0
    })
    .await;
    a.set_health(Health::status(503));
    a.set_mode(Mode::Status(500));
    while a.hits() < 2 {
        assert_eq!(l.client.get("/").await.status, StatusCode::OK);
    }
    a.set_mode(Mode::Ok);
    // Several cool-downs pass; the monitor still fails, so `a` stays out.
    let until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < until {
        assert_eq!(l.client.get("/").await.backend().as_deref(), Some("b"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.hits(), 2);
    a.set_health(Health::status(200));
    eventually("a is back once its monitor passes", LIMIT, || async {
        l.client.get("/").await.backend().as_deref() == Some("a")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_burst_of_failures_does_not_keep_a_healthy_monitored_server_out() {
    // The monitor never sees anything wrong: the failures come and go between two probes.
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let l = Limpet::start(&web(
        &[&a, &b],
        r#"passive_health = { max_failures = 2, cooldown = "100ms", statuses = [500] }
health_check = { type = "tcp", interval = "200ms", rise = 1, fall = 1 }"#,
    ))
    .await;
    eventually("a serves", LIMIT, || async {
        l.client.get("/").await.backend().as_deref() == Some("a")
    })
    .await;
    a.set_mode(Mode::Status(500));
    let hits = a.hits();
    while a.hits() < hits + 2 {
        l.client.get("/").await;
    }
    a.set_mode(Mode::Ok);
    assert!(!in_rotation(&l, "web", &a));
    eventually("a is back after its next passing probe", LIMIT, || async {
        l.client.get("/").await.backend().as_deref() == Some("a")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_monitor_takes_a_refusing_server_out_and_brings_it_back() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    // Passive health off: only the monitor decides.
    let l = Limpet::start(&web(
        &[&a, &b],
        r#"passive_health = { max_failures = 0 }
health_check = { type = "tcp", interval = "100ms", rise = 1, fall = 1 }"#,
    ))
    .await;
    a.refuse().await;
    eventually("a is out", LIMIT, || async { !in_rotation(&l, "web", &a) }).await;
    for _ in 0..6 {
        assert_eq!(l.client.get("/").await.backend().as_deref(), Some("b"));
    }
    a.accept().await;
    eventually("a is back", LIMIT, || async {
        l.client.get("/").await.backend().as_deref() == Some("a")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_monitor_sends_the_configured_probe_and_checks_status_and_headers() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let good = Health {
        status: 204,
        headers: vec![("x-health".into(), "good".into())],
        hang: false,
    };
    a.set_health(good.clone());
    b.set_health(good.clone());
    let l = Limpet::start(&web(
        &[&a, &b],
        r#"passive_health = { max_failures = 0 }
[services.web.health_check]
path = "/healthz?deep=1"
method = "post"
headers = { "X-Probe" = "yes" }
body = "ping"
expect_status = [204]
expect_headers = { "X-Health" = "good" }
id_header = true
interval = "100ms"
rise = 1
fall = 1
"#,
    ))
    .await;
    eventually("a is probed", LIMIT, || async { a.probe_count() > 0 }).await;
    let probe = a.probes()[0].clone();
    assert_eq!(probe.method, http::Method::POST);
    assert_eq!(probe.target, "/healthz?deep=1");
    assert_eq!(probe.headers["x-probe"], "yes");
    assert_eq!(&probe.body[..], b"ping");
    let id = probe.headers["x-limpet-healthcheck-id"].to_str().unwrap();
    // <instance>/<service>/<server>/<epoch-ms>; the server id holds slashes of its own.
    let (rest, ms) = id.rsplit_once('/').unwrap();
    assert_eq!(rest, format!("test/web/file:web/{}", a.url()), "{id}");
    let ms: u128 = ms.parse().expect("epoch milliseconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(ms <= now && now - ms < 60_000, "{ms} vs now {now}");
    assert!(in_rotation(&l, "web", &a));

    // 200 is a success, but not the expected one.
    a.set_health(Health::status(200));
    eventually("a is out on 200", LIMIT, || async {
        !in_rotation(&l, "web", &a)
    })
    .await;
    for _ in 0..6 {
        assert_eq!(l.client.get("/").await.backend().as_deref(), Some("b"));
    }
    // The right status without the expected header is not enough either.
    a.set_health(Health::status(204));
    let probes = a.probe_count();
    eventually("two more probes", LIMIT, || async {
        a.probe_count() >= probes + 2
    })
    .await;
    assert!(
        !in_rotation(&l, "web", &a),
        "back without the expected header"
    );
    a.set_health(good);
    eventually("a is back", LIMIT, || async { in_rotation(&l, "web", &a) }).await;
    eventually("a serves", LIMIT, || async {
        l.client.get("/").await.backend().as_deref() == Some("a")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rise_and_fall_need_that_many_probes_in_a_row() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let l = Limpet::start(&web(
        &[&a, &b],
        r#"passive_health = { max_failures = 0 }
health_check = { path = "/health", interval = "300ms", rise = 2, fall = 3 }"#,
    ))
    .await;
    eventually("a serves", LIMIT, || async {
        l.client.get("/").await.backend().as_deref() == Some("a")
    })
    .await;

    let failing_since = Instant::now();
    a.set_health(Health::status(503));
    while in_rotation(&l, "web", &a) {
        l.client.get("/").await;
    }
    let failed: Vec<Instant> = a
        .probes()
        .iter()
        .filter(|p| p.at > failing_since && p.answered == 503)
        .map(|p| p.at)
        .collect();
    assert!(
        failed.len() >= 3,
        "out after {} failed probes",
        failed.len()
    );
    let last_served = a.traffic().last().unwrap().at;
    assert!(
        last_served > failed[1],
        "a stopped taking traffic after 2 failed probes; fall is 3"
    );

    let passing_since = Instant::now();
    a.set_health(Health::status(200));
    eventually("a serves again", LIMIT, || async {
        l.client.get("/").await.backend().as_deref() == Some("a")
    })
    .await;
    let passed: Vec<Instant> = a
        .probes()
        .iter()
        .filter(|p| p.at > passing_since && p.answered == 200)
        .map(|p| p.at)
        .collect();
    let back = a
        .traffic()
        .iter()
        .find(|t| t.at > passing_since)
        .unwrap()
        .at;
    assert!(
        passed.len() >= 2,
        "back after {} passing probes",
        passed.len()
    );
    assert!(
        back > passed[1],
        "a took traffic after 1 passing probe; rise is 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_can_target_another_port() {
    let a = Backend::start("a").await;
    let sidecar = Backend::start("sidecar").await;
    let l = Limpet::start(&web(
        &[&a],
        &format!(
            r#"health_check = {{ path = "/health", port = {}, interval = "100ms", rise = 1, fall = 1 }}"#,
            sidecar.addr.port()
        ),
    ))
    .await;
    eventually("the sidecar is probed", LIMIT, || async {
        sidecar.probe_count() > 0
    })
    .await;
    assert_eq!(l.client.get("/").await.backend().as_deref(), Some("a"));
    sidecar.set_health(Health::status(503));
    eventually("a is out, though its own port is fine", LIMIT, || async {
        l.client.get("/").await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    sidecar.set_health(Health::status(200));
    eventually("a is back", LIMIT, || async {
        l.client.get("/").await.backend().as_deref() == Some("a")
    })
    .await;
    assert_eq!(a.probe_count(), 0, "probes go to the other port only");
    assert_eq!(sidecar.hits(), 0, "traffic goes to the server's port only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_hangs_past_its_timeout_fails() {
    let a = Backend::start("a").await;
    let l = Limpet::start(&web(
        &[&a],
        r#"health_check = { path = "/health", interval = "100ms", timeout = "300ms", rise = 1, fall = 1 }"#,
    ))
    .await;
    eventually("a is probed", LIMIT, || async { a.probe_count() > 0 }).await;
    assert_eq!(l.client.get("/").await.status, StatusCode::OK);
    a.set_health(Health::hang());
    eventually("a is out", LIMIT, || async { !in_rotation(&l, "web", &a) }).await;
    a.set_health(Health::status(200));
    eventually("a is back", LIMIT, || async { in_rotation(&l, "web", &a) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_start_down_a_new_server_takes_no_traffic_before_its_first_pass() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let check = r#"health_check = { path = "/health", interval = "100ms", timeout = "1s", start_down = true, rise = 1, fall = 1 }"#;
    let l = Limpet::start(&web(&[&a], check)).await;
    eventually("a serves", LIMIT, || async {
        l.client.get("/").await.status == StatusCode::OK
    })
    .await;
    // b's first probe hangs until it times out: without start_down it would be in
    // rotation all that time.
    b.set_health(Health::hang());
    l.reload(&web(&[&a, &b], check)).await;
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        assert_eq!(l.client.get("/").await.backend().as_deref(), Some("a"));
    }
    b.set_health(Health::status(200));
    eventually("b serves after its first pass", LIMIT, || async {
        l.client.get("/").await.backend().as_deref() == Some("b")
    })
    .await;
    let first_pass = b
        .probes()
        .iter()
        .find(|p| p.answered == 200)
        .expect("a passing probe")
        .at;
    assert!(b.traffic().iter().all(|t| t.at > first_pass));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_health_check_brings_back_the_servers_it_had_taken_out() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let check = r#"health_check = { path = "/health", interval = "100ms", rise = 1, fall = 1 }"#;
    let l = Limpet::start(&web(&[&a, &b], check)).await;
    a.set_health(Health::status(503));
    eventually("a is out", LIMIT, || async { !in_rotation(&l, "web", &a) }).await;
    // The operator drops the check: nothing judges `a` any more, so nothing keeps it out.
    l.reload(&web(&[&a, &b], "")).await;
    eventually("a is back without a check", LIMIT, || async {
        l.client.get("/").await.backend().as_deref() == Some("a")
    })
    .await;
}

/// Whether limpet has the server at `addr` of `service` in rotation.
fn addr_in_rotation(l: &Limpet, service: &str, addr: std::net::SocketAddr) -> bool {
    let table = l.table();
    let svc = table
        .services
        .iter()
        .find(|s| &*s.name == service)
        .unwrap_or_else(|| panic!("no service {service}"));
    svc.servers
        .iter()
        .find(|s| s.authority.as_str() == addr.to_string())
        .unwrap_or_else(|| panic!("{addr} is not a server of {service}"))
        .is_up(now_ms())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_monitor_probes_tls_backends_with_the_services_ca() {
    use crate::support::certs::Ca;
    use crate::support::edge::{backend_tls, spawn_tls_backend, Speaks};
    use crate::support::logs;

    logs::capture();
    let ca = Ca::new("probe-tls");
    let leaf = ca.server("backend", &["127.0.0.1"]);
    let config = backend_tls(&leaf, None, &[b"http/1.1"]);
    let a = spawn_tls_backend("a", Speaks::Tls(config.clone())).await;
    let b = spawn_tls_backend("b", Speaks::Tls(config)).await;
    // The service's own copy of the bundle, replaced later as a secret update would.
    let bundle = ca.dir.path().join("bundle.pem");
    let replace = |pem: &str| {
        let aside = bundle.with_extension("new");
        std::fs::write(&aside, pem).unwrap();
        std::fs::rename(&aside, &bundle).unwrap();
    };
    replace(&ca.pem);
    let l = Limpet::start(&format!(
        r#"
[services.web]
rule = "PathPrefix:/"
protocol = "https"
servers = [{{ url = "{}" }}, {{ url = "{}" }}]
health_check = {{ path = "/health", tls = true, interval = "100ms", rise = 1, fall = 1 }}
[services.web.backend_tls]
ca = "{}"
"#,
        a.url,
        b.url,
        bundle.display()
    ))
    .await;
    let probed = |backend: &crate::support::edge::TlsBackend| {
        backend
            .requests()
            .iter()
            .filter(|r| r.target == "/health")
            .count()
    };
    eventually("both TLS backends to be probed", LIMIT, || async {
        probed(&a) > 0 && probed(&b) > 0
    })
    .await;
    assert_eq!(a.handshake_failures(), 0, "the probe verified with the CA");
    assert!(addr_in_rotation(&l, "web", a.addr) && addr_in_rotation(&l, "web", b.addr));

    a.set_health(503);
    eventually("a failing HTTPS probe to take a out", LIMIT, || async {
        !addr_in_rotation(&l, "web", a.addr)
    })
    .await;
    for _ in 0..10 {
        assert_eq!(l.client.get("/").await.backend().as_deref(), Some("b"));
    }
    a.set_health(200);
    eventually("a passing HTTPS probe to bring a back", LIMIT, || async {
        addr_in_rotation(&l, "web", a.addr)
    })
    .await;
    eventually("traffic to reach a again", LIMIT, || async {
        l.client.get("/").await.backend().as_deref() == Some("a")
    })
    .await;

    // A bundle that cannot be used is reported, and the probes go on with the previous one:
    // servers that answer stay in rotation.
    replace("not a certificate\n");
    eventually("a warning naming the bad bundle", LIMIT, || async {
        logs::count(&[
            "WARN",
            "health probes keep the previous ones",
            &bundle.display().to_string(),
        ]) > 0
    })
    .await;
    let probes = probed(&a);
    eventually("more probes after the bad bundle", LIMIT, || async {
        probed(&a) > probes + 2
    })
    .await;
    assert!(addr_in_rotation(&l, "web", a.addr) && addr_in_rotation(&l, "web", b.addr));
    assert_eq!(a.handshake_failures(), 0);

    // A backend whose certificate the bundle does not vouch for fails its probe.
    let stranger = Ca::new("probe-tls-stranger");
    replace(&stranger.pem);
    eventually("untrusted backends to be taken out", LIMIT, || async {
        !addr_in_rotation(&l, "web", a.addr) && !addr_in_rotation(&l, "web", b.addr)
    })
    .await;
    assert!(a.handshake_failures() > 0);
}
