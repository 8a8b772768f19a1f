//! UDP forwarding: one socket per front port, and a session per client address.
//!
//! The first datagram from a client address picks a server (by the route's balancing) and
//! opens a socket connected to it; later datagrams from that address go to the same server
//! until no datagram has passed either way for the route's idle timeout. A task per session
//! relays the server's replies back to the client from the front socket, so the client sees
//! answers from the address it wrote to. The session table is bounded: see
//! [`super::sessions`]. When a server is gone (ICMP port unreachable), the session ends and
//! the client's next datagram opens a new one elsewhere.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::sessions::{Admission, Liveness, SessionTable};
use super::{AbortOnDrop, Throttle};
use crate::discovery::SharedTable;
use crate::table::l4::Protocol;
use crate::table::state::{now_ms, InflightGuard, ServerState};

/// The largest UDP payload (65,535 less the IPv4 and UDP headers).
const MAX_DATAGRAM: usize = 65_507;

/// How often idle sessions are looked for. Sessions live at least their idle timeout and at
/// most this much longer.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// A full table evicts its quietest session only if it has been quiet this long; see
/// [`SessionTable::make_room`].
const EVICTABLE_AFTER_MS: u64 = 1_000;

/// One client's binding to one server.
struct Session {
    backend: Arc<UdpSocket>,
    server: Arc<ServerState>,
    /// Passive health of the route: failures in a row, cool-down.
    passive: (u32, Duration),
    _relay: AbortOnDrop,
    /// Counts the session as a connection for least-connections.
    _inflight: InflightGuard,
}

/// Serves one front port until the task is aborted; its sessions end with it.
pub(super) async fn serve(socket: UdpSocket, table: SharedTable, max_sessions: usize) {
    let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
    let front = Arc::new(socket);
    let mut relay = Relay {
        port,
        front: Arc::clone(&front),
        table,
        sessions: SessionTable::new(max_sessions),
        full: Throttle::new(Duration::from_secs(10)),
        no_server: Throttle::new(Duration::from_secs(10)),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = front.recv_from(&mut buf) => match received {
                Ok((n, client)) => relay.forward(&buf[..n], client),
                Err(e) => {
                    tracing::debug!(port, error = %e, "udp receive failed");
                    // Whatever the error, do not spin on it.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = sweep.tick() => {
                let gone = relay.sessions.expire(now_ms());
                if gone > 0 {
                    tracing::trace!(port, gone, open = relay.sessions.len(), "udp sessions expired");
                }
            }
        }
    }
}

struct Relay {
    port: u16,
    front: Arc<UdpSocket>,
    table: SharedTable,
    sessions: SessionTable<SocketAddr, Session>,
    full: Throttle,
    no_server: Throttle,
}

impl Relay {
    /// Sends one client datagram on its way. Never waits: a datagram that cannot be sent at
    /// once is dropped, as the network itself may drop it, rather than stall every client.
    fn forward(&mut self, datagram: &[u8], client: SocketAddr) {
        let now = now_ms();
        if let Some((session, live)) = self.sessions.get(&client) {
            if !live.is_closed() {
                match session.backend.try_send(datagram) {
                    Ok(_) => {
                        live.touch(now);
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) => {
                        // The server's port is closed (a pending ICMP error): end the
                        // session and give this datagram a new one.
                        let (max, cooldown) = session.passive;
                        session.server.record_failure(max, cooldown);
                        tracing::debug!(%client, error = %e, "udp server unreachable; new session");
                    }
                }
            }
            self.sessions.remove(&client);
        }
        self.open(datagram, client, now);
    }

    fn open(&mut self, datagram: &[u8], client: SocketAddr, now: u64) {
        let table = self.table.load();
        let Some(route) = table.l4_routes(Protocol::Udp, self.port).first() else {
            tracing::debug!(port = self.port, %client, "udp datagram for a port with no route");
            return;
        };
        let Some(i) = route.pick(client.ip(), &[]) else {
            if let Some(suppressed) = self.no_server.allow() {
                tracing::warn!(route = %route.name, %client, suppressed, "udp route has no server available; datagram dropped");
            }
            return;
        };
        match self.sessions.make_room(now, EVICTABLE_AFTER_MS) {
            Admission::Room => {}
            Admission::Evicted(old) => {
                tracing::debug!(route = %route.name, evicted = %old, "udp session table full; quietest session evicted");
            }
            Admission::Full => {
                if let Some(suppressed) = self.full.allow() {
                    tracing::warn!(
                        route = %route.name,
                        %client,
                        sessions = self.sessions.len(),
                        suppressed,
                        "udp session table full of active sessions; new client refused (raise --l4.udp.maxsessions?)"
                    );
                }
                return;
            }
        }
        let server = &route.servers[i];
        let backend = match connected_socket(server.addr, datagram) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                if let Some(suppressed) = self.no_server.allow() {
                    tracing::warn!(route = %route.name, server = %server.id, suppressed, error = %e, "cannot open a udp socket for a new session");
                }
                return;
            }
        };
        let live = Arc::new(Liveness::new(now));
        let passive = (route.passive.max_failures, route.passive.cooldown);
        let relay = tokio::spawn(relay_replies(
            Arc::clone(&backend),
            Arc::clone(&self.front),
            client,
            Arc::clone(&live),
            Arc::clone(&server.state),
            passive,
        ));
        tracing::trace!(route = %route.name, %client, server = %server.id, "udp session opened");
        let idle_ms = route.idle_timeout.as_millis() as u64;
        self.sessions.insert(
            client,
            Session {
                backend,
                server: Arc::clone(&server.state),
                passive,
                _relay: AbortOnDrop(relay),
                _inflight: server.state.start_request(),
            },
            live,
            idle_ms,
        );
    }
}

/// A socket of the server's family on an ephemeral port, connected to the server so that
/// only its datagrams come back and ICMP errors are reported on it, with the session's first
/// datagram already sent. Made with std calls: nothing here waits, and the front task must
/// not.
///
/// The first datagram goes out through the std socket: a socket just handed to tokio has no
/// write readiness until the reactor's next turn, so tokio's `try_send` would refuse it with
/// `WouldBlock`, and every new session would lose its first datagram (seen on the swarm,
/// where a client that opens a new socket per request then never gets an answer).
fn connected_socket(server: SocketAddr, first: &[u8]) -> io::Result<UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(server)?;
    socket.set_nonblocking(true)?;
    if let Err(e) = socket.send(first) {
        // Dropped like any datagram that cannot leave at once; the session stands.
        tracing::debug!(%server, error = %e, "udp send failed");
    }
    UdpSocket::from_std(socket)
}

/// Relays a session's replies to its client until the session is dropped or the server's
/// port turns out closed.
async fn relay_replies(
    backend: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    live: Arc<Liveness>,
    server: Arc<ServerState>,
    (max_failures, cooldown): (u32, Duration),
) {
    let mut answered = false;
    loop {
        if backend.readable().await.is_err() {
            break;
        }
        // The buffer exists only while a datagram is in hand: an idle session costs a socket
        // and a few words, not 64 KiB, however many there are.
        let mut buf = Vec::with_capacity(MAX_DATAGRAM);
        match backend.try_recv_buf(&mut buf) {
            Ok(_) => {
                live.touch(now_ms());
                if !answered {
                    server.record_success();
                    answered = true;
                }
                if let Err(e) = front.send_to(&buf, client).await {
                    tracing::debug!(%client, error = %e, "udp reply not delivered");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    server.record_failure(max_failures, cooldown);
                }
                tracing::debug!(%client, error = %e, "udp session ended by its server");
                live.close();
                break;
            }
        }
    }
}
