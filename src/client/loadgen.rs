//! The map fan-out load generator behind `src/bin/loadgen.rs` (and its smoke test): N
//! machines register with one reusable pre-auth key and hold N map streams; each stream's
//! peer set is kept as a bitset from a cheap decode of every frame (IDs and endpoints only),
//! a sample of streams is also decoded fully into a `Netmap`. Then one node changes its
//! endpoints R times (lite updates); per round the fan-out latency is the time from sending
//! the change to the moment the last other node saw it.

use super::wire::MapResponseIn;
use super::{fetch_server_key, random_key, ClientError, ControlClient, MapStream, Netmap};
use crate::tailcfg::{RegisterAuth, RegisterRequest};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use x25519_dalek::StaticSecret;

/// Node IDs above this are not tracked in the bitsets (a limit on their size).
const MAX_TRACKED_NODE_ID: u64 = 1 << 22;
/// Rounds are marked by the port of the changed endpoint: `MARKER_BASE_PORT + round`.
const MARKER_BASE_PORT: u64 = 20_000;
const MAX_ROUNDS: usize = 40_000;
/// No frames for this long after setup: the opening churn is over and the rounds can start.
const QUIET: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    pub server_url: String,
    pub auth_key: String,
    pub nodes: usize,
    pub rounds: usize,
    /// Connections and registrations in flight at once during setup.
    pub concurrency: usize,
    /// How long a round may take before it counts as lost.
    pub round_timeout: Duration,
    /// Pause between rounds, so changes are not coalesced with each other.
    pub pause: Duration,
    /// Every `sample_every`-th stream is also decoded fully into a `Netmap`.
    pub sample_every: usize,
    pub capability_version: u16,
    /// Reads the server's VmRSS from `/proc/<pid>/status` when given.
    pub server_pid: Option<u32>,
}

impl LoadgenOptions {
    pub fn new(server_url: &str, auth_key: &str, nodes: usize, rounds: usize) -> LoadgenOptions {
        LoadgenOptions {
            server_url: server_url.into(),
            auth_key: auth_key.into(),
            nodes,
            rounds,
            concurrency: 32,
            round_timeout: Duration::from_secs(20),
            pause: Duration::from_millis(150),
            sample_every: 10,
            capability_version: 145,
            server_pid: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RoundResult {
    /// `None` if not every node saw the change within the timeout.
    pub latency: Option<Duration>,
    pub saw: usize,
}

#[derive(Debug, Clone, Default)]
pub struct LoadgenReport {
    pub nodes: usize,
    pub setup: Duration,
    pub converged: Duration,
    pub rounds: Vec<RoundResult>,
    pub frames: u64,
    pub wire_bytes: u64,
    pub json_bytes: u64,
    /// Frames and bytes of the rounds phase only (deltas and keep-alives).
    pub round_frames: u64,
    pub round_wire_bytes: u64,
    pub round_json_bytes: u64,
    pub samples_checked: usize,
    /// Problems found (a sample netmap disagreeing with the bitset, stream errors...).
    pub problems: Vec<String>,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    /// The server's peak RSS (VmHWM) at the end.
    pub server_peak_rss_kib: Option<u64>,
    /// Server CPU time (user + system) during setup and during the rounds.
    pub server_cpu_setup: Option<Duration>,
    pub server_cpu_rounds: Option<Duration>,
    /// Per stream: from sending the map request to its first (full) map; sorted.
    pub first_map: Vec<Duration>,
    /// Mean size of a first (full) map: wire bytes and JSON bytes.
    pub first_map_wire_bytes: u64,
    pub first_map_json_bytes: u64,
}

impl LoadgenReport {
    /// Sorted latencies of the complete rounds.
    pub fn latencies(&self) -> Vec<Duration> {
        let mut all: Vec<Duration> = self.rounds.iter().filter_map(|r| r.latency).collect();
        all.sort();
        all
    }

    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let all = self.latencies();
        if all.is_empty() {
            return None;
        }
        let index = ((p / 100.0) * (all.len() as f64)).ceil() as usize;
        all.get(index.saturating_sub(1).min(all.len() - 1)).copied()
    }

    pub fn complete(&self) -> bool {
        self.rounds.iter().all(|r| r.latency.is_some()) && self.problems.is_empty()
    }

    pub fn summary(&self) -> String {
        let ms = |d: Option<Duration>| {
            d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
                .unwrap_or("-".into())
        };
        let per = |bytes: u64, frames: u64| bytes.checked_div(frames).unwrap_or(0);
        format!(
            "nodes {}  setup {:.1} s  converged {:.1} s\n\
             rounds {} complete {}/{}  fan-out p50 {}  p99 {}  max {}\n\
             frames {} (all)  bytes/frame wire {} json {}\n\
             round-phase frames {}  bytes/frame wire {} json {}\n\
             sample netmaps checked {}  problems {}\n\
             server RSS before {}  after {}",
            self.nodes,
            self.setup.as_secs_f64(),
            self.converged.as_secs_f64(),
            self.rounds.len(),
            self.rounds.iter().filter(|r| r.latency.is_some()).count(),
            self.rounds.len(),
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0)),
            ms(self.latencies().last().copied()),
            self.frames,
            per(self.wire_bytes, self.frames),
            per(self.json_bytes, self.frames),
            self.round_frames,
            per(self.round_wire_bytes, self.round_frames),
            per(self.round_json_bytes, self.round_frames),
            self.samples_checked,
            if self.problems.is_empty() {
                "none".to_string()
            } else {
                self.problems.join("; ")
            },
            self.server_rss_kib_before
                .map(|k| format!("{} MiB", k / 1024))
                .unwrap_or("-".into()),
            self.server_rss_kib_after
                .map(|k| format!("{} MiB", k / 1024))
                .unwrap_or("-".into()),
        )
    }
}

impl LoadgenReport {
    /// The figures as one JSON object (the bench binary's last line).
    pub fn json(&self) -> serde_json::Value {
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3);
        let first = |p: f64| {
            let n = self.first_map.len();
            (n > 0).then(|| self.first_map[((p * n as f64).ceil() as usize).clamp(1, n) - 1])
        };
        // Bytes every node receives per change (the changer itself receives nothing).
        let per_change = (self.round_wire_bytes)
            .checked_div((self.rounds.len() as u64) * (self.nodes as u64 - 1).max(1));
        serde_json::json!({
            "nodes": self.nodes,
            "rounds": self.rounds.len(),
            "complete_rounds": self.rounds.iter().filter(|r| r.latency.is_some()).count(),
            "fanout_p50_ms": ms(self.percentile(50.0)),
            "fanout_p99_ms": ms(self.percentile(99.0)),
            "fanout_max_ms": ms(self.latencies().last().copied()),
            "first_map_p50_ms": ms(first(0.5)),
            "first_map_p99_ms": ms(first(0.99)),
            "first_map_wire_bytes": self.first_map_wire_bytes,
            "first_map_json_bytes": self.first_map_json_bytes,
            "bytes_per_node_per_change": per_change,
            "server_cpu_setup_s": self.server_cpu_setup.map(|d| d.as_secs_f64()),
            "server_cpu_rounds_s": self.server_cpu_rounds.map(|d| d.as_secs_f64()),
            "server_rss_mib": self.server_rss_kib_after.map(|k| k / 1024),
            "server_peak_rss_mib": self.server_peak_rss_kib.map(|k| k / 1024),
            "problems": self.problems.len(),
        })
    }
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// User + system CPU time of a process so far (`/proc/<pid>/stat`, clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Only what the bitset and the round marker need; everything else is skipped unparsed.
#[derive(Deserialize, Default)]
#[serde(default)]
struct LightMessage {
    #[serde(rename = "Peers")]
    peers: Vec<LightNode>,
    #[serde(rename = "PeersChanged")]
    peers_changed: Vec<LightNode>,
    #[serde(rename = "PeersRemoved")]
    peers_removed: Vec<u64>,
    #[serde(rename = "PeersChangedPatch")]
    patches: Vec<LightPatch>,
    #[serde(rename = "Node")]
    node: Option<LightNode>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LightNode {
    #[serde(rename = "ID")]
    id: u64,
    #[serde(rename = "Endpoints")]
    endpoints: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LightPatch {
    #[serde(rename = "NodeID")]
    id: u64,
    #[serde(rename = "Endpoints")]
    endpoints: Option<Vec<String>>,
}

#[derive(Default)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn set(&mut self, id: u64, on: bool) {
        if id > MAX_TRACKED_NODE_ID {
            return;
        }
        let (word, bit) = ((id / 64) as usize, id % 64);
        if word >= self.0.len() {
            if !on {
                return;
            }
            self.0.resize(word + 1, 0);
        }
        if on {
            self.0[word] |= 1 << bit;
        } else {
            self.0[word] &= !(1 << bit);
        }
    }

    fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Shared by the readers and the driver.
struct Shared {
    /// The changing node's ID (0 until known).
    target: AtomicU64,
    /// Per round: how many nodes saw it, and when the last one did.
    rounds: Mutex<Vec<(usize, Option<Instant>)>>,
    /// Per stream: its current peer count (from the bitset).
    peer_counts: Vec<AtomicUsize>,
    frames: AtomicU64,
    wire_bytes: AtomicU64,
    json_bytes: AtomicU64,
    problems: Mutex<Vec<String>>,
    /// Per stream: time to the first map and its wire/JSON size.
    first_maps: Mutex<Vec<(Duration, u64, u64)>>,
}

impl Shared {
    fn problem(&self, message: String) {
        let mut problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if problems.len() < 20 {
            problems.push(message);
        }
    }
}

fn marker(round: usize) -> String {
    format!("203.0.113.7:{}", MARKER_BASE_PORT + round as u64)
}

fn round_of(endpoints: &[String]) -> Option<usize> {
    let port: u64 = endpoints
        .first()?
        .strip_prefix("203.0.113.7:")?
        .parse()
        .ok()?;
    port.checked_sub(MARKER_BASE_PORT).map(|r| r as usize)
}

/// `key.NodePublic{}` as tailscaled writes it.
const ZERO_NODE_KEY: &str =
    "nodekey:0000000000000000000000000000000000000000000000000000000000000000";

struct Node {
    client: ControlClient,
    node_key: String,
    disco_key: String,
}

async fn join_node(
    options: &LoadgenOptions,
    server: crate::core::keys::MachineKey,
    index: usize,
) -> Result<Node, ClientError> {
    let machine = StaticSecret::random_from_rng(rand::rngs::OsRng);
    let client = ControlClient::connect_with_server_key(
        &options.server_url,
        machine,
        server,
        options.capability_version,
    )
    .await?;
    let (node_key, _) = random_key("nodekey:");
    let (disco_key, _) = random_key("discokey:");
    let answer = client
        .register(&RegisterRequest {
            version: u32::from(options.capability_version),
            node_key: node_key.clone(),
            // What real clients send on a first login: the zero key, not "" (the Go
            // headscale refuses an empty one).
            old_node_key: ZERO_NODE_KEY.into(),
            auth: Some(RegisterAuth {
                auth_key: options.auth_key.clone(),
            }),
            hostinfo: Some(crate::tailcfg::Hostinfo {
                hostname: format!("loadgen-{index}"),
                os: "linux".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    if !answer.error.is_empty() {
        return Err(ClientError::Refused(answer.error));
    }
    Ok(Node {
        client,
        node_key,
        disco_key,
    })
}

/// One stream's reader: keeps the bitset (and, for samples, a full netmap) up to date and
/// reports round markers. Returns the sample netmap at the end.
async fn read_stream(
    mut stream: MapStream,
    opened: Instant,
    index: usize,
    sample: bool,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Option<(u64, Bitset, Netmap)> {
    let mut peers = Bitset::default();
    let mut own_id = 0;
    let mut netmap = Netmap::new();
    let mut first = true;
    loop {
        let next = tokio::select! {
            next = stream.next_raw() => next,
            _ = stop.changed() => break,
        };
        let Some(next) = next else { break };
        let raw = match next {
            Ok(raw) => raw,
            Err(error) => {
                shared.problem(format!("stream {index}: {error}"));
                break;
            }
        };
        shared.frames.fetch_add(1, Ordering::Relaxed);
        shared
            .wire_bytes
            .fetch_add(raw.wire_len as u64 + 4, Ordering::Relaxed);
        shared
            .json_bytes
            .fetch_add(raw.json.len() as u64, Ordering::Relaxed);
        if MapResponseIn::is_keep_alive_only(&raw.json) {
            continue;
        }
        let light: LightMessage = match serde_json::from_slice(&raw.json) {
            Ok(light) => light,
            Err(error) => {
                shared.problem(format!("stream {index}: undecodable frame: {error}"));
                break;
            }
        };
        let now = Instant::now();
        if first {
            first = false;
            shared
                .first_maps
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((
                    now.saturating_duration_since(opened),
                    raw.wire_len as u64 + 4,
                    raw.json.len() as u64,
                ));
        } else if !light.peers.is_empty() {
            shared.problem(format!(
                "stream {index}: a full peer list after the first map"
            ));
        }
        if let Some(node) = &light.node {
            own_id = node.id;
            if index == 0 {
                // Stream 0 belongs to the node that will change: its ID marks the rounds.
                shared.target.store(own_id, Ordering::Relaxed);
            }
        }
        if !light.peers.is_empty() {
            peers = Bitset::default();
            for p in &light.peers {
                peers.set(p.id, true);
            }
        }
        for id in &light.peers_removed {
            peers.set(*id, false);
        }
        let target = shared.target.load(Ordering::Relaxed);
        let mut seen_round = None;
        for p in light.peers_changed.iter().chain(light.peers.iter()) {
            peers.set(p.id, true);
            if p.id == target {
                seen_round = p.endpoints.as_deref().and_then(round_of).or(seen_round);
            }
        }
        for patch in &light.patches {
            if patch.id == target {
                seen_round = patch.endpoints.as_deref().and_then(round_of).or(seen_round);
            }
        }
        shared.peer_counts[index].store(peers.count(), Ordering::Relaxed);
        if let Some(round) = seen_round {
            let mut rounds = shared.rounds.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = rounds.get_mut(round) {
                entry.0 += 1;
                entry.1 = Some(now);
            }
        }
        if sample {
            match raw.decode() {
                Ok(message) => {
                    if let Err(error) = netmap.apply(&message) {
                        shared.problem(format!("stream {index}: {error}"));
                    }
                }
                Err(error) => shared.problem(format!("stream {index}: {error}")),
            }
        }
    }
    sample.then_some((own_id, peers, netmap))
}

/// Runs the whole benchmark; the caller decides what to assert or print.
pub async fn run(options: LoadgenOptions) -> Result<LoadgenReport, ClientError> {
    let nodes = options.nodes.max(2);
    let rounds = options.rounds.min(MAX_ROUNDS);
    let mut report = LoadgenReport {
        nodes,
        server_rss_kib_before: options.server_pid.and_then(rss_kib),
        ..Default::default()
    };
    let started = Instant::now();
    let server = fetch_server_key(&options.server_url, options.capability_version).await?;

    // Register everyone, a bounded number at a time.
    let limit = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut joins = JoinSet::new();
    for index in 0..nodes {
        let options = options.clone();
        let limit = limit.clone();
        joins.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (index, join_node(&options, server, index).await)
        });
    }
    let mut joined: BTreeMap<usize, Node> = BTreeMap::new();
    while let Some(result) = joins.join_next().await {
        let (index, node) = result.map_err(|e| ClientError::Body(e.to_string()))?;
        joined.insert(index, node?);
    }
    let joined: Vec<Arc<Node>> = joined.into_values().map(Arc::new).collect();

    let shared = Arc::new(Shared {
        target: AtomicU64::new(0),
        rounds: Mutex::new(vec![(0, None); rounds]),
        peer_counts: (0..nodes).map(|_| AtomicUsize::new(0)).collect(),
        frames: AtomicU64::new(0),
        wire_bytes: AtomicU64::new(0),
        json_bytes: AtomicU64::new(0),
        problems: Mutex::new(Vec::new()),
        first_maps: Mutex::new(Vec::new()),
    });
    let cpu_start = options.server_pid.and_then(cpu_time);

    let (stop_tx, stop) = watch::channel(false);
    // Open every stream, `concurrency` at a time: an open waits for the stream's first map,
    // so opening one after another would cost N first maps of setup on a slow server. Each
    // task then reads its stream; the first message on stream 0 tells us the changer's ID.
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(nodes);
    let mut readers = JoinSet::new();
    for (index, node) in joined.iter().enumerate() {
        let node = node.clone();
        let limit = limit.clone();
        let opened_tx = opened_tx.clone();
        let sample = options.sample_every > 0 && index % options.sample_every == 0;
        let shared = shared.clone();
        let stop = stop.clone();
        readers.spawn(async move {
            let permit = limit.acquire_owned().await;
            let request = node.client.stream_request(
                &node.node_key,
                &node.disco_key,
                vec![format!("192.0.2.1:{}", 1000 + index)],
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
            read_stream(stream, opened, index, sample, shared, stop).await
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
    report.setup = started.elapsed();

    // Converged: every stream has every other node as a peer.
    let converging = Instant::now();
    let deadline = converging + options.round_timeout.max(Duration::from_secs(30));
    loop {
        let done = shared.target.load(Ordering::Relaxed) != 0
            && shared
                .peer_counts
                .iter()
                .all(|c| c.load(Ordering::Relaxed) == nodes - 1);
        if done {
            break;
        }
        if Instant::now() > deadline {
            let behind = shared
                .peer_counts
                .iter()
                .filter(|c| c.load(Ordering::Relaxed) != nodes - 1)
                .count();
            shared.problem(format!(
                "{behind} streams never saw all {} peers",
                nodes - 1
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then quiet: the churn of N streams opening (online, disco keys) has been delivered.
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
    report.converged = converging.elapsed();
    let frames_before = shared.frames.load(Ordering::Relaxed);
    let wire_before = shared.wire_bytes.load(Ordering::Relaxed);
    let json_before = shared.json_bytes.load(Ordering::Relaxed);
    let cpu_before_rounds = options.server_pid.and_then(cpu_time);

    // The rounds.
    let changer = &joined[0];
    for round in 0..rounds {
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
            let (saw, last) = shared.rounds.lock().unwrap_or_else(|e| e.into_inner())[round];
            if saw >= nodes - 1 {
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
    report.server_rss_kib_after = options.server_pid.and_then(rss_kib);
    report.server_peak_rss_kib = options.server_pid.and_then(|pid| status_kib(pid, "VmHWM:"));
    let cpu_end = options.server_pid.and_then(cpu_time);
    if let (Some(start), Some(middle), Some(end)) = (cpu_start, cpu_before_rounds, cpu_end) {
        report.server_cpu_setup = Some(middle.saturating_sub(start));
        report.server_cpu_rounds = Some(end.saturating_sub(middle));
    }
    {
        let firsts = shared.first_maps.lock().unwrap_or_else(|e| e.into_inner());
        report.first_map = firsts.iter().map(|f| f.0).collect();
        report.first_map.sort();
        let count = firsts.len().max(1) as u64;
        report.first_map_wire_bytes = firsts.iter().map(|f| f.1).sum::<u64>() / count;
        report.first_map_json_bytes = firsts.iter().map(|f| f.2).sum::<u64>() / count;
    }
    report.frames = shared.frames.load(Ordering::Relaxed);
    report.wire_bytes = shared.wire_bytes.load(Ordering::Relaxed);
    report.json_bytes = shared.json_bytes.load(Ordering::Relaxed);
    report.round_frames = report.frames - frames_before;
    report.round_wire_bytes = report.wire_bytes - wire_before;
    report.round_json_bytes = report.json_bytes - json_before;

    // End the sessions, then compare every sample's netmap with its bitset.
    let target = shared.target.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let last_marker = rounds.checked_sub(1).map(marker);
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
    for (own_id, peers, netmap) in &samples {
        report.samples_checked += 1;
        let mut from_netmap = Bitset::default();
        for id in netmap.peers.keys() {
            from_netmap.set(*id, true);
        }
        if from_netmap.0.iter().rev().skip_while(|w| **w == 0).ne(peers
            .0
            .iter()
            .rev()
            .skip_while(|w| **w == 0))
        {
            shared.problem(format!(
                "node {own_id}: netmap peers differ from the bitset"
            ));
        }
        if netmap.peers.len() != nodes - 1 {
            shared.problem(format!(
                "node {own_id}: {} peers, expected {}",
                netmap.peers.len(),
                nodes - 1
            ));
        }
        if let Some(marker) = last_marker.as_ref().filter(|_| *own_id != target) {
            let endpoints = netmap
                .peers
                .get(&target)
                .map(|p| p.endpoints.clone())
                .unwrap_or_default();
            if endpoints != [marker.clone()] {
                shared.problem(format!(
                    "node {own_id}: believes the changer's endpoints are {endpoints:?}"
                ));
            }
        }
    }
    drop(joined);
    report.problems = shared
        .problems
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(report)
}
