//! One simulated node: its registration, and the reader of its map stream. Each frame is
//! decoded cheaply (IDs, endpoints, the self node's addresses, whether a packet filter is
//! present; the rest is skipped unparsed) into the stream's peer bitset; every
//! `sample_every`-th stream is also decoded fully into a `Netmap`. In a reconnect storm a
//! dropped stream is reopened as tailscaled does: a new Noise connection with the same
//! machine key, then a map request with the same node key (no re-registration).

use super::tailnet::SelfNode;
use super::LoadgenOptions;
use crate::client::wire::MapResponseIn;
use crate::client::{random_key, ClientError, ControlClient, MapStream, Netmap};
use crate::core::keys::MachineKey;
use crate::tailcfg::{RegisterAuth, RegisterRequest};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use x25519_dalek::StaticSecret;

/// Node IDs above this are not tracked in the bitsets (a limit on their size).
const MAX_TRACKED_NODE_ID: u64 = 1 << 22;
/// Rounds are marked by the port of the changed endpoint: `MARKER_BASE_PORT + round`.
const MARKER_BASE_PORT: u64 = 20_000;
/// Problems kept (the rest are counted in none).
const MAX_PROBLEMS: usize = 20;
/// Reconnect back-off during a storm: first wait and cap.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_CAP: Duration = Duration::from_secs(1);

/// Only what the bitset, the round marker and the filter watch need.
#[derive(Deserialize, Default)]
#[serde(default)]
struct LightMessage {
    #[serde(rename = "Peers")]
    peers: Option<Vec<LightNode>>,
    #[serde(rename = "PeersChanged")]
    peers_changed: Vec<LightNode>,
    #[serde(rename = "PeersRemoved")]
    peers_removed: Vec<u64>,
    #[serde(rename = "PeersChangedPatch")]
    patches: Vec<LightPatch>,
    #[serde(rename = "Node")]
    node: Option<LightNode>,
    #[serde(rename = "PacketFilter")]
    packet_filter: Option<IgnoredAny>,
    #[serde(rename = "PacketFilters")]
    packet_filters: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LightNode {
    #[serde(rename = "ID")]
    id: u64,
    #[serde(rename = "Endpoints")]
    endpoints: Option<Vec<String>>,
    #[serde(rename = "Addresses")]
    addresses: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LightPatch {
    #[serde(rename = "NodeID")]
    id: u64,
    #[serde(rename = "Endpoints")]
    endpoints: Option<Vec<String>>,
}

#[derive(Default, Clone, Debug)]
pub(super) struct Bitset(Vec<u64>);

impl Bitset {
    pub(super) fn of(ids: &[u64]) -> Bitset {
        let mut set = Bitset::default();
        for id in ids {
            set.set(*id, true);
        }
        set
    }

    pub(super) fn set(&mut self, id: u64, on: bool) {
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

    pub(super) fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn word(&self, i: usize) -> u64 {
        self.0.get(i).copied().unwrap_or(0)
    }

    /// Same members (trailing zero words do not count).
    pub(super) fn same(&self, other: &Bitset) -> bool {
        (0..self.0.len().max(other.0.len())).all(|i| self.word(i) == other.word(i))
    }

    /// Members of `self` missing from `other`.
    pub(super) fn minus(&self, other: &Bitset) -> Vec<u64> {
        let mut out = Vec::new();
        for i in 0..self.0.len() {
            let mut bits = self.word(i) & !other.word(i);
            while bits != 0 {
                out.push(i as u64 * 64 + bits.trailing_zeros() as u64);
                bits &= bits - 1;
            }
        }
        out
    }
}

/// Shared by the readers and the driver.
pub(super) struct Shared {
    /// The changing node's ID (0 outside the rounds: markers are not counted).
    pub target: AtomicU64,
    /// Per round: how many nodes saw it, and when the last one did.
    pub rounds: Mutex<Vec<(usize, Option<Instant>)>>,
    /// Per stream: the last round it saw, plus one (0: none).
    pub round_seen: Vec<AtomicU64>,
    /// Per stream: its current peer set.
    pub peers: Vec<Mutex<Bitset>>,
    /// Per stream: itself, from its first map.
    pub selves: Vec<Mutex<Option<SelfNode>>>,
    pub frames: AtomicU64,
    pub wire_bytes: AtomicU64,
    pub json_bytes: AtomicU64,
    pub problems: Mutex<Vec<String>>,
    /// Per stream: time to the first map and its wire/JSON size (the first stream only).
    pub first_maps: Mutex<Vec<(Duration, u64, u64)>>,
    /// Policy edit: the watch's epoch (0: not watching), per stream the last epoch it saw a
    /// filter in, how many saw one in this epoch, and when the last of them did.
    pub filter_epoch: AtomicU64,
    pub filter_seen: Vec<AtomicU64>,
    pub filter_count: AtomicUsize,
    pub filter_last: Mutex<Option<Instant>>,
    /// Storm: reopen dropped streams; per stream the last storm epoch it got a full map in,
    /// and how many did in this epoch.
    pub reconnect: AtomicBool,
    pub storm_epoch: AtomicU64,
    pub remapped_in: Vec<AtomicU64>,
    pub remapped: AtomicUsize,
}

impl Shared {
    pub(super) fn new(nodes: usize, rounds: usize) -> Shared {
        Shared {
            target: AtomicU64::new(0),
            rounds: Mutex::new(vec![(0, None); rounds]),
            round_seen: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            peers: (0..nodes).map(|_| Mutex::default()).collect(),
            selves: (0..nodes).map(|_| Mutex::default()).collect(),
            frames: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            json_bytes: AtomicU64::new(0),
            problems: Mutex::new(Vec::new()),
            first_maps: Mutex::new(Vec::new()),
            filter_epoch: AtomicU64::new(0),
            filter_seen: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            filter_count: AtomicUsize::new(0),
            filter_last: Mutex::new(None),
            reconnect: AtomicBool::new(false),
            storm_epoch: AtomicU64::new(0),
            remapped_in: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            remapped: AtomicUsize::new(0),
        }
    }

    pub(super) fn problem(&self, message: String) {
        let mut problems = lock(&self.problems);
        if problems.len() < MAX_PROBLEMS {
            problems.push(message);
        }
    }
}

/// A poisoned lock still holds good data here (counters and sets).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn marker(round: usize) -> String {
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

/// One simulated machine.
pub(super) struct Node {
    pub machine: StaticSecret,
    pub client: ControlClient,
    pub node_key: String,
    pub disco_key: String,
}

pub(super) async fn join_node(
    options: &LoadgenOptions,
    server: MachineKey,
    auth_key: &str,
    index: usize,
) -> Result<Node, ClientError> {
    let machine = StaticSecret::random_from_rng(rand::rngs::OsRng);
    let client = ControlClient::connect_with_server_key(
        &options.server_url,
        machine.clone(),
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
                auth_key: auth_key.to_string(),
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
        machine,
        client,
        node_key,
        disco_key,
    })
}

/// The endpoints a node reports when it opens its stream.
pub(super) fn opening_endpoints(index: usize) -> Vec<String> {
    vec![format!("192.0.2.1:{}", 1000 + index % 60_000)]
}

/// What a reader needs besides its stream.
pub(super) struct Reader {
    pub node: Arc<Node>,
    pub index: usize,
    pub sample: bool,
    pub shared: Arc<Shared>,
    pub stop: watch::Receiver<bool>,
    pub server: MachineKey,
    pub options: LoadgenOptions,
    /// Bounds reconnects in flight during a storm.
    pub storm_limit: Arc<Semaphore>,
}

/// A fully decoded stream, to check against its bitset at the end.
pub(super) struct Sample {
    pub index: usize,
    pub own_id: u64,
    pub peers: Bitset,
    pub netmap: Netmap,
}

/// Reads one node's stream until told to stop; reopens it when dropped during a storm.
/// Returns the sample netmap (and the node's id and bitset) at the end.
pub(super) async fn read_stream(
    mut reader: Reader,
    mut stream: MapStream,
    opened: Instant,
) -> Option<Sample> {
    let shared = reader.shared.clone();
    let index = reader.index;
    let mut own_id = 0;
    let mut netmap = Netmap::new();
    let mut first = true;
    let mut initial = true;
    let mut opened = opened;
    let mut _client: Option<ControlClient> = None;
    loop {
        let next = tokio::select! {
            next = stream.next_raw() => next,
            _ = reader.stop.changed() => break,
        };
        let raw = match next {
            Some(Ok(raw)) => raw,
            ended => {
                if *reader.stop.borrow() {
                    break;
                }
                if !shared.reconnect.load(Ordering::Relaxed) {
                    let why = match ended {
                        Some(Err(error)) => error.to_string(),
                        _ => "ended by the server".into(),
                    };
                    shared.problem(format!("stream {index}: {why}"));
                    break;
                }
                match reopen(&mut reader).await {
                    Some((client, new_stream, at)) => {
                        // Kept: the session lives as long as its client handle.
                        _client = Some(client);
                        stream = new_stream;
                        opened = at;
                        first = true;
                        netmap = Netmap::new();
                        continue;
                    }
                    None => break,
                }
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
        // A stream's first map is the whole state (`Peers` is left out when there are none).
        if !first && light.peers.is_some() {
            shared.problem(format!(
                "stream {index}: a full peer list after the first map"
            ));
        }
        if let Some(node) = &light.node {
            own_id = node.id;
            let mut own = lock(&shared.selves[index]);
            if own.as_ref().is_none_or(|s| s.id != node.id) || !node.addresses.is_empty() {
                *own = Some(SelfNode::from_addresses(node.id, &node.addresses));
            }
        }
        let target = shared.target.load(Ordering::Relaxed);
        let mut seen_round = None;
        {
            let mut peers = lock(&shared.peers[index]);
            if first || light.peers.is_some() {
                *peers = Bitset::default();
            }
            for id in &light.peers_removed {
                peers.set(*id, false);
            }
            for p in light
                .peers_changed
                .iter()
                .chain(light.peers.iter().flatten())
            {
                peers.set(p.id, true);
                if target != 0 && p.id == target {
                    seen_round = p.endpoints.as_deref().and_then(round_of).or(seen_round);
                }
            }
        }
        for patch in &light.patches {
            if target != 0 && patch.id == target {
                seen_round = patch.endpoints.as_deref().and_then(round_of).or(seen_round);
            }
        }
        // Counted once per stream and round (a change can arrive twice, e.g. as a patch and
        // in a later full peer entry).
        let first_sight = |round: usize| {
            let mark = round as u64 + 1;
            shared.round_seen[index].fetch_max(mark, Ordering::Relaxed) < mark
        };
        if let Some(round) = seen_round.filter(|r| first_sight(*r)) {
            let mut rounds = lock(&shared.rounds);
            if let Some(entry) = rounds.get_mut(round) {
                entry.0 += 1;
                entry.1 = Some(now);
            }
        }
        if light.packet_filter.is_some() || light.packet_filters.is_some() {
            let epoch = shared.filter_epoch.load(Ordering::Relaxed);
            if epoch != 0 && shared.filter_seen[index].swap(epoch, Ordering::Relaxed) != epoch {
                *lock(&shared.filter_last) = Some(now);
                shared.filter_count.fetch_add(1, Ordering::Relaxed);
            }
        }
        if first {
            first = false;
            if initial {
                initial = false;
                lock(&shared.first_maps).push((
                    now.saturating_duration_since(opened),
                    raw.wire_len as u64 + 4,
                    raw.json.len() as u64,
                ));
            } else {
                let epoch = shared.storm_epoch.load(Ordering::Relaxed);
                if epoch != 0 && shared.remapped_in[index].swap(epoch, Ordering::Relaxed) != epoch {
                    shared.remapped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if reader.sample {
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
    let peers = lock(&shared.peers[index]).clone();
    reader.sample.then_some(Sample {
        index,
        own_id,
        peers,
        netmap,
    })
}

/// A new Noise connection with the same machine key and a map request with the same node
/// key, retried with a growing pause until it works or loadgen stops.
async fn reopen(reader: &mut Reader) -> Option<(ControlClient, MapStream, Instant)> {
    let mut pause = RECONNECT_FIRST;
    loop {
        let jitter = Duration::from_millis(rand::random::<u64>() % (pause.as_millis() as u64 + 1));
        tokio::select! {
            _ = tokio::time::sleep(pause / 2 + jitter / 2) => {}
            _ = reader.stop.changed() => return None,
        }
        if *reader.stop.borrow() {
            return None;
        }
        pause = (pause * 2).min(RECONNECT_CAP);
        let permit = reader.storm_limit.clone().acquire_owned().await.ok()?;
        let attempt = async {
            let client = ControlClient::connect_with_server_key(
                &reader.options.server_url,
                reader.node.machine.clone(),
                reader.server,
                reader.options.capability_version,
            )
            .await?;
            let request = client.stream_request(
                &reader.node.node_key,
                &reader.node.disco_key,
                opening_endpoints(reader.index),
            );
            let opened = Instant::now();
            let stream = client.map_stream(&request).await?;
            Ok::<_, ClientError>((client, stream, opened))
        };
        let result = attempt.await;
        drop(permit);
        if let Ok(opened) = result {
            return Some(opened);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitsets_compare_by_members_and_name_the_differences() {
        let a = Bitset::of(&[1, 64, 200]);
        let mut b = Bitset::of(&[1, 64, 300]);
        assert!(!a.same(&b));
        assert_eq!(a.minus(&b), vec![200]);
        assert_eq!(b.minus(&a), vec![300]);
        b.set(300, false);
        b.set(200, true);
        // b has trailing zero words now: still the same set.
        assert!(a.same(&b) && b.same(&a));
        assert_eq!(a.count(), 3);
        assert!(a.minus(&b).is_empty());
    }

    #[test]
    fn the_cheap_decode_notices_filters_and_self_addresses() {
        let light: LightMessage = serde_json::from_str(
            r#"{"Node": {"ID": 7, "Addresses": ["100.64.0.7/32"]}, "PacketFilters": {"base": []}}"#,
        )
        .unwrap();
        assert!(light.packet_filters.is_some() && light.packet_filter.is_none());
        assert!(light.peers.is_none());
        let node = light.node.unwrap();
        let own = SelfNode::from_addresses(node.id, &node.addresses);
        assert_eq!(own.ipv4, Some("100.64.0.7".parse().unwrap()));
        let light: LightMessage =
            serde_json::from_str(r#"{"Peers": [], "PacketFilter": null}"#).unwrap();
        assert!(light.peers.is_some_and(|p| p.is_empty()));
    }
}
