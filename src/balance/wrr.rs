//! Smooth weighted round robin, precomputed.
//!
//! nginx's smooth WRR interleaves servers (weights 5,1,1 give a a b a c a a, not a a a a a b c)
//! but needs a lock to update its running weights. Running it once at table-build time and
//! storing the resulting order gives the same sequence with a single atomic add per request.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest order kept per service; beyond it weights are scaled down proportionally.
const MAX_SCHEDULE: u64 = 1 << 16;

/// The precomputed pick order of one service.
#[derive(Debug)]
pub struct Schedule {
    /// Server indices in pick order; one full cycle of the smooth WRR.
    order: Box<[u32]>,
    /// Position of the next pick; wraps through `order`.
    cursor: AtomicUsize,
}

impl Schedule {
    /// Builds the order for these weights. Servers of weight 0 never appear: they keep their
    /// pinned sessions but take no new ones.
    pub fn new(weights: &[u32]) -> Self {
        let weights = reduce(weights);
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        let mut current = vec![0i64; weights.len()];
        let mut order = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += i64::from(w);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            order.push(best as u32);
        }
        Self {
            order: order.into_boxed_slice(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next server in order for which `eligible` holds; `None` when no server qualifies.
    pub fn pick(&self, mut eligible: impl FnMut(usize) -> bool) -> Option<usize> {
        let len = self.order.len();
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        for step in 0..len {
            let server = self.order[(start + step) % len] as usize;
            if eligible(server) {
                if step > 0 {
                    // Skipped entries are consumed so that the next request does not walk
                    // the same ineligible run again.
                    self.cursor.fetch_add(step, Ordering::Relaxed);
                }
                return Some(server);
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Divides by the common factor and, if the cycle is still too long, scales down keeping
/// every positive weight at least 1.
fn reduce(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().fold(0u32, |g, &w| gcd(g, w));
    if g == 0 {
        return vec![0; weights.len()];
    }
    let mut out: Vec<u32> = weights.iter().map(|&w| w / g).collect();
    let total: u64 = out.iter().map(|&w| u64::from(w)).sum();
    if total > MAX_SCHEDULE {
        for w in &mut out {
            if *w > 0 {
                *w = ((u64::from(*w) * MAX_SCHEDULE / total) as u32).max(1);
            }
        }
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(s: &Schedule, n: usize) -> Vec<usize> {
        (0..n).map(|_| s.pick(|_| true).unwrap()).collect()
    }

    #[test]
    fn equal_weights_alternate() {
        let s = Schedule::new(&[1, 1]);
        assert_eq!(picks(&s, 6), vec![0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn smooth_order_interleaves() {
        let s = Schedule::new(&[5, 1, 1]);
        assert_eq!(picks(&s, 7), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn shares_follow_weights() {
        let weights = [3, 7, 10];
        let s = Schedule::new(&weights);
        let mut counts = [0usize; 3];
        for p in picks(&s, 20_000) {
            counts[p] += 1;
        }
        assert_eq!(counts, [3_000, 7_000, 10_000]);
    }

    #[test]
    fn weight_zero_takes_no_new_work() {
        let s = Schedule::new(&[0, 2]);
        assert!(picks(&s, 10).iter().all(|&p| p == 1));
        assert!(Schedule::new(&[0, 0]).pick(|_| true).is_none());
    }

    #[test]
    fn ineligible_servers_are_skipped() {
        let s = Schedule::new(&[1, 1, 1]);
        let got: Vec<usize> = (0..6).map(|_| s.pick(|i| i != 1).unwrap()).collect();
        assert!(got.iter().all(|&p| p != 1));
        assert!(got.contains(&0) && got.contains(&2));
        assert!(s.pick(|_| false).is_none());
    }

    #[test]
    fn huge_weights_are_scaled_not_truncated_to_zero() {
        let s = Schedule::new(&[1_000_000, 1, 999_999]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 3);
        let got = picks(&s, s.len());
        assert!(got.contains(&1), "a small positive weight keeps a share");
    }
}
