//! The control plane: providers discover services and hand their specs to the
//! [`Publisher`], which builds a new routing table and swaps it in.
//!
//! Providers never reach into the data plane; the only thing they produce is a table.
//!
//! - `publish`: merges provider snapshots, builds and swaps the table, logs it.
//! - `file`: the static file provider (TOML), reloaded when the file changes.
//! - `docker`: the Swarm/container watcher (bollard), polling and following events.
//! - `thread`: the thread the providers run on, apart from and below the request workers.

pub mod docker;
pub mod file;
mod publish;
mod thread;

pub use publish::{Publisher, SharedTable};
pub use thread::{ControlPlane, THREAD_NAME};
