//! The listener manager: keeps one listener per (protocol, front port) the routing table
//! routes, as sozu applies a configuration diff. It follows the published table (as the
//! health supervisor does, by polling the pointer), binds ports that appear and releases
//! ports that leave; a listener is never rebound for any other change, since each
//! connection reads its route from the current table anyway.
//!
//! Ports limpet itself uses (the HTTP entrypoint, the status page) are never taken: a route
//! wanting one is reported, naming the service. A port another process holds is retried.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;

use super::tcp::Slots;
use super::{tcp, udp, AbortOnDrop};
use crate::discovery::SharedTable;
use crate::table::l4::Protocol;
use crate::table::Table;

/// How often the manager looks for a new table: a new port is listened on within this.
const RECONCILE_EVERY: Duration = Duration::from_millis(200);

/// How long before binding a port that failed (held by another process) is tried again.
const RETRY_BIND: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct L4Settings {
    /// The address every front port is bound on (`--l4.address`).
    pub address: IpAddr,
    /// Sessions per UDP front port; beyond it, quiet sessions are evicted or new clients
    /// refused (`--l4.udp.maxsessions`).
    pub udp_max_sessions: usize,
    /// TCP connections open at once over every L4 port, counted apart from HTTP's; beyond
    /// it, new ones are closed at once. With `udp_max_sessions`, what bounds L4's memory.
    pub max_tcp_connections: usize,
}

impl Default for L4Settings {
    fn default() -> Self {
        Self {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            udp_max_sessions: 1024,
            max_tcp_connections: 16_384,
        }
    }
}

/// A port limpet already uses for something else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub protocol: Protocol,
    pub port: u16,
    /// What uses it, for the warning: "limpet's HTTP entrypoint".
    pub owner: String,
}

/// A listener the table wants: its port and who asked for it.
type Key = (Protocol, u16);

/// What to change to get from the running listeners to the wanted ones.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    start: Vec<Key>,
    stop: Vec<Key>,
}

/// The diff. Pure, so that "an unrelated change rebinds nothing" is a unit test.
fn plan<'a>(
    running: impl IntoIterator<Item = &'a Key>,
    wanted: &BTreeMap<Key, Vec<String>>,
) -> Plan {
    let running: BTreeSet<Key> = running.into_iter().copied().collect();
    Plan {
        start: wanted
            .keys()
            .filter(|k| !running.contains(k))
            .copied()
            .collect(),
        stop: running
            .iter()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect(),
    }
}

/// A route refused because limpet itself uses its port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Blocked {
    route: String,
    protocol: Protocol,
    port: u16,
    owner: String,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} port {} of `{}` is {}, which keeps it; `{}` is not routed",
            self.protocol, self.port, self.route, self.owner, self.route
        )
    }
}

/// The listeners the table wants, with their routes' names, and the routes refused for
/// wanting one of limpet's own ports.
fn wanted(table: &Table, reserved: &[Reserved]) -> (BTreeMap<Key, Vec<String>>, BTreeSet<Blocked>) {
    let mut wanted: BTreeMap<Key, Vec<String>> = BTreeMap::new();
    let mut blocked = BTreeSet::new();
    for route in table.l4.iter() {
        let key = (route.protocol, route.front_port);
        if let Some(r) = reserved
            .iter()
            .find(|r| r.protocol == route.protocol && r.port == route.front_port)
        {
            blocked.insert(Blocked {
                route: route.name.to_string(),
                protocol: route.protocol,
                port: route.front_port,
                owner: r.owner.clone(),
            });
            continue;
        }
        let mut name = route.name.to_string();
        if let Some(lb) = &route.lb_name {
            name.push_str(&format!(" (load balancer `{lb}`)"));
        }
        wanted.entry(key).or_default().push(name);
    }
    (wanted, blocked)
}

/// Runs forever, listening on what the current table routes. Dropping (aborting) it stops
/// every listener; open TCP connections finish on their own.
pub async fn supervise(table: SharedTable, settings: L4Settings, reserved: Vec<Reserved>) {
    let mut running: BTreeMap<Key, AbortOnDrop> = BTreeMap::new();
    // Ports that failed to bind, and when to try again.
    let mut failed: BTreeMap<Key, Instant> = BTreeMap::new();
    let mut blocked_before: BTreeSet<Blocked> = BTreeSet::new();
    let mut seen: Option<Arc<Table>> = None;
    let slots = Slots::new(settings.max_tcp_connections);
    loop {
        let current = table.load_full();
        let changed = !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &current));
        let retry_due = failed.values().any(|at| *at <= Instant::now());
        if changed || retry_due {
            let (wanted, blocked) = wanted(&current, &reserved);
            for b in blocked.difference(&blocked_before) {
                tracing::warn!("{b}");
            }
            blocked_before = blocked;
            failed.retain(|k, _| wanted.contains_key(k));
            let Plan { start, stop } = plan(running.keys(), &wanted);
            for key in stop {
                running.remove(&key);
                tracing::info!(protocol = %key.0, port = key.1, "no route left on the port; stopped listening");
            }
            for key in start {
                if failed.get(&key).is_some_and(|at| *at > Instant::now()) {
                    continue;
                }
                let routes = wanted[&key].join(", ");
                match listen(key, &settings, &table, &slots).await {
                    Ok(task) => {
                        running.insert(key, task);
                        if failed.remove(&key).is_some() {
                            tracing::info!(protocol = %key.0, port = key.1, routes = %routes, "port free again; listening");
                        } else {
                            tracing::info!(protocol = %key.0, address = %SocketAddr::new(settings.address, key.1), routes = %routes, "listening");
                        }
                    }
                    Err(e) => {
                        // Logged when the failure starts, not on every retry.
                        if !failed.contains_key(&key) {
                            tracing::warn!(protocol = %key.0, address = %SocketAddr::new(settings.address, key.1), routes = %routes, error = %e, "cannot listen; retrying every {} s", RETRY_BIND.as_secs());
                        }
                        failed.insert(key, Instant::now() + RETRY_BIND);
                    }
                }
            }
            seen = Some(current);
        }
        tokio::time::sleep(RECONCILE_EVERY).await;
    }
}

async fn listen(
    (protocol, port): Key,
    settings: &L4Settings,
    table: &SharedTable,
    slots: &Arc<Slots>,
) -> std::io::Result<AbortOnDrop> {
    let addr = SocketAddr::new(settings.address, port);
    let table = Arc::clone(table);
    let task = match protocol {
        Protocol::Tcp => {
            let listener = TcpListener::bind(addr).await?;
            tokio::spawn(tcp::serve(listener, table, Arc::clone(slots)))
        }
        Protocol::Udp => {
            let socket = UdpSocket::bind(addr).await?;
            tokio::spawn(udp::serve(socket, table, settings.udp_max_sessions))
        }
    };
    Ok(AbortOnDrop(task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::l4::{L4ServerSpec, L4Spec};
    use crate::table::spec::{Provider, ServiceOptions, ServiceSpec};
    use crate::table::{Builder, Readiness, StickyGlobals};

    fn table(routes: &[(&str, Protocol, u16, u16)]) -> Table {
        let specs: Vec<Arc<ServiceSpec>> = routes
            .iter()
            .map(|&(name, protocol, front, backend)| {
                let mut r = L4Spec::new("r", protocol, front);
                r.servers.push(L4ServerSpec {
                    id: format!("{name}-{backend}"),
                    addr: SocketAddr::from(([10, 0, 0, 1], backend)),
                    weight: 1,
                    accepts_new: true,
                });
                Arc::new(ServiceSpec {
                    name: name.into(),
                    provider: Provider::Docker,
                    routers: Vec::new(),
                    servers: Vec::new(),
                    options: ServiceOptions::default(),
                    l4: vec![r],
                })
            })
            .collect();
        Builder::new(StickyGlobals::default())
            .build(&specs.iter().collect::<Vec<_>>(), Readiness::Ready)
    }

    #[test]
    fn a_server_change_rebinds_nothing_a_port_change_one_port() {
        let before = table(&[
            ("redis", Protocol::Tcp, 6379, 6379),
            ("dns", Protocol::Udp, 53, 53),
        ]);
        let (running, _) = wanted(&before, &[]);
        let servers_moved = table(&[
            ("redis", Protocol::Tcp, 6379, 16379),
            ("dns", Protocol::Udp, 53, 5353),
        ]);
        let (w, _) = wanted(&servers_moved, &[]);
        assert_eq!(plan(running.keys(), &w), Plan::default());
        let port_moved = table(&[
            ("redis", Protocol::Tcp, 6380, 6379),
            ("dns", Protocol::Udp, 53, 53),
        ]);
        let (w, _) = wanted(&port_moved, &[]);
        assert_eq!(
            plan(running.keys(), &w),
            Plan {
                start: vec![(Protocol::Tcp, 6380)],
                stop: vec![(Protocol::Tcp, 6379)],
            }
        );
    }

    #[test]
    fn limpets_own_ports_are_refused_by_name() {
        let t = table(&[
            ("web-tcp", Protocol::Tcp, 80, 8080),
            ("quic", Protocol::Udp, 80, 443),
        ]);
        let reserved = [Reserved {
            protocol: Protocol::Tcp,
            port: 80,
            owner: "limpet's HTTP entrypoint".into(),
        }];
        let (w, blocked) = wanted(&t, &reserved);
        assert_eq!(w.keys().copied().collect::<Vec<_>>(), [(Protocol::Udp, 80)]);
        let text = blocked.iter().next().unwrap().to_string();
        assert!(
            text.contains("web-tcp/tcp/r") && text.contains("limpet's HTTP entrypoint"),
            "{text}"
        );
    }
}
