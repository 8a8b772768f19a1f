//! Measures the control plane's cost of a configuration change: building a routing table
//! of 10,000 servers in 1,000 services from specs and publishing it, as the Docker watcher
//! does after an event. Prints the median and worst of a bounded number of rebuilds.
//!
//! `cargo run --release --example table_swap [services] [servers-per-service] [rounds]`

use std::time::{Duration, Instant};

use limpet::discovery::Publisher;
use limpet::table::rule::parse_v1;
use limpet::table::spec::{
    Provider, RouterSpec, ServerSpec, ServerUrl, ServiceOptions, ServiceSpec, StickySpec,
};
use limpet::table::StickyGlobals;

fn specs(services: usize, per_service: usize, generation: usize) -> Vec<ServiceSpec> {
    (0..services)
        .map(|s| ServiceSpec {
            name: format!("svc-{s}"),
            provider: Provider::Docker,
            routers: vec![RouterSpec {
                name: format!("svc-{s}"),
                rule: parse_v1(&format!("Host:svc-{s}.example;PathPrefix:/")).expect("valid rule"),
                priority: 0,
                tls: false,
            }],
            servers: (0..per_service)
                .map(|i| {
                    // Each generation replaces one task per service, as a rolling update does.
                    let n = s * per_service + i;
                    let task = if i == 0 { generation } else { 0 };
                    ServerSpec {
                        id: format!("task-{s}-{i}-{task}"),
                        url: ServerUrl::http(
                            &format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255),
                            8000 + task as u16,
                        )
                        .expect("valid address"),
                        weight: 1 + (i as u32 % 3),
                        accepts_new: true,
                    }
                })
                .collect(),
            options: ServiceOptions {
                sticky: Some(StickySpec::named(format!("_s{s}"))),
                ..ServiceOptions::default()
            },
            l4: Vec::new(),
        })
        .collect()
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let services = args.next().unwrap_or(1_000);
    let per_service = args.next().unwrap_or(10);
    let rounds = args.next().unwrap_or(20);
    let publisher = Publisher::new([Provider::Docker], StickyGlobals::default());
    let mut times: Vec<Duration> = Vec::with_capacity(rounds);
    for generation in 0..rounds {
        let input = specs(services, per_service, generation);
        let start = Instant::now();
        let published = publisher.update(Provider::Docker, input);
        times.push(start.elapsed());
        assert!(published, "every generation changes the table");
    }
    times.sort();
    let table = publisher.table();
    let t = table.load();
    println!(
        "table of {} services, {} servers: rebuild + swap median {:.1} ms, worst {:.1} ms over {rounds} rounds",
        t.services.len(),
        t.server_count(),
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
    );
}
