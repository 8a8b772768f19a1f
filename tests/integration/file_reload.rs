//! The file provider while limpet runs: edits apply without a restart, and a bad edit is
//! reported and ignored while the last good table keeps serving.

use crate::support;

use std::sync::Arc;

use limpet::table::Table;
use support::{
    eventually, logs, servers, spawn_backend, spawn_limpet_with_file, Backend, Limpet, Req,
};

fn one_service(rule: &str, urls: &[&str]) -> String {
    format!(
        "[services.app]\nrule = \"{rule}\"\nservers = {}\n",
        servers(urls)
    )
}

/// Waits until limpet has logged that it read `limpet`'s file and kept the old table, with
/// `reason` in the line; `before` is the count of such lines before the edit.
async fn wait_for_rejection(limpet: &Limpet, reason: &str, before: usize) {
    let file = limpet.file.display().to_string();
    eventually(&format!("limpet to reject the edit ({reason})"), || {
        logs::count(&[&file, reason]) > before
    })
    .await;
}

/// Logs captured, backends `a` and `b`, and a limpet routing everything to `a` with the
/// table it started with.
async fn serving_a() -> (Backend, Backend, Limpet, Arc<Table>) {
    logs::capture();
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let limpet = spawn_limpet_with_file(&one_service("PathPrefix:/", &[&a.url])).await;
    let good = limpet.table();
    (a, b, limpet, good)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_apply_without_a_restart() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let limpet = spawn_limpet_with_file(&one_service("Host:app.test", &[&a.url])).await;
    assert_eq!(limpet.get("/").await.backend(), "a");

    limpet
        .reload(&one_service("Host:app.test", &[&a.url, &b.url]))
        .await;
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..4 {
        seen.push(limpet.get("/").await.backend().to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"], "the new server takes its share");

    limpet
        .reload(&one_service("Host:new.test", &[&b.url]))
        .await;
    assert_eq!(limpet.get("/").await.status, 404, "the old rule is gone");
    assert_eq!(
        limpet.send(Req::get("/").host("new.test")).await.backend(),
        "b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_edit_keeps_the_last_good_table_until_the_file_is_fixed() {
    let (_a, b, limpet, good) = serving_a().await;

    // Each bad edit would also move traffic to `b` if any part of it were applied.
    let bad_edits = [
        (
            "syntax error",
            format!(
                "[services.app\nrule = \"PathPrefix:/\"\nservers = {}\n",
                servers(&[&b.url])
            ),
            "is not valid",
        ),
        (
            "unknown field",
            format!(
                "[services.app]\nrule = \"PathPrefix:/\"\nstiky = true\nservers = {}\n",
                servers(&[&b.url])
            ),
            "stiky",
        ),
        (
            "bad rule",
            one_service("PathPrefx:/", &[&b.url]),
            "PathPrefx",
        ),
        (
            "bad URL",
            format!(
                "{}[services.more]\nrule = \"Host:more.test\"\nservers = {}\n",
                one_service("PathPrefix:/", &[&b.url]),
                servers(&["http://127.0.0.1:8000/app"])
            ),
            "http://127.0.0.1:8000/app",
        ),
    ];
    for (what, text, reason) in &bad_edits {
        let before = logs::count(&[&limpet.file.display().to_string(), reason]);
        limpet.write_file(text);
        wait_for_rejection(&limpet, reason, before).await;
        assert!(
            Arc::ptr_eq(&good, &limpet.table()),
            "{what}: a new table was published"
        );
        for _ in 0..3 {
            let reply = limpet.get("/").await;
            assert_eq!(
                (reply.status.as_u16(), reply.backend()),
                (200, "a"),
                "{what}"
            );
        }
    }

    limpet.reload(&one_service("PathPrefix:/", &[&b.url])).await;
    assert_eq!(
        limpet.get("/").await.backend(),
        "b",
        "the fixed file applies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_file_keeps_the_table_and_its_return_applies() {
    let (_a, b, limpet, good) = serving_a().await;

    let before = logs::count(&[&limpet.file.display().to_string(), "cannot read"]);
    std::fs::remove_file(&limpet.file).expect("remove the file");
    wait_for_rejection(&limpet, "cannot read", before).await;
    assert!(Arc::ptr_eq(&good, &limpet.table()));
    assert_eq!(limpet.get("/").await.backend(), "a");

    limpet.reload(&one_service("PathPrefix:/", &[&b.url])).await;
    assert_eq!(limpet.get("/").await.backend(), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_utf8_is_reported_and_its_fix_applies() {
    let (_a, b, limpet, good) = serving_a().await;

    let file = limpet.file.display().to_string();
    let before = logs::count(&[&file, "cannot read", "UTF-8"]);
    let mut bytes = one_service("PathPrefix:/", &[&b.url]).into_bytes();
    bytes.extend_from_slice(b"# \xff\xfe\n");
    let aside = limpet.file.with_extension("new");
    std::fs::write(&aside, bytes).expect("write the new file");
    std::fs::rename(&aside, &limpet.file).expect("replace the file");
    eventually("limpet to report the file as not UTF-8", || {
        logs::count(&[&file, "cannot read", "UTF-8"]) > before
    })
    .await;
    assert!(Arc::ptr_eq(&good, &limpet.table()));
    assert_eq!(limpet.get("/").await.backend(), "a");

    limpet.reload(&one_service("PathPrefix:/", &[&b.url])).await;
    assert_eq!(limpet.get("/").await.backend(), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_when_its_server_is_removed_still_completes() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let limpet = spawn_limpet_with_file(&one_service("PathPrefix:/", &[&a.url])).await;

    let mut conn = limpet.connect().await;
    let in_flight = tokio::spawn(async move { conn.send(Req::get("/held")).await });
    a.arrival().await;
    limpet.reload(&one_service("PathPrefix:/", &[&b.url])).await;
    assert_eq!(
        limpet.get("/").await.backend(),
        "b",
        "new requests follow the new file"
    );

    a.open_gate();
    let reply = support::within("the in-flight request", in_flight)
        .await
        .expect("client task");
    assert_eq!(
        (reply.status.as_u16(), reply.text()),
        (200, "held response from a")
    );
}

/// The watcher skips reading a file whose metadata it has already seen settled. An edit in
/// place that keeps the length and puts the old modification time back (as `cp -p` or a
/// restore from an archive can) must still be read: the status-change time gives it away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_that_keeps_length_and_mtime_is_still_read() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    // Same length: the two backends' URLs differ only in their port numbers.
    assert_eq!(a.url.len(), b.url.len());
    let limpet = spawn_limpet_with_file(&one_service("PathPrefix:/", &[&a.url])).await;
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let set_mtime = |path: &std::path::Path| {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(long_ago).unwrap();
    };
    set_mtime(&limpet.file);
    // Long enough for the watcher to read the file again and take its stamp as settled.
    tokio::time::sleep(support::limpet::POLL * 4).await;
    let before = limpet.table();
    // Over the old bytes, without truncating: the watcher never sees a shorter file between.
    let mut file = std::fs::File::options()
        .write(true)
        .open(&limpet.file)
        .unwrap();
    std::io::Write::write_all(&mut file, one_service("PathPrefix:/", &[&b.url]).as_bytes())
        .unwrap();
    drop(file);
    set_mtime(&limpet.file);
    eventually("limpet to publish the edited file", || {
        !Arc::ptr_eq(&before, &limpet.table())
    })
    .await;
    assert_eq!(limpet.get("/").await.backend(), "b");
}
