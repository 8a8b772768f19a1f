//! Requests without a cookie are spread by smooth weighted round robin: shares exactly as
//! the weights say, and interleaved rather than in runs.

use crate::support;

use support::{spawn_backend, spawn_limpet_with_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_one_and_three_give_exact_interleaved_shares() {
    let light = spawn_backend("light").await;
    let heavy = spawn_backend("heavy").await;
    let limpet = spawn_limpet_with_file(&format!(
        r#"
        [services.app]
        rule = "PathPrefix:/"
        servers = [{{ url = "{}", weight = 1 }}, {{ url = "{}", weight = 3 }}]
        "#,
        light.url, heavy.url
    ))
    .await;

    let mut conn = limpet.connect().await;
    let mut picks = Vec::new();
    for _ in 0..400 {
        let reply = conn.get("/").await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.set_cookies().is_empty(),
            "a service without stickiness sets no cookie"
        );
        picks.push(reply.backend().to_owned());
    }
    assert_eq!(picks.iter().filter(|p| *p == "light").count(), 100);
    assert_eq!(picks.iter().filter(|p| *p == "heavy").count(), 300);
    // Smooth WRR repeats a cycle of four with one light pick, whatever the phase.
    for (i, window) in picks.windows(4).enumerate() {
        let light_picks = window.iter().filter(|p| *p == "light").count();
        assert_eq!(light_picks, 1, "picks {i}..{}: {window:?}", i + 4);
    }
    assert_eq!(light.request_count(), 100);
    assert_eq!(heavy.request_count(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_weights_alternate() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let c = spawn_backend("c").await;
    let limpet = spawn_limpet_with_file(&format!(
        "[services.app]\nrule = \"PathPrefix:/\"\nservers = {}\n",
        support::servers(&[&a.url, &b.url, &c.url])
    ))
    .await;

    let mut picks = Vec::new();
    for _ in 0..30 {
        picks.push(limpet.get("/").await.backend().to_owned());
    }
    for (i, window) in picks.windows(3).enumerate() {
        let mut sorted = window.to_vec();
        sorted.sort();
        assert_eq!(sorted, ["a", "b", "c"], "picks {i}..{}: {window:?}", i + 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_still_get_exact_shares() {
    let light = spawn_backend("light").await;
    let heavy = spawn_backend("heavy").await;
    let limpet = std::sync::Arc::new(
        spawn_limpet_with_file(&format!(
            r#"
            [services.app]
            rule = "PathPrefix:/"
            servers = [{{ url = "{}", weight = 1 }}, {{ url = "{}", weight = 3 }}]
            "#,
            light.url, heavy.url
        ))
        .await,
    );

    // Eight connections at once: every pick takes its own slot of the schedule, so 200 picks
    // are 50 cycles of four whatever the interleaving.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let limpet = std::sync::Arc::clone(&limpet);
            tokio::spawn(async move {
                let mut conn = limpet.connect().await;
                for _ in 0..25 {
                    assert_eq!(conn.get("/").await.status, 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client task");
    }
    assert_eq!((light.request_count(), heavy.request_count()), (50, 150));
}
