//! docs/metrics.md and the exposition agree: every metric in the table is exposed with the
//! documented type, and every exposed family is in the table. The exposition comes from the
//! real agent after a freeze cycle with a blocked writer, so every family has a sample.

mod telemetry_support;

use std::collections::BTreeMap;
use std::time::Duration;

use telemetry_support::{families, not_root, sample, wait_for, Agent, LoopFs, Writer};

/// (type, eBPF-only) of every metric in the docs table.
fn documented() -> BTreeMap<String, (String, bool)> {
    let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .unwrap();
    let table = md
        .split("## Metrics")
        .nth(1)
        .expect("a Metrics section")
        .split("\n## ")
        .next()
        .unwrap();
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_string();
            let ty = cells[2].to_string();
            let ebpf_only = cells[5].starts_with("*eBPF*");
            (name, (ty, ebpf_only))
        })
        .collect()
}

#[test]
fn the_docs_table_parses() {
    let d = documented();
    assert!(d.len() >= 20, "{d:?}");
    assert_eq!(d["guest_fs_freeze_duration_seconds"].0, "histogram");
    assert!(d["guest_fs_blocked_writers"].1);
    assert!(!d["guest_ping_requests_total"].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_and_exposition_list_the_same_metrics_with_the_same_types() {
    if not_root() {
        return;
    }
    let fs = LoopFs::new(16);
    let agent = Agent::start(fs.scratch(), &["--ebpf", "required"]);
    let mut c = agent.client().await;
    agent.ping(&mut c).await;
    Agent::quiesce(&mut c, &fs.mp(), None).await;
    let w = Writer::start(&fs, "w");
    // With the observer up, wait until it has seen the writer blocked (that gauge only has
    // samples while a writer is blocked).
    let during = wait_for(Duration::from_secs(10), || {
        let t = agent.scrape();
        let ebpf = sample(&t, "guest_ebpf_up") == Some(1.0);
        (!ebpf || t.contains("guest_fs_blocked_writers{")).then_some(t)
    })
    .expect("the blocked writer reached the metrics");
    Agent::thaw(&mut c).await;
    assert!(w.finish());
    let ebpf = sample(&during, "guest_ebpf_up") == Some(1.0);
    // The stall is recorded when the observer reports the writer resumed.
    let text = wait_for(Duration::from_secs(5), || {
        let t = agent.scrape();
        (!ebpf || t.contains("guest_fs_writer_stall_seconds_count")).then_some(t)
    })
    .expect("the stall reached the metrics");
    let mut exposed = families(&text);
    // A gauge that only has samples while writers are blocked: take it from the scrape
    // made during the freeze.
    exposed.extend(families(&during));

    let docs = documented();
    for (name, (ty, ebpf_only)) in &docs {
        match exposed.get(name) {
            Some(t) => assert_eq!(t, ty, "{name}: exposed as {t}, documented as {ty}"),
            None if *ebpf_only && !ebpf => {}
            None => panic!("{name} is documented but not exposed:\n{text}"),
        }
    }
    for (name, ty) in &exposed {
        assert!(
            docs.contains_key(name),
            "{name} ({ty}) is exposed but missing from docs/metrics.md"
        );
    }
}
