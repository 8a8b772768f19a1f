//! limpet run in-process from its parts, on a listener bound to port 0: the file provider
//! (polled every 50 ms), the health supervisor, and the proxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use limpet::discovery::{self, Publisher};
use limpet::proxy::{self, ProxySettings};
use limpet::sticky::Keyring;
use limpet::table::spec::{CookieMode, Provider};
use limpet::table::{StickyGlobals, Table};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::backend::Backend;
use super::client::Client;

pub const POLL: Duration = Duration::from_millis(50);

/// A directory of its own per test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "limpet-itest2-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replaces a file in one step, so the watcher never reads half an edit.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

#[derive(Clone)]
pub struct Options {
    /// `--sticky.mode`: for services whose cookie names no mode.
    pub mode: CookieMode,
    /// `--sticky.ttl`.
    pub ttl: Option<Duration>,
    /// `--sticky.keyfile`, loaded.
    pub keyring: Option<Arc<Keyring>>,
    /// Short dial timeout by default, so a test never waits on a connect.
    pub proxy: ProxySettings,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: CookieMode::Url,
            ttl: None,
            keyring: None,
            proxy: ProxySettings {
                dial_timeout: Duration::from_secs(2),
                response_header_timeout: Duration::from_secs(15),
                idle_conn_timeout: Duration::from_secs(90),
                grace_period: Duration::from_secs(1),
                ..ProxySettings::default()
            },
        }
    }
}

impl Options {
    /// Sealed cookies with the key file at `keys`.
    pub fn sealed(keys: &Path) -> Self {
        Self {
            keyring: Some(Arc::new(Keyring::load(keys).expect("load key file"))),
            ..Self::default()
        }
    }
}

pub struct Limpet {
    /// The entrypoint.
    pub addr: SocketAddr,
    /// The file it watches; [`Limpet::reload`] rewrites it.
    pub file: PathBuf,
    /// For looking at the published table: which servers are in rotation.
    pub publisher: Arc<Publisher>,
    /// A client for the entrypoint.
    pub client: Client,
    /// File watcher, health supervisor and proxy; stopped when dropped.
    tasks: Vec<JoinHandle<()>>,
    /// The file's directory when this instance owns it.
    _dir: Option<TempDir>,
}

impl Drop for Limpet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Limpet {
    /// limpet serving `toml` from a file of its own.
    pub async fn start(toml: &str) -> Self {
        Self::start_with(toml, Options::default()).await
    }

    pub async fn start_with(toml: &str, options: Options) -> Self {
        let dir = TempDir::new();
        let file = dir.path("limpet.toml");
        write_atomically(&file, toml);
        let mut l = Self::on_file(&file, options).await;
        l._dir = Some(dir);
        l
    }

    /// limpet serving an existing file, which other instances may share.
    pub async fn on_file(file: &Path, options: Options) -> Self {
        let (specs, text) =
            discovery::file::read_initial(file).unwrap_or_else(|e| panic!("bad test file: {e}"));
        let publisher = Arc::new(Publisher::new(
            [Provider::File],
            StickyGlobals {
                mode: options.mode,
                ttl: options.ttl,
                keyring: options.keyring.clone(),
            },
        ));
        publisher.update(Provider::File, specs);
        let mut tasks = vec![
            tokio::spawn(discovery::file::watch(
                file.to_owned(),
                POLL,
                Arc::clone(&publisher),
                text,
            )),
            tokio::spawn(limpet::health::supervise(publisher.table(), "test".into())),
        ];
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind limpet");
        let addr = listener.local_addr().expect("limpet addr");
        let proxy = Arc::new(proxy::Proxy::new(publisher.table(), options.proxy.clone()));
        tasks.push(tokio::spawn(proxy::serve(
            listener,
            proxy,
            std::future::pending::<()>(),
        )));
        Self {
            addr,
            file: file.to_owned(),
            publisher,
            client: Client::new(addr),
            tasks,
            _dir: None,
        }
    }

    pub fn table(&self) -> Arc<Table> {
        self.publisher.table().load_full()
    }

    /// Rewrites the file and waits until this limpet has published a table built from it.
    pub async fn reload(&self, toml: &str) {
        reload_all(&[self], toml).await;
    }
}

/// Rewrites the file the given instances share and waits until each has published a new
/// table.
pub async fn reload_all(instances: &[&Limpet], toml: &str) {
    let before: Vec<Arc<Table>> = instances.iter().map(|l| l.table()).collect();
    write_atomically(&instances[0].file, toml);
    let deadline = Instant::now() + Duration::from_secs(10);
    for (l, old) in instances.iter().zip(before) {
        while Arc::ptr_eq(&l.table(), &old) {
            assert!(
                Instant::now() < deadline,
                "limpet did not publish the edited file (is the edit valid and different?)"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `servers = [...]` entries for these backends, each with extra fields (e.g. `weight = 3`).
pub fn servers(list: &[(&Backend, &str)]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|(b, extra)| {
            if extra.is_empty() {
                format!("{{ url = \"{}\" }}", b.url())
            } else {
                format!("{{ url = \"{}\", {extra} }}", b.url())
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}
