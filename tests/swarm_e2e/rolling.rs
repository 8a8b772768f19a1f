//! Rolling updates under load (issue 3, item 2): `docker service update --force` of a
//! 3-replica backend with a stop grace period, one task at a time, in both orders, while
//! clients with and without cookies keep sending requests on keep-alive connections. Not one
//! request may fail.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::load::{Load, Summary};
use crate::swarm::{containers, docker, enabled, try_docker, wait_for, Custom, Entry, Tutorial};

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

/// The same rolling update through HAProxy 2.6 (Debian's binary in a scratch image, see
/// docker/build-haproxy-image.sh) finding the tasks by Swarm's DNS (`tasks.<service>`), with
/// its own sticky cookie: the usual HAProxy setup on a swarm, for comparison. Ignored unless
/// asked for (`--run-ignored only`), since it needs that image; it prints what the clients
/// saw and asserts only that HAProxy served the load (a comparison, not HAProxy's test).
#[test]
#[ignore = "a comparison with HAProxy: build its image with docker/build-haproxy-image.sh"]
fn rolling_update_through_haproxy_for_comparison() {
    if !enabled("rolling_update_through_haproxy_for_comparison") {
        return;
    }
    let image = std::env::var("HAPROXY_IMAGE_ID")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            docker([
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                "limpet-compare-haproxy:latest",
            ])
        });
    for order in ["start-first", "stop-first"] {
        let custom = Custom::default().whoami("--stop-grace-period", "10s");
        let mut setup = Tutorial::deploy_with("roll-haproxy", 3, custom);
        let port = setup.add_service(
            "haproxy",
            &image,
            &[("--env".to_owned(), format!("BACKEND={}", setup.whoami))],
        );
        let entry = Entry {
            port,
            host: setup.entry.host.clone(),
        };
        entry.backends(3, Duration::from_secs(60));
        let (summary, took, before, after) = update_under_load(&setup, &entry, order);
        eprintln!(
            "HAProxy + Swarm DNS, rolling update ({order}): update took {took:.1?}; containers \
             {before:?} -> {after:?}\n{summary}"
        );
        assert!(
            summary.statuses().get(&200).is_some_and(|n| *n > 0),
            "{summary}"
        );
    }
}

fn rolling_update(order: &str) {
    // whoami finishes its requests in flight on SIGTERM and then exits; the grace period is
    // what Swarm allows it before SIGKILL.
    let custom = Custom::default().whoami("--stop-grace-period", "10s");
    let label = format!("roll-{}", order.trim_end_matches("-first"));
    let setup = Tutorial::deploy_with(&label, 3, custom);
    let (summary, update_took, before, after) = update_under_load(&setup, &setup.entry, order);
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

/// Runs the load through `entry` while Swarm replaces every task of the backend in `order`;
/// returns what the clients saw, how long the update took, and the containers before and
/// after.
fn update_under_load(
    setup: &Tutorial,
    entry: &Entry,
    order: &str,
) -> (Summary, Duration, BTreeSet<String>, BTreeSet<String>) {
    let before = containers(&setup.whoami);
    assert_eq!(before.len(), 3, "{before:?}");

    let load = Load::start(entry, 2, 3, Duration::from_secs(110), 50_000);
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
    (summary, update_took, before, after)
}
