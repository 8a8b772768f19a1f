//! Docker's view (Swarm services and tasks, or plain containers) turned into service specs.
//!
//! Pure: no I/O, so every rule about networks, ports and labels is unit-tested here. Problems
//! are returned, not logged, so the watcher can log each one once rather than every poll.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use super::api::{SwarmService, Task};
use crate::labels::{self, normalize_name, ServiceLabels};
use crate::sticky::{sanitize_cookie_name, traefik_v1_cookie_name};
use crate::table::l4::{L4ServerSpec, L4Spec};
use crate::table::rule::parse_v1;
use crate::table::spec::{Provider, RouterSpec, ServerSpec, ServerUrl, ServiceSpec};

/// Provider-wide defaults that labels can override.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Traefik v1's `--docker.exposedbydefault`.
    pub exposed_by_default: bool,
    /// Traefik v1's `--docker.domain`: a service without a rule answers `Host:<name>.<domain>`.
    pub domain: String,
    /// The networks (names and ids) limpet's own container is attached to, when limpet runs
    /// in a container of this engine. An address on any other network is not reachable from
    /// limpet: the packets would leave through the default route, so such tasks are skipped.
    pub reachable: Option<std::collections::BTreeSet<String>>,
}

/// What Docker events told the watcher about individual tasks or containers (by task id in
/// Swarm mode, container id otherwise), between polls.
#[derive(Debug, Default, Clone)]
pub struct Marks {
    /// Sent a stop signal: keep pinned clients, no new sessions.
    pub draining: HashSet<String>,
    /// Failing its HEALTHCHECK, or not yet past it: no traffic at all, and its pinned clients
    /// are re-pinned, as when limpet's own health check fails a server (and as Traefik and
    /// HAProxy do). It comes back when Docker says healthy.
    pub unhealthy: HashSet<String>,
    /// The container exited: its address answers nothing any more (on an overlay network a
    /// connection to it is not refused, it waits for the dial timeout), so not even its
    /// pinned clients go there, even while Swarm still reports the task as running.
    pub gone: HashSet<String>,
}

impl Marks {
    fn takes_new(&self, id: &str) -> bool {
        !self.draining.contains(id)
    }

    /// Whether the task or container may be a server at all.
    fn routable(&self, id: &str) -> bool {
        !self.gone.contains(id) && !self.unhealthy.contains(id)
    }

    /// Forgets ids that no longer exist.
    pub fn retain(&mut self, live: &HashSet<&str>) {
        self.draining.retain(|id| live.contains(id.as_str()));
        self.unhealthy.retain(|id| live.contains(id.as_str()));
        self.gone.retain(|id| live.contains(id.as_str()));
    }
}

/// Something wrong with one service, reported with its name; other services are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub service: String,
    pub message: String,
}

/// The label the stack deployer puts on everything it creates; networks in a stack are named
/// `<namespace>_<name>`, and users write the short name in their labels.
const STACK_NAMESPACE: &str = "com.docker.stack.namespace";

/// The labels of each service (or container) as they last were valid, by id.
///
/// A relabel with a mistake in it must not take a running app offline: Traefik drops such a
/// service; limpet keeps serving it with its last valid labels and says so. A service that
/// never had valid labels is skipped.
#[derive(Debug, Default)]
pub struct LabelMemory {
    last: HashMap<String, BTreeMap<String, String>>,
    /// What is valid in the conversion under way; replaces `last` when it ends, so that
    /// services gone from Docker are forgotten.
    next: HashMap<String, BTreeMap<String, String>>,
}

impl LabelMemory {
    /// The labels to convert with: the current ones if valid, else the last valid ones with
    /// a problem reported, else none (skipped, also reported).
    fn choose(
        &mut self,
        id: &str,
        name: &str,
        current: BTreeMap<String, String>,
        defaults: &Defaults,
        what: &str,
        problem: &mut impl FnMut(String),
    ) -> Option<(BTreeMap<String, String>, labels::Parsed)> {
        let error = match checked(&current, name, defaults) {
            Ok(parsed) => {
                self.next.insert(id.to_owned(), current.clone());
                return Some((current, parsed));
            }
            Err(e) => e,
        };
        let old = self
            .last
            .get(id)
            .and_then(|old| Some((old, checked(old, name, defaults).ok()?)));
        let Some((old, parsed)) = old else {
            problem(format!("{error}; {what} skipped"));
            return None;
        };
        problem(format!("{error}; keeping the {what}'s last valid labels"));
        self.next.insert(id.to_owned(), old.clone());
        Some((old.clone(), parsed))
    }

    fn finish(&mut self) {
        self.last = std::mem::take(&mut self.next);
    }
}

/// Parses labels and refuses settings that cannot work for this service.
fn checked(
    labels: &BTreeMap<String, String>,
    name: &str,
    defaults: &Defaults,
) -> Result<labels::Parsed, String> {
    let parsed = labels::parse(labels, defaults.exposed_by_default).map_err(|e| e.to_string())?;
    if let Some(crate::table::spec::FallbackSpec::Service(f)) = &parsed.labels.options.fallback {
        if f == name {
            return Err("label `limpet.fallback` names the service itself".into());
        }
    }
    Ok(parsed)
}

/// Swarm services and their tasks, without memory of earlier polls.
pub fn swarm(
    services: &[SwarmService],
    tasks: &[Task],
    defaults: &Defaults,
    marks: &Marks,
) -> (Vec<ServiceSpec>, Vec<Problem>) {
    swarm_remembering(
        services,
        tasks,
        defaults,
        marks,
        &mut LabelMemory::default(),
    )
}

/// Swarm services and their tasks; a service whose labels turned invalid keeps the labels
/// `memory` holds for it.
pub fn swarm_remembering(
    services: &[SwarmService],
    tasks: &[Task],
    defaults: &Defaults,
    marks: &Marks,
    memory: &mut LabelMemory,
) -> (Vec<ServiceSpec>, Vec<Problem>) {
    // A task whose desired state is no longer `running` but which still runs is shutting
    // down (rolling update, scale down, node drain): it keeps its pinned clients until it
    // stops, and takes no new ones.
    let mut by_service: HashMap<&str, Vec<&Task>> = HashMap::new();
    for task in tasks {
        if task.status.state == "running" && marks.routable(&task.id) {
            by_service
                .entry(task.service_id.as_str())
                .or_default()
                .push(task);
        }
    }
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    for service in services {
        let mut problem = |message: String| {
            problems.push(Problem {
                service: service.name.clone(),
                message,
            })
        };
        let current: BTreeMap<String, String> = service.labels.clone().into_iter().collect();
        let Some((labels, parsed)) = memory.choose(
            &service.id,
            &service.name,
            current,
            defaults,
            "service",
            &mut problem,
        ) else {
            continue;
        };
        for label in &parsed.ignored {
            problem(format!(
                "label `{label}` is not supported by limpet; ignored"
            ));
        }
        report_l4(&parsed, &mut problem);
        let l = parsed.labels;
        if !l.enable {
            continue;
        }
        let port = if wants_http(&l) {
            match (l.port, service.target_ports.as_slice()) {
                (Some(p), _) => Some(p),
                (None, [only]) => Some(*only),
                (None, ports) => {
                    problem(format!(
                        "no `traefik.port` label and the service declares {} ports; {}",
                        ports.len(),
                        skipped(&l, "service")
                    ));
                    if l.l4.is_empty() {
                        continue;
                    }
                    None
                }
            }
        } else {
            None
        };
        let namespace = labels.get(STACK_NAMESPACE).map(String::as_str);
        let mut servers = Vec::new();
        let mut l4 = l4_routes(&l);
        let mut tasks = by_service.remove(service.id.as_str()).unwrap_or_default();
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        for task in tasks {
            match task_address(
                task,
                l.network.as_deref(),
                namespace,
                defaults.reachable.as_ref(),
            ) {
                Ok((ip, warning)) => {
                    if let Some(w) = warning {
                        problem(w);
                    }
                    let accepts_new = task.desired_state == "running"
                        && marks.takes_new(&task.id)
                        && !in_maintenance(&l.maintenance, task);
                    if let Some(port) = port {
                        match ServerUrl::http(&ip.to_string(), port) {
                            Ok(url) => servers.push(ServerSpec {
                                id: task.id.clone(),
                                url,
                                weight: l.weight,
                                accepts_new,
                            }),
                            Err(e) => problem(format!("task {}: {e}", task.id)),
                        }
                    }
                    add_l4_servers(&mut l4, &l, &task.id, ip, accepts_new);
                }
                Err(message) => problem(format!("task {}: {message}", task.id)),
            }
        }
        match spec(&service.name, &l, servers, l4, port.is_some(), defaults) {
            Ok(s) => specs.push(s),
            Err(message) => problem(message),
        }
    }
    memory.finish();
    problems.sort();
    problems.dedup();
    (specs, problems)
}

/// A task's address on the network the labels chose, or on its only non-ingress network.
/// Returns a warning alongside when the choice had to be made without a label.
fn task_address(
    task: &Task,
    network: Option<&str>,
    namespace: Option<&str>,
    reachable: Option<&std::collections::BTreeSet<String>>,
) -> Result<(IpAddr, Option<String>), String> {
    // The ingress network belongs to the routing mesh; its addresses are for published ports
    // and must never be a proxy's target.
    let mut candidates: Vec<_> = task
        .networks_attachments
        .iter()
        .filter(|a| !a.network.spec.ingress)
        .collect();
    if let Some(reachable) = reachable {
        let before: Vec<String> = candidates
            .iter()
            .map(|a| a.network.spec.name.clone())
            .collect();
        candidates.retain(|a| {
            reachable.contains(&a.network.id) || reachable.contains(&a.network.spec.name)
        });
        if candidates.is_empty() && !before.is_empty() {
            return Err(format!(
                "limpet is not attached to any of the task's networks ({}); attach limpet to the service's network",
                before.join(", ")
            ));
        }
    }
    candidates.sort_by(|a, b| a.network.spec.name.cmp(&b.network.spec.name));
    let names = || {
        candidates
            .iter()
            .map(|a| a.network.spec.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (chosen, warning) = match network {
        Some(wanted) => {
            let stacked = namespace.map(|ns| format!("{ns}_{wanted}"));
            let found = candidates.iter().find(|a| {
                let n = &a.network;
                n.spec.name == wanted
                    || n.id == wanted
                    || stacked.as_deref() == Some(n.spec.name.as_str())
                    || (wanted.len() >= 12 && n.id.starts_with(wanted))
            });
            match found {
                Some(a) => (*a, None),
                None => {
                    return Err(format!(
                        "label `traefik.docker.network={wanted}` names a network the task is not attached to (attached: {})",
                        names()
                    ))
                }
            }
        }
        None => match candidates.as_slice() {
            [] => return Err("the task is attached to no network limpet can reach".into()),
            [only] => (*only, None),
            [first, ..] => {
                let w = format!(
                    "attached to several networks ({}); using `{}`. Set `traefik.docker.network` to choose",
                    names(),
                    first.network.spec.name
                );
                (*first, Some(w))
            }
        },
    };
    let address = chosen
        .addresses
        .first()
        .ok_or_else(|| format!("no address yet on network `{}`", chosen.network.spec.name))?;
    let ip = address.split('/').next().unwrap_or(address);
    let ip: IpAddr = ip.parse().map_err(|_| {
        format!(
            "address `{address}` on network `{}` is not an IP",
            chosen.network.spec.name
        )
    })?;
    Ok((ip, warning))
}

/// One plain (non-Swarm) container, with only what the conversion reads.
#[derive(Debug, Clone, Default)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
    /// Network name to the container's IP on it.
    pub networks: BTreeMap<String, String>,
    /// Ports the container exposes.
    pub private_ports: Vec<u16>,
    /// Docker's HEALTHCHECK verdict is `starting` or `unhealthy`.
    pub health_failing: bool,
}

/// Plain containers. Containers sharing a `traefik.backend` label (or a Compose service)
/// form one service, as in Traefik v1; any other container is a service of its own.
pub fn containers(
    containers: &[Container],
    defaults: &Defaults,
    marks: &Marks,
) -> (Vec<ServiceSpec>, Vec<Problem>) {
    containers_remembering(containers, defaults, marks, &mut LabelMemory::default())
}

/// Plain containers; a container whose labels turned invalid keeps the labels `memory`
/// holds for it.
pub fn containers_remembering(
    containers: &[Container],
    defaults: &Defaults,
    marks: &Marks,
    memory: &mut LabelMemory,
) -> (Vec<ServiceSpec>, Vec<Problem>) {
    let mut groups: BTreeMap<String, Vec<(&Container, ServiceLabels)>> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut sorted: Vec<&Container> = containers.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for c in sorted {
        let mut problem = |message: String| {
            problems.push(Problem {
                service: c.name.clone(),
                message,
            })
        };
        let current: BTreeMap<String, String> = c.labels.clone().into_iter().collect();
        let Some((_, parsed)) =
            memory.choose(&c.id, &c.name, current, defaults, "container", &mut problem)
        else {
            continue;
        };
        for label in &parsed.ignored {
            problem(format!(
                "label `{label}` is not supported by limpet; ignored"
            ));
        }
        report_l4(&parsed, &mut problem);
        if !parsed.labels.enable {
            continue;
        }
        let group = parsed.labels.backend.clone().unwrap_or_else(|| {
            match (
                c.labels.get("com.docker.compose.project"),
                c.labels.get("com.docker.compose.service"),
            ) {
                (Some(project), Some(service)) => format!("{service}-{project}"),
                _ => c.name.clone(),
            }
        });
        groups.entry(group).or_default().push((c, parsed.labels));
    }
    memory.finish();
    let mut specs = Vec::new();
    for (name, members) in groups {
        // The first container (by name) speaks for the group's routing labels.
        let l = members[0].1.clone();
        let http = wants_http(&l);
        let mut servers = Vec::new();
        let mut l4 = l4_routes(&l);
        for (c, cl) in &members {
            let mut problem = |message: String| {
                problems.push(Problem {
                    service: c.name.clone(),
                    message,
                })
            };
            let port = match (cl.port, c.private_ports.as_slice()) {
                _ if !http => None,
                (Some(p), _) => Some(p),
                (None, [only]) => Some(*only),
                (None, ports) => {
                    problem(format!(
                        "no `traefik.port` label and the container exposes {} ports; {}",
                        ports.len(),
                        skipped(&l, "container")
                    ));
                    if l.l4.is_empty() {
                        continue;
                    }
                    None
                }
            };
            // Plain containers: only networks limpet shares with them are reachable.
            let reachable_networks: BTreeMap<&String, &String> = c
                .networks
                .iter()
                .filter(|(name, _)| {
                    defaults
                        .reachable
                        .as_ref()
                        .is_none_or(|r| r.contains(*name))
                })
                .collect();
            if reachable_networks.is_empty() && !c.networks.is_empty() {
                problem("limpet shares no network with the container; container skipped".into());
                continue;
            }
            let ip = match &cl.network {
                Some(n) => match reachable_networks.get(n) {
                    Some(ip) => ip,
                    None => {
                        problem(format!("label `traefik.docker.network={n}` names a network the container is not on"));
                        continue;
                    }
                },
                None => match reachable_networks.iter().next() {
                    Some((net, ip)) => {
                        if reachable_networks.len() > 1 {
                            problem(format!(
                                "on several networks; using `{net}`. Set `traefik.docker.network` to choose"
                            ));
                        }
                        ip
                    }
                    None => {
                        problem("the container has no network address (host network?); container skipped".into());
                        continue;
                    }
                },
            };
            if c.health_failing || !marks.routable(&c.id) {
                continue;
            }
            let accepts_new = marks.takes_new(&c.id)
                && !l
                    .maintenance
                    .iter()
                    .any(|m| *m == c.name || names_id(m, &c.id));
            if let Some(port) = port {
                match ServerUrl::http(ip, port) {
                    Ok(url) => servers.push(ServerSpec {
                        id: c.id.clone(),
                        url,
                        weight: cl.weight,
                        accepts_new,
                    }),
                    Err(e) => problem(e.to_string()),
                }
            }
            match ip.parse::<IpAddr>() {
                Ok(ip) => add_l4_servers(&mut l4, &l, &c.id, ip, accepts_new),
                Err(_) if l4.is_empty() => {}
                Err(_) => problem(format!("address `{ip}` is not an IP; no L4 server for it")),
            }
        }
        match spec(&name, &l, servers, l4, http, defaults) {
            Ok(s) => specs.push(s),
            Err(message) => problems.push(Problem {
                service: name.clone(),
                message,
            }),
        }
    }
    problems.sort();
    problems.dedup();
    (specs, problems)
}

/// Whether `limpet.maintenance` names this task, by slot, id or id prefix.
fn in_maintenance(list: &[String], task: &Task) -> bool {
    list.iter().any(|m| {
        task.slot.is_some_and(|slot| m.parse::<u64>() == Ok(slot)) || names_id(m, &task.id)
    })
}

/// An id or its unambiguous short form (12+ characters, as `docker ps` prints).
fn names_id(m: &str, id: &str) -> bool {
    m == id || (m.len() >= 12 && id.starts_with(m))
}

/// Whether the service is routed over HTTP. A service whose labels declare L4 routes and
/// nothing about HTTP (no port, rule or router) is L4 only: it gets no default `Host` router,
/// which would expose, say, a Redis port to HTTP clients.
fn wants_http(l: &ServiceLabels) -> bool {
    l.l4.is_empty() || l.port.is_some() || l.rule.is_some() || !l.routers.is_empty()
}

/// How a port problem ends: the whole service (or container) when it has no L4 route.
fn skipped(l: &ServiceLabels, what: &str) -> String {
    if l.l4.is_empty() {
        format!("{what} skipped")
    } else {
        "its HTTP route is skipped; its TCP/UDP routes are kept".into()
    }
}

/// Logs refused L4 labels and notices, once each, like every other problem.
fn report_l4(parsed: &labels::Parsed, problem: &mut impl FnMut(String)) {
    for e in &parsed.rejected {
        problem(format!(
            "{e}; that route is not forwarded (the service's other routes are unaffected)"
        ));
    }
    for n in &parsed.notices {
        problem(n.clone());
    }
}

/// The labels' L4 routes, with no servers yet.
fn l4_routes(l: &ServiceLabels) -> Vec<L4Spec> {
    l.l4.iter().map(|r| r.route.clone()).collect()
}

/// One L4 server per route for a task (or container) at `ip`. The id names the task, the
/// protocol and the port, so that each route's passive health is its own.
fn add_l4_servers(
    routes: &mut [L4Spec],
    l: &ServiceLabels,
    task: &str,
    ip: IpAddr,
    accepts_new: bool,
) {
    for (route, declared) in routes.iter_mut().zip(&l.l4) {
        route.servers.push(L4ServerSpec {
            id: format!("{task}/{}/{}", route.protocol, declared.container_port),
            addr: SocketAddr::new(ip, declared.container_port),
            weight: l.weight,
            accepts_new,
        });
    }
}

fn spec(
    name: &str,
    l: &ServiceLabels,
    servers: Vec<ServerSpec>,
    l4: Vec<L4Spec>,
    http: bool,
    defaults: &Defaults,
) -> Result<ServiceSpec, String> {
    let normalized = normalize_name(name);
    let routers = if !http {
        Vec::new()
    } else if l.routers.is_empty() {
        let rule = match &l.rule {
            Some(r) => r.clone(),
            None => {
                let host = if defaults.domain.is_empty() {
                    normalized.clone()
                } else {
                    format!("{normalized}.{}", defaults.domain)
                };
                parse_v1(&format!("Host:{host}"))
                    .map_err(|e| format!("default rule for `{name}`: {e}"))?
            }
        };
        vec![RouterSpec {
            name: name.to_owned(),
            rule,
            priority: l.priority,
            tls: l.tls,
        }]
    } else {
        l.routers
            .iter()
            .map(|r| RouterSpec {
                name: format!("{name}/{}", r.name),
                rule: r.rule.clone(),
                priority: r.priority,
                tls: r.tls,
            })
            .collect()
    };
    let backend = l
        .backend
        .as_deref()
        .map(normalize_name)
        .unwrap_or(normalized);
    let sticky = l.sticky.then(|| {
        let mut cookie = l.cookie.clone();
        cookie.cookie_name = if cookie.cookie_name.is_empty() {
            // Traefik v1 names a Docker backend `backend-<name>` and hashes that.
            traefik_v1_cookie_name(&format!("backend-{backend}"))
        } else {
            sanitize_cookie_name(&cookie.cookie_name)
        };
        cookie
    });
    let mut options = l.options.clone();
    options.sticky = sticky;
    if matches!(&options.fallback, Some(crate::table::spec::FallbackSpec::Service(f)) if f == name)
    {
        return Err("label `limpet.fallback` names the service itself; service skipped".into());
    }
    Ok(ServiceSpec {
        name: name.to_owned(),
        provider: Provider::Docker,
        routers,
        servers,
        options,
        l4,
    })
}

#[cfg(test)]
mod tests {
    use super::super::api::{AttachedNetwork, AttachedNetworkSpec, NetworkAttachment, TaskStatus};
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            exposed_by_default: true,
            domain: String::new(),
            reachable: None,
        }
    }

    fn attachment(name: &str, ip: &str, ingress: bool) -> NetworkAttachment {
        NetworkAttachment {
            network: AttachedNetwork {
                id: format!("id-{name}"),
                spec: AttachedNetworkSpec {
                    name: name.into(),
                    ingress,
                },
            },
            addresses: vec![format!("{ip}/24")],
        }
    }

    /// A running task of service `s1` with one address on `net`.
    fn running(id: &str, net: &str, ip: &str) -> Task {
        task(id, "s1", "running", vec![attachment(net, ip, false)])
    }

    fn task(id: &str, service: &str, state: &str, nets: Vec<NetworkAttachment>) -> Task {
        Task {
            slot: None,
            id: id.into(),
            service_id: service.into(),
            desired_state: "running".into(),
            status: TaskStatus {
                state: state.into(),
            },
            networks_attachments: nets,
        }
    }

    fn service(labels: &[(&str, &str)]) -> SwarmService {
        SwarmService {
            id: "s1".into(),
            name: "whoami-service".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            target_ports: vec![],
        }
    }

    /// A plain container on the default bridge network.
    fn container(id: &str, name: &str, ip: &str, labels: &[(&str, &str)]) -> Container {
        Container {
            id: id.into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            networks: [("bridge".to_owned(), ip.to_owned())].into_iter().collect(),
            private_ports: vec![],
            health_failing: false,
        }
    }

    const TUTORIAL: &[(&str, &str)] = &[
        ("traefik.docker.network", "whoaminet"),
        ("traefik.port", "8000"),
        ("traefik.frontend.rule", "PathPrefix:/"),
        ("traefik.backend.loadbalancer.stickiness", "true"),
    ];

    #[test]
    fn tutorial_service_becomes_two_sticky_servers_on_the_labelled_network() {
        let tasks = vec![
            task(
                "t1",
                "s1",
                "running",
                vec![
                    attachment("ingress", "10.0.0.9", true),
                    attachment("whoaminet", "10.0.1.5", false),
                ],
            ),
            task(
                "t2",
                "s1",
                "running",
                vec![
                    attachment("whoaminet", "10.0.1.4", false),
                    attachment("other", "10.0.2.4", false),
                ],
            ),
            task(
                "t3",
                "s1",
                "starting",
                vec![attachment("whoaminet", "10.0.1.6", false)],
            ),
        ];
        let (specs, problems) = swarm(&[service(TUTORIAL)], &tasks, &defaults(), &Marks::default());
        assert!(problems.is_empty(), "{problems:?}");
        let s = &specs[0];
        let urls: Vec<String> = s.servers.iter().map(|s| s.url.to_string()).collect();
        assert_eq!(urls, ["http://10.0.1.5:8000", "http://10.0.1.4:8000"]);
        assert_eq!(s.options.sticky.as_ref().unwrap().cookie_name, "_a49bc");
        assert_eq!(s.servers[0].id, "t1");
    }

    #[test]
    fn stack_prefixed_network_matches_the_short_label() {
        let mut svc = service(TUTORIAL);
        svc.labels.insert(STACK_NAMESPACE.into(), "demo".into());
        let tasks = vec![running("t1", "demo_whoaminet", "10.0.1.5")];
        let (specs, problems) = swarm(&[svc], &tasks, &defaults(), &Marks::default());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(specs[0].servers.len(), 1);
    }

    #[test]
    fn without_a_network_label_the_choice_is_deterministic_and_warned() {
        let labels = [("traefik.port", "8000")];
        let nets = || {
            vec![
                attachment("zeta", "10.0.3.4", false),
                attachment("alpha", "10.0.2.4", false),
            ]
        };
        let (a, pa) = swarm(
            &[service(&labels)],
            &[task("t1", "s1", "running", nets())],
            &defaults(),
            &Marks::default(),
        );
        let mut reversed = nets();
        reversed.reverse();
        let (b, _) = swarm(
            &[service(&labels)],
            &[task("t1", "s1", "running", reversed)],
            &defaults(),
            &Marks::default(),
        );
        assert_eq!(a[0].servers[0].url.to_string(), "http://10.0.2.4:8000");
        assert_eq!(a, b);
        assert!(pa[0].message.contains("several networks"), "{pa:?}");
    }

    #[test]
    fn bad_labels_skip_only_that_service() {
        let mut bad = service(&[("traefik.port", "http")]);
        bad.id = "s2".into();
        bad.name = "broken".into();
        let tasks = vec![running("t1", "whoaminet", "10.0.1.5")];
        let (specs, problems) = swarm(
            &[bad, service(TUTORIAL)],
            &tasks,
            &defaults(),
            &Marks::default(),
        );
        assert_eq!(specs.len(), 1);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].service, "broken");
        assert!(problems[0].message.contains("traefik.port=http"));
    }

    #[test]
    fn a_bad_relabel_keeps_the_last_valid_labels_and_a_new_bad_service_is_skipped() {
        let tasks = vec![running("t1", "whoaminet", "10.0.1.5")];
        let mut memory = LabelMemory::default();
        let run = |services: &[SwarmService], memory: &mut LabelMemory| {
            swarm_remembering(services, &tasks, &defaults(), &Marks::default(), memory)
        };
        let (specs, problems) = run(&[service(TUTORIAL)], &mut memory);
        assert!(problems.is_empty(), "{problems:?}");
        let good = specs[0].clone();

        let mut relabelled = service(TUTORIAL);
        relabelled
            .labels
            .insert("traefik.port".into(), "eighty".into());
        relabelled
            .labels
            .insert("traefik.frontend.rule".into(), "PathPrefix:/new".into());
        let mut fresh = service(&[("traefik.port", "0")]);
        fresh.id = "s2".into();
        fresh.name = "fresh".into();
        let (specs, problems) = run(&[relabelled.clone(), fresh.clone()], &mut memory);
        assert_eq!(specs, vec![good.clone()], "served as before the bad edit");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].service, "fresh");
        assert!(problems[0].message.ends_with("service skipped"));
        assert!(problems[1].message.contains("traefik.port=eighty"));
        assert!(problems[1].message.contains("last valid labels"));

        // The mistake stays remembered as a mistake: the next poll still serves the old labels.
        let (specs, _) = run(&[relabelled.clone(), fresh], &mut memory);
        assert_eq!(specs, vec![good]);

        // A service that left Docker is forgotten; coming back with bad labels, it is new.
        let (specs, _) = run(&[], &mut memory);
        assert!(specs.is_empty());
        let (specs, problems) = run(&[relabelled], &mut memory);
        assert!(specs.is_empty());
        assert!(problems[0].message.ends_with("service skipped"));
    }

    #[test]
    fn a_fallback_to_itself_is_refused_like_any_bad_label() {
        let mut memory = LabelMemory::default();
        let tasks = vec![running("t1", "whoaminet", "10.0.1.5")];
        let mut svc = service(TUTORIAL);
        let (specs, _) = swarm_remembering(
            &[svc.clone()],
            &tasks,
            &defaults(),
            &Marks::default(),
            &mut memory,
        );
        svc.labels
            .insert("limpet.fallback".into(), svc.name.clone());
        let (again, problems) =
            swarm_remembering(&[svc], &tasks, &defaults(), &Marks::default(), &mut memory);
        assert_eq!(again, specs);
        assert!(
            problems[0].message.contains("names the service itself"),
            "{problems:?}"
        );
    }

    #[test]
    fn missing_port_uses_the_single_declared_port_or_complains() {
        let mut svc = service(&[]);
        svc.target_ports = vec![8000];
        let tasks = vec![running("t1", "n", "10.0.1.5")];
        let (specs, _) = swarm(&[svc.clone()], &tasks, &defaults(), &Marks::default());
        assert_eq!(specs[0].servers[0].url.to_string(), "http://10.0.1.5:8000");
        svc.target_ports = vec![];
        let (specs, problems) = swarm(&[svc], &tasks, &defaults(), &Marks::default());
        assert!(specs.is_empty());
        assert!(problems[0].message.contains("traefik.port"));
    }

    #[test]
    fn default_rule_and_disabled_services() {
        let tasks = vec![running("t1", "n", "10.0.1.5")];
        let d = Defaults {
            exposed_by_default: true,
            domain: "example.org".into(),
            reachable: None,
        };
        let (specs, _) = swarm(
            &[service(&[("traefik.port", "80")])],
            &tasks,
            &d,
            &Marks::default(),
        );
        assert_eq!(
            &*specs[0].routers[0].rule.source,
            "Host:whoami-service.example.org"
        );
        let (specs, _) = swarm(
            &[service(&[
                ("traefik.port", "80"),
                ("traefik.enable", "false"),
            ])],
            &tasks,
            &d,
            &Marks::default(),
        );
        assert!(specs.is_empty());
    }

    #[test]
    fn shutting_down_and_marked_tasks_keep_pinned_clients_only() {
        let mut shutting = running("t2", "whoaminet", "10.0.1.4");
        shutting.desired_state = "shutdown".into();
        let mut gone = task(
            "t4",
            "s1",
            "complete",
            vec![attachment("whoaminet", "10.0.1.7", false)],
        );
        gone.desired_state = "shutdown".into();
        let tasks = vec![
            running("t1", "whoaminet", "10.0.1.5"),
            shutting,
            running("t3", "whoaminet", "10.0.1.6"),
            gone,
        ];
        let mut marks = Marks::default();
        marks.unhealthy.insert("t3".into());
        let mut tasks = tasks;
        tasks.push(Task {
            slot: Some(7),
            ..running("t5", "whoaminet", "10.0.1.8")
        });
        let mut svc = service(TUTORIAL);
        svc.labels.insert("limpet.maintenance".into(), "7".into());
        let (specs, _) = swarm(&[svc], &tasks, &defaults(), &marks);
        let servers: Vec<(&str, bool)> = specs[0]
            .servers
            .iter()
            .map(|s| (s.id.as_str(), s.accepts_new))
            .collect();
        assert_eq!(servers, [("t1", true), ("t2", false), ("t5", false)]);
    }

    #[test]
    fn a_task_whose_container_exited_is_no_server_while_swarm_still_says_running() {
        let tasks = vec![
            running("t1", "whoaminet", "10.0.1.5"),
            running("t2", "whoaminet", "10.0.1.6"),
        ];
        let mut marks = Marks::default();
        marks.draining.insert("t2".into());
        marks.gone.insert("t2".into());
        let (specs, _) = swarm(&[service(TUTORIAL)], &tasks, &defaults(), &marks);
        let servers: Vec<&str> = specs[0].servers.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(servers, ["t1"]);
    }

    #[test]
    fn tasks_on_networks_limpet_is_not_on_are_skipped() {
        let tasks = vec![running("t1", "whoaminet", "10.0.1.5")];
        let mut d = defaults();
        d.reachable = Some(["othernet".to_owned()].into_iter().collect());
        let (specs, problems) = swarm(&[service(TUTORIAL)], &tasks, &d, &Marks::default());
        assert!(specs[0].servers.is_empty());
        assert!(problems[0].message.contains("not attached"), "{problems:?}");
        d.reachable = Some(["id-whoaminet".to_owned()].into_iter().collect());
        let (specs, _) = swarm(&[service(TUTORIAL)], &tasks, &d, &Marks::default());
        assert_eq!(specs[0].servers.len(), 1);
    }

    #[test]
    fn a_service_without_tasks_is_kept_with_no_servers() {
        let (specs, _) = swarm(&[service(TUTORIAL)], &[], &defaults(), &Marks::default());
        assert_eq!(specs.len(), 1);
        assert!(specs[0].servers.is_empty());
    }

    #[test]
    fn containers_group_by_backend_label() {
        let c = |id: &str, name: &str, ip: &str| {
            container(
                id,
                name,
                ip,
                &[("traefik.backend", "web"), ("traefik.port", "80")],
            )
        };
        let (specs, problems) = containers(
            &[c("c2", "web2", "172.17.0.3"), c("c1", "web1", "172.17.0.2")],
            &defaults(),
            &Marks::default(),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "web");
        assert_eq!(specs[0].servers.len(), 2);
    }

    #[test]
    fn a_container_failing_its_healthcheck_is_no_server_until_it_passes() {
        let c = |id: &str, ip: &str, failing: bool| Container {
            health_failing: failing,
            ..container(
                id,
                &format!("web-{id}"),
                ip,
                &[("traefik.backend", "web"), ("traefik.port", "80")],
            )
        };
        let ids = |specs: &[ServiceSpec]| -> Vec<String> {
            specs[0].servers.iter().map(|s| s.id.clone()).collect()
        };
        let (specs, _) = containers(
            &[c("c1", "172.17.0.2", false), c("c2", "172.17.0.3", true)],
            &defaults(),
            &Marks::default(),
        );
        assert_eq!(ids(&specs), ["c1"]);
        // An event can say so before the next poll does.
        let mut marks = Marks::default();
        marks.unhealthy.insert("c1".into());
        let (specs, _) = containers(
            &[c("c1", "172.17.0.2", false), c("c2", "172.17.0.3", false)],
            &defaults(),
            &marks,
        );
        assert_eq!(ids(&specs), ["c2"]);
    }

    #[test]
    fn alibaba_redis_label_forwards_the_tasks_container_port_and_nothing_over_http() {
        let mut svc = service(&[("aliyun.lb.port_6379", "tcp://slb_redis_app:6379")]);
        svc.name = "redis-demo".into();
        svc.target_ports = vec![6379];
        let tasks = vec![
            running("t1", "net", "10.0.1.5"),
            running("t2", "net", "10.0.1.6"),
        ];
        let (specs, problems) = swarm(&[svc], &tasks, &defaults(), &Marks::default());
        assert!(problems.is_empty(), "{problems:?}");
        let s = &specs[0];
        assert!(
            s.routers.is_empty(),
            "an L4-only service gets no Host router"
        );
        assert!(s.servers.is_empty());
        let r = &s.l4[0];
        assert_eq!(r.front_port, 6379);
        assert_eq!(r.lb_name.as_deref(), Some("slb_redis_app"));
        let servers: Vec<(&str, String)> = r
            .servers
            .iter()
            .map(|sv| (sv.id.as_str(), sv.addr.to_string()))
            .collect();
        assert_eq!(
            servers,
            [
                ("t1/tcp/6379", "10.0.1.5:6379".to_owned()),
                ("t2/tcp/6379", "10.0.1.6:6379".to_owned())
            ]
        );
    }

    #[test]
    fn http_and_l4_routes_side_by_side_and_a_bad_l4_label_costs_only_its_route() {
        let mut labels = TUTORIAL.to_vec();
        labels.extend([
            ("limpet.udp.stats.frontport", "8125"),
            ("limpet.tcp.admin.frontport", "not-a-port"),
        ]);
        let mut shutting = running("t2", "whoaminet", "10.0.1.4");
        shutting.desired_state = "shutdown".into();
        let tasks = vec![running("t1", "whoaminet", "10.0.1.5"), shutting];
        let (specs, problems) = swarm(&[service(&labels)], &tasks, &defaults(), &Marks::default());
        let s = &specs[0];
        assert_eq!(s.routers.len(), 1);
        assert_eq!(s.servers.len(), 2);
        assert_eq!(s.l4.len(), 1);
        let udp = &s.l4[0];
        assert_eq!(udp.servers[0].addr.to_string(), "10.0.1.5:8125");
        assert!(
            !udp.servers[1].accepts_new,
            "a draining task takes no new sessions"
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0]
            .message
            .contains("limpet.tcp.admin.frontport=not-a-port"));
        assert!(problems[0].message.contains("other routes are unaffected"));
    }

    #[test]
    fn an_l4_service_without_an_http_port_keeps_its_l4_routes() {
        let mut svc = service(&[
            ("traefik.frontend.rule", "Host:x"),
            ("limpet.tcp.db.frontport", "5432"),
        ]);
        svc.target_ports = vec![5432, 8080];
        let tasks = vec![running("t1", "n", "10.0.1.5")];
        let (specs, problems) = swarm(&[svc], &tasks, &defaults(), &Marks::default());
        assert_eq!(specs[0].l4[0].servers.len(), 1);
        assert!(specs[0].routers.is_empty());
        assert!(
            problems[0].message.contains("TCP/UDP routes are kept"),
            "{problems:?}"
        );
    }

    #[test]
    fn alibaba_http_label_is_the_http_port_and_says_what_it_ignores() {
        let tasks = vec![running("t1", "n", "10.0.1.5")];
        let (specs, problems) = swarm(
            &[service(&[("aliyun.lb.port_8000", "https://slb_web:443")])],
            &tasks,
            &defaults(),
            &Marks::default(),
        );
        assert_eq!(specs[0].servers[0].url.to_string(), "http://10.0.1.5:8000");
        assert_eq!(&*specs[0].routers[0].rule.source, "Host:whoami-service");
        assert!(
            problems[0].message.contains("TLS entrypoint"),
            "{problems:?}"
        );
    }

    #[test]
    fn containers_get_l4_servers_too() {
        let c = |id: &str, name: &str, ip: &str| Container {
            private_ports: vec![6379, 16379],
            ..container(
                id,
                name,
                ip,
                &[
                    ("traefik.backend", "cache"),
                    ("aliyun.lb.port_6379", "tcp://lb:16379"),
                ],
            )
        };
        let (specs, problems) = containers(
            &[
                c("c1", "cache1", "172.17.0.2"),
                c("c2", "cache2", "172.17.0.3"),
            ],
            &defaults(),
            &Marks::default(),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(specs[0].routers.is_empty());
        let addrs: Vec<String> = specs[0].l4[0]
            .servers
            .iter()
            .map(|s| s.addr.to_string())
            .collect();
        assert_eq!(addrs, ["172.17.0.2:6379", "172.17.0.3:6379"]);
        assert_eq!(specs[0].l4[0].front_port, 16379);
    }
}
