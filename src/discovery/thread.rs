//! The control plane's own thread: a single-threaded runtime for the providers, at a lower
//! scheduling priority than the request workers.
//!
//! Parsing a large file and building a table of thousands of servers take milliseconds of
//! CPU. On the workers' runtime that work would sit in front of queued requests. On its own
//! thread it runs under Linux's `SCHED_IDLE` policy: a worker that wakes takes the CPU from it
//! at once. A lower niceness alone is not enough: the kernel lets a running thread finish its
//! time slice (a millisecond or more) before a waking one of the same policy gets the CPU,
//! and with ten table swaps a second on a saturated core that doubled the requests' p99
//! (bench/RESULTS.md). Under saturation the control plane falls behind instead: a provider
//! publishes its newest view when it catches up, as Traefik's provider throttle does anyway.

use std::future::Future;
use std::io;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How much lower than the workers the control plane runs, in Linux niceness steps.
const NICENESS: i32 = 10;

/// The thread's name, as `top -H` and `/proc/<pid>/task/*/comm` show it.
pub const THREAD_NAME: &str = "limpet-control";

/// Owns the thread; dropping it stops the runtime, cancelling the tasks spawned on it.
#[derive(Debug)]
pub struct ControlPlane {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl ControlPlane {
    pub fn start() -> io::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                lower_priority();
                // Its blocking pool (file reads) is control plane too; such threads inherit
                // this one's priority, and get its name so that they can be told apart.
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name(THREAD_NAME)
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let handle = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the control-plane thread ended at start"))??;
        Ok(Self {
            handle,
            stop: Some(stop),
        })
    }

    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Not joined: that would block the caller, often a worker. The thread ends by
        // itself once its runtime has dropped the cancelled tasks.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Best effort: off Linux the control plane runs at the workers' priority, which is only
/// slower under saturation, so a failure is logged, not fatal.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        // On Linux the niceness is per thread: this leaves the workers as they are. Relative
        // to the process's own, which an operator may have set. It orders the control plane
        // after the workers should `SCHED_IDLE` be refused.
        let tid = Some(rustix::thread::gettid());
        let lowered = getpriority_process(tid)
            .and_then(|now| setpriority_process(tid, (now + NICENESS).min(19)));
        if let Err(e) = lowered {
            tracing::debug!(error = %e, "cannot lower the control plane's priority");
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` only reads `param`, which outlives the call; pid 0 is
        // the calling thread. Lowering one's own policy needs no privilege.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            let e = io::Error::last_os_error();
            tracing::debug!(error = %e, "cannot move the control plane to SCHED_IDLE");
        }
    }
}
