//! The control plane's own thread: a single-threaded runtime for the providers, at a lower
//! scheduling priority than the request workers.
//!
//! Parsing a large file and building a table of thousands of servers take about a
//! millisecond of CPU. On the workers' runtime that work would sit in front of queued
//! requests. On its own thread it runs ten niceness steps below them and yields the CPU every
//! [`pace::SLICE`] (see [`crate::table::pace`]), so a worker sharing its core waits at most
//! that long behind it.
//!
//! It is not `SCHED_IDLE`, which an earlier version used: a saturated core then starved it,
//! and with ten edits a second it published a table for only 55-66 % of them (bench/
//! RESULTS.md). A lower niceness without the yields let each swap hold the core for its
//! whole millisecond, and raised the requests' p99 by 43 %.

use std::future::Future;
use std::io;

use tokio::task::JoinHandle;

use crate::table::pace;
use crate::threads::RuntimeThread;

/// How much lower than the workers the control plane runs, in Linux niceness steps.
const NICENESS: i32 = 10;

/// The thread's name, as `top -H` and `/proc/<pid>/task/*/comm` show it.
pub const THREAD_NAME: &str = "limpet-control";

/// Owns the thread; dropping it stops the runtime, cancelling the tasks spawned on it.
#[derive(Debug)]
pub struct ControlPlane(RuntimeThread);

impl ControlPlane {
    pub fn start() -> io::Result<Self> {
        // Its blocking pool (file reads) is control plane too: such threads inherit this
        // one's priority.
        RuntimeThread::start(THREAD_NAME, || {
            lower_priority();
            pace::enable();
        })
        .map(Self)
    }

    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.spawn(future)
    }
}

/// Best effort: off Linux the control plane runs at the workers' priority, which its pacing
/// makes bearable, so a failure is logged, not fatal.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        // On Linux the niceness is per thread: this leaves the workers as they are. Relative
        // to the process's own, which an operator may have set.
        let tid = Some(rustix::thread::gettid());
        let lowered = getpriority_process(tid)
            .and_then(|now| setpriority_process(tid, (now + NICENESS).min(19)));
        if let Err(e) = lowered {
            tracing::debug!(error = %e, "cannot lower the control plane's priority");
        }
    }
}
