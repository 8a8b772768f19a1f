//! Shared helpers for the integration tests of sticky sessions, balancing, health and
//! resilience: real backends, limpet run in-process or as the binary, and an HTTP client,
//! all over loopback sockets bound to port 0.
//!
//! Each test binary uses only part of this, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod backend;
pub mod client;
pub mod limpet;
pub mod process;

// Re-exports for the test files; each uses some of them.
#[allow(unused_imports)]
pub use backend::{dead_addr, Backend, Health, Mode};
#[allow(unused_imports)]
pub use client::{tally, Client, Reply, Session};
#[allow(unused_imports)]
pub use limpet::{servers, Limpet, Options};
#[allow(unused_imports)]
pub use process::Process;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it holds, panicking with `what` after `limit`. Conditions are
/// polled rather than waited for with fixed sleeps, so a busy machine only makes tests
/// slower, not red.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
