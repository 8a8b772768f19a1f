//! The real `limpet` binary, for what only the binary does: flags, exit codes and logs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Process {
    /// Killed and reaped when dropped.
    child: Child,
    /// The entrypoint.
    pub addr: SocketAddr,
    /// Log lines so far, collected by a reader thread so the pipe never fills.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_limpet"));
    cmd.args(args)
        // The default level is what these tests look at; a developer's LIMPET_LOG must
        // not change it.
        .env_remove("LIMPET_LOG")
        .env_remove("LIMPET_LOGLEVEL")
        .env_remove("LIMPET_STICKY_KEYFILE")
        .env_remove("LIMPET_STICKY_MODE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// A port that was free a moment ago. The binary cannot report a port-0 choice, so the
/// port is chosen here; a lost race shows up as a failed start and is retried.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl Process {
    /// Starts limpet with `args` plus an entrypoint on 127.0.0.1, and waits until it
    /// listens.
    pub async fn start(args: &[&str]) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let entrypoint = format!("--entrypoint=127.0.0.1:{port}");
            let mut all = vec![entrypoint.as_str()];
            all.extend_from_slice(args);
            let mut child = command(&all).spawn().expect("spawn limpet");
            let stderr = Arc::new(Mutex::new(Vec::new()));
            let pipe = child.stderr.take().expect("piped stderr");
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap().push(line);
                }
            });
            let mut p = Self {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                stderr,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if p.log_contains("entrypoint listening") {
                    return p;
                }
                if let Ok(Some(status)) = p.child.try_wait() {
                    if p.log_contains("cannot listen") {
                        break;
                    }
                    panic!("limpet exited with {status}: {}", p.stderr());
                }
                assert!(
                    Instant::now() < deadline,
                    "limpet did not start: {}",
                    p.stderr()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("no free port for limpet after 5 tries");
    }

    /// For what only the operating system can tell, such as the process's memory.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn log_contains(&self, text: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// Waits for a log line containing every one of `parts`.
    pub async fn wait_for_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {parts:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs limpet expecting it to stop by itself (a start-up error); returns its exit status
/// and stderr. Fails the test if it is still running after 20 s.
pub async fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let port = free_port();
    let entrypoint = format!("--entrypoint=127.0.0.1:{port}");
    let mut all = vec![entrypoint.as_str()];
    all.extend_from_slice(args);
    let mut child = command(&all).spawn().expect("spawn limpet");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for limpet") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("limpet kept running with {args:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut text = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut text);
    }
    (status, text)
}
