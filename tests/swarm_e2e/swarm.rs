//! A real single-node Docker Swarm, driven through the `docker` CLI, for limpet's end-to-end
//! tests: the tutorial's setup deployed as plain services ([`Tutorial`]) or from `stack.yml`
//! ([`Stack`]), a small HTTP/1.1 client that talks to limpet's host-mode port on 127.0.0.1
//! ([`Entry`]), and the waiting that goes with a system that changes on its own time.
//!
//! Every deployment gets names with a per-run suffix, its own host port and its own `Host:`
//! rule, so that deployments (other tests, a running demo, a crashed earlier run) never route
//! each other's requests. Whatever a deployment creates is removed when it is dropped, whether
//! the test passed or not; after a failure, the services' tasks and limpet's log are printed
//! first.
//!
//! Traffic: requests go to 127.0.0.1 only, and limpet forwards them to task addresses on the
//! deployment's own overlay network. limpet sees every service on the engine, though, and
//! would forward a request that matched another deployment's rule to that deployment's tasks,
//! on a network it is not attached to: such an address is reached through the default
//! gateway, off the machine. So every deployment is routed by a `Host:` rule of its own, which
//! is longer than, and so takes precedence over, a catch-all such as the demo's `PathPrefix:/`.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable that turns the Swarm tests on; scripts/test.sh sets it.
pub const ENABLE: &str = "LIMPET_SWARM_TESTS";

/// Whether the Swarm tests should run. When they should not, says so on stderr, naming the
/// test, so that a skipped test never passes silently.
pub fn enabled(test: &str) -> bool {
    if std::env::var(ENABLE).is_ok_and(|v| v == "1") {
        return true;
    }
    eprintln!(
        "{test}: skipped: set {ENABLE}=1 (scripts/test.sh does) to run against the real Docker \
         engine in swarm mode"
    );
    false
}

/// The two images, by ID: a service created from an ID with `--no-resolve-image` is never
/// looked up in a registry.
#[derive(Debug, Clone)]
pub struct Images {
    pub limpet: String,
    pub whoami: String,
    /// whoami with a HEALTHCHECK (`/whoami --probe`).
    pub whoami_health: String,
}

impl Images {
    /// From `LIMPET_IMAGE_ID`, `WHOAMI_IMAGE_ID` and `WHOAMI_HEALTH_IMAGE_ID`, or the local
    /// tags docker/build-images.sh gives them.
    pub fn find() -> Self {
        let id = |var: &str, tag: &str| {
            std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
                try_docker(["image", "inspect", "--format", "{{.Id}}", tag]).unwrap_or_else(|e| {
                    panic!("no image `{tag}` and no {var}: run docker/build-images.sh first ({e})")
                })
            })
        };
        Self {
            limpet: id("LIMPET_IMAGE_ID", "limpet:latest"),
            whoami: id("WHOAMI_IMAGE_ID", "limpet-whoami:latest"),
            whoami_health: id("WHOAMI_HEALTH_IMAGE_ID", "limpet-whoami-health:latest"),
        }
    }
}

/// Runs `docker` and returns its trimmed standard output, or the command and its error.
pub fn try_docker<I, S>(args: I) -> Result<String, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new("docker");
    command.args(args);
    docker_output(&mut command)
}

fn docker_output(command: &mut Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .map_err(|e| format!("{shown}: cannot run docker: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Like [`try_docker`], for commands a test cannot go on without.
pub fn docker<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    try_docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// `e2e-<label>-<suffix>`: unique across runs and processes, short enough for Docker's
/// 63-character names, and valid as a DNS label and a stack name.
pub fn unique_name(label: &str) -> String {
    // RandomState is seeded randomly per process; time and pid make doubly sure.
    let mut n = RandomState::new().hash_one((SystemTime::now(), std::process::id()));
    let mut suffix = String::new();
    for _ in 0..8 {
        suffix.push(char::from_digit((n % 36) as u32, 36).expect("digit below 36"));
        n /= 36;
    }
    format!("e2e-{label}-{suffix}")
}

/// `N` distinct TCP ports that were free a moment ago, for host-mode publishing (docker-proxy
/// binds them on every interface, so check the same).
pub fn free_ports<const N: usize>() -> [u16; N] {
    // Held together until all are picked, so that the kernel cannot hand out one twice.
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("an ephemeral port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("a bound address").port())
}

/// Calls `check` every `every` until it returns something or `timeout` passes; panics with
/// `what` and the last state `check` reported otherwise.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(state) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {state}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// What is removed when a deployment is dropped.
#[derive(Debug, Default)]
struct Cleanup {
    services: Vec<String>,
    stacks: Vec<String>,
    networks: Vec<String>,
    /// The limpet service, whose log explains most failures.
    limpet: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnose();
        }
        if !self.services.is_empty() {
            let _ = try_docker(
                ["service", "rm"]
                    .iter()
                    .copied()
                    .chain(self.services.iter().map(String::as_str)),
            );
        }
        for stack in &self.stacks {
            let _ = try_docker(["stack", "rm", stack]);
        }
        // Wait for the containers to go (about a second with `--stop-grace-period 1s`), so
        // that the next test runs on a quiet engine and nothing outlives the test process.
        let deadline = Instant::now() + Duration::from_secs(30);
        let filters = self
            .services
            .iter()
            .map(|s| format!("label=com.docker.swarm.service.name={s}"))
            .chain(
                self.stacks
                    .iter()
                    .map(|s| format!("label=com.docker.stack.namespace={s}")),
            );
        for filter in filters {
            while Instant::now() < deadline {
                match try_docker(["ps", "--all", "--quiet", "--filter", &filter]) {
                    Ok(ids) if !ids.is_empty() => std::thread::sleep(Duration::from_millis(100)),
                    _ => break,
                }
            }
        }
        // Docker refuses to remove a network while containers are still attached to it.
        for network in &self.networks {
            loop {
                match try_docker(["network", "rm", network]) {
                    Ok(_) => break,
                    Err(e) if e.contains("not found") => break,
                    Err(e) if Instant::now() >= deadline => {
                        eprintln!("cleanup: cannot remove network {network}: {e}");
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(250)),
                }
            }
        }
    }
}

impl Cleanup {
    fn diagnose(&self) {
        let mut services: Vec<String> = self.services.clone();
        for stack in &self.stacks {
            if let Ok(names) = try_docker(["stack", "services", "--format", "{{.Name}}", stack]) {
                services.extend(names.lines().map(str::to_owned));
            }
        }
        if !services.is_empty() {
            let ps = try_docker(
                ["service", "ps", "--no-trunc"]
                    .iter()
                    .copied()
                    .chain(services.iter().map(String::as_str)),
            );
            eprintln!("---- docker service ps\n{}", ps.unwrap_or_else(|e| e));
        }
        if let Some(limpet) = &self.limpet {
            // `docker service logs` writes the tasks' stderr, where limpet logs, to stderr.
            let logs = Command::new("docker")
                .args(["service", "logs", "--tail", "150", "--no-trunc", limpet])
                .output();
            if let Ok(out) = logs {
                eprintln!(
                    "---- docker service logs {limpet}\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// The tutorial's setup made of plain services, one test's own: an overlay network, a whoami
/// service labelled as in the tutorial (but routed by a `Host:` rule of its own), and a global
/// limpet on the network with the Docker socket and a host-mode port.
pub struct Tutorial {
    pub whoami: String,
    pub limpet: String,
    pub network: String,
    pub entry: Entry,
    /// Removes what the deployment created when dropped.
    cleanup: Cleanup,
}

/// What a test changes in the tutorial's setup: flags added to `docker service create` for
/// each service (a later flag overrides an earlier one, as `--stop-grace-period` does), and
/// arguments added to each program.
#[derive(Debug, Clone, Default)]
pub struct Custom {
    pub whoami: Vec<(String, String)>,
    /// Another image for whoami (by ID), e.g. one with a HEALTHCHECK.
    pub whoami_image: Option<String>,
    pub whoami_args: Vec<String>,
    pub limpet: Vec<(String, String)>,
    pub limpet_args: Vec<String>,
    /// Wait until limpet routes HTTP to this many containers (the replicas when `None`); 0
    /// for a service that has no HTTP route.
    pub routed: Option<usize>,
}

impl Custom {
    pub fn whoami(mut self, flag: &str, value: impl Into<String>) -> Self {
        self.whoami.push((flag.to_owned(), value.into()));
        self
    }

    pub fn limpet(mut self, flag: &str, value: impl Into<String>) -> Self {
        self.limpet.push((flag.to_owned(), value.into()));
        self
    }
}

impl Tutorial {
    /// Creates the network and both services and waits until limpet routes to `replicas`
    /// distinct whoami containers.
    pub fn deploy(label: &str, replicas: usize) -> Self {
        Self::deploy_with(label, replicas, Custom::default())
    }

    /// [`Tutorial::deploy`] with a test's own additions.
    pub fn deploy_with(label: &str, replicas: usize, custom: Custom) -> Self {
        let name = unique_name(label);
        let mut cleanup = Cleanup::default();
        let network = format!("{name}-net");
        docker([
            "network",
            "create",
            "--driver=overlay",
            "--attachable",
            LABEL,
            &network,
        ]);
        cleanup.networks.push(network.clone());
        let whoami = format!("{name}-whoami");
        let host = format!("{whoami}.e2e.test");
        let rule = format!("traefik.frontend.rule=Host:{host}");
        cleanup.services.push(whoami.clone());
        let mut options: Vec<(String, String)> = [
            ("--replicas", replicas.to_string()),
            ("--label", format!("traefik.docker.network={network}")),
            ("--label", "traefik.port=8000".to_owned()),
            ("--label", rule),
            (
                "--label",
                "traefik.backend.loadbalancer.stickiness=true".to_owned(),
            ),
        ]
        .into_iter()
        .map(|(f, v)| (f.to_owned(), v))
        .collect();
        options.extend(custom.whoami.iter().cloned());
        let images = Images::find();
        let args: Vec<&str> = custom.whoami_args.iter().map(String::as_str).collect();
        let image = custom.whoami_image.as_ref().unwrap_or(&images.whoami);
        create_service(&whoami, &network, &options, image, &args);

        let limpet = format!("{name}-limpet");
        let [port] = free_ports();
        let entry = Entry { port, host };
        cleanup.limpet = Some(limpet.clone());
        cleanup.services.push(limpet.clone());
        let mut limpet_args = vec![
            "--docker",
            "--docker.swarmmode",
            "--docker.watch",
            "--loglevel=DEBUG",
        ];
        limpet_args.extend(custom.limpet_args.iter().map(String::as_str));
        create_limpet(&limpet, &network, port, &custom.limpet, &limpet_args);

        let deployment = Self {
            whoami,
            limpet,
            network,
            entry,
            cleanup,
        };
        let routed = custom.routed.unwrap_or(replicas);
        if routed > 0 {
            let started = Instant::now();
            deployment.entry.backends(routed, Duration::from_secs(60));
            eprintln!(
                "{label}: deployed and routed to {routed} containers in {:.1?}",
                started.elapsed()
            );
        }
        deployment
    }

    /// Another limpet service like the first, on the same network and with the same extra
    /// flags and arguments, on a host port of its own; removed with the deployment.
    pub fn add_limpet(&mut self, suffix: &str, custom: &Custom) -> Entry {
        let name = format!("{}-{suffix}", self.limpet);
        let [port] = free_ports();
        self.cleanup.services.push(name.clone());
        let mut args = vec![
            "--docker",
            "--docker.swarmmode",
            "--docker.watch",
            "--loglevel=DEBUG",
        ];
        args.extend(custom.limpet_args.iter().map(String::as_str));
        create_limpet(&name, &self.network, port, &custom.limpet, &args);
        Entry {
            port,
            host: self.entry.host.clone(),
        }
    }

    /// Another service on the deployment's network, publishing its port 80 on a host port
    /// of its own (returned); removed with the deployment.
    pub fn add_service(&mut self, suffix: &str, image: &str, options: &[(String, String)]) -> u16 {
        let name = format!("{}-{suffix}", self.limpet);
        let [port] = free_ports();
        self.cleanup.services.push(name.clone());
        let mut all = vec![
            ("--label".to_owned(), "traefik.enable=false".to_owned()),
            (
                "--publish".to_owned(),
                format!("mode=host,target=80,published={port}"),
            ),
        ];
        all.extend(options.iter().cloned());
        create_service(&name, &self.network, &all, image, &[]);
        port
    }

    /// The sticky cookie's name Traefik v1 would pick for this service.
    pub fn cookie_name(&self) -> String {
        traefik_cookie_name(&self.whoami)
    }

    /// IDs of the service's tasks that Swarm wants running, sorted.
    pub fn task_ids(&self, service: &str) -> Vec<String> {
        let out = docker([
            "service",
            "ps",
            "--quiet",
            "--filter",
            "desired-state=running",
            service,
        ]);
        let mut ids: Vec<String> = out.lines().map(str::to_owned).collect();
        ids.sort();
        ids
    }
}

/// Marks what the tests create, for cleaning up by hand after a run that was killed:
/// `docker service rm $(docker service ls -q --filter label=com.limpet.e2e)`.
const LABEL: &str = "--label=com.limpet.e2e";

/// limpet's view of the engine; `readonly` as the tutorial's users would add it.
const DOCKER_SOCKET: &str =
    "type=bind,source=/var/run/docker.sock,destination=/var/run/docker.sock,readonly";

/// `docker service create` with what every test service shares: the image is given by ID and
/// never resolved, tasks get one second to stop, and the service joins the test's network.
fn create_service(
    name: &str,
    network: &str,
    options: &[(String, String)],
    image: &str,
    args: &[&str],
) {
    let mut command = Command::new("docker");
    command.args(["service", "create", "--detach", "--no-resolve-image", LABEL]);
    command.args([
        "--stop-grace-period=1s",
        "--name",
        name,
        "--network",
        network,
    ]);
    for (flag, value) in options {
        command.args([flag, value]);
    }
    command.arg(image).args(args);
    docker_output(&mut command).unwrap_or_else(|e| panic!("{e}"));
}

/// A global limpet on the manager, with the Docker socket, publishing its entrypoint (port
/// 80) on `port` of the host.
fn create_limpet(name: &str, network: &str, port: u16, extra: &[(String, String)], args: &[&str]) {
    let publish = format!("mode=host,target=80,published={port}");
    let mut options: Vec<(String, String)> = [
        // limpet sees its own service too; it is not a backend.
        ("--label", "traefik.enable=false"),
        ("--mode", "global"),
        ("--constraint", "node.role==manager"),
        ("--mount", DOCKER_SOCKET),
        ("--publish", publish.as_str()),
    ]
    .into_iter()
    .map(|(f, v)| (f.to_owned(), v.to_owned()))
    .collect();
    options.extend(extra.iter().cloned());
    create_service(name, network, &options, &Images::find().limpet, args);
}

/// Traefik v1's cookie name for a Docker service: its backend is `backend-<normalized name>`.
pub fn traefik_cookie_name(service: &str) -> String {
    limpet::sticky::traefik_v1_cookie_name(&format!(
        "backend-{}",
        limpet::labels::normalize_name(service)
    ))
}

/// `stack.yml` deployed under a unique stack name, with its own ports and `Host:` rule.
pub struct Stack {
    pub name: String,
    pub entry: Entry,
    pub web_port: u16,
    /// Held for its `Drop`, which removes what the deployment created.
    _cleanup: Cleanup,
}

impl Stack {
    pub fn deploy(label: &str, file: &Path) -> Self {
        let images = Images::find();
        let name = unique_name(label);
        let [port, web_port] = free_ports();
        let entry = Entry {
            port,
            host: format!("{name}.e2e.test"),
        };
        let mut cleanup = Cleanup::default();
        cleanup.stacks.push(name.clone());
        cleanup.networks.push(format!("{name}_whoaminet"));
        cleanup.limpet = Some(format!("{name}_limpet"));
        let mut command = Command::new("docker");
        command
            .args([
                "stack",
                "deploy",
                "--resolve-image",
                "never",
                "--compose-file",
            ])
            .arg(file)
            .arg(&name)
            .env("LIMPET_IMAGE", &images.limpet)
            .env("WHOAMI_IMAGE", &images.whoami)
            .env("LIMPET_HTTP_PORT", entry.port.to_string())
            .env("LIMPET_WEB_PORT", web_port.to_string())
            .env("WHOAMI_RULE", format!("Host:{}", entry.host));
        let stack = Self {
            name,
            entry,
            web_port,
            _cleanup: cleanup,
        };
        docker_output(&mut command).unwrap_or_else(|e| panic!("{e}"));
        stack
    }

    /// The stack's whoami service, with the stack's prefix.
    pub fn whoami(&self) -> String {
        format!("{}_whoami", self.name)
    }
}

/// limpet's entrypoint as a client sees it: the host-mode port on 127.0.0.1 and the `Host`
/// header that routes to this deployment.
#[derive(Debug, Clone)]
pub struct Entry {
    pub port: u16,
    pub host: String,
}

impl Entry {
    /// `GET path` with an optional `Cookie` header.
    pub fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        self.try_get(path, cookie)
            .unwrap_or_else(|e| panic!("GET {path} on 127.0.0.1:{}: {e}", self.port))
    }

    pub fn try_get(&self, path: &str, cookie: Option<&str>) -> std::io::Result<Reply> {
        self.try_get_within(path, cookie, Duration::from_secs(10))
    }

    /// Like [`Entry::try_get`], giving up on the answer after `timeout`.
    pub fn try_get_within(
        &self,
        path: &str,
        cookie: Option<&str>,
        timeout: Duration,
    ) -> std::io::Result<Reply> {
        let mut headers = vec![("Host", self.host.as_str())];
        if let Some(c) = cookie {
            headers.push(("Cookie", c));
        }
        http_get(self.port, path, &headers, timeout)
    }

    /// Sends requests without a cookie until `count` distinct containers have answered, each
    /// with a sticky cookie; returns container name → the cookie pinning a client to it.
    pub fn backends(&self, count: usize, timeout: Duration) -> BTreeMap<String, SetCookie> {
        let mut seen = BTreeMap::new();
        wait_for(
            &format!(
                "limpet on port {} to route to {count} containers",
                self.port
            ),
            timeout,
            Duration::from_millis(100),
            || {
                let reply = self.try_get("/", None).map_err(|e| e.to_string())?;
                if let (Some(name), Some(cookie)) = (reply.served_by(), reply.set_cookie()) {
                    seen.insert(name.to_owned(), cookie);
                }
                if seen.len() >= count {
                    Ok(seen.clone())
                } else {
                    Err(format!(
                        "{} {:?}, seen {:?}",
                        reply.status,
                        reply.body,
                        seen.keys()
                    ))
                }
            },
        )
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// In arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The container that answered, from whoami's `I'm <hostname>` line.
    pub fn served_by(&self) -> Option<&str> {
        self.body.lines().next()?.strip_prefix("I'm ")
    }

    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The one `Set-Cookie` header, if any; panics on several, which limpet never sends.
    pub fn set_cookie(&self) -> Option<SetCookie> {
        let mut all = self.header_values("set-cookie");
        let first = all.next()?;
        assert!(all.next().is_none(), "several Set-Cookie headers: {self:?}");
        Some(SetCookie::parse(first))
    }

    /// A header whoami echoed back for `/headers` (names are lowercase there).
    pub fn echoed_header(&self, name: &str) -> Option<&str> {
        self.body.lines().find_map(|line| {
            let (k, v) = line.split_once(": ")?;
            k.eq_ignore_ascii_case(name).then_some(v)
        })
    }
}

/// A `Set-Cookie` header: `name=value; attributes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    pub raw: String,
}

impl SetCookie {
    fn parse(raw: &str) -> Self {
        let pair = raw.split(';').next().unwrap_or(raw);
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        Self {
            name: name.trim().to_owned(),
            value: value.trim().to_owned(),
            raw: raw.to_owned(),
        }
    }

    /// The `Cookie` request header that sends this cookie back.
    pub fn as_request_header(&self) -> String {
        format!("{}={}", self.name, self.value)
    }
}

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`, so the body ends with
/// the connection). Plain and blocking on purpose: the tests count every request, and a pool
/// would hide which connection carried which.
pub fn http_get(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<Reply> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_reply(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP response: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // Both limpet's own answers and whoami's carry a length; a chunked body would need
    // decoding that these tests have no use for.
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        return None;
    }
    Some(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// When a container started, from `docker inspect`, as wall-clock time.
pub fn container_started_at(container: &str) -> SystemTime {
    let started = docker(["inspect", "--format", "{{.State.StartedAt}}", container]);
    // GNU date reads RFC 3339 with nanoseconds; that spares the tests a date library.
    let nanos = Command::new("date")
        .args(["--date", &started, "+%s%N"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("cannot read the start time `{started}` of {container}"));
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// An HTTP/1.1 client on one keep-alive connection, as a browser keeps one: requests go one
/// after the other on the same connection, and a new one is opened only when the server
/// closed it (`Connection: close`) or before the first request.
pub struct KeepAlive {
    port: u16,
    timeout: Duration,
    stream: Option<std::io::BufReader<TcpStream>>,
    /// Connections opened so far.
    pub connections: usize,
}

impl KeepAlive {
    pub fn new(port: u16, timeout: Duration) -> Self {
        Self {
            port,
            timeout,
            stream: None,
            connections: 0,
        }
    }

    /// `GET path` with these headers. An error drops the connection; the next request opens
    /// another. A connection the server closed while idle is an error too: limpet has no
    /// reason to close a client's connection during these tests.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Reply> {
        let result = self.exchange(path, headers);
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn exchange(&mut self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Reply> {
        use std::io::BufRead;
        if self.stream.is_none() {
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
            let stream = TcpStream::connect_timeout(&address, self.timeout)?;
            stream.set_read_timeout(Some(self.timeout))?;
            stream.set_write_timeout(Some(self.timeout))?;
            stream.set_nodelay(true)?;
            self.stream = Some(std::io::BufReader::new(stream));
            self.connections += 1;
        }
        let reader = self.stream.as_mut().expect("connected above");
        let mut request = format!("GET {path} HTTP/1.1\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        reader.get_mut().write_all(request.as_bytes())?;

        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {:?}", head),
                ));
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("head {head:?}"))
            })?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("no Content-Length in {head:?}"),
                )
            })?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let close = headers
            .iter()
            .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"));
        if close {
            self.stream = None;
        }
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A Docker secret, removed when dropped; drop it after the services that use it (Docker
/// refuses to remove a secret in use).
pub struct Secret {
    pub name: String,
}

impl Secret {
    pub fn create(label: &str, content: &[u8]) -> Self {
        let name = unique_name(label);
        let mut child = Command::new("docker")
            .args(["secret", "create", LABEL, &name, "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker runs");
        child
            .stdin
            .take()
            .expect("a pipe")
            .write_all(content)
            .expect("the secret is written");
        let output = child.wait_with_output().expect("docker runs");
        assert!(
            output.status.success(),
            "docker secret create {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self { name }
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let _ = try_docker(["secret", "rm", &self.name]);
    }
}

/// The short IDs (whoami's hostnames) of the service's running containers.
pub fn containers(service: &str) -> BTreeSet<String> {
    let filter = format!("label=com.docker.swarm.service.name={service}");
    docker([
        "ps",
        "--quiet",
        "--filter",
        &filter,
        "--filter",
        "status=running",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}
