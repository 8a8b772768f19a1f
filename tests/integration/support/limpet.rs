//! limpet in-process, fed through its file provider: the same pieces `limpet::run` wires
//! together (publisher, file watcher, proxy), but on a listener bound to 127.0.0.1:0 so tests
//! run in parallel and learn the address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use limpet::discovery::{file, Publisher, SharedTable};
use limpet::proxy::{self, Proxy, ProxySettings};
use limpet::table::spec::Provider;
use limpet::table::StickyGlobals;
use limpet::table::Table;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::client::{Conn, Reply, Req};
use super::{eventually, within};

/// How often the file is polled: short, so reloads show up fast.
pub const POLL: Duration = Duration::from_millis(50);

/// Settings for a test limpet. Timeouts are generous by default so that a busy machine
/// does not turn a slow answer into a 504; timeout tests shorten them.
#[derive(Debug, Clone)]
pub struct Options {
    pub proxy: ProxySettings,
    /// Also expect a Docker provider, which never reports: limpet stays not ready.
    pub wait_for_docker: bool,
    /// Accept HTTP/2 with prior knowledge (h2c) as well as HTTP/1.
    pub h2c: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            proxy: ProxySettings {
                dial_timeout: Duration::from_secs(5),
                response_header_timeout: Duration::from_secs(10),
                idle_conn_timeout: Duration::from_secs(90),
                grace_period: Duration::from_secs(10),
                ..ProxySettings::default()
            },
            wait_for_docker: false,
            h2c: false,
        }
    }
}

pub struct Limpet {
    pub addr: SocketAddr,
    /// The file limpet watches; tests edit it to reconfigure.
    pub file: PathBuf,
    dir: PathBuf,
    table: SharedTable,
    shutdown: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<()>>,
    watcher: JoinHandle<()>,
}

pub async fn spawn_limpet_with_file(toml: &str) -> Limpet {
    spawn_limpet(toml, Options::default()).await
}

pub async fn spawn_limpet(toml: &str, options: Options) -> Limpet {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "limpet-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("create the test's directory");
    let path = dir.join("limpet.toml");
    std::fs::write(&path, toml).expect("write the file");

    let mut expected = vec![Provider::File];
    if options.wait_for_docker {
        expected.push(Provider::Docker);
    }
    let publisher = Arc::new(Publisher::new(expected, StickyGlobals::default()));
    let (specs, text) =
        file::read_initial(&path).unwrap_or_else(|e| panic!("the test's file is bad: {e}"));
    publisher.update(Provider::File, specs);
    let watcher = tokio::spawn(file::watch(
        path.clone(),
        POLL,
        Arc::clone(&publisher),
        text,
    ));

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind limpet's port");
    let addr = listener.local_addr().expect("limpet's address");
    let proxy = Arc::new(Proxy::new(publisher.table(), options.proxy));
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let workers = super::two_workers();
    let transport = proxy::Transport::Plain { h2c: options.h2c };
    let served = tokio::spawn(proxy::serve_with(
        listener,
        transport,
        proxy,
        workers,
        async move {
            let _ = shutdown_rx.await;
        },
    ));
    Limpet {
        addr,
        file: path,
        dir,
        table: publisher.table(),
        shutdown: Some(shutdown),
        served: Some(served),
        watcher,
    }
}

impl Limpet {
    /// A new client connection.
    pub async fn connect(&self) -> Conn {
        Conn::open(self.addr).await
    }

    /// One request on a fresh connection.
    pub async fn send(&self, req: Req) -> Reply {
        self.connect().await.send(req).await
    }

    /// `GET target` with the default Host, on a fresh connection.
    pub async fn get(&self, target: &str) -> Reply {
        self.send(Req::get(target)).await
    }

    /// Replaces the file as editors and Docker configs do (write aside, rename over), without
    /// waiting for limpet to notice.
    pub fn write_file(&self, toml: &str) {
        let aside = self.dir.join("limpet.toml.new");
        std::fs::write(&aside, toml).expect("write the new file");
        std::fs::rename(&aside, &self.file).expect("replace the file");
    }

    /// Replaces the file and waits until limpet has published a table built from it. Only
    /// for edits that change the configuration: an unchanged one publishes nothing.
    pub async fn reload(&self, toml: &str) {
        let before = self.table.load_full();
        self.write_file(toml);
        eventually("limpet to publish the edited file", || {
            !Arc::ptr_eq(&before, &self.table.load_full())
        })
        .await;
    }

    /// The table limpet serves right now; compare with `Arc::ptr_eq` to tell whether a new
    /// one was published.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Fires the shutdown future `proxy::serve` was given.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits until `proxy::serve` has returned (after [`Limpet::begin_shutdown`]).
    pub async fn stopped(&mut self) {
        let served = self.served.take().expect("not awaited before");
        within("limpet to stop serving", served)
            .await
            .expect("serve did not panic");
    }
}

impl Drop for Limpet {
    fn drop(&mut self) {
        self.watcher.abort();
        if let Some(served) = &self.served {
            served.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
