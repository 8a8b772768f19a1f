//! Turning provider specs into a [`Table`]: ordering routers, precomputing the balancing
//! order and the `Set-Cookie` values, so that none of that happens per request.
//!
//! A swap usually changes one service of hundreds, so the [`Builder`] remembers what it
//! built for each service and hands an unchanged service's servers (their cookies and their
//! runtime state) to the next table as they are: a rebuild costs what changed plus a small
//! fee per service, and freeing the old table frees little more than its routers.

use std::sync::Arc;
use std::time::Duration;

use cookie::{Cookie, SameSite as CookieSameSite};
use http::HeaderValue;

use super::order::KeptOrder;
use super::spec::{
    CookieMode, FallbackSpec, SameSite, ServerSpec, ServiceOptions, ServiceSpec, StickySpec,
};
use super::state::{StateRegistry, PROBE_UNKNOWN};
use super::{Fallback, Readiness, Router, RouterDef, Server, Service, Sticky, Table};
use crate::balance::Balancer;
use crate::sticky::{url_hash, Keyring};

/// Cookie settings that apply to every service unless its labels say otherwise.
#[derive(Debug, Clone, Default)]
pub struct StickyGlobals {
    pub mode: CookieMode,
    pub ttl: Option<Duration>,
    /// The shared key file's keys, needed by the `sealed` mode.
    pub keyring: Option<Arc<Keyring>>,
}

/// Builds each table from every provider's services, reusing what the previous table had
/// for the services whose spec did not change. Owns the servers' runtime state.
#[derive(Debug, Default)]
pub struct Builder {
    globals: StickyGlobals,
    states: StateRegistry,
    /// What each service of the last table was built from and with, in table order.
    built: Vec<Built>,
    /// The last table's routers before sorting, by sort key, and the order the sort gave.
    order: RouterOrder,
}

/// A table rebuilt for an edit mostly sorts the same routers again; comparing them with the
/// last ones costs far less than sorting a thousand names.
#[derive(Debug, Default)]
struct RouterOrder {
    /// The last table's routers, sorted.
    defs: Vec<Arc<RouterDef>>,
    kept: KeptOrder,
}

/// One service as the builder made it: the spec, and what the next table can share.
#[derive(Debug)]
struct Built {
    spec: Arc<ServiceSpec>,
    /// Its routers, for each table to point at the service wherever it is.
    routers: Box<[Arc<RouterDef>]>,
    /// The table's service, shared by every table while the spec does not change. Its
    /// servers, and those of a fallback URL's own service, are the ones whose state this
    /// holds.
    made: Arc<Service>,
    /// What every build needs to know of the spec, kept here so that an unchanged service's
    /// spec is not read again.
    start_down: bool,
    /// Its fallback names another service, which this table's index must be found for.
    fallback_service: bool,
    /// It has TCP or UDP routes.
    l4: bool,
}

impl Builder {
    pub fn new(globals: StickyGlobals) -> Self {
        Self {
            globals,
            ..Self::default()
        }
    }

    /// How many servers have runtime state: those of the last table.
    pub fn server_states(&self) -> usize {
        self.states.len()
    }

    /// Builds a table from every provider's services. Specs must already be valid: the
    /// providers reject bad ones with a warning naming the culprit before they get here. A
    /// service that wants sealed cookies while there is no key file is left out, with a
    /// warning, each time it is built. Servers keep their runtime state from table to table;
    /// servers that left lose it.
    ///
    /// The last table's services are found by walking both lists in (provider, name) order,
    /// the publisher's, so that finding them costs no lookup; in any other order a service
    /// is only rebuilt where it could have been reused.
    pub fn build(&mut self, specs: &[&Arc<ServiceSpec>], readiness: Readiness) -> Table {
        let mut previous = std::mem::take(&mut self.built).into_iter().peekable();
        // What the previous table had and this one does not: let go of only after this
        // table holds its servers, so that a server kept under a changed spec keeps its state.
        let mut gone = Vec::new();
        let mut routers = Vec::with_capacity(specs.len());
        let mut services: Vec<Arc<Service>> = Vec::with_capacity(specs.len());
        let mut with_fallback_service = Vec::new();
        let mut with_l4: Vec<&ServiceSpec> = Vec::new();
        self.built.reserve(specs.len());
        for &spec in specs {
            super::pace::breathe();
            // A provider passes an unchanged service as the very spec it passed before, and
            // it comes at the head of the last table's list: a pointer comparison finds it
            // without reading either spec, which by the next edit are no longer in the cache.
            let built = match previous.next_if(|b| Arc::ptr_eq(&b.spec, spec)) {
                Some(same) => same.reused(),
                None => {
                    if !can_seal(spec, &self.globals) {
                        continue;
                    }
                    let key = (spec.provider, spec.name.as_str());
                    while let Some(left) =
                        previous.next_if(|b| (b.spec.provider, b.spec.name.as_str()) < key)
                    {
                        gone.push(left);
                    }
                    let before =
                        previous.next_if(|b| (b.spec.provider, b.spec.name.as_str()) == key);
                    match before {
                        Some(b) if Arc::ptr_eq(&b.spec, spec) || *b.spec == **spec => {
                            b.reused_for(spec)
                        }
                        // Changed: its servers are made anew, each with the state it had.
                        before => {
                            gone.extend(before);
                            let built = Built::new(spec, &mut self.states, &self.globals);
                            super::pace::breathe_now();
                            built
                        }
                    }
                }
            };
            let index = services.len();
            services.push(Arc::clone(&built.made));
            routers.extend(built.routers.iter().map(|def| Router {
                def: Arc::clone(def),
                service: index,
            }));
            if built.fallback_service {
                with_fallback_service.push(index);
            }
            if built.l4 {
                with_l4.push(&**spec);
            }
            self.built.push(built);
        }
        gone.extend(previous);
        resolve_fallbacks(&self.built, &with_fallback_service, &mut services);
        let routers = self.order.sort(routers);
        let (l4, _conflicts) = super::l4::build(&with_l4, &self.states);
        for built in gone {
            built.release(&mut self.states);
        }
        self.states.built();
        Table {
            index: super::index::RouterIndex::new(&routers),
            routers: routers.into_boxed_slice(),
            services: services.into_boxed_slice(),
            readiness,
            l4: l4.into_boxed_slice(),
        }
    }
}

impl Built {
    fn new(spec: &Arc<ServiceSpec>, states: &mut StateRegistry, globals: &StickyGlobals) -> Self {
        let sticky = spec.options.sticky.as_ref().map(|st| sticky(st, globals));
        let servers = build_servers(spec, sticky.as_ref(), states);
        let fallback = match &spec.options.fallback {
            Some(FallbackSpec::Url(url)) => {
                let own = ServiceSpec {
                    name: format!("{}-fallback", spec.name),
                    provider: spec.provider,
                    routers: Vec::new(),
                    servers: vec![ServerSpec {
                        id: format!("fallback:{}/{url}", spec.name),
                        url: url.clone(),
                        weight: 1,
                        accepts_new: true,
                    }],
                    options: ServiceOptions::default(),
                    l4: Vec::new(),
                };
                let servers = build_servers(&own, None, states);
                Some(Fallback::Own(Box::new(service(
                    &own,
                    servers,
                    balancer(&own),
                    None,
                ))))
            }
            Some(FallbackSpec::Service(_)) | None => None,
        };
        // L4 routes are rebuilt with every table (they are few), but their servers' state is
        // held here with the service's, for as long as the spec lists them.
        for route in &spec.l4 {
            for server in &route.servers {
                states.acquire(&server.id);
            }
        }
        let mut made = service(spec, servers, balancer(spec), sticky);
        made.fallback = fallback;
        Self {
            made: Arc::new(made),
            start_down: start_down(spec),
            fallback_service: matches!(spec.options.fallback, Some(FallbackSpec::Service(_))),
            l4: !spec.l4.is_empty(),
            routers: spec
                .routers
                .iter()
                .map(|r| {
                    Arc::new(RouterDef {
                        name: r.name.as_str().into(),
                        rule: r.rule.clone(),
                        priority: r.priority,
                        tls: r.tls,
                    })
                })
                .collect(),
            spec: Arc::clone(spec),
        }
    }

    /// For the next table as it is. Its servers are held back as fresh ones would be: one
    /// of a `start_down` service that the monitor has not judged yet (it was told to forget
    /// it) stays out.
    fn reused(self) -> Self {
        if self.start_down {
            hold_back_unprobed(&self.made.servers);
        }
        self
    }

    /// [`Built::reused`] for a spec equal to its own: the caller's copy is kept, so that an
    /// equal spec is not held twice.
    fn reused_for(mut self, spec: &Arc<ServiceSpec>) -> Self {
        self.spec = Arc::clone(spec);
        self.reused()
    }

    /// Lets go of the runtime state of every server this service listed.
    fn release(self, states: &mut StateRegistry) {
        let own = match &self.made.fallback {
            Some(Fallback::Own(own)) => &own.servers[..],
            _ => &[],
        };
        for server in self.made.servers.iter().chain(own) {
            states.release(&server.id);
        }
        for route in &self.spec.l4 {
            for server in &route.servers {
                states.release(&server.id);
            }
        }
    }
}

impl RouterOrder {
    /// Traefik v1 gives a router without a priority the length of its rule, so that a more
    /// specific rule wins; the name breaks remaining ties so the order never depends on
    /// discovery order.
    fn sort(&mut self, routers: Vec<Router>) -> Vec<Router> {
        let sorted = self.kept.sort(
            routers,
            &self.defs,
            |r, last| {
                Arc::ptr_eq(&r.def, last)
                    || (effective_priority(&r.def) == effective_priority(last)
                        && r.def.name == last.name)
            },
            |a, b| {
                effective_priority(&b.def)
                    .cmp(&effective_priority(&a.def))
                    .then_with(|| a.def.name.cmp(&b.def.name))
            },
        );
        // The new definitions, so that the next comparison finds the same pointers.
        self.defs.clear();
        self.defs.extend(sorted.iter().map(|r| Arc::clone(&r.def)));
        sorted
    }
}

fn effective_priority(def: &RouterDef) -> i64 {
    if def.priority == 0 {
        def.rule.source_len as i64
    } else {
        i64::from(def.priority)
    }
}

/// The servers of a service, each holding its runtime state in `states`.
fn build_servers(
    spec: &ServiceSpec,
    sticky: Option<&Sticky>,
    states: &mut StateRegistry,
) -> Arc<[Server]> {
    let servers: Arc<[Server]> = spec
        .servers
        .iter()
        .map(|s| {
            // A TLS protocol makes the backend's URL (and so a `url` cookie) https.
            let scheme = if spec.options.protocol.uses_tls() {
                http::uri::Scheme::HTTPS
            } else {
                s.url.scheme.clone()
            };
            let url = format!("{scheme}://{}", s.url.authority);
            let cookie_value = match sticky.map(|st| st.mode) {
                Some(CookieMode::Url) => url.clone(),
                Some(CookieMode::Hash) => url_hash(&url),
                Some(CookieMode::Sealed) | None => String::new(),
            };
            let set_cookie = sticky.filter(|_| !cookie_value.is_empty()).and_then(|st| {
                HeaderValue::from_str(&format!(
                    "{}={cookie_value}{}",
                    st.cookie_name, st.attributes
                ))
                .ok()
            });
            Server {
                set_cookie,
                cookie_value: cookie_value.into(),
                id: s.id.clone().into(),
                url: url.into(),
                scheme,
                authority: s.url.authority.clone(),
                weight: s.weight,
                accepts_new: s.accepts_new,
                state: states.acquire(&s.id),
                id_hash: super::stable_hash(s.id.as_bytes()),
            }
        })
        .collect();
    if start_down(spec) {
        hold_back_unprobed(&servers);
    }
    servers
}

/// Traefik #4544: with `start_down`, a server never probed takes no traffic until its first
/// pass.
fn start_down(spec: &ServiceSpec) -> bool {
    spec.options
        .health_check
        .as_ref()
        .is_some_and(|h| h.start_down)
}

fn hold_back_unprobed(servers: &[Server]) {
    for server in servers {
        if server.state.probe() == PROBE_UNKNOWN {
            server.state.mark_down_until_probed();
        }
    }
}

/// The balancer of a service, with its pick order worked out.
fn balancer(spec: &ServiceSpec) -> Arc<Balancer> {
    let weights: Vec<u32> = spec.servers.iter().map(|s| s.weight).collect();
    Arc::new(Balancer::new(spec.options.method, &weights))
}

fn service(
    spec: &ServiceSpec,
    servers: Arc<[Server]>,
    balancer: Arc<Balancer>,
    sticky: Option<Sticky>,
) -> Service {
    Service {
        name: spec.name.as_str().into(),
        provider: spec.provider,
        servers,
        balancer,
        slow_start: spec.options.slow_start,
        sticky,
        pass_host_header: spec.options.pass_host_header,
        retry: spec.options.retry.clone(),
        passive: spec.options.passive.clone(),
        fallback: None,
        base_path: spec.options.base_path.as_deref().map(Into::into),
        strip_prefixes: spec
            .options
            .strip_prefixes
            .iter()
            .map(|p| p.as_str().into())
            .collect(),
        limits: spec.options.limits.clone(),
        health_check: spec.options.health_check.clone(),
        protocol: spec.options.protocol,
        backend_tls: spec.options.backend_tls.clone(),
        affinity_header: spec
            .options
            .affinity_header
            .as_deref()
            .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
        response_header_timeout: spec.options.response_header_timeout,
    }
}

/// Points each fallback naming a service at it. A name that matches nothing is logged and
/// dropped: the service still routes normally. The index is this table's, so a service
/// with such a fallback is copied for each table, not shared.
fn resolve_fallbacks(
    built: &[Built],
    with_fallback_service: &[usize],
    services: &mut [Arc<Service>],
) {
    // `built` is this table's, index for index with `services`.
    let specs = || built.iter().map(|b| &b.spec);
    for &i in with_fallback_service {
        let spec = &built[i].spec;
        let Some(FallbackSpec::Service(name)) = &spec.options.fallback else {
            continue;
        };
        // Prefer the same provider when both have a service of that name.
        let target = specs()
            .position(|s| s.name == *name && s.provider == spec.provider)
            .or_else(|| specs().position(|s| s.name == *name));
        let fallback = match target {
            Some(t) if t != i => Some(Fallback::Service(t)),
            _ => {
                tracing::warn!(service = %spec.name, fallback = %name, "fallback service not found; no fallback");
                None
            }
        };
        Arc::make_mut(&mut services[i]).fallback = fallback;
    }
}

/// A service that wants sealed cookies needs the key file; without it, the service is left
/// out with a warning rather than silently getting readable cookies.
fn can_seal(spec: &ServiceSpec, globals: &StickyGlobals) -> bool {
    let wants_sealed = spec
        .options
        .sticky
        .as_ref()
        .is_some_and(|s| s.mode.unwrap_or(globals.mode) == CookieMode::Sealed);
    if wants_sealed && globals.keyring.is_none() {
        tracing::warn!(
            service = %spec.name,
            provider = spec.provider.as_str(),
            "sticky mode `sealed` needs a key file (--sticky.keyfile); service skipped"
        );
        return false;
    }
    true
}

fn sticky(spec: &StickySpec, globals: &StickyGlobals) -> Sticky {
    let mode = spec.mode.unwrap_or(globals.mode);
    Sticky {
        cookie_name: spec.cookie_name.clone().into(),
        mode,
        attributes: attributes(spec).into(),
        sliding: spec.sliding,
        ttl: spec.ttl.or(globals.ttl),
        keyring: (mode == CookieMode::Sealed)
            .then(|| globals.keyring.clone())
            .flatten(),
    }
}

/// The attribute part of the `Set-Cookie` header, rendered by the `cookie` crate once.
fn attributes(spec: &StickySpec) -> String {
    let mut c = Cookie::build(("n", "v"))
        .path(spec.path.clone())
        .http_only(spec.http_only)
        .secure(spec.secure);
    if let Some(s) = spec.same_site {
        c = c.same_site(match s {
            SameSite::Strict => CookieSameSite::Strict,
            SameSite::Lax => CookieSameSite::Lax,
            SameSite::None => CookieSameSite::None,
        });
    }
    if let Some(age) = spec.max_age {
        c = c.max_age(cookie::time::Duration::seconds(age.as_secs() as i64));
    }
    if let Some(d) = &spec.domain {
        c = c.domain(d.clone());
    }
    let rendered = c.build().to_string();
    rendered.strip_prefix("n=v").unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::super::rule::parse_v1;
    use super::super::spec::{Provider, RouterSpec, ServerUrl};
    use super::*;

    /// Builds one table from nothing.
    fn build_once(specs: &[ServiceSpec], globals: &StickyGlobals) -> Table {
        let shared: Vec<Arc<ServiceSpec>> = specs.iter().cloned().map(Arc::new).collect();
        let refs: Vec<&Arc<ServiceSpec>> = shared.iter().collect();
        Builder::new(globals.clone()).build(&refs, Readiness::Ready)
    }

    fn spec(name: &str, rule: &str, priority: i32, ports: &[u16]) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            provider: Provider::File,
            routers: vec![RouterSpec {
                name: name.into(),
                rule: parse_v1(rule).unwrap(),
                priority,
                tls: false,
            }],
            servers: ports
                .iter()
                .map(|&p| ServerSpec {
                    id: format!("{name}-{p}"),
                    url: ServerUrl::http("10.0.0.5", p).unwrap(),
                    weight: 1,
                    accepts_new: true,
                })
                .collect(),
            options: ServiceOptions {
                sticky: Some(StickySpec::named("_a49bc".into())),
                ..ServiceOptions::default()
            },
            l4: Vec::new(),
        }
    }

    #[test]
    fn longer_rules_win_without_priority_and_priority_wins_over_length() {
        let t = build_once(
            &[
                spec("root", "PathPrefix:/", 0, &[1]),
                spec("api", "PathPrefix:/api", 0, &[2]),
                spec("forced", "PathPrefix:/x", 100, &[3]),
            ],
            &StickyGlobals::default(),
        );
        let names: Vec<&str> = t.routers.iter().map(|r| &*r.def.name).collect();
        assert_eq!(names, ["forced", "api", "root"]);
    }

    #[test]
    fn a_rebuild_orders_routers_by_their_new_priorities() {
        let names = |t: &Table| -> Vec<String> {
            t.routers.iter().map(|r| r.def.name.to_string()).collect()
        };
        let mut b = Builder::new(StickyGlobals::default());
        let root = Arc::new(spec("root", "PathPrefix:/", 0, &[1]));
        let api = Arc::new(spec("api", "PathPrefix:/api", 0, &[2]));
        let t = build_from(&mut b, &[Arc::clone(&api), Arc::clone(&root)]);
        assert_eq!(names(&t), ["api", "root"]);
        // The same routers again, then `root` given the higher priority.
        let t = build_from(&mut b, &[Arc::clone(&api), Arc::clone(&root)]);
        assert_eq!(names(&t), ["api", "root"]);
        let root = Arc::new(spec("root", "PathPrefix:/", 100, &[1]));
        let t = build_from(&mut b, &[Arc::clone(&api), Arc::clone(&root)]);
        assert_eq!(names(&t), ["root", "api"]);
        // A router that leaves takes its place in the order with it.
        let t = build_from(&mut b, &[Arc::clone(&root)]);
        assert_eq!(names(&t), ["root"]);
    }

    #[test]
    fn paths_are_stripped_then_based() {
        let mut s = spec("w", "PathPrefix:/", 0, &[8000]);
        s.options.strip_prefixes = vec!["/api".into()];
        s.options.base_path = Some("/v1".into());
        let t = build_once(&[s], &StickyGlobals::default());
        let svc = &t.services[0];
        let rewrite = |path| svc.rewrite_path(path);
        assert_eq!(
            rewrite("/api/users"),
            Some(("/v1/users".into(), Some("/api")))
        );
        assert_eq!(rewrite("/api"), Some(("/v1/".into(), Some("/api"))));
        assert_eq!(rewrite("/apiary"), Some(("/v1/apiary".into(), None)));
        assert_eq!(rewrite("/other"), Some(("/v1/other".into(), None)));
        let plain = build_once(
            &[spec("p", "PathPrefix:/", 0, &[8000])],
            &StickyGlobals::default(),
        );
        assert_eq!(plain.services[0].rewrite_path("/x"), None);
    }

    #[test]
    fn fallbacks_resolve_by_name_or_url() {
        let mut a = spec("a", "Host:a", 0, &[1]);
        a.options.fallback = Some(FallbackSpec::Service("b".into()));
        let mut b = spec("b", "Host:b", 0, &[2]);
        b.options.fallback = Some(FallbackSpec::Url(ServerUrl::http("10.0.0.9", 80).unwrap()));
        let mut c = spec("c", "Host:c", 0, &[3]);
        c.options.fallback = Some(FallbackSpec::Service("missing".into()));
        let t = build_once(&[a, b, c], &StickyGlobals::default());
        assert!(matches!(t.services[0].fallback, Some(Fallback::Service(1))));
        match &t.services[1].fallback {
            Some(Fallback::Own(s)) => assert_eq!(&*s.servers[0].url, "http://10.0.0.9:80"),
            other => panic!("{other:?}"),
        }
        assert!(t.services[2].fallback.is_none());
    }

    #[test]
    fn a_sealed_service_without_a_key_file_is_left_out_of_every_build() {
        let mut a = spec("a", "Host:a", 0, &[1]);
        a.options.fallback = Some(FallbackSpec::Service("c".into()));
        let mut sealed = spec("s", "Host:s", 0, &[2]);
        if let Some(sticky) = sealed.options.sticky.as_mut() {
            sticky.mode = Some(CookieMode::Sealed);
        }
        let specs = shared(vec![a, sealed, spec("c", "Host:c", 0, &[3])]);
        let mut b = Builder::default();
        for _ in 0..2 {
            // The second build reuses `a` and `c` as they are.
            let t = build_from(&mut b, &specs);
            let names: Vec<&str> = t.services.iter().map(|s| &*s.name).collect();
            assert_eq!(names, ["a", "c"]);
            assert!(matches!(t.services[0].fallback, Some(Fallback::Service(1))));
            let routed: Vec<usize> = t.routers.iter().map(|r| r.service).collect();
            assert_eq!(routed, [0, 1]);
        }
    }

    #[test]
    fn set_cookie_is_the_tutorials() {
        let t = build_once(
            &[spec("w", "PathPrefix:/", 0, &[8000])],
            &StickyGlobals::default(),
        );
        let server = &t.services[0].servers[0];
        assert_eq!(
            server.set_cookie.as_ref().unwrap(),
            "_a49bc=http://10.0.0.5:8000; HttpOnly; Path=/"
        );
    }

    #[test]
    fn cookie_lookup_only_knows_own_servers() {
        let t = build_once(
            &[
                spec("a", "Host:a", 0, &[8000, 8001]),
                spec("b", "Host:b", 0, &[9000]),
            ],
            &StickyGlobals::default(),
        );
        let a = &t.services[0];
        use super::super::CookieVerdict::*;
        assert_eq!(a.resolve_cookie("http://10.0.0.5:8001"), Pinned(1));
        assert_eq!(a.resolve_cookie("http://10.0.0.5:9000"), Stale);
        assert_eq!(a.resolve_cookie("http://169.254.169.254:80"), Stale);
        assert_eq!(a.resolve_cookie(""), Invalid);
        assert_eq!(a.resolve_cookie("garbage"), Invalid);
    }

    fn shared(specs: Vec<ServiceSpec>) -> Vec<Arc<ServiceSpec>> {
        specs.into_iter().map(Arc::new).collect()
    }

    fn build_from(b: &mut Builder, specs: &[Arc<ServiceSpec>]) -> Table {
        b.build(&specs.iter().collect::<Vec<_>>(), Readiness::Ready)
    }

    #[test]
    fn unchanged_services_share_their_servers_and_changed_ones_keep_server_state() {
        let mut b = Builder::default();
        let specs = shared(vec![
            spec("a", "Host:a", 0, &[1, 2]),
            spec("b", "Host:b", 0, &[3]),
        ]);
        let first = build_from(&mut b, &specs);
        let _busy = first.services[0].servers[1].state.start_request();
        // `a` loses a server, `b` is the same spec (and an equal copy of it the next time).
        let changed = Arc::new(spec("a", "Host:a", 0, &[2]));
        let second = build_from(&mut b, &[Arc::clone(&changed), Arc::clone(&specs[1])]);
        assert!(Arc::ptr_eq(
            &first.services[1].servers,
            &second.services[1].servers
        ));
        assert_eq!(second.services[0].servers[0].state.inflight(), 1);
        assert_eq!(b.server_states(), 2, "the server that left lost its state");
        let third = build_from(&mut b, &[changed, Arc::new(spec("b", "Host:b", 0, &[3]))]);
        assert!(Arc::ptr_eq(
            &first.services[1].servers,
            &third.services[1].servers
        ));
        // Every table routes to its own index of the service.
        let fourth = build_from(&mut b, &shared(vec![spec("b", "Host:b", 0, &[3])]));
        assert_eq!(fourth.routers[0].service, 0);
        assert_eq!(b.server_states(), 1);
        build_from(&mut b, &[]);
        assert_eq!(b.server_states(), 0);
    }

    #[test]
    fn a_name_given_twice_keeps_both_services_states_held() {
        let mut b = Builder::default();
        let specs = shared(vec![
            spec("a", "Host:a", 0, &[1]),
            spec("a", "Host:b", 0, &[2]),
        ]);
        let first = build_from(&mut b, &specs);
        let second = build_from(&mut b, &specs);
        assert_eq!(b.server_states(), 2);
        assert!(Arc::ptr_eq(
            &first.services[0].servers[0].state,
            &second.services[0].servers[0].state
        ));
        assert!(Arc::ptr_eq(
            &first.services[1].servers[0].state,
            &second.services[1].servers[0].state
        ));
        build_from(&mut b, &specs[..1]);
        assert_eq!(b.server_states(), 1);
    }
}
