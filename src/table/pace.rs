//! Giving the CPU back during long table work on the control plane's thread.
//!
//! Re-parsing part of a large file, building a table of thousands of servers and freeing the
//! old one take a millisecond or so together. Run in one go at the workers' priority, that
//! is a millisecond that a worker sharing the core waits, and ten swaps a second then show
//! in the requests' p99 (bench/RESULTS.md). Run at `SCHED_IDLE` instead, a saturated core
//! starves it and most swaps are skipped. So the work yields every [`SLICE`]: a waiting
//! worker runs at once, and the control plane still gets its share of the core.
//!
//! Only a thread that called [`enable`] yields; elsewhere (the workers, tests, examples)
//! [`breathe`] costs a thread-local read.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Longest run between two yields. Measured with ten 1,000-service edits a second on a core
/// saturated by requests: at 100 µs a yielding thread waited so long to run again that a
/// quarter of the edits were coalesced; at 1 ms the requests' p99 rose by a quarter; at
/// 300 µs every edit was published and the p99 stayed within noise (bench/RESULTS.md).
pub const SLICE: Duration = Duration::from_micros(300);

/// Steps between two looks at the clock. A light step (a service kept from the last table,
/// or freed) takes a microsecond or less, so the slice overruns by a few microseconds at
/// most; reading the clock at every step was 3.8 % of the control plane's time under load
/// (perf, 1,000-service edits, bench/RESULTS.md). A heavy one (a changed service parsed or
/// built, tens of microseconds) ends with [`breathe_now`] instead.
const STEPS_PER_LOOK: u32 = 8;

#[derive(Debug, Clone, Copy)]
struct Pacing {
    /// When the thread last gave the CPU back.
    since: Instant,
    /// Steps since the clock was last read.
    steps: u32,
}

thread_local! {
    /// `None` where pacing is off.
    static PACING: Cell<Option<Pacing>> = const { Cell::new(None) };
}

/// Makes the calling thread yield in [`breathe`] from now on.
pub fn enable() {
    PACING.with(|p| {
        p.set(Some(Pacing {
            since: Instant::now(),
            steps: 0,
        }))
    });
}

/// Called between light steps of long work: yields the CPU to any other runnable thread
/// once the thread has run a [`SLICE`] since it last did, which it checks every few steps.
pub fn breathe() {
    step(false);
}

/// [`breathe`] after a heavy step: checks the time at once.
pub fn breathe_now() {
    step(true);
}

fn step(look: bool) {
    PACING.with(|p| {
        let Some(mut pacing) = p.get() else { return };
        pacing.steps += 1;
        if look || pacing.steps >= STEPS_PER_LOOK {
            pacing.steps = 0;
            if pacing.since.elapsed() >= SLICE {
                std::thread::yield_now();
                pacing.since = Instant::now();
            }
        }
        p.set(Some(pacing));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn since() -> Option<Instant> {
        PACING.with(Cell::get).map(|p| p.since)
    }

    /// Enough steps for the clock to be read once.
    fn look() {
        for _ in 0..STEPS_PER_LOOK {
            breathe();
        }
    }

    #[test]
    fn only_an_enabled_thread_yields_and_only_after_a_slice() {
        std::thread::spawn(|| {
            breathe();
            assert_eq!(since(), None, "off until enabled");
            enable();
            let start = since().unwrap();
            look();
            // Yielded only if this thread was itself kept off the CPU for a slice meanwhile.
            let now = since().unwrap();
            assert!(
                now == start || now >= start + SLICE,
                "no yield within a slice"
            );
            std::thread::sleep(SLICE * 2);
            for _ in 1..STEPS_PER_LOOK {
                breathe();
            }
            assert_eq!(since(), Some(now), "the clock is read every few steps only");
            breathe();
            assert!(
                since().unwrap() >= start + SLICE * 2,
                "yielded, slice restarted"
            );
            let restarted = since().unwrap();
            std::thread::sleep(SLICE * 2);
            breathe_now();
            assert!(
                since().unwrap() >= restarted + SLICE * 2,
                "a heavy step looks at once"
            );
        })
        .join()
        .unwrap();
    }
}
