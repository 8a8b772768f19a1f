//! The Docker watcher: reads Swarm services and their running tasks (or plain containers)
//! and publishes them as service specs.
//!
//! It polls every `refresh` and, with `watch`, follows Docker events so that a change is
//! routed within a couple of seconds. Docker reports service events cluster-wide but
//! container events only for the local node, so a service event starts a short burst of
//! re-polls: on a multi-node swarm, tasks scheduled on other nodes are still seen quickly.
//!
//! - `api`: the Docker endpoint and the raw `/tasks` read bollard's model cannot express.
//! - `convert`: pure conversion of services, tasks and containers into specs.

pub mod api;
pub mod convert;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::api::{Endpoint, SwarmService};
use self::convert::{Container, Defaults, LabelMemory, Marks, Problem};
use super::Publisher;
use crate::table::spec::Provider;

#[derive(Debug, Clone)]
pub struct DockerSettings {
    pub endpoint: Endpoint,
    /// Read Swarm services and tasks (Traefik's `--docker.swarmmode`); otherwise containers.
    pub swarm_mode: bool,
    /// Follow Docker events between polls (Traefik's `--docker.watch`).
    pub watch: bool,
    /// The safety-net poll interval (Traefik's `--docker.swarmmoderefreshseconds`).
    pub refresh: Duration,
    pub defaults: Defaults,
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach Docker at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("Docker request failed: {0}")]
    Api(#[from] bollard::errors::Error),
    #[error(transparent)]
    Tasks(#[from] api::ApiError),
}

/// Delays of the re-polls after a Swarm service event: new tasks usually run within a second
/// here, and a busy multi-node cluster gets a few more chances before the periodic poll.
const BURST: [Duration; 6] = [
    Duration::from_millis(300),
    Duration::from_millis(700),
    Duration::from_millis(1200),
    Duration::from_millis(2000),
    Duration::from_millis(3500),
    Duration::from_millis(6000),
];

/// How long to gather more events before polling, so a rolling update's flurry costs one poll.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// What the event follower tells the poll loop.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trigger {
    /// A service changed: poll now and again in a burst.
    Service,
    /// A local container changed: poll now, after applying what the event says about it.
    Container(Option<Mark>),
    /// The event stream ended; Docker may be gone.
    Lost,
}

/// What a container event says about one task (Swarm) or container (otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mark {
    /// A stop signal was sent: drain it at once, before Swarm's task state catches up.
    Draining(String),
    /// The container exited: drop it at once, pinned clients included, before Swarm's task
    /// state catches up.
    Gone(String),
    /// Started (again): whatever was marked before no longer holds.
    Started(String),
    Unhealthy(String),
    Healthy(String),
}

impl Marks {
    fn apply(&mut self, mark: Mark) {
        match mark {
            Mark::Draining(id) => {
                self.draining.insert(id);
            }
            Mark::Gone(id) => {
                self.draining.insert(id.clone());
                self.gone.insert(id);
            }
            Mark::Started(id) => {
                self.draining.remove(&id);
                self.unhealthy.remove(&id);
                self.gone.remove(&id);
            }
            Mark::Unhealthy(id) => {
                self.unhealthy.insert(id);
            }
            Mark::Healthy(id) => {
                self.unhealthy.remove(&id);
            }
        }
    }
}

/// Runs forever: connects with backoff, polls and follows events, and keeps the last
/// published table serving whenever Docker cannot be reached.
pub async fn watch(settings: DockerSettings, publisher: Arc<Publisher>) {
    let mut backoff = Backoff::default();
    let mut problems = ProblemLog::default();
    // Outlives reconnections: a service's last valid labels stay valid while Docker is away.
    let mut memory = LabelMemory::default();
    loop {
        match connect(&settings.endpoint).await {
            Ok(docker) => {
                tracing::info!(endpoint = %settings.endpoint, swarm = settings.swarm_mode, "connected to Docker");
                let mut settings = settings.clone();
                settings.defaults.reachable = own_networks(&docker).await;
                if let Err(e) = follow(
                    &docker,
                    &settings,
                    &publisher,
                    &mut problems,
                    &mut memory,
                    &mut backoff,
                )
                .await
                {
                    tracing::warn!(error = %e, "lost Docker; the last routing table keeps serving");
                }
            }
            Err(e) => tracing::warn!(error = %e, "Docker unreachable"),
        }
        let delay = backoff.next_delay();
        tracing::info!(retry_in_ms = delay.as_millis() as u64, "retrying Docker");
        tokio::time::sleep(delay).await;
    }
}

/// The networks of the container limpet runs in, found by its hostname (a container's
/// default hostname is its id). `None` when limpet is not a container of this engine, e.g.
/// run on the host against a remote engine: then every network is taken as reachable.
async fn own_networks(docker: &Docker) -> Option<std::collections::BTreeSet<String>> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let inspected = docker.inspect_container(hostname.trim(), None).await.ok()?;
    let networks = inspected.network_settings?.networks?;
    let mut reachable = std::collections::BTreeSet::new();
    for (name, endpoint) in networks {
        if let Some(id) = endpoint.network_id {
            reachable.insert(id);
        }
        reachable.insert(name);
    }
    tracing::info!(networks = ?reachable, "routing only to tasks on the networks limpet is attached to");
    Some(reachable)
}

async fn connect(endpoint: &Endpoint) -> Result<Docker, DockerError> {
    let connect_err = |source| DockerError::Connect {
        endpoint: endpoint.to_string(),
        source,
    };
    let docker = match endpoint {
        Endpoint::Unix(path) => {
            Docker::connect_with_unix(&path.to_string_lossy(), 30, bollard::API_DEFAULT_VERSION)
        }
        Endpoint::Tcp(addr) => Docker::connect_with_http(addr, 30, bollard::API_DEFAULT_VERSION),
    }
    .map_err(connect_err)?;
    // bollard speaks a newer API than many engines (20.10 tops out at 1.41); agree on one.
    docker.negotiate_version().await.map_err(connect_err)
}

/// Polls and follows events until a poll fails.
async fn follow(
    docker: &Docker,
    settings: &DockerSettings,
    publisher: &Arc<Publisher>,
    problems: &mut ProblemLog,
    memory: &mut LabelMemory,
    backoff: &mut Backoff,
) -> Result<(), DockerError> {
    let (tx, mut rx) = mpsc::channel::<Trigger>(256);
    let mut events: Option<tokio::task::JoinHandle<()>> = None;
    let mut burst: VecDeque<Instant> = VecDeque::new();
    let mut marks = Marks::default();
    let result = loop {
        if let Err(e) = poll(docker, settings, publisher, problems, memory, &mut marks).await {
            break Err(e);
        }
        backoff.reset();
        if settings.watch && events.as_ref().is_none_or(|h| h.is_finished()) {
            events = Some(tokio::spawn(follow_events(
                docker.clone(),
                settings.swarm_mode,
                tx.clone(),
            )));
        }
        let now = Instant::now();
        while burst.front().is_some_and(|t| *t <= now) {
            burst.pop_front();
        }
        let next_burst = burst.front().copied();
        let trigger = tokio::select! {
            () = tokio::time::sleep(settings.refresh) => None,
            () = sleep_until_opt(next_burst) => None,
            t = rx.recv() => t,
        };
        if let Some(first) = trigger {
            let drains = matches!(
                first,
                Trigger::Container(Some(Mark::Draining(_) | Mark::Gone(_)))
            );
            absorb(first, &mut marks, &mut burst);
            // A stop signal is worth acting on at once; anything else waits for the rest
            // of its flurry.
            if !drains {
                tokio::time::sleep(DEBOUNCE).await;
            }
            while let Ok(t) = rx.try_recv() {
                absorb(t, &mut marks, &mut burst);
            }
        }
    };
    if let Some(h) = events {
        h.abort();
    }
    result
}

fn absorb(trigger: Trigger, marks: &mut Marks, burst: &mut VecDeque<Instant>) {
    match trigger {
        Trigger::Service => {
            let now = Instant::now();
            *burst = BURST.iter().map(|d| now + *d).collect();
        }
        Trigger::Container(Some(mark)) => marks.apply(mark),
        Trigger::Container(None) | Trigger::Lost => {}
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn follow_events(docker: Docker, swarm_mode: bool, tx: mpsc::Sender<Trigger>) {
    let mut filters: HashMap<&str, Vec<&str>> = HashMap::new();
    filters.insert(
        "type",
        if swarm_mode {
            vec!["service", "container"]
        } else {
            vec!["container"]
        },
    );
    let options = EventsOptionsBuilder::default().filters(&filters).build();
    let mut stream = docker.events(Some(options));
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "Docker event stream failed");
                break;
            }
        };
        let is_service = matches!(
            event.typ,
            Some(bollard::models::EventMessageTypeEnum::SERVICE)
        );
        tracing::debug!(
            kind = if is_service { "service" } else { "container" },
            action = event.action.as_deref().unwrap_or(""),
            "Docker event"
        );
        let trigger = if is_service {
            Trigger::Service
        } else {
            Trigger::Container(mark(&event, swarm_mode))
        };
        if matches!(trigger, Trigger::Container(Some(_))) {
            // Marks must not be lost: wait for room rather than drop them.
            if tx.send(trigger).await.is_err() {
                return;
            }
        } else {
            // A full channel already holds a pending poll; dropping this trigger loses nothing.
            let _ = tx.try_send(trigger);
        }
    }
    let _ = tx.send(Trigger::Lost).await;
}

/// The mark a container event carries, keyed like the servers it concerns.
fn mark(event: &bollard::models::EventMessage, swarm_mode: bool) -> Option<Mark> {
    let actor = event.actor.as_ref()?;
    let id = if swarm_mode {
        actor
            .attributes
            .as_ref()?
            .get("com.docker.swarm.task.id")?
            .clone()
    } else {
        actor.id.clone()?
    };
    match event.action.as_deref()? {
        "kill" | "stop" | "pause" => Some(Mark::Draining(id)),
        "die" | "destroy" => Some(Mark::Gone(id)),
        "start" | "unpause" => Some(Mark::Started(id)),
        "health_status: unhealthy" | "health_status: starting" => Some(Mark::Unhealthy(id)),
        "health_status: healthy" => Some(Mark::Healthy(id)),
        _ => None,
    }
}

async fn poll(
    docker: &Docker,
    settings: &DockerSettings,
    publisher: &Publisher,
    problems: &mut ProblemLog,
    memory: &mut LabelMemory,
    marks: &mut Marks,
) -> Result<(), DockerError> {
    let (specs, found) = if settings.swarm_mode {
        let services = docker.list_services(None).await?;
        let tasks = api::list_tasks(&settings.endpoint).await?;
        let services: Vec<SwarmService> = services.into_iter().filter_map(swarm_service).collect();
        marks.retain(&tasks.iter().map(|t| t.id.as_str()).collect());
        convert::swarm_remembering(&services, &tasks, &settings.defaults, marks, memory)
    } else {
        let options = ListContainersOptionsBuilder::default().build();
        let containers = docker.list_containers(Some(options)).await?;
        let containers: Vec<Container> =
            containers.into_iter().filter_map(plain_container).collect();
        marks.retain(&containers.iter().map(|c| c.id.as_str()).collect());
        convert::containers_remembering(&containers, &settings.defaults, marks, memory)
    };
    problems.report(found);
    if !publisher.update(Provider::Docker, specs) {
        publisher.sweep();
    }
    Ok(())
}

fn swarm_service(s: bollard::models::Service) -> Option<SwarmService> {
    let spec = s.spec?;
    let target_ports = spec
        .endpoint_spec
        .and_then(|e| e.ports)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.target_port.and_then(|t| u16::try_from(t).ok()))
        .collect();
    Some(SwarmService {
        id: s.id?,
        name: spec.name?,
        labels: spec.labels.unwrap_or_default(),
        target_ports,
    })
}

fn plain_container(c: bollard::models::ContainerSummary) -> Option<Container> {
    let labels = c.labels.unwrap_or_default();
    // Swarm's own containers belong to services and are read in swarm mode only.
    if labels.contains_key("com.docker.swarm.task.id") {
        return None;
    }
    let networks = c
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, e)| {
            e.ip_address
                .filter(|ip| !ip.is_empty())
                .map(|ip| (name, ip))
        })
        .collect();
    let mut private_ports: Vec<u16> = c
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.private_port)
        .collect();
    private_ports.sort_unstable();
    private_ports.dedup();
    // The container list reports health only inside its status text on API 1.41
    // ("Up 3 seconds (health: starting)").
    let health_failing = c
        .status
        .as_deref()
        .is_some_and(|s| s.contains("(health: starting)") || s.contains("(unhealthy)"));
    Some(Container {
        health_failing,
        id: c.id?,
        name: c.names?.first()?.trim_start_matches('/').to_owned(),
        labels,
        networks,
        private_ports,
    })
}

/// Logs each configuration problem when it first appears and once when it is fixed, rather
/// than on every poll.
#[derive(Debug, Default)]
struct ProblemLog {
    current: BTreeSet<Problem>,
}

impl ProblemLog {
    fn report(&mut self, found: Vec<Problem>) {
        let found: BTreeSet<Problem> = found.into_iter().collect();
        for p in found.difference(&self.current) {
            tracing::warn!(service = %p.service, "{}", p.message);
        }
        for p in self.current.difference(&found) {
            tracing::info!(service = %p.service, "resolved: {}", p.message);
        }
        self.current = found;
    }
}

/// Exponential backoff from 500 ms to 30 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(500),
        }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(30));
        d
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::{EventActor, EventMessage, EventMessageTypeEnum};

    use super::*;

    fn event(action: &str) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some("c1".to_owned()),
                attributes: Some(HashMap::from([(
                    "com.docker.swarm.task.id".to_owned(),
                    "t1".to_owned(),
                )])),
            }),
            ..EventMessage::default()
        }
    }

    #[test]
    fn a_stop_signal_drains_and_an_exit_drops_the_task() {
        let drains = Some(Mark::Draining("t1".into()));
        assert_eq!(mark(&event("kill"), true), drains);
        assert_eq!(mark(&event("stop"), true), drains);
        assert_eq!(mark(&event("die"), true), Some(Mark::Gone("t1".into())));
        assert_eq!(mark(&event("destroy"), true), Some(Mark::Gone("t1".into())));
        assert_eq!(mark(&event("die"), false), Some(Mark::Gone("c1".into())));

        let mut marks = Marks::default();
        marks.apply(Mark::Gone("c1".into()));
        assert!(marks.gone.contains("c1") && marks.draining.contains("c1"));
        // A plain container that restarts keeps its id and is a server again.
        marks.apply(Mark::Started("c1".into()));
        assert!(marks.gone.is_empty() && marks.draining.is_empty());
    }
}
