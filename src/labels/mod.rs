//! Service labels (`traefik.*` as in Traefik v1, and limpet's own `limpet.*`, which means the
//! same) turned into a typed [`ServiceLabels`].
//!
//! Pure: no I/O. Values are validated here so that a bad label is reported once, naming the
//! label, and the service is skipped instead of being half-routed.

mod l4;
mod traefik_v2;

pub use l4::{AliyunHttp, L4Labels};
pub use traefik_v2::RouterLabels;

use std::collections::BTreeMap;

use crate::balance::UnknownMethod;
use crate::config::{parse_duration, parse_statuses};
use crate::table::rule::{parse_v1, ParsedRule, RuleError};
use crate::table::spec::{
    FallbackSpec, HealthCheckSpec, HttpProbe, Probe, ServerUrl, ServiceOptions, StickySpec,
};

/// The two namespaces that configure a service. When both set the same key to different
/// values, the service is refused: silently preferring one hides a deployment mistake.
const NAMESPACES: [&str; 2] = ["limpet.", "traefik."];

/// Everything the labels say about one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLabels {
    pub enable: bool,
    /// The port the containers listen on; required unless the image exposes exactly one.
    pub port: Option<u16>,
    /// The network to reach the tasks on, when the service is attached to several.
    pub network: Option<String>,
    /// The Traefik v1 frontend rule (one router per service).
    pub rule: Option<ParsedRule>,
    pub priority: i32,
    /// The v1 router only matches requests that came over TLS.
    pub tls: bool,
    /// Traefik v2 routers; when present they replace the v1 router.
    pub routers: Vec<RouterLabels>,
    pub weight: u32,
    pub sticky: bool,
    /// Cookie settings; an empty `cookie_name` means "the generated default".
    pub cookie: StickySpec,
    /// Traefik v1's `traefik.backend`: renames the backend, and so the generated cookie name.
    pub backend: Option<String>,
    /// Balancing, retries, health and paths; `options.sticky` is left for the caller, which
    /// knows the default cookie name.
    pub options: ServiceOptions,
    /// Servers in maintenance (`limpet.maintenance`): task slots, task or container ids or
    /// names. They keep pinned clients and take no new ones.
    pub maintenance: Vec<String>,
    /// Layer-4 routes (`limpet.tcp.*`, `limpet.udp.*`, `aliyun.lb.port_*` with tcp/udp).
    pub l4: Vec<L4Labels>,
}

/// Labels read from one service, plus what was ignored.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub labels: ServiceLabels,
    /// Labels in our namespaces that mean nothing to limpet (a typo, or a Traefik feature
    /// limpet does not have); the caller logs them.
    pub ignored: Vec<String>,
    /// L4 routes (and Alibaba HTTP ports) refused for a bad value. Only they are lost: the
    /// service and its other routes are kept. The caller logs them.
    pub rejected: Vec<LabelError>,
    /// Things the operator should know that are not mistakes (an Alibaba front port limpet
    /// cannot honour); the caller logs them.
    pub notices: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelError {
    #[error("label `{label}={value}`: {reason}")]
    Invalid {
        label: String,
        value: String,
        reason: String,
    },
    #[error("label `{label}`: invalid rule: {source}")]
    Rule {
        label: String,
        #[source]
        source: RuleError,
    },
    #[error("label `{label}` is required: {reason}")]
    Missing { label: String, reason: String },
    #[error("labels `{first}={first_value}` and `{second}={second_value}` conflict")]
    Conflict {
        first: String,
        first_value: String,
        second: String,
        second_value: String,
    },
}

/// The keys limpet understands, under either namespace. Keys compare case-insensitively,
/// because Traefik v1 users write both `passHostHeader` and `passhostheader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Enable,
    Port,
    Network,
    Rule,
    Priority,
    FrontendTls,
    EntryPoints,
    PassHostHeader,
    Weight,
    Method,
    Sticky,
    CookieName,
    Backend,
    RetryAttempts,
    RetryIdempotent,
    RetryNonIdempotent,
    PassiveMaxFailures,
    PassiveCooldown,
    PassiveStatuses,
    CookieMode,
    CookieSecure,
    CookieHttpOnly,
    CookieSameSite,
    CookieMaxAge,
    CookiePath,
    CookieDomain,
    CookieSliding,
    CookieTtl,
    SlowStart,
    Fallback,
    BasePath,
    StripPrefix,
    MaxConn,
    Queue,
    QueueTimeout,
    Maintenance,
    HcType,
    HcPath,
    HcPort,
    HcInterval,
    HcTimeout,
    HcConnectTimeout,
    HcScheme,
    HcHostname,
    HcHeaders,
    HcMethod,
    HcBody,
    HcStatus,
    HcExpectHeaders,
    HcIdHeader,
    HcRise,
    HcFall,
    HcStartDown,
    Protocol,
    TlsCa,
    TlsServerName,
    TlsCert,
    TlsClientKeyFile,
    TlsInsecure,
    AffinityHeader,
    ResponseHeaderTimeout,
}

const KEYS: &[(&str, Key)] = &[
    ("enable", Key::Enable),
    ("port", Key::Port),
    ("docker.network", Key::Network),
    // Traefik v3's Swarm provider spells it this way.
    ("swarm.network", Key::Network),
    ("frontend.rule", Key::Rule),
    ("frontend.priority", Key::Priority),
    ("frontend.tls", Key::FrontendTls),
    ("frontend.entrypoints", Key::EntryPoints),
    ("frontend.passhostheader", Key::PassHostHeader),
    ("weight", Key::Weight),
    ("backend.loadbalancer.method", Key::Method),
    ("backend.loadbalancer.stickiness", Key::Sticky),
    // Traefik 1.4's spelling, still honoured by 1.7.
    ("backend.loadbalancer.sticky", Key::Sticky),
    (
        "backend.loadbalancer.stickiness.cookiename",
        Key::CookieName,
    ),
    ("backend", Key::Backend),
    ("retry.attempts", Key::RetryAttempts),
    ("retry.idempotent", Key::RetryIdempotent),
    ("retry.nonidempotent", Key::RetryNonIdempotent),
    ("passivehealth.maxfailures", Key::PassiveMaxFailures),
    ("passivehealth.cooldown", Key::PassiveCooldown),
    ("passivehealth.statuses", Key::PassiveStatuses),
    ("sticky", Key::Sticky),
    ("sticky.cookiename", Key::CookieName),
    ("sticky.mode", Key::CookieMode),
    ("sticky.secure", Key::CookieSecure),
    ("sticky.httponly", Key::CookieHttpOnly),
    ("sticky.samesite", Key::CookieSameSite),
    ("sticky.maxage", Key::CookieMaxAge),
    ("sticky.path", Key::CookiePath),
    ("sticky.domain", Key::CookieDomain),
    ("sticky.sliding", Key::CookieSliding),
    ("sticky.ttl", Key::CookieTtl),
    ("slowstart", Key::SlowStart),
    ("fallback", Key::Fallback),
    ("backend.path", Key::BasePath),
    ("stripprefix", Key::StripPrefix),
    ("server.maxconn", Key::MaxConn),
    // Traefik v1's per-backend connection limit, applied per server here.
    ("backend.maxconn.amount", Key::MaxConn),
    ("server.queue", Key::Queue),
    ("server.queuetimeout", Key::QueueTimeout),
    ("maintenance", Key::Maintenance),
    ("healthcheck.type", Key::HcType),
    ("healthcheck.path", Key::HcPath),
    ("healthcheck.port", Key::HcPort),
    ("healthcheck.interval", Key::HcInterval),
    ("healthcheck.timeout", Key::HcTimeout),
    ("healthcheck.connecttimeout", Key::HcConnectTimeout),
    ("healthcheck.scheme", Key::HcScheme),
    ("healthcheck.hostname", Key::HcHostname),
    ("healthcheck.headers", Key::HcHeaders),
    ("healthcheck.method", Key::HcMethod),
    ("healthcheck.body", Key::HcBody),
    ("healthcheck.status", Key::HcStatus),
    ("healthcheck.expectheaders", Key::HcExpectHeaders),
    ("healthcheck.idheader", Key::HcIdHeader),
    ("healthcheck.rise", Key::HcRise),
    ("healthcheck.fall", Key::HcFall),
    ("healthcheck.startdown", Key::HcStartDown),
    ("backend.protocol", Key::Protocol),
    // Traefik v1's name for the same thing (http, https, h2c).
    ("protocol", Key::Protocol),
    ("backend.tls.ca", Key::TlsCa),
    ("backend.tls.servername", Key::TlsServerName),
    ("backend.tls.cert", Key::TlsCert),
    ("backend.tls.key", Key::TlsClientKeyFile),
    ("backend.tls.insecure", Key::TlsInsecure),
    ("sticky.header", Key::AffinityHeader),
    ("responseheadertimeout", Key::ResponseHeaderTimeout),
    // Traefik v1 spells the health check keys under `backend.`.
    ("backend.healthcheck.path", Key::HcPath),
    ("backend.healthcheck.port", Key::HcPort),
    ("backend.healthcheck.interval", Key::HcInterval),
    ("backend.healthcheck.timeout", Key::HcTimeout),
    ("backend.healthcheck.scheme", Key::HcScheme),
    ("backend.healthcheck.hostname", Key::HcHostname),
    ("backend.healthcheck.headers", Key::HcHeaders),
];

/// Reads a service's labels. `exposed_by_default` is the value of `enable` when no label
/// sets it, as Traefik v1's `--docker.exposedbydefault`.
pub fn parse(
    labels: &BTreeMap<String, String>,
    exposed_by_default: bool,
) -> Result<Parsed, LabelError> {
    let mut found: BTreeMap<KeySlot, (&str, &str)> = BTreeMap::new();
    let mut ignored = Vec::new();
    for (label, value) in labels {
        let Some(rest) = NAMESPACES
            .iter()
            .find_map(|ns| strip_prefix_ignore_case(label, ns))
        else {
            continue;
        };
        if rest.len() >= 5 && rest[..5].eq_ignore_ascii_case("http.") {
            continue;
        }
        // `limpet.tcp.*` and `limpet.udp.*` are read by `l4`. Traefik's own `traefik.tcp.*`
        // needs named entrypoints limpet does not have, so it stays reported as ignored.
        if strip_prefix_ignore_case(label, "limpet.").is_some_and(l4::is_own_key) {
            continue;
        }
        let Some(key) = KEYS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(rest))
            .map(|(_, key)| *key)
        else {
            ignored.push(label.clone());
            continue;
        };
        let slot = KeySlot(key as u8);
        if let Some((first, first_value)) = found.get(&slot) {
            if first_value.trim() != value.trim() {
                return Err(LabelError::Conflict {
                    first: (*first).to_owned(),
                    first_value: (*first_value).to_owned(),
                    second: label.clone(),
                    second_value: value.clone(),
                });
            }
            continue;
        }
        found.insert(slot, (label, value));
    }

    let get = |key: Key| found.get(&KeySlot(key as u8)).copied();
    let mut out = ServiceLabels {
        enable: exposed_by_default,
        port: None,
        network: None,
        rule: None,
        priority: 0,
        tls: false,
        routers: Vec::new(),
        weight: 1,
        sticky: false,
        cookie: StickySpec::named(String::new()),
        backend: None,
        options: ServiceOptions::default(),
        maintenance: Vec::new(),
        l4: Vec::new(),
    };
    if let Some((l, v)) = get(Key::Enable) {
        out.enable = parse_bool(l, v)?;
    }
    if let Some((l, v)) = get(Key::Port) {
        out.port = Some(match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(invalid(l, v, "expected a port number from 1 to 65535")),
        });
    }
    if let Some((l, v)) = get(Key::Network) {
        let v = v.trim();
        if v.is_empty() {
            return Err(invalid(l, v, "expected a network name"));
        }
        out.network = Some(v.to_owned());
    }
    if let Some((l, v)) = get(Key::Rule) {
        out.rule = Some(parse_v1(v).map_err(|source| LabelError::Rule {
            label: l.to_owned(),
            source,
        })?);
    }
    if let Some((l, v)) = get(Key::Priority) {
        out.priority = v
            .trim()
            .parse()
            .map_err(|_| invalid(l, v, "expected an integer"))?;
    }
    if let Some((l, v)) = get(Key::FrontendTls) {
        out.tls = parse_bool(l, v)?;
    }
    if let Some((_, v)) = get(Key::EntryPoints) {
        // Traefik v1's conventional names: a frontend on `https` alone is TLS-only. Other
        // names mean nothing here (limpet has one plain and one TLS entrypoint): served on both.
        let mut names = v.split(',').map(str::trim).filter(|n| !n.is_empty());
        let first = names.next();
        out.tls |= first.is_some_and(|n| n.eq_ignore_ascii_case("https"))
            && names.all(|n| n.eq_ignore_ascii_case("https"));
    }
    if let Some((l, v)) = get(Key::PassHostHeader) {
        out.options.pass_host_header = parse_bool(l, v)?;
    }
    if let Some((l, v)) = get(Key::Weight) {
        out.weight = v
            .trim()
            .parse()
            .map_err(|_| invalid(l, v, "expected a whole number (0 takes no new sessions)"))?;
    }
    if let Some((l, v)) = get(Key::Method) {
        out.options.method = v.parse().map_err(|UnknownMethod(m)| {
            invalid(l, v, &format!("unknown method `{m}` (wrr, drr)"))
        })?;
    }
    if let Some((l, v)) = get(Key::Sticky) {
        out.sticky = parse_bool(l, v)?;
    }
    if let Some((l, v)) = get(Key::CookieName) {
        if v.trim().is_empty() {
            return Err(invalid(l, v, "expected a cookie name"));
        }
        out.cookie.cookie_name = v.trim().to_owned();
        // Traefik v1 turns stickiness on when only the cookie name is given.
        if get(Key::Sticky).is_none() {
            out.sticky = true;
        }
    }
    if let Some((l, v)) = get(Key::Backend) {
        if v.trim().is_empty() {
            return Err(invalid(l, v, "expected a backend name"));
        }
        out.backend = Some(v.trim().to_owned());
    }
    if let Some((l, v)) = get(Key::CookieMode) {
        out.cookie.mode = Some(v.parse().map_err(|e: String| invalid(l, v, &e))?);
    }
    if let Some((l, v)) = get(Key::CookieSecure) {
        out.cookie.secure = parse_bool(l, v)?;
    }
    if let Some((l, v)) = get(Key::CookieHttpOnly) {
        out.cookie.http_only = parse_bool(l, v)?;
    }
    if let Some((l, v)) = get(Key::CookieSameSite) {
        out.cookie.same_site = Some(v.parse().map_err(|e: String| invalid(l, v, &e))?);
    }
    if let Some((l, v)) = get(Key::CookieMaxAge) {
        out.cookie.max_age = Some(parse_duration(v).map_err(|e| invalid(l, v, &e))?);
    }
    if let Some((l, v)) = get(Key::CookiePath) {
        if !v.trim().starts_with('/') {
            return Err(invalid(l, v, "a cookie path starts with `/`"));
        }
        out.cookie.path = v.trim().to_owned();
    }
    if let Some((_, v)) = get(Key::CookieDomain) {
        out.cookie.domain = Some(v.trim().to_owned()).filter(|d| !d.is_empty());
    }
    if let Some((l, v)) = get(Key::CookieSliding) {
        out.cookie.sliding = parse_bool(l, v)?;
    }
    if let Some((l, v)) = get(Key::CookieTtl) {
        let d = parse_duration(v).map_err(|e| invalid(l, v, &e))?;
        if d.is_zero() {
            return Err(invalid(
                l,
                v,
                "a ttl of 0 would expire every cookie at once",
            ));
        }
        out.cookie.ttl = Some(d);
    }
    if let Some((l, v)) = get(Key::RetryAttempts) {
        out.options.retry.attempts = parse_number(l, v, 0, 10)?;
    }
    if let Some((l, v)) = get(Key::RetryIdempotent) {
        out.options.retry.idempotent_after_send = parse_bool(l, v)?;
    }
    if let Some((l, v)) = get(Key::RetryNonIdempotent) {
        out.options.retry.unsafe_after_send = parse_bool(l, v)?;
    }
    if let Some((l, v)) = get(Key::PassiveMaxFailures) {
        out.options.passive.max_failures = parse_number(l, v, 0, 1000)?;
    }
    if let Some((l, v)) = get(Key::PassiveCooldown) {
        let d = parse_duration(v).map_err(|e| invalid(l, v, &e))?;
        if d.is_zero() {
            return Err(invalid(
                l,
                v,
                "a cool-down of 0 would never take the server out",
            ));
        }
        out.options.passive.cooldown = d;
    }
    if let Some((l, v)) = get(Key::PassiveStatuses) {
        out.options.passive.unhealthy_statuses =
            parse_statuses(v).map_err(|e| invalid(l, v, &e))?;
    }
    if let Some((l, v)) = get(Key::SlowStart) {
        out.options.slow_start = parse_duration(v).map_err(|e| invalid(l, v, &e))?;
    }
    if let Some((l, v)) = get(Key::Fallback) {
        let v2 = v.trim();
        out.options.fallback = if v2.is_empty() {
            None
        } else if v2.contains("://") {
            Some(FallbackSpec::Url(
                ServerUrl::parse(v2).map_err(|e| invalid(l, v, &e.to_string()))?,
            ))
        } else {
            Some(FallbackSpec::Service(v2.to_owned()))
        };
    }
    if let Some((l, v)) = get(Key::BasePath) {
        let p = v.trim();
        if !p.starts_with('/') {
            return Err(invalid(l, v, "a path starts with `/`"));
        }
        out.options.base_path = Some(p.trim_end_matches('/').to_owned()).filter(|p| !p.is_empty());
    }
    if let Some((l, v)) = get(Key::StripPrefix) {
        let mut prefixes: Vec<String> = list(v).map(str::to_owned).collect();
        if let Some(bad) = prefixes.iter().find(|p| !p.starts_with('/')) {
            return Err(invalid(
                l,
                v,
                &format!("prefix `{bad}` must start with `/`"),
            ));
        }
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        out.options.strip_prefixes = prefixes;
    }
    if let Some((l, v)) = get(Key::MaxConn) {
        out.options.limits.max_conn = parse_number(l, v, 0, 1_000_000)?;
    }
    if let Some((l, v)) = get(Key::Queue) {
        out.options.limits.queue = parse_number(l, v, 0, 1_000_000)?;
    }
    if let Some((l, v)) = get(Key::QueueTimeout) {
        out.options.limits.queue_timeout = positive(l, v)?;
    }
    if let Some((_, v)) = get(Key::Maintenance) {
        out.maintenance = list(v).map(str::to_owned).collect();
    }
    out.options.health_check = health_check(&get)?;
    if let Some((l, v)) = get(Key::Protocol) {
        out.options.protocol = v.parse().map_err(|e: String| invalid(l, v, &e))?;
    }
    out.options.backend_tls.ca = get(Key::TlsCa).map(|(_, v)| std::path::PathBuf::from(v.trim()));
    out.options.backend_tls.server_name = get(Key::TlsServerName).map(|(_, v)| v.trim().to_owned());
    out.options.backend_tls.client_cert = match (get(Key::TlsCert), get(Key::TlsClientKeyFile)) {
        (Some((_, c)), Some((_, k))) => Some(crate::tls::certs::CertFiles {
            cert: c.trim().into(),
            key: k.trim().into(),
        }),
        (None, None) => None,
        (Some((l, v)), None) | (None, Some((l, v))) => {
            return Err(invalid(
                l,
                v,
                "backend.tls.cert and backend.tls.key go together",
            ))
        }
    };
    if let Some((l, v)) = get(Key::TlsInsecure) {
        out.options.backend_tls.insecure = parse_bool(l, v)?;
    }
    if out.options.backend_tls != Default::default() && !out.options.protocol.uses_tls() {
        let (l, v) = [
            Key::TlsCa,
            Key::TlsServerName,
            Key::TlsCert,
            Key::TlsClientKeyFile,
            Key::TlsInsecure,
        ]
        .iter()
        .find_map(|k| get(*k))
        .expect("some TLS label is set");
        return Err(invalid(
            l,
            v,
            "needs `limpet.backend.protocol=https` or `h2`",
        ));
    }
    if let Some((_, v)) = get(Key::AffinityHeader) {
        out.options.affinity_header = Some(v.trim().to_owned()).filter(|h| !h.is_empty());
    }
    if let Some((l, v)) = get(Key::ResponseHeaderTimeout) {
        out.options.response_header_timeout = Some(positive(l, v)?);
    }
    ignored.extend(traefik_v2::apply(labels, &mut out)?);
    let found = l4::parse(labels);
    ignored.extend(found.ignored);
    out.l4 = found.routes;
    let mut rejected = found.errors;
    let mut notices = Vec::new();
    for h in found.http {
        match out.port {
            Some(p) if p != h.container_port => rejected.push(invalid(
                &h.label,
                &h.value,
                &format!("the service's HTTP port is already {p}; a service has one HTTP port"),
            )),
            _ => {
                out.port = Some(h.container_port);
                notices.push(aliyun_http_notice(&h));
            }
        }
    }
    Ok(Parsed {
        labels: out,
        ignored,
        rejected,
        notices,
    })
}

/// Alibaba's front port belongs to a cloud balancer; limpet serves HTTP on its own
/// entrypoints, and terminates TLS only where it has one with its own certificates.
fn aliyun_http_notice(h: &AliyunHttp) -> String {
    let tls = if h.tls {
        "; `https` is routed like `http`: TLS is terminated only on limpet's TLS entrypoint \
         (--tls.address), with the certificates it was given"
    } else {
        ""
    };
    format!(
        "label `{}={}`: routed on limpet's entrypoints to container port {} (front port {} and load balancer `{}` are informational){tls}",
        h.label, h.value, h.container_port, h.front_port, h.lb_name
    )
}

/// Comma-separated values, trimmed, empty ones dropped.
fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn positive(label: &str, value: &str) -> Result<std::time::Duration, LabelError> {
    let d = parse_duration(value).map_err(|e| invalid(label, value, &e))?;
    if d.is_zero() {
        return Err(invalid(label, value, "must be greater than zero"));
    }
    Ok(d)
}

/// Traefik v1's header list form: `Name:value||Other:value`.
fn header_pairs(label: &str, value: &str) -> Result<Vec<(String, String)>, LabelError> {
    value
        .split("||")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once(':')
                .ok_or_else(|| invalid(label, value, &format!("`{pair}` is not `Name:value`")))?;
            let k = k.trim();
            if k.is_empty() || http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(invalid(
                    label,
                    value,
                    &format!("`{k}` is not a header name"),
                ));
            }
            Ok((k.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// The active health check the labels describe, if any key of it is present. A path makes
/// it an HTTP check, as in Traefik; `healthcheck.type=tcp` asks for a TCP connect only.
fn health_check<'a>(
    get: &impl Fn(Key) -> Option<(&'a str, &'a str)>,
) -> Result<Option<HealthCheckSpec>, LabelError> {
    const ALL: [Key; 17] = [
        Key::HcType,
        Key::HcPath,
        Key::HcPort,
        Key::HcInterval,
        Key::HcTimeout,
        Key::HcConnectTimeout,
        Key::HcScheme,
        Key::HcHostname,
        Key::HcHeaders,
        Key::HcMethod,
        Key::HcBody,
        Key::HcStatus,
        Key::HcExpectHeaders,
        Key::HcIdHeader,
        Key::HcRise,
        Key::HcFall,
        Key::HcStartDown,
    ];
    if ALL.iter().all(|k| get(*k).is_none()) {
        return Ok(None);
    }
    let mut spec = HealthCheckSpec::default();
    const HTTP_ONLY: [Key; 9] = [
        Key::HcPath,
        Key::HcMethod,
        Key::HcScheme,
        Key::HcHostname,
        Key::HcHeaders,
        Key::HcBody,
        Key::HcStatus,
        Key::HcExpectHeaders,
        Key::HcIdHeader,
    ];
    let http_key = HTTP_ONLY.iter().find_map(|k| get(*k));
    let http = match get(Key::HcType) {
        Some((l, v)) => match v.trim().to_ascii_lowercase().as_str() {
            "http" => true,
            "tcp" => match http_key {
                Some((hl, _)) => {
                    return Err(invalid(
                        l,
                        v,
                        &format!("`{hl}` only applies to an http check"),
                    ))
                }
                None => false,
            },
            _ => return Err(invalid(l, v, "expected tcp or http")),
        },
        // Any HTTP setting makes it an HTTP check, as a path does in Traefik.
        None => http_key.is_some(),
    };
    if let Some((l, v)) = get(Key::HcInterval) {
        spec.interval = positive(l, v)?;
    }
    if let Some((l, v)) = get(Key::HcTimeout) {
        spec.timeout = positive(l, v)?;
    }
    if let Some((l, v)) = get(Key::HcConnectTimeout) {
        spec.connect_timeout = positive(l, v)?;
    }
    if let Some((l, v)) = get(Key::HcPort) {
        spec.port = Some(match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(invalid(l, v, "expected a port number from 1 to 65535")),
        });
    }
    if let Some((l, v)) = get(Key::HcRise) {
        spec.rise = parse_number(l, v, 1, 100)?;
    }
    if let Some((l, v)) = get(Key::HcFall) {
        spec.fall = parse_number(l, v, 1, 100)?;
    }
    if let Some((l, v)) = get(Key::HcStartDown) {
        spec.start_down = parse_bool(l, v)?;
    }
    if http {
        let mut probe = HttpProbe::default();
        if let Some((l, v)) = get(Key::HcPath) {
            if !v.trim().starts_with('/') {
                return Err(invalid(l, v, "a path starts with `/`"));
            }
            probe.path = v.trim().to_owned();
        }
        if let Some((l, v)) = get(Key::HcMethod) {
            let m = v.trim().to_ascii_uppercase();
            if http::Method::from_bytes(m.as_bytes()).is_err() || m.is_empty() {
                return Err(invalid(l, v, "expected an HTTP method"));
            }
            probe.method = m;
        }
        if let Some((l, v)) = get(Key::HcScheme) {
            probe.tls = match v.trim().to_ascii_lowercase().as_str() {
                "http" => false,
                "https" => true,
                _ => return Err(invalid(l, v, "expected http or https")),
            };
        }
        if let Some((_, v)) = get(Key::HcHostname) {
            probe.hostname = Some(v.trim().to_owned()).filter(|h| !h.is_empty());
        }
        if let Some((l, v)) = get(Key::HcHeaders) {
            probe.headers = header_pairs(l, v)?;
        }
        if let Some((_, v)) = get(Key::HcBody) {
            probe.body = Some(v.to_owned());
        }
        if let Some((l, v)) = get(Key::HcStatus) {
            probe.expect_status = parse_statuses(v).map_err(|e| invalid(l, v, &e))?;
        }
        if let Some((l, v)) = get(Key::HcExpectHeaders) {
            probe.expect_headers = header_pairs(l, v)?;
        }
        if let Some((l, v)) = get(Key::HcIdHeader) {
            probe.id_header = parse_bool(l, v)?;
        }
        spec.probe = Probe::Http(probe);
    }
    Ok(Some(spec))
}

fn parse_number(label: &str, value: &str, min: u32, max: u32) -> Result<u32, LabelError> {
    match value.trim().parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            label,
            value,
            &format!("expected a whole number from {min} to {max}"),
        )),
    }
}

/// Orders found keys without requiring `Key: Ord` in the public surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct KeySlot(u8);

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Go's `strconv.ParseBool`, which is what Traefik v1 accepts.
pub(crate) fn parse_bool(label: &str, value: &str) -> Result<bool, LabelError> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(invalid(label, value, "expected true or false")),
    }
}

pub(crate) fn invalid(label: &str, value: &str, reason: &str) -> LabelError {
    LabelError::Invalid {
        label: label.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Traefik v1's `provider.Normalize`: every run of characters that are neither letters nor
/// digits becomes one `-`. Stack services are named `stack_service`; Traefik's backend, and
/// so its cookie name, uses `stack-service`.
pub fn normalize_name(name: &str) -> String {
    name.split(|c: char| !c.is_alphanumeric())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn tutorial_labels() {
        let p = parse(
            &labels(&[
                ("traefik.docker.network", "whoaminet"),
                ("traefik.port", "8000"),
                ("traefik.frontend.rule", "PathPrefix:/"),
                ("traefik.backend.loadbalancer.stickiness", "true"),
            ]),
            true,
        )
        .unwrap();
        let l = p.labels;
        assert!(l.enable && l.sticky && l.options.pass_host_header);
        assert_eq!(l.port, Some(8000));
        assert_eq!(l.network.as_deref(), Some("whoaminet"));
        assert_eq!(&*l.rule.unwrap().source, "PathPrefix:/");
        assert_eq!(l.weight, 1);
        assert!(p.ignored.is_empty());
    }

    #[test]
    fn limpet_namespace_means_the_same() {
        let a = parse(
            &labels(&[("traefik.port", "80"), ("traefik.weight", "3")]),
            true,
        )
        .unwrap();
        let b = parse(
            &labels(&[("limpet.port", "80"), ("limpet.weight", "3")]),
            true,
        )
        .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn agreeing_duplicates_are_fine_conflicts_are_not() {
        assert!(parse(
            &labels(&[("traefik.port", "80"), ("limpet.port", "80")]),
            true
        )
        .is_ok());
        let err = parse(
            &labels(&[("traefik.port", "80"), ("limpet.port", "81")]),
            true,
        )
        .unwrap_err();
        assert!(matches!(err, LabelError::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("limpet.port=81"));
    }

    #[test]
    fn bad_values_name_the_label() {
        let err = parse(&labels(&[("traefik.port", "eighty")]), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "label `traefik.port=eighty`: expected a port number from 1 to 65535"
        );
        let err = parse(&labels(&[("traefik.frontend.rule", "Pathprefix/")]), true).unwrap_err();
        assert!(err.to_string().contains("traefik.frontend.rule"), "{err}");
        let err = parse(&labels(&[("traefik.enable", "yes please")]), true).unwrap_err();
        assert!(err.to_string().contains("traefik.enable"), "{err}");
        let err = parse(
            &labels(&[("traefik.backend.loadbalancer.method", "fastest")]),
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("fastest"), "{err}");
    }

    #[test]
    fn exposed_by_default_and_enable() {
        assert!(!parse(&labels(&[]), false).unwrap().labels.enable);
        assert!(
            parse(&labels(&[("traefik.enable", "true")]), false)
                .unwrap()
                .labels
                .enable
        );
        assert!(
            !parse(&labels(&[("traefik.enable", "false")]), true)
                .unwrap()
                .labels
                .enable
        );
    }

    #[test]
    fn cookie_name_alone_turns_stickiness_on() {
        let l = parse(
            &labels(&[("traefik.backend.loadbalancer.stickiness.cookieName", "sess")]),
            true,
        )
        .unwrap()
        .labels;
        assert!(l.sticky);
        assert_eq!(l.cookie.cookie_name, "sess");
    }

    #[test]
    fn unknown_labels_in_our_namespaces_are_reported_others_ignored() {
        let p = parse(
            &labels(&[
                ("traefik.frontend.headers.SSLRedirect", "true"),
                ("com.example", "x"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            p.ignored,
            vec!["traefik.frontend.headers.SSLRedirect".to_owned()]
        );
    }

    #[test]
    fn retry_and_passive_health_labels() {
        let l = parse(
            &labels(&[
                ("limpet.retry.attempts", "4"),
                ("limpet.retry.nonidempotent", "true"),
                ("limpet.passivehealth.maxfailures", "5"),
                ("limpet.passivehealth.cooldown", "30s"),
                ("limpet.passivehealth.statuses", "500, 503"),
            ]),
            true,
        )
        .unwrap()
        .labels;
        assert_eq!(l.options.retry.attempts, 4);
        assert!(l.options.retry.unsafe_after_send && l.options.retry.idempotent_after_send);
        assert_eq!(l.options.passive.max_failures, 5);
        assert_eq!(
            l.options.passive.cooldown,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(l.options.passive.unhealthy_statuses, vec![500, 503]);
        let err = parse(
            &labels(&[("limpet.passivehealth.statuses", "500,oops")]),
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("oops"), "{err}");
        let err = parse(&labels(&[("limpet.passivehealth.cooldown", "0s")]), true).unwrap_err();
        assert!(
            err.to_string().contains("limpet.passivehealth.cooldown"),
            "{err}"
        );
    }

    #[test]
    fn cookie_attribute_labels() {
        let l = parse(
            &labels(&[
                ("limpet.sticky", "true"),
                ("limpet.sticky.mode", "sealed"),
                ("limpet.sticky.secure", "true"),
                ("limpet.sticky.samesite", "Strict"),
                ("limpet.sticky.maxage", "3600"),
                ("limpet.sticky.path", "/app"),
                ("limpet.sticky.domain", "example.org"),
                ("limpet.sticky.sliding", "true"),
                ("limpet.sticky.ttl", "8h"),
            ]),
            true,
        )
        .unwrap()
        .labels;
        assert!(l.sticky && l.cookie.secure && l.cookie.http_only && l.cookie.sliding);
        assert_eq!(l.cookie.mode, Some(crate::table::spec::CookieMode::Sealed));
        assert_eq!(
            l.cookie.same_site,
            Some(crate::table::spec::SameSite::Strict)
        );
        assert_eq!(l.cookie.max_age, Some(std::time::Duration::from_secs(3600)));
        assert_eq!(l.cookie.path, "/app");
        assert_eq!(l.cookie.domain.as_deref(), Some("example.org"));
        assert_eq!(l.cookie.ttl, Some(std::time::Duration::from_secs(8 * 3600)));
        for (label, value) in [
            ("limpet.sticky.mode", "plain"),
            ("limpet.sticky.samesite", "sometimes"),
            ("limpet.sticky.path", "app"),
            ("limpet.sticky.maxage", "forever"),
        ] {
            let err = parse(&labels(&[(label, value)]), true).unwrap_err();
            assert!(err.to_string().contains(label), "{err}");
        }
    }

    #[test]
    fn routers_that_require_tls() {
        let tls = |pairs: &[(&str, &str)]| parse(&labels(pairs), true).unwrap().labels;
        assert!(!tls(&[("traefik.frontend.rule", "PathPrefix:/")]).tls);
        assert!(tls(&[("limpet.frontend.tls", "true")]).tls);
        assert!(tls(&[("traefik.frontend.entryPoints", "https")]).tls);
        assert!(!tls(&[("traefik.frontend.entryPoints", "http,https")]).tls);
        assert!(!tls(&[("traefik.frontend.entryPoints", "websecure")]).tls);
        let v2 = tls(&[
            ("traefik.http.routers.secure.rule", "Host(`a`)"),
            ("traefik.http.routers.secure.tls", "true"),
            ("traefik.http.routers.open.rule", "Host(`b`)"),
        ]);
        let by_name = |n: &str| v2.routers.iter().find(|r| r.name == n).unwrap().tls;
        assert!(by_name("secure") && !by_name("open"));
        let err = parse(&labels(&[("limpet.frontend.tls", "yes please")]), true).unwrap_err();
        assert!(err.to_string().contains("limpet.frontend.tls"), "{err}");
    }

    #[test]
    fn traefik_v2_labels() {
        let p = parse(
            &labels(&[
                ("traefik.enable", "true"),
                (
                    "traefik.http.routers.web.rule",
                    "Host(`app.example`) && PathPrefix(`/`)",
                ),
                ("traefik.http.routers.web.entrypoints", "web"),
                ("traefik.http.routers.api.rule", "PathPrefix(`/api`)"),
                ("traefik.http.routers.api.priority", "50"),
                ("traefik.http.services.app.loadbalancer.server.port", "8000"),
                (
                    "traefik.http.services.app.loadbalancer.sticky.cookie",
                    "true",
                ),
                (
                    "traefik.http.services.app.loadbalancer.sticky.cookie.name",
                    "sess",
                ),
                (
                    "traefik.http.services.app.loadbalancer.sticky.cookie.secure",
                    "true",
                ),
                (
                    "traefik.http.services.app.loadbalancer.sticky.cookie.samesite",
                    "lax",
                ),
                ("traefik.http.middlewares.strip.stripprefix.prefixes", "/x"),
                ("traefik.swarm.network", "appnet"),
            ]),
            false,
        )
        .unwrap();
        let l = p.labels;
        assert!(l.enable && l.sticky && l.cookie.secure);
        assert_eq!(l.port, Some(8000));
        assert_eq!(l.network.as_deref(), Some("appnet"));
        assert_eq!(l.cookie.cookie_name, "sess");
        assert_eq!(l.routers.len(), 2);
        assert_eq!(l.routers[0].name, "api");
        assert_eq!(l.routers[0].priority, 50);
        assert_eq!(l.backend.as_deref(), Some("app"));
        assert_eq!(
            p.ignored,
            vec!["traefik.http.middlewares.strip.stripprefix.prefixes".to_owned()]
        );
    }

    #[test]
    fn traefik_v2_mistakes_are_named() {
        let e = parse(
            &labels(&[("traefik.http.routers.r.rule", "Host(`a`")]),
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("traefik.http.routers.r.rule"), "{e}");
        let e = parse(
            &labels(&[
                ("traefik.http.services.a.loadbalancer.server.port", "80"),
                ("traefik.http.services.b.loadbalancer.server.port", "81"),
            ]),
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("one service"), "{e}");
        let e = parse(
            &labels(&[
                ("traefik.frontend.rule", "PathPrefix:/"),
                ("traefik.http.routers.r.rule", "PathPrefix(`/`)"),
            ]),
            true,
        )
        .unwrap_err();
        assert!(matches!(e, LabelError::Conflict { .. }), "{e}");
        let e = parse(&labels(&[("traefik.http.routers.r.priority", "5")]), true).unwrap_err();
        assert!(e.to_string().contains("no rule"), "{e}");
    }

    #[test]
    fn apigee_style_options() {
        let l = parse(
            &labels(&[
                ("limpet.slowstart", "30s"),
                ("limpet.fallback", "maintenance-page"),
                ("limpet.backend.path", "/v1/"),
                ("limpet.stripprefix", "/api, /api/v2"),
                ("limpet.server.maxconn", "10"),
                ("limpet.server.queue", "50"),
                ("limpet.server.queuetimeout", "2s"),
                ("limpet.maintenance", "2, abc123"),
                ("limpet.responseheadertimeout", "5m"),
            ]),
            true,
        )
        .unwrap()
        .labels;
        let o = &l.options;
        assert_eq!(o.slow_start, std::time::Duration::from_secs(30));
        assert_eq!(
            o.response_header_timeout,
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            o.fallback,
            Some(FallbackSpec::Service("maintenance-page".into()))
        );
        assert_eq!(o.base_path.as_deref(), Some("/v1"));
        assert_eq!(o.strip_prefixes, ["/api/v2", "/api"]);
        assert_eq!((o.limits.max_conn, o.limits.queue), (10, 50));
        assert_eq!(l.maintenance, ["2", "abc123"]);
        let l = parse(&labels(&[("limpet.fallback", "http://10.0.0.9:80")]), true)
            .unwrap()
            .labels;
        assert!(matches!(l.options.fallback, Some(FallbackSpec::Url(_))));
    }

    #[test]
    fn traefik_v1_health_check_labels() {
        let l = parse(
            &labels(&[
                ("traefik.backend.healthcheck.path", "/health"),
                ("traefik.backend.healthcheck.interval", "5s"),
                ("traefik.backend.healthcheck.port", "8081"),
                ("traefik.backend.healthcheck.hostname", "app.local"),
                (
                    "traefik.backend.healthcheck.headers",
                    "X-Probe:1||X-Env:test",
                ),
                ("limpet.healthcheck.status", "200,204"),
                ("limpet.healthcheck.idheader", "true"),
                ("limpet.healthcheck.rise", "1"),
            ]),
            true,
        )
        .unwrap()
        .labels;
        let h = l.options.health_check.unwrap();
        assert_eq!(h.interval, std::time::Duration::from_secs(5));
        assert_eq!(h.port, Some(8081));
        assert_eq!(h.rise, 1);
        let Probe::Http(p) = h.probe else {
            panic!("http probe expected")
        };
        assert_eq!(p.path, "/health");
        assert_eq!(p.hostname.as_deref(), Some("app.local"));
        assert_eq!(
            p.headers,
            [
                ("X-Probe".into(), "1".into()),
                ("X-Env".into(), "test".into())
            ]
        );
        assert_eq!(p.expect_status, [200, 204]);
        assert!(p.id_header);
        let tcp = parse(&labels(&[("limpet.healthcheck.type", "tcp")]), true)
            .unwrap()
            .labels;
        assert_eq!(tcp.options.health_check.unwrap().probe, Probe::Tcp);
        for (label, value) in [
            ("limpet.healthcheck.rise", "0"),
            ("limpet.healthcheck.fall", "0"),
            ("limpet.healthcheck.status", "abc"),
            ("limpet.healthcheck.type", "udp"),
            ("traefik.backend.healthcheck.headers", "broken"),
            ("limpet.healthcheck.interval", "0s"),
        ] {
            let err = parse(&labels(&[(label, value)]), true).unwrap_err();
            assert!(err.to_string().contains(label), "{err}");
        }
    }

    #[test]
    fn normalize_matches_traefik() {
        assert_eq!(normalize_name("whoami-service"), "whoami-service");
        assert_eq!(normalize_name("demo_whoami"), "demo-whoami");
        assert_eq!(normalize_name("a..b__c"), "a-b-c");
    }

    #[test]
    fn l4_labels_ride_along_and_only_traefiks_tcp_labels_are_ignored() {
        let p = parse(
            &labels(&[
                ("traefik.port", "8000"),
                ("limpet.tcp.db.frontport", "5432"),
                ("limpet.udp.db.frontport", "5432"),
                ("limpet.tcp.bad.frontport", "x"),
                ("traefik.tcp.routers.db.rule", "HostSNI(`*`)"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(p.labels.l4.len(), 2);
        assert_eq!(p.labels.port, Some(8000));
        assert_eq!(p.ignored, ["traefik.tcp.routers.db.rule"]);
        assert_eq!(p.rejected.len(), 1);
        assert!(p.rejected[0]
            .to_string()
            .contains("limpet.tcp.bad.frontport=x"));
    }

    #[test]
    fn alibaba_http_label_sets_the_port_unless_another_is_set() {
        let p = parse(&labels(&[("aliyun.lb.port_8000", "http://slb:80")]), true).unwrap();
        assert_eq!(p.labels.port, Some(8000));
        assert!(p.notices[0].contains("front port 80"), "{:?}", p.notices);
        assert!(p.notices[0].contains("slb"), "{:?}", p.notices);
        let p = parse(
            &labels(&[
                ("traefik.port", "9000"),
                ("aliyun.lb.port_8000", "http://slb:80"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(p.labels.port, Some(9000));
        assert!(p.rejected[0].to_string().contains("aliyun.lb.port_8000"));
        let p = parse(&labels(&[("aliyun.lb.port_8443", "https://slb:443")]), true).unwrap();
        assert!(p.notices[0].contains("TLS"), "{:?}", p.notices);
    }
}
