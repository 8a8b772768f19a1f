//! Docker's HEALTHCHECK (issue 4, item 4): a task whose container is `starting` or
//! `unhealthy` gets no new sessions; once healthy it does.
//!
//! whoami runs FROM scratch, so its health check is exec form, `/whoami --probe`, which asks
//! the whoami in the same container for `/healthz`. A test turns one container's check red
//! or green with `docker exec <container> /whoami --set-health fail|ok`.
//!
//! Swarm quirks this test works with (Docker 20.10):
//! - `docker service create --health-cmd` always makes a shell command (`CMD-SHELL`), which an
//!   image without a shell cannot run; so docker/build-images.sh builds a third image,
//!   `limpet-whoami-health`, with an exec-form `HEALTHCHECK`. (Deriving it here with
//!   `docker build` from `FROM <image id>` does not work: the legacy builder looked the ID up
//!   in a registry once the ID had lost its tag.)
//! - A task stays in state `starting` until its container's first passing check, and limpet
//!   routes only tasks in state `running`.
//! - A container that turns `unhealthy` is not left to recover: Swarm fails its task, kills
//!   it and starts a replacement. So "healthy again" on a swarm means the replacement once
//!   its check passes; the replacement starts failing too here (`WHOAMI_HEALTH=fail` is in the
//!   service's environment), which shows the `starting` case a second time.
//! - Health intervals: Docker 20.10 accepts any interval from 1 ms; the image uses 500 ms,
//!   with a 60 s start period (failures while `starting` do not count, so a container the
//!   test has not turned green yet stays `starting` instead of being killed), and two
//!   failures in a row for `unhealthy`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::swarm::{docker, enabled, try_docker, wait_for, Custom, Images, Tutorial};

/// How soon after Docker reports a health change limpet acts on it (an event, then a poll).
const NOTICED_WITHIN: Duration = Duration::from_secs(1);

const DOCKER_SLACK: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_millis(50);

#[test]
fn docker_health_gates_new_sessions() {
    if !enabled("docker_health_gates_new_sessions") {
        return;
    }
    let custom = Custom {
        whoami_image: Some(Images::find().whoami_health),
        routed: Some(0),
        ..Custom::default()
    }
    .whoami("--env", "WHOAMI_HEALTH=fail");
    let setup = Tutorial::deploy_with("health", 2, custom);
    let entry = &setup.entry;

    // Both containers run but fail their checks: `starting`, and no request reaches them.
    // limpet answers by itself all along (503, no whoami), and it has read Docker: a
    // 503 with `Retry-After` would mean it has no table yet.
    let mut answers = BTreeSet::new();
    let starting = wait_for(
        "two running containers failing their first health checks",
        Duration::from_secs(60),
        EVERY,
        || {
            let reply = entry.try_get("/", None).map_err(|e| e.to_string())?;
            assert_eq!(
                reply.served_by(),
                None,
                "a starting container was routed: {reply:?}"
            );
            let loaded = reply.header_values("retry-after").next().is_none();
            answers.insert(reply.status);
            let states = health(&setup.whoami);
            let failing = states
                .iter()
                .filter(|(_, status, streak)| status == "starting" && *streak >= 3)
                .count();
            if loaded && states.len() == 2 && failing == 2 {
                Ok(states.into_iter().map(|(c, _, _)| c).collect::<Vec<_>>())
            } else {
                Err(format!("limpet read Docker: {loaded}; health {states:?}"))
            }
        },
    );
    eprintln!("health: both containers `starting` and unrouted; limpet answered {answers:?}");
    let (first, second) = (&starting[0], &starting[1]);

    // The first turns green: it alone gets the new sessions.
    set_health(first, "ok");
    let green = Instant::now();
    wait_for(
        "the first container to be routed",
        DOCKER_SLACK,
        EVERY,
        || {
            let reply = entry.try_get("/", None).map_err(|e| e.to_string())?;
            (reply.served_by() == Some(first.as_str()))
                .then_some(())
                .ok_or(format!("{} from {:?}", reply.status, reply.served_by()))
        },
    );
    eprintln!(
        "health: {first} routed {:.2?} after its check was turned green",
        green.elapsed()
    );
    for _ in 0..20 {
        let reply = entry.get("/", None);
        assert_eq!(
            reply.served_by(),
            Some(first.as_str()),
            "{second} is still starting"
        );
    }

    set_health(second, "ok");
    let backends = entry.backends(2, DOCKER_SLACK);
    let pinned = backends[first.as_str()].clone();

    // The first turns red. From Docker's `unhealthy` on, it takes no new session; Swarm then
    // kills it, and its pinned client moves without an error.
    set_health(first, "fail");
    let red = Instant::now();
    let mut statuses = BTreeSet::new();
    let mut worst = Duration::ZERO;
    // When the test first saw Docker call it unhealthy (or gone).
    let mut unhealthy_at: Option<Instant> = None;
    let mut after_unhealthy = 0;
    let moved = wait_for(
        "the first container's client to be moved",
        DOCKER_SLACK,
        EVERY,
        || {
            // Read before the requests: anything sent after this saw `unhealthy` too.
            let gone = !matches!(
                health_of(first).as_deref(),
                Some("healthy") | Some("starting")
            );
            let sent = Instant::now();
            let fresh = entry
                .try_get_within("/", None, Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let stuck = entry
                .try_get_within(
                    "/",
                    Some(&pinned.as_request_header()),
                    Duration::from_secs(10),
                )
                .map_err(|e| e.to_string())?;
            worst = worst.max(sent.elapsed());
            statuses.insert(fresh.status);
            statuses.insert(stuck.status);
            if gone {
                let since = *unhealthy_at.get_or_insert(sent);
                // Docker's event reaches limpet a moment after `docker inspect` shows it.
                if since.elapsed() >= NOTICED_WITHIN {
                    after_unhealthy += 1;
                    assert_ne!(
                        fresh.served_by(),
                        Some(first.as_str()),
                        "a new session went to the unhealthy container {:?} after Docker said so",
                        since.elapsed()
                    );
                }
            }
            match (stuck.served_by(), stuck.set_cookie()) {
                (Some(s), Some(c)) if s == second => Ok(c),
                other => Err(format!("pinned client: {other:?}")),
            }
        },
    );
    eprintln!(
        "health: {first} turned red; its client moved to {second} {:.2?} later ({after_unhealthy} \
         round(s) checked after Docker called it unhealthy; statuses {statuses:?}, worst {worst:.2?})",
        red.elapsed()
    );
    assert_eq!(statuses, BTreeSet::from([200]), "no error while it went");
    assert_eq!(backends[second.as_str()].value, moved.value);

    // Swarm replaces the task; the replacement starts failing, so it is `starting` and
    // unrouted until the test turns it green.
    let replacement = wait_for("a replacement container", DOCKER_SLACK, EVERY, || {
        let states = health(&setup.whoami);
        states
            .iter()
            .find(|(c, status, streak)| {
                c != first && c != second && status == "starting" && *streak >= 2
            })
            .map(|(c, _, _)| c.clone())
            .ok_or(format!("{states:?}"))
    });
    for _ in 0..20 {
        let reply = entry.get("/", None);
        assert_eq!(
            reply.served_by(),
            Some(second.as_str()),
            "{replacement} is starting"
        );
    }
    set_health(&replacement, "ok");
    wait_for("the replacement to be routed", DOCKER_SLACK, EVERY, || {
        let reply = entry.try_get("/", None).map_err(|e| e.to_string())?;
        (reply.served_by() == Some(replacement.as_str()))
            .then_some(())
            .ok_or(format!("{} from {:?}", reply.status, reply.served_by()))
    });
    eprintln!("health: the replacement {replacement} was routed once its check passed");
}

/// `docker exec <container> /whoami --set-health <state>`.
fn set_health(container: &str, state: &str) {
    docker(["exec", container, "/whoami", "--set-health", state]);
}

/// The health status of a container, `None` once it is gone.
fn health_of(container: &str) -> Option<String> {
    try_docker([
        "inspect",
        "--format",
        "{{if .State.Running}}{{.State.Health.Status}}{{else}}stopped{{end}}",
        container,
    ])
    .ok()
}

/// The service's running containers: (short id, health status, failed checks among the
/// last five Docker keeps). Docker's own failing streak stays 0 during the start period.
fn health(service: &str) -> Vec<(String, String, u32)> {
    let filter = format!("label=com.docker.swarm.service.name={service}");
    let ids = docker([
        "ps",
        "--quiet",
        "--filter",
        &filter,
        "--filter",
        "status=running",
    ]);
    let mut states = Vec::new();
    for id in ids.lines() {
        if let Ok(state) = try_docker([
            "inspect",
            "--format",
            "{{.State.Health.Status}}{{range .State.Health.Log}} {{.ExitCode}}{{end}}",
            id,
        ]) {
            let mut words = state.split(' ');
            let status = words.next().unwrap_or_default().to_owned();
            let failed = words.filter(|code| *code != "0").count() as u32;
            states.push((id.to_owned(), status, failed));
        }
    }
    states.sort();
    states
}
