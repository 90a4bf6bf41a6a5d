//! The load generator's sparse tailnet against the real server binary (issue #14): 3 users
//! with 4 nodes each, the first of each a tagged server, under `benches/policy.rs`'s sparse
//! policy scaled down. Every stream must converge to exactly the peers the policy engine
//! gives it, a policy edit must reach every stream as a new packet filter, and after a
//! restart of the server on the same data dir (the reconnect storm) every stream must have
//! a full map again with the same peers, the event log having gained only the server's own
//! `ServerStarted`. No timing assertions: the numbers live in BENCHMARKS.md.

mod common;

use common::TestServer;
use headscale::client::loadgen::{self, LoadgenOptions, Restart, ServerCli, Tailnet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_tailnet_converges_to_the_policy_through_an_edit_and_a_restart() {
    // Every simulated node connects from 127.0.0.1, as in the benchmarks.
    let server = TestServer::start_with(
        "trusted_proxies: [127.0.0.1/32]\ntuning:\n  batch_change_delay: 20ms\n",
    );
    let url = server.url();
    let cli = ServerCli::new(common::BIN, &server.config);
    let pid = server.pid();
    let server = Arc::new(Mutex::new(server));
    let restarted = server.clone();
    let restart = Restart(Arc::new(move || {
        let mut server = restarted.lock().unwrap_or_else(|e| e.into_inner());
        server.stop();
        server.spawn();
        Ok(server.pid())
    }));

    let mut options = LoadgenOptions::new(&url, "", 0, 3);
    options.tailnet = Tailnet::Sparse {
        users: 3,
        per_user: 4,
    };
    options.cli = Some(cli);
    options.sample_every = 2;
    options.pause = Duration::from_millis(100);
    options.server_pid = pid;
    options.policy_edit = true;
    options.restart = Some(restart);
    let report = loadgen::run(options).await.unwrap();
    eprintln!("{}", report.summary());

    assert_eq!(report.nodes, 12);
    assert_eq!((report.users, report.tagged), (3, 3));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.converged);
    // Sparse indeed: nobody sees all 11 others, and the changer is seen by someone.
    assert!(
        report.expected_peers_mean < 11.0,
        "{}",
        report.expected_peers_mean
    );
    assert!(report.changer_viewers > 0);
    assert_eq!(report.rounds.len(), 3);
    for (n, round) in report.rounds.iter().enumerate() {
        assert_eq!(round.saw, report.changer_viewers, "round {n}: {round:?}");
        assert!(round.latency.is_some(), "round {n}");
    }
    assert_eq!(report.policy_edit_delivered, 12);
    assert!(report.policy_edit.is_some());
    assert_eq!(report.storm_remapped, 12);
    assert!(report.storm_recovery.is_some());
    assert_eq!(report.storm_events_appended, Some(0));
    assert_eq!(report.storm_server_starts, Some(1));
    assert_eq!(report.samples_checked, 6);
    let server = server.lock().unwrap_or_else(|e| e.into_inner());
    assert!(!server.log().contains("panicked"));
}
