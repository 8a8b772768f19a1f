//! Sticky sessions across cookie modes, key rotation and several replicas: the cookie's
//! attributes, sealed values, and replicas that agree on where a session lives and where a
//! stale one moves.

use crate::harness;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use harness::limpet::{reload_all, write_atomically, TempDir};
use harness::process::run_to_exit;
use harness::{servers, Backend, Limpet, Options, Process, Session};
use http::StatusCode;
use limpet::sticky::Keyring;
use limpet::table::spec::CookieMode;

const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

/// `web` on `/`, round robin over `list`, cookie `sid` with `cookie` settings.
fn web(list: &[&Backend], cookie: &str) -> String {
    let list: Vec<(&Backend, &str)> = list.iter().map(|b| (*b, "")).collect();
    format!(
        r#"
[services.web]
rule = "PathPrefix:/"
method = "roundrobin"
cookie_name = "sid"
cookie = {{ {cookie} }}
servers = {}
"#,
        servers(&list)
    )
}

/// The server identity limpet seals for a file server.
fn id_of(service: &str, b: &Backend) -> String {
    format!("file:{service}/{}", b.url())
}

fn keys(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn ring(dir: &TempDir, text: &str) -> Arc<Keyring> {
    Arc::new(Keyring::load(&keys(dir, "ring", text)).unwrap())
}

fn attributes(set_cookie: &str) -> BTreeSet<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_owned())
        .collect()
}

/// One GET of `/` with the cookie `sid=<value>`.
async fn with_cookie(l: &Limpet, value: &str) -> harness::Reply {
    l.client.get_with_cookie("/", &format!("sid={value}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_attributes_appear_as_configured() {
    let a = Backend::start("a").await;
    let toml = web(
        &[&a],
        r#"secure = true, same_site = "strict", max_age = "1h", path = "/app", domain = "example.test""#,
    ) + &format!(
        r#"
[services.plain]
rule = "PathPrefix:/plain"
cookie_name = "plain"
cookie = {{ http_only = false, same_site = "none" }}
servers = {}
"#,
        servers(&[(&a, "")])
    );
    let l = Limpet::start(&toml).await;

    let r = l.client.get("/").await;
    let header = r
        .set_cookie_header("sid")
        .expect("a cookie for a new session");
    assert!(header.starts_with(&format!("sid={};", a.url())), "{header}");
    let expected: BTreeSet<String> = [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Max-Age=3600",
        "Path=/app",
        "Domain=example.test",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(attributes(&header), expected, "{header}");

    let r = l.client.get("/plain").await;
    let header = r.set_cookie_header("plain").unwrap();
    let got = attributes(&header);
    assert!(!got.contains("HttpOnly"), "http_only = false: {header}");
    assert!(got.contains("SameSite=None"), "{header}");
    assert!(got.contains("Path=/"), "{header}");
    assert!(
        !got.iter()
            .any(|a| a.starts_with("Max-Age") || a.starts_with("Domain")),
        "a session cookie for this host only: {header}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_refreshes_the_cookie_on_every_response_to_a_pinned_client() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let toml = web(&[&a, &b], r#"sliding = true, max_age = "10m""#)
        + &format!(
            r#"
[services.fixed]
rule = "PathPrefix:/fixed"
cookie_name = "fixed"
servers = {}
"#,
            servers(&[(&a, ""), (&b, "")])
        );
    let l = Limpet::start(&toml).await;
    let mut s = Session::new(&l.client);
    let first = s.get("/").await;
    let home = first.backend().unwrap();
    let value = first.cookie("sid").unwrap();
    for i in 0..5 {
        let r = s.get("/").await;
        assert_eq!(r.backend().unwrap(), home);
        let header = r.set_cookie_header("sid").unwrap_or_else(|| {
            panic!("pinned response {i} of a sliding cookie carries no Set-Cookie")
        });
        assert!(header.contains("Max-Age=600"), "{header}");
        assert_eq!(r.cookie("sid").unwrap(), value);
    }
    // Without sliding the cookie is set once.
    let mut s = Session::new(&l.client);
    assert!(s.get("/fixed").await.cookie("fixed").is_some());
    for _ in 0..3 {
        assert_eq!(s.get("/fixed").await.cookie("fixed"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_mode_pins_with_an_opaque_16_hex_digit_value() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let refs: Vec<&Backend> = backends.iter().collect();
    let l = Limpet::start(&web(&refs, r#"mode = "hash""#)).await;
    let mut homes = BTreeSet::new();
    for _ in 0..3 {
        let mut s = Session::new(&l.client);
        let r = s.get("/").await;
        let home = r.backend().unwrap();
        let value = r.cookie("sid").unwrap();
        assert_eq!(value.len(), 16, "{value}");
        assert!(value.bytes().all(|b| b.is_ascii_hexdigit()), "{value}");
        let b = backends.iter().find(|b| b.name == home).unwrap();
        assert_eq!(value, limpet::sticky::url_hash(&b.url()));
        for _ in 0..5 {
            let r = s.get("/").await;
            assert_eq!(r.backend().unwrap(), home);
            assert_eq!(r.cookie("sid"), None);
        }
        homes.insert(home);
    }
    assert_eq!(homes.len(), 3, "three new sessions, three servers");
    // A well-formed hash naming no server is re-pinned; garbage is ignored: both get a
    // fresh cookie.
    for v in ["0123456789abcdef", "zz", "http://127.0.0.1:1"] {
        let r = with_cookie(&l, v).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.cookie("sid").is_some(), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_cookie_reveals_no_address_and_pins() {
    let dir = TempDir::new();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let options = Options::sealed(&keys(&dir, "keys", &format!("k1 {K1}\n")));
    let l = Limpet::start_with(&web(&[&a, &b], r#"mode = "sealed""#), options).await;
    for _ in 0..2 {
        let mut s = Session::new(&l.client);
        let r = s.get("/").await;
        let home = r.backend().unwrap();
        let server = if home == "a" { &a } else { &b };
        let value = r.cookie("sid").unwrap();
        let (id, payload) = value.split_once('.').expect("<key id>.<payload>");
        assert_eq!(id, "k1");
        assert!(!value.contains("127.0.0.1"), "{value}");
        assert!(!value.contains(&server.addr.port().to_string()), "{value}");
        let raw = URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
        let plain = id_of("web", server);
        assert!(
            !raw.windows(9).any(|w| w == b"127.0.0.1") && !raw.windows(5).any(|w| w == b"file:"),
            "the payload carries the identity in the clear: {plain}"
        );
        for _ in 0..5 {
            let r = s.get("/").await;
            assert_eq!(r.backend().unwrap(), home);
            assert_eq!(r.cookie("sid"), None);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_foreign_and_truncated_sealed_cookies_count_as_absent() {
    let dir = TempDir::new();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let options = Options::sealed(&keys(&dir, "keys", &format!("k1 {K1}\n")));
    let mine = options.keyring.clone().unwrap();
    let l = Limpet::start_with(&web(&[&a, &b], r#"mode = "sealed""#), options).await;
    let now = SystemTime::now();
    let good = mine.seal("web", &id_of("web", &a), now);
    assert_eq!(with_cookie(&l, &good).await.backend().as_deref(), Some("a"));

    let mut edited = good.clone().into_bytes();
    let i = edited.len() / 2;
    edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    // Same key id, other key material.
    let foreign = ring(&dir, &format!("k1 {K2}\n")).seal("web", &id_of("web", &a), now);
    let truncated = good[..good.len() - 6].to_owned();
    let other_service = mine.seal("api", &id_of("web", &a), now);
    for (what, value) in [
        ("edited", edited),
        ("foreign", foreign),
        ("truncated", truncated),
        ("sealed for another service", other_service),
    ] {
        // Treated as no cookie: balanced (so both servers answer in turn), and each
        // response offers a fresh cookie.
        let mut seen = BTreeSet::new();
        for _ in 0..4 {
            let r = with_cookie(&l, &value).await;
            assert_eq!(r.status, StatusCode::OK);
            let fresh = r
                .cookie("sid")
                .unwrap_or_else(|| panic!("{what}: no fresh cookie"));
            assert!(fresh.starts_with("k1.") && fresh != value, "{what}");
            seen.insert(r.backend().unwrap());
        }
        assert_eq!(seen.len(), 2, "{what}: balanced, not pinned: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_key_rotation_old_cookies_still_pin_and_new_ones_use_the_new_key() {
    let dir = TempDir::new();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let toml = web(&[&a, &b], r#"mode = "sealed""#);
    let keyfile = keys(&dir, "keys", &format!("k1 {K1}\n"));

    let before = Limpet::start_with(&toml, Options::sealed(&keyfile)).await;
    let mut old_clients = Vec::new();
    for _ in 0..2 {
        let mut s = Session::new(&before.client);
        let r = s.get("/").await;
        assert!(r.cookie("sid").unwrap().starts_with("k1."));
        old_clients.push((r.backend().unwrap(), r.cookie("sid").unwrap()));
    }
    drop(before);

    // The new key goes on top; limpet restarts with the file.
    std::fs::write(&keyfile, format!("k2 {K2}\nk1 {K1}\n")).unwrap();
    let after = Limpet::start_with(&toml, Options::sealed(&keyfile)).await;
    for (home, value) in &old_clients {
        for _ in 0..3 {
            let r = with_cookie(&after, value).await;
            assert_eq!(r.backend().as_ref(), Some(home), "old cookie still pins");
            assert_eq!(r.cookie("sid"), None);
        }
    }
    let fresh = after.client.get("/").await.cookie("sid").unwrap();
    assert!(fresh.starts_with("k2."), "{fresh}");
    drop(after);

    // Once the old key is gone, its cookies no longer open.
    std::fs::write(&keyfile, format!("k2 {K2}\n")).unwrap();
    let retired = Limpet::start_with(&toml, Options::sealed(&keyfile)).await;
    let r = with_cookie(&retired, &old_clients[0].1).await;
    assert!(r.cookie("sid").unwrap().starts_with("k2."));
    let r = with_cookie(&retired, &fresh).await;
    assert_eq!(r.cookie("sid"), None, "the new key's cookie still pins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_cookie_older_than_its_ttl_counts_as_absent() {
    let dir = TempDir::new();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let options = Options::sealed(&keys(&dir, "keys", &format!("k1 {K1}\n")));
    let keyring = options.keyring.clone().unwrap();
    let l = Limpet::start_with(&web(&[&a, &b], r#"mode = "sealed", ttl = "60s""#), options).await;
    let now = SystemTime::now();
    let recent = keyring.seal("web", &id_of("web", &a), now - Duration::from_secs(30));
    let expired = keyring.seal("web", &id_of("web", &a), now - Duration::from_secs(120));
    for _ in 0..4 {
        let r = with_cookie(&l, &recent).await;
        assert_eq!(r.backend().as_deref(), Some("a"));
        assert_eq!(r.cookie("sid"), None);
    }
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let r = with_cookie(&l, &expired).await;
        assert!(r.cookie("sid").is_some(), "an expired cookie is replaced");
        seen.insert(r.backend().unwrap());
    }
    assert_eq!(seen.len(), 2, "expired means balanced: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliding_sealed_cookie_is_resealed_on_every_response_so_its_ttl_slides() {
    let dir = TempDir::new();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let options = Options::sealed(&keys(&dir, "keys", &format!("k1 {K1}\n")));
    let keyring = options.keyring.clone().unwrap();
    let l = Limpet::start_with(
        &web(&[&a, &b], r#"mode = "sealed", ttl = "60s", sliding = true"#),
        options,
    )
    .await;
    let ttl = Some(Duration::from_secs(10));
    let old = keyring.seal(
        "web",
        &id_of("web", &a),
        SystemTime::now() - Duration::from_secs(50),
    );
    assert!(keyring.open("web", &old, SystemTime::now(), ttl).is_err());
    let r = with_cookie(&l, &old).await;
    assert_eq!(r.backend().as_deref(), Some("a"), "still within its 60 s");
    let renewed = r
        .cookie("sid")
        .expect("sliding: a cookie on a pinned response");
    assert_eq!(
        keyring
            .open("web", &renewed, SystemTime::now(), ttl)
            .as_deref(),
        Ok(id_of("web", &a).as_str()),
        "the refreshed cookie is sealed now, for the same server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_ttl_expires_in_real_time() {
    let dir = TempDir::new();
    let a = Backend::start("a").await;
    let options = Options::sealed(&keys(&dir, "keys", &format!("k1 {K1}\n")));
    let l = Limpet::start_with(&web(&[&a], r#"mode = "sealed", ttl = "1s""#), options).await;
    let issued = std::time::Instant::now();
    let value = l.client.get("/").await.cookie("sid").unwrap();
    assert_eq!(with_cookie(&l, &value).await.cookie("sid"), None);
    // Ages count in whole seconds, so a 1 s cookie lasts 1 to 2 s.
    harness::eventually("the cookie expires", Duration::from_secs(5), || async {
        with_cookie(&l, &value).await.cookie("sid").is_some()
    })
    .await;
    assert!(issued.elapsed() >= Duration::from_secs(1));
}

/// Two replicas of limpet on one file (and one key file when sealed).
async fn replicas(dir: &TempDir, toml: &str, mode: &str) -> (Limpet, Limpet) {
    let file = dir.path("limpet.toml");
    write_atomically(&file, toml);
    let options = || {
        if mode == "sealed" {
            let keyfile = dir.path("keys");
            if !keyfile.exists() {
                std::fs::write(&keyfile, format!("k1 {K1}\n")).unwrap();
            }
            Options::sealed(&keyfile)
        } else {
            Options {
                mode: CookieMode::Url,
                ..Options::default()
            }
        }
    };
    (
        Limpet::on_file(&file, options()).await,
        Limpet::on_file(&file, options()).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_issued_by_one_replica_is_honoured_by_another() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let refs: Vec<&Backend> = backends.iter().collect();
    for mode in ["url", "hash", "sealed"] {
        let dir = TempDir::new();
        let (one, two) = replicas(&dir, &web(&refs, &format!("mode = \"{mode}\"")), mode).await;
        // Shift the second replica's round robin, so agreement cannot come from two
        // balancers in step.
        two.client.get("/").await;
        for _ in 0..3 {
            let r = one.client.get("/").await;
            let home = r.backend().unwrap();
            let value = r.cookie("sid").unwrap();
            for _ in 0..3 {
                let r = with_cookie(&two, &value).await;
                assert_eq!(r.backend().unwrap(), home, "{mode}: {value}");
                assert_eq!(r.cookie("sid"), None, "{mode}: pinned, no new cookie");
            }
        }
    }
}

/// Sends each stale cookie to both replicas; asserts they move it to the same server, that
/// the new cookie pins there on either replica, and that the sessions spread out.
async fn assert_same_repins(one: &Limpet, two: &Limpet, stale: &[String], gone: &str) {
    let mut homes = BTreeSet::new();
    for value in stale {
        let r1 = with_cookie(one, value).await;
        let r2 = with_cookie(two, value).await;
        assert_eq!(r1.status, StatusCode::OK, "{}", r1.text());
        assert_eq!(r2.status, StatusCode::OK, "{}", r2.text());
        let home = r1.backend().unwrap();
        assert_ne!(home, gone);
        assert_eq!(r2.backend().unwrap(), home, "replicas disagree on {value}");
        let renewed = r1.cookie("sid").expect("re-pinned with a new cookie");
        assert!(r2.cookie("sid").is_some());
        for l in [one, two] {
            let r = with_cookie(l, &renewed).await;
            assert_eq!(r.backend().unwrap(), home);
            assert_eq!(r.cookie("sid"), None);
        }
        homes.insert(home);
    }
    assert!(homes.len() >= 2, "stale sessions spread out: {homes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_repin_cookies_of_a_removed_server_to_the_same_new_server() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let d = Backend::start("d").await;

    // Sealed: every cookie for `a` differs (fresh nonce), so each is its own session key.
    let dir = TempDir::new();
    let (one, two) = replicas(
        &dir,
        &web(&[&a, &b, &c, &d], r#"mode = "sealed""#),
        "sealed",
    )
    .await;
    two.client.get("/").await;
    let keyring = Keyring::load(&dir.path("keys")).unwrap();
    let stale: Vec<String> = (0..30)
        .map(|_| keyring.seal("web", &id_of("web", &a), SystemTime::now()))
        .collect();
    reload_all(&[&one, &two], &web(&[&b, &c, &d], r#"mode = "sealed""#)).await;
    let before = a.hits();
    assert_same_repins(&one, &two, &stale, "a").await;
    assert_eq!(a.hits(), before, "a left the file");

    // URL cookies naming servers that are gone.
    let dir = TempDir::new();
    let (one, two) = replicas(&dir, &web(&[&b, &c, &d], r#"mode = "url""#), "url").await;
    two.client.get("/").await;
    let stale: Vec<String> = (1..=30).map(|p| format!("http://127.0.0.1:{p}")).collect();
    assert_same_repins(&one, &two, &stale, "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_repin_cookies_of_a_refusing_server_to_the_same_new_server() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let d = Backend::start("d").await;
    a.refuse().await;
    let dir = TempDir::new();
    let (one, two) = replicas(
        &dir,
        &web(&[&a, &b, &c, &d], r#"mode = "sealed""#),
        "sealed",
    )
    .await;
    two.client.get("/").await;
    let keyring = Keyring::load(&dir.path("keys")).unwrap();
    let stale: Vec<String> = (0..30)
        .map(|_| keyring.seal("web", &id_of("web", &a), SystemTime::now()))
        .collect();
    // The first few are retried after a refused connection; once passive health takes `a`
    // out, the rest are stale from the start. Both paths must agree.
    assert_same_repins(&one, &two, &stale, "a").await;
}

fn binary_file(dir: &TempDir, list: &[&Backend]) -> std::path::PathBuf {
    let list: Vec<(&Backend, &str)> = list.iter().map(|b| (*b, "")).collect();
    let toml = format!(
        r#"
[services.sealed]
rule = "PathPrefix:/sealed"
cookie_name = "sid"
cookie = {{ mode = "sealed" }}
servers = {list}

[services.url]
rule = "PathPrefix:/url"
cookie_name = "sid"
cookie = {{ mode = "url" }}
servers = {list}

[services.hash]
rule = "PathPrefix:/hash"
cookie_name = "sid"
cookie = {{ mode = "hash" }}
servers = {list}

[services.flag]
rule = "PathPrefix:/flag"
sticky = true
cookie_name = "sid"
servers = {list}

[services.down]
rule = "PathPrefix:/down"
servers = [{{ url = "http://{dead}" }}]
"#,
        list = servers(&list),
        dead = harness::dead_addr(),
    );
    let path = dir.path("limpet.toml");
    write_atomically(&path, &toml);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_file_problems_stop_the_binary_with_a_message_naming_the_file() {
    let dir = TempDir::new();
    let a = Backend::start("a").await;
    let file = binary_file(&dir, &[&a]);
    let file = file.to_str().unwrap();
    let missing = dir.path("missing-keys");
    let directory = dir.path("keys-dir");
    std::fs::create_dir(&directory).unwrap();
    let short = keys(&dir, "short-keys", "k1 c2hvcnQ=\n");
    let empty = keys(&dir, "empty-keys", "# no key yet\n");
    for (what, path) in [
        ("missing", &missing),
        ("unreadable", &directory),
        ("too short", &short),
        ("empty", &empty),
    ] {
        let path = path.to_str().unwrap();
        let (status, stderr) = run_to_exit(&[
            "--file.filename",
            file,
            "--sticky.keyfile",
            path,
            "--sticky.mode",
            "sealed",
        ])
        .await;
        assert_eq!(status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains(path),
            "{what}: the message names the file: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_cookies_are_not_logged_at_the_default_level() {
    let dir = TempDir::new();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let file = binary_file(&dir, &[&a, &b]);
    let keyfile = keys(&dir, "keys", &format!("k1 {K1}\n"));
    let p = Process::start(&[
        "--file.filename",
        file.to_str().unwrap(),
        "--sticky.keyfile",
        keyfile.to_str().unwrap(),
        "--sticky.mode",
        "sealed",
    ])
    .await;
    let client = harness::Client::new(p.addr);
    // --sticky.mode applies to a service that names no mode.
    let flag = client.get("/flag").await.cookie("sid").unwrap();
    assert!(flag.starts_with("k1."), "{flag}");

    let garbage = [
        "garbage",
        "k1.AAAA",
        "k9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "k1.@@@@",
        "not a url",
        "http://127.0.0.1:1",
        "zz",
        "0123456789abcdef",
        &"x".repeat(2000),
    ];
    for path in ["/sealed", "/url", "/hash", "/flag"] {
        for g in garbage {
            let r = client.get_with_cookie(path, &format!("sid={g}")).await;
            assert_eq!(r.status, StatusCode::OK, "{path} {g}");
        }
    }
    // A request that does log (502 at warn) marks the point by which the others' lines,
    // had there been any, were written.
    assert_eq!(client.get("/down").await.status, StatusCode::BAD_GATEWAY);
    p.wait_for_line(&["WARN", "down"]).await;
    let noisy: Vec<String> = p
        .lines()
        .into_iter()
        .filter(|l| l.to_ascii_lowercase().contains("cookie"))
        .collect();
    assert!(
        noisy.is_empty(),
        "cookie lines at the default level: {noisy:#?}"
    );
}
