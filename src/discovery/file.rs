//! The static file provider: services, servers, rules and stickiness from a TOML file.
//!
//! It lets limpet run without Docker (tests, benchmarks, users outside Swarm). The file is
//! re-read every `interval`; a bad edit keeps the last good table and logs why. Polling, not
//! inotify, because Docker configs and secrets are replaced by symlink swaps that inotify on
//! the file itself misses.
//!
//! ```toml
//! [services.whoami]
//! rule = "PathPrefix:/"            # Traefik v1 rule syntax
//! tls = false                      # true: only on the TLS entrypoint
//! sticky = true                    # cookie name defaults to Traefik's for this name
//! servers = [
//!   { url = "http://127.0.0.1:8001" },
//!   { url = "http://127.0.0.1:8002", weight = 3 },
//! ]
//!
//! [tcp.redis]                      # layer 4: limpet listens on front_port (--l4.address)
//! front_port = 6379
//! servers = [{ address = "127.0.0.1:16379" }, { address = "127.0.0.1:16380", weight = 2 }]
//! balance = "leastconn"            # roundrobin | wrr (default) | leastconn | p2c | clientip
//! idle_timeout = "10m"             # tcp default 10m, udp default 30s
//! connect_timeout = "5s"           # tcp only
//! sni = ["db.example.org"]         # tcp only: TLS passthrough by server name
//! health_check = { interval = "5s", rise = 1 }   # tcp only: connect probes
//!
//! [udp.dns]
//! front_port = 5353
//! servers = [{ address = "127.0.0.1:15353" }]
//! ```
//!
//! A `[tcp.<name>]` or `[udp.<name>]` joins `[services.<name>]` when there is one, and is a
//! service of its own otherwise.
//!
//! An edit of one service in a file of thousands costs about what the edit changed: the
//! [`Reloader`] re-parses only the services whose text changed (`sections` finds each one's
//! text) and hands the others on unchanged, which the table builder then reuses.

mod reload;
mod sections;
mod stamp;

pub use reload::Reloader;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::Publisher;
use crate::balance::Method;
use crate::config::parse_duration;
use crate::sticky::{sanitize_cookie_name, traefik_v1_cookie_name};
use crate::table::l4::{L4ServerSpec, L4Spec, Protocol, SniPattern};
use crate::table::rule::parse_v1;
use crate::table::spec::{
    BackendProtocol, BackendTls, FallbackSpec, HealthCheckSpec, HttpProbe, PassiveHealth, Probe,
    Provider, RetryPolicy, RouterSpec, ServerLimits, ServerSpec, ServerUrl, ServiceOptions,
    ServiceSpec, StickySpec,
};
use crate::tls::certs::CertFiles;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: service `{service}`: {message}")]
    Service {
        path: PathBuf,
        service: String,
        message: String,
    },
}

/// The file's format. Kept at the edge: it is converted into [`ServiceSpec`]s at once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    services: BTreeMap<String, FileService>,
    #[serde(default)]
    tcp: BTreeMap<String, FileL4>,
    #[serde(default)]
    udp: BTreeMap<String, FileL4>,
}

/// A `[tcp.<name>]` or `[udp.<name>]` route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileL4 {
    front_port: u16,
    #[serde(default)]
    servers: Vec<FileL4Server>,
    balance: Option<String>,
    idle_timeout: Option<String>,
    connect_timeout: Option<String>,
    #[serde(default)]
    sni: Vec<String>,
    /// TCP connect probes only.
    health_check: Option<FileHealthCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileL4Server {
    /// `IP:port`; names are not resolved, so a route never waits on DNS.
    address: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default = "yes")]
    enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileService {
    rule: String,
    #[serde(default)]
    priority: i32,
    /// Route only requests that came over TLS.
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    sticky: bool,
    cookie_name: Option<String>,
    method: Option<String>,
    #[serde(default = "yes")]
    pass_host_header: bool,
    #[serde(default)]
    servers: Vec<FileServer>,
    #[serde(default)]
    retry: FileRetry,
    #[serde(default)]
    passive_health: FilePassiveHealth,
    #[serde(default)]
    cookie: FileCookie,
    slow_start: Option<String>,
    /// Another service's name, or a URL.
    fallback: Option<String>,
    base_path: Option<String>,
    #[serde(default)]
    strip_prefix: Vec<String>,
    #[serde(default)]
    max_conn: u32,
    #[serde(default)]
    queue: u32,
    queue_timeout: Option<String>,
    health_check: Option<FileHealthCheck>,
    /// http (default), https, h2c or h2.
    protocol: Option<String>,
    backend_tls: Option<FileBackendTls>,
    affinity_header: Option<String>,
    response_header_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackendTls {
    ca: Option<PathBuf>,
    server_name: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHealthCheck {
    /// `tcp` or `http` (the default when a path is given).
    #[serde(rename = "type")]
    kind: Option<String>,
    interval: Option<String>,
    connect_timeout: Option<String>,
    timeout: Option<String>,
    port: Option<u16>,
    rise: Option<u32>,
    fall: Option<u32>,
    #[serde(default)]
    start_down: bool,
    method: Option<String>,
    path: Option<String>,
    hostname: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    expect_status: Vec<u16>,
    #[serde(default)]
    expect_headers: BTreeMap<String, String>,
    #[serde(default)]
    id_header: bool,
}

/// Cookie attributes, each optional; see [`StickySpec`] for the defaults.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileCookie {
    mode: Option<String>,
    secure: Option<bool>,
    http_only: Option<bool>,
    same_site: Option<String>,
    max_age: Option<String>,
    path: Option<String>,
    domain: Option<String>,
    sliding: Option<bool>,
    ttl: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileRetry {
    attempts: Option<u32>,
    idempotent: Option<bool>,
    non_idempotent: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FilePassiveHealth {
    max_failures: Option<u32>,
    cooldown: Option<String>,
    #[serde(default)]
    statuses: Vec<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    url: String,
    #[serde(default = "one")]
    weight: u32,
    /// Apigee's IsEnabled: a disabled server keeps its pinned clients, takes no new ones.
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn parse(path: &Path, text: &str) -> Result<Vec<ServiceSpec>, FileError> {
    let config: FileConfig = toml::from_str(text).map_err(|e| FileError::Syntax {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut specs = config
        .services
        .into_iter()
        .map(|(name, svc)| {
            convert(&name, svc).map_err(|message| FileError::Service {
                path: path.to_owned(),
                service: name,
                message,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let l4 = config
        .tcp
        .into_iter()
        .map(|(n, r)| (Protocol::Tcp, n, r))
        .chain(config.udp.into_iter().map(|(n, r)| (Protocol::Udp, n, r)));
    for (protocol, name, route) in l4 {
        let route = convert_l4(protocol, &name, route).map_err(|message| FileError::Service {
            path: path.to_owned(),
            service: name.clone(),
            message: format!("[{protocol}.{name}]: {message}"),
        })?;
        match specs.iter_mut().find(|s| s.name == name) {
            Some(spec) => spec.l4.push(route),
            None => specs.push(ServiceSpec {
                name,
                provider: Provider::File,
                routers: Vec::new(),
                servers: Vec::new(),
                options: ServiceOptions::default(),
                l4: vec![route],
            }),
        }
    }
    Ok(specs)
}

fn convert_l4(protocol: Protocol, name: &str, r: FileL4) -> Result<L4Spec, String> {
    if r.front_port == 0 {
        return Err("front_port must be 1-65535".into());
    }
    let mut spec = L4Spec::new(name, protocol, r.front_port);
    if let Some(b) = &r.balance {
        spec.balance = b.parse().map_err(|e| format!("balance: {e}"))?;
    }
    if let Some(t) = &r.idle_timeout {
        spec.idle_timeout = positive(t, "idle_timeout")?;
    }
    if let Some(t) = &r.connect_timeout {
        if protocol == Protocol::Udp {
            return Err("connect_timeout: UDP has no connection; tcp only".into());
        }
        spec.connect_timeout = positive(t, "connect_timeout")?;
    }
    if !r.sni.is_empty() && protocol == Protocol::Udp {
        return Err("sni: TLS passthrough is tcp only".into());
    }
    spec.sni = r
        .sni
        .iter()
        .map(|n| SniPattern::parse(n).map_err(|e| format!("sni: {e}")))
        .collect::<Result<_, _>>()?;
    if let Some(h) = &r.health_check {
        if protocol == Protocol::Udp {
            return Err("health_check: UDP has no connection to probe; tcp only".into());
        }
        let check = health_check(h)?;
        if check.probe != Probe::Tcp {
            return Err(
                "health_check: a TCP route is probed by connecting; HTTP settings do not apply"
                    .into(),
            );
        }
        spec.health_check = Some(check);
    }
    spec.servers = r
        .servers
        .iter()
        .map(|s| {
            let addr = s
                .address
                .trim()
                .parse()
                .map_err(|_| format!("server address `{}`: expected IP:port", s.address))?;
            Ok(L4ServerSpec {
                id: format!("file:{protocol}/{name}/{addr}"),
                addr,
                weight: s.weight,
                accepts_new: s.enabled,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(spec)
}

fn convert(name: &str, svc: FileService) -> Result<ServiceSpec, String> {
    let rule = parse_v1(&svc.rule).map_err(|e| format!("rule `{}`: {e}", svc.rule))?;
    let method = match &svc.method {
        Some(m) => m.parse::<Method>().map_err(|e| format!("method: {e}"))?,
        None => Method::default(),
    };
    let servers = svc
        .servers
        .iter()
        .map(|s| {
            let url = ServerUrl::parse(&s.url).map_err(|e| format!("server: {e}"))?;
            Ok(ServerSpec {
                id: format!("file:{name}/{url}"),
                url,
                weight: s.weight,
                accepts_new: s.enabled,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let sticky = if svc.sticky || svc.cookie_name.is_some() {
        Some(cookie_spec(name, svc.cookie_name.as_deref(), &svc.cookie)?)
    } else {
        None
    };
    let defaults = RetryPolicy::default();
    let retry = RetryPolicy {
        attempts: svc.retry.attempts.unwrap_or(defaults.attempts),
        idempotent_after_send: svc
            .retry
            .idempotent
            .unwrap_or(defaults.idempotent_after_send),
        unsafe_after_send: svc
            .retry
            .non_idempotent
            .unwrap_or(defaults.unsafe_after_send),
    };
    if retry.attempts > 10 {
        return Err(format!(
            "retry.attempts = {}: expected 0 to 10",
            retry.attempts
        ));
    }
    let mut passive = PassiveHealth::default();
    if let Some(n) = svc.passive_health.max_failures {
        passive.max_failures = n;
    }
    if let Some(text) = &svc.passive_health.cooldown {
        passive.cooldown = positive(text, "passive_health.cooldown")?;
    }
    passive.unhealthy_statuses = statuses(&svc.passive_health.statuses, "passive_health.statuses")?;
    let fallback = match svc.fallback.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(f) if f == name => return Err("fallback names the service itself".into()),
        Some(f) if f.contains("://") => Some(FallbackSpec::Url(
            ServerUrl::parse(f).map_err(|e| format!("fallback: {e}"))?,
        )),
        Some(f) => Some(FallbackSpec::Service(f.to_owned())),
    };
    let base_path = match svc.base_path {
        Some(p) if !p.starts_with('/') => {
            return Err(format!("base_path `{p}` must start with `/`"))
        }
        Some(p) => Some(p.trim_end_matches('/').to_owned()).filter(|p| !p.is_empty()),
        None => None,
    };
    if let Some(bad) = svc.strip_prefix.iter().find(|p| !p.starts_with('/')) {
        return Err(format!("strip_prefix `{bad}` must start with `/`"));
    }
    let mut strip_prefixes = svc.strip_prefix.clone();
    strip_prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut limits = ServerLimits {
        max_conn: svc.max_conn,
        queue: svc.queue,
        ..ServerLimits::default()
    };
    if let Some(t) = &svc.queue_timeout {
        limits.queue_timeout = positive(t, "queue_timeout")?;
    }
    let slow_start = match &svc.slow_start {
        Some(t) => parse_duration(t).map_err(|e| format!("slow_start: {e}"))?,
        None => Duration::ZERO,
    };
    let health_check = svc.health_check.as_ref().map(health_check).transpose()?;
    let protocol = match &svc.protocol {
        Some(p) => p.parse().map_err(|e| format!("protocol: {e}"))?,
        None => BackendProtocol::Http,
    };
    let backend_tls = match &svc.backend_tls {
        Some(t) => BackendTls {
            ca: t.ca.clone(),
            server_name: t.server_name.clone(),
            client_cert: match (&t.cert, &t.key) {
                (Some(cert), Some(key)) => Some(CertFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                (None, None) => None,
                _ => return Err("backend_tls: cert and key go together".into()),
            },
            insecure: t.insecure,
        },
        None => BackendTls::default(),
    };
    if backend_tls != BackendTls::default() && !protocol.uses_tls() {
        return Err("backend_tls is set but protocol is not https or h2".into());
    }
    Ok(ServiceSpec {
        name: name.to_owned(),
        provider: Provider::File,
        routers: vec![RouterSpec {
            name: name.to_owned(),
            rule,
            priority: svc.priority,
            tls: svc.tls,
        }],
        servers,
        options: ServiceOptions {
            method,
            sticky,
            pass_host_header: svc.pass_host_header,
            retry,
            passive,
            slow_start,
            fallback,
            base_path,
            strip_prefixes,
            limits,
            health_check,
            protocol,
            backend_tls,
            affinity_header: svc.affinity_header.clone().filter(|h| !h.trim().is_empty()),
            response_header_timeout: svc
                .response_header_timeout
                .as_deref()
                .map(|t| positive(t, "response_header_timeout"))
                .transpose()?,
        },
        l4: Vec::new(),
    })
}

fn positive(text: &str, what: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| format!("{what}: {e}"))?;
    if d.is_zero() {
        return Err(format!("{what} must be greater than zero"));
    }
    Ok(d)
}

fn statuses(codes: &[u16], what: &str) -> Result<Vec<u16>, String> {
    match codes.iter().find(|c| !(100..=599).contains(*c)) {
        Some(bad) => Err(format!("{what}: {bad} is not an HTTP status code")),
        None => Ok(codes.to_vec()),
    }
}

fn health_check(h: &FileHealthCheck) -> Result<HealthCheckSpec, String> {
    let mut spec = HealthCheckSpec::default();
    // The first HTTP-only setting given. With `type = "tcp"` it contradicts the type and
    // would be silently dropped; without a type it makes the check an HTTP one. Both as the
    // labels do.
    let http_setting = [
        ("method", h.method.is_some()),
        ("path", h.path.is_some()),
        ("hostname", h.hostname.is_some()),
        ("headers", !h.headers.is_empty()),
        ("body", h.body.is_some()),
        ("tls", h.tls),
        ("expect_status", !h.expect_status.is_empty()),
        ("expect_headers", !h.expect_headers.is_empty()),
        ("id_header", h.id_header),
    ]
    .into_iter()
    .find_map(|(name, given)| given.then_some(name));
    let http = match h.kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("tcp") => match http_setting {
            Some(name) => {
                return Err(format!(
                    "health_check.{name} only applies to an http check (type is tcp)"
                ))
            }
            None => false,
        },
        Some("http") => true,
        None => http_setting.is_some(),
        Some(other) => return Err(format!("health_check.type `{other}`: expected tcp or http")),
    };
    if h.port == Some(0) {
        return Err("health_check.port 0: expected a port number from 1 to 65535".into());
    }
    if let Some(t) = &h.interval {
        spec.interval = positive(t, "health_check.interval")?;
    }
    if let Some(t) = &h.connect_timeout {
        spec.connect_timeout = positive(t, "health_check.connect_timeout")?;
    }
    if let Some(t) = &h.timeout {
        spec.timeout = positive(t, "health_check.timeout")?;
    }
    spec.port = h.port;
    for (value, field, target) in [
        (h.rise, "rise", &mut spec.rise),
        (h.fall, "fall", &mut spec.fall),
    ] {
        if let Some(v) = value {
            if v == 0 {
                return Err(format!("health_check.{field} must be at least 1"));
            }
            *target = v;
        }
    }
    spec.start_down = h.start_down;
    if http {
        let mut probe = HttpProbe::default();
        if let Some(m) = &h.method {
            probe.method = m.to_ascii_uppercase();
        }
        if let Some(p) = &h.path {
            if !p.starts_with('/') {
                return Err(format!("health_check.path `{p}` must start with `/`"));
            }
            probe.path = p.clone();
        }
        probe.hostname = h.hostname.clone();
        probe.headers = h.headers.clone().into_iter().collect();
        probe.body = h.body.clone();
        probe.tls = h.tls;
        probe.expect_status = statuses(&h.expect_status, "health_check.expect_status")?;
        probe.expect_headers = h.expect_headers.clone().into_iter().collect();
        probe.id_header = h.id_header;
        spec.probe = Probe::Http(probe);
    }
    Ok(spec)
}

fn cookie_spec(service: &str, name: Option<&str>, c: &FileCookie) -> Result<StickySpec, String> {
    let mut spec = StickySpec::named(match name {
        Some(n) => sanitize_cookie_name(n),
        // Traefik v1's file provider names the backend by its key, with no prefix.
        None => traefik_v1_cookie_name(service),
    });
    if let Some(m) = &c.mode {
        spec.mode = Some(m.parse().map_err(|e| format!("cookie.mode: {e}"))?);
    }
    if let Some(v) = c.secure {
        spec.secure = v;
    }
    if let Some(v) = c.http_only {
        spec.http_only = v;
    }
    if let Some(v) = &c.same_site {
        spec.same_site = Some(v.parse().map_err(|e| format!("cookie.same_site: {e}"))?);
    }
    if let Some(v) = &c.max_age {
        spec.max_age = Some(parse_duration(v).map_err(|e| format!("cookie.max_age: {e}"))?);
    }
    if let Some(v) = &c.path {
        if !v.starts_with('/') {
            return Err(format!("cookie.path `{v}`: a cookie path starts with `/`"));
        }
        spec.path = v.clone();
    }
    spec.domain = c.domain.clone().filter(|d| !d.is_empty());
    if let Some(v) = c.sliding {
        spec.sliding = v;
    }
    if let Some(v) = &c.ttl {
        let d = parse_duration(v).map_err(|e| format!("cookie.ttl: {e}"))?;
        if d.is_zero() {
            return Err("cookie.ttl must be greater than zero".into());
        }
        spec.ttl = Some(d);
    }
    Ok(spec)
}

/// Publishes the file's services whenever its content changes, until the task is dropped.
/// The first load happened at start-up (`initial`), where a bad file is fatal.
pub async fn watch(path: PathBuf, interval: Duration, publisher: Arc<Publisher>, initial: String) {
    let mut reloader = Reloader::default();
    // Known, so that the first edit re-parses only what it changed. Already checked.
    let _ = reloader.parse(&path, &initial);
    let mut last = initial;
    // None at first: the initial read had no stamp taken with it.
    let mut last_read: Option<stamp::LastRead> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        publisher.sweep();
        let read_at = std::time::SystemTime::now();
        // Not read when its stamp vouches for it: reading a large file on every poll while it
        // is being edited cost the requests sharing the core more than the rebuilds did.
        let known = last_read
            .as_ref()
            .and_then(stamp::LastRead::vouching)
            .cloned();
        // One trip to the blocking pool for both: under load each trip waits for a core.
        let file = path.clone();
        let read = tokio::task::spawn_blocking(move || {
            let seen = stamp::Stamp::of(&std::fs::metadata(&file)?);
            if known.as_ref() == Some(&seen) {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&file)?;
            Ok::<_, std::io::Error>(Some((text, seen)))
        });
        let read = read.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let (text, seen) = match read {
            Ok(Some(read)) => read,
            Ok(None) => continue,
            Err(e) => {
                if !last.is_empty() {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read the file; keeping the last good configuration");
                    last.clear();
                }
                last_read = None;
                continue;
            }
        };
        last_read = Some(stamp::LastRead::new(seen, read_at));
        if text == last {
            continue;
        }
        match reloader.parse(&path, &text) {
            Ok(specs) => {
                tracing::info!(file = %path.display(), "file changed; reloading");
                publisher.update_shared(Provider::File, specs);
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the edit; keeping the last good configuration")
            }
        }
        last = text;
    }
}

/// Reads the file once at start-up, for [`watch`]'s first comparison.
pub fn read_initial(path: &Path) -> Result<(Vec<ServiceSpec>, String), FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok((parse(path, &text)?, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<ServiceSpec>, FileError> {
        parse(Path::new("limpet.toml"), text)
    }

    #[test]
    fn reads_services_servers_and_stickiness() {
        let specs = p(r#"
            [services.whoami]
            rule = "PathPrefix:/"
            sticky = true
            servers = [{ url = "http://127.0.0.1:8001" }, { url = "http://127.0.0.1:8002", weight = 3 }]
        "#)
        .unwrap();
        let s = &specs[0];
        assert_eq!(s.name, "whoami");
        assert_eq!(s.servers.len(), 2);
        assert_eq!(s.servers[1].weight, 3);
        assert_eq!(
            s.options.sticky.as_ref().unwrap().cookie_name,
            traefik_v1_cookie_name("whoami")
        );
        assert!(s.options.pass_host_header);
    }

    #[test]
    fn health_checks_refuse_contradictions_as_the_labels_do() {
        let check = |hc: &str| {
            p(&format!(
                "[services.api]\nrule = \"PathPrefix:/\"\nhealth_check = {{ {hc} }}"
            ))
        };
        let e = check(r#"type = "tcp", path = "/health""#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`api`") && e.contains("health_check.path"),
            "{e}"
        );
        let e = check(r#"type = "tcp", expect_status = [204]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("health_check.expect_status"), "{e}");
        let e = check("port = 0").unwrap_err().to_string();
        assert!(e.contains("health_check.port"), "{e}");
        // Any HTTP setting, not only a path, makes an HTTP check.
        let specs = check("expect_status = [204]").unwrap();
        let hc = specs[0].options.health_check.as_ref().unwrap();
        assert!(matches!(&hc.probe, Probe::Http(h) if h.expect_status == [204]));
    }

    #[test]
    fn errors_name_the_file_and_service() {
        let e = p(r#"
            [services.api]
            rule = "Hots:x"
        "#)
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("limpet.toml") && e.contains("`api`") && e.contains("Hots"),
            "{e}"
        );

        let e = p(r#"
            [services.api]
            rule = "PathPrefix:/"
            servers = [{ url = "http://x:1", wieght = 2 }]
        "#)
        .unwrap_err()
        .to_string();
        assert!(e.contains("wieght"), "{e}");

        let e =
            p("[services.api]\nrule = \"PathPrefix:/\"\nservers = [{ url = \"http://x/app\" }]")
                .unwrap_err()
                .to_string();
        assert!(e.contains("`api`") && e.contains("http://x/app"), "{e}");
    }

    #[test]
    fn reads_l4_routes_alone_or_next_to_a_service() {
        let specs = p(r#"
            [services.web]
            rule = "PathPrefix:/"
            servers = [{ url = "http://127.0.0.1:8001" }]

            [tcp.web]
            front_port = 8443
            sni = ["Web.Example.org"]
            servers = [{ address = "127.0.0.1:8443" }]

            [tcp.redis]
            front_port = 6379
            balance = "leastconn"
            idle_timeout = "1m"
            servers = [{ address = "127.0.0.1:16379" }, { address = "[::1]:16380", weight = 2, enabled = false }]

            [udp.redis]
            front_port = 6379
            servers = [{ address = "127.0.0.1:16379" }]
        "#)
        .unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web", "redis"]);
        assert_eq!(specs[0].l4.len(), 1);
        assert_eq!(
            specs[0].l4[0].sni,
            [SniPattern::Exact("web.example.org".into())]
        );
        let redis = &specs[1];
        assert!(redis.routers.is_empty() && redis.servers.is_empty());
        let protocols: Vec<Protocol> = redis.l4.iter().map(|r| r.protocol).collect();
        assert_eq!(protocols, [Protocol::Tcp, Protocol::Udp]);
        let tcp = &redis.l4[0];
        assert_eq!(tcp.idle_timeout, Duration::from_secs(60));
        assert_eq!(tcp.servers[1].addr, "[::1]:16380".parse().unwrap());
        assert!(!tcp.servers[1].accepts_new);
        assert_ne!(tcp.servers[0].id, redis.l4[1].servers[0].id);
    }

    #[test]
    fn l4_mistakes_name_the_route() {
        for (text, needle) in [
            ("[tcp.r]\nfront_port = 0", "front_port"),
            (
                "[tcp.r]\nfront_port = 1\nservers = [{ address = \"localhost:1\" }]",
                "localhost:1",
            ),
            ("[udp.r]\nfront_port = 1\nsni = [\"a.example.org\"]", "sni"),
            ("[tcp.r]\nfront_port = 1\nbalance = \"fastest\"", "fastest"),
            (
                "[tcp.r]\nfront_port = 1\nidle_timeout = \"0s\"",
                "idle_timeout",
            ),
            ("[tcp.r]\nfrontport = 1", "frontport"),
            (
                "[udp.r]\nfront_port = 1\nhealth_check = { interval = \"1s\" }",
                "health_check",
            ),
            (
                "[tcp.r]\nfront_port = 1\nhealth_check = { path = \"/health\" }",
                "health_check",
            ),
            (
                "[tcp.r]\nfront_port = 1\nhealth_check = { rise = 0 }",
                "health_check.rise",
            ),
        ] {
            let e = p(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
            if !needle.contains("frontport") {
                assert!(e.contains(".r]"), "{e}");
            }
        }
    }
}
