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
//! ```
//!
//! SIGTERM or SIGINT stops it at once for new connections and lets requests in flight finish,
//! so `docker service scale` and rolling updates never wait for the stop grace period.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{header, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "whoami",
    about = "Answers every HTTP request with the name of the host that served it."
)]
struct Args {
    /// Port to listen on, on every IPv4 interface.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    port: u16,
}

/// How long requests in flight may take to finish once a stop signal arrives. Well under
/// Swarm's default stop grace period (10 s), so a busy task still exits on its own.
const DRAIN: Duration = Duration::from_secs(5);

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let name: Arc<str> = hostname().into();
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
        let service = service_fn(move |req| {
            let body = answer(&name, &req);
            async move { Ok::<_, Infallible>(body) }
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
    let mut response = Response::new(Full::new(Bytes::from(text)));
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
