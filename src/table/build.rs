//! Turning provider specs into a [`Table`]: ordering routers, precomputing the balancing
//! order and the `Set-Cookie` values, so that none of that happens per request.

use std::sync::Arc;
use std::time::Duration;

use cookie::{Cookie, SameSite as CookieSameSite};
use http::HeaderValue;

use super::spec::{
    CookieMode, FallbackSpec, SameSite, ServerSpec, ServiceOptions, ServiceSpec, StickySpec,
};
use super::state::{StateRegistry, PROBE_UNKNOWN};
use super::{Fallback, Readiness, Router, Server, Service, Sticky, Table};
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

/// Builds a table from every provider's services. Specs must already be valid: the
/// providers reject bad ones with a warning naming the culprit before they get here.
/// Servers get their runtime state from `states`, which then forgets servers that left.
pub fn build(
    specs: &[&ServiceSpec],
    readiness: Readiness,
    states: &mut StateRegistry,
    globals: &StickyGlobals,
) -> Table {
    let mut routers = Vec::new();
    let mut services: Vec<Service> = Vec::with_capacity(specs.len());
    for spec in specs {
        let index = services.len();
        services.push(build_service(spec, states, globals));
        routers.extend(spec.routers.iter().map(|r| Router {
            name: r.name.clone().into(),
            rule: r.rule.clone(),
            priority: r.priority,
            service: index,
            tls: r.tls,
        }));
    }
    // Traefik v1 gives a router without a priority the length of its rule, so that a more
    // specific rule wins; the name breaks remaining ties so the order never depends on
    // discovery order.
    resolve_fallbacks(specs, &mut services, states, globals);
    routers.sort_by(|a, b| {
        effective_priority(b)
            .cmp(&effective_priority(a))
            .then_with(|| a.name.cmp(&b.name))
    });
    let (l4, _conflicts) = super::l4::build(specs, states);
    let live: std::collections::HashSet<&str> = specs
        .iter()
        .flat_map(|s| s.servers.iter().map(|sv| sv.id.as_str()))
        .chain(specs.iter().flat_map(|s| {
            s.l4.iter()
                .flat_map(|r| r.servers.iter().map(|sv| sv.id.as_str()))
        }))
        .collect();
    states.retain(|id| live.contains(id));
    states.built();
    Table {
        routers: routers.into_boxed_slice(),
        services: services.into_boxed_slice(),
        readiness,
        l4: l4.into_boxed_slice(),
    }
}

fn effective_priority(r: &Router) -> i64 {
    if r.priority == 0 {
        r.rule.source_len as i64
    } else {
        i64::from(r.priority)
    }
}

fn build_service(
    spec: &ServiceSpec,
    states: &mut StateRegistry,
    globals: &StickyGlobals,
) -> Service {
    let weights: Vec<u32> = spec.servers.iter().map(|s| s.weight).collect();
    let sticky = spec.options.sticky.as_ref().map(|st| sticky(st, globals));
    let servers = spec
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
            let cookie_value = match sticky.as_ref().map(|st| st.mode) {
                Some(CookieMode::Url) => url.clone(),
                Some(CookieMode::Hash) => url_hash(&url),
                Some(CookieMode::Sealed) | None => String::new(),
            };
            let set_cookie = sticky
                .as_ref()
                .filter(|_| !cookie_value.is_empty())
                .and_then(|st| {
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
                state: {
                    let state = states.get(&s.id);
                    // Traefik #4544: with `start_down`, a server never probed takes no
                    // traffic until its first pass.
                    if spec
                        .options
                        .health_check
                        .as_ref()
                        .is_some_and(|h| h.start_down)
                        && state.probe() == PROBE_UNKNOWN
                    {
                        state.mark_down_until_probed();
                    }
                    state
                },
                id_hash: super::stable_hash(s.id.as_bytes()),
            }
        })
        .collect();
    Service {
        name: spec.name.clone().into(),
        provider: spec.provider,
        servers,
        balancer: Balancer::new(spec.options.method, &weights),
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

/// Points each fallback at its service, or builds the one-server service of a fallback URL.
/// A name that matches nothing is logged and dropped: the service still routes normally.
fn resolve_fallbacks(
    specs: &[&ServiceSpec],
    services: &mut [Service],
    states: &mut StateRegistry,
    globals: &StickyGlobals,
) {
    for (i, spec) in specs.iter().enumerate() {
        services[i].fallback = match &spec.options.fallback {
            None => None,
            Some(FallbackSpec::Service(name)) => {
                // Prefer the same provider when both have a service of that name.
                let target = specs
                    .iter()
                    .position(|s| s.name == *name && s.provider == spec.provider)
                    .or_else(|| specs.iter().position(|s| s.name == *name));
                match target {
                    Some(t) if t != i => Some(Fallback::Service(t)),
                    _ => {
                        tracing::warn!(service = %spec.name, fallback = %name, "fallback service not found; no fallback");
                        None
                    }
                }
            }
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
                Some(Fallback::Own(Box::new(build_service(
                    &own, states, globals,
                ))))
            }
        };
    }
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

    fn refs(specs: &[ServiceSpec]) -> Vec<&ServiceSpec> {
        specs.iter().collect()
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
        let t = build(
            &refs(&[
                spec("root", "PathPrefix:/", 0, &[1]),
                spec("api", "PathPrefix:/api", 0, &[2]),
                spec("forced", "PathPrefix:/x", 100, &[3]),
            ]),
            Readiness::Ready,
            &mut StateRegistry::default(),
            &StickyGlobals::default(),
        );
        let names: Vec<&str> = t.routers.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["forced", "api", "root"]);
    }

    #[test]
    fn paths_are_stripped_then_based() {
        let mut s = spec("w", "PathPrefix:/", 0, &[8000]);
        s.options.strip_prefixes = vec!["/api".into()];
        s.options.base_path = Some("/v1".into());
        let t = build(
            &refs(&[s]),
            Readiness::Ready,
            &mut StateRegistry::default(),
            &StickyGlobals::default(),
        );
        let svc = &t.services[0];
        assert_eq!(svc.rewrite_path("/api/users").as_deref(), Some("/v1/users"));
        assert_eq!(svc.rewrite_path("/api").as_deref(), Some("/v1/"));
        assert_eq!(svc.rewrite_path("/apiary").as_deref(), Some("/v1/apiary"));
        assert_eq!(svc.rewrite_path("/other").as_deref(), Some("/v1/other"));
        let plain = build(
            &refs(&[spec("p", "PathPrefix:/", 0, &[8000])]),
            Readiness::Ready,
            &mut StateRegistry::default(),
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
        let t = build(
            &refs(&[a, b, c]),
            Readiness::Ready,
            &mut StateRegistry::default(),
            &StickyGlobals::default(),
        );
        assert!(matches!(t.services[0].fallback, Some(Fallback::Service(1))));
        match &t.services[1].fallback {
            Some(Fallback::Own(s)) => assert_eq!(&*s.servers[0].url, "http://10.0.0.9:80"),
            other => panic!("{other:?}"),
        }
        assert!(t.services[2].fallback.is_none());
    }

    #[test]
    fn set_cookie_is_the_tutorials() {
        let t = build(
            &refs(&[spec("w", "PathPrefix:/", 0, &[8000])]),
            Readiness::Ready,
            &mut StateRegistry::default(),
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
        let t = build(
            &refs(&[
                spec("a", "Host:a", 0, &[8000, 8001]),
                spec("b", "Host:b", 0, &[9000]),
            ]),
            Readiness::Ready,
            &mut StateRegistry::default(),
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
}
