//! Layer-4 labels: limpet's own `limpet.tcp.<name>.*` / `limpet.udp.<name>.*`, and Alibaba
//! Cloud's `aliyun.lb.port_<container_port>=<scheme>://<lb_name>:<front_port>`.
//!
//! Pure: no I/O. Unlike the other labels, a bad L4 label costs only its own route: the
//! service's HTTP routes and other L4 routes keep working, so the caller gets the route's
//! error next to the routes that parsed.
//!
//! ```text
//! limpet.tcp.redis.frontport=6379        # required: the port limpet listens on
//! limpet.tcp.redis.port=6379             # the container's port (default: frontport)
//! limpet.tcp.redis.balance=leastconn     # roundrobin | wrr (default) | leastconn | p2c | clientip
//! limpet.tcp.redis.idletimeout=10m       # TCP default 10m, UDP default 30s
//! limpet.tcp.redis.connecttimeout=5s     # TCP only; then the next server is tried
//! limpet.tcp.web.sni=a.example.org,*.example.org   # TLS passthrough, TCP only
//! limpet.tcp.redis.healthcheck.interval=5s         # TCP connect probes (TCP only); also
//!                                                  # .connecttimeout .port .rise .fall .startdown
//! aliyun.lb.port_6379=tcp://slb_redis_app:6379
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use super::{invalid, strip_prefix_ignore_case, LabelError};
use crate::config::parse_duration;
use crate::table::l4::{L4Spec, Protocol, SniPattern};
use crate::table::spec::HealthCheckSpec;

/// One L4 route the labels declare; the provider adds one server per task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L4Labels {
    /// The route, with no servers yet.
    pub route: L4Spec,
    /// The port the tasks listen on.
    pub container_port: u16,
}

/// Alibaba's label with an `http` or `https` scheme: a layer-7 route to the container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliyunHttp {
    pub label: String,
    pub value: String,
    pub container_port: u16,
    pub front_port: u16,
    pub lb_name: String,
    /// `https`: the balancer's front is TLS.
    pub tls: bool,
}

/// What the L4 labels of a service say.
#[derive(Debug, Default)]
pub(super) struct Found {
    pub routes: Vec<L4Labels>,
    pub http: Vec<AliyunHttp>,
    /// Routes refused, each naming its label.
    pub errors: Vec<LabelError>,
    /// Keys under `limpet.tcp.<name>.` that mean nothing.
    pub ignored: Vec<String>,
}

const ALIYUN_PREFIX: &str = "aliyun.lb.port_";

/// The keys of limpet's own form, after `limpet.<protocol>.<name>.`.
const ROUTE_KEYS: [&str; 12] = [
    "frontport",
    "port",
    "balance",
    "idletimeout",
    "connecttimeout",
    "sni",
    "healthcheck.interval",
    "healthcheck.connecttimeout",
    "healthcheck.port",
    "healthcheck.rise",
    "healthcheck.fall",
    "healthcheck.startdown",
];

/// Whether `rest` (a label without its `limpet.` prefix) belongs to this module.
pub(super) fn is_own_key(rest: &str) -> bool {
    strip_prefix_ignore_case(rest, "tcp.").is_some()
        || strip_prefix_ignore_case(rest, "udp.").is_some()
}

pub(super) fn parse(labels: &BTreeMap<String, String>) -> Found {
    let mut found = Found::default();
    // BTreeMap so that routes come out in name order.
    let mut own: BTreeMap<(Protocol, String), RouteKeys> = BTreeMap::new();
    // Routes already refused, so that one bad route yields one error, not one per key.
    let mut refused: Vec<(Protocol, String)> = Vec::new();
    for (label, value) in labels {
        if let Some(port) = strip_prefix_ignore_case(label, ALIYUN_PREFIX) {
            match aliyun(label, port, value) {
                Ok(Aliyun::L4(route)) => found.routes.push(*route),
                Ok(Aliyun::Http(http)) => found.http.push(http),
                Err(e) => found.errors.push(e),
            }
            continue;
        }
        let Some(rest) = strip_prefix_ignore_case(label, "limpet.") else {
            continue;
        };
        let (protocol, rest) = if let Some(r) = strip_prefix_ignore_case(rest, "tcp.") {
            (Protocol::Tcp, r)
        } else if let Some(r) = strip_prefix_ignore_case(rest, "udp.") {
            (Protocol::Udp, r)
        } else {
            continue;
        };
        let Some((name, key)) = rest.split_once('.') else {
            found.ignored.push(label.clone());
            continue;
        };
        let name = name.to_ascii_lowercase();
        let Some(key) = ROUTE_KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) else {
            found.ignored.push(label.clone());
            continue;
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            if !refused.contains(&(protocol, name.clone())) {
                found.errors.push(invalid(
                    label,
                    value,
                    "a route name has only letters, digits, `-` and `_`",
                ));
                refused.push((protocol, name));
            }
            continue;
        }
        let keys = own.entry((protocol, name.clone())).or_default();
        match keys.get(key) {
            Some((first, first_value)) if first_value.trim() != value.trim() => {
                found.errors.push(LabelError::Conflict {
                    first: (*first).to_owned(),
                    first_value: (*first_value).to_owned(),
                    second: label.clone(),
                    second_value: value.clone(),
                });
                refused.push((protocol, name));
            }
            Some(_) => {}
            None => {
                keys.insert(key, (label, value));
            }
        }
    }
    for ((protocol, name), keys) in own {
        if refused.contains(&(protocol, name.clone())) {
            continue;
        }
        match own_route(protocol, &name, &keys) {
            Ok(route) => found.routes.push(route),
            Err(e) => found.errors.push(e),
        }
    }
    found
}

/// One route's keys of limpet's form: key to (label, value).
type RouteKeys<'a> = BTreeMap<&'static str, (&'a str, &'a str)>;

enum Aliyun {
    /// Boxed: a route with its health check is several times the size of the other.
    L4(Box<L4Labels>),
    Http(AliyunHttp),
}

/// `aliyun.lb.port_6379=tcp://slb_redis_app:6379`: the container port in the key, the
/// scheme, the balancer's name or id, and its front port in the value.
fn aliyun(label: &str, port: &str, value: &str) -> Result<Aliyun, LabelError> {
    let container_port = parse_port(port)
        .ok_or_else(|| invalid(label, value, "the key must end in the container's port"))?;
    let expected = "expected <scheme>://<lb_name>:<front_port> with scheme tcp, udp, http or https";
    let v = value.trim();
    let (scheme, rest) = v
        .split_once("://")
        .ok_or_else(|| invalid(label, value, expected))?;
    let (lb_name, front) = rest
        .rsplit_once(':')
        .ok_or_else(|| invalid(label, value, expected))?;
    if lb_name.is_empty() || lb_name.contains(['/', ':', ' ']) {
        return Err(invalid(label, value, expected));
    }
    let front_port =
        parse_port(front).ok_or_else(|| invalid(label, value, "the front port must be 1-65535"))?;
    let protocol = match scheme.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "http" | "https" => {
            return Ok(Aliyun::Http(AliyunHttp {
                label: label.to_owned(),
                value: value.to_owned(),
                container_port,
                front_port,
                lb_name: lb_name.to_owned(),
                tls: scheme.eq_ignore_ascii_case("https"),
            }))
        }
        _ => return Err(invalid(label, value, expected)),
    };
    let mut route = L4Spec::new(format!("aliyun-{container_port}"), protocol, front_port);
    route.lb_name = Some(lb_name.to_owned());
    Ok(Aliyun::L4(Box::new(L4Labels {
        route,
        container_port,
    })))
}

fn own_route(protocol: Protocol, name: &str, keys: &RouteKeys) -> Result<L4Labels, LabelError> {
    let get = |k: &str| keys.get(k).copied();
    let Some((l, v)) = get("frontport") else {
        return Err(LabelError::Missing {
            label: format!("limpet.{protocol}.{name}.frontport"),
            reason: "the port limpet listens on for this route".into(),
        });
    };
    let front_port =
        parse_port(v).ok_or_else(|| invalid(l, v, "expected a port from 1 to 65535"))?;
    let mut route = L4Spec::new(name, protocol, front_port);
    let container_port = match get("port") {
        Some((l, v)) => {
            parse_port(v).ok_or_else(|| invalid(l, v, "expected a port from 1 to 65535"))?
        }
        None => front_port,
    };
    if let Some((l, v)) = get("balance") {
        route.balance = v.parse().map_err(|e: String| invalid(l, v, &e))?;
    }
    if let Some((l, v)) = get("idletimeout") {
        route.idle_timeout = positive(l, v)?;
    }
    if let Some((l, v)) = get("connecttimeout") {
        if protocol == Protocol::Udp {
            return Err(invalid(l, v, "UDP has no connection to time out; tcp only"));
        }
        route.connect_timeout = positive(l, v)?;
    }
    if let Some((l, v)) = get("sni") {
        if protocol == Protocol::Udp {
            return Err(invalid(l, v, "TLS passthrough by server name is tcp only"));
        }
        route.sni = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(SniPattern::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(l, v, &e))?;
        if route.sni.is_empty() {
            return Err(invalid(l, v, "expected server names, comma-separated"));
        }
    }
    route.health_check = health_check(protocol, keys)?;
    Ok(L4Labels {
        route,
        container_port,
    })
}

/// A TCP connect monitor, when any `healthcheck.*` key is given.
fn health_check(
    protocol: Protocol,
    keys: &RouteKeys,
) -> Result<Option<HealthCheckSpec>, LabelError> {
    let mut given = keys.iter().filter(|(k, _)| k.starts_with("healthcheck."));
    let Some((_, (first, first_value))) = given.next() else {
        return Ok(None);
    };
    if protocol == Protocol::Udp {
        return Err(invalid(
            first,
            first_value,
            "UDP has no connection to probe; tcp only",
        ));
    }
    let mut check = HealthCheckSpec::default();
    for (key, (l, v)) in keys.iter().filter(|(k, _)| k.starts_with("healthcheck.")) {
        let count = |v: &str| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(l, v, "expected a whole number of at least 1"))
        };
        match &key["healthcheck.".len()..] {
            "interval" => check.interval = positive(l, v)?,
            "connecttimeout" => check.connect_timeout = positive(l, v)?,
            "port" => {
                check.port = Some(
                    parse_port(v)
                        .ok_or_else(|| invalid(l, v, "expected a port from 1 to 65535"))?,
                )
            }
            "rise" => check.rise = count(v)?,
            "fall" => check.fall = count(v)?,
            "startdown" => {
                check.start_down = v
                    .trim()
                    .parse()
                    .map_err(|_| invalid(l, v, "expected true or false"))?
            }
            _ => unreachable!("only the keys in ROUTE_KEYS are kept"),
        }
    }
    Ok(Some(check))
}

fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse::<u16>().ok().filter(|p| *p > 0)
}

fn positive(label: &str, value: &str) -> Result<Duration, LabelError> {
    let d = parse_duration(value).map_err(|e| invalid(label, value, &e))?;
    if d.is_zero() {
        return Err(invalid(label, value, "must be greater than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Method;
    use crate::table::l4::{L4Balance, DEFAULT_TCP_IDLE, DEFAULT_UDP_IDLE};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn alibaba_redis_example() {
        let f = parse(&labels(&[(
            "aliyun.lb.port_6379",
            "tcp://slb_redis_app:6379",
        )]));
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        let r = &f.routes[0];
        assert_eq!(r.container_port, 6379);
        assert_eq!(r.route.protocol, Protocol::Tcp);
        assert_eq!(r.route.front_port, 6379);
        assert_eq!(r.route.lb_name.as_deref(), Some("slb_redis_app"));
        assert_eq!(r.route.idle_timeout, DEFAULT_TCP_IDLE);
        assert_eq!(r.route.balance, L4Balance::default());
    }

    #[test]
    fn alibaba_schemes() {
        let f = parse(&labels(&[
            ("aliyun.lb.port_53", "udp://lb-bp1abc:5353"),
            ("aliyun.lb.port_8000", "http://slb_web:80"),
            ("aliyun.lb.port_8443", "HTTPS://slb_web:443"),
        ]));
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        assert_eq!(f.routes.len(), 1);
        assert_eq!(f.routes[0].route.protocol, Protocol::Udp);
        assert_eq!(f.routes[0].route.front_port, 5353);
        assert_eq!(f.routes[0].route.idle_timeout, DEFAULT_UDP_IDLE);
        assert_eq!(f.http.len(), 2);
        assert_eq!((f.http[0].container_port, f.http[0].tls), (8000, false));
        assert_eq!((f.http[1].front_port, f.http[1].tls), (443, true));
    }

    #[test]
    fn own_form_with_every_key() {
        let f = parse(&labels(&[
            ("limpet.tcp.db.frontport", "15432"),
            ("limpet.tcp.db.port", "5432"),
            ("limpet.tcp.db.balance", "leastconn"),
            ("limpet.tcp.db.idletimeout", "1h"),
            ("limpet.tcp.db.connecttimeout", "2s"),
            ("limpet.tcp.tls.frontport", "443"),
            ("limpet.tcp.tls.sni", "a.example.org, *.example.net"),
            ("limpet.udp.dns.frontport", "53"),
            ("limpet.udp.dns.balance", "clientip"),
            ("limpet.udp.dns.idletimeout", "5s"),
        ]));
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        assert!(f.ignored.is_empty());
        let by_name = |n: &str| f.routes.iter().find(|r| r.route.name == n).unwrap();
        let db = by_name("db");
        assert_eq!((db.route.front_port, db.container_port), (15432, 5432));
        assert_eq!(db.route.balance, L4Balance::Method(Method::LeastConn));
        assert_eq!(db.route.idle_timeout, Duration::from_secs(3600));
        assert_eq!(db.route.connect_timeout, Duration::from_secs(2));
        let tls = by_name("tls");
        assert_eq!(
            tls.container_port, 443,
            "the container port defaults to the front port"
        );
        assert_eq!(tls.route.sni.len(), 2);
        let dns = by_name("dns");
        assert_eq!(dns.route.protocol, Protocol::Udp);
        assert_eq!(dns.route.balance, L4Balance::ClientIp);
        assert_eq!(dns.route.idle_timeout, Duration::from_secs(5));
    }

    #[test]
    fn a_bad_route_is_refused_alone_naming_its_label() {
        let f = parse(&labels(&[
            ("limpet.tcp.good.frontport", "7000"),
            ("limpet.tcp.bad.frontport", "70000"),
            ("limpet.tcp.nofront.port", "7001"),
            ("limpet.udp.tls.frontport", "7002"),
            ("limpet.udp.tls.sni", "a.example.org"),
            ("limpet.tcp.slow.frontport", "7003"),
            ("limpet.tcp.slow.balance", "fastest"),
            ("limpet.tcp.typo.frontport", "7004"),
            ("limpet.tcp.typo.idletimout", "5s"),
            ("aliyun.lb.port_6379", "redis://slb:6379"),
            ("aliyun.lb.port_abc", "tcp://slb:6379"),
            ("aliyun.lb.port_6380", "tcp://slb"),
        ]));
        let names: Vec<&str> = f.routes.iter().map(|r| r.route.name.as_str()).collect();
        assert_eq!(names, ["good", "typo"]);
        assert_eq!(f.ignored, ["limpet.tcp.typo.idletimout"]);
        let errors: Vec<String> = f.errors.iter().map(ToString::to_string).collect();
        let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
        assert!(has("limpet.tcp.bad.frontport=70000"), "{errors:?}");
        assert!(has("limpet.tcp.nofront.frontport"), "{errors:?}");
        assert!(has("limpet.udp.tls.sni=a.example.org"), "{errors:?}");
        assert!(has("limpet.tcp.slow.balance=fastest"), "{errors:?}");
        assert!(has("aliyun.lb.port_6379=redis://slb:6379"), "{errors:?}");
        assert!(has("aliyun.lb.port_abc"), "{errors:?}");
        assert!(has("aliyun.lb.port_6380=tcp://slb"), "{errors:?}");
        assert_eq!(errors.len(), 7, "{errors:?}");
    }

    #[test]
    fn keys_and_names_are_case_insensitive() {
        let f = parse(&labels(&[
            ("limpet.TCP.Redis.FrontPort", "6379"),
            ("Aliyun.LB.Port_6380", "TCP://slb:6380"),
        ]));
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        assert_eq!(f.routes.len(), 2);
        assert!(f.routes.iter().any(|r| r.route.name == "redis"));
    }

    #[test]
    fn disagreeing_duplicates_refuse_the_route() {
        let f = parse(&labels(&[
            ("limpet.tcp.r.frontport", "7000"),
            ("limpet.tcp.R.frontport", "7001"),
        ]));
        assert!(f.routes.is_empty());
        assert!(matches!(f.errors[..], [LabelError::Conflict { .. }]));
    }

    #[test]
    fn tcp_health_check_keys() {
        let found = parse(&labels(&[
            ("limpet.tcp.redis.frontport", "6379"),
            ("limpet.tcp.redis.healthcheck.interval", "2s"),
            ("limpet.tcp.redis.healthcheck.rise", "1"),
            ("limpet.tcp.redis.healthcheck.startdown", "true"),
        ]));
        assert!(found.errors.is_empty(), "{:?}", found.errors);
        let check = found.routes[0].route.health_check.clone().expect("a check");
        assert_eq!(check.interval, Duration::from_secs(2));
        assert_eq!((check.rise, check.fall, check.start_down), (1, 3, true));
        assert_eq!(check.probe, crate::table::spec::Probe::Tcp);

        let plain = parse(&labels(&[("limpet.tcp.redis.frontport", "6379")]));
        assert!(plain.routes[0].route.health_check.is_none());

        for (key, value) in [
            ("limpet.udp.dns.healthcheck.interval", "2s"),
            ("limpet.tcp.dns.healthcheck.fall", "0"),
            ("limpet.tcp.dns.healthcheck.interval", "soon"),
        ] {
            let protocol = if key.contains(".udp.") { "udp" } else { "tcp" };
            let found = parse(&labels(&[
                (format!("limpet.{protocol}.dns.frontport").as_str(), "53"),
                (key, value),
            ]));
            assert!(found.routes.is_empty(), "{key}={value} accepted");
            assert!(
                found.errors[0].to_string().contains(key),
                "{}",
                found.errors[0]
            );
        }
    }
}
