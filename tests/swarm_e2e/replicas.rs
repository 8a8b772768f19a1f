//! Several limpet replicas agree (issue 3, item 7): two limpet services watching the same
//! backend, sharing one sealed-cookie key file as a Docker secret. A cookie either issues is
//! honoured by the other, and when the pinned container is removed both move each session to
//! the same new container (rendezvous hashing on the session), so a client whose requests
//! alternate between the replicas does not flap.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::swarm::{docker, enabled, wait_for, Custom, Entry, Secret, SetCookie, Tutorial};

/// Sessions pinned to the container that is removed. Each sealed value is distinct, so each
/// is its own session; with three containers left to choose from, that all ten land on the
/// same one by chance has a probability of 3^-9.
const SESSIONS: usize = 10;

#[test]
fn replicas_honour_each_others_cookies_and_re_pin_alike() {
    if !enabled("replicas_honour_each_others_cookies_and_re_pin_alike") {
        return;
    }
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).expect("random bytes");
    // Dropped last: Docker keeps a secret while a service uses it.
    let secret = Secret::create("keys", format!("k1 {}\n", STANDARD.encode(key)).as_bytes());
    let mut custom = Custom::default().limpet(
        "--secret",
        format!("source={},target=limpet-keys,mode=0400", secret.name),
    );
    custom.limpet_args = vec![
        "--sticky.mode=sealed".to_owned(),
        "--sticky.keyfile=/run/secrets/limpet-keys".to_owned(),
    ];
    let mut setup = Tutorial::deploy_with("replicas", 3, custom.clone());
    let a = setup.entry.clone();
    let b = setup.add_limpet("b", &custom);
    let from_a = a.backends(3, Duration::from_secs(5));
    let from_b = b.backends(3, Duration::from_secs(60));
    assert_eq!(
        from_a.keys().collect::<Vec<_>>(),
        from_b.keys().collect::<Vec<_>>(),
        "both replicas see the same containers"
    );

    // A cookie issued by one replica pins the client on the other.
    for (issuer, other, cookies) in [("A", &b, &from_a), ("B", &a, &from_b)] {
        for (container, cookie) in cookies {
            assert!(
                !cookie.value.contains(':') && !cookie.value.contains("10."),
                "a sealed value reveals no address: {cookie:?}"
            );
            for _ in 0..5 {
                let reply = other.get("/", Some(&cookie.as_request_header()));
                assert_eq!(
                    reply.served_by(),
                    Some(container.as_str()),
                    "{issuer}'s cookie"
                );
                assert_eq!(
                    reply.set_cookie(),
                    None,
                    "{issuer}'s cookie is honoured as it is"
                );
            }
        }
    }
    eprintln!("replicas: cookies issued by either replica pin to the same container on the other");

    // Sessions pinned to one container, issued by both replicas in turn.
    let doomed = from_a.keys().next().expect("three").clone();
    let mut sessions: Vec<SetCookie> = Vec::new();
    let mut turn = 0;
    wait_for(
        "sessions pinned to one container",
        Duration::from_secs(30),
        Duration::ZERO,
        || {
            turn += 1;
            let entry = if turn % 2 == 0 { &a } else { &b };
            let reply = entry.try_get("/", None).map_err(|e| e.to_string())?;
            if reply.served_by() == Some(doomed.as_str()) {
                sessions.push(reply.set_cookie().ok_or("no cookie")?);
            }
            (sessions.len() >= SESSIONS)
                .then_some(())
                .ok_or(format!("{} so far", sessions.len()))
        },
    );

    let distinct: BTreeSet<&str> = sessions.iter().map(|c| c.value.as_str()).collect();
    assert_eq!(
        distinct.len(),
        SESSIONS,
        "each sealed value is its own session"
    );

    docker(["rm", "--force", &doomed]);
    let removed = Instant::now();
    // Swarm replaces the task; wait until both replicas route to the replacement, so that
    // they choose among the same containers.
    let before: BTreeSet<&String> = from_a.keys().collect();
    let replacement = wait_for(
        "both replicas to route to the replacement container",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            let seen = |entry: &Entry| -> Result<BTreeSet<String>, String> {
                let mut seen = BTreeSet::new();
                for _ in 0..6 {
                    let reply = entry
                        .try_get_within("/", None, Duration::from_secs(10))
                        .map_err(|e| e.to_string())?;
                    seen.extend(reply.served_by().map(str::to_owned));
                }
                Ok(seen)
            };
            let (on_a, on_b) = (seen(&a)?, seen(&b)?);
            let new: Vec<&String> = on_a
                .intersection(&on_b)
                .filter(|c| !before.contains(c))
                .collect();
            match (
                new.first(),
                on_a.contains(&doomed) || on_b.contains(&doomed),
            ) {
                (Some(c), false) => Ok((*c).clone()),
                _ => Err(format!("A reached {on_a:?}, B reached {on_b:?}")),
            }
        },
    );
    eprintln!(
        "replicas: {doomed} removed; both replicas route to its replacement {replacement} after {:.1?}",
        removed.elapsed()
    );

    // Each stale session goes to one container, whichever replica is asked and however often.
    let mut moved_to: BTreeMap<String, usize> = BTreeMap::new();
    for (i, stale) in sessions.iter().enumerate() {
        let mut chosen: Option<String> = None;
        for round in 0..4 {
            let (name, entry, other) = if round % 2 == 0 {
                ("A", &a, &b)
            } else {
                ("B", &b, &a)
            };
            let reply = entry.get("/", Some(&stale.as_request_header()));
            assert_eq!(reply.status, 200, "{reply:?}");
            let served_by = reply.served_by().expect("a whoami answer").to_owned();
            assert_ne!(served_by, doomed);
            let fresh = reply
                .set_cookie()
                .unwrap_or_else(|| panic!("session {i} on {name}: a stale cookie is replaced"));
            match &chosen {
                None => chosen = Some(served_by.clone()),
                Some(c) => assert_eq!(
                    c, &served_by,
                    "session {i}: replica {name} re-pinned it elsewhere"
                ),
            }
            // The new cookie holds on the other replica.
            let reply = other.get("/", Some(&fresh.as_request_header()));
            assert_eq!(reply.served_by(), Some(served_by.as_str()), "session {i}");
            assert_eq!(reply.set_cookie(), None, "session {i}");
        }
        *moved_to.entry(chosen.expect("four rounds")).or_default() += 1;
    }
    eprintln!(
        "replicas: the {SESSIONS} sessions of {doomed} moved, by either replica alike, to {moved_to:?}"
    );
    assert!(
        moved_to.len() >= 2,
        "sessions spread by their own key, not all to one container: {moved_to:?}"
    );

    // A client alternating between the replicas, keeping whatever cookie it is given.
    let mut cookie = sessions[0].clone();
    let mut served = BTreeSet::new();
    let mut replaced = 0;
    for i in 0..12 {
        let entry = if i % 2 == 0 { &a } else { &b };
        let reply = entry.get("/", Some(&cookie.as_request_header()));
        served.extend(reply.served_by().map(str::to_owned));
        if let Some(fresh) = reply.set_cookie() {
            replaced += 1;
            cookie = fresh;
        }
    }
    eprintln!(
        "replicas: an alternating client was served by {served:?}, given {replaced} new cookie(s)"
    );
    assert_eq!(served.len(), 1, "no flapping: {served:?}");
    assert_eq!(replaced, 1, "re-pinned once");
    drop(setup);
    drop(secret);
}
