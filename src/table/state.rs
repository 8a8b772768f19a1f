//! Runtime state of a server that must outlive table swaps: in-flight requests, passive
//! health, and (later) probe results and latency.
//!
//! A table is rebuilt whenever Docker reports a change; if the in-flight count or the
//! failure streak of a server lived in the table, every swap would forget them. They live
//! here instead, keyed by the server's stable identity (the Swarm task id, never its IP),
//! and each new table is handed the same `Arc` for the same server. Everything is atomics:
//! the data plane reads and bumps them without locks.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Milliseconds on a process-wide monotonic clock; `0` is reserved for "never".
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    start.elapsed().as_millis() as u64 + 1
}

#[derive(Debug, Default)]
pub struct ServerState {
    /// Requests sent and not yet answered in full; least-connections reads it.
    inflight: AtomicU32,
    /// Failures in a row; reset by any success.
    failures: AtomicU32,
    /// Passive health: the server is out of rotation until this instant ([`now_ms`]); 0 = in.
    down_until: AtomicU64,
    /// Peak-EWMA response time in nanoseconds, as `f64` bits; 0 until the first response.
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated ([`now_ms`]).
    ewma_at: AtomicU64,
    /// When the server (re)entered rotation, for slow start; 0 = at full share.
    up_since: AtomicU64,
    /// The active monitor's verdict: [`PROBE_UNKNOWN`], [`PROBE_UP`] or [`PROBE_DOWN`].
    probe: AtomicU8,
    /// Requests waiting for a slot under the server's connection limit.
    waiting: AtomicU32,
    /// Wakes one waiter when a request finishes.
    freed: tokio::sync::Notify,
    /// The data plane's own state for this server (its idle backend connections), attached
    /// on first use. It lives here to be found without a lookup and to go when the server
    /// goes; as `Any`, so that the table depends on no HTTP client.
    attached: OnceLock<Arc<dyn Any + Send + Sync>>,
}

pub const PROBE_UNKNOWN: u8 = 0;
pub const PROBE_UP: u8 = 1;
pub const PROBE_DOWN: u8 = 2;

/// How fast the latency estimate forgets: a sample's weight halves in about 7 s.
const EWMA_DECAY_MS: f64 = 10_000.0;
/// The estimate for a server that has not answered yet: neutral, neither favoured nor shunned.
const DEFAULT_LATENCY_NS: f64 = 5_000_000.0;

impl ServerState {
    /// What the data plane attached to this server, attaching `init()` if nothing is yet.
    pub fn attachment(
        &self,
        init: impl FnOnce() -> Arc<dyn Any + Send + Sync>,
    ) -> &Arc<dyn Any + Send + Sync> {
        self.attached.get_or_init(init)
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(Arc::clone(self))
    }

    /// Like [`ServerState::start_request`], but only while fewer than `max` are in flight.
    pub fn try_start_request(self: &Arc<Self>, max: u32) -> Option<InflightGuard> {
        self.inflight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InflightGuard(Arc::clone(self)))
    }

    pub fn is_full(&self, max: u32) -> bool {
        max != 0 && self.inflight() >= max
    }

    /// Waits in the server's queue for a slot under `max`. `None` when the queue already
    /// holds `queue` requests or the slot did not come within `timeout`.
    pub async fn queue_for(
        self: &Arc<Self>,
        max: u32,
        queue: u32,
        timeout: Duration,
    ) -> Option<InflightGuard> {
        if let Some(g) = self.try_start_request(max) {
            return Some(g);
        }
        let position = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _leave = WaitGuard(self);
        if position >= queue {
            return None;
        }
        let wait = async {
            loop {
                let freed = self.freed.notified();
                if let Some(g) = self.try_start_request(max) {
                    return g;
                }
                freed.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }

    /// Whether passive health or the active monitor keeps the server out of rotation.
    pub fn is_down(&self, now: u64) -> bool {
        if self.probe.load(Ordering::Relaxed) == PROBE_DOWN {
            return true;
        }
        let until = self.down_until.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    pub fn probe(&self) -> u8 {
        self.probe.load(Ordering::Relaxed)
    }

    /// Records the active monitor's verdict; a server coming back ramps up.
    pub fn set_probe(&self, verdict: u8) {
        let before = self.probe.swap(verdict, Ordering::Relaxed);
        if before == PROBE_DOWN && verdict == PROBE_UP {
            self.down_until.store(0, Ordering::Relaxed);
            self.begin_ramp();
        }
    }

    /// Forgets the active monitor's verdict, for a server no monitor judges any more; one
    /// that was out comes back, ramping up.
    pub fn clear_probe(&self) {
        if self.probe.load(Ordering::Relaxed) == PROBE_UNKNOWN {
            return;
        }
        if self.probe.swap(PROBE_UNKNOWN, Ordering::Relaxed) == PROBE_DOWN {
            self.begin_ramp();
        }
    }

    /// Takes the server out until the active monitor passes again (passive failures on a
    /// monitored service: Apigee's "out until the HealthMonitor says otherwise").
    pub fn mark_down_until_probed(&self) {
        self.probe.store(PROBE_DOWN, Ordering::Relaxed);
    }

    /// Feeds one response time into the peak-EWMA estimate: a slower sample replaces the
    /// estimate at once (peak), faster ones pull it down gradually.
    pub fn record_latency(&self, rtt: Duration) {
        let sample = rtt.as_nanos() as f64;
        let now = now_ms();
        let prev = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let next = if prev == 0.0 || sample > prev {
            sample
        } else {
            let elapsed = now.saturating_sub(self.ewma_at.load(Ordering::Relaxed)) as f64;
            let w = (-elapsed / EWMA_DECAY_MS).exp();
            prev * w + sample * (1.0 - w)
        };
        // Two threads racing here each write a plausible estimate; losing one sample is fine.
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
        self.ewma_at.store(now, Ordering::Relaxed);
    }

    pub fn latency_ns(&self) -> f64 {
        let v = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        if v == 0.0 {
            DEFAULT_LATENCY_NS
        } else {
            v
        }
    }

    /// Starts a slow-start ramp now (a server new to a running limpet, or back from down).
    pub fn begin_ramp(&self) {
        self.up_since.store(now_ms(), Ordering::Relaxed);
    }

    /// The share of a full weight this server gets now, in (0, 1].
    pub fn ramp(&self, now: u64, window: Duration) -> f64 {
        let since = self.up_since.load(Ordering::Relaxed);
        let window = window.as_millis() as u64;
        if since == 0 || window == 0 || now >= since + window {
            return 1.0;
        }
        // Never 0, or a lone server in slow start could not be picked at all.
        ((now - since) as f64 / window as f64).max(0.05)
    }

    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        // The first success after a cool-down brings the server back; ramp it up.
        let until = self.down_until.load(Ordering::Relaxed);
        if until != 0 && now_ms() >= until {
            self.down_until.store(0, Ordering::Relaxed);
            self.begin_ramp();
        }
    }

    /// Records a failure; after `max_failures` in a row the server leaves rotation for
    /// `cooldown`. Returns true when this failure took it out.
    pub fn record_failure(&self, max_failures: u32, cooldown: Duration) -> bool {
        let streak = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if max_failures == 0 || streak < max_failures {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let until = now_ms() + cooldown.as_millis() as u64;
        self.down_until.swap(until, Ordering::Relaxed) < now_ms()
    }
}

/// Decrements the server's in-flight count when the response is done (or abandoned).
#[derive(Debug)]
pub struct InflightGuard(Arc<ServerState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
        if self.0.waiting.load(Ordering::Acquire) != 0 {
            self.0.freed.notify_one();
        }
    }
}

/// Leaves the queue however the wait ends.
struct WaitGuard<'a>(&'a ServerState);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The states of every server in the current table, owned by the control plane.
///
/// Each state is held by the table builder for as long as some service of the table lists
/// its server, counted per listing, so that a rebuild touches only the servers of the
/// services that changed: a state goes when the last listing of its server goes.
#[derive(Debug, Default)]
pub struct StateRegistry {
    states: HashMap<Box<str>, Held>,
    /// Set after the first table: servers found at start-up take a full share at once,
    /// servers that appear later ramp up.
    started: bool,
}

#[derive(Debug)]
struct Held {
    state: Arc<ServerState>,
    /// Listings of the server in the services the builder keeps.
    holders: u32,
}

impl StateRegistry {
    /// The state for this server identity, shared with the previous table if it had one,
    /// and held until a matching [`StateRegistry::release`].
    pub fn acquire(&mut self, id: &str) -> Arc<ServerState> {
        if let Some(held) = self.states.get_mut(id) {
            held.holders += 1;
            return Arc::clone(&held.state);
        }
        let state = Arc::new(ServerState::default());
        if self.started {
            state.begin_ramp();
        }
        self.states.insert(
            id.into(),
            Held {
                state: Arc::clone(&state),
                holders: 1,
            },
        );
        state
    }

    /// The state of a server that is held, without holding it once more; a server nothing
    /// holds gets a state of its own that the registry does not keep.
    pub fn get(&self, id: &str) -> Arc<ServerState> {
        match self.states.get(id) {
            Some(held) => Arc::clone(&held.state),
            None => Arc::new(ServerState::default()),
        }
    }

    /// Lets go of one [`StateRegistry::acquire`]; the last one forgets the server, whose
    /// runtime state a later return then starts afresh.
    pub fn release(&mut self, id: &str) {
        if let Some(held) = self.states.get_mut(id) {
            held.holders -= 1;
            if held.holders == 0 {
                self.states.remove(id);
            }
        }
    }

    /// Marks the end of a table build.
    pub fn built(&mut self) {
        self.started = true;
    }

    /// How many servers have a state.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_by_identity_until_its_last_holder_lets_go() {
        let mut r = StateRegistry::default();
        let a = r.acquire("task-1");
        let _guard = a.start_request();
        assert_eq!(r.acquire("task-1").inflight(), 1);
        r.release("task-1");
        assert_eq!(r.get("task-1").inflight(), 1, "still held once");
        r.release("task-1");
        assert!(r.is_empty());
        assert_eq!(r.acquire("task-1").inflight(), 0);
    }

    #[test]
    fn inflight_guard_counts_down() {
        let s = Arc::new(ServerState::default());
        let g1 = s.start_request();
        let g2 = s.start_request();
        assert_eq!(s.inflight(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn failures_take_a_server_out_for_the_cooldown() {
        let s = ServerState::default();
        assert!(!s.record_failure(3, Duration::from_secs(60)));
        assert!(!s.record_failure(3, Duration::from_secs(60)));
        s.record_success();
        assert!(!s.record_failure(3, Duration::from_secs(60)));
        assert!(!s.record_failure(3, Duration::from_secs(60)));
        assert!(s.record_failure(3, Duration::from_secs(60)));
        assert!(s.is_down(now_ms()));
        assert!(!s.is_down(now_ms() + 61_000));
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let s = ServerState::default();
        assert_eq!(s.latency_ns(), DEFAULT_LATENCY_NS);
        s.record_latency(Duration::from_millis(1));
        assert_eq!(s.latency_ns(), 1e6);
        s.record_latency(Duration::from_millis(10));
        assert_eq!(s.latency_ns(), 1e7, "a slower sample is taken at once");
        s.record_latency(Duration::from_millis(1));
        assert!(s.latency_ns() > 1e6 && s.latency_ns() <= 1e7);
    }

    #[test]
    fn ramp_grows_to_full_share() {
        let s = ServerState::default();
        let w = Duration::from_secs(10);
        assert_eq!(s.ramp(now_ms(), w), 1.0);
        s.begin_ramp();
        let now = now_ms();
        assert!(s.ramp(now, w) < 0.1);
        assert!((s.ramp(now + 5_000, w) - 0.5).abs() < 0.01);
        assert_eq!(s.ramp(now + 10_000, w), 1.0);
    }

    #[test]
    fn only_servers_added_after_start_ramp() {
        let mut r = StateRegistry::default();
        assert_eq!(r.acquire("a").ramp(now_ms(), Duration::from_secs(60)), 1.0);
        r.built();
        assert!(r.acquire("b").ramp(now_ms(), Duration::from_secs(60)) < 1.0);
    }

    #[tokio::test]
    async fn limits_admit_queue_and_refuse() {
        let s = Arc::new(ServerState::default());
        let first = s.try_start_request(1).unwrap();
        assert!(s.try_start_request(1).is_none());
        assert!(s.is_full(1));
        // No queue: refused at once.
        assert!(s.queue_for(1, 0, Duration::from_secs(5)).await.is_none());
        // A queued request gets the slot when the first finishes.
        let waiter = {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.queue_for(1, 1, Duration::from_secs(5)).await.is_some() })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert!(waiter.await.unwrap());
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn probe_down_takes_out_and_up_ramps() {
        let s = ServerState::default();
        s.set_probe(PROBE_DOWN);
        assert!(s.is_down(now_ms()));
        s.set_probe(PROBE_UP);
        assert!(!s.is_down(now_ms()));
        assert!(s.ramp(now_ms(), Duration::from_secs(60)) < 1.0);
    }

    #[test]
    fn clearing_the_verdict_brings_a_server_back() {
        let s = ServerState::default();
        s.mark_down_until_probed();
        assert!(s.is_down(now_ms()));
        s.clear_probe();
        assert!(!s.is_down(now_ms()));
        assert_eq!(s.probe(), PROBE_UNKNOWN);
        assert!(s.ramp(now_ms(), Duration::from_secs(60)) < 1.0);
    }

    #[test]
    fn zero_max_failures_disables_passive_health() {
        let s = ServerState::default();
        for _ in 0..10 {
            assert!(!s.record_failure(0, Duration::from_secs(60)));
        }
        assert!(!s.is_down(now_ms()));
    }
}
