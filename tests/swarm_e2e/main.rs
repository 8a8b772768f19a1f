//! End to end on a real Docker engine in swarm mode: the tutorial's sticky sessions, what
//! happens when the service changes under a pinned client, and `stack.yml`.
//!
//! These tests run only with `LIMPET_SWARM_TESTS=1` and the images from
//! docker/build-images.sh; scripts/test.sh provides both. Without the variable each test says
//! on stderr that it is skipped, and why.
//!
//! Each test deploys its own copy of the setup (see `swarm.rs`) and times what it
//! measures on stderr. Time limits apply only to what limpet controls (from a container's
//! start to its first routed request), never to how fast Docker schedules tasks, which depends
//! on the machine.

mod health;
mod l4;
mod load;
mod replicas;
mod rolling;
mod swarm;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use swarm::{container_started_at, docker, enabled, wait_for, Stack, Tutorial};

/// How soon limpet routes a change once Docker has made it (events plus a burst of re-polls).
const ROUTED_WITHIN: Duration = Duration::from_secs(2);

/// How long Docker itself may take to start or stop a task on a busy machine.
const DOCKER_SLACK: Duration = Duration::from_secs(20);

/// How often the tests look for a change; fine enough to time limpet's two-second promise.
const EVERY: Duration = Duration::from_millis(25);

#[test]
fn sticky_cookie_pins_each_client_to_one_container() {
    if !enabled("sticky_cookie_pins_each_client_to_one_container") {
        return;
    }
    let setup = Tutorial::deploy("sticky", 2);
    let entry = &setup.entry;
    let name = setup.cookie_name();

    // Without a cookie, requests alternate over both containers; each answer carries the
    // tutorial's cookie, named as Traefik v1 names it, whose value is the container's URL.
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let reply = entry.get("/", None);
        assert_eq!(reply.status, 200, "{reply:?}");
        let served_by = reply.served_by().expect("a whoami answer").to_owned();
        let cookie = reply
            .set_cookie()
            .expect("a sticky cookie on a request without one");
        assert_eq!(
            cookie.name, name,
            "Traefik v1's name for backend-{}",
            setup.whoami
        );
        let address: Option<SocketAddr> = cookie
            .value
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok());
        assert!(
            address.is_some_and(|a| a.port() == 8000),
            "the value is the container's URL on the overlay: {cookie:?}"
        );
        assert_eq!(
            cookie.raw,
            format!("{name}={}; HttpOnly; Path=/", cookie.value)
        );
        seen.insert(served_by);
    }
    assert_eq!(
        seen.len(),
        2,
        "six requests without a cookie reached {seen:?}"
    );

    // With the cookie, every request goes to the same container and none is told to change.
    let backends = entry.backends(2, Duration::from_secs(5));
    let (first, second) = {
        let mut it = backends.iter();
        (it.next().expect("two"), it.next().expect("two"))
    };
    for (container, cookie) in [first, second] {
        for i in 0..20 {
            let reply = entry.get("/", Some(&cookie.as_request_header()));
            assert_eq!(reply.status, 200, "{reply:?}");
            assert_eq!(
                reply.served_by(),
                Some(container.as_str()),
                "request {i} with {cookie:?}"
            );
            assert_eq!(
                reply.set_cookie(),
                None,
                "request {i}: a valid cookie is not replaced"
            );
        }
    }
    eprintln!(
        "sticky: 20/20 requests each with {}'s and {}'s cookie stayed put",
        first.0, second.0
    );

    // The cookie is only a container's URL: naming the other one moves the client there, as
    // the tutorial shows.
    let switched = format!("{name}={}", second.1.value);
    let reply = entry.get("/", Some(&switched));
    assert_eq!(reply.served_by(), Some(second.0.as_str()));

    // Other cookies in the header do not disturb the sticky one.
    let crowded = format!("a=1; {}; b=2", first.1.as_request_header());
    assert_eq!(
        entry.get("/", Some(&crowded)).served_by(),
        Some(first.0.as_str())
    );

    // What the backend receives: the X-Forwarded-* headers describe the client's request.
    let reply = entry.get("/headers", Some(&first.1.as_request_header()));
    assert_eq!(
        reply.echoed_header("x-forwarded-host"),
        Some(entry.host.as_str()),
        "{}",
        reply.body
    );
    assert_eq!(
        reply.echoed_header("x-forwarded-proto"),
        Some("http"),
        "{}",
        reply.body
    );
    assert!(
        reply.echoed_header("x-forwarded-for").is_some(),
        "{}",
        reply.body
    );
    assert_eq!(
        reply.echoed_header("host"),
        Some(entry.host.as_str()),
        "{}",
        reply.body
    );
}

#[test]
fn forged_cookies_are_balanced_not_followed() {
    if !enabled("forged_cookies_are_balanced_not_followed") {
        return;
    }
    let setup = Tutorial::deploy("forged", 2);
    let entry = &setup.entry;
    let name = setup.cookie_name();
    let backends = entry.backends(2, Duration::from_secs(5));
    let real: BTreeSet<&str> = backends.values().map(|c| c.value.as_str()).collect();
    let some_ip = backends
        .values()
        .next()
        .and_then(|c| c.value.strip_prefix("http://"))
        .and_then(|a| a.split(':').next())
        .expect("an address");

    // Every forged target here is safe to reach should limpet ever follow one: loopback inside
    // limpet's container, or a container of this test. (A cookie naming an outside address
    // such as 169.254.169.254 would make a regression send traffic off the machine.)
    let forged = [
        "http://127.0.0.1:8000".to_owned(),
        format!("http://{some_ip}:9999"),
        format!("http://{some_ip}:8000/admin"),
        format!("https://{some_ip}:8000"),
        "http://localhost:8000".to_owned(),
        "garbage".to_owned(),
        String::new(),
    ];
    for value in &forged {
        let reply = entry.get("/", Some(&format!("{name}={value}")));
        assert_eq!(reply.status, 200, "forged {value:?}: {reply:?}");
        assert!(reply.served_by().is_some(), "forged {value:?}: {reply:?}");
        let cookie = reply
            .set_cookie()
            .unwrap_or_else(|| panic!("forged {value:?} must be replaced: {reply:?}"));
        assert_eq!(cookie.name, name);
        assert!(
            real.contains(cookie.value.as_str()),
            "forged {value:?} got {cookie:?}; real: {real:?}"
        );
        assert_eq!(
            backends
                .get(reply.served_by().unwrap_or(""))
                .map(|c| &c.value),
            Some(&cookie.value),
            "the new cookie names the container that answered"
        );
    }
}

#[test]
fn scaling_up_routes_new_sessions_to_the_new_container() {
    if !enabled("scaling_up_routes_new_sessions_to_the_new_container") {
        return;
    }
    let setup = Tutorial::deploy("scale", 2);
    let entry = &setup.entry;
    let before = entry.backends(2, Duration::from_secs(5));
    let pinned = before.iter().next().expect("two");

    let scale = format!("{}=3", setup.whoami);
    docker(["service", "scale", "--detach", &scale]);
    let scaled = Instant::now();
    let (newcomer, routed_at) = wait_for(
        "a request without a cookie to reach a third container",
        DOCKER_SLACK,
        EVERY,
        || {
            let reply = entry.try_get("/", None).map_err(|e| e.to_string())?;
            match reply.served_by() {
                Some(c) if !before.contains_key(c) => Ok((c.to_owned(), SystemTime::now())),
                other => Err(format!("{} served by {other:?}", reply.status)),
            }
        },
    );
    let since_scale = scaled.elapsed();
    let since_start = routed_at
        .duration_since(container_started_at(&newcomer))
        .unwrap_or_default();
    eprintln!(
        "scale: new container {newcomer} routed {since_scale:.2?} after `docker service scale` \
         returned, {since_start:.2?} after the container started"
    );
    assert!(
        since_start <= ROUTED_WITHIN,
        "the new container was routed {since_start:?} after it started (limit {ROUTED_WITHIN:?})"
    );

    // Three containers now share new sessions, while the pinned client stays where it was.
    let after = entry.backends(3, Duration::from_secs(5));
    assert!(after.contains_key(&newcomer));
    let reply = entry.get("/", Some(&pinned.1.as_request_header()));
    assert_eq!(reply.served_by(), Some(pinned.0.as_str()));
    assert_eq!(reply.set_cookie(), None);
}

#[test]
fn a_removed_container_hands_its_sessions_to_the_others() {
    if !enabled("a_removed_container_hands_its_sessions_to_the_others") {
        return;
    }
    let setup = Tutorial::deploy("removed", 2);
    let entry = &setup.entry;
    let backends = entry.backends(2, Duration::from_secs(5));
    let (doomed, cookie) = backends.iter().next().expect("two");

    // A task's hostname is its container's short ID, so whoami's answer names the container.
    docker(["rm", "--force", doomed]);
    let removed = Instant::now();
    // A request that reaches limpet before it has seen the container exit is sent to an
    // address that no longer answers at all (the overlay drops the SYN), and waits for
    // limpet's dial timeout (5 s) before it is retried elsewhere. limpet drops the task on
    // the container's `die` event, so this is rare; such a request is abandoned after 1 s and
    // counted, and what is timed is how soon the client is moved.
    let mut abandoned = 0;
    let reply = wait_for(
        "the removed container's client to be served elsewhere",
        DOCKER_SLACK,
        EVERY,
        || {
            let reply = entry
                .try_get_within(
                    "/",
                    Some(&cookie.as_request_header()),
                    Duration::from_secs(1),
                )
                .map_err(|e| {
                    abandoned += 1;
                    e.to_string()
                })?;
            if reply.status == 200 && reply.served_by() != Some(doomed.as_str()) {
                Ok(reply)
            } else {
                Err(format!(
                    "{} served by {:?}",
                    reply.status,
                    reply.served_by()
                ))
            }
        },
    );
    let now_at = reply.served_by().expect("a whoami answer").to_owned();
    eprintln!(
        "removed: {doomed}'s client moved to {now_at} {:.2?} after `docker rm --force` \
         ({abandoned} request(s) abandoned after 1 s)",
        removed.elapsed()
    );
    // Usually the other original container; Swarm's replacement task (after its restart
    // delay) would be as good.
    let fresh = reply
        .set_cookie()
        .expect("a client whose container is gone is given a new cookie");
    assert_ne!(fresh.value, cookie.value, "{fresh:?}");
    if let Some(known) = backends.get(&now_at) {
        assert_eq!(
            fresh.value, known.value,
            "the new cookie names the container that answered"
        );
    }

    // And the client stays there.
    for _ in 0..5 {
        let reply = entry.get("/", Some(&fresh.as_request_header()));
        assert_eq!(reply.served_by(), Some(now_at.as_str()));
        assert_eq!(reply.set_cookie(), None);
    }
}

#[test]
fn relabelling_a_running_service_takes_effect_without_restarting_limpet() {
    if !enabled("relabelling_a_running_service_takes_effect_without_restarting_limpet") {
        return;
    }
    let setup = Tutorial::deploy("relabel", 2);
    let entry = &setup.entry;
    let limpet_tasks = setup.task_ids(&setup.limpet);
    let whoami_tasks = setup.task_ids(&setup.whoami);
    let reply = entry.get("/", None);
    assert_eq!(
        reply.set_cookie().map(|c| c.name),
        Some(setup.cookie_name())
    );

    docker([
        "service",
        "update",
        "--detach",
        "--label-add",
        "traefik.backend.loadbalancer.stickiness.cookieName=session",
        &setup.whoami,
    ]);
    let updated = Instant::now();
    let cookie = wait_for("the new cookie name", DOCKER_SLACK, EVERY, || {
        let reply = entry.try_get("/", None).map_err(|e| e.to_string())?;
        match reply.set_cookie() {
            Some(c) if c.name == "session" => Ok(c),
            other => Err(format!("{} with {other:?}", reply.status)),
        }
    });
    let took = updated.elapsed();
    eprintln!(
        "relabel: `Set-Cookie: session=...` {took:.2?} after `docker service update` returned"
    );
    // A label change touches no task, so Docker has nothing to schedule: all of it is limpet's.
    assert!(
        took <= ROUTED_WITHIN,
        "the label took {took:?} to apply (limit {ROUTED_WITHIN:?})"
    );
    assert!(cookie.raw.ends_with("; HttpOnly; Path=/"), "{cookie:?}");

    let reply = entry.get("/", Some(&cookie.as_request_header()));
    assert!(reply.served_by().is_some());
    assert_eq!(
        reply.set_cookie(),
        None,
        "the renamed cookie pins the client"
    );

    assert_eq!(
        setup.task_ids(&setup.limpet),
        limpet_tasks,
        "limpet was not restarted"
    );
    assert_eq!(
        setup.task_ids(&setup.whoami),
        whoami_tasks,
        "the label did not redeploy whoami"
    );
}

#[test]
fn the_stack_file_deploys_the_tutorial_setup() {
    if !enabled("the_stack_file_deploys_the_tutorial_setup") {
        return;
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("stack.yml");
    let started = Instant::now();
    let stack = Stack::deploy("stack", &file);
    let entry = &stack.entry;
    let backends = entry.backends(2, Duration::from_secs(90));
    eprintln!(
        "stack: deployed and routed to 2 containers in {:.1?}",
        started.elapsed()
    );

    let name = swarm::traefik_cookie_name(&stack.whoami());
    for (container, cookie) in &backends {
        assert_eq!(
            cookie.name,
            name,
            "Traefik v1's name for {}",
            stack.whoami()
        );
        for _ in 0..5 {
            let reply = entry.get("/", Some(&cookie.as_request_header()));
            assert_eq!(reply.served_by(), Some(container.as_str()));
            assert_eq!(reply.set_cookie(), None);
        }
    }

    // The status page (`--web`) on its own published port lists the service and its servers.
    let web = swarm::Entry {
        port: stack.web_port,
        host: "127.0.0.1".to_owned(),
    };
    let page = web.get("/", None);
    assert_eq!(page.status, 200, "{page:?}");
    let page = page.body;
    assert!(page.contains(&stack.whoami()), "status page:\n{page}");
    for cookie in backends.values() {
        assert!(
            page.contains(&cookie.value),
            "status page lacks {}:\n{page}",
            cookie.value
        );
    }
    assert_eq!(web.get("/ping", None).status, 200);
}
