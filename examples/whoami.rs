//! `whoami`: the example backend of the Swarm sticky-session tutorial (a stand-in for
//! `jwilder/whoami`), so that limpet's demo and end-to-end tests need no image from a registry.
//!
//! Every request is answered with `I'm <hostname>\n`; in a Swarm task the hostname is the
//! container's short id, so each answer names the container that served it. A request for
//! `/headers`, or with a `headers` query parameter (`/?headers`), also gets the request line and
//! the headers as the backend received them, which shows what the proxy added (`X-Forwarded-*`).
//!
//! ```text
//! whoami [--port 8000]        # or PORT=8000 whoami
//! whoami --tcp-echo 7000 --udp-echo 7001   # also echo TCP and UDP, after the same name
//! whoami --probe              # exit 0 if the whoami on --port answers /healthz with 200
//! whoami --set-health fail    # make the whoami on --port fail /healthz (or `ok` again)
//! ```
//!
//! `?delay=<ms>` answers that much later (at most 10 s), so that requests can be in flight when
//! the container is told to stop. `?bytes=<n>` pads the answer with dots to `n` bytes (at most
//! 16 MiB), for bodies of a chosen size (`scripts/build-pgo.sh` trains on them).
//!
//! `/healthz` answers 200 while healthy and 503 otherwise (`--health fail` starts it failing).
//! `--probe` is a health check that needs no shell, for `HEALTHCHECK CMD ["/whoami",
//! "--probe"]` in an image `FROM scratch`; `--set-health` is run with `docker exec`, so a test
//! can turn one container's health check red or green.
//!
//! SIGTERM or SIGINT stops it at once for new connections and lets requests in flight finish,
//! so `docker service scale` and rolling updates never wait for the stop grace period.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};

#[derive(Debug, Parser)]
#[command(
    name = "whoami",
    about = "Answers every HTTP request with the name of the host that served it."
)]
struct Args {
    /// Port to listen on, on every IPv4 interface.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    port: u16,
    /// Also accept TCP on this port: each connection gets `I'm <hostname>\n`, then its own
    /// bytes back until it closes its side.
    #[arg(long, env = "WHOAMI_TCP_ECHO")]
    tcp_echo: Option<u16>,
    /// Also answer UDP on this port: each datagram comes back after `I'm <hostname>: `.
    #[arg(long, env = "WHOAMI_UDP_ECHO")]
    udp_echo: Option<u16>,
    /// What `/healthz` says at start.
    #[arg(long, env = "WHOAMI_HEALTH", value_enum, default_value_t = Health::Ok)]
    health: Health,
    /// Do not serve: ask the whoami on 127.0.0.1:--port for `/healthz` and exit 0 on a 200,
    /// 1 otherwise.
    #[arg(long, conflicts_with = "set_health")]
    probe: bool,
    /// Do not serve: tell the whoami on 127.0.0.1:--port what `/healthz` should say.
    #[arg(long, value_enum)]
    set_health: Option<Health>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Health {
    Ok,
    Fail,
}

/// How long requests in flight may take to finish once a stop signal arrives. Well under
/// Swarm's default stop grace period (10 s), so a busy task still exits on its own.
const DRAIN: Duration = Duration::from_secs(5);

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if args.probe {
        std::process::exit(match local_request(args.port, "GET", "/healthz") {
            Ok(200) => 0,
            Ok(status) => {
                eprintln!("whoami: /healthz answered {status}");
                1
            }
            Err(e) => {
                eprintln!("whoami: /healthz: {e}");
                1
            }
        });
    }
    if let Some(health) = args.set_health {
        let path = match health {
            Health::Ok => "/healthz/ok",
            Health::Fail => "/healthz/fail",
        };
        std::process::exit(match local_request(args.port, "POST", path) {
            Ok(204) => 0,
            Ok(status) => {
                eprintln!("whoami: {path} answered {status}");
                1
            }
            Err(e) => {
                eprintln!("whoami: {path}: {e}");
                1
            }
        });
    }
    let name: Arc<str> = hostname().into();
    let healthy = Arc::new(AtomicBool::new(args.health == Health::Ok));
    if let Some(port) = args.tcp_echo {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await?;
        tokio::spawn(tcp_echo(listener, Arc::clone(&name)));
    }
    if let Some(port) = args.udp_echo {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).await?;
        tokio::spawn(udp_echo(socket, Arc::clone(&name)));
    }
    let address = SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.port));
    let listener = TcpListener::bind(address).await?;
    eprintln!("whoami: {name} listening on {address}");

    let graceful = GracefulShutdown::new();
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    eprintln!("whoami: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let name = Arc::clone(&name);
        let healthy = Arc::clone(&healthy);
        let service = service_fn(move |req| {
            let body = health(&healthy, &req).unwrap_or_else(|| answer(&name, &req));
            let delay = delay(&req);
            async move {
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, Infallible>(body)
            }
        });
        let connection = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away mid-request is its own business, not an error of ours.
            let _ = connection.await;
        });
    }
    drop(listener);
    eprintln!("whoami: stopping; letting requests in flight finish");
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("whoami: requests still open after {DRAIN:?}; exiting anyway");
    }
    Ok(())
}

/// A `delay=<ms>` query parameter (at most 10 s): a slow request, to have requests in flight
/// when a stop signal comes.
fn delay(req: &Request<Incoming>) -> Option<Duration> {
    let ms: u64 = query_number(req, "delay")?;
    Some(Duration::from_millis(ms.min(10_000)))
}

/// A `bytes=<n>` query parameter (at most 16 MiB): the size to pad the answer to.
fn padded_size(req: &Request<Incoming>) -> Option<usize> {
    Some(query_number::<usize>(req, "bytes")?.min(16 << 20))
}

fn query_number<T: std::str::FromStr>(req: &Request<Incoming>, key: &str) -> Option<T> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}

/// `/healthz` and its two switches; `None` for every other request.
fn health(healthy: &AtomicBool, req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let status = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") if healthy.load(Ordering::Relaxed) => StatusCode::OK,
        (&Method::GET, "/healthz") => StatusCode::SERVICE_UNAVAILABLE,
        (&Method::POST, "/healthz/ok") => {
            healthy.store(true, Ordering::Relaxed);
            StatusCode::NO_CONTENT
        }
        (&Method::POST, "/healthz/fail") => {
            healthy.store(false, Ordering::Relaxed);
            StatusCode::NO_CONTENT
        }
        _ => return None,
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Some(response)
}

/// One HTTP/1.0 request to the whoami on this host, for `--probe` and `--set-health`;
/// blocking and bounded, as a health check must be.
fn local_request(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut head = Vec::new();
    stream.read_to_end(&mut head)?;
    let line = String::from_utf8_lossy(&head);
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))
}

async fn tcp_echo(listener: TcpListener, name: Arc<str>) {
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("whoami: TCP echo accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let greeting = format!("I'm {name}\n");
        tokio::spawn(async move {
            let (mut reader, mut writer) = stream.split();
            if writer.write_all(greeting.as_bytes()).await.is_ok()
                && tokio::io::copy(&mut reader, &mut writer).await.is_ok()
            {
                // The peer closed its side: close ours, so a half-close is seen through.
                let _ = writer.shutdown().await;
            }
        });
    }
}

async fn udp_echo(socket: UdpSocket, name: Arc<str>) {
    let mut buffer = vec![0u8; 65_536];
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((n, peer)) => {
                let mut reply = format!("I'm {name}: ").into_bytes();
                reply.extend_from_slice(&buffer[..n]);
                if let Err(e) = socket.send_to(&reply, peer).await {
                    eprintln!("whoami: UDP echo to {peer} failed: {e}");
                }
            }
            Err(e) => {
                eprintln!("whoami: UDP echo receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn answer(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut text = format!("I'm {name}\n");
    if wants_headers(req) {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        text.push_str(&format!(
            "{} {} {:?}\n",
            req.method(),
            target,
            req.version()
        ));
        for (key, value) in req.headers() {
            text.push_str(&format!(
                "{key}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
    }
    let mut body = text.into_bytes();
    if let Some(size) = padded_size(req) {
        body.resize(size, b'.');
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `/headers`, or a `headers` query parameter with or without a value (`?headers`,
/// `?a=1&headers=1`).
fn wants_headers(req: &Request<Incoming>) -> bool {
    req.uri().path() == "/headers"
        || req.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|pair| pair.split('=').next() == Some("headers"))
        })
}

/// The kernel's hostname (what `gethostname(2)` returns, and in a container its short id),
/// falling back to what Docker writes for the container when `/proc` is not mounted.
fn hostname() -> String {
    let from_file = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .or_else(|| from_file("/etc/hostname"))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Completes on the first SIGTERM (what `docker stop` and Swarm send) or SIGINT (Ctrl-C).
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("whoami: cannot watch SIGTERM ({e}); only Ctrl-C stops it");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
