//! The fan-out: one task that owns every live map session and the volatile presence table,
//! watches the engine's published state, and on each coalescing tick turns what changed into
//! one message per affected session.
//!
//! Why one task: it is the only place that reads "the state at seq S" and registers sessions,
//! so the watermark rule (a new session's full map is built from exactly the state its later
//! deltas start from) holds by construction. Rendering is shared (`PeerCache`) and deltas
//! are computed against what each session was sent (`SessionView`), so a slow client
//! coalesces instead of queueing without bound: when its channel is full its pending set
//! simply grows (bounded by the number of nodes) until the next tick finds room.
//!
//! The hub also owns the two clocks that only it can see: an ephemeral node that stays
//! offline for `node.ephemeral.inactivity_timeout` is deleted (a `NodeDeleted` by the
//! system), and a node whose key expiry passes is re-rendered so peers see `Expired` at once
//! (the expiry time itself is already in the log; nothing new is appended).
//!
//! Per-node budgets (`core::limits`, `governor` token buckets): presence reports that change
//! something are applied at most 2/s per node (the rest merge, newest first, into a deferred
//! report a later tick applies); reported facts wait in one "latest wins" slot per node that
//! a separate task commits as `UpdateHostinfo` at most once per 10 s after a burst of 3; and
//! the handle answers whether a node may open a stream or get a one-shot full map now.

use crate::core::command::Command;
use crate::core::event::Actor;
use crate::core::event::NodeHostinfo;
use crate::core::ids::NodeId;
use crate::core::keys::{DiscoKey, MachineKey};
use crate::core::limits;
use crate::core::netmap::{Access, Delta, NetmapContext, NodePresence, PeerCache, SessionView};
use crate::core::policy::Topology;
use crate::core::routes::{self, Primaries};
use crate::core::time::Timestamp;
use crate::core::State;
use crate::engine::{Clock, EngineHandle, Published, SystemClock};
use crate::tailcfg::{MapResponse, SharedJson};
use axum::body::Bytes;
use governor::clock::Clock as _;
use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// Commands from stream handlers to the hub.
const HUB_QUEUE: usize = 4096;

/// One token bucket per node (`governor`'s keyed GCRA limiter: well-kept, lock-light, and
/// its table is trimmed with `retain_recent`).
type NodeLimiter = governor::DefaultKeyedRateLimiter<NodeId>;

fn limiter(period: Duration, burst: u32) -> NodeLimiter {
    let quota = governor::Quota::with_period(period)
        .expect("a non-zero period")
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    governor::RateLimiter::keyed(quota)
}

/// Whether `node` may do one more of what `limiter` counts; if not, how long until it may.
fn admit(limiter: &NodeLimiter, node: NodeId) -> Result<(), Duration> {
    limiter.check_key(&node).map_err(|not_until| {
        not_until.wait_time_from(governor::clock::DefaultClock::default().now())
    })
}

/// The newest facts (hostname, OS, routes, tags, SSH keys) each node wants recorded: one
/// "latest wins" slot per node, committed by one task at most at the
/// `limits::HOSTINFO_EVENT_*` rate, so a node that changes its Hostinfo on every request
/// adds a bounded number of events to the log (and holds one slot, not a task per request).
struct FactSlots {
    wanted: Mutex<HashMap<NodeId, (MachineKey, NodeHostinfo)>>,
    wake: Notify,
    limiter: NodeLimiter,
}

impl FactSlots {
    fn new() -> FactSlots {
        FactSlots {
            wanted: Mutex::default(),
            wake: Notify::new(),
            limiter: limiter(
                Duration::from_secs(limits::HOSTINFO_EVENT_PERIOD_SECS),
                limits::HOSTINFO_EVENT_BURST,
            ),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, (MachineKey, NodeHostinfo)>> {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slots whose node may record now (and still wants something new), taken out.
    fn due(&self, state: &State) -> Vec<(NodeId, MachineKey, NodeHostinfo)> {
        let mut slots = self.slots();
        slots.retain(|id, (_, facts)| state.nodes.get(id).is_some_and(|n| n.hostinfo != *facts));
        let ready: Vec<NodeId> = slots
            .keys()
            .copied()
            .filter(|id| self.limiter.check_key(id).is_ok())
            .collect();
        ready
            .into_iter()
            .filter_map(|id| slots.remove(&id).map(|(m, f)| (id, m, f)))
            .collect()
    }
}

/// The task behind `FactSlots`: commits what is due, then waits for a new wish (or, while
/// some slot still waits for its node's next token, at most a second). Ends with the hub.
/// It also trims the request limiters' tables (their keys are registered nodes, so they are
/// bounded anyway; trimming forgets the idle ones).
async fn record_facts(
    engine: EngineHandle,
    slots: Arc<FactSlots>,
    requests: Arc<RequestLimits>,
    hub: mpsc::WeakSender<HubMessage>,
) {
    loop {
        let waiting = !slots.slots().is_empty();
        let pause = if waiting {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        };
        let _ = tokio::time::timeout(pause, slots.wake.notified()).await;
        if hub.upgrade().is_none() {
            return;
        }
        let due = slots.due(&engine.state());
        let commands = due.into_iter().map(|(id, machine, hostinfo)| {
            let engine = engine.clone();
            async move {
                let command = Command::UpdateHostinfo { id, hostinfo };
                // `execute` answers within the engine's command deadline (10 s).
                if let Err(error) = engine.execute(Actor::Machine(machine), command).await {
                    tracing::warn!(node = id.0, %error, "hostinfo not recorded");
                }
            }
        });
        // One batch: the engine commits them together.
        futures_util::future::join_all(commands).await;
        slots.limiter.retain_recent();
        requests.full_maps.retain_recent();
        requests.stream_opens.retain_recent();
    }
}

/// What a client reports about itself on a map request. `None` fields leave the stored value
/// alone (streaming requests are read-only for what they leave empty).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub endpoints: Option<Vec<String>>,
    pub disco_key: Option<DiscoKey>,
    pub home_derp: Option<u32>,
    pub capability_version: u32,
    pub hostinfo: Option<Arc<serde_json::Value>>,
}

/// A session the hub opened: its id and the frames to write, the full map first.
pub struct OpenedSession {
    pub id: u64,
    pub frames: mpsc::Receiver<Bytes>,
}

enum HubMessage {
    Open {
        node: NodeId,
        report: Report,
        compress: bool,
        reply: oneshot::Sender<Option<OpenedSession>>,
    },
    Close {
        node: NodeId,
        session: u64,
    },
    Report {
        node: NodeId,
        report: Report,
    },
    Snapshot {
        node: NodeId,
        compress: bool,
        reply: oneshot::Sender<Option<Bytes>>,
    },
    /// A new `DNSConfig` (the extra-records file changed): every session gets it.
    SetDnsConfig(SharedJson),
    /// A new DERP map (`derp.urls` or `derp.paths` changed): every session gets it.
    SetDerpMap(SharedJson),
    /// What the `/debug/*` pages show.
    Inspect(oneshot::Sender<HubInspection>),
}

/// The hub's live view, for the debug pages.
pub struct HubInspection {
    pub sessions: Vec<SessionSummary>,
    pub primaries: Primaries,
    /// The access view in force (its policy and topology).
    pub access: Arc<Access>,
    pub derp_map: SharedJson,
    pub dns_config: SharedJson,
}

/// One live map session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionSummary {
    pub node: u64,
    pub session: u64,
    pub compressed: bool,
    /// Nodes whose changes wait for the next tick (or for room in the session's queue).
    pub pending_nodes: usize,
    pub pending_everything: bool,
    /// Frames queued for the stream and not yet written.
    pub queued_frames: usize,
}

/// Presence as the API reads it (`online`, `lastSeen`): written only by the hub.
pub type PresenceTable = Arc<RwLock<HashMap<NodeId, NodePresence>>>;

/// Timers and sizes (from `tuning:` in the config).
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub batch_change_delay: Duration,
    pub session_queue: usize,
    pub offline_grace: Duration,
    /// An ephemeral node offline (or never connected) this long is deleted.
    pub ephemeral_inactivity: Duration,
}

/// The handle stream handlers hold.
#[derive(Clone)]
pub struct MapHub {
    tx: mpsc::Sender<HubMessage>,
    presence: PresenceTable,
    facts: Arc<FactSlots>,
    requests: Arc<RequestLimits>,
}

/// Per-node budgets for the map requests that cost the hub an O(nodes) render (M6).
struct RequestLimits {
    /// Non-streaming full maps (`limits::FULL_MAP_*`).
    full_maps: NodeLimiter,
    /// Stream (re)opens (`limits::STREAM_OPEN_*`).
    stream_opens: NodeLimiter,
}

impl MapHub {
    /// Starts the hub task; it ends when every handle is dropped.
    pub fn start(engine: &EngineHandle, context: NetmapContext, options: HubOptions) -> MapHub {
        let (tx, rx) = mpsc::channel(HUB_QUEUE);
        let presence: PresenceTable = Arc::default();
        let published = engine.subscribe();
        let state = published.borrow().state.clone();
        let mut cache = PeerCache::default();
        let now = SystemClock.now();
        let mut context = context;
        context.access = Arc::new(Access::for_state(&state, context.access.server_url()));
        {
            let table = presence.read().unwrap_or_else(|e| e.into_inner());
            let lookup = |id: NodeId| table.get(&id).cloned().unwrap_or_default();
            if let Err(error) = cache.refresh_all(&state, &lookup, now) {
                tracing::error!(%error, "cannot render nodes");
            }
        }
        let mut hub = Hub {
            engine: engine.clone(),
            ephemeral_deadlines: HashMap::new(),
            expiries: BTreeSet::new(),
            expiry_of: HashMap::new(),
            primaries: Primaries::new(),
            state: state.clone(),
            published,
            context,
            cache,
            presence: presence.clone(),
            sessions: HashMap::new(),
            next_session: 1,
            dirty: BTreeSet::new(),
            everything: false,
            access_changed: false,
            going_offline: HashMap::new(),
            options,
            compressor: None,
            presence_limiter: limiter(Duration::from_millis(limits::PRESENCE_UPDATE_PERIOD_MS), 1),
            deferred: HashMap::new(),
        };
        for id in state.nodes.keys() {
            hub.track_timers(*id);
        }
        crate::supervise::spawn_critical("map hub", hub.run(rx));
        let facts = Arc::new(FactSlots::new());
        let requests = Arc::new(RequestLimits {
            full_maps: limiter(
                Duration::from_secs(limits::FULL_MAP_PERIOD_SECS),
                limits::FULL_MAP_BURST,
            ),
            stream_opens: limiter(
                Duration::from_secs(limits::STREAM_OPEN_PERIOD_SECS),
                limits::STREAM_OPEN_BURST,
            ),
        });
        crate::supervise::spawn_critical(
            "hostinfo recorder",
            record_facts(
                engine.clone(),
                facts.clone(),
                requests.clone(),
                tx.downgrade(),
            ),
        );
        MapHub {
            tx,
            presence,
            facts,
            requests,
        }
    }

    /// Whether `node` may have one more non-streaming full map now; if not, how long until
    /// it may (the handler answers 429 with `Retry-After`).
    pub fn admit_full_map(&self, node: NodeId) -> Result<(), Duration> {
        admit(&self.requests.full_maps, node)
    }

    /// Whether `node` may (re)open its map stream now; if not, how long until it may.
    pub fn admit_stream_open(&self, node: NodeId) -> Result<(), Duration> {
        admit(&self.requests.stream_opens, node)
    }

    /// Asks for `facts` to be recorded for `node` (a `Command::UpdateHostinfo` on behalf of
    /// `machine`): replaces whatever the node wanted before; committed as soon as the node's
    /// `limits::HOSTINFO_EVENT_*` budget allows, if it still differs from the recorded facts.
    pub fn record_facts(&self, node: NodeId, machine: MachineKey, facts: NodeHostinfo) {
        self.facts.slots().insert(node, (machine, facts));
        self.facts.wake.notify_one();
    }

    pub fn presence(&self) -> PresenceTable {
        self.presence.clone()
    }

    /// Opens the node's session (replacing an older one). `None` if the node is gone.
    pub async fn open(
        &self,
        node: NodeId,
        report: Report,
        compress: bool,
    ) -> Option<OpenedSession> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(HubMessage::Open {
                node,
                report,
                compress,
                reply,
            })
            .await
            .ok()?;
        answer.await.ok().flatten()
    }

    /// One full map, for a non-streaming request; no session is registered.
    pub async fn snapshot(&self, node: NodeId, compress: bool) -> Option<Bytes> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(HubMessage::Snapshot {
                node,
                compress,
                reply,
            })
            .await
            .ok()?;
        answer.await.ok().flatten()
    }

    /// A lite update (`Stream:false`): new endpoints, disco key or home DERP.
    pub async fn report(&self, node: NodeId, report: Report) {
        let _ = self.tx.send(HubMessage::Report { node, report }).await;
    }

    /// Replaces the tailnet's `DNSConfig`; every live session is sent it in the next batch
    /// (`SessionView::delta` re-sends it when it differs from what the session has).
    pub async fn set_dns_config(&self, dns_config: SharedJson) {
        let _ = self.tx.send(HubMessage::SetDnsConfig(dns_config)).await;
    }

    /// Replaces the tailnet's DERP map (`derp/map_fetch.rs`); like the DNS config, a
    /// tailnet-wide netmap change, not an event: each live session gets the new `DERPMap` in
    /// the next batch (`SessionView::delta` sends it when it differs from what it sent).
    pub async fn set_derp_map(&self, derp_map: SharedJson) {
        let _ = self.tx.send(HubMessage::SetDerpMap(derp_map)).await;
    }

    /// The live sessions, HA primaries and access view (the `/debug/*` pages).
    pub async fn inspect(&self) -> Option<HubInspection> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(HubMessage::Inspect(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Called when a stream ends (from a drop guard, hence not async).
    pub fn close(&self, node: NodeId, session: u64) {
        if self
            .tx
            .try_send(HubMessage::Close { node, session })
            .is_err()
        {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(HubMessage::Close { node, session }).await;
            });
        }
    }
}

struct LiveSession {
    id: u64,
    view: SessionView,
    frames: mpsc::Sender<Bytes>,
    compress: bool,
    pending: BTreeSet<NodeId>,
    pending_everything: bool,
    /// Re-check filter, SSH policy and capabilities even with no node pending.
    poke: bool,
}

struct Hub {
    state: Arc<State>,
    published: watch::Receiver<Published>,
    context: NetmapContext,
    cache: PeerCache,
    presence: PresenceTable,
    /// One live session per node.
    sessions: HashMap<NodeId, LiveSession>,
    next_session: u64,
    /// Nodes whose rendering changed since the last tick.
    dirty: BTreeSet<NodeId>,
    /// A tailnet-wide change since the last tick.
    everything: bool,
    /// The access view was rebuilt since the last tick.
    access_changed: bool,
    going_offline: HashMap<NodeId, Instant>,
    /// Ephemeral nodes without a session, and when they are deleted.
    ephemeral_deadlines: HashMap<NodeId, Instant>,
    /// Every node's key expiry, soonest first, so the tick can re-render what just expired.
    expiries: BTreeSet<(Timestamp, NodeId)>,
    expiry_of: HashMap<NodeId, Timestamp>,
    /// The primary router of every subnet (HA), re-elected when presence or routes change.
    primaries: Primaries,
    engine: EngineHandle,
    options: HubOptions,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    /// Presence reports per node (`limits::PRESENCE_UPDATE_PERIOD_MS`); the rest wait in
    /// `deferred`, merged, the newest values winning.
    presence_limiter: NodeLimiter,
    deferred: HashMap<NodeId, Report>,
}

impl Hub {
    async fn run(mut self, mut rx: mpsc::Receiver<HubMessage>) {
        let mut tick = tokio::time::interval(self.options.batch_change_delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut engine_alive = true;
        loop {
            tokio::select! {
                message = rx.recv() => match message {
                    Some(message) => self.handle(message),
                    None => break,
                },
                changed = self.published.changed(), if engine_alive => {
                    if changed.is_err() {
                        engine_alive = false;
                        continue;
                    }
                    self.catch_up();
                }
                _ = tick.tick() => self.flush(),
            }
        }
    }

    fn update_presence(&mut self, node: NodeId, change: impl FnOnce(&mut NodePresence)) {
        let mut table = self.presence.write().unwrap_or_else(|e| e.into_inner());
        let entry = table.entry(node).or_default();
        let before = entry.clone();
        change(entry);
        if *entry != before {
            self.dirty.insert(node);
        }
    }

    /// Takes in the newest published state and notes what changed in it.
    fn catch_up(&mut self) {
        let new = self.published.borrow_and_update().state.clone();
        if Arc::ptr_eq(&new, &self.state) {
            return;
        }
        if self.state.users != new.users
            || self.state.policy != new.policy
            || self.state.config != new.config
        {
            self.everything = true;
        }
        let changed: Vec<NodeId> = self
            .state
            .nodes
            .diff(&new.nodes)
            .map(|item| match item {
                imbl::ordmap::DiffItem::Add(id, _) => *id,
                imbl::ordmap::DiffItem::Update { new: (id, _), .. } => *id,
                imbl::ordmap::DiffItem::Remove(id, _) => *id,
            })
            .collect();
        self.dirty.extend(changed.iter().copied());
        let removed: Vec<NodeId> = self
            .sessions
            .keys()
            .filter(|id| !new.nodes.contains_key(id))
            .copied()
            .collect();
        let policy_changed = self.state.policy != new.policy;
        self.state = new;
        // Who sees whom changes with the policy and with the topology (owners, tags,
        // addresses, routes, approval), not with hostinfo or presence.
        let topology = Topology::from_state(&self.state);
        if policy_changed || **self.context.access.topology() != topology {
            self.context.access = Arc::new(Access::for_state_with(
                &self.state,
                Arc::new(topology),
                self.context.access.server_url(),
            ));
            // A topology change alone changes only the edges of the nodes that changed
            // (property-tested): their own sessions re-examine every peer, every session
            // re-checks its filter. A policy change re-examines everything.
            self.everything |= policy_changed;
            self.access_changed = true;
        }
        for id in changed {
            self.track_timers(id);
        }
        self.reelect();
        let any_removed = !removed.is_empty();
        for node in removed {
            // Dropping the sender ends the stream of a deleted node.
            self.sessions.remove(&node);
            self.going_offline.remove(&node);
            self.presence
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&node);
        }
        if any_removed {
            self.count_sessions();
        }
    }

    fn handle(&mut self, message: HubMessage) {
        match message {
            HubMessage::Open {
                node,
                report,
                compress,
                reply,
            } => {
                let _ = reply.send(self.open(node, report, compress));
            }
            HubMessage::Close { node, session } => {
                if self.sessions.get(&node).is_some_and(|s| s.id == session) {
                    self.sessions.remove(&node);
                    self.count_sessions();
                    self.going_offline
                        .insert(node, Instant::now() + self.options.offline_grace);
                    self.track_timers(node);
                }
            }
            HubMessage::Snapshot {
                node,
                compress,
                reply,
            } => {
                self.catch_up();
                self.render_dirty();
                let full = SessionView::full(
                    node,
                    &self.state,
                    &self.cache,
                    &self.context,
                    SystemClock.now(),
                );
                let frame = full.and_then(|(_, response)| self.encode(&response, compress));
                let _ = reply.send(frame);
            }
            HubMessage::Report { node, report } => {
                if !self.state.nodes.contains_key(&node) {
                    return;
                }
                let report = match self.deferred.remove(&node) {
                    Some(older) => merge_reports(older, report),
                    None => report,
                };
                if !self.changes_presence(node, &report) {
                    return;
                }
                if self.presence_limiter.check_key(&node).is_ok() {
                    self.update_presence(node, |p| apply_report(p, report));
                } else {
                    // Coalesced: applied by a later tick, when the node's budget allows.
                    self.deferred.insert(node, report);
                }
            }
            HubMessage::SetDnsConfig(dns_config) => {
                self.context.dns_config = dns_config;
                self.everything = true;
            }
            HubMessage::SetDerpMap(derp_map) => {
                self.context.derp_map = derp_map;
                self.everything = true;
            }
            HubMessage::Inspect(reply) => {
                self.catch_up();
                let mut sessions: Vec<SessionSummary> = self
                    .sessions
                    .iter()
                    .map(|(node, s)| SessionSummary {
                        node: node.0,
                        session: s.id,
                        compressed: s.compress,
                        pending_nodes: s.pending.len(),
                        pending_everything: s.pending_everything,
                        queued_frames: s.frames.max_capacity() - s.frames.capacity(),
                    })
                    .collect();
                sessions.sort_by_key(|s| s.node);
                let _ = reply.send(HubInspection {
                    sessions,
                    primaries: self.primaries.clone(),
                    access: self.context.access.clone(),
                    derp_map: self.context.derp_map.clone(),
                    dns_config: self.context.dns_config.clone(),
                });
            }
        }
    }

    fn open(&mut self, node: NodeId, report: Report, compress: bool) -> Option<OpenedSession> {
        // The node may have registered a moment ago: serve it from the newest state.
        self.catch_up();
        if !self.state.nodes.contains_key(&node) {
            return None;
        }
        self.going_offline.remove(&node);
        self.ephemeral_deadlines.remove(&node);
        let report = match self.deferred.remove(&node) {
            Some(older) => merge_reports(older, report),
            None => report,
        };
        self.update_presence(node, |p| {
            apply_report(p, report);
            p.online = true;
            p.last_seen = None;
        });
        self.reelect();
        // Everything already noticed is rendered now, so the full map and the deltas that
        // follow start from the same point.
        self.render_dirty();
        let now = SystemClock.now();
        let (view, response) =
            SessionView::full(node, &self.state, &self.cache, &self.context, now)?;
        let frame = self.encode(&response, compress)?;
        crate::metrics::metrics().map_message("full", frame.len());
        let (frames_tx, frames_rx) = mpsc::channel(self.options.session_queue.max(1));
        frames_tx.try_send(frame).ok()?;
        let id = self.next_session;
        self.next_session += 1;
        // A newer stream replaces the older one; dropping its sender ends it.
        self.sessions.insert(
            node,
            LiveSession {
                id,
                view,
                frames: frames_tx,
                compress,
                pending: BTreeSet::new(),
                pending_everything: false,
                poke: false,
            },
        );
        self.count_sessions();
        Some(OpenedSession {
            id,
            frames: frames_rx,
        })
    }

    /// Re-renders what changed and hands it to every session's pending set.
    fn render_dirty(&mut self) {
        if self.dirty.is_empty() && !self.everything && !self.access_changed {
            return;
        }
        let now = SystemClock.now();
        let presence = self.presence.clone();
        let table = presence.read().unwrap_or_else(|e| e.into_inner());
        let lookup = |id: NodeId| table.get(&id).cloned().unwrap_or_default();
        let result = if self.everything {
            self.cache.refresh_all(&self.state, &lookup, now)
        } else {
            self.cache
                .refresh(&self.state, &lookup, self.dirty.iter().copied(), now)
        };
        if let Err(error) = result {
            tracing::error!(%error, "cannot render nodes");
        }
        drop(table);
        for (viewer, session) in self.sessions.iter_mut() {
            session.pending.extend(self.dirty.iter().copied());
            session.pending_everything |= self.everything;
            if self.access_changed {
                session.poke = true;
                session.pending_everything |= self.dirty.contains(viewer);
            }
        }
        self.dirty.clear();
        self.everything = false;
        self.access_changed = false;
    }

    /// The coalescing tick: offline transitions, then one message per session that has
    /// something new and room to take it.
    fn flush(&mut self) {
        let now_instant = Instant::now();
        let expired: Vec<NodeId> = self
            .going_offline
            .iter()
            .filter(|(_, at)| **at <= now_instant)
            .map(|(node, _)| *node)
            .collect();
        let now = SystemClock.now();
        let went_offline = !expired.is_empty();
        for node in expired {
            self.going_offline.remove(&node);
            if self.state.nodes.contains_key(&node) {
                self.update_presence(node, |p| {
                    p.online = false;
                    p.last_seen = Some(now);
                });
            }
        }
        if went_offline {
            self.reelect();
        }
        self.run_timers(now_instant, now);
        self.apply_deferred();
        self.render_dirty();

        let mut gone = Vec::new();
        let fanout_started = Instant::now();
        let mut fanned_out = false;
        let metrics = crate::metrics::metrics();
        let mut compressor = self.compressor.take();
        // Most sessions of one tick get byte-identical messages (one peer's patch, seen by
        // everyone): compress each distinct message once and share the frame.
        let mut frames: HashMap<(bool, Vec<u8>), Bytes> = HashMap::new();
        for (node, session) in self.sessions.iter_mut() {
            if session.pending.is_empty() && !session.pending_everything && !session.poke {
                continue;
            }
            let Ok(permit) = session.frames.try_reserve() else {
                // Full (a slow client: its changes keep coalescing) or closed.
                if session.frames.is_closed() {
                    gone.push(*node);
                }
                continue;
            };
            let changed: Vec<NodeId> = std::mem::take(&mut session.pending).into_iter().collect();
            let everything = std::mem::take(&mut session.pending_everything);
            session.poke = false;
            match session.view.delta(
                &changed,
                everything,
                &self.state,
                &self.cache,
                &self.context,
                now,
            ) {
                Delta::Nothing => {}
                Delta::Message(response) => {
                    match encode_shared(&mut frames, &mut compressor, &response, session.compress) {
                        Some(frame) => {
                            metrics.map_message("delta", frame.len());
                            fanned_out = true;
                            permit.send(frame)
                        }
                        None => gone.push(*node),
                    }
                }
                Delta::ViewerGone => gone.push(*node),
            }
        }
        self.compressor = compressor;
        if fanned_out {
            metrics
                .fanout_seconds
                .observe(fanout_started.elapsed().as_secs_f64());
        }
        let any_gone = !gone.is_empty();
        for node in gone {
            self.sessions.remove(&node);
        }
        if any_gone {
            self.count_sessions();
        }
    }

    /// Whether `report` would change what `node`'s peers are shown.
    fn changes_presence(&self, node: NodeId, report: &Report) -> bool {
        let table = self.presence.read().unwrap_or_else(|e| e.into_inner());
        let current = table.get(&node).cloned().unwrap_or_default();
        let mut after = current.clone();
        apply_report(&mut after, report.clone());
        after != current
    }

    /// Applies the coalesced presence reports whose node's budget allows it now.
    fn apply_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let ready: Vec<NodeId> = self
            .deferred
            .keys()
            .copied()
            .filter(|node| self.presence_limiter.check_key(node).is_ok())
            .collect();
        for node in ready {
            if let Some(report) = self.deferred.remove(&node) {
                if self.state.nodes.contains_key(&node) {
                    self.update_presence(node, |p| apply_report(p, report));
                }
            }
        }
        self.presence_limiter.retain_recent();
    }

    fn count_sessions(&self) {
        crate::metrics::metrics()
            .nodes_connected
            .set(self.sessions.len() as i64);
    }

    /// Re-runs the HA election and hands each router its primary subnets (a change is a
    /// re-render of that router, so its peers get new `PrimaryRoutes`/`AllowedIPs`), then
    /// re-ranks each subnet's routers: a router that moves in a ranking may now carry a
    /// subnet for the viewers `via` steers to it (or stop), so it is re-examined too.
    fn reelect(&mut self) {
        let (elected, ranking) = {
            let table = self.presence.read().unwrap_or_else(|e| e.into_inner());
            let online = |id: NodeId| table.get(&id).is_some_and(|p| p.online);
            let elected = routes::elect(&self.state, &online, &self.primaries);
            let ranking = routes::rank(&self.state, &online, &elected);
            (elected, ranking)
        };
        if ranking != *self.context.ranking {
            let mut moved: BTreeSet<NodeId> = BTreeSet::new();
            let old = &self.context.ranking;
            for (route, ranked) in ranking.iter() {
                if old.get(route) != Some(ranked) {
                    moved.extend(ranked.iter().copied());
                    moved.extend(old.get(route).into_iter().flatten().copied());
                }
            }
            for (route, ranked) in old.iter() {
                if !ranking.contains_key(route) {
                    moved.extend(ranked.iter().copied());
                }
            }
            self.context.ranking = Arc::new(ranking);
            self.dirty.extend(
                moved
                    .into_iter()
                    .filter(|id| self.state.nodes.contains_key(id)),
            );
        }
        if elected == self.primaries {
            return;
        }
        let mut touched: BTreeSet<NodeId> = self.primaries.values().copied().collect();
        touched.extend(elected.values().copied());
        self.primaries = elected;
        for node in touched {
            if !self.state.nodes.contains_key(&node) {
                continue;
            }
            let mine = routes::primary_routes_of(&self.primaries, node);
            self.update_presence(node, |p| p.primary_routes = mine);
        }
    }

    /// Brings the node's timers in line with the state: its key expiry, and the inactivity
    /// deadline of an ephemeral node that has no session (counted from now: from its
    /// disconnect, its registration, or the server's start).
    fn track_timers(&mut self, id: NodeId) {
        let node = self.state.nodes.get(&id);
        let expiry = node.and_then(|n| n.expiry);
        if self.expiry_of.get(&id).copied() != expiry {
            if let Some(old) = self.expiry_of.remove(&id) {
                self.expiries.remove(&(old, id));
            }
            if let Some(at) = expiry {
                self.expiry_of.insert(id, at);
                self.expiries.insert((at, id));
            }
        }
        let waiting = node.is_some_and(|n| n.ephemeral) && !self.sessions.contains_key(&id);
        if !waiting {
            self.ephemeral_deadlines.remove(&id);
        } else if !self.ephemeral_deadlines.contains_key(&id) {
            self.ephemeral_deadlines
                .insert(id, Instant::now() + self.options.ephemeral_inactivity);
        }
    }

    /// Re-renders nodes whose key just expired, and deletes ephemeral nodes whose inactivity
    /// deadline passed.
    fn run_timers(&mut self, now_instant: Instant, now: Timestamp) {
        while let Some(&(at, id)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            self.dirty.insert(id);
        }
        let due: Vec<NodeId> = self
            .ephemeral_deadlines
            .iter()
            .filter(|(id, at)| **at <= now_instant && !self.sessions.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.ephemeral_deadlines.remove(&id);
            let engine = self.engine.clone();
            tokio::spawn(async move {
                tracing::info!(node = %id, "deleting an inactive ephemeral node");
                if let Err(error) = engine
                    .execute(Actor::System, Command::DeleteNode { id })
                    .await
                {
                    tracing::warn!(node = %id, %error, "cannot delete an inactive ephemeral node");
                }
            });
        }
    }

    fn encode(&mut self, response: &MapResponse, compress: bool) -> Option<Bytes> {
        let mut compressor = self.compressor.take();
        let frame = encode_with(&mut compressor, response, compress);
        self.compressor = compressor;
        frame
    }
}

/// `newer` over `older`: what `newer` leaves out keeps `older`'s value.
fn merge_reports(older: Report, newer: Report) -> Report {
    Report {
        endpoints: newer.endpoints.or(older.endpoints),
        disco_key: newer.disco_key.or(older.disco_key),
        home_derp: newer.home_derp.or(older.home_derp),
        capability_version: if newer.capability_version != 0 {
            newer.capability_version
        } else {
            older.capability_version
        },
        hostinfo: newer.hostinfo.or(older.hostinfo),
    }
}

fn apply_report(presence: &mut NodePresence, report: Report) {
    if let Some(endpoints) = report.endpoints {
        presence.endpoints = endpoints;
    }
    if let Some(disco) = report.disco_key {
        presence.disco_key = Some(disco);
    }
    if let Some(home) = report.home_derp {
        presence.home_derp = home;
    }
    if report.capability_version != 0 {
        presence.capability_version = report.capability_version;
    }
    if let Some(hostinfo) = report.hostinfo {
        presence.hostinfo = Some(hostinfo);
    }
}

/// One frame of the map stream: little-endian u32 length, then the (zstd) JSON.
fn encode_with(
    compressor: &mut Option<zstd::bulk::Compressor<'static>>,
    response: &MapResponse,
    compress: bool,
) -> Option<Bytes> {
    encode_json(compressor, &to_json(response)?, compress)
}

fn to_json(response: &MapResponse) -> Option<Vec<u8>> {
    serde_json::to_vec(response)
        .map_err(|error| tracing::error!(%error, "cannot encode a map response"))
        .ok()
}

/// A frame from a message's JSON: zstd-compressed when the client asked for it.
fn encode_json(
    compressor: &mut Option<zstd::bulk::Compressor<'static>>,
    json: &[u8],
    compress: bool,
) -> Option<Bytes> {
    if !compress {
        return Some(frame(json));
    }
    if compressor.is_none() {
        *compressor = zstd::bulk::Compressor::new(1).ok();
    }
    match compressor.as_mut()?.compress(json) {
        Ok(body) => Some(frame(&body)),
        Err(error) => {
            tracing::error!(%error, "zstd failed");
            None
        }
    }
}

/// `encode_with`, once per distinct message in `frames` (the JSON is the key).
fn encode_shared(
    frames: &mut HashMap<(bool, Vec<u8>), Bytes>,
    compressor: &mut Option<zstd::bulk::Compressor<'static>>,
    response: &MapResponse,
    compress: bool,
) -> Option<Bytes> {
    let key = (compress, to_json(response)?);
    if let Some(frame) = frames.get(&key) {
        return Some(frame.clone());
    }
    let frame = encode_json(compressor, &key.1, compress)?;
    frames.insert(key, frame.clone());
    Some(frame)
}

/// Prefixes `body` with its little-endian length.
pub fn frame(body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// The keep-alive frame, byte-identical every time (the client short-circuits repeats).
pub fn keep_alive_frame(compress: bool) -> Bytes {
    let json = br#"{"KeepAlive":true}"#;
    if compress {
        if let Ok(body) = zstd::bulk::compress(json, 1) {
            return frame(&body);
        }
    }
    frame(json)
}
