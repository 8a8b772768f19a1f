//! Layer-4 forwarding: the data plane of TCP and UDP routes, and the task that keeps their
//! listeners in step with the routing table.
//!
//! It reads the table and nothing else from the control plane: the listener manager follows
//! the published table and binds or releases front ports (a diff, so a listener is never
//! rebound for an unrelated change); each connection, and each datagram that starts a UDP
//! session, loads the current table to find its route. May depend on `table` and on
//! `discovery::SharedTable` (the pointer), tokio's networking and time; never on `proxy`.
//!
//! - `listeners`: the manager: which ports to listen on, binding and releasing them.
//! - `tcp`: one connection: TLS server name (if the port has passthrough routes), connect
//!   with retries, splice with half-close and idle timeout.
//! - `udp`: one front socket: client sessions, each with its own socket to its server.
//! - `sessions`: the bounded UDP session table. Pure.
//! - `sni`: the server name of a TLS ClientHello. Pure.

pub mod listeners;
mod sessions;
pub mod sni;
mod tcp;
mod udp;

pub use listeners::{supervise, L4Settings, Reserved};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::table::state::now_ms;

/// A task that stops when its owner drops it: a listener when its port leaves the table, a
/// UDP session's reply relay when the session ends.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// At most one log line per interval for a failure that can repeat per connection or
/// datagram (no server, a full session table), with the count of those left unsaid.
#[derive(Debug)]
struct Throttle {
    every_ms: u64,
    /// When the next line may be written ([`now_ms`]).
    next: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    fn new(every: Duration) -> Self {
        Self {
            every_ms: every.as_millis() as u64,
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be written now.
    fn allow(&self) -> Option<u64> {
        let now = now_ms();
        let next = self.next.load(Ordering::Relaxed);
        if now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now + self.every_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;
    use std::time::Duration;

    #[test]
    fn throttle_lets_one_line_through_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        assert_eq!(t.suppressed.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
