//! The worker threads that serve client connections, one single-threaded runtime each.
//!
//! A connection and its requests stay on the worker it was given, and so do the backend
//! connections they dial (a worker with none idle borrows another's before dialing; see
//! `pool`). tokio's multi-threaded runtime moved them instead: an idle worker steals ready
//! tasks from a busy one, and a request's task and its backend connection's task often ran
//! on two CPUs, each hand-off a cross-CPU wake-up. On two cores, its two workers then served
//! fewer requests than one did (bench/RESULTS.md). Here the first worker is the runtime that
//! accepts (and runs everything else: health checks, TCP and UDP routes, the status page);
//! the others each run one of their own. Every new connection goes to the worker with the
//! fewest open, so keep-alive clients spread evenly.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::runtime::Handle;

use crate::threads::RuntimeThread;

/// The name of every worker thread but the first (the process's main thread).
pub const THREAD_NAME: &str = "limpet-worker";

thread_local! {
    /// This thread's worker number; 0 on the first worker and on threads that are none.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The calling thread's worker number, counted from 0 in the [`Workers`] it belongs to.
/// Per-worker state (the backend connection pools) is indexed by it.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// The most workers any [`Workers`] of this process has had: the number of per-worker
/// places to make.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed).max(1)
}

static COUNT: AtomicUsize = AtomicUsize::new(1);

/// The data plane's workers. Dropping it stops all but the first, cancelling their
/// connections; the first is the caller's runtime, which outlives it.
#[derive(Debug)]
pub struct Workers {
    members: Box<[Member]>,
}

#[derive(Debug)]
struct Member {
    handle: Handle,
    /// Client connections this worker serves now.
    open: Arc<AtomicUsize>,
    /// `None` for the first worker, whose runtime is the caller's.
    _thread: Option<RuntimeThread>,
}

impl Workers {
    /// `n` workers: the calling runtime and `n - 1` threads. Must be called on a runtime.
    pub fn start(n: NonZeroUsize) -> io::Result<Self> {
        let mut members = Vec::with_capacity(n.get());
        members.push(Member::new(Handle::current(), None));
        for i in 1..n.get() {
            let thread = RuntimeThread::start(THREAD_NAME, move || INDEX.with(|x| x.set(i)))?;
            members.push(Member::new(thread.handle().clone(), Some(thread)));
        }
        COUNT.fetch_max(n.get(), Ordering::Relaxed);
        Ok(Self {
            members: members.into_boxed_slice(),
        })
    }

    /// One worker: the calling runtime, whatever its kind.
    pub fn here() -> Self {
        Self {
            members: Box::new([Member::new(Handle::current(), None)]),
        }
    }

    /// Client connections each worker serves now, in worker order.
    pub fn open(&self) -> Vec<usize> {
        self.members
            .iter()
            .map(|m| m.open.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs `serve` on the worker with the fewest open connections, for as long as the
    /// connection lasts. The stream moves to that worker's runtime first, so that its I/O
    /// wakes that worker only. Called on the first worker's runtime, where it was accepted.
    pub fn serve<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (i, member) = self
            .members
            .iter()
            .enumerate()
            .min_by_key(|(_, m)| m.open.load(Ordering::Relaxed))
            .expect("at least one worker");
        let open = Open::count(&member.open);
        if i == 0 {
            // Accepted on this runtime: the stream is registered with it already.
            member.handle.spawn(async move {
                let _open = open;
                serve(stream).await
            });
            return;
        }
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "cannot hand a connection to a worker; closed");
                return;
            }
        };
        member.handle.spawn(async move {
            let _open = open;
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::debug!(error = %e, "a worker cannot take a connection; closed"),
            }
        });
    }
}

impl Member {
    fn new(handle: Handle, thread: Option<RuntimeThread>) -> Self {
        Self {
            handle,
            open: Arc::new(AtomicUsize::new(0)),
            _thread: thread,
        }
    }
}

/// One of a worker's open connections, counted until dropped.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn count(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(open))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
