//! Measures what one edit of a large static file costs the control plane: reading and parsing
//! the file, then building and swapping the table (which frees the previous one). The file is
//! the benchmark's swap table (bench/swap_table.py): 1,000 filler services of 10 servers, of
//! which each generation changes one service's rule.
//!
//! `cargo run --release --example file_swap [services] [servers-per-service] [rounds]`

use std::time::{Duration, Instant};

use limpet::discovery::{file, Publisher};
use limpet::table::spec::Provider;
use limpet::table::StickyGlobals;

/// The same text as bench/swap_table.py renders.
fn render(services: usize, servers: usize, generation: usize) -> String {
    let mut text = String::from(
        "[services.bench]\nrule = \"PathPrefix:/\"\nsticky = true\ncookie_name = \"limpet\"\n\
         servers = [\n  { url = \"http://127.0.0.1:18001\", weight = 1 },\n  \
         { url = \"http://127.0.0.1:18002\", weight = 1 },\n]\n\n",
    );
    for i in 0..services {
        let urls: Vec<String> = (0..servers)
            .map(|j| {
                let port = 20000 + (i * servers + j) % 40000;
                format!("{{ url = \"http://127.0.0.1:{port}\" }}")
            })
            .collect();
        let rule = if i == 0 {
            format!("Host:filler-{i}-g{generation}.invalid")
        } else {
            format!("Host:filler-{i}.invalid")
        };
        text.push_str(&format!(
            "[services.filler{i}]\nrule = \"{rule}\"\nservers = [{}]\n\n",
            urls.join(", ")
        ));
    }
    text
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let services = args.next().unwrap_or(1_000);
    let per_service = args.next().unwrap_or(10);
    let rounds = args.next().unwrap_or(30);
    let dir = std::env::temp_dir().join(format!("limpet-file-swap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("swap.toml");
    let publisher = Publisher::new([Provider::File], StickyGlobals::default());
    let mut reloader = file::Reloader::default();
    let (mut parse, mut publish) = (Vec::new(), Vec::new());
    for generation in 0..=rounds {
        std::fs::write(&path, render(services, per_service, generation)).expect("written");
        let start = Instant::now();
        let text = std::fs::read_to_string(&path).expect("read");
        let specs = reloader.parse(&path, &text).expect("a valid file");
        let parsed = start.elapsed();
        let start = Instant::now();
        assert!(
            publisher.update_shared(Provider::File, specs),
            "every generation changes the table"
        );
        // The first round builds from nothing, as at start-up: not a swap.
        if generation > 0 {
            parse.push(parsed);
            publish.push(start.elapsed());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        (ms(v[v.len() / 2]), ms(v[v.len() - 1]))
    };
    let (pm, pw) = median(&mut parse);
    let (bm, bw) = median(&mut publish);
    let t = publisher.table().load_full();
    println!(
        "{} services, {} servers, {rounds} edits: read + parse median {pm:.2} ms (worst {pw:.2}), \
         build + swap + free median {bm:.2} ms (worst {bw:.2})",
        t.services.len(),
        t.server_count(),
    );
}
