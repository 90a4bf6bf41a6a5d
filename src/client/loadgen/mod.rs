//! The map fan-out load generator behind `src/bin/loadgen.rs` (and its tests). Phases:
//! - setup: the tailnet's users, keys and policy through the server's CLI (`cli`), then N
//!   machines register (one reusable key per owner) and open N map streams, `concurrency`
//!   at a time;
//! - convergence: every stream's peer set (a bitset kept from a cheap decode of every
//!   frame, `stream`) must equal exactly the peers the policy gives that node, as the
//!   server's own policy engine computes them (`tailnet`);
//! - rounds: the node the most others see changes its endpoints R times (lite updates); a
//!   round's fan-out latency runs from sending the change until the last of its viewers saw
//!   it;
//! - policy edit (optional): a policy that changes every node's packet filter, timed from
//!   just before `policy set` until every stream received a new filter;
//! - reconnect storm (optional): the server is restarted under all N streams, which reopen
//!   (same machine and node keys); timed until every stream has a full map again and the
//!   peer sets match the policy, and the event log must not grow.

pub mod cli;
pub mod report;
mod stream;
pub mod tailnet;

pub use cli::{Keys, ServerCli};
pub use report::{rss_kib, LoadgenReport, RoundResult};
pub use tailnet::{Owner, Tailnet};

use super::{fetch_server_key, ClientError};
use report::{cpu_time, status_kib};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stream::{lock, marker, Bitset, Node, Reader, Shared};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

const MAX_ROUNDS: usize = 40_000;
/// No frames for this long after convergence: the opening churn is over.
const QUIET: Duration = Duration::from_millis(500);
/// Mismatching nodes named in a convergence failure.
const SHOWN_MISMATCHES: usize = 5;
/// The epoch of the policy-edit watch and of the storm (0 means "not watching").
const EPOCH: u64 = 1;
/// The event a server start records (the only one a storm may append).
const SERVER_STARTED: &str = "ServerStarted";

/// Restarts the server (the storm); returns the new server's PID when known.
#[derive(Clone)]
pub struct Restart(pub Arc<dyn Fn() -> Result<Option<u32>, String> + Send + Sync>);

impl std::fmt::Debug for Restart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Restart")
    }
}

#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    pub server_url: String,
    pub tailnet: Tailnet,
    /// Nodes of a mesh tailnet (a sparse one has users × per_user).
    pub nodes: usize,
    /// The keys; when empty, `cli` creates them (and the users and policy).
    pub keys: Keys,
    /// The server's CLI: creates users and keys, sets the policy, counts events.
    pub cli: Option<ServerCli>,
    pub rounds: usize,
    /// Connections and registrations in flight at once during setup.
    pub concurrency: usize,
    /// How long a round may take before it counts as lost.
    pub round_timeout: Duration,
    /// How long setup, convergence, the policy edit and the storm recovery may each take.
    pub phase_timeout: Duration,
    /// Pause between rounds, so changes are not coalesced with each other.
    pub pause: Duration,
    /// Every `sample_every`-th stream is also decoded fully into a `Netmap`.
    pub sample_every: usize,
    pub capability_version: u16,
    /// Reads the server's VmRSS and CPU time from `/proc/<pid>` when given.
    pub server_pid: Option<u32>,
    /// Run the policy-edit round (needs `cli`).
    pub policy_edit: bool,
    /// Run the reconnect storm with this restart.
    pub restart: Option<Restart>,
    /// Reconnects in flight at once during the storm.
    pub storm_concurrency: usize,
    /// Count the server's events across the storm (`events verify`; ours only).
    pub count_events: bool,
    /// How many streams the storm ends, when not all of them: set by the restart hook
    /// (e.g. several instances behind a proxy, one killed: the connections it held).
    pub storm_streams: Option<Arc<AtomicUsize>>,
}

impl LoadgenOptions {
    /// A mesh of `nodes` under one reusable `auth_key` ("": `cli` will make the keys),
    /// `rounds` rounds, nothing else.
    pub fn new(server_url: &str, auth_key: &str, nodes: usize, rounds: usize) -> LoadgenOptions {
        LoadgenOptions {
            server_url: server_url.into(),
            tailnet: Tailnet::Mesh { policy: None },
            nodes,
            keys: match auth_key {
                "" => Keys::default(),
                key => Keys::single(key),
            },
            cli: None,
            rounds,
            concurrency: 32,
            round_timeout: Duration::from_secs(20),
            phase_timeout: Duration::from_secs(120),
            pause: Duration::from_millis(150),
            sample_every: 10,
            capability_version: 145,
            server_pid: None,
            policy_edit: false,
            restart: None,
            storm_concurrency: 256,
            count_events: true,
            storm_streams: None,
        }
    }
}

/// The streams whose peer set differs from the expectation, with what is missing and extra.
fn mismatches(shared: &Shared, expected: &[Bitset]) -> Vec<(usize, Vec<u64>, Vec<u64>)> {
    let mut out = Vec::new();
    for (index, want) in expected.iter().enumerate() {
        let have = lock(&shared.peers[index]);
        if !have.same(want) {
            out.push((index, want.minus(&have), have.minus(want)));
        }
    }
    out
}

/// Polls until every stream's peer set is as expected (and `also` holds); on the deadline
/// records the first few differences as problems and returns false.
async fn wait_converged(
    shared: &Shared,
    expected: &[Bitset],
    deadline: Instant,
    what: &str,
    also: impl Fn() -> bool,
) -> bool {
    loop {
        if also() && mismatches(shared, expected).is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            let wrong = mismatches(shared, expected);
            let ids: Vec<u64> = (0..shared.selves.len())
                .map(|i| lock(&shared.selves[i]).as_ref().map_or(0, |s| s.id))
                .collect();
            shared.problem(format!(
                "{what}: {} of {} streams do not have the policy's peers",
                wrong.len(),
                expected.len()
            ));
            for (index, missing, extra) in wrong.iter().take(SHOWN_MISMATCHES) {
                let cut = |v: &[u64]| v.iter().take(8).copied().collect::<Vec<_>>();
                shared.problem(format!(
                    "{what}: node {} (stream {index}) misses {} peers {:?}, has {} extra {:?}",
                    ids[*index],
                    missing.len(),
                    cut(missing),
                    extra.len(),
                    cut(extra)
                ));
            }
            if !also() {
                shared.problem(format!("{what}: did not finish in time"));
            }
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each stream's expected peers under `policy`, from what the streams said about themselves.
async fn expectation(
    shared: &Shared,
    tailnet: &Tailnet,
    policy: Option<String>,
) -> Result<Vec<Bitset>, ClientError> {
    let mut selves = Vec::with_capacity(shared.selves.len());
    for (index, own) in shared.selves.iter().enumerate() {
        match lock(own).clone() {
            Some(own) => selves.push(own),
            None => {
                return Err(ClientError::Body(format!(
                    "stream {index} never said who it is"
                )))
            }
        }
    }
    let tailnet = tailnet.clone();
    let expected = tokio::task::spawn_blocking(move || {
        tailnet::expected_peers(&tailnet, &selves, policy.as_deref())
    })
    .await
    .map_err(|e| ClientError::Body(e.to_string()))?
    .map_err(ClientError::Body)?;
    Ok(expected.iter().map(|ids| Bitset::of(ids)).collect())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Body(e.to_string()))?
        .map_err(ClientError::Body)
}

/// Runs the whole benchmark; the caller decides what to assert or print.
pub async fn run(options: LoadgenOptions) -> Result<LoadgenReport, ClientError> {
    let tailnet = options.tailnet.clone();
    let nodes = tailnet.nodes(options.nodes).max(2);
    let rounds = options.rounds.min(MAX_ROUNDS);
    let mut server_pid = options.server_pid;
    let mut report = LoadgenReport {
        nodes,
        tailnet: match tailnet {
            Tailnet::Mesh { .. } => "mesh".into(),
            Tailnet::Sparse { .. } => "sparse".into(),
        },
        users: tailnet.users().len(),
        tagged: (0..nodes)
            .filter(|i| matches!(tailnet.owner(*i), Owner::Tag(_)))
            .count(),
        server_rss_kib_before: server_pid.and_then(rss_kib),
        ..Default::default()
    };

    // The tailnet's users, keys and policy.
    let keys = match &options.cli {
        Some(cli) if options.keys.0.is_empty() => {
            let started = Instant::now();
            let (cli, tailnet) = (cli.clone(), tailnet.clone());
            let keys = blocking(move || cli.prepare(&tailnet, nodes)).await?;
            report.cli_setup = started.elapsed();
            keys
        }
        _ => options.keys.clone(),
    };
    let cpu_start = server_pid.and_then(cpu_time);
    let started = Instant::now();
    let server = fetch_server_key(&options.server_url, options.capability_version).await?;

    // Register everyone, a bounded number at a time.
    let limit = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut joins = JoinSet::new();
    for index in 0..nodes {
        let owner = tailnet.owner(index);
        let key = keys
            .for_owner(&owner)
            .ok_or_else(|| ClientError::Body(format!("no pre-auth key for {owner:?}")))?
            .to_string();
        let options = options.clone();
        let limit = limit.clone();
        joins.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (
                index,
                stream::join_node(&options, server, &key, index).await,
            )
        });
    }
    let mut joined: BTreeMap<usize, Node> = BTreeMap::new();
    while let Some(result) = joins.join_next().await {
        let (index, node) = result.map_err(|e| ClientError::Body(e.to_string()))?;
        joined.insert(index, node?);
    }
    let joined: Vec<Arc<Node>> = joined.into_values().map(Arc::new).collect();
    report.registration = started.elapsed();

    let shared = Arc::new(Shared::new(nodes, rounds));
    let (stop_tx, stop) = watch::channel(false);
    let storm_limit = Arc::new(Semaphore::new(options.storm_concurrency.max(1)));
    // Open every stream, `concurrency` at a time: opening one after another would cost N
    // first maps of setup on a slow server. Each task then reads its stream.
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(nodes);
    let mut readers = JoinSet::new();
    for (index, node) in joined.iter().enumerate() {
        let reader = Reader {
            node: node.clone(),
            index,
            sample: options.sample_every > 0 && index % options.sample_every == 0,
            shared: shared.clone(),
            stop: stop.clone(),
            server,
            options: options.clone(),
            storm_limit: storm_limit.clone(),
        };
        let limit = limit.clone();
        let opened_tx = opened_tx.clone();
        readers.spawn(async move {
            let permit = limit.acquire_owned().await;
            let node = reader.node.clone();
            let request = node.client.stream_request(
                &node.node_key,
                &node.disco_key,
                stream::opening_endpoints(index),
            );
            let opened = Instant::now();
            let stream = node.client.map_stream(&request).await;
            drop(permit);
            let stream = match stream {
                Ok(stream) => {
                    let _ = opened_tx.send(Ok(())).await;
                    stream
                }
                Err(error) => {
                    let _ = opened_tx.send(Err(error)).await;
                    return None;
                }
            };
            stream::read_stream(reader, stream, opened).await
        });
    }
    drop(opened_tx);
    for _ in 0..nodes {
        match opened_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(error)) => return Err(error),
            None => return Err(ClientError::Body("a stream opener ended early".into())),
        }
    }
    let deadline = Instant::now() + options.phase_timeout;
    while lock(&shared.first_maps).len() < nodes {
        if Instant::now() > deadline {
            return Err(ClientError::Body(format!(
                "only {} of {nodes} streams got a first map within {:?}",
                lock(&shared.first_maps).len(),
                options.phase_timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    report.setup = started.elapsed();

    // Converged: every stream has exactly the peers the policy gives it; then quiet (the
    // churn of N streams opening has been delivered).
    let converging = Instant::now();
    let mut expected = expectation(&shared, &tailnet, tailnet.policy()).await?;
    report.expected_peers_mean =
        expected.iter().map(Bitset::count).sum::<usize>() as f64 / nodes as f64;
    let deadline = converging + options.phase_timeout;
    report.converged = wait_converged(&shared, &expected, deadline, "setup", || true).await;
    let mut last = (shared.frames.load(Ordering::Relaxed), Instant::now());
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let frames = shared.frames.load(Ordering::Relaxed);
        if frames != last.0 {
            last = (frames, Instant::now());
        } else if last.1.elapsed() >= QUIET {
            break;
        }
    }
    report.convergence = converging.elapsed();
    let frames_before = shared.frames.load(Ordering::Relaxed);
    let wire_before = shared.wire_bytes.load(Ordering::Relaxed);
    let json_before = shared.json_bytes.load(Ordering::Relaxed);
    let cpu_before_rounds = server_pid.and_then(cpu_time);

    // The rounds, from the node the most others see.
    let ids: Vec<u64> = (0..nodes)
        .map(|i| lock(&shared.selves[i]).as_ref().map_or(0, |s| s.id))
        .collect();
    let position: std::collections::HashMap<u64, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut viewer_counts = vec![0usize; nodes];
    for want in &expected {
        for id in want.minus(&Bitset::default()) {
            if let Some(i) = position.get(&id) {
                viewer_counts[*i] += 1;
            }
        }
    }
    let changer_index = (0..nodes)
        .max_by_key(|i| (viewer_counts[*i], std::cmp::Reverse(*i)))
        .unwrap_or(0);
    let changer = &joined[changer_index];
    report.changer_id = ids[changer_index];
    report.changer_viewers = viewer_counts[changer_index];
    shared.target.store(report.changer_id, Ordering::Relaxed);
    let viewers = report.changer_viewers;
    for round in 0..rounds {
        if viewers == 0 {
            shared.problem("rounds: no node sees the changer".into());
            break;
        }
        tokio::time::sleep(options.pause).await;
        let start = Instant::now();
        changer
            .client
            .lite_update(
                &changer.node_key,
                vec![marker(round)],
                &changer.disco_key,
                None,
            )
            .await?;
        let deadline = start + options.round_timeout;
        let result = loop {
            let (saw, last) = lock(&shared.rounds)[round];
            if saw >= viewers {
                break RoundResult {
                    latency: last.map(|t| t.saturating_duration_since(start)),
                    saw,
                };
            }
            if Instant::now() > deadline {
                break RoundResult { latency: None, saw };
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        report.rounds.push(result);
    }
    tokio::time::sleep(options.pause).await;
    shared.target.store(0, Ordering::Relaxed);
    let cpu_after_rounds = server_pid.and_then(cpu_time);
    report.round_frames = shared.frames.load(Ordering::Relaxed) - frames_before;
    report.round_wire_bytes = shared.wire_bytes.load(Ordering::Relaxed) - wire_before;
    report.round_json_bytes = shared.json_bytes.load(Ordering::Relaxed) - json_before;
    if let (Some(start), Some(middle), Some(end)) = (cpu_start, cpu_before_rounds, cpu_after_rounds)
    {
        report.server_cpu_setup = Some(middle.saturating_sub(start));
        report.server_cpu_rounds = Some(end.saturating_sub(middle));
    }

    // The policy edit: every node's packet filter changes, no peer set does.
    if options.policy_edit {
        match &options.cli {
            None => shared.problem("policy edit: needs the server's CLI".into()),
            Some(cli) => {
                let edited = tailnet.edited_policy();
                shared.filter_count.store(0, Ordering::Relaxed);
                shared.filter_epoch.store(EPOCH, Ordering::Relaxed);
                let start = Instant::now();
                let (cli, text) = (cli.clone(), edited.clone());
                blocking(move || cli.set_policy(&text)).await?;
                report.policy_edit_cli = Some(start.elapsed());
                let deadline = start + options.phase_timeout;
                while shared.filter_count.load(Ordering::Relaxed) < nodes
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                report.policy_edit_delivered = shared.filter_count.load(Ordering::Relaxed);
                if report.policy_edit_delivered < nodes {
                    shared.problem(format!(
                        "policy edit: {} of {nodes} streams got a new packet filter",
                        report.policy_edit_delivered
                    ));
                } else {
                    report.policy_edit = (*lock(&shared.filter_last))
                        .map(|last| last.saturating_duration_since(start));
                }
                shared.filter_epoch.store(0, Ordering::Relaxed);
                expected = expectation(&shared, &tailnet, Some(edited)).await?;
                let deadline = Instant::now() + options.phase_timeout;
                report.converged &=
                    wait_converged(&shared, &expected, deadline, "policy edit", || true).await;
                report.server_cpu_policy_edit = server_pid
                    .and_then(cpu_time)
                    .zip(cpu_after_rounds)
                    .map(|(end, start)| end.saturating_sub(start));
            }
        }
    }

    let status = |pid: Option<u32>, field| pid.and_then(|pid| status_kib(pid, field));
    report.server_peak_rss_kib = status(server_pid, "VmHWM:");
    report.server_rss_kib_after = status(server_pid, "VmRSS:");

    // The reconnect storm: restart the server under every stream.
    if let Some(restart) = options.restart.clone() {
        let cli = options.cli.clone().filter(|_| options.count_events);
        let before = match cli.clone() {
            Some(cli) => Some(blocking(move || cli.event_count()).await?),
            None => None,
        };
        shared.remapped.store(0, Ordering::Relaxed);
        shared.reconnect.store(true, Ordering::Relaxed);
        shared.storm_epoch.store(EPOCH, Ordering::Relaxed);
        let start = Instant::now();
        let new_pid = blocking(move || (restart.0)()).await?;
        report.storm_restart = Some(start.elapsed());
        server_pid = new_pid.or(server_pid);
        let deadline = Instant::now() + options.phase_timeout;
        let ended = options
            .storm_streams
            .as_ref()
            .map_or(nodes, |n| n.load(Ordering::SeqCst).min(nodes));
        let remapped = || shared.remapped.load(Ordering::Relaxed) >= ended;
        let recovered = wait_converged(&shared, &expected, deadline, "storm", remapped).await;
        report.storm_remapped = shared.remapped.load(Ordering::Relaxed);
        report.converged &= recovered;
        if recovered {
            report.storm_recovery = Some(start.elapsed());
        }
        report.server_cpu_storm = server_pid.and_then(cpu_time);
        if let (Some(cli), Some(before)) = (cli, before) {
            let types = blocking(move || cli.event_types_since(before)).await?;
            // A start is recorded (`ServerStarted`); nothing else may be.
            let started = types.iter().filter(|t| *t == SERVER_STARTED).count();
            let others: Vec<&String> = types.iter().filter(|t| *t != SERVER_STARTED).collect();
            report.storm_server_starts = Some(started);
            report.storm_events_appended = Some(others.len());
            if !others.is_empty() {
                shared.problem(format!(
                    "storm: the event log grew by {} events besides the server start: {others:?}",
                    others.len()
                ));
            }
        }
        report.server_rss_kib_after = status(server_pid, "VmRSS:");
        report.server_peak_rss_kib = report.server_peak_rss_kib.max(status(server_pid, "VmHWM:"));
    }

    {
        let firsts = lock(&shared.first_maps);
        report.first_map = firsts.iter().map(|f| f.0).collect();
        report.first_map.sort();
        let count = firsts.len().max(1) as u64;
        report.first_map_wire_bytes = firsts.iter().map(|f| f.1).sum::<u64>() / count;
        report.first_map_json_bytes = firsts.iter().map(|f| f.2).sum::<u64>() / count;
    }
    report.frames = shared.frames.load(Ordering::Relaxed);
    report.wire_bytes = shared.wire_bytes.load(Ordering::Relaxed);
    report.json_bytes = shared.json_bytes.load(Ordering::Relaxed);

    // End the sessions, then compare every sample's netmap with its bitset and the policy.
    let _ = stop_tx.send(true);
    let last_marker = rounds
        .checked_sub(1)
        .map(marker)
        .filter(|_| options.restart.is_none());
    let collect = async {
        let mut samples = Vec::new();
        while let Some(result) = readers.join_next().await {
            if let Ok(Some(sample)) = result {
                samples.push(sample);
            }
        }
        samples
    };
    let samples = tokio::time::timeout(Duration::from_secs(30), collect)
        .await
        .unwrap_or_default();
    for sample in &samples {
        report.samples_checked += 1;
        let own_id = sample.own_id;
        let from_netmap = Bitset::of(&sample.netmap.peers.keys().copied().collect::<Vec<_>>());
        if !from_netmap.same(&sample.peers) {
            shared.problem(format!(
                "node {own_id}: netmap peers differ from the bitset"
            ));
        }
        if !from_netmap.same(&expected[sample.index]) {
            shared.problem(format!(
                "node {own_id}: {} peers in its netmap, the policy gives {}",
                from_netmap.count(),
                expected[sample.index].count()
            ));
        }
        let sees_changer = sample.netmap.peers.contains_key(&report.changer_id);
        if let Some(marker) = last_marker.as_ref().filter(|_| sees_changer) {
            let endpoints = sample.netmap.peers[&report.changer_id].endpoints.clone();
            if endpoints != [marker.clone()] {
                shared.problem(format!(
                    "node {own_id}: believes the changer's endpoints are {endpoints:?}"
                ));
            }
        }
    }
    drop(joined);
    report.problems = lock(&shared.problems).clone();
    Ok(report)
}
