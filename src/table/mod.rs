//! The routing table: the one thing the control plane and the data plane share.
//!
//! The control plane builds a [`Table`] from [`ServiceSpec`]s and publishes it whole through
//! an `ArcSwap`; the data plane loads the current one once per request and never waits.
//! A table is immutable except for the balancers' cursors, which are atomics.

pub mod index;
pub mod l4;
pub mod order;
pub mod pace;
pub mod rule;
pub mod spec;
pub mod state;

mod build;
mod describe;

pub use build::{Builder, StickyGlobals};

use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http::HeaderValue;

use crate::balance::{Balancer, Candidates};
use crate::sticky::Keyring;
use rule::{ParsedRule, RequestFacts};
use spec::{
    BackendProtocol, BackendTls, CookieMode, HealthCheckSpec, PassiveHealth, Provider, RetryPolicy,
    ServerLimits,
};
use state::{now_ms, ServerState};

/// Whether the table reflects the providers yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Some provider has not delivered its first snapshot (e.g. Docker unreachable at start):
    /// answer 503, not 404, because routes may well exist.
    Loading,
    Ready,
}

#[derive(Debug)]
pub struct Table {
    /// Ordered: first match wins.
    pub routers: Box<[Router]>,
    /// Which of `routers` a request's host can match.
    pub index: index::RouterIndex,
    /// Shared with the tables before and after while unchanged: a rebuild for one edit
    /// touches one reference count per service, not each service's fields.
    pub services: Box<[Arc<Service>]>,
    pub readiness: Readiness,
    /// Layer-4 routes, sorted by protocol and front port; see [`Table::l4_routes`].
    pub l4: Box<[l4::L4Route]>,
}

/// A router of one table: its definition, and where its service is in this table.
#[derive(Debug, Clone)]
pub struct Router {
    pub def: Arc<RouterDef>,
    /// Index into [`Table::services`].
    pub service: usize,
}

/// A router as its service's spec defines it, shared by every table while that spec does
/// not change. Behind one `Arc` so that a table of thousands of routers is built and freed
/// with one reference count per router: cloning the name, rule and rewrite cost several on
/// every edit, each on a line the requests had pushed out of the cache. A request follows
/// one more pointer per router it tests, and the index leaves it few to test.
#[derive(Debug)]
pub struct RouterDef {
    pub name: Arc<str>,
    pub rule: ParsedRule,
    pub priority: i32,
    /// See [`spec::RouterSpec::tls`].
    pub tls: bool,
}

/// Cloned from table to table while its spec does not change: every field that owns heap
/// memory is shared, so that a clone allocates nothing (but an own fallback's box).
#[derive(Debug, Clone)]
pub struct Service {
    pub name: Arc<str>,
    pub provider: Provider,
    /// Shared with the previous and next tables while the service's spec does not change.
    pub servers: Arc<[Server]>,
    /// Shared, with its rotation, while the service's spec does not change.
    pub balancer: Arc<Balancer>,
    pub slow_start: std::time::Duration,
    pub sticky: Option<Sticky>,
    pub pass_host_header: bool,
    pub retry: RetryPolicy,
    pub passive: PassiveHealth,
    pub fallback: Option<Fallback>,
    pub base_path: Option<Arc<str>>,
    /// Longest first.
    pub strip_prefixes: Arc<[Box<str>]>,
    pub limits: ServerLimits,
    /// The active monitor, run by the health checker; passive failures then keep a server
    /// out until it passes, rather than for a cool-down.
    pub health_check: Option<HealthCheckSpec>,
    pub protocol: BackendProtocol,
    pub backend_tls: BackendTls,
    pub affinity_header: Option<http::HeaderName>,
    /// See [`spec::ServiceOptions::response_header_timeout`].
    pub response_header_timeout: Option<std::time::Duration>,
}

/// Where a service's requests go while none of its servers is in rotation.
#[derive(Debug, Clone)]
pub enum Fallback {
    /// Another service of this table.
    Service(usize),
    /// A URL, served as a one-server service of its own.
    Own(Box<Service>),
}

#[derive(Debug, Clone)]
pub struct Sticky {
    pub cookie_name: Arc<str>,
    pub mode: CookieMode,
    /// Everything after the value (`; HttpOnly; Path=/` ...), built once per service spec.
    pub attributes: Arc<str>,
    pub sliding: bool,
    pub ttl: Option<std::time::Duration>,
    /// Present exactly when `mode` is [`CookieMode::Sealed`].
    pub keyring: Option<Arc<Keyring>>,
}

/// What a sticky cookie value means for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieVerdict {
    /// A current server that is up: follow it.
    Pinned(usize),
    /// A well-formed value naming no available server (it left, or is down): re-pin.
    Stale,
    /// Not a value this service could have issued: ignore it.
    Invalid,
}

#[derive(Debug)]
pub struct Server {
    /// Stable identity (task id); see [`spec::ServerSpec::id`].
    pub id: Box<str>,
    /// `http://10.0.0.5:8000`: shown to operators and, in `url` cookie mode, to clients.
    pub url: Box<str>,
    pub scheme: Scheme,
    pub authority: Authority,
    pub weight: u32,
    /// The value pinning a client here in `url` and `hash` modes (empty when sealed).
    pub cookie_value: Box<str>,
    /// The complete `Set-Cookie` for `cookie_value`, built once per table rather than per
    /// response; sealed values are fresh per response instead.
    pub set_cookie: Option<HeaderValue>,
    /// See [`spec::ServerSpec::accepts_new`].
    pub accepts_new: bool,
    /// Shared with every other table that has this server.
    pub state: Arc<ServerState>,
    /// [`stable_hash`] of `id`, for rendezvous hashing.
    pub id_hash: u64,
}

impl Server {
    /// In rotation at all: pinned clients may use it.
    pub fn is_up(&self, now: u64) -> bool {
        !self.state.is_down(now)
    }

    /// May take a new session.
    pub fn takes_new(&self, now: u64) -> bool {
        self.accepts_new && self.is_up(now)
    }
}

impl Table {
    /// The table served before any provider has reported.
    pub fn loading() -> Self {
        Self {
            routers: Box::new([]),
            index: index::RouterIndex::default(),
            services: Box::new([]),
            readiness: Readiness::Loading,
            l4: Box::new([]),
        }
    }

    /// The first router whose rule matches; routers that require TLS only match requests
    /// that came over TLS.
    pub fn route(&self, req: &RequestFacts<'_>) -> Option<&Router> {
        self.index
            .candidates(req.host)
            .map(|i| &self.routers[i])
            .find(|r| (req.tls || !r.def.tls) && r.def.rule.rule.matches(req))
    }

    pub fn server_count(&self) -> usize {
        self.services.iter().map(|s| s.servers.len()).sum()
    }
}

impl Service {
    /// What a sticky cookie value means here. Only this service's own current servers are
    /// ever followed; a server that passive health took out makes the value stale.
    pub fn resolve_cookie(&self, value: &str) -> CookieVerdict {
        let Some(sticky) = &self.sticky else {
            return CookieVerdict::Invalid;
        };
        let found = match sticky.mode {
            CookieMode::Url => {
                if !(value.starts_with("http://") || value.starts_with("https://")) {
                    return CookieVerdict::Invalid;
                }
                self.servers.iter().position(|s| &*s.url == value)
            }
            CookieMode::Hash => {
                if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return CookieVerdict::Invalid;
                }
                self.servers.iter().position(|s| &*s.cookie_value == value)
            }
            CookieMode::Sealed => {
                let Some(keyring) = &sticky.keyring else {
                    return CookieVerdict::Invalid;
                };
                match keyring.open(&self.name, value, std::time::SystemTime::now(), sticky.ttl) {
                    Ok(id) => self.servers.iter().position(|s| *s.id == *id),
                    Err(_) => return CookieVerdict::Invalid,
                }
            }
        };
        match found {
            Some(i) if self.servers[i].is_up(now_ms()) => CookieVerdict::Pinned(i),
            _ => CookieVerdict::Stale,
        }
    }

    /// The `Set-Cookie` header pinning a client to `server`.
    pub fn set_cookie(&self, server: usize) -> Option<HeaderValue> {
        let sticky = self.sticky.as_ref()?;
        let server = &self.servers[server];
        match (&server.set_cookie, &sticky.keyring) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(keyring)) => {
                let value = keyring.seal(&self.name, &server.id, std::time::SystemTime::now());
                HeaderValue::from_str(&format!(
                    "{}={value}{}",
                    sticky.cookie_name, sticky.attributes
                ))
                .ok()
            }
            (None, None) => None,
        }
    }

    /// The server a stale session moves to: the highest rendezvous score of the session key
    /// over the servers taking new sessions. Every limpet replica with the same table makes
    /// the same choice, so a client whose requests alternate between replicas is re-pinned
    /// once, not back and forth.
    pub fn rendezvous(&self, key: SessionKey, tried: &[usize]) -> Option<usize> {
        let now = now_ms();
        self.servers
            .iter()
            .enumerate()
            .filter(|(i, s)| !tried.contains(i) && s.weight > 0 && s.takes_new(now))
            .max_by_key(|(_, s)| mix(key.0 ^ s.id_hash))
            .map(|(i, _)| i)
    }

    /// The path to send: a prefix stripped, then the base path prepended; with the prefix
    /// stripped, if any. `None` when the path is unchanged, so the common case copies
    /// nothing.
    pub fn rewrite_path(&self, path: &str) -> Option<(String, Option<&str>)> {
        let stripped = self.strip_prefixes.iter().find_map(|p| {
            path.strip_prefix(&**p)
                .filter(|rest| rest.is_empty() || rest.starts_with('/') || p.ends_with('/'))
                .map(|rest| (rest, &**p))
        });
        if stripped.is_none() && self.base_path.is_none() {
            return None;
        }
        let (rest, prefix) = match stripped {
            Some((rest, prefix)) => (rest, Some(prefix)),
            None => (path, None),
        };
        let rest = rule::rooted(rest);
        let path = match &self.base_path {
            Some(base) if rest == "/" => format!("{base}/"),
            Some(base) => format!("{base}{rest}"),
            None => rest,
        };
        Some((path, prefix))
    }

    /// Records a failed attempt on `server` and says whether it left rotation because of it.
    pub fn record_failure(&self, server: usize) -> bool {
        let state = &self.servers[server].state;
        let p = &self.passive;
        if self.health_check.is_some() {
            if state.record_failure(p.max_failures, p.cooldown) {
                state.mark_down_until_probed();
                return true;
            }
            false
        } else {
            state.record_failure(p.max_failures, p.cooldown)
        }
    }

    /// A server for a new session, avoiding servers that already failed this request.
    ///
    /// Servers at their connection limit are passed over while another can take the
    /// request at once. When every candidate is full, one is chosen all the same: the
    /// request then waits in that server's queue, and only a full queue answers 503 with
    /// Retry-After. Leaving full servers out entirely would make the queue unreachable
    /// for every request without a cookie.
    pub fn balance(&self, tried: &[usize]) -> Option<usize> {
        let view = |skip_full| View {
            service: self,
            tried,
            now: now_ms(),
            skip_full,
        };
        self.balancer.pick(&view(true)).or_else(|| {
            if self.limits.max_conn == 0 {
                return None;
            }
            self.balancer.pick(&view(false))
        })
    }
}

/// A service's servers as the balancer sees them for one request.
struct View<'a> {
    service: &'a Service,
    tried: &'a [usize],
    now: u64,
    /// Pass over servers at their connection limit.
    skip_full: bool,
}

impl Candidates for View<'_> {
    fn count(&self) -> usize {
        self.service.servers.len()
    }

    fn eligible(&self, i: usize) -> bool {
        let server = &self.service.servers[i];
        !self.tried.contains(&i)
            && server.takes_new(self.now)
            && !(self.skip_full && server.state.is_full(self.service.limits.max_conn))
    }

    fn weight(&self, i: usize) -> u32 {
        self.service.servers[i].weight
    }

    fn inflight(&self, i: usize) -> u32 {
        self.service.servers[i].state.inflight()
    }

    fn latency(&self, i: usize) -> f64 {
        self.service.servers[i].state.latency_ns()
    }

    fn ramp(&self, i: usize) -> f64 {
        self.service.servers[i]
            .state
            .ramp(self.now, self.service.slow_start)
    }
}

/// A session's identity for rendezvous hashing: the hash of the cookie value it presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKey(pub u64);

impl SessionKey {
    pub fn of(cookie_value: &str) -> Self {
        Self(stable_hash(cookie_value.as_bytes()))
    }
}

/// FNV-1a, hand-written rather than std's `DefaultHasher` because every replica, whatever it
/// was built with, must compute the same value.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A 64-bit finaliser (MurmurHash3's), so that nearby inputs give unrelated scores.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::{mix, stable_hash};

    #[test]
    fn rendezvous_is_stable_and_spreads() {
        let ids = [stable_hash(b"t1"), stable_hash(b"t2"), stable_hash(b"t3")];
        let mut wins = [0usize; 3];
        for k in 0..3000u32 {
            let key = stable_hash(k.to_string().as_bytes());
            let best = (0..3).max_by_key(|&i| mix(key ^ ids[i])).unwrap();
            wins[best] += 1;
        }
        assert!(wins.iter().all(|&w| w > 800), "{wins:?}");
        assert_eq!(stable_hash(b"abc"), 0xe71f_a219_0541_574b);
    }
}
