//! The TLS entrypoint with real TLS clients on 127.0.0.1: the certificate chosen by SNI (a
//! default for unknown or absent names), ALPN h2 and http/1.1, reloading certificate files
//! (and keeping the old ones when the new files are bad), handshake failures that concern
//! one connection only, start-up errors naming the file, the HTTP→HTTPS redirect, h2c on
//! the plain entrypoint, and curl and h2load as outside clients.

use crate::support;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Version;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::certs::{Ca, Leaf};
use support::edge::{
    client_config, get, have, https_get, negotiated, presented, send_over, spawn_edge,
    spawn_tls_backend, tls_connect, Edge, EdgeOptions, Speaks,
};
use support::{eventually, logs, servers, spawn_backend, within, Backend};

/// Three certificates: the default first, one name, and a wildcard.
struct Certs {
    ca: Ca,
    default: Leaf,
    app: Leaf,
    wild: Leaf,
}

fn certs(name: &str) -> Certs {
    let ca = Ca::new(name);
    let default = ca.server("default", &["default.test"]);
    let app = ca.server("app", &["app.test"]);
    let wild = ca.server("wild", &["*.wild.test"]);
    Certs {
        ca,
        default,
        app,
        wild,
    }
}

async fn edge_for(backend: &Backend, certs: &Certs) -> Edge {
    spawn_edge(
        &format!(
            "[services.web]\nrule = \"PathPrefix:/\"\nservers = {}\n",
            servers(&[&backend.url])
        ),
        EdgeOptions::new(vec![
            certs.default.files.clone(),
            certs.app.files.clone(),
            certs.wild.files.clone(),
        ]),
    )
    .await
}

/// A verifier that accepts whatever the server presents and keeps it, to learn which
/// certificate a name limpet has none for gets.
#[derive(Debug)]
struct Keep(Mutex<Option<CertificateDer<'static>>>);

impl ServerCertVerifier for Keep {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        limpet::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate limpet presents for `sni`, whatever it is.
async fn certificate_for(edge: &Edge, sni: &str) -> CertificateDer<'static> {
    let keep = Arc::new(Keep(Mutex::new(None)));
    let config = rustls::ClientConfig::builder_with_provider(limpet::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(keep.clone())
        .with_no_client_auth();
    tls_connect(edge.tls, Arc::new(config), sni)
        .await
        .expect("handshake");
    let cert = keep.0.lock().unwrap().take();
    cert.expect("a certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_certificate_and_other_names_get_the_default() {
    let backend = spawn_backend("a").await;
    let certs = certs("sni");
    let edge = edge_for(&backend, &certs).await;
    let trusting = client_config(&certs.ca, &[b"http/1.1"]);

    // Verified for the name asked, by a client that trusts only the test CA.
    for (sni, leaf) in [
        ("app.test", &certs.app),
        ("x.wild.test", &certs.wild),
        ("default.test", &certs.default),
    ] {
        let stream = tls_connect(edge.tls, Arc::clone(&trusting), sni)
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert!(presented(&stream) == leaf.der, "{sni}: wrong certificate");
    }

    // A name limpet has no certificate for gets the default one (and its own error).
    assert!(certificate_for(&edge, "unknown.test").await == certs.default.der);
    assert!(certificate_for(&edge, "a.b.wild.test").await == certs.default.der);
    let refused = tls_connect(edge.tls, Arc::clone(&trusting), "unknown.test").await;
    assert!(
        refused.is_err(),
        "the default is not valid for unknown.test"
    );

    // No SNI at all: the default, which verifies for its own name.
    let mut no_sni = (*client_config(&certs.ca, &[b"http/1.1"])).clone();
    no_sni.enable_sni = false;
    let stream = tls_connect(edge.tls, Arc::new(no_sni), "default.test")
        .await
        .expect("the default certificate without SNI");
    assert!(presented(&stream) == certs.default.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_several_certificates_valid_for_a_name_the_first_listed_wins() {
    let backend = spawn_backend("a").await;
    let certs = certs("order");
    // An exact name listed after a wildcard that covers it, and the reverse.
    let exact_late = certs.ca.server("exact-late", &["x.wild.test"]);
    let exact_early = certs.ca.server("exact-early", &["y.wild.test", "APP.test"]);
    let edge = spawn_edge(
        &format!(
            "[services.web]\nrule = \"PathPrefix:/\"\nservers = {}\n",
            servers(&[&backend.url])
        ),
        EdgeOptions::new(vec![
            certs.default.files.clone(),
            exact_early.files.clone(),
            certs.wild.files.clone(),
            exact_late.files.clone(),
            certs.app.files.clone(),
        ]),
    )
    .await;
    for (sni, leaf) in [
        ("x.wild.test", &certs.wild),
        ("y.wild.test", &exact_early),
        ("z.wild.test", &certs.wild),
        // Names compare without regard to case, in the certificate as in the request.
        ("app.test", &exact_early),
        ("App.Test", &exact_early),
    ] {
        assert!(
            certificate_for(&edge, sni).await == leaf.der,
            "{sni}: wrong certificate"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_h2_and_http11_both_reach_the_backend_as_https() {
    let backend = spawn_backend("a").await;
    let certs = certs("alpn");
    let edge = edge_for(&backend, &certs).await;

    for (alpn, version) in [
        (&b"h2"[..], Version::HTTP_2),
        (&b"http/1.1"[..], Version::HTTP_11),
    ] {
        let stream = tls_connect(edge.tls, client_config(&certs.ca, &[alpn]), "app.test")
            .await
            .expect("handshake");
        assert_eq!(negotiated(&stream).as_deref(), Some(alpn));
        drop(stream);
        let (got, reply) = https_get(edge.tls, &certs.ca, "app.test", alpn, "/where?x=1").await;
        assert_eq!(got, version);
        assert_eq!(
            (reply.status.as_u16(), reply.text()),
            (200, "a"),
            "{reply:?}"
        );
        let seen = backend.last_request();
        assert_eq!(seen.target, "/where?x=1");
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
        assert_eq!(seen.header("x-forwarded-host"), Some("app.test"));
        assert_eq!(
            seen.header("x-forwarded-port"),
            Some(edge.tls.port().to_string().as_str()),
            "no port in the authority: the entrypoint's"
        );
    }

    // A client offering both gets h2, limpet's first preference.
    let stream = tls_connect(
        edge.tls,
        client_config(&certs.ca, &[b"h2", b"http/1.1"]),
        "app.test",
    )
    .await
    .unwrap();
    assert_eq!(negotiated(&stream).as_deref(), Some(&b"h2"[..]));
    // And one offering no ALPN at all speaks HTTP/1.1.
    let stream = tls_connect(edge.tls, client_config(&certs.ca, &[]), "app.test")
        .await
        .unwrap();
    assert_eq!(negotiated(&stream), None);
    let mut req = get("app.test", "/");
    *req.version_mut() = Version::HTTP_11;
    let (version, reply) = send_over(stream, false, req).await;
    assert_eq!((version, reply.status.as_u16()), (Version::HTTP_11, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_are_picked_up_and_bad_ones_are_not() {
    logs::capture();
    let backend = spawn_backend("a").await;
    let certs = certs("reload");
    let edge = edge_for(&backend, &certs).await;
    let trusting = client_config(&certs.ca, &[b"http/1.1"]);
    let current = |sni: &'static str| {
        let config = Arc::clone(&trusting);
        async move {
            presented(
                &tls_connect(edge.tls, config, sni)
                    .await
                    .expect("a handshake"),
            )
        }
    };
    assert!(current("app.test").await == certs.app.der);

    // A rotated secret: new key, new certificate, same files.
    let renewed = certs.ca.server("app-renewed", &["app.test"]);
    certs
        .app
        .overwrite_with(&renewed.cert_pem, &renewed.key_pem);
    within("the renewed certificate to be presented", async {
        while current("app.test").await != renewed.der {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // A bad rotation: the certificate of one pair with the key of another. limpet says so
    // and keeps presenting the certificate it has. (The good rotation may have warned too,
    // when it saw the new certificate before the new key: only new warnings count.)
    let key_path = certs.app.files.key.display().to_string();
    let warned = || logs::count(&["cannot be loaded", "keeping the ones in use", &key_path]);
    let before = warned();
    let other = certs.ca.server("other", &["app.test"]);
    certs.app.overwrite_with(&other.cert_pem, &renewed.key_pem);
    eventually("a warning about the unusable files", || warned() > before).await;
    for _ in 0..3 {
        assert!(current("app.test").await == renewed.der, "kept the old one");
    }
    // The other names were never affected.
    assert!(current("x.wild.test").await == certs.wild.der);
    let (_, reply) = https_get(edge.tls, &certs.ca, "app.test", b"h2", "/").await;
    assert_eq!(reply.status, 200);

    // A key file that holds no key at all is refused the same way.
    certs.app.overwrite_with(&renewed.cert_pem, "not a key\n");
    eventually("a warning naming the key file", || {
        logs::count(&["holds no PEM private key", &key_path]) > 0
    })
    .await;
    assert!(current("app.test").await == renewed.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_failed_handshakes_concern_only_their_own_connection() {
    let backend = spawn_backend("a").await;
    let certs = certs("garbage");
    let edge = edge_for(&backend, &certs).await;

    // Plain HTTP on the TLS port: limpet drops that connection.
    let mut garbage = TcpStream::connect(edge.tls).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    // A client that stalls mid-handshake, holding its connection open.
    let mut stalled = TcpStream::connect(edge.tls).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
    // A client that does not trust limpet's certificate gives up on its side.
    let stranger = Ca::new("stranger");
    let distrust = tls_connect(edge.tls, client_config(&stranger, &[b"h2"]), "app.test").await;
    assert!(distrust.is_err(), "an untrusted certificate was accepted");

    // Meanwhile an ordinary client is served, over both protocols.
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let (_, reply) = https_get(edge.tls, &certs.ca, "app.test", alpn, "/").await;
        assert_eq!((reply.status.as_u16(), reply.text()), (200, "a"));
    }

    // The garbage connection was closed (perhaps after an alert), not left hanging.
    let mut buf = [0u8; 256];
    within("limpet to close the garbage connection", async {
        loop {
            match garbage.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    // The stalled one is still pending, and harms nobody.
    let (_, reply) = https_get(edge.tls, &certs.ca, "x.wild.test", b"h2", "/").await;
    assert_eq!(reply.status, 200);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_reaches_http1_and_h2c_backends() {
    let http1 = spawn_backend("old").await;
    let h2c = spawn_tls_backend("new", Speaks::Plain).await;
    let certs = certs("h2c");
    let mut options = EdgeOptions::new(vec![certs.default.files.clone()]);
    options.h2c = true;
    let edge = spawn_edge(
        &format!(
            "[services.old]\nrule = \"Host:old.test\"\nservers = {}\n\n\
             [services.new]\nrule = \"Host:new.test\"\nprotocol = \"h2c\"\nservers = {}\n",
            servers(&[&http1.url]),
            servers(&[&h2c.url])
        ),
        options,
    )
    .await;

    let h2c_get = |host: &'static str| async move {
        let tcp = TcpStream::connect(edge.plain).await.unwrap();
        let mut req = get(host, "/x");
        *req.uri_mut() = format!("http://{host}/x").parse().unwrap();
        send_over(tcp, true, req).await
    };
    let (version, reply) = h2c_get("old.test").await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "old"));
    assert_eq!(
        http1.last_request().header("x-forwarded-proto"),
        Some("http")
    );
    assert_eq!(http1.last_request().header("host"), Some("old.test"));

    let (version, reply) = h2c_get("new.test").await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(
        (reply.status.as_u16(), reply.text()),
        (200, "new HTTP/2.0"),
        "the backend was spoken to in h2c"
    );
    let seen = h2c.requests().pop().expect("a request");
    assert_eq!(seen.target, "/x");

    // HTTP/1.1 still works on the same entrypoint.
    let (version, reply) = send_over(TcpStream::connect(edge.plain).await.unwrap(), false, {
        let mut r = get("new.test", "/");
        *r.uri_mut() = "/".parse().unwrap();
        r
    })
    .await;
    assert_eq!((version, reply.text()), (Version::HTTP_11, "new HTTP/2.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_h2c_the_plain_entrypoint_refuses_prior_knowledge() {
    let backend = spawn_backend("a").await;
    let certs = certs("noh2c");
    let edge = edge_for(&backend, &certs).await;
    let mut tcp = TcpStream::connect(edge.plain).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    within("limpet to answer or close", tcp.read_to_end(&mut answer))
        .await
        .ok();
    assert!(
        answer.is_empty(),
        "prior knowledge must not be served: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // HTTP/1.1 is served as ever.
    let reply = support::Conn::open(edge.plain).await.get("/").await;
    assert_eq!(reply.status, 200);
}

// ---- The binary: flags, start-up errors, redirect, and outside clients. ----

fn limpet() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_limpet"));
    command.env_clear().env("NO_COLOR", "1");
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary running until dropped; killed however the test ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A file-provider configuration routing every request to `backend`.
fn write_config(ca: &Ca, backend: &Backend) -> String {
    let path = ca.dir.path().join("limpet.toml");
    std::fs::write(
        &path,
        format!(
            "[services.web]\nrule = \"PathPrefix:/\"\nservers = {}\n",
            servers(&[&backend.url])
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn pair(leaf: &Leaf) -> String {
    format!("{},{}", leaf.files.cert.display(), leaf.files.key.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_to_start_with_a_missing_or_mismatched_pair_naming_the_file() {
    let backend = spawn_backend("a").await;
    let certs = certs("start");
    let config = write_config(&certs.ca, &backend);
    let missing = certs.ca.dir.path().join("absent.key");
    let other = certs.ca.server("other", &["other.test"]);
    let empty = certs.ca.dir.path().join("empty.crt");
    std::fs::write(&empty, "").unwrap();
    let cases = [
        (
            format!("{},{}", certs.app.files.cert.display(), missing.display()),
            missing.display().to_string(),
        ),
        (
            format!(
                "{},{}",
                certs.app.files.cert.display(),
                other.files.key.display()
            ),
            other.files.key.display().to_string(),
        ),
        (
            format!("{},{}", empty.display(), certs.app.files.key.display()),
            empty.display().to_string(),
        ),
    ];
    for (flag, named) in cases {
        let output = tokio::task::spawn_blocking({
            let (config, flag) = (config.clone(), flag.clone());
            move || {
                limpet()
                    .args(["--file.filename", &config, "--entrypoint", "127.0.0.1:0"])
                    .args(["--tls.address", "127.0.0.1:0", "--tls.certificate", &flag])
                    .output()
                    .expect("run limpet")
            }
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{flag}: {stderr}");
        assert!(
            stderr.contains(&named),
            "{flag}: should name {named}: {stderr}"
        );
    }
}

/// Starts the binary with a plain entrypoint, a TLS one and `extra` flags, and waits until
/// both accept connections.
async fn start_binary(certs: &Certs, backend: &Backend, extra: &[&str]) -> (Running, u16, u16) {
    let config = write_config(&certs.ca, backend);
    let (plain, tls) = (free_port(), free_port());
    let child = limpet()
        .args(["--file.filename", &config])
        .args(["--entrypoint", &format!("127.0.0.1:{plain}")])
        .args(["--tls.address", &format!("127.0.0.1:{tls}")])
        .args(["--tls.certificate", &pair(&certs.default)])
        .args(["--tls.certificate", &pair(&certs.app)])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start limpet");
    let running = Running(child);
    eventually("limpet to listen on both entrypoints", || {
        std::net::TcpStream::connect(("127.0.0.1", plain)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", tls)).is_ok()
    })
    .await;
    (running, plain, tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_entrypoint_answers_308_to_https_and_the_tls_one_serves() {
    let backend = spawn_backend("a").await;
    let certs = certs("redirect");
    let (_limpet, plain, tls) = start_binary(&certs, &backend, &["--entrypoint.redirect"]).await;

    let mut conn = support::Conn::open(([127, 0, 0, 1], plain).into()).await;
    let reply = conn
        .send(support::Req::post("/form?x=1", support::client::full("body")).host("app.test:8000"))
        .await;
    assert_eq!(reply.status, 308, "{reply:?}");
    assert_eq!(
        reply.headers["location"],
        format!("https://app.test:{tls}/form?x=1").as_str()
    );
    assert_eq!(
        backend.request_count(),
        0,
        "nothing was proxied in plain HTTP"
    );

    let tls_addr = ([127, 0, 0, 1], tls).into();
    let (version, reply) = https_get(tls_addr, &certs.ca, "app.test", b"h2", "/form").await;
    assert_eq!((version, reply.status.as_u16()), (Version::HTTP_2, 200));
    assert_eq!(
        backend.last_request().header("x-forwarded-proto"),
        Some("https")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_h2load_over_tls_with_sni_and_alpn() {
    if !have("curl") {
        return;
    }
    let backend = spawn_backend("a").await;
    let certs = certs("curl");
    let (_limpet, plain, tls) = start_binary(&certs, &backend, &["--entrypoint.h2c"]).await;
    let ca = certs.ca.pem_path.display().to_string();

    // `--resolve` keeps curl on 127.0.0.1 while it asks for app.test by SNI and verifies
    // the certificate for that name against the test CA.
    for (flag, expected) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let output = Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10", flag])
            .args(["--cacert", &ca])
            .args(["--resolve", &format!("app.test:{tls}:127.0.0.1")])
            .args(["--write-out", "\n%{http_code} %{http_version}"])
            .arg(format!("https://app.test:{tls}/curl"))
            .output()
            .expect("run curl");
        let out = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "curl {flag}: {out} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(out, format!("a\n200 {expected}"), "curl {flag}");
    }
    // h2c with prior knowledge on the plain entrypoint.
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args([
            "--http2-prior-knowledge",
            "--write-out",
            "\n%{http_version}",
        ])
        .args(["-H", "Host: app.test"])
        .arg(format!("http://127.0.0.1:{plain}/"))
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "a\n2");

    if !have("h2load") {
        return;
    }
    for extra in [&[][..], &["--h1"][..]] {
        let output = Command::new("h2load")
            .args(["-n", "200", "-c", "4", "-m", "4", "-T", "10", "-N", "10"])
            .args(extra)
            .arg(format!("--connect-to=127.0.0.1:{tls}"))
            .arg("https://app.test/load")
            .output()
            .expect("run h2load");
        let out = String::from_utf8_lossy(&output.stdout);
        let protocol = if extra.is_empty() { "h2" } else { "http/1.1" };
        assert!(
            out.contains(&format!("Application protocol: {protocol}")),
            "{out}"
        );
        assert!(out.contains("200 succeeded, 0 failed, 0 errored"), "{out}");
        assert!(out.contains("status codes: 200 2xx"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_that_requires_tls_does_not_exist_on_the_plain_entrypoint() {
    let (secure, open) = (spawn_backend("secure").await, spawn_backend("open").await);
    let certs = certs("require");
    let edge = spawn_edge(
        &format!(
            "[services.secure]\nrule = \"Host:app.test\"\ntls = true\nservers = {}\n\n\
             [services.open]\nrule = \"Host:app.test\"\npriority = -1\nservers = {}\n",
            servers(&[&secure.url]),
            servers(&[&open.url])
        ),
        EdgeOptions::new(vec![certs.app.files.clone()]),
    )
    .await;

    let (_, reply) = https_get(edge.tls, &certs.ca, "app.test", b"h2", "/").await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "secure"));
    // In plain HTTP the TLS-only router is skipped: the next one matching answers, and
    // without one the route does not exist.
    let reply = support::Conn::open(edge.plain).await.get("/").await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "open"));
    edge.reload(&format!(
        "[services.secure]\nrule = \"Host:app.test\"\ntls = true\nservers = {}\n",
        servers(&[&secure.url])
    ))
    .await;
    let reply = support::Conn::open(edge.plain).await.get("/").await;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(secure.request_count(), 1);
    let (_, reply) = https_get(edge.tls, &certs.ca, "app.test", b"http/1.1", "/").await;
    assert_eq!(reply.status, 200);
}
