//! Futures that one task waits on side by side, each polled only after its own waker fired.
//!
//! A client connection's task waits on its hyper connection, its watchdog and the
//! entrypoint's stop signal. `tokio::select!` polls all three whenever any of them wakes the
//! task, and nearly every wake-up is the connection's: polling the other two cost about
//! 1,000 instructions per proxied request, a fortieth of the whole (callgrind). Here each
//! branch gets a waker of its own that records which branch it belongs to before waking the
//! task, and the task polls only the branches recorded since it last looked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The wakers of `N` branches (at most one per bit of a `usize`).
pub struct Branches<const N: usize> {
    shared: Arc<Shared>,
    wakers: [Waker; N],
}

struct Shared {
    /// One bit per branch woken since the task last took them.
    woken: AtomicUsize,
    task: AtomicWaker,
}

struct Branch {
    shared: Arc<Shared>,
    bit: usize,
}

impl Wake for Branch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.woken.fetch_or(self.bit, Ordering::AcqRel);
        self.shared.task.wake();
    }
}

impl<const N: usize> Branches<N> {
    /// Every branch starts woken: a future must be polled once before it can wake anyone.
    pub fn new() -> Self {
        const { assert!(N > 0 && N <= usize::BITS as usize) };
        let shared = Arc::new(Shared {
            woken: AtomicUsize::new(Self::all()),
            task: AtomicWaker::new(),
        });
        let wakers = std::array::from_fn(|i| {
            Waker::from(Arc::new(Branch {
                shared: Arc::clone(&shared),
                bit: 1 << i,
            }))
        });
        Self { shared, wakers }
    }

    fn all() -> usize {
        usize::MAX >> (usize::BITS as usize - N)
    }

    /// The branches woken since the last call, as a set to ask with [`Woken::has`]. The
    /// task's waker is registered first, so that a branch woken while the others are polled
    /// wakes the task again rather than being missed.
    pub fn take(&self, cx: &Context<'_>) -> Woken {
        self.shared.task.register(cx.waker());
        Woken(self.shared.woken.swap(0, Ordering::AcqRel))
    }

    /// A context to poll branch `i` with.
    pub fn context(&self, i: usize) -> Context<'_> {
        Context::from_waker(&self.wakers[i])
    }
}

/// The branches one [`Branches::take`] found woken.
#[derive(Debug, Clone, Copy)]
pub struct Woken(usize);

impl Woken {
    pub fn has(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::AtomicBool;
    use std::task::Poll;

    /// A task waker that records whether it was woken.
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn polls_only_the_branches_woken_since_the_last_look() {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let task = Waker::from(Arc::clone(&flag));
        let cx = Context::from_waker(&task);
        let branches = Branches::<3>::new();

        let first = branches.take(&cx);
        assert!((0..3).all(|i| first.has(i)), "every branch is polled first");
        assert!(
            !(0..3).any(|i| branches.take(&cx).has(i)),
            "then none until woken"
        );

        branches.context(2).waker().wake_by_ref();
        assert!(
            flag.0.swap(false, Ordering::SeqCst),
            "a branch's wake wakes the task"
        );
        let woken = branches.take(&cx);
        assert!(woken.has(2) && !woken.has(0) && !woken.has(1));

        // A waker a branch kept (as a timer or a socket does) still names that branch.
        let kept = branches.context(1).waker().clone();
        kept.wake();
        let woken = branches.take(&cx);
        assert!(woken.has(1) && !woken.has(0) && !woken.has(2));
        assert!(flag.0.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_future_woken_later_through_its_branch_is_polled_and_finishes() {
        let branches = Branches::<2>::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let mut rx = pin!(rx);
        let mut never = pin!(std::future::pending::<()>());
        let mut polls_of_never = 0;
        let sender = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send(7).unwrap();
        });
        let got = std::future::poll_fn(|cx| {
            let woken = branches.take(cx);
            if woken.has(1) {
                polls_of_never += 1;
                let _ = never.as_mut().poll(&mut branches.context(1));
            }
            if woken.has(0) {
                if let Poll::Ready(v) = rx.as_mut().poll(&mut branches.context(0)) {
                    return Poll::Ready(v.unwrap());
                }
            }
            Poll::Pending
        })
        .await;
        sender.await.unwrap();
        assert_eq!(got, 7);
        assert_eq!(
            polls_of_never, 1,
            "the branch never woken was polled once only"
        );
    }
}
