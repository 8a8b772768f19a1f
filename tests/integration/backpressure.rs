//! The memory budget under a flood (issue 6): the real binary, fed large uploads towards a
//! backend that does not read them yet, must keep its memory bounded by refusing new work at
//! 75 % of the budget, keep serving small requests while the budget has room, recover by
//! itself, and lose none of the uploads it accepted.
//!
//! Evidence comes from two places: the binary's RSS (/proc/<pid>/status) sampled during the
//! flood, and the budget counters at `/api/stats`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::harness::limpet::{write_atomically, TempDir};
use crate::harness::process::free_port;
use crate::harness::{eventually, Process};

const MIB: u64 = 1 << 20;
/// Small enough that a handful of stuck uploads fill it.
const BUDGET: u64 = MIB / 2;
/// Far more than the budget and more than loopback's socket buffers absorb, so an upload the
/// backend does not read stays stuck inside limpet's budget rather than in the kernel.
const UPLOAD: u64 = 32 * MIB;
const CHUNK: usize = 64 * 1024;
/// Bounds the flood: the budget must be past 75 % long before this many uploads.
const MAX_UPLOADS: usize = 48;

/// A backend that holds every upload unread until the gate opens, then reads it whole and
/// answers with the number of bytes it received.
struct GatedBackend {
    addr: SocketAddr,
    gate: watch::Sender<bool>,
    /// Bytes received in uploads answered so far.
    received: Arc<AtomicU64>,
}

impl GatedBackend {
    async fn start() -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        // Accepted sockets inherit this: a small receive window keeps unread uploads in
        // limpet, where the budget can see them, instead of in this socket.
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener: TcpListener = socket.listen(1024).unwrap();
        let addr = listener.local_addr().unwrap();
        let (gate, open) = watch::channel(false);
        let received = Arc::new(AtomicU64::new(0));
        let total = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let open = open.clone();
                let total = Arc::clone(&total);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let mut open = open.clone();
                        let total = Arc::clone(&total);
                        async move {
                            if req.uri().path() == "/upload" {
                                let _ = open.wait_for(|o| *o).await;
                            }
                            let mut body = req.into_body();
                            let mut n = 0u64;
                            while let Some(frame) = body.frame().await {
                                if let Ok(data) = frame?.into_data() {
                                    n += data.len() as u64;
                                }
                            }
                            total.fetch_add(n, Ordering::Relaxed);
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(
                                n.to_string(),
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            gate,
            received,
        }
    }

    fn open(&self) {
        self.gate.send_replace(true);
    }
}

/// One HTTP/1.1 connection to limpet with a small send buffer, so that the client does not
/// park megabytes in its own socket either.
async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<UploadBody> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(64 * 1024).unwrap();
    let stream = socket.connect(addr).await.expect("connect to limpet");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake with limpet");
    tokio::spawn(conn);
    sender
}

type UploadBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// `UPLOAD` bytes, produced as they are sent.
fn upload_body() -> UploadBody {
    let chunks = (UPLOAD as usize).div_ceil(CHUNK);
    let stream = futures_util::stream::iter(
        (0..chunks).map(|_| Ok(Frame::data(Bytes::from_static(&[b'x'; CHUNK])))),
    );
    BodyExt::boxed(StreamBody::new(stream))
}

fn upload_request() -> Request<UploadBody> {
    Request::post("/upload")
        .header("host", "app")
        .header("content-length", UPLOAD)
        .body(upload_body())
        .unwrap()
}

fn empty() -> UploadBody {
    BodyExt::boxed(Empty::new())
}

#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    limit: u64,
    used: u64,
    peak: u64,
    refused: u64,
}

async fn stats(web: SocketAddr) -> Memory {
    let mut sender = connect(web).await;
    let req = Request::get("/api/stats")
        .header("host", "limpet")
        .body(empty())
        .unwrap();
    let body = sender.send_request(req).await.expect("GET /api/stats");
    let bytes = body.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("stats are JSON");
    let m = &json["memory"];
    let field = |name: &str| {
        m[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no {name}: {json}"))
    };
    Memory {
        limit: field("limit"),
        used: field("used"),
        peak: field("peak"),
        refused: field("refused"),
    }
}

/// The budget's use once it stops moving: stuck uploads settle within moments.
async fn settled(web: SocketAddr) -> Memory {
    let mut last = stats(web).await;
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = stats(web).await;
        if now.used == last.used {
            return now;
        }
        last = now;
    }
}

async fn small_get(addr: SocketAddr) -> Response<Incoming> {
    let mut sender = connect(addr).await;
    let req = Request::get("/small")
        .header("host", "app")
        .body(empty())
        .unwrap();
    sender.send_request(req).await.expect("small GET answered")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_uploads_is_held_to_the_budget_and_every_accepted_one_arrives() {
    let backend = GatedBackend::start().await;
    let dir = TempDir::new();
    let file = dir.path("limpet.toml");
    write_atomically(
        &file,
        &format!(
            "[services.app]\nrule = \"PathPrefix:/\"\nservers = [{{ url = \"http://{}\" }}]\n",
            backend.addr
        ),
    );
    let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let limpet = Process::start(&[
        "--file.filename",
        file.to_str().unwrap(),
        "--web",
        "--web.address",
        &web.to_string(),
        "--memory.budget",
        &BUDGET.to_string(),
        "--memory.maxbody",
        &(64 * MIB).to_string(),
    ])
    .await;
    let pid = limpet.pid();

    // Warm up the paths the flood will use, then take the baseline.
    for _ in 0..20 {
        assert_eq!(small_get(limpet.addr).await.status(), StatusCode::OK);
    }
    assert_eq!(stats(web).await.limit, BUDGET);
    let baseline = rss_kib(pid);

    let sampling = Arc::new(AtomicBool::new(true));
    let peak_rss = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let (sampling, peak_rss) = (Arc::clone(&sampling), Arc::clone(&peak_rss));
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak_rss.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // Uploads one at a time until the budget passes the admission threshold; while it has
    // room, small requests must keep being served.
    let mut accepted = Vec::new();
    let mut served_while_room = 0;
    let full = loop {
        assert!(
            accepted.len() < MAX_UPLOADS,
            "{MAX_UPLOADS} stuck uploads never filled a {BUDGET}-byte budget: {:?}",
            stats(web).await
        );
        let mut sender = connect(limpet.addr).await;
        let req = upload_request();
        accepted.push(tokio::spawn(async move { sender.send_request(req).await }));
        let now = settled(web).await;
        if now.used * 100 >= now.limit * 75 {
            break now;
        }
        if now.used * 100 < now.limit * 50 {
            // Clearly below the threshold, so this must be served.
            let reply = small_get(limpet.addr).await;
            assert_eq!(reply.status(), StatusCode::OK, "budget has room: {now:?}");
            served_while_room += 1;
        }
    };
    assert!(
        served_while_room > 0,
        "the first stuck upload alone filled the budget"
    );

    // Past the threshold: new work is refused quickly and told when to come back, uploads
    // and small requests alike.
    let refused_before = full.refused;
    let reply = small_get(limpet.addr).await;
    assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE, "{full:?}");
    assert!(reply.headers().contains_key("retry-after"));
    let mut sender = connect(limpet.addr).await;
    let reply = sender
        .send_request(upload_request())
        .await
        .expect("refused upload");
    assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.headers().contains_key("retry-after"));
    let during = stats(web).await;
    assert!(during.refused >= refused_before + 2, "{during:?}");
    assert!(
        during.peak <= during.limit,
        "the budget was exceeded: {during:?}"
    );

    // The backend starts reading: every accepted upload arrives whole.
    backend.open();
    let count = accepted.len();
    for (i, upload) in accepted.into_iter().enumerate() {
        let reply = tokio::time::timeout(Duration::from_secs(60), upload)
            .await
            .unwrap_or_else(|_| panic!("upload {i} never finished"))
            .unwrap()
            .unwrap_or_else(|e| panic!("upload {i} failed: {e}"));
        assert_eq!(reply.status(), StatusCode::OK, "upload {i}");
        let body = reply.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, UPLOAD.to_string().as_bytes(), "upload {i} lost bytes");
    }
    assert_eq!(
        backend.received.load(Ordering::Relaxed),
        count as u64 * UPLOAD
    );
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();

    // And limpet recovers on its own.
    eventually("the budget to drain", Duration::from_secs(10), || async {
        stats(web).await.used == 0
    })
    .await;
    assert_eq!(small_get(limpet.addr).await.status(), StatusCode::OK);
    let after = stats(web).await;
    assert!(after.peak <= after.limit, "{after:?}");

    let offered = (count as u64 + 1) * UPLOAD;
    let grown = peak_rss.load(Ordering::Relaxed).saturating_sub(baseline) * 1024;
    eprintln!(
        "flood: {count} uploads of {} MiB accepted ({} MiB offered), budget {} KiB, peak in use {} KiB, \
         {} requests refused; RSS {baseline} KiB before, +{} KiB at most during the flood",
        UPLOAD / MIB,
        offered / MIB,
        BUDGET / 1024,
        after.peak / 1024,
        after.refused,
        grown / 1024,
    );
    // What limpet holds beyond the budget is per-connection buffers (a few tens of KiB for
    // each of these connections) and allocator slack; far below what was offered.
    assert!(
        grown < BUDGET + 16 * MIB,
        "RSS grew by {grown} bytes with a {BUDGET}-byte budget while {offered} bytes were offered"
    );
}
