//! Fuzzes the sticky cookie decoder: finding the cookie in a `Cookie` header, and deciding
//! what its value means to a service in the `url`, `hash` and `sealed` modes.
//!
//! Input: `<Cookie header> NUL <cookie value> NUL <parameters>`, each part optional. The
//! header and the value are read as lossy UTF-8; the parameters (clock times, a TTL, an
//! edit) are taken with `arbitrary` and are zero when missing. Besides "never panics", it
//! checks:
//!
//! - `find_cookie` returns a slice of the header that holds no `;`, and finds a pair put
//!   in front of the header whatever follows it.
//! - `Service::resolve_cookie` pins server `i` exactly when the value is server `i`'s own
//!   cookie value (url, hash) or opens to server `i`'s id under this service (sealed), and
//!   that server is up; a well-formed value naming no such server is `Stale`; anything
//!   else is `Invalid`, which the proxy treats as no cookie at all.
//! - `Keyring::open` succeeds only on values this process sealed. The keys are random per
//!   process, so no input, corpus file or crash artifact can carry a valid seal: a success
//!   on anything else would be a forgery.
//! - Sealing then opening gives the id back, within the TTL and the clock-skew allowance.
//!   An edited byte, a truncation, an appended character or another service's name makes it
//!   fail: per input at a position and byte the fuzzer picks, and once per process for
//!   every position and every byte of one value.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

use limpet::sticky::seal::OpenError;
use limpet::sticky::{
    find_cookie, sanitize_cookie_name, traefik_v1_cookie_name, url_hash, Keyring,
};
use limpet::table::spec::{
    BackendProtocol, CookieMode, Provider, ServerSpec, ServerUrl, ServiceOptions, ServiceSpec,
    StickySpec,
};
use limpet::table::state::{now_ms, StateRegistry};
use limpet::table::{build, CookieVerdict, Readiness, StickyGlobals, Table};

/// `seal.rs`'s allowance for a cookie issued in the future (its `MAX_CLOCK_SKEW`).
const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Everything built once per process.
struct Fixture {
    table: Table,
    /// The table's keys: `k2` seals, `k1` (the key before a rotation) still opens.
    keyring: Arc<Keyring>,
    /// Every value sealed with the table's keys, and what was sealed in it.
    sealed: Vec<Sealed>,
    /// Other random keys with the same ids, for the per-input round trip: its values must
    /// not open with `keyring`, and `sealed` stays bounded however long the run.
    scratch: Keyring,
}

struct Sealed {
    value: String,
    service: &'static str,
    id: &'static str,
}

/// (service, mode, protocol, cookie name, servers as (id, host, port)).
type ServiceDef = (
    &'static str,
    CookieMode,
    BackendProtocol,
    &'static str,
    &'static [(&'static str, &'static str, u16)],
);

const SERVICES: &[ServiceDef] = &[
    (
        "url",
        CookieMode::Url,
        BackendProtocol::Http,
        "_a49bc",
        &[
            ("url-a", "10.0.0.5", 8000),
            ("url-drain", "10.0.0.6", 8000),
            ("url-v6", "fd00::5", 8000),
            ("url-down", "10.0.0.7", 8000),
        ],
    ),
    (
        "tls",
        CookieMode::Url,
        BackendProtocol::Https,
        "_a49bc",
        &[("tls-a", "10.0.0.5", 8443), ("tls-down", "10.0.0.6", 8443)],
    ),
    (
        "hash",
        CookieMode::Hash,
        BackendProtocol::Http,
        "_hash",
        &[
            ("hash-a", "10.0.0.5", 8000),
            ("hash-drain", "10.0.0.6", 8000),
            ("hash-down", "10.0.0.7", 8000),
        ],
    ),
    (
        "sealed",
        CookieMode::Sealed,
        BackendProtocol::Http,
        "sess",
        &[
            ("task-a", "10.0.0.5", 8000),
            ("task-drain", "10.0.0.6", 8000),
            ("task-down", "10.0.0.7", 8000),
        ],
    ),
    // Shares `task-a` with `sealed`: a value sealed for one must not pin in the other.
    (
        "other",
        CookieMode::Sealed,
        BackendProtocol::Http,
        "sess",
        &[("task-a", "10.0.1.5", 8000), ("task-o", "10.0.1.6", 8000)],
    ),
];

/// A key file of random keys, `k2` first, loaded through the real parser; `k1_only` gives
/// the key file as it was before `k2` was added.
fn random_key_file() -> (String, String) {
    let line = |id: &str| {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).expect("the OS random source is available");
        format!("{id} {}\n", STANDARD.encode(key))
    };
    let (k2, k1) = (line("k2"), line("k1"));
    (format!("{k2}{k1}"), k1)
}

fn load(text: &str, tag: &str) -> Keyring {
    let path = std::env::temp_dir().join(format!("limpet-fuzz-keys-{}-{tag}", std::process::id()));
    std::fs::write(&path, text).expect("temp dir is writable");
    let ring = Keyring::load(&path).expect("generated key file loads");
    let _ = std::fs::remove_file(&path);
    ring
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (current, before_rotation) = random_key_file();
        let keyring = Arc::new(load(&current, "current"));
        let old = load(&before_rotation, "old");
        let scratch = load(&random_key_file().0, "scratch");

        let specs: Vec<ServiceSpec> = SERVICES
            .iter()
            .map(|&(name, mode, protocol, cookie, servers)| ServiceSpec {
                name: name.into(),
                provider: Provider::File,
                routers: Vec::new(),
                servers: servers
                    .iter()
                    .map(|&(id, host, port)| ServerSpec {
                        id: id.into(),
                        url: ServerUrl::http(host, port).expect("fixture URL"),
                        weight: 1,
                        accepts_new: !id.ends_with("-drain"),
                    })
                    .collect(),
                options: ServiceOptions {
                    sticky: Some(StickySpec {
                        mode: Some(mode),
                        ..StickySpec::named(cookie.into())
                    }),
                    protocol,
                    ..ServiceOptions::default()
                },
            })
            .collect();
        let globals = StickyGlobals {
            mode: CookieMode::Url,
            ttl: None,
            keyring: Some(Arc::clone(&keyring)),
        };
        let table = build(
            &specs,
            Readiness::Ready,
            &mut StateRegistry::default(),
            &globals,
        );
        let now = now_ms();
        for service in table.services.iter() {
            for server in service.servers.iter() {
                if server.id.ends_with("-down") {
                    server.state.mark_down_until_probed();
                    assert!(!server.is_up(now));
                } else {
                    assert!(server.is_up(now));
                }
            }
        }

        let mut sealed = Vec::new();
        let at = SystemTime::now();
        for &(service, mode, _, _, servers) in SERVICES {
            if mode != CookieMode::Sealed {
                continue;
            }
            // Every server, a server that left (stale), and a value from before rotation.
            let ids = servers.iter().map(|s| s.0).chain(["task-gone"]);
            for id in ids {
                let value = keyring.seal(service, id, at);
                sealed.push(Sealed { value, service, id });
            }
            let value = old.seal(service, servers[0].0, at);
            assert!(value.starts_with("k1."));
            sealed.push(Sealed {
                value,
                service,
                id: servers[0].0,
            });
        }
        every_one_byte_edit_fails(&keyring, &sealed[0]);
        Fixture {
            table,
            keyring,
            sealed,
            scratch,
        }
    })
}

/// Once per process, exhaustively: every byte of a sealed value replaced by each of the
/// other 255 values, and every truncation. Per input, the fuzzer picks one edit instead:
/// a loop like this one per input would cost most of the run's executions.
fn every_one_byte_edit_fails(keyring: &Keyring, sealed: &Sealed) {
    let value = &sealed.value;
    assert_eq!(
        keyring
            .open(sealed.service, value, SystemTime::now(), None)
            .as_deref(),
        Ok(sealed.id)
    );
    for at in 0..value.len() {
        for byte in 0..=u8::MAX {
            if value.as_bytes()[at] != byte {
                let edited = edit(value, at, byte);
                let opened = keyring.open(sealed.service, &edited, SystemTime::now(), None);
                assert!(opened.is_err(), "{value:?} edited to {edited:?} opens");
            }
        }
        assert!(keyring
            .open(sealed.service, &value[..at], SystemTime::now(), None)
            .is_err());
    }
}

/// `find_cookie` with its invariants checked.
fn find<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    let found = find_cookie(header, name)?;
    let range = header.as_bytes().as_ptr_range();
    let start = found.as_ptr();
    assert!(
        range.start <= start && start as usize + found.len() <= range.end as usize,
        "{found:?} is not a slice of {header:?}"
    );
    assert!(!found.contains(';'), "{found:?} spans two pairs");
    Some(found)
}

/// A pair put in front of any header is found, unquoted as RFC 6265 allows.
fn check_pair_in_front(name: &str, value: &str, rest: &str) {
    if name.contains(['=', ';'])
        || name.trim() != name
        || value.contains(';')
        || value.trim() != value
    {
        return;
    }
    let header = format!("{name}={value}; {rest}");
    let unquoted = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    assert_eq!(find(&header, name), Some(unquoted), "header {header:?}");
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What `value` must mean to service `index`, worked out from the servers themselves.
fn check_verdict(fx: &Fixture, index: usize, value: &str) {
    let service = &fx.table.services[index];
    let sticky = service
        .sticky
        .as_ref()
        .expect("every fixture service is sticky");
    let verdict = service.resolve_cookie(value);
    let (well_formed, own) = match sticky.mode {
        CookieMode::Url => {
            for s in service.servers.iter() {
                assert_eq!(s.cookie_value, s.url);
            }
            (
                value.starts_with("http://") || value.starts_with("https://"),
                service.servers.iter().position(|s| *s.url == *value),
            )
        }
        CookieMode::Hash => (
            value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()),
            service
                .servers
                .iter()
                .position(|s| url_hash(&s.url) == value),
        ),
        CookieMode::Sealed => {
            let opened = fx
                .keyring
                .open(&service.name, value, SystemTime::now(), sticky.ttl);
            match opened {
                Ok(id) => {
                    let known = fx
                        .sealed
                        .iter()
                        .any(|s| s.value == value && s.service == &*service.name && s.id == id);
                    assert!(
                        known,
                        "forged: {value:?} opens to {id:?} in {}",
                        service.name
                    );
                    (true, service.servers.iter().position(|s| *s.id == *id))
                }
                Err(_) => (false, None),
            }
        }
    };
    let expected = match own {
        Some(i) if service.servers[i].is_up(now_ms()) => CookieVerdict::Pinned(i),
        _ if well_formed => CookieVerdict::Stale,
        _ => CookieVerdict::Invalid,
    };
    assert_eq!(
        verdict, expected,
        "{value:?} in service {} ({:?} mode)",
        service.name, sticky.mode
    );
}

/// The input's tail: clocks and the edit to make.
struct Params {
    /// When the round trip seals, in seconds since the epoch.
    t0: u64,
    /// When it opens (and when arbitrary values are tried against the table's keys).
    t1: u64,
    /// The TTL those opens check, in seconds.
    ttl: Option<u32>,
    /// Which of the table's sealed values to edit.
    pick: u8,
    /// Where to edit or truncate a sealed value (modulo its length).
    offset: u16,
    /// The byte written there.
    byte: u8,
}

impl Params {
    fn read(u: &mut Unstructured<'_>) -> Self {
        Self {
            t0: u.arbitrary().unwrap_or_default(),
            t1: u.arbitrary().unwrap_or_default(),
            ttl: u.arbitrary().unwrap_or_default(),
            pick: u.arbitrary().unwrap_or_default(),
            offset: u.arbitrary().unwrap_or_default(),
            byte: u.arbitrary().unwrap_or_default(),
        }
    }
}

/// `value` with byte `at` replaced by `byte`, or by its neighbour if that is the same byte.
fn edit(value: &str, at: usize, byte: u8) -> String {
    let mut bytes = value.as_bytes().to_vec();
    let at = at % bytes.len();
    bytes[at] = if bytes[at] == byte { byte ^ 1 } else { byte };
    String::from_utf8_lossy(&bytes).into_owned()
}

fn at(secs: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Seal with the scratch keys at `t0`, open at `t1`; then an edit of the byte at `offset`,
/// a truncation there, an appended character or another service's name must not open.
fn check_round_trip(fx: &Fixture, service: &str, id: &str, p: &Params) {
    let Params {
        t0,
        t1,
        ttl,
        offset,
        byte,
        ..
    } = *p;
    let offset = usize::from(offset);
    let (Some(issued), Some(now)) = (at(t0), at(t1)) else {
        return;
    };
    let ring = &fx.scratch;
    let ttl = ttl.map(|s| Duration::from_secs(s.into()));
    let sealed = ring.seal(service, id, issued);
    assert!(sealed.starts_with("k2."));
    assert!(
        fx.keyring.open(service, &sealed, issued, None).is_err(),
        "another key opened {sealed:?}"
    );
    let expected = if t0 > t1.saturating_add(MAX_CLOCK_SKEW_SECS) {
        Err(OpenError::Forged)
    } else if ttl.is_some_and(|ttl| t1.saturating_sub(t0) > ttl.as_secs()) {
        Err(OpenError::Expired)
    } else {
        Ok(id.to_owned())
    };
    assert_eq!(
        ring.open(service, &sealed, now, ttl),
        expected,
        "t0 {t0} t1 {t1} ttl {ttl:?}"
    );
    assert_eq!(ring.open(service, &sealed, issued, None).as_deref(), Ok(id));

    let edited = edit(&sealed, offset, byte);
    assert!(
        ring.open(service, &edited, issued, None).is_err(),
        "{sealed:?} edited to {edited:?} still opens"
    );
    let cut = offset % sealed.len();
    assert!(ring.open(service, &sealed[..cut], issued, None).is_err());
    let longer = format!("{sealed}{}", char::from(byte));
    assert!(ring.open(service, &longer, issued, None).is_err());
    let mut other = service.to_owned();
    other.push(char::from(byte));
    assert!(ring.open(&other, &sealed, issued, None).is_err());
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let mut parts = data.splitn(3, |&b| b == 0);
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let value = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let mut u = Unstructured::new(parts.next().unwrap_or_default());
    let p = Params::read(&mut u);

    // The header as the proxy reads it: each service looks for its own cookie name.
    for (index, &(_, _, _, name, _)) in SERVICES.iter().enumerate() {
        if let Some(found) = find(&header, name) {
            check_verdict(fx, index, found);
        }
        check_verdict(fx, index, &value);
        check_pair_in_front(name, &value, &header);
    }
    let sanitized = sanitize_cookie_name(&value);
    assert_eq!(sanitized.chars().count(), value.chars().count());
    assert!(
        sanitized
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)),
        "{sanitized:?}"
    );
    find(&header, &sanitized);
    check_pair_in_front(&sanitized, &value, &header);

    let name = traefik_v1_cookie_name(&value);
    assert!(
        name.len() == 6 && name.starts_with('_') && is_lower_hex(&name[1..]),
        "{name:?}"
    );
    let hash = url_hash(&value);
    assert!(hash.len() == 16 && is_lower_hex(&hash), "{hash:?}");

    // Arbitrary values at arbitrary times never open, unless this process sealed them.
    let ttl = p.ttl.map(|s| Duration::from_secs(s.into()));
    for candidate in [&*header, &*value] {
        for service in ["sealed", "other"] {
            if let Some(now) = at(p.t1) {
                if let Ok(id) = fx.keyring.open(service, candidate, now, ttl) {
                    assert!(
                        fx.sealed
                            .iter()
                            .any(|s| s.value == candidate && s.service == service && s.id == id),
                        "forged: {candidate:?} opens to {id:?} in {service}"
                    );
                }
            }
        }
    }

    // A value the table's keys sealed: as issued it means what the oracle says; with one
    // byte edited it is malformed, in every service.
    let genuine = &fx.sealed[usize::from(p.pick) % fx.sealed.len()];
    let edited = edit(&genuine.value, usize::from(p.offset), p.byte);
    for index in 0..SERVICES.len() {
        check_verdict(fx, index, &genuine.value);
        assert_eq!(
            fx.table.services[index].resolve_cookie(&edited),
            CookieVerdict::Invalid,
            "{:?} edited to {edited:?}",
            genuine.value
        );
    }

    // The header's start names the service: the service name is authenticated data, read
    // once per open, and ~100 opens per input on a 4 KiB name would slow the run for nothing.
    let end = (0..=header.len().min(64))
        .rev()
        .find(|&i| header.is_char_boundary(i))
        .unwrap_or(0);
    let service = &header[..end];
    check_round_trip(fx, service, &value, &p);
});
