//! Active health monitors (control plane): probes every server of every service, and of
//! every TCP route, that has a health check, and records the verdict in the server's runtime state, where the data plane
//! reads it. Nothing here touches a request.
//!
//! A supervisor follows the published table and keeps exactly one probe loop per
//! (server, health-check settings): loops for servers that left are stopped, new ones
//! started, and a changed check restarts its loops.
//!
//! - `probe`: one TCP or HTTP probe, pure I/O with timeouts.

mod probe;

pub use probe::{probe, ProbeError, ProbeTarget, ProbeTls};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::discovery::SharedTable;
use crate::table::spec::HealthCheckSpec;
use crate::table::state::{ServerState, PROBE_DOWN, PROBE_UP};

/// How often the supervisor looks for a new table. Probing itself runs on each check's
/// own interval; this only bounds how late a new server's first probe starts.
const RECONCILE_EVERY: Duration = Duration::from_millis(200);

/// Runs forever, probing what the current table asks for. `instance` names this limpet in
/// the optional health-check id header.
pub async fn supervise(table: SharedTable, instance: String) {
    let mut running: HashMap<Key, JoinHandle<()>> = HashMap::new();
    let mut seen: Option<Arc<crate::table::Table>> = None;
    loop {
        let current = table.load_full();
        if !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &current)) {
            let mut wanted: HashMap<Key, Job> = HashMap::new();
            for service in current.services.iter() {
                let Some(check) = &service.health_check else {
                    continue;
                };
                for server in service.servers.iter() {
                    let key = Key {
                        server: server.id.to_string(),
                        check: format!("{check:?} {:?}", service.backend_tls),
                    };
                    wanted.insert(
                        key,
                        Job {
                            target: ProbeTarget {
                                authority: server.authority.to_string(),
                                service: service.name.to_string(),
                                server: server.id.to_string(),
                                instance: instance.clone(),
                                tls: service.backend_tls.clone(),
                            },
                            check: check.clone(),
                            state: Arc::clone(&server.state),
                        },
                    );
                }
            }
            // TCP routes: a connect probe per server, as for a service's `type = tcp` check.
            for route in current.l4.iter() {
                let Some(check) = &route.health_check else {
                    continue;
                };
                for server in route.servers.iter() {
                    let key = Key {
                        server: server.id.to_string(),
                        check: format!("{check:?}"),
                    };
                    wanted.insert(
                        key,
                        Job {
                            target: ProbeTarget {
                                authority: server.addr.to_string(),
                                service: route.name.to_string(),
                                server: server.id.to_string(),
                                instance: instance.clone(),
                                tls: Default::default(),
                            },
                            check: check.clone(),
                            state: Arc::clone(&server.state),
                        },
                    );
                }
            }
            running.retain(|key, handle| {
                let keep = wanted.contains_key(key);
                if !keep {
                    handle.abort();
                }
                keep
            });
            for (key, job) in wanted {
                running
                    .entry(key)
                    .or_insert_with(|| tokio::spawn(job.run()));
            }
            seen = Some(current.clone());
        }
        // A verdict outlives its monitor: when a reload removes a service's check, a server
        // the check had taken out would stay out for good, with nothing left to bring it
        // back. Done on every pass, not only for a new table, so that a probe finishing
        // just as its loop is stopped cannot leave a verdict behind.
        for service in current.services.iter().filter(|s| s.health_check.is_none()) {
            for server in service.servers.iter() {
                server.state.clear_probe();
            }
        }
        for route in current.l4.iter().filter(|r| r.health_check.is_none()) {
            for server in route.servers.iter() {
                server.state.clear_probe();
            }
        }
        tokio::time::sleep(RECONCILE_EVERY).await;
    }
}

/// Identifies a probe loop: the same server with changed settings gets a new loop.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    server: String,
    check: String,
}

struct Job {
    target: ProbeTarget,
    check: HealthCheckSpec,
    state: Arc<ServerState>,
}

impl Job {
    async fn run(self) {
        let mut streak = Streak::default();
        let mut tls = ProbeTls::default();
        loop {
            // Passive health takes a monitored server out behind the monitor's back
            // (`mark_down_until_probed`). The streak must learn of it, or, believing the
            // server up, it would never report a pass again and the server would stay out
            // for good while every probe passes.
            if self.state.probe() == PROBE_DOWN {
                streak.taken_out();
            }
            let result = probe(&self.target, &self.check, &mut tls).await;
            let verdict = streak.record(result.is_ok(), self.check.rise, self.check.fall);
            if let Some(up) = verdict {
                let before = self.state.probe();
                self.state.set_probe(if up { PROBE_UP } else { PROBE_DOWN });
                if up && before == PROBE_DOWN {
                    tracing::info!(service = %self.target.service, server = %self.target.server, "health check passes again; back in rotation");
                } else if !up && before != PROBE_DOWN {
                    tracing::warn!(
                        service = %self.target.service,
                        server = %self.target.server,
                        error = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(),
                        "health check failing; out of rotation"
                    );
                }
            }
            tokio::time::sleep(self.check.interval).await;
        }
    }
}

/// Counts passes and failures in a row and turns them into verdicts with rise and fall
/// thresholds, so one lost probe does not flap a server.
#[derive(Debug, Default)]
struct Streak {
    passes: u32,
    failures: u32,
    /// The verdict given so far; `None` before the first.
    current: Option<bool>,
}

impl Streak {
    /// The server was taken out by something other than this monitor: it comes back after
    /// `rise` passes counted from now, like a server the monitor found down itself.
    fn taken_out(&mut self) {
        if self.current == Some(true) {
            self.current = Some(false);
            self.passes = 0;
        }
    }

    /// Returns the verdict to record, if this probe settles one.
    fn record(&mut self, passed: bool, rise: u32, fall: u32) -> Option<bool> {
        if passed {
            self.passes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.passes = 0;
        }
        let verdict = match self.current {
            // The first probe decides at once: waiting `rise` intervals before a new
            // server may take traffic would be a slow start of its own.
            None => Some(passed),
            Some(true) if self.failures >= fall.max(1) => Some(false),
            Some(false) if self.passes >= rise.max(1) => Some(true),
            _ => None,
        };
        if verdict.is_some() {
            self.current = verdict;
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::Streak;

    #[test]
    fn rise_and_fall_thresholds() {
        let mut s = Streak::default();
        assert_eq!(s.record(true, 2, 3), Some(true));
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(
            s.record(true, 2, 3),
            None,
            "a pass resets the failure streak"
        );
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), Some(false));
        assert_eq!(s.record(true, 2, 3), None);
        assert_eq!(s.record(true, 2, 3), Some(true));
    }

    #[test]
    fn taken_out_by_passive_health_needs_rise_passes_to_return() {
        let mut s = Streak::default();
        assert_eq!(s.record(true, 2, 3), Some(true));
        assert_eq!(s.record(true, 2, 3), None);
        s.taken_out();
        assert_eq!(s.record(true, 2, 3), None, "passes before were forgotten");
        assert_eq!(s.record(true, 2, 3), Some(true));
        // Before any verdict the first probe still decides, as with start_down.
        let mut fresh = Streak::default();
        fresh.taken_out();
        assert_eq!(fresh.record(true, 2, 3), Some(true));
    }

    #[test]
    fn first_probe_decides() {
        let mut s = Streak::default();
        assert_eq!(s.record(false, 2, 3), Some(false));
    }
}
