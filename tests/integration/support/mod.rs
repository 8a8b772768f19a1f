//! What the integration tests share: real backends, limpet in-process, a plain client, and
//! the waiting primitives. Not every helper is used
//! yet by a test, hence the allowances.
//!
//! - `backend`: hyper servers on 127.0.0.1 that answer their own name and misbehave on cue.
//! - `limpet`: limpet on 127.0.0.1:0, configured through its file provider.
//! - `client`: one real HTTP/1.1 connection per `Conn`; replies read whole.
//! - `pattern`: large bodies that can be checked while they stream.
//! - `logs`: limpet's log lines, for the cases where a log line is the only evidence.
//! - `certs`: a test CA and the certificates it signs, made at run time.
//! - `edge`: limpet with its TLS entrypoint; TLS and HTTP/2 clients; TLS and h2 backends.
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod certs;
pub mod client;
pub mod edge;
pub mod l4;
pub mod limpet;
pub mod logs;
pub mod pattern;

use std::future::Future;
use std::time::Duration;

pub use backend::{closed_port, spawn_backend, spawn_backend_with, Backend, Mode};
pub use client::{Conn, Reply, Req};
pub use limpet::{spawn_limpet, spawn_limpet_with_file, Limpet, Options};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bound on anything a test waits for. Generous, because it is only reached when
/// something is broken, and a busy 2-core machine must never reach it otherwise.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Two workers, as on this machine's default: the harness's connections then move to a second
/// runtime, as the binary's do.
pub fn two_workers() -> std::sync::Arc<::limpet::proxy::Workers> {
    let two = std::num::NonZeroUsize::new(2).expect("two is not zero");
    std::sync::Arc::new(::limpet::proxy::Workers::start(two).expect("start the workers"))
}

/// Awaits `future`, failing the test with `what` if it takes longer than [`PATIENCE`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(output) => output,
        Err(_) => panic!("gave up after {PATIENCE:?} waiting for {what}"),
    }
}

/// Polls `condition` until it holds, failing the test with `what` after [`PATIENCE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// A TOML array of servers for the file provider: `[{ url = "http://…" }, …]`.
pub fn servers(urls: &[&str]) -> String {
    let items: Vec<String> = urls
        .iter()
        .map(|u| format!("{{ url = \"{u}\" }}"))
        .collect();
    format!("[{}]", items.join(", "))
}

/// Waits for limpet to close a connection whose request head it must not answer; fails on
/// any byte of an answer.
pub async fn closed_unanswered(stream: &mut (impl tokio::io::AsyncRead + Unpin), what: &str) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    match within(what, stream.read(&mut buf)).await {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!(
            "limpet answered a head that never ended: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}
