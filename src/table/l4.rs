//! Layer-4 routes: a front port (TCP or UDP) forwarded to a service's tasks, as the
//! `limpet.tcp.*`/`limpet.udp.*` labels, Alibaba's `aliyun.lb.port_*` label and the file's
//! `[tcp.*]`/`[udp.*]` tables describe them.
//!
//! Pure: no I/O. Holds the provider-neutral spec ([`L4Spec`]), the built route
//! ([`L4Route`]) that lives in the [`Table`] next to the HTTP routers and is published with
//! them in the same swap, and the rules deciding who keeps a front port two services want.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::spec::{HealthCheckSpec, PassiveHealth, Provider, ServiceSpec};
use super::state::{now_ms, ServerState, StateRegistry, PROBE_UNKNOWN};
use super::{mix, stable_hash, Table};
use crate::balance::{Balancer, Candidates, Method};

/// The transport a route forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a route picks a server for a new connection (TCP) or session (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Balance {
    /// One of the HTTP methods; least-connections counts open connections or sessions, and
    /// p2c's latency is the connect time.
    Method(Method),
    /// The same client IP goes to the same server, by rendezvous hashing over the servers'
    /// stable ids: every limpet replica makes the same choice, and a server leaving moves
    /// only its own clients.
    ClientIp,
}

impl Default for L4Balance {
    fn default() -> Self {
        L4Balance::Method(Method::default())
    }
}

impl std::str::FromStr for L4Balance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "clientip" | "sourceip" | "source" | "iphash" => Ok(L4Balance::ClientIp),
            other => other.parse().map(L4Balance::Method).map_err(|_| {
                format!("`{s}`: expected roundrobin, wrr, leastconn, p2c or clientip")
            }),
        }
    }
}

impl fmt::Display for L4Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            L4Balance::Method(m) => m.fmt(f),
            L4Balance::ClientIp => f.write_str("clientip"),
        }
    }
}

/// A TLS server name a passthrough route answers: exact, or `*.example.org` for exactly one
/// more label (as a certificate wildcard matches). Stored lower-case without a final dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SniPattern {
    Exact(String),
    /// The suffix after the `*`, starting with the dot: `.example.org`.
    Wildcard(String),
}

impl SniPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let bad = |why: &str| format!("`{text}` is not a server name: {why}");
        let (wild, host) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, t.as_str()),
        };
        if host.is_empty() || host.len() > 253 {
            return Err(bad("empty or too long"));
        }
        for label in host.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(bad("empty or over-long label"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad(
                    "only letters, digits, `-` and a leading `*.` are allowed",
                ));
            }
        }
        Ok(if wild {
            SniPattern::Wildcard(format!(".{host}"))
        } else {
            SniPattern::Exact(host.to_owned())
        })
    }

    /// `name` must already be lower-case without a final dot, as the SNI reader returns it.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            SniPattern::Exact(e) => e == name,
            SniPattern::Wildcard(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|first| !first.is_empty() && !first.contains('.')),
        }
    }
}

impl fmt::Display for SniPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SniPattern::Exact(e) => f.write_str(e),
            SniPattern::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// A layer-4 route of a service, as a provider describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L4Spec {
    /// Unique within the service and protocol: the label's `<name>`, `port_<container_port>`
    /// for Alibaba's label, or the file's table key.
    pub name: String,
    pub protocol: Protocol,
    /// The port limpet listens on (on `--l4.address`).
    pub front_port: u16,
    pub balance: L4Balance,
    /// TCP: no byte either way for this long closes the connection. UDP: a client silent
    /// for this long loses its session (and its server).
    pub idle_timeout: Duration,
    /// Time allowed to connect to one server (TCP) before trying another.
    pub connect_timeout: Duration,
    /// TLS passthrough: connections whose ClientHello names one of these go to this route.
    /// Empty: the port's default route, which takes everything else.
    pub sni: Vec<SniPattern>,
    /// Alibaba's `<lb_name>`: shown in logs and the status page, nothing else.
    pub lb_name: Option<String>,
    /// An active monitor; TCP routes only, and only a TCP connect probe: limpet does not
    /// speak the forwarded protocol.
    pub health_check: Option<HealthCheckSpec>,
    pub servers: Vec<L4ServerSpec>,
}

/// TCP connections are long-lived (databases, brokers); nginx's stream module also closes
/// after 10 minutes of silence.
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(600);
/// A UDP "session" is a guess; 30 s is the common conntrack default for unreplied flows and
/// long enough for request/response protocols such as DNS, syslog or game heartbeats.
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(30);
/// Short, because a failed connect is retried on another server while the client waits.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl L4Spec {
    /// A route with the protocol's defaults and no servers yet.
    pub fn new(name: impl Into<String>, protocol: Protocol, front_port: u16) -> Self {
        Self {
            name: name.into(),
            protocol,
            front_port,
            balance: L4Balance::default(),
            idle_timeout: match protocol {
                Protocol::Tcp => DEFAULT_TCP_IDLE,
                Protocol::Udp => DEFAULT_UDP_IDLE,
            },
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            sni: Vec::new(),
            lb_name: None,
            health_check: None,
            servers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L4ServerSpec {
    /// Stable identity, distinct from the same task's HTTP server id (`<task>/tcp/6379`), so
    /// that connect failures on one port do not take the task's other ports out of rotation.
    pub id: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// See [`super::spec::ServerSpec::accepts_new`]: open connections and UDP sessions stay.
    pub accepts_new: bool,
}

/// A built route, in [`Table::l4`].
#[derive(Debug)]
pub struct L4Route {
    /// `<service>/<protocol>/<route>`, for logs.
    pub name: Box<str>,
    pub service: Box<str>,
    pub provider: Provider,
    pub protocol: Protocol,
    pub front_port: u16,
    pub balance: L4Balance,
    pub balancer: Balancer,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub sni: Box<[SniPattern]>,
    pub lb_name: Option<Box<str>>,
    pub servers: Box<[L4Server]>,
    /// Connect failures in a row that take a server out, and for how long.
    pub passive: PassiveHealth,
    /// See [`L4Spec::health_check`].
    pub health_check: Option<HealthCheckSpec>,
}

#[derive(Debug)]
pub struct L4Server {
    pub id: Box<str>,
    pub addr: SocketAddr,
    pub weight: u32,
    pub accepts_new: bool,
    /// Shared with every other table that has this server: open connections, passive health.
    pub state: Arc<ServerState>,
    /// [`stable_hash`] of `id`, for client-IP rendezvous.
    pub id_hash: u64,
}

impl L4Server {
    pub fn takes_new(&self, now: u64) -> bool {
        self.accepts_new && self.weight > 0 && !self.state.is_down(now)
    }
}

impl L4Route {
    /// A server for a new connection or session from `client`, avoiding `tried`.
    pub fn pick(&self, client: IpAddr, tried: &[usize]) -> Option<usize> {
        let now = now_ms();
        match self.balance {
            L4Balance::ClientIp => {
                let key = client_key(client);
                self.servers
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| !tried.contains(i) && s.takes_new(now))
                    .max_by_key(|(_, s)| mix(key ^ s.id_hash))
                    .map(|(i, _)| i)
            }
            L4Balance::Method(_) => self.balancer.pick(&View {
                route: self,
                tried,
                now,
            }),
        }
    }

    /// A route without server names: its port's default, taking what no name matches.
    pub fn is_default(&self) -> bool {
        self.sni.is_empty()
    }
}

/// The hash of a client address that client-IP affinity keys on. An IPv4 client seen
/// through a dual-stack socket (`::ffff:10.0.0.1`) hashes as plain IPv4, so replicas bound
/// differently still agree.
fn client_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => stable_hash(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => stable_hash(&v4.octets()),
            None => stable_hash(&v6.octets()),
        },
    }
}

struct View<'a> {
    route: &'a L4Route,
    tried: &'a [usize],
    now: u64,
}

impl Candidates for View<'_> {
    fn count(&self) -> usize {
        self.route.servers.len()
    }

    fn eligible(&self, i: usize) -> bool {
        !self.tried.contains(&i) && self.route.servers[i].takes_new(self.now)
    }

    fn weight(&self, i: usize) -> u32 {
        self.route.servers[i].weight
    }

    fn inflight(&self, i: usize) -> u32 {
        self.route.servers[i].state.inflight()
    }

    fn latency(&self, i: usize) -> f64 {
        self.route.servers[i].state.latency_ns()
    }

    fn ramp(&self, _: usize) -> f64 {
        1.0
    }
}

impl Table {
    /// The routes listening on `port`: at most one for UDP; for TCP, passthrough routes and
    /// at most one default. Empty when the port is not (or no longer) routed.
    pub fn l4_routes(&self, protocol: Protocol, port: u16) -> &[L4Route] {
        let start = self
            .l4
            .partition_point(|r| (r.protocol, r.front_port) < (protocol, port));
        let len = self.l4[start..]
            .iter()
            .take_while(|r| r.protocol == protocol && r.front_port == port)
            .count();
        &self.l4[start..start + len]
    }
}

/// The route a TCP connection takes among a port's routes: an exact server-name match, then
/// a wildcard one, then the default route. `server_name` is `None` when the client sent no
/// ClientHello or one without SNI.
pub fn route_for_sni<'a>(routes: &'a [L4Route], server_name: Option<&str>) -> Option<&'a L4Route> {
    if let Some(name) = server_name {
        let exact = |r: &&L4Route| {
            r.sni
                .iter()
                .any(|p| matches!(p, SniPattern::Exact(_)) && p.matches(name))
        };
        let wild = |r: &&L4Route| {
            r.sni
                .iter()
                .any(|p| matches!(p, SniPattern::Wildcard(_)) && p.matches(name))
        };
        if let Some(r) = routes
            .iter()
            .find(exact)
            .or_else(|| routes.iter().find(wild))
        {
            return Some(r);
        }
    }
    routes.iter().find(|r| r.is_default())
}

/// Two routes wanting the same front port (or the same server name on it); `kept` came
/// first by service name and keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConflict {
    pub protocol: Protocol,
    pub port: u16,
    /// The server name both claim, when they are passthrough routes.
    pub sni: Option<String>,
    pub kept: String,
    pub refused: String,
}

impl fmt::Display for PortConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} port {}", self.protocol, self.port)?;
        if let Some(name) = &self.sni {
            write!(f, " (server name `{name}`)")?;
        }
        write!(
            f,
            ": wanted by `{}` and by `{}`; `{}` keeps it, `{}` is not routed",
            self.kept, self.refused, self.kept, self.refused
        )
    }
}

/// Builds every service's L4 routes, sorted by protocol and port for [`Table::l4_routes`].
/// Conflicts are settled by service name (then provider, then route name), never by
/// discovery order, so every replica keeps the same route; each is logged and returned.
pub(super) fn build(
    specs: &[&ServiceSpec],
    states: &StateRegistry,
) -> (Vec<L4Route>, Vec<PortConflict>) {
    let mut wanted: Vec<(&ServiceSpec, &L4Spec)> = specs
        .iter()
        .flat_map(|s| s.l4.iter().map(move |r| (*s, r)))
        .collect();
    wanted.sort_by(|(sa, ra), (sb, rb)| {
        (ra.protocol, ra.front_port, &sa.name, sa.provider, &ra.name).cmp(&(
            rb.protocol,
            rb.front_port,
            &sb.name,
            sb.provider,
            &rb.name,
        ))
    });
    let mut routes: Vec<L4Route> = Vec::with_capacity(wanted.len());
    let mut conflicts = Vec::new();
    for (service, spec) in wanted {
        let name = format!("{}/{}/{}", service.name, spec.protocol, spec.name);
        let same_port = routes
            .iter()
            .rev()
            .take_while(|r| r.protocol == spec.protocol && r.front_port == spec.front_port);
        let mut clash = None;
        for other in same_port {
            let default_clash = spec.sni.is_empty() && other.sni.is_empty();
            // UDP has no server name to tell routes apart: one route per port.
            if spec.protocol == Protocol::Udp || default_clash {
                clash = Some((other, None));
                break;
            }
            if let Some(p) = spec.sni.iter().find(|p| other.sni.contains(p)) {
                clash = Some((other, Some(p.to_string())));
                break;
            }
        }
        if let Some((other, sni)) = clash {
            let c = PortConflict {
                protocol: spec.protocol,
                port: spec.front_port,
                sni,
                kept: other.name.to_string(),
                refused: name,
            };
            tracing::warn!("{c}");
            conflicts.push(c);
            continue;
        }
        routes.push(build_route(service, spec, name, states));
    }
    (routes, conflicts)
}

fn build_route(
    service: &ServiceSpec,
    spec: &L4Spec,
    name: String,
    states: &StateRegistry,
) -> L4Route {
    let weights: Vec<u32> = spec.servers.iter().map(|s| s.weight).collect();
    let method = match spec.balance {
        L4Balance::Method(m) => m,
        L4Balance::ClientIp => Method::default(),
    };
    L4Route {
        name: name.into(),
        service: service.name.clone().into(),
        provider: service.provider,
        protocol: spec.protocol,
        front_port: spec.front_port,
        balance: spec.balance,
        balancer: Balancer::new(method, &weights),
        idle_timeout: spec.idle_timeout,
        connect_timeout: spec.connect_timeout,
        sni: spec.sni.clone().into(),
        lb_name: spec.lb_name.as_deref().map(Into::into),
        servers: spec
            .servers
            .iter()
            .map(|s| L4Server {
                id: s.id.clone().into(),
                addr: s.addr,
                weight: s.weight,
                accepts_new: s.accepts_new,
                state: {
                    let state = states.get(&s.id);
                    // As for HTTP servers (Traefik #4544): out until the first pass.
                    if spec.health_check.as_ref().is_some_and(|h| h.start_down)
                        && state.probe() == PROBE_UNKNOWN
                    {
                        state.mark_down_until_probed();
                    }
                    state
                },
                id_hash: stable_hash(s.id.as_bytes()),
            })
            .collect(),
        passive: PassiveHealth::default(),
        health_check: spec.health_check.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::spec::ServiceOptions;

    fn service(name: &str, routes: Vec<L4Spec>) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            provider: Provider::File,
            routers: Vec::new(),
            servers: Vec::new(),
            options: ServiceOptions::default(),
            l4: routes,
        }
    }

    fn route(name: &str, protocol: Protocol, port: u16, servers: &[u16]) -> L4Spec {
        let mut r = L4Spec::new(name, protocol, port);
        r.servers = servers
            .iter()
            .map(|&p| L4ServerSpec {
                id: format!("{name}-{p}"),
                addr: SocketAddr::from(([127, 0, 0, 1], p)),
                weight: 1,
                accepts_new: true,
            })
            .collect();
        r
    }

    fn sni(mut r: L4Spec, names: &[&str]) -> L4Spec {
        r.sni = names
            .iter()
            .map(|n| SniPattern::parse(n).unwrap())
            .collect();
        r
    }

    fn table(specs: &[ServiceSpec]) -> (Table, Vec<PortConflict>) {
        let states = StateRegistry::default();
        let refs: Vec<&ServiceSpec> = specs.iter().collect();
        let (l4, conflicts) = build(&refs, &states);
        let t = Table {
            l4: l4.into(),
            ..Table::loading()
        };
        (t, conflicts)
    }

    #[test]
    fn the_first_service_by_name_keeps_a_port_whatever_the_discovery_order() {
        let a = service("alpha", vec![route("r", Protocol::Tcp, 7000, &[1])]);
        let b = service("beta", vec![route("r", Protocol::Tcp, 7000, &[2])]);
        for specs in [[a.clone(), b.clone()], [b, a]] {
            let (t, conflicts) = table(&specs);
            let routes = t.l4_routes(Protocol::Tcp, 7000);
            assert_eq!(routes.len(), 1);
            assert_eq!(&*routes[0].service, "alpha");
            assert_eq!(conflicts.len(), 1);
            let text = conflicts[0].to_string();
            assert!(
                text.contains("alpha/tcp/r") && text.contains("beta/tcp/r"),
                "{text}"
            );
        }
    }

    #[test]
    fn tcp_and_udp_share_a_port_number_and_udp_takes_one_route() {
        let (t, conflicts) = table(&[
            service(
                "dns",
                vec![
                    route("dns", Protocol::Tcp, 5353, &[53]),
                    route("dns", Protocol::Udp, 5353, &[53]),
                ],
            ),
            service("other", vec![route("x", Protocol::Udp, 5353, &[54])]),
        ]);
        assert_eq!(t.l4_routes(Protocol::Tcp, 5353).len(), 1);
        assert_eq!(t.l4_routes(Protocol::Udp, 5353).len(), 1);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].refused, "other/udp/x");
        assert!(t.l4_routes(Protocol::Tcp, 5354).is_empty());
    }

    #[test]
    fn passthrough_routes_share_a_port_by_server_name() {
        let (t, conflicts) = table(&[
            service(
                "a",
                vec![sni(
                    route("tls", Protocol::Tcp, 8443, &[1]),
                    &["a.example.org"],
                )],
            ),
            service(
                "b",
                vec![sni(
                    route("tls", Protocol::Tcp, 8443, &[2]),
                    &["*.example.org"],
                )],
            ),
            service("c", vec![route("plain", Protocol::Tcp, 8443, &[3])]),
            service(
                "d",
                vec![sni(
                    route("tls", Protocol::Tcp, 8443, &[4]),
                    &["A.example.org."],
                )],
            ),
        ]);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].sni.as_deref(), Some("a.example.org"));
        assert_eq!(conflicts[0].kept, "a/tcp/tls");
        let routes = t.l4_routes(Protocol::Tcp, 8443);
        let pick = |name: Option<&str>| route_for_sni(routes, name).map(|r| &*r.service);
        assert_eq!(
            pick(Some("a.example.org")),
            Some("a"),
            "exact beats wildcard"
        );
        assert_eq!(pick(Some("b.example.org")), Some("b"));
        assert_eq!(pick(Some("x.b.example.org")), Some("c"), "one label only");
        assert_eq!(pick(Some("example.org")), Some("c"));
        assert_eq!(pick(None), Some("c"));
        let (t, _) = table(&[service(
            "a",
            vec![sni(
                route("tls", Protocol::Tcp, 8443, &[1]),
                &["a.example.org"],
            )],
        )]);
        assert_eq!(
            route_for_sni(t.l4_routes(Protocol::Tcp, 8443), Some("z.example.org"))
                .map(|r| &*r.name),
            None,
            "no default route: unknown names are refused"
        );
    }

    #[test]
    fn client_ip_affinity_is_stable_and_skips_tried_and_down_servers() {
        let mut r = route("r", Protocol::Tcp, 7000, &[1, 2, 3]);
        r.balance = L4Balance::ClientIp;
        let (t, _) = table(&[service("s", vec![r])]);
        let route = &t.l4_routes(Protocol::Tcp, 7000)[0];
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let first = route.pick(ip, &[]).unwrap();
        for _ in 0..10 {
            assert_eq!(route.pick(ip, &[]), Some(first));
        }
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(route.pick(mapped, &[]), Some(first));
        let second = route.pick(ip, &[first]).unwrap();
        assert_ne!(second, first);
        route.servers[first]
            .state
            .record_failure(1, Duration::from_secs(60));
        assert_eq!(route.pick(ip, &[]), Some(second), "moves off a down server");
        let mut spread = [0usize; 3];
        for k in 0..300u32 {
            let ip = IpAddr::from(k.to_be_bytes());
            spread[route.pick(ip, &[first]).unwrap()] += 1;
        }
        assert_eq!(spread[first], 0);
        assert!(
            spread.iter().filter(|&&n| n > 50).count() == 2,
            "{spread:?}"
        );
    }

    #[test]
    fn round_robin_and_least_conn_use_the_balancer() {
        let (t, _) = table(&[service("s", vec![route("r", Protocol::Tcp, 7000, &[1, 2])])]);
        let route = &t.l4_routes(Protocol::Tcp, 7000)[0];
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let picks: Vec<usize> = (0..4).map(|_| route.pick(ip, &[]).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
        let mut r = route_spec_leastconn();
        r.front_port = 7001;
        let (t, _) = table(&[service("s", vec![r])]);
        let route = &t.l4_routes(Protocol::Tcp, 7001)[0];
        let _busy = route.servers[0].state.start_request();
        assert_eq!(route.pick(ip, &[]), Some(1));
        assert_eq!(route.pick(ip, &[1]), Some(0));
    }

    fn route_spec_leastconn() -> L4Spec {
        let mut r = route("lc", Protocol::Tcp, 7001, &[1, 2]);
        r.balance = L4Balance::Method(Method::LeastConn);
        r
    }

    #[test]
    fn sni_patterns() {
        assert_eq!(
            SniPattern::parse("DB.Example.org.").unwrap(),
            SniPattern::Exact("db.example.org".into())
        );
        let w = SniPattern::parse("*.example.org").unwrap();
        assert!(w.matches("db.example.org"));
        assert!(!w.matches("example.org"));
        assert!(!w.matches("a.db.example.org"));
        assert!(!w.matches("xexample.org"));
        assert_eq!(w.to_string(), "*.example.org");
        for bad in ["", "*", "a..b", "a b", "*.*.example.org", "ex*mple.org"] {
            assert!(SniPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn balance_names() {
        assert_eq!("clientip".parse::<L4Balance>(), Ok(L4Balance::ClientIp));
        assert_eq!(
            "LeastConn".parse::<L4Balance>(),
            Ok(L4Balance::Method(Method::LeastConn))
        );
        assert_eq!(
            "roundrobin".parse::<L4Balance>(),
            Ok(L4Balance::Method(Method::RoundRobin))
        );
        assert!("sticky".parse::<L4Balance>().is_err());
    }
}
