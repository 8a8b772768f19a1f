//! The UDP session table: which server each client address is bound to, bounded in size.
//!
//! Pure: no I/O and no clock of its own (times are [`crate::table::state::now_ms`] values
//! passed in), generic over what a session holds, so its bounds are unit-tested. A UDP
//! front port's task owns one table; the tasks relaying replies only touch a session's
//! [`Liveness`], which is atomics.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// When a session last carried a datagram (either way), and whether it is over.
#[derive(Debug)]
pub struct Liveness {
    last: AtomicU64,
    /// Set when the server refused a datagram (ICMP port unreachable): the next datagram
    /// from the client opens a new session, on a server that may be up.
    closed: AtomicBool,
}

impl Liveness {
    pub fn new(now: u64) -> Self {
        Self {
            last: AtomicU64::new(now),
            closed: AtomicBool::new(false),
        }
    }

    pub fn touch(&self, now: u64) {
        // Stores from the front task and the reply task race; either value is "recent".
        self.last.store(now, Ordering::Relaxed);
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn quiet_for(&self, now: u64) -> u64 {
        now.saturating_sub(self.last.load(Ordering::Relaxed))
    }
}

/// Whether a new session may be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission<K> {
    Room,
    /// The table was full; this session, quiet the longest, made room.
    Evicted(K),
    /// The table is full of sessions that are all in use: refuse the new client.
    Full,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    live: Arc<Liveness>,
    /// The route's idle timeout when the session began.
    idle_ms: u64,
}

#[derive(Debug)]
pub struct SessionTable<K, V> {
    map: HashMap<K, Entry<V>>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> SessionTable<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The live session of `key`, if any; a closed one is left for the caller to replace.
    pub fn get(&self, key: &K) -> Option<(&V, &Arc<Liveness>)> {
        self.map.get(key).map(|e| (&e.value, &e.live))
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key).map(|e| e.value)
    }

    /// Makes room for one more session. When the table is full, the session quiet the
    /// longest is evicted if it has been quiet for `min_quiet` ms; otherwise the new client
    /// is refused. Evicting only quiet sessions keeps a flood of new (possibly spoofed)
    /// sources from pushing out clients in the middle of an exchange; refusing when all are
    /// busy keeps memory and sockets bounded.
    pub fn make_room(&mut self, now: u64, min_quiet: u64) -> Admission<K> {
        if self.map.len() < self.capacity {
            return Admission::Room;
        }
        // A linear scan, only when full: the table is bounded, and keeping an ordered index
        // would cost every datagram an update instead.
        let oldest = self
            .map
            .iter()
            .max_by_key(|(_, e)| {
                if e.live.is_closed() {
                    u64::MAX
                } else {
                    e.live.quiet_for(now)
                }
            })
            .map(|(k, e)| {
                (
                    k.clone(),
                    e.live.is_closed() || e.live.quiet_for(now) >= min_quiet,
                )
            });
        match oldest {
            Some((key, true)) => {
                self.map.remove(&key);
                Admission::Evicted(key)
            }
            _ => Admission::Full,
        }
    }

    /// Adds a session; call [`SessionTable::make_room`] first.
    pub fn insert(&mut self, key: K, value: V, live: Arc<Liveness>, idle_ms: u64) {
        debug_assert!(self.map.len() < self.capacity || self.map.contains_key(&key));
        self.map.insert(
            key,
            Entry {
                value,
                live,
                idle_ms,
            },
        );
    }

    /// Drops sessions idle past their timeout, and closed ones. Returns how many went.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.map.len();
        self.map
            .retain(|_, e| !e.live.is_closed() && e.live.quiet_for(now) < e.idle_ms);
        before - self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(t: &mut SessionTable<u32, &'static str>, k: u32, now: u64) -> Arc<Liveness> {
        let live = Arc::new(Liveness::new(now));
        t.insert(k, "s", Arc::clone(&live), 1_000);
        live
    }

    #[test]
    fn never_grows_past_capacity() {
        let mut t = SessionTable::new(3);
        for k in 0..3 {
            assert_eq!(t.make_room(100, 50), Admission::Room);
            session(&mut t, k, 100);
        }
        // All three active just now: a fourth client is refused.
        assert_eq!(t.make_room(120, 50), Admission::Full);
        assert_eq!(t.len(), 3);
        // Thousands of new sources later, still three.
        for k in 3..5_000 {
            if t.make_room(130, 50) != Admission::Full {
                session(&mut t, k, 130);
            }
        }
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn the_longest_quiet_session_makes_room() {
        let mut t = SessionTable::new(2);
        let a = session(&mut t, 1, 0);
        session(&mut t, 2, 0);
        a.touch(500);
        assert_eq!(t.make_room(600, 100), Admission::Evicted(2));
        assert_eq!(t.len(), 1);
        assert!(t.get(&1).is_some());
    }

    #[test]
    fn a_closed_session_is_evicted_first_whatever_its_age() {
        let mut t = SessionTable::new(2);
        session(&mut t, 1, 0);
        let b = session(&mut t, 2, 100);
        b.close();
        assert_eq!(t.make_room(100, 1_000), Admission::Evicted(2));
    }

    #[test]
    fn idle_and_closed_sessions_expire() {
        let mut t = SessionTable::new(10);
        let a = session(&mut t, 1, 0);
        session(&mut t, 2, 0);
        let c = session(&mut t, 3, 0);
        a.touch(900);
        c.close();
        assert_eq!(t.expire(999), 1, "only the closed one");
        assert_eq!(t.expire(1_000), 1, "2 reached its idle timeout");
        assert!(t.get(&1).is_some());
        assert_eq!(t.expire(1_900), 1);
        assert_eq!(t.len(), 0);
    }
}
