//! Choosing a server for a request that is not pinned by a cookie.
//!
//! Pure: no I/O. A [`Balancer`] is built once per table from the servers' weights and then
//! picks lock-free. What changes per request (who is eligible, in-flight counts, latency,
//! slow-start ramps) comes through [`Candidates`], read from the servers' runtime state.

mod wrr;

pub use wrr::Schedule;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A service's balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Round robin, ignoring weights (Apigee's default RoundRobin).
    RoundRobin,
    /// Weighted round robin, interleaved (nginx's "smooth" variant); Traefik's `wrr`. With
    /// equal weights it is round robin, which is why it is the default.
    #[default]
    Wrr,
    /// Fewest requests in flight, relative to weight; ties rotate.
    LeastConn,
    /// Power of two choices over a peak-EWMA latency estimate times in-flight requests.
    P2cEwma,
}

impl Method {
    /// Whether picks depend on the servers' response times, which are then worth measuring:
    /// two clock reads and an exponential per request.
    pub fn uses_latency(self) -> bool {
        self == Method::P2cEwma
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown balancing method `{0}` (supported: roundrobin, wrr, leastconn, p2c, and Traefik's drr)")]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "roundrobin" | "round_robin" | "rr" => Ok(Method::RoundRobin),
            "wrr" | "weighted" | "weightedroundrobin" => Ok(Method::Wrr),
            "leastconn" | "leastconnections" | "least_conn" | "leastconnection" => {
                Ok(Method::LeastConn)
            }
            // Traefik v1's `drr` (dynamic round robin) shifts load towards servers that answer
            // faster; latency-aware P2C is the same idea done better.
            "p2c" | "p2c-ewma" | "peakewma" | "drr" => Ok(Method::P2cEwma),
            _ => Err(UnknownMethod(s.to_owned())),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::RoundRobin => "roundrobin",
            Method::Wrr => "wrr",
            Method::LeastConn => "leastconn",
            Method::P2cEwma => "p2c",
        })
    }
}

/// The per-request view of a service's servers.
pub trait Candidates {
    fn count(&self) -> usize;
    /// May take this request: in rotation, taking new sessions, not already tried.
    fn eligible(&self, i: usize) -> bool;
    fn weight(&self, i: usize) -> u32;
    fn inflight(&self, i: usize) -> u32;
    /// Estimated response time in nanoseconds.
    fn latency(&self, i: usize) -> f64;
    /// Slow-start share in (0, 1]: 1 for a server at full share.
    fn ramp(&self, i: usize) -> f64;
}

#[derive(Debug)]
pub struct Balancer {
    method: Method,
    /// The pick order for the round-robin methods.
    schedule: Schedule,
    /// Where least-connections starts scanning, so that ties rotate.
    cursor: AtomicUsize,
}

impl Balancer {
    pub fn new(method: Method, weights: &[u32]) -> Self {
        let schedule = match method {
            Method::RoundRobin => {
                let flat: Vec<u32> = weights.iter().map(|&w| u32::from(w > 0)).collect();
                Schedule::new(&flat)
            }
            _ => Schedule::new(weights),
        };
        Self {
            method,
            schedule,
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn method(&self) -> Method {
        self.method
    }

    pub fn pick(&self, c: &impl Candidates) -> Option<usize> {
        match self.method {
            Method::RoundRobin | Method::Wrr => self.pick_scheduled(c),
            Method::LeastConn => self.pick_least_conn(c),
            Method::P2cEwma => pick_p2c(c),
        }
    }

    fn pick_scheduled(&self, c: &impl Candidates) -> Option<usize> {
        // A server in slow start is passed over with probability 1 - ramp, which scales its
        // share by its ramp. If chance passes over everyone, the plain order decides.
        self.schedule
            .pick(|i| c.eligible(i) && admit(c.ramp(i)))
            .or_else(|| self.schedule.pick(|i| c.eligible(i)))
    }

    fn pick_least_conn(&self, c: &impl Candidates) -> Option<usize> {
        let n = c.count();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| c.eligible(i) && c.weight(i) > 0)
            .min_by(|&a, &b| {
                load(c, a, f64::from(c.inflight(a)) + 1.0).total_cmp(&load(
                    c,
                    b,
                    f64::from(c.inflight(b)) + 1.0,
                ))
            })
    }
}

/// Work per unit of (ramped) weight.
fn load(c: &impl Candidates, i: usize, work: f64) -> f64 {
    work / (f64::from(c.weight(i)) * c.ramp(i).max(0.01))
}

fn admit(ramp: f64) -> bool {
    ramp >= 1.0 || fastrand::f64() < ramp
}

fn pick_p2c(c: &impl Candidates) -> Option<usize> {
    let n = c.count();
    let eligible = |i: usize| c.eligible(i) && c.weight(i) > 0;
    // Sample without building a list; fall back to a scan when random draws keep missing.
    let draw = || {
        (0..8)
            .map(|_| fastrand::usize(..n))
            .find(|&i| eligible(i))
            .or_else(|| (0..n).find(|&i| eligible(i)))
    };
    if n == 0 {
        return None;
    }
    let a = draw()?;
    let b = draw().unwrap_or(a);
    let cost = |i: usize| load(c, i, c.latency(i) * (f64::from(c.inflight(i)) + 1.0));
    Some(if cost(b) < cost(a) { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        weight: Vec<u32>,
        inflight: Vec<u32>,
        latency: Vec<f64>,
        ramp: Vec<f64>,
        down: Vec<bool>,
    }

    impl Fake {
        fn new(weight: &[u32]) -> Self {
            let n = weight.len();
            Self {
                weight: weight.to_vec(),
                inflight: vec![0; n],
                latency: vec![1e6; n],
                ramp: vec![1.0; n],
                down: vec![false; n],
            }
        }
    }

    impl Candidates for Fake {
        fn count(&self) -> usize {
            self.weight.len()
        }
        fn eligible(&self, i: usize) -> bool {
            !self.down[i]
        }
        fn weight(&self, i: usize) -> u32 {
            self.weight[i]
        }
        fn inflight(&self, i: usize) -> u32 {
            self.inflight[i]
        }
        fn latency(&self, i: usize) -> f64 {
            self.latency[i]
        }
        fn ramp(&self, i: usize) -> f64 {
            self.ramp[i]
        }
    }

    fn shares(b: &Balancer, c: &Fake, n: usize) -> Vec<usize> {
        let mut counts = vec![0; c.count()];
        for _ in 0..n {
            counts[b.pick(c).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_ignores_weights() {
        let c = Fake::new(&[1, 5]);
        assert_eq!(
            shares(&Balancer::new(Method::RoundRobin, &c.weight), &c, 100),
            [50, 50]
        );
    }

    #[test]
    fn least_conn_prefers_the_idle_server_and_rotates_ties() {
        let mut c = Fake::new(&[1, 1, 1]);
        c.inflight = vec![5, 0, 3];
        let b = Balancer::new(Method::LeastConn, &c.weight);
        assert_eq!(shares(&b, &c, 10), [0, 10, 0]);
        c.inflight = vec![0, 0, 0];
        assert_eq!(shares(&b, &c, 30), [10, 10, 10]);
    }

    #[test]
    fn p2c_avoids_a_slow_server() {
        let mut c = Fake::new(&[1, 1]);
        c.latency = vec![1e6, 10e6];
        let s = shares(&Balancer::new(Method::P2cEwma, &c.weight), &c, 10_000);
        // The slow server only wins when both draws land on it: about a quarter.
        assert!(s[1] < 3_000, "{s:?}");
        assert!(s[0] > 7_000, "{s:?}");
    }

    #[test]
    fn slow_start_scales_the_share() {
        let mut c = Fake::new(&[1, 1]);
        c.ramp = vec![1.0, 0.25];
        let s = shares(&Balancer::new(Method::Wrr, &c.weight), &c, 20_000);
        let fraction = s[1] as f64 / 20_000.0;
        // Full share would be 0.5; a quarter of it relative to the other gives 0.2.
        assert!((0.15..0.25).contains(&fraction), "{s:?}");
    }

    #[test]
    fn nobody_eligible_means_none() {
        let mut c = Fake::new(&[1, 1]);
        c.down = vec![true, true];
        for m in [
            Method::RoundRobin,
            Method::Wrr,
            Method::LeastConn,
            Method::P2cEwma,
        ] {
            assert_eq!(Balancer::new(m, &c.weight).pick(&c), None, "{m}");
        }
    }

    #[test]
    fn methods_parse_with_traefik_names() {
        assert_eq!("wrr".parse::<Method>().unwrap(), Method::Wrr);
        assert_eq!("drr".parse::<Method>().unwrap(), Method::P2cEwma);
        assert_eq!(
            "LeastConnections".parse::<Method>().unwrap(),
            Method::LeastConn
        );
        assert!("fastest".parse::<Method>().is_err());
    }
}
