//! Rolling updates under load (issue 3, item 2): `docker service update --force` of a
//! 3-replica backend with a stop grace period, one task at a time, in both orders, while
//! clients with and without cookies keep sending requests on keep-alive connections. Not one
//! request may fail.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::load::Load;
use crate::swarm::{docker, enabled, try_docker, wait_for, Custom, Tutorial};

/// How long the whole update may take: Docker's pace, not limpet's; generous for a busy
/// two-core machine.
const UPDATE_WITHIN: Duration = Duration::from_secs(90);

#[test]
fn rolling_update_start_first_loses_no_request() {
    if !enabled("rolling_update_start_first_loses_no_request") {
        return;
    }
    rolling_update("start-first");
}

#[test]
fn rolling_update_stop_first_loses_no_request() {
    if !enabled("rolling_update_stop_first_loses_no_request") {
        return;
    }
    rolling_update("stop-first");
}

fn rolling_update(order: &str) {
    // whoami finishes its requests in flight on SIGTERM and then exits; the grace period is
    // what Swarm allows it before SIGKILL.
    let custom = Custom::default().whoami("--stop-grace-period", "10s");
    let label = format!("roll-{}", order.trim_end_matches("-first"));
    let setup = Tutorial::deploy_with(&label, 3, custom);
    let before = containers(&setup.whoami);
    assert_eq!(before.len(), 3, "{before:?}");

    let load = Load::start(&setup.entry, 2, 3, Duration::from_secs(110), 50_000);
    // Let every client settle on a connection (and the sticky ones on a cookie) first.
    wait_for(
        "the load to warm up",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            (load.done() >= 100)
                .then_some(())
                .ok_or(format!("{} requests", load.done()))
        },
    );

    docker([
        "service",
        "update",
        "--detach",
        "--force",
        "--update-parallelism",
        "1",
        "--update-delay",
        "0s",
        "--update-order",
        order,
        &setup.whoami,
    ]);
    let updating = Instant::now();
    let state = wait_for(
        "the rolling update to complete",
        UPDATE_WITHIN,
        Duration::from_millis(250),
        || {
            let state = try_docker([
                "service",
                "inspect",
                "--format",
                "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
                &setup.whoami,
            ])?;
            match state.as_str() {
                "completed" | "paused" | "rollback_completed" => Ok(state),
                _ => Err(state),
            }
        },
    );
    let update_took = updating.elapsed();
    assert_eq!(state, "completed", "the update itself failed");
    // Once Swarm calls it done, the last old task is stopping or stopped: keep the load on
    // until the clients that were pinned to it have had time to be moved.
    let after_update = load.done();
    wait_for(
        "more requests after the update",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            (load.done() >= after_update + 300)
                .then_some(())
                .ok_or(format!("{} requests", load.done() - after_update))
        },
    );
    let summary = load.stop();
    let after = containers(&setup.whoami);
    eprintln!(
        "rolling update ({order}, parallelism 1, stop grace period 10s): update took {update_took:.1?}; \
         containers {before:?} -> {after:?}\n{summary}"
    );

    assert!(
        before.is_disjoint(&after) && after.len() == 3,
        "every container was replaced: {before:?} -> {after:?}"
    );
    assert_eq!(summary.errors(), Vec::<&str>::new(), "connection errors");
    assert_eq!(
        summary.non_2xx(),
        0,
        "non-2xx answers: {:?}",
        summary.statuses()
    );
    for (i, c) in summary.clients.iter().enumerate().filter(|(_, c)| c.sticky) {
        // Every container it could have been pinned to was replaced.
        assert!(c.repins >= 1, "client {i} was never re-pinned: {c:?}");
        assert_eq!(
            c.moved_silently, 0,
            "client {i} moved without a new cookie: {c:?}"
        );
    }
    for (i, c) in summary.clients.iter().enumerate() {
        assert!(
            c.served_by.iter().any(|s| after.contains(s)),
            "client {i} reached a new container: {c:?}"
        );
    }
}

/// The short IDs (whoami's hostnames) of the service's running containers.
fn containers(service: &str) -> BTreeSet<String> {
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
