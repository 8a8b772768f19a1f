//! The real `limpet` binary: its flags, its exit codes, and the tutorial's command line
//! starting without a reachable Docker.

use crate::support;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{eventually, Conn, Req};

/// The binary with a clean environment, so no `LIMPET_*` or `DOCKER_HOST` of the machine
/// running the tests changes what it does.
fn limpet() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_limpet"));
    command.env_clear().env("NO_COLOR", "1");
    command
}

fn run(args: &[&str]) -> Output {
    limpet().args(args).output().expect("run limpet")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A port on 127.0.0.1 that was free a moment ago, for flags that take an address.
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// A file for limpet to read, removed when the test ends, however it ends.
struct TempFile(String);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = format!(
            "{}/cli-{name}-{}.toml",
            env!("CARGO_TARGET_TMPDIR"),
            std::process::id()
        );
        std::fs::write(&path, text).expect("write the file");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running limpet that is killed when the test ends, however it ends, with its stderr
/// collected as it comes.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = limpet()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start limpet");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// All of stderr, once the child has exited and the pipe is drained.
    fn final_stderr(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("stderr reader");
        }
        self.stderr()
    }

    /// Waits for the child to exit on its own, within the tests' patience.
    fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + support::PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("query the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "limpet did not exit; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("query the child") {
            panic!("limpet exited with {status}; stderr:\n{}", self.stderr());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_unknown_flag_is_a_usage_error_naming_it() {
    let output = run(&["--docker", "--docker.swarmmod"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--docker.swarmmod"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn help_exits_zero_and_shows_the_traefik_flags() {
    let output = run(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--docker.swarmmode",
        "--docker.watch",
        "--web",
        "--loglevel",
        "--file.filename",
    ] {
        assert!(
            text.contains(flag),
            "--help does not mention {flag}:\n{text}"
        );
    }
}

#[test]
fn a_missing_file_fails_at_start_naming_it() {
    let path = format!("{}/no-such-dir/limpet.toml", env!("CARGO_TARGET_TMPDIR"));
    let output = run(&["--file.filename", &path, "--entrypoint", "127.0.0.1:0"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains(&path), "{}", stderr(&output));
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    // Without NO_COLOR, as under `docker service logs` or systemd: the pipe alone must be
    // enough to turn colours off.
    let path = format!("{}/no-such-dir/limpet.toml", env!("CARGO_TARGET_TMPDIR"));
    let output = limpet()
        .env_remove("NO_COLOR")
        .args(["--file.filename", &path, "--entrypoint", "127.0.0.1:0"])
        .output()
        .expect("run limpet");
    let text = stderr(&output);
    assert!(text.contains("ERROR"), "no log line: {text}");
    assert!(!text.contains('\u{1b}'), "escape codes in: {text:?}");
}

#[test]
fn a_bad_file_fails_at_start_naming_the_file_and_service() {
    let file = TempFile::new(
        "bad",
        "[services.billing]\nrule = \"Hots:billing.test\"\nservers = []\n",
    );
    let path = &file.0;
    let output = run(&["--file.filename", path, "--entrypoint", "127.0.0.1:0"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains(path.as_str()), "{message}");
    assert!(
        message.contains("billing") && message.contains("Hots"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_command_line_starts_without_docker_and_waits_for_it() {
    let entrypoint = free_addr();
    let web = free_addr();
    let (entrypoint_flag, web_flag) = (entrypoint.to_string(), web.to_string());
    let mut limpet = Running::start(&[
        "--docker",
        "--docker.swarmmode",
        "--docker.watch",
        "--web",
        "--loglevel=DEBUG",
        "--docker.endpoint",
        "unix:///nonexistent.sock",
        "--entrypoint",
        &entrypoint_flag,
        "--web.address",
        &web_flag,
    ]);

    eventually("limpet to accept connections", || {
        std::net::TcpStream::connect(entrypoint).is_ok()
    })
    .await;
    limpet.assert_running();
    let reply = Conn::open(entrypoint).await.send(Req::get("/")).await;
    assert_eq!(
        reply.status, 503,
        "no table before Docker answered: {reply:?}"
    );

    eventually("a warning that Docker is unreachable, and a retry", || {
        let log = limpet.stderr();
        log.lines().any(|l| {
            l.contains("WARN") && l.contains("Docker unreachable") && l.contains("nonexistent.sock")
        }) && log.contains("retrying Docker")
    })
    .await;

    let ping = Conn::open(web).await.send(Req::get("/ping")).await;
    assert_eq!((ping.status.as_u16(), ping.text()), (200, "OK"));
    limpet.assert_running();
}

/// Sends SIGTERM at once. std can only SIGKILL a child, and spawning `kill(1)` takes
/// milliseconds, longer than the start-up window this is aimed at; libc is linked anyway.
fn sigterm(child: &Child) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    const SIGTERM: i32 = 15;
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let status = unsafe { kill(pid, SIGTERM) };
    assert_eq!(status, 0, "kill({pid}, SIGTERM) failed");
}

#[test]
fn sigterm_stops_limpet_cleanly_from_the_moment_it_listens() {
    let file = TempFile::new(
        "term",
        "[services.app]\nrule = \"PathPrefix:/\"\nservers = []\n",
    );
    // SIGTERM the instant the port accepts: a handler installed any later than the listener
    // leaves a window in which the signal kills limpet outright. Many rounds, because the
    // window is narrow.
    for round in 0..20 {
        let entrypoint = free_addr();
        let entrypoint_flag = entrypoint.to_string();
        let mut limpet =
            Running::start(&["--file.filename", &file.0, "--entrypoint", &entrypoint_flag]);
        let deadline = Instant::now() + support::PATIENCE;
        while std::net::TcpStream::connect(entrypoint).is_err() {
            assert!(
                Instant::now() < deadline,
                "round {round}: limpet never listened"
            );
            limpet.assert_running();
        }
        sigterm(&limpet.child);
        let exit = limpet.wait_for_exit();
        let log = limpet.final_stderr();
        assert!(exit.success(), "round {round}: {exit}, stderr:\n{log}");
        assert!(log.contains("shutting down"), "round {round}: {log}");
    }
}

/// Field `n` (counted from 1, as proc(5) does) of /proc/<pid>/task/<tid>/stat.
fn stat_field(stat: &str, n: usize) -> i64 {
    // The command name (field 2) may hold spaces; count from after its closing parenthesis.
    let after = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    after
        .split(' ')
        .nth(n - 3)
        .unwrap_or_else(|| panic!("field {n}"))
        .parse()
        .expect("a number")
}

/// Linux's `SCHED_OTHER`, as field 41 (the policy) of a thread's stat shows it. The control
/// plane is not `SCHED_IDLE` (5): a saturated core starved it (src/discovery/thread.rs).
const SCHED_OTHER: i64 = 0;

#[test]
fn the_providers_run_on_their_own_thread_below_the_workers_priority() {
    let file = TempFile::new(
        "control",
        "[services.a]\nrule = \"PathPrefix:/\"\nservers = [{ url = \"http://127.0.0.1:9\" }]\n",
    );
    let entrypoint = free_addr().to_string();
    let mut running = Running::start(&[
        "--file.filename",
        &file.0,
        "--entrypoint",
        &entrypoint,
        "--workers",
        "3",
    ]);
    let deadline = Instant::now() + support::PATIENCE;
    while !running.stderr().contains("entrypoint listening") {
        running.assert_running();
        assert!(
            Instant::now() < deadline,
            "not listening: {}",
            running.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = running.child.id();
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task list") {
        let dir = task.expect("task entry").path();
        let comm = std::fs::read_to_string(dir.join("comm")).expect("comm");
        let stat = std::fs::read_to_string(dir.join("stat")).expect("stat");
        // The main thread is the first worker; the others have a name of their own.
        let main = dir.file_name().and_then(|n| n.to_str()) == Some(&pid.to_string());
        threads.push((
            if main {
                "main".to_owned()
            } else {
                comm.trim().to_owned()
            },
            stat_field(&stat, 19),
            stat_field(&stat, 41),
        ));
    }
    let control: Vec<_> = threads
        .iter()
        .filter(|(name, ..)| name == limpet::discovery::THREAD_NAME)
        .collect();
    assert!(!control.is_empty(), "threads: {threads:?}");
    let workers: Vec<_> = threads
        .iter()
        .filter(|(name, ..)| name == "main" || name == limpet::proxy::WORKER_THREAD_NAME)
        .collect();
    assert_eq!(workers.len(), 3, "threads: {threads:?}");
    let worker_nice = workers[0].1;
    assert!(
        workers
            .iter()
            .all(|(_, nice, policy)| *nice == worker_nice && *policy == SCHED_OTHER),
        "threads: {threads:?}"
    );
    for (_, nice, policy) in &control {
        assert_eq!(*nice, (worker_nice + 10).min(19), "threads: {threads:?}");
        assert_eq!(*policy, SCHED_OTHER, "threads: {threads:?}");
    }
}

/// The open client connections per worker, as the status page reports them.
async fn open_per_worker(web: SocketAddr) -> serde_json::Value {
    let reply = Conn::open(web).await.send(Req::get("/api/stats")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let stats: serde_json::Value = serde_json::from_str(reply.text()).expect("stats are JSON");
    stats["workers"]["open_connections"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_clients_spread_evenly_over_the_workers_and_are_served_on_each() {
    let app = support::spawn_backend("app").await;
    let file = TempFile::new(
        "workers",
        &format!(
            "[services.app]\nrule = \"PathPrefix:/\"\nservers = [{{ url = \"{}\" }}]\n",
            app.url
        ),
    );
    let entrypoint = free_addr();
    let web = free_addr();
    let (entrypoint_flag, web_flag) = (entrypoint.to_string(), web.to_string());
    let mut limpet = Running::start(&[
        "--file.filename",
        &file.0,
        "--entrypoint",
        &entrypoint_flag,
        "--workers",
        "3",
        "--web",
        "--web.address",
        &web_flag,
    ]);
    eventually("limpet to accept connections", || {
        std::net::TcpStream::connect(entrypoint).is_ok()
    })
    .await;
    eventually("the status page", || {
        std::net::TcpStream::connect(web).is_ok()
    })
    .await;
    // The probes above opened and closed connections: wait for the workers to see them go.
    support::within("the probes' connections to close", async {
        while open_per_worker(web).await != serde_json::json!([0, 0, 0]) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let mut clients = Vec::new();
    for i in 0..6 {
        let mut conn = Conn::open(entrypoint).await;
        let reply = conn.send(Req::get("/")).await;
        assert_eq!(reply.status, 200, "client {i}: {reply:?}");
        clients.push(conn);
    }
    assert_eq!(open_per_worker(web).await, serde_json::json!([2, 2, 2]));
    // Each keeps being served where it is, a second request included.
    for (i, conn) in clients.iter_mut().enumerate() {
        let reply = conn.send(Req::get("/again")).await;
        assert_eq!(reply.status, 200, "client {i}, second request: {reply:?}");
    }
    drop(clients);
    support::within("the workers to count the clients gone", async {
        while open_per_worker(web).await != serde_json::json!([0, 0, 0]) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    limpet.assert_running();
}
