//! A steady, bounded load on limpet's entrypoint while the swarm changes under it: a few
//! client threads, each on its own keep-alive connection, sending idempotent GETs one after
//! the other. Some keep no cookies (each request is balanced anew), others keep the sticky
//! cookie as a browser does. Every answer is counted, so that a test can assert that not one
//! request failed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::swarm::{Entry, KeepAlive, SetCookie};

/// Pause between two requests of one client: bounds the rate (a few hundred requests a
/// second in all) on a two-core machine that also runs Docker and limpet.
const PAUSE: Duration = Duration::from_millis(10);

/// How long one request may take before it counts as an error. Longer than limpet's dial
/// timeout (5 s), so that a request that waited for one and was then retried is seen as slow,
/// not as failed; the worst latency is reported.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Every fourth request of every other client is slow (whoami answers it this much later), so
/// that requests are in flight when a container is told to stop.
const SLOW: &str = "/?delay=150";

/// What one client saw.
#[derive(Debug, Default, Clone)]
pub struct ClientReport {
    pub sticky: bool,
    pub requests: usize,
    /// Of which slow ones.
    pub slow: usize,
    pub statuses: BTreeMap<u16, usize>,
    pub errors: Vec<String>,
    /// Answers that gave a client holding a cookie a different one.
    pub repins: usize,
    /// Answers from another container than the cookie named, without a new cookie.
    pub moved_silently: usize,
    pub worst: Duration,
    pub served_by: BTreeSet<String>,
    pub connections: usize,
}

/// All clients together.
#[derive(Debug, Default)]
pub struct Summary {
    pub clients: Vec<ClientReport>,
    pub took: Duration,
}

impl Summary {
    pub fn requests(&self) -> usize {
        self.clients.iter().map(|c| c.requests).sum()
    }

    pub fn statuses(&self) -> BTreeMap<u16, usize> {
        let mut all = BTreeMap::new();
        for c in &self.clients {
            for (status, n) in &c.statuses {
                *all.entry(*status).or_default() += n;
            }
        }
        all
    }

    pub fn non_2xx(&self) -> usize {
        self.statuses()
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn errors(&self) -> Vec<&str> {
        self.clients
            .iter()
            .flat_map(|c| c.errors.iter().map(String::as_str))
            .collect()
    }

    pub fn worst(&self) -> Duration {
        self.clients
            .iter()
            .map(|c| c.worst)
            .max()
            .unwrap_or_default()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests in {:.1?} ({} client(s)), statuses {:?}, {} connection error(s), worst latency {:.1?}",
            self.requests(),
            self.took,
            self.clients.len(),
            self.statuses(),
            self.errors().len(),
            self.worst()
        )?;
        for (i, c) in self.clients.iter().enumerate() {
            write!(
                f,
                "\n  client {i} ({}): {} requests ({} slow) on {} connection(s), {} re-pin(s), {} silent move(s), worst {:.1?}, served by {:?}",
                if c.sticky { "keeps its cookie" } else { "no cookie" },
                c.requests,
                c.slow,
                c.connections,
                c.repins,
                c.moved_silently,
                c.worst,
                c.served_by
            )?;
            for e in c.errors.iter().take(5) {
                write!(f, "\n    error: {e}")?;
            }
        }
        Ok(())
    }
}

/// The running clients.
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    started: Instant,
    threads: Vec<JoinHandle<ClientReport>>,
}

impl Load {
    /// Starts `cookieless` clients without cookies and `sticky` clients that keep theirs;
    /// each stops after `limit` or `max_requests`, whichever comes first, if not stopped.
    pub fn start(
        entry: &Entry,
        cookieless: usize,
        sticky: usize,
        limit: Duration,
        max_requests: usize,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let threads = (0..cookieless + sticky)
            .map(|i| {
                let entry = entry.clone();
                let stop = Arc::clone(&stop);
                let done = Arc::clone(&done);
                let keeps_cookie = i >= cookieless;
                let slow = i % 2 == 1;
                std::thread::spawn(move || {
                    client(
                        &entry,
                        keeps_cookie,
                        slow,
                        &stop,
                        &done,
                        started + limit,
                        max_requests,
                    )
                })
            })
            .collect();
        Self {
            stop,
            done,
            started,
            threads,
        }
    }

    /// Requests answered or failed so far, by all clients.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    pub fn stop(self) -> Summary {
        self.stop.store(true, Ordering::Relaxed);
        let clients = self
            .threads
            .into_iter()
            .map(|t| t.join().expect("a client thread panicked"))
            .collect();
        Summary {
            clients,
            took: self.started.elapsed(),
        }
    }
}

fn client(
    entry: &Entry,
    keeps_cookie: bool,
    slow: bool,
    stop: &AtomicBool,
    done: &AtomicUsize,
    deadline: Instant,
    max_requests: usize,
) -> ClientReport {
    let mut report = ClientReport {
        sticky: keeps_cookie,
        ..ClientReport::default()
    };
    let mut http = KeepAlive::new(entry.port, REQUEST_TIMEOUT);
    let mut cookie: Option<SetCookie> = None;
    // The container the cookie pins this client to.
    let mut pinned: Option<String> = None;
    while !stop.load(Ordering::Relaxed)
        && Instant::now() < deadline
        && report.requests < max_requests
    {
        let header = cookie.as_ref().map(SetCookie::as_request_header);
        let mut headers = vec![("Host", entry.host.as_str())];
        if let Some(h) = &header {
            headers.push(("Cookie", h.as_str()));
        }
        let path = if slow && report.requests % 4 == 0 {
            report.slow += 1;
            SLOW
        } else {
            "/"
        };
        let sent = Instant::now();
        let result = http.get(path, &headers);
        report.worst = report.worst.max(sent.elapsed());
        report.requests += 1;
        done.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(reply) => {
                *report.statuses.entry(reply.status).or_default() += 1;
                let served_by = reply.served_by().map(str::to_owned);
                if let Some(s) = &served_by {
                    report.served_by.insert(s.clone());
                }
                if keeps_cookie {
                    match reply.set_cookie() {
                        Some(new) => {
                            if cookie.is_some() {
                                report.repins += 1;
                            }
                            cookie = Some(new);
                            pinned = served_by;
                        }
                        None if reply.status == 200 && served_by != pinned => {
                            report.moved_silently += 1;
                        }
                        None => {}
                    }
                }
            }
            Err(e) => report
                .errors
                .push(format!("after {:.1?}: {e}", sent.elapsed())),
        }
        std::thread::sleep(PAUSE);
    }
    report.connections = http.connections;
    report
}
