//! Threads that each run a single-threaded tokio runtime of their own: the control plane's
//! (see [`crate::discovery::ControlPlane`]) and the data plane's workers after the first
//! (see [`crate::proxy::Workers`]).

use std::future::Future;
use std::io;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The builder of every runtime limpet runs, the first worker's included: single-threaded,
/// with I/O and timers.
///
/// tokio polls for I/O after every 61 task polls by default. A proxied request takes about
/// seven, so a saturated worker looked at its sockets every nine requests or so, and each
/// look ended in a small burst of writes that woke peers which had fallen asleep since the
/// last one. HAProxy runs up to 200 tasks between polls. At 256, wake-ups of the peers per
/// request halved (0.25 to 0.12, HAProxy's is 0.13) and 1-worker throughput rose about 2 %
/// (bench/RESULTS.md). A worker whose run queue empties still polls at once, so an idle or
/// lightly loaded one answers as soon as before.
pub fn runtime_builder() -> Builder {
    let mut builder = Builder::new_current_thread();
    builder.enable_all().event_interval(256);
    builder
}

/// Owns the thread; dropping it stops the runtime, cancelling the tasks spawned on it.
#[derive(Debug)]
pub struct RuntimeThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl RuntimeThread {
    /// Starts a thread named `name` that runs `setup`, then its runtime until dropped. The
    /// runtime's blocking pool gets the same name: its threads do this thread's work (the
    /// control plane's file reads), and `top -H` then counts them with it.
    pub fn start(name: &str, setup: impl FnOnce() + Send + 'static) -> io::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread_name = name.to_owned();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                setup();
                let runtime = match runtime_builder().thread_name(thread_name).build() {
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
            .map_err(|_| io::Error::other(format!("thread {name} ended at start")))??;
        Ok(Self {
            handle,
            stop: Some(stop),
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        // Not joined: that would block the caller, often a worker. The thread ends by
        // itself once its runtime has dropped the cancelled tasks.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
