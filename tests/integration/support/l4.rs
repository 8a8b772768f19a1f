//! What the `l4` tests need: limpet's layer-4 listeners in-process, fed through the file
//! provider, and real peers on 127.0.0.1 (TCP echo, recording and greeting backends, a
//! small RESP responder, UDP echo), plus TLS ClientHello bytes for passthrough.
#![allow(dead_code)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use limpet::discovery::{file, Publisher};
use limpet::l4::{self, L4Settings, Reserved};
use limpet::table::spec::Provider;
use limpet::table::StickyGlobals;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// The bound on anything a test waits for: reached only when something is broken, never by
/// a slow machine.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How often the file is polled: short, so that edits show up fast.
const POLL: Duration = Duration::from_millis(50);

pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(output) => output,
        Err(_) => panic!("gave up after {PATIENCE:?} waiting for {what}"),
    }
}

/// A port nothing listens on right now, for a front port or a dead server. Another process
/// could take it before limpet does; on a test machine that race is remote.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free tcp port")
        .port()
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("a free udp port")
        .port()
}

/// limpet's publisher, file watcher and L4 listener manager, bound on 127.0.0.1.
pub struct Limpet {
    pub file: PathBuf,
    /// The published table, to see which servers are in rotation.
    pub table: limpet::discovery::SharedTable,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Limpet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub struct Options {
    pub udp_max_sessions: usize,
    pub max_tcp_connections: usize,
    pub reserved: Vec<Reserved>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            udp_max_sessions: 1024,
            max_tcp_connections: 1024,
            reserved: Vec::new(),
        }
    }
}

pub async fn limpet(toml: &str) -> Limpet {
    limpet_with(toml, Options::default()).await
}

pub async fn limpet_with(toml: &str, options: Options) -> Limpet {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "limpet-l4-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("create the test's directory");
    let path = dir.join("limpet.toml");
    std::fs::write(&path, toml).expect("write the file");
    let publisher = Arc::new(Publisher::new([Provider::File], StickyGlobals::default()));
    let (specs, text) =
        file::read_initial(&path).unwrap_or_else(|e| panic!("the test's file is bad: {e}"));
    publisher.update(Provider::File, specs);
    let watcher = tokio::spawn(file::watch(
        path.clone(),
        POLL,
        Arc::clone(&publisher),
        text,
    ));
    let manager = tokio::spawn(l4::supervise(
        publisher.table(),
        L4Settings {
            address: Ipv4Addr::LOCALHOST.into(),
            udp_max_sessions: options.udp_max_sessions,
            max_tcp_connections: options.max_tcp_connections,
        },
        options.reserved,
    ));
    let health = tokio::spawn(limpet::health::supervise(publisher.table(), "test".into()));
    Limpet {
        file: path,
        table: publisher.table(),
        tasks: vec![watcher, manager, health],
    }
}

impl Limpet {
    /// Replaces the file; the watcher picks it up within a poll.
    pub fn rewrite(&self, toml: &str) {
        // Write then rename, so the watcher never reads half a file.
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, toml).expect("write the file");
        std::fs::rename(&tmp, &self.file).expect("replace the file");
    }
}

/// `[{ address = "…" }, …]` for the file provider.
pub fn servers(addrs: &[SocketAddr]) -> String {
    let items: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!("[{}]", items.join(", "))
}

pub fn front(port: u16) -> SocketAddr {
    (Ipv4Addr::LOCALHOST, port).into()
}

/// Connects once limpet listens on `port` (the manager binds within a poll of the table).
pub async fn connect_when_listening(port: u16) -> TcpStream {
    within(&format!("limpet to listen on tcp {port}"), async {
        loop {
            if let Ok(s) = TcpStream::connect(front(port)).await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Waits until connections to `port` are refused: limpet released it.
pub async fn until_refused(port: u16) {
    within(&format!("limpet to release tcp {port}"), async {
        while TcpStream::connect(front(port)).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Reads everything until the peer closes (or resets) and returns it.
pub async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    within("the peer to close", async {
        let _ = stream.read_to_end(&mut out).await;
    })
    .await;
    out
}

/// A task that serves until the test ends.
pub struct Backend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tcp_backend<F, Fut>(serve: F) -> Backend
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tcp_backend_on((Ipv4Addr::LOCALHOST, 0).into(), serve).await
}

async fn tcp_backend_on<F, Fut>(addr: SocketAddr, serve: F) -> Backend
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await.expect("bind a backend");
    let addr = listener.local_addr().expect("backend address");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    Backend { addr, task }
}

/// Echoes every byte; on the client's FIN, shuts its own write side (so the client sees
/// the end of the echo only if the half-close made it through).
pub async fn tcp_echo() -> Backend {
    tcp_backend(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// Says `<name>\n` as soon as a connection opens (a server that speaks first), then echoes.
pub async fn tcp_greeter(name: &'static str) -> Backend {
    tcp_greeter_on(name, (Ipv4Addr::LOCALHOST, 0).into()).await
}

/// A greeter on a given address: the same server back after it went away.
pub async fn tcp_greeter_on(name: &'static str, addr: SocketAddr) -> Backend {
    tcp_backend_on(addr, move |mut s| async move {
        if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
            return;
        }
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await
}

/// Reads until the client half-closes, records the bytes, answers `<name>` and closes.
pub struct Recorder {
    pub backend: Backend,
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
}

pub async fn tcp_recorder(name: &'static str) -> Recorder {
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let log = Arc::clone(&received);
    let backend = tcp_backend(move |mut s| {
        let log = Arc::clone(&log);
        async move {
            let mut bytes = Vec::new();
            if s.read_to_end(&mut bytes).await.is_err() {
                return;
            }
            log.lock().unwrap().push(bytes);
            let _ = s.write_all(name.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    })
    .await;
    Recorder { backend, received }
}

impl Recorder {
    /// What each non-empty connection sent, in order.
    pub fn sessions(&self) -> Vec<Vec<u8>> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|b| !b.is_empty())
            .cloned()
            .collect()
    }
}

/// A Redis-protocol server enough for the Alibaba example: PING, SET, GET, INCR, with
/// pipelining, over one shared keyspace.
pub async fn resp_server() -> Backend {
    let store: Arc<Mutex<std::collections::HashMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    tcp_backend(move |s| {
        let store = Arc::clone(&store);
        async move {
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            while let Some(command) = read_resp_command(&mut r).await {
                let reply = execute(&store, &command);
                if w.write_all(&reply).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// One RESP array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), as clients send
/// commands; `None` at the end of the stream or on anything else.
async fn read_resp_command<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Option<Vec<Vec<u8>>> {
    let mut line = String::new();
    r.read_line(&mut line).await.ok()?;
    let count: usize = line.strip_prefix('*')?.trim_end().parse().ok()?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        r.read_line(&mut line).await.ok()?;
        let len: usize = line.strip_prefix('$')?.trim_end().parse().ok()?;
        let mut arg = vec![0; len + 2];
        r.read_exact(&mut arg).await.ok()?;
        arg.truncate(len);
        args.push(arg);
    }
    Some(args)
}

fn execute(
    store: &Mutex<std::collections::HashMap<Vec<u8>, Vec<u8>>>,
    command: &[Vec<u8>],
) -> Vec<u8> {
    let mut store = store.lock().unwrap();
    let name = command
        .first()
        .map(|c| c.to_ascii_uppercase())
        .unwrap_or_default();
    match (name.as_slice(), command.len()) {
        (b"PING", 1) => b"+PONG\r\n".to_vec(),
        (b"SET", 3) => {
            store.insert(command[1].clone(), command[2].clone());
            b"+OK\r\n".to_vec()
        }
        (b"GET", 2) => match store.get(&command[1]) {
            Some(v) => bulk(v),
            None => b"$-1\r\n".to_vec(),
        },
        (b"INCR", 2) => {
            let n = store
                .get(&command[1])
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                .unwrap_or(0)
                + 1;
            store.insert(command[1].clone(), n.to_string().into_bytes());
            format!(":{n}\r\n").into_bytes()
        }
        _ => b"-ERR unknown command\r\n".to_vec(),
    }
}

fn bulk(v: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", v.len()).into_bytes();
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
    out
}

/// A RESP command as a client writes it.
pub fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(&bulk(a.as_bytes()));
    }
    out
}

/// Reads one RESP reply line (`+PONG`, `:3`, `$-1`) or bulk string, as text.
pub async fn read_resp_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
    within("a RESP reply", async {
        let mut line = String::new();
        r.read_line(&mut line).await.expect("read a reply");
        if let Some(len) = line
            .strip_prefix('$')
            .and_then(|l| l.trim_end().parse::<usize>().ok())
        {
            let mut v = vec![0; len + 2];
            r.read_exact(&mut v).await.expect("read a bulk reply");
            v.truncate(len);
            return String::from_utf8(v).expect("utf-8");
        }
        line.trim_end().to_owned()
    })
    .await
}

/// Answers every datagram with `<name>:<datagram>`.
pub async fn udp_echo(name: &'static str) -> Backend {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind a udp backend");
    let addr = socket.local_addr().expect("udp backend address");
    let task = tokio::spawn(async move {
        let mut buf = vec![0; 65_535];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    Backend { addr, task }
}

/// A client socket on 127.0.0.1, connected to limpet's UDP front port.
pub async fn udp_client(port: u16) -> UdpSocket {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind a udp client");
    s.connect(front(port))
        .await
        .expect("connect the udp client");
    s
}

/// Sends `payload` and waits up to `wait` for a reply; `None` if none came (UDP may drop).
pub async fn udp_ask(client: &UdpSocket, payload: &str, wait: Duration) -> Option<String> {
    client.send(payload.as_bytes()).await.ok()?;
    let mut buf = vec![0; 65_535];
    match tokio::time::timeout(wait, client.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

/// Asks until a reply comes: the first datagrams may arrive before limpet listens.
pub async fn udp_ask_until_answered(client: &UdpSocket, payload: &str) -> String {
    within("a udp reply through limpet", async {
        loop {
            if let Some(r) = udp_ask(client, payload, Duration::from_millis(200)).await {
                return r;
            }
        }
    })
    .await
}

/// A minimal TLS ClientHello record naming `name` (no SNI when `None`). Handshake bytes
/// only, no TLS library: limpet must route it without terminating anything.
pub fn client_hello(name: Option<&str>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x42; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    let mut extensions = Vec::new();
    if let Some(name) = name {
        let n = name.as_bytes();
        let list_len = n.len() + 3;
        extensions.extend_from_slice(&[0, 0]);
        extensions.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
        extensions.extend_from_slice(&(list_len as u16).to_be_bytes());
        extensions.push(0);
        extensions.extend_from_slice(&(n.len() as u16).to_be_bytes());
        extensions.extend_from_slice(n);
    }
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// A child process killed when the test ends, however it ends.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test CA and server certificates of `tests/testdata/l4` (test-only keys).
mod pki {
    pub const CA: &[u8] = include_bytes!("../../testdata/l4/ca.pem");
    pub const A_CERT: &[u8] = include_bytes!("../../testdata/l4/a.pem");
    pub const A_KEY: &[u8] = include_bytes!("../../testdata/l4/a.key");
    pub const B_CERT: &[u8] = include_bytes!("../../testdata/l4/b.pem");
    pub const B_KEY: &[u8] = include_bytes!("../../testdata/l4/b.key");
}

fn tls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A real TLS server for `<name>.example.org` (`name` is `a` or `b`): completes the
/// handshake with its own certificate, says `<name>` over TLS and closes.
pub async fn tls_backend(name: &'static str) -> Backend {
    let (cert, key) = match name {
        "a" => (pki::A_CERT, pki::A_KEY),
        "b" => (pki::B_CERT, pki::B_KEY),
        _ => panic!("no test certificate for {name}"),
    };
    let chain = rustls_pemfile::certs(&mut &cert[..])
        .collect::<Result<Vec<_>, _>>()
        .expect("the test certificate");
    let key = rustls_pemfile::private_key(&mut &key[..])
        .expect("the test key")
        .expect("a key");
    let config = rustls::ServerConfig::builder_with_provider(tls_provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tcp_backend(move |s| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut tls) = acceptor.accept(s).await {
                let _ = tls.write_all(name.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        }
    })
    .await
}

/// Connects to limpet's `port` as a TLS client of `server_name`, trusting only the test CA,
/// and returns what the server said. The handshake succeeding proves the client spoke
/// with the backend itself: limpet holds no certificate for these names.
pub async fn tls_ask(port: u16, server_name: &str) -> std::io::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pki::CA[..]) {
        roots.add(cert?).expect("the test CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(tls_provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name =
        rustls::pki_types::ServerName::try_from(server_name.to_owned()).expect("a server name");
    let tcp = connect_when_listening(port).await;
    let mut tls = within(
        "the TLS handshake through limpet",
        connector.connect(name, tcp),
    )
    .await?;
    let mut said = String::new();
    within("the TLS server's answer", tls.read_to_string(&mut said)).await?;
    Ok(said)
}
