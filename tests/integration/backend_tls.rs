//! TLS towards backends (Apigee's SSLInfo), against real TLS backends on 127.0.0.1 with
//! certificates from a test CA: verification against a CA bundle or the system's roots, a
//! server name override, a client certificate for mutual TLS, the insecure switch, and
//! HTTP/2 over TLS.

use crate::support;

use std::path::Path;
use std::time::Duration;

use support::certs::{self_signed, Ca};
use support::edge::{backend_tls, spawn_tls_backend, Speaks, TlsBackend};
use support::{
    eventually, logs, spawn_limpet, spawn_limpet_with_file, within, Limpet, Options, Req,
};

/// A limpet routing `app.test` to `backend` with `protocol` and a `[backend_tls]` table.
async fn limpet_for(backend: &TlsBackend, protocol: &str, backend_tls: &str) -> Limpet {
    spawn_limpet_with_file(&config(backend, protocol, backend_tls)).await
}

fn config(backend: &TlsBackend, protocol: &str, backend_tls: &str) -> String {
    format!(
        "[services.api]\nrule = \"Host:app.test\"\nprotocol = \"{protocol}\"\n\
         servers = [{{ url = \"{}\" }}]\n\n[services.api.backend_tls]\n{backend_tls}\n",
        backend.url
    )
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_verifies_against_the_ca_bundle_and_not_against_system_roots() {
    logs::capture();
    let ca = Ca::new("bundle");
    let leaf = ca.server("backend", &["127.0.0.1"]);
    let backend =
        spawn_tls_backend("b", Speaks::Tls(backend_tls(&leaf, None, &[b"http/1.1"]))).await;

    let limpet = limpet_for(
        &backend,
        "https",
        &format!("ca = \"{}\"", path(&ca.pem_path)),
    )
    .await;
    let reply = limpet.get("/secure?x=1").await;
    assert_eq!(
        (reply.status.as_u16(), reply.text()),
        (200, "b HTTP/1.1"),
        "{reply:?}"
    );
    let seen = backend.requests().pop().expect("a request");
    assert_eq!(seen.target, "/secure?x=1");
    assert_eq!(seen.header("host"), Some("app.test"));

    // The same backend with the system's roots, which do not know the test CA.
    let limpet = spawn_limpet_with_file(&format!(
        "[services.api]\nrule = \"Host:app.test\"\nprotocol = \"https\"\n\
         servers = [{{ url = \"{}\" }}]\n",
        backend.url
    ))
    .await;
    let reply = limpet.get("/").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    let server = format!("https://{}", backend.addr);
    eventually(
        "a warning naming the server and the certificate problem",
        || {
            logs::count(&["WARN", &server, "UnknownIssuer"]) > 0
                || logs::count(&["WARN", "no system root certificates"]) > 0
        },
    )
    .await;
    assert_eq!(backend.requests().len(), 1, "nothing reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_override_sends_and_verifies_the_certificates_name() {
    logs::capture();
    let ca = Ca::new("name");
    // The certificate names a service, not the address limpet dials.
    let leaf = ca.server("backend", &["backend.internal"]);
    let backend =
        spawn_tls_backend("b", Speaks::Tls(backend_tls(&leaf, None, &[b"http/1.1"]))).await;
    let ca_line = format!("ca = \"{}\"", path(&ca.pem_path));

    let limpet = limpet_for(&backend, "https", &ca_line).await;
    let reply = limpet.get("/").await;
    assert_eq!(
        reply.status, 502,
        "the certificate is not valid for 127.0.0.1"
    );
    let server = format!("https://{}", backend.addr);
    eventually("a warning that the name does not match", || {
        logs::count(&["WARN", &server, "not valid for name"]) > 0
    })
    .await;

    limpet
        .reload(&config(
            &backend,
            "https",
            &format!("{ca_line}\nserver_name = \"backend.internal\""),
        ))
        .await;
    let reply = limpet.get("/").await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "b HTTP/1.1"));
    assert_eq!(
        backend.server_names().last().cloned().flatten().as_deref(),
        Some("backend.internal"),
        "the override is sent as SNI"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate_when_configured() {
    let ca = Ca::new("mtls");
    let leaf = ca.server("backend", &["127.0.0.1"]);
    let client = ca.client("limpet-client");
    let backend = spawn_tls_backend(
        "b",
        Speaks::Tls(backend_tls(&leaf, Some(&ca), &[b"http/1.1"])),
    )
    .await;
    let ca_line = format!("ca = \"{}\"", path(&ca.pem_path));

    let limpet = limpet_for(&backend, "https", &ca_line).await;
    let reply = limpet.get("/").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    eventually(
        "the backend to refuse a client without a certificate",
        || backend.handshake_failures() > 0,
    )
    .await;
    assert!(backend.requests().is_empty());

    limpet
        .reload(&config(
            &backend,
            "https",
            &format!(
                "{ca_line}\ncert = \"{}\"\nkey = \"{}\"",
                path(&client.files.cert),
                path(&client.files.key)
            ),
        ))
        .await;
    let reply = limpet.get("/").await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "b HTTP/1.1"));
    assert_eq!(backend.requests().len(), 1);

    // A client certificate from a CA the backend does not trust is refused as well.
    let stranger_ca = Ca::new("mtls-stranger");
    let stranger = stranger_ca.client("stranger");
    let failures = backend.handshake_failures();
    limpet
        .reload(&config(
            &backend,
            "https",
            &format!(
                "{ca_line}\ncert = \"{}\"\nkey = \"{}\"",
                path(&stranger.files.cert),
                path(&stranger.files.key)
            ),
        ))
        .await;
    assert_eq!(limpet.get("/").await.status, 502);
    eventually("the backend to refuse the stranger", || {
        backend.handshake_failures() > failures
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_accepts_an_untrusted_certificate_and_says_so() {
    logs::capture();
    let dir = support::certs::TempDir::new("insecure");
    let leaf = self_signed(dir.path(), "backend", &["nobody.test"]);
    let backend =
        spawn_tls_backend("b", Speaks::Tls(backend_tls(&leaf, None, &[b"http/1.1"]))).await;
    let limpet = limpet_for(&backend, "https", "insecure = true").await;
    let reply = limpet.get("/").await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "b HTTP/1.1"));
    assert!(
        logs::count(&["WARN", "not verified", "insecure"]) > 0,
        "the insecure switch is logged as a warning"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_speaks_http2_over_tls_to_the_backend() {
    let ca = Ca::new("h2");
    let leaf = ca.server("backend", &["127.0.0.1"]);
    let backend = spawn_tls_backend("b", Speaks::Tls(backend_tls(&leaf, None, &[b"h2"]))).await;
    let limpet = limpet_for(&backend, "h2", &format!("ca = \"{}\"", path(&ca.pem_path))).await;
    for _ in 0..3 {
        let reply = limpet.get("/two").await;
        assert_eq!((reply.status.as_u16(), reply.text()), (200, "b HTTP/2.0"));
    }
    let seen = backend.requests().pop().expect("a request");
    assert_eq!(seen.target, "/two");
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    // The client's host, not the backend's address, as an HTTP/1.1 backend gets in Host.
    assert_eq!(seen.authority.as_deref(), Some("app.test"));
    assert_eq!(seen.header("host"), None, "no second copy of the authority");
    assert_eq!(
        backend.server_names().len(),
        1,
        "one pooled HTTP/2 connection carries every request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_backends_see_the_clients_authority_on_one_connection() {
    let backend = spawn_tls_backend("b", Speaks::Plain).await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.api]\nrule = \"Host:app.test\"\nprotocol = \"h2c\"\n\
         servers = [{{ url = \"{}\" }}]\n\n\
         [services.raw]\nrule = \"Host:raw.test\"\nprotocol = \"h2c\"\n\
         pass_host_header = false\nservers = [{{ url = \"{}\" }}]\n",
        backend.url, backend.url
    ))
    .await;
    for _ in 0..3 {
        let reply = limpet.get("/one").await;
        assert_eq!((reply.status.as_u16(), reply.text()), (200, "b HTTP/2.0"));
    }
    let seen = backend.requests().pop().expect("a request");
    assert_eq!(seen.authority.as_deref(), Some("app.test"));
    assert_eq!(seen.header("x-forwarded-host"), Some("app.test"));

    // With the client's host switched off, the backend's own address, as for HTTP/1.1.
    let reply = limpet.send(Req::get("/two").host("raw.test")).await;
    assert_eq!(reply.status.as_u16(), 200, "{reply:?}");
    let seen = backend.requests().pop().expect("a request");
    assert_eq!(seen.authority, Some(backend.addr.to_string()));
    assert_eq!(
        backend.connections(),
        1,
        "one HTTP/2 connection per backend carries every request, whatever their hosts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ca_bundle_is_a_502_naming_the_file() {
    logs::capture();
    let ca = Ca::new("missing");
    let leaf = ca.server("backend", &["127.0.0.1"]);
    let backend =
        spawn_tls_backend("b", Speaks::Tls(backend_tls(&leaf, None, &[b"http/1.1"]))).await;
    let missing = ca.dir.path().join("no-such-ca.pem");
    let limpet = limpet_for(&backend, "https", &format!("ca = \"{}\"", path(&missing))).await;
    assert_eq!(limpet.get("/").await.status, 502);
    let named = path(&missing);
    eventually("a warning naming the CA bundle", || {
        logs::count(&["WARN", "`api`", &named]) > 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_ca_bundle_is_picked_up_and_a_bad_one_is_not() {
    logs::capture();
    let ca = Ca::new("reload-ca");
    let stranger = Ca::new("reload-stranger");
    let leaf = ca.server("backend", &["127.0.0.1"]);
    let backend =
        spawn_tls_backend("b", Speaks::Tls(backend_tls(&leaf, None, &[b"http/1.1"]))).await;
    // limpet's own copy of the bundle, which the test replaces as a secret update would.
    let bundle = stranger.dir.path().join("bundle.pem");
    let replace = |pem: &str| {
        let aside = bundle.with_extension("new");
        std::fs::write(&aside, pem).unwrap();
        std::fs::rename(&aside, &bundle).unwrap();
    };
    replace(&stranger.pem);
    let mut options = Options::default();
    // Pooled connections go quickly, so that later requests need new handshakes.
    options.proxy.idle_conn_timeout = Duration::from_millis(100);
    let limpet = spawn_limpet(
        &format!(
            "{}\n[services.api.passive_health]\nmax_failures = 1000\n",
            config(&backend, "https", &format!("ca = \"{}\"", path(&bundle)))
        ),
        options,
    )
    .await;
    assert_eq!(
        limpet.get("/").await.status,
        502,
        "the bundle does not know the CA"
    );

    replace(&ca.pem);
    within("limpet to trust the replaced bundle", async {
        while limpet.get("/").await.status != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    eventually("a log line naming the new files", || {
        logs::count(&["INFO", "backend TLS files changed", &path(&bundle)]) > 0
    })
    .await;

    // A bundle that cannot be used: said once, and the previous one stays, for new
    // connections too. Files are looked at when the client is used.
    replace("not a certificate\n");
    let before = backend.connections();
    within("a warning, then a request on a new connection", async {
        while backend.connections() == before
            || logs::count(&["WARN", "cannot be used", &path(&bundle)]) == 0
        {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let reply = limpet.get("/").await;
            assert_eq!(reply.status, 200, "{reply:?}");
        }
    })
    .await;
    assert_eq!(
        logs::count(&["WARN", "cannot be used", &path(&bundle)]),
        1,
        "the bad file is reported once, not on every request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_backend_connection_is_closed_and_redialled_on_demand() {
    let backend = spawn_tls_backend("b", Speaks::Plain).await;
    let mut options = Options::default();
    options.proxy.idle_conn_timeout = Duration::from_millis(200);
    let limpet = spawn_limpet(
        &format!(
            "[services.api]\nrule = \"Host:app.test\"\nprotocol = \"h2c\"\n\
             servers = [{{ url = \"{}\" }}]\n",
            backend.url
        ),
        options,
    )
    .await;
    assert_eq!(limpet.get("/").await.status, 200);
    assert_eq!(backend.connections(), 1);
    eventually("limpet to close its idle connection", || {
        backend.open_connections() == 0
    })
    .await;
    let reply = limpet.get("/again").await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "b HTTP/2.0"));
    assert_eq!(
        backend.connections(),
        2,
        "a new connection for the next request"
    );
}
