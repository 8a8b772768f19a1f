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
//!   service's environment), which shows the `starting` case a second time. A container
//!   that really does turn healthy again is shown with plain containers (limpet's
//!   `--docker` without swarm mode), where Docker leaves an unhealthy container running.
//! - Health intervals: Docker 20.10 accepts any interval from 1 ms; the image uses 500 ms,
//!   with a 60 s start period (failures while `starting` do not count, so a container the
//!   test has not turned green yet stays `starting` instead of being killed), and two
//!   failures in a row for `unhealthy`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::swarm::{
    containers, docker, enabled, free_ports, try_docker, unique_name, wait_for, Custom, Entry,
    Images, Tutorial,
};

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
    let mut states = Vec::new();
    for id in &containers(service) {
        if let Ok(state) = try_docker([
            "inspect",
            "--format",
            "{{.State.Health.Status}}{{range .State.Health.Log}} {{.ExitCode}}{{end}}",
            id.as_str(),
        ]) {
            let mut words = state.split(' ');
            let status = words.next().unwrap_or_default().to_owned();
            let failed = words.filter(|code| *code != "0").count() as u32;
            states.push((id.clone(), status, failed));
        }
    }
    states.sort();
    states
}

/// Plain containers (limpet's `--docker` without `--docker.swarmmode`), where Docker leaves an
/// unhealthy container running, so it can turn healthy again: while unhealthy it gets no
/// traffic, and its pinned client is re-pinned to the other container with a new cookie (as
/// when limpet's own health check fails a server); once healthy it takes new sessions again.
#[test]
fn an_unhealthy_container_gets_new_sessions_again_once_healthy() {
    if !enabled("an_unhealthy_container_gets_new_sessions_again_once_healthy") {
        return;
    }
    let images = Images::find();
    let name = unique_name("plainhealth");
    let mut made = Plain::default();
    made.network = Some(name.clone());
    docker(["network", "create", "--label=com.limpet.e2e", &name]);
    let entry = Entry {
        port: free_ports::<1>()[0],
        host: format!("{name}.e2e.test"),
    };
    let labels = [
        format!("traefik.backend={name}"),
        format!("traefik.frontend.rule=Host:{}", entry.host),
        "traefik.port=8000".to_owned(),
        format!("traefik.docker.network={name}"),
        "traefik.backend.loadbalancer.stickiness=true".to_owned(),
    ];
    for n in ["a", "b"] {
        let mut args = vec![
            "run".to_owned(),
            "--detach".to_owned(),
            "--label=com.limpet.e2e".to_owned(),
            format!("--name={name}-{n}"),
            format!("--hostname={name}-{n}"),
            format!("--network={name}"),
        ];
        args.extend(labels.iter().map(|l| format!("--label={l}")));
        args.push(images.whoami_health.clone());
        made.containers.push(docker(args));
    }
    let publish = format!("127.0.0.1:{}:80", entry.port);
    made.containers.push(docker([
        "run",
        "--detach",
        "--label=com.limpet.e2e",
        "--label=traefik.enable=false",
        &format!("--name={name}-limpet"),
        &format!("--network={name}"),
        "--volume=/var/run/docker.sock:/var/run/docker.sock:ro",
        &format!("--publish={publish}"),
        &images.limpet,
        "--docker",
        "--docker.watch",
        "--loglevel=DEBUG",
    ]));
    let (a, b) = (format!("{name}-a"), format!("{name}-b"));
    let backends = entry.backends(2, Duration::from_secs(60));
    let pinned = backends[&a].clone();

    set_health(&a, "fail");
    wait_for(
        "a to be unhealthy",
        DOCKER_SLACK,
        EVERY,
        || match health_of(&a).as_deref() {
            Some("unhealthy") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let unhealthy = Instant::now();
    // Once limpet has seen it (an event, then a poll), every new session goes to b.
    wait_for("new sessions to avoid a", DOCKER_SLACK, EVERY, || {
        let served: Vec<_> = (0..6)
            .map(|_| entry.get("/", None).served_by().map(str::to_owned))
            .collect();
        served
            .iter()
            .all(|s| s.as_deref() == Some(b.as_str()))
            .then_some(())
            .ok_or(format!("{served:?}"))
    });
    let noticed = unhealthy.elapsed();
    for _ in 0..20 {
        assert_eq!(
            entry.get("/", None).served_by(),
            Some(b.as_str()),
            "a is unhealthy"
        );
        let reply = entry.get("/", Some(&pinned.as_request_header()));
        assert_eq!(
            reply.served_by(),
            Some(b.as_str()),
            "its pinned client is re-pinned"
        );
        assert_eq!(
            reply.set_cookie().map(|c| c.value),
            Some(backends[&b].value.clone()),
            "with b's cookie"
        );
    }
    assert_eq!(
        health_of(&a).as_deref(),
        Some("unhealthy"),
        "still unhealthy"
    );

    set_health(&a, "ok");
    let green = Instant::now();
    wait_for("a to take new sessions again", DOCKER_SLACK, EVERY, || {
        let reply = entry.try_get("/", None).map_err(|e| e.to_string())?;
        (reply.served_by() == Some(a.as_str()))
            .then_some(())
            .ok_or(format!("{:?}", reply.served_by()))
    });
    eprintln!(
        "plain health: new sessions avoided the unhealthy container {noticed:.2?} after Docker \
         said unhealthy, and reached it again {:.2?} after its check was turned green",
        green.elapsed()
    );
}

/// Plain containers and a network a test made, removed when dropped (limpet's log first if
/// the test failed).
#[derive(Default)]
struct Plain {
    containers: Vec<String>,
    network: Option<String>,
}

impl Drop for Plain {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(limpet) = self.containers.last() {
                if let Ok(out) = std::process::Command::new("docker")
                    .args(["logs", "--tail", "80", limpet])
                    .output()
                {
                    eprintln!(
                        "---- docker logs {limpet}\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        if !self.containers.is_empty() {
            let mut rm = vec!["rm".to_owned(), "--force".to_owned()];
            rm.extend(self.containers.iter().cloned());
            let _ = try_docker(rm);
        }
        if let Some(network) = &self.network {
            let _ = try_docker(["network", "rm", network]);
        }
    }
}
