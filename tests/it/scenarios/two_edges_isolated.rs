//! Incident: two edge nodes cut off from the ledger at the same time. Each
//! spools on its own; some clients sent the same events (same ids) to both
//! nodes. When the links come back both drain, and every id is recorded once.

use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::events::spec_example;
use test_support::ledgerd::Ledgerd;
use test_support::proxy::{Mode, Proxy};
use test_support::spoold::Spoold;

use super::{drain, forwarding, ledger_count, post_until_acked, LoadReport, Outcome};

const ONLY: usize = 1500;
const BOTH: usize = 500;
const CUT: Duration = Duration::from_secs(2);

fn events(prefix: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| spec_example(&format!("{prefix}-{i}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_two_edges_isolated() {
    let ledger = Ledgerd::start().await.expect("start ledgerd");
    let target = format!("127.0.0.1:{}", ledger.port).parse().expect("addr");
    let mut nodes = Vec::new();
    for node in ["edge-a", "edge-b"] {
        let proxy = Proxy::start(target).await.expect("proxy");
        proxy.set_mode(Mode::Partition);
        let mut opts = forwarding(&[&proxy.url()]);
        opts.args = vec!["--node-id".into(), node.into()];
        let s = Spoold::start(opts).await.expect("start spoold");
        nodes.push((node, proxy, s));
    }
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut report = LoadReport::default();
    for (node, _, s) in &nodes {
        let url = s.url("/v1/events/batch");
        for chunk in [events(node, ONLY), events("both", BOTH)] {
            for part in chunk.chunks(250) {
                report.merge(post_until_acked(&c, &url, part.to_vec(), deadline).await);
            }
        }
    }
    tokio::time::sleep(CUT).await;
    assert!(ledger_count(&ledger).await.ids.is_empty(), "both nodes are cut off");

    for (_, proxy, _) in &nodes {
        proxy.set_mode(Mode::Pass);
    }
    let spoolds: Vec<&Spoold> = nodes.iter().map(|(_, _, s)| s).collect();
    let drain = drain(&spoolds, Instant::now()).await;

    // Each node's own events carry its node id; the shared ones are recorded
    // once, from whichever node came first.
    let all = ledger.all_events().await.expect("ledger events");
    for e in &all {
        let id = e["event"]["id"].as_str().expect("id");
        let node = e["node"].as_str().expect("node");
        if !id.starts_with("both-") {
            assert!(id.starts_with(node), "{id} recorded from {node}");
        }
    }
    assert_eq!(all.iter().filter(|e| e["event"]["id"].as_str().is_some_and(|i| i.starts_with("both-"))).count(), BOTH);
    let scale = format!("2 nodes cut off, {ONLY} own events each + {BOTH} ids sent to both, held {} s", CUT.as_secs());
    Outcome::new("two_edges_isolated", report, drain, "proxy", scale)
        .check(&ledger)
        .await;
}
