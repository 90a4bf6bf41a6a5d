//! Smoke test of the map fan-out load generator's code path (`client::loadgen::run`) against
//! the real server binary: 50 nodes, a few endpoint changes, every node must see every
//! change and the fully decoded sample netmaps must agree with the bitsets. No timing
//! assertions (debug build, shared 2-core machine); the numbers live in BENCHMARKS.md.

mod common;

use common::TestServer;
use headscale::client::loadgen::{self, LoadgenOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_every_node_sees_every_change() {
    let server = TestServer::start_with("tuning:\n  batch_change_delay: 20ms\n");
    server.ok(&["users", "create", "loadgen"]);
    let key = server
        .ok(&["preauthkeys", "create", "-u", "loadgen", "--reusable"])
        .trim()
        .to_string();
    let mut options = LoadgenOptions::new(&server.url(), &key, 50, 5);
    options.sample_every = 5;
    options.pause = Duration::from_millis(100);
    options.server_pid = server.pid();
    let report = loadgen::run(options).await.unwrap();
    eprintln!("{}", report.summary());
    assert_eq!(report.rounds.len(), 5);
    for (n, round) in report.rounds.iter().enumerate() {
        assert_eq!(round.saw, 49, "round {n}: {round:?}");
        assert!(round.latency.is_some(), "round {n}");
    }
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.samples_checked, 10);
    assert!(report.server_rss_kib_after.is_some());
    assert!(!server.log().contains("panicked"));
}
