//! The status page behind `--web`: the current routing table as text (`/`) and as JSON
//! (`/api`, `/api/providers`), the memory budget's counters (`/api/stats`), and `/ping`
//! for health checks. Read-only; it loads the
//! table like any request does.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use std::sync::Arc;

use crate::discovery::SharedTable;
use crate::proxy::{Budget, Workers};

pub async fn serve(
    listener: TcpListener,
    table: SharedTable,
    budget: Arc<Budget>,
    workers: Arc<Workers>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "status page: accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let table = table.clone();
        let budget = Arc::clone(&budget);
        let workers = Arc::clone(&workers);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let stats = Stats {
                    budget: &budget,
                    workers: &workers,
                };
                let page = page(&table, stats, &req);
                async move { Ok::<_, Infallible>(page) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What `/api/stats` reports besides the table.
#[derive(Clone, Copy)]
struct Stats<'a> {
    budget: &'a Budget,
    workers: &'a Workers,
}

fn page(table: &SharedTable, stats: Stats<'_>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    let table = table.load();
    match req.uri().path() {
        "/" => reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            format!("limpet {}\n\n{}\n", env!("CARGO_PKG_VERSION"), table),
        ),
        "/api" | "/api/providers" | "/api/rawdata" => reply(
            StatusCode::OK,
            "application/json",
            format!("{:#}\n", table.to_json()),
        ),
        "/ping" => reply(StatusCode::OK, "text/plain", "OK".into()),
        "/api/stats" => reply(
            StatusCode::OK,
            "application/json",
            format!(
                "{:#}\n",
                serde_json::json!({
                    "memory": stats.budget.stats(),
                    // Per worker, to see how evenly clients are spread.
                    "workers": { "open_connections": stats.workers.open() },
                })
            ),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "Not Found\n".into()),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}
