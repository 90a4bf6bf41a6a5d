//! The hub itself: one owner, on its own thread, of the state it serves from, the shared
//! renderings, the live sessions, the presence table, the timers and the HA election. See
//! the module doc of `hub` for why one owner and why its own thread.
//!
//! With several instances, presence has two sources: the sessions held here (they win for
//! their nodes) and the `RemoteView` of the other live instances, merged in by `settle`;
//! what is held here is published after each send (`publish`), never per client message.

use super::fanout::{self, Basis, LiveSession};
use super::framing::Encoder;
use super::presence::{settle, LocalChanges, PresenceTable, RemoteView, Report, ReportBudget};
use super::timers::Timers;
use super::{HubInspection, HubMessage, HubOptions, OpenedSession, SessionSummary};
use crate::core::command::Command;
use crate::core::event::Actor;
use crate::core::ids::NodeId;
use crate::core::netmap::{Access, NetmapContext, NodePresence, PeerCache};
use crate::core::policy::Topology;
use crate::core::routes::{self, Primaries};
use crate::core::State;
use crate::engine::{EngineHandle, Published};
use axum::body::Bytes;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

/// At most this many queued requests are taken as one batch.
const MAX_BATCH: usize = 1024;

/// Helper threads for a tick's per-session work, at most (beyond the hub's own).
const MAX_EXTRA_THREADS: usize = 7;

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
    timers: Timers,
    /// The primary router of every subnet (HA), re-elected when presence or routes change.
    primaries: Primaries,
    engine: EngineHandle,
    options: HubOptions,
    reports: ReportBudget,
    /// One per core: the tick's work is split among them.
    encoders: Vec<Encoder>,
    /// Sessions hold changes not yet sent (rendered since the last send, or waiting for
    /// room in a slow client's queue).
    undelivered: bool,
    /// When changes were last sent: the next send waits until `batch_change_delay` after it.
    last_sent: Option<Instant>,
    /// A send waiting for the end of the current batching window.
    send_at: Option<Instant>,
    /// How long the last send took: the next waits at least that long too, so under load
    /// the hub spends at most half its time sending and the batches grow instead.
    last_cost: std::time::Duration,
    /// Stream opens and one-shot maps that need a newer state than the hub has: served
    /// by the next send, which catches up first.
    waiting_opens: Vec<OpenRequest>,
    waiting_snapshots: Vec<SnapshotRequest>,
    /// Nodes online on another live instance (several instances; else empty).
    remote: HashMap<NodeId, NodePresence>,
    /// Whether this instance deletes inactive ephemeral nodes (`RemoteView::cleans_up`).
    cleans_up: bool,
    /// Where what this instance holds is published (several instances only).
    publisher: Option<Publisher>,
}

/// The way out to `ha::presence`, and the nodes whose publication is due.
struct Publisher {
    tx: mpsc::Sender<LocalChanges>,
    dirty: BTreeSet<NodeId>,
}

type OpenRequest = (NodeId, Report, bool, oneshot::Sender<Option<OpenedSession>>);
type SnapshotRequest = (NodeId, bool, oneshot::Sender<Option<Bytes>>);

/// Starts the hub on a thread of its own. Building its first view (access, every node's
/// rendering) happens there too, so the server's start does not wait for it; requests
/// queue meanwhile.
pub(super) fn spawn(
    engine: &EngineHandle,
    context: NetmapContext,
    options: HubOptions,
    presence: PresenceTable,
    rx: mpsc::Receiver<HubMessage>,
) {
    let engine = engine.clone();
    let started = std::thread::Builder::new()
        .name("map-hub".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    crate::supervise::fatal(&format!("cannot start the map hub's runtime: {error}"))
                }
            };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let hub = Hub::new(engine, context, options, presence);
                runtime.block_on(hub.run(rx))
            }));
            if ran.is_err() {
                crate::supervise::fatal(
                    "the map hub thread panicked; exiting so a supervisor restarts us",
                );
            }
        });
    if let Err(error) = started {
        crate::supervise::fatal(&format!("cannot start the map hub thread: {error}"));
    }
}

impl Hub {
    fn new(
        engine: EngineHandle,
        context: NetmapContext,
        options: HubOptions,
        presence: PresenceTable,
    ) -> Hub {
        let published = engine.subscribe();
        let state = published.borrow().state.clone();
        let mut cache = PeerCache::default();
        let now = options.clock.now();
        let mut context = context;
        context.access = Arc::new(Access::for_state(&state, context.access.server_url()));
        {
            let table = presence.read().unwrap_or_else(|e| e.into_inner());
            let lookup = |id: NodeId| table.get(&id).cloned().unwrap_or_default();
            if let Err(error) = cache.refresh_all(&state, &context.access, &lookup, now) {
                tracing::error!(%error, "cannot render nodes");
            }
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 1 + MAX_EXTRA_THREADS);
        let mut hub = Hub {
            timers: Timers::new(options.offline_grace, options.ephemeral_inactivity),
            engine,
            primaries: Primaries::new(),
            state: state.clone(),
            published,
            context,
            cache,
            presence,
            sessions: HashMap::new(),
            next_session: 1,
            dirty: BTreeSet::new(),
            everything: false,
            access_changed: false,
            options,
            reports: ReportBudget::new(),
            encoders: (0..threads).map(|_| Encoder::default()).collect(),
            undelivered: false,
            last_sent: None,
            send_at: None,
            last_cost: std::time::Duration::ZERO,
            waiting_opens: Vec::new(),
            waiting_snapshots: Vec::new(),
            remote: HashMap::new(),
            cleans_up: true,
            publisher: None,
        };
        for id in state.nodes.keys() {
            hub.track_timers(*id);
        }
        hub
    }

    /// The loop. Batching (`batch_change_delay`) bounds how often changes are sent, not
    /// when: a change after a quiet spell is sent at once; what arrives within the delay
    /// after a send waits for the window's end and goes out together. A periodic tick
    /// (same period) runs the timers and retries slow clients.
    async fn run(mut self, mut rx: mpsc::Receiver<HubMessage>) {
        let mut tick = tokio::time::interval(self.options.batch_change_delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut engine_alive = true;
        loop {
            let send_at = self.send_at.map(tokio::time::Instant::from_std);
            tokio::select! {
                message = rx.recv() => match message {
                    Some(first) => {
                        // Whatever queued up meanwhile is one batch: under load, the
                        // batches grow and the per-batch work is shared by more requests.
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(message) => batch.push(message),
                                Err(_) => break,
                            }
                        }
                        self.handle_batch(batch);
                    }
                    None => break,
                },
                changed = self.published.changed(), if engine_alive => {
                    if changed.is_err() {
                        engine_alive = false;
                        continue;
                    }
                    // Noted only: the send catches up, once for all the commits before it.
                    self.published.borrow_and_update();
                }
                _ = tokio::time::sleep_until(send_at.unwrap_or_else(tokio::time::Instant::now)), if send_at.is_some() => {
                    self.send_at = None;
                }
                _ = tick.tick() => self.run_timers(),
            }
            self.send_when_due();
        }
    }

    /// Whether anything may have to be sent: a newer state, rendering to do, or sessions
    /// holding changes.
    fn has_work(&self) -> bool {
        self.undelivered
            || !self.dirty.is_empty()
            || self.everything
            || self.access_changed
            || !self.waiting_opens.is_empty()
            || !self.waiting_snapshots.is_empty()
            || self.publisher.as_ref().is_some_and(|p| !p.dirty.is_empty())
            || self.behind()
    }

    /// Whether the engine published a state the hub has not taken in yet.
    fn behind(&self) -> bool {
        !Arc::ptr_eq(&self.published.borrow().state, &self.state)
    }

    /// Sends now if there is something and the batching window allows; else makes sure a
    /// send is due at the window's end.
    fn send_when_due(&mut self) {
        if !self.has_work() {
            return;
        }
        let now = Instant::now();
        let window = self.options.batch_change_delay.max(self.last_cost);
        let opens_at = self.last_sent.map(|at| at + window).filter(|at| *at > now);
        match opens_at {
            None => {
                self.send_at = None;
                self.flush();
            }
            Some(at) => {
                if self.send_at.is_none_or(|due| due > at) {
                    self.send_at = Some(at);
                }
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
            drop(table);
            if self.sessions.contains_key(&node) {
                self.note_local(node);
            }
        }
    }

    /// The node's publication is due at the next send (several instances only).
    fn note_local(&mut self, node: NodeId) {
        if let Some(publisher) = &mut self.publisher {
            publisher.dirty.insert(node);
        }
    }

    /// Whether this instance holds the node: a session here, or its offline grace.
    fn holds(&self, node: NodeId) -> bool {
        self.sessions.contains_key(&node) || self.timers.in_grace(node)
    }

    /// A node without a session here takes what the other instances say of it (`settle`).
    fn settle(&mut self, node: NodeId, now: crate::core::time::Timestamp) {
        if self.sessions.contains_key(&node) || !self.state.nodes.contains_key(&node) {
            return;
        }
        let remote = self.remote.get(&node).cloned();
        let in_grace = self.timers.in_grace(node);
        self.update_presence(node, |p| *p = settle(p, remote.as_ref(), in_grace, now));
    }

    /// Several instances from now on: publishes everything held here, then the changes.
    fn share_presence(&mut self, tx: mpsc::Sender<LocalChanges>) {
        let mut dirty: BTreeSet<NodeId> = self.sessions.keys().copied().collect();
        dirty.extend(
            self.state
                .nodes
                .keys()
                .copied()
                .filter(|id| self.timers.in_grace(*id)),
        );
        self.publisher = Some(Publisher { tx, dirty });
    }

    /// What the other live instances hold now: each node whose remote presence changed and
    /// that has no session here is settled (a change marks it dirty, so peers get a delta),
    /// then the election runs again.
    fn apply_remote(&mut self, view: RemoteView) {
        self.cleans_up = view.cleans_up;
        let old = std::mem::replace(&mut self.remote, view.online);
        let mut changed: BTreeSet<NodeId> = self
            .remote
            .iter()
            .filter(|(id, p)| old.get(id) != Some(p))
            .map(|(id, _)| *id)
            .collect();
        changed.extend(old.keys().filter(|id| !self.remote.contains_key(id)));
        if changed.is_empty() {
            return;
        }
        let now = self.options.clock.now();
        for node in changed {
            self.settle(node, now);
            if self.state.nodes.contains_key(&node) {
                self.track_timers(node);
            }
        }
        self.reelect();
    }

    /// Hands what changed among the nodes held here to `ha::presence` (one batch per send;
    /// when its queue is full, the batch waits for the next send).
    fn publish(&mut self) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        if publisher.dirty.is_empty() {
            return;
        }
        let changes: LocalChanges = {
            let table = self.presence.read().unwrap_or_else(|e| e.into_inner());
            publisher
                .dirty
                .iter()
                .map(|id| {
                    let held = self.holds(*id) && self.state.nodes.contains_key(id);
                    let presence = held.then(|| table.get(id).cloned()).flatten();
                    (*id, presence)
                })
                .collect()
        };
        let Some(publisher) = &mut self.publisher else {
            return;
        };
        match publisher.tx.try_send(changes) {
            Ok(()) => publisher.dirty.clear(),
            Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => self.publisher = None,
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
        let mut removed = Vec::new();
        let changed: Vec<NodeId> = self
            .state
            .nodes
            .diff(&new.nodes)
            .map(|item| match item {
                imbl::ordmap::DiffItem::Add(id, _) => *id,
                imbl::ordmap::DiffItem::Update { new: (id, _), .. } => *id,
                imbl::ordmap::DiffItem::Remove(id, _) => {
                    removed.push(*id);
                    *id
                }
            })
            .collect();
        self.dirty.extend(changed.iter().copied());
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
        let now = self.options.clock.now();
        for id in changed {
            if self.remote.contains_key(&id) {
                // Registered (or changed) while online on another instance.
                self.settle(id, now);
            }
            self.track_timers(id);
        }
        self.reelect();
        let any_removed = !removed.is_empty();
        for node in removed {
            // Dropping the sender ends the stream of a deleted node.
            self.sessions.remove(&node);
            self.timers.forget(node);
            self.presence
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&node);
            self.note_local(node);
        }
        if any_removed {
            self.count_sessions();
        }
    }

    /// Handles one batch of requests: the cheap ones in order, then the stream opens and
    /// one-shot maps together, after one render. When the engine has published a newer
    /// state (a node that just registered, an admin change), they wait for the next send,
    /// which takes it in once for all of them: catching up can mean recompiling the
    /// access view, which must not happen once per open when thousands arrive.
    fn handle_batch(&mut self, batch: Vec<HubMessage>) {
        let mut opens: Vec<OpenRequest> = Vec::new();
        let mut snapshots: Vec<SnapshotRequest> = Vec::new();
        for message in batch {
            match message {
                HubMessage::Open {
                    node,
                    report,
                    compress,
                    reply,
                } => opens.push((node, report, compress, reply)),
                HubMessage::Snapshot {
                    node,
                    compress,
                    reply,
                } => snapshots.push((node, compress, reply)),
                HubMessage::Close { node, session } => self.close(node, session),
                HubMessage::Report { node, report } => self.report(node, report),
                HubMessage::SetDnsConfig(dns_config) => {
                    self.context.dns_config = dns_config;
                    self.everything = true;
                }
                HubMessage::SetDerpMap(derp_map) => {
                    self.context.derp_map = derp_map;
                    self.everything = true;
                }
                HubMessage::Inspect(reply) => {
                    let _ = reply.send(self.inspect());
                }
                HubMessage::SharePresence(tx) => self.share_presence(tx),
                HubMessage::Remote(view) => self.apply_remote(view),
            }
        }
        if self.behind() || !self.waiting_opens.is_empty() || !self.waiting_snapshots.is_empty() {
            self.waiting_opens.extend(opens);
            self.waiting_snapshots.extend(snapshots);
        } else {
            self.open(opens);
            self.snapshots(snapshots);
        }
    }

    /// A stream ended: its node goes offline after the grace, unless a newer stream of it
    /// replaced this one.
    fn close(&mut self, node: NodeId, session: u64) {
        if self.sessions.get(&node).is_some_and(|s| s.id == session) {
            self.sessions.remove(&node);
            self.count_sessions();
            self.timers.disconnected(node, Instant::now());
            self.track_timers(node);
            // Already online on another instance: that instance's view, at once.
            if self.remote.contains_key(&node) {
                self.settle(node, self.options.clock.now());
            }
        }
    }

    /// A presence report: applied now if it changes something and the node's budget allows,
    /// else merged and applied by a later tick.
    fn report(&mut self, node: NodeId, report: Report) {
        if !self.state.nodes.contains_key(&node) {
            return;
        }
        let report = self.reports.take_merged(node, report);
        let current = self
            .presence
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .cloned()
            .unwrap_or_default();
        if !report.changes(&current) {
            return;
        }
        if let Some(report) = self.reports.admit(node, report) {
            self.update_presence(node, |p| report.apply_to(p));
        }
    }

    fn inspect(&mut self) -> HubInspection {
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
        HubInspection {
            sessions,
            primaries: self.primaries.clone(),
            access: self.context.access.clone(),
            derp_map: self.context.derp_map.clone(),
            dns_config: self.context.dns_config.clone(),
        }
    }

    /// Opens the sessions asked for (a newer stream of a node replaces its older one):
    /// their nodes come online, everything already noticed is rendered, then each gets its
    /// full map, so the full map and the deltas that follow start from the same point.
    fn open(&mut self, opens: Vec<OpenRequest>) {
        if opens.is_empty() {
            return;
        }
        let mut wanted = Vec::with_capacity(opens.len());
        let fresh = self.engine.is_fresh();
        for (node, report, compress, reply) in opens {
            if !fresh || !self.state.nodes.contains_key(&node) {
                let _ = reply.send(None);
                continue;
            }
            self.timers.connected(node);
            self.note_local(node);
            let report = self.reports.take_merged(node, report);
            self.update_presence(node, |p| {
                report.apply_to(p);
                p.online = true;
                p.last_seen = None;
            });
            wanted.push((node, compress, reply));
        }
        self.reelect();
        self.render_dirty();
        let nodes: Vec<(NodeId, bool)> = wanted.iter().map(|(n, c, _)| (*n, *c)).collect();
        let maps = self.full_maps(&nodes);
        let metrics = crate::metrics::metrics();
        for ((node, compress, reply), opened) in wanted.into_iter().zip(maps) {
            let Some(opened) = opened else {
                let _ = reply.send(None);
                continue;
            };
            metrics.map_message("full", opened.frame.len());
            let (frames_tx, frames_rx) = mpsc::channel(self.options.session_queue.max(1));
            if frames_tx.try_send(opened.frame).is_err() {
                let _ = reply.send(None);
                continue;
            }
            let id = self.next_session;
            self.next_session += 1;
            // A newer stream replaces the older one; dropping its sender ends it.
            self.sessions.insert(
                node,
                LiveSession {
                    id,
                    view: opened.view,
                    frames: frames_tx,
                    compress,
                    pending: BTreeSet::new(),
                    pending_everything: false,
                    poke: false,
                },
            );
            let answered = reply.send(Some(OpenedSession {
                id,
                frames: frames_rx,
            }));
            if answered.is_err() {
                // The request went away meanwhile: no stream will ever close this session.
                self.sessions.remove(&node);
                self.timers.disconnected(node, Instant::now());
                self.track_timers(node);
            }
        }
        self.count_sessions();
    }

    /// The full maps of `nodes` (each with the compression it asked for) from the state
    /// and renderings as they are now, on every core.
    fn full_maps(&mut self, nodes: &[(NodeId, bool)]) -> Vec<Option<fanout::Opened>> {
        let basis = Basis {
            state: &self.state,
            cache: &self.cache,
            context: &self.context,
            now: self.options.clock.now(),
        };
        fanout::full_maps(nodes, &basis, &mut self.encoders)
    }

    /// One full map per request; no session is registered.
    fn snapshots(&mut self, snapshots: Vec<SnapshotRequest>) {
        if snapshots.is_empty() {
            return;
        }
        self.render_dirty();
        let nodes: Vec<(NodeId, bool)> = snapshots.iter().map(|(n, c, _)| (*n, *c)).collect();
        let maps = self.full_maps(&nodes);
        for ((_, _, reply), opened) in snapshots.into_iter().zip(maps) {
            let _ = reply.send(opened.map(|o| o.frame));
        }
    }

    /// Re-renders what changed and hands it to every session's pending set.
    fn render_dirty(&mut self) {
        if self.dirty.is_empty() && !self.everything && !self.access_changed {
            return;
        }
        let now = self.options.clock.now();
        let presence = self.presence.clone();
        let table = presence.read().unwrap_or_else(|e| e.into_inner());
        let lookup = |id: NodeId| table.get(&id).cloned().unwrap_or_default();
        let result = if self.everything {
            self.cache
                .refresh_all(&self.state, &self.context.access, &lookup, now)
        } else {
            self.cache.refresh(
                &self.state,
                &self.context.access,
                &lookup,
                self.dirty.iter().copied(),
                now,
            )
        };
        if let Err(error) = result {
            tracing::error!(%error, "cannot render nodes");
        }
        drop(table);
        self.undelivered |= !self.sessions.is_empty();
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

    /// The periodic tick: offline transitions, ephemeral deletions, key expiries and
    /// presence reports whose budget allows them now. What they change is sent by
    /// `send_when_due`.
    fn run_timers(&mut self) {
        self.catch_up();
        self.fail_closed_if_stale();
        let now = self.options.clock.now();
        let (sessions, remote) = (&self.sessions, &self.remote);
        let due = self.timers.due(Instant::now(), now, |id| {
            sessions.contains_key(&id) || remote.contains_key(&id)
        });
        let went_offline = !due.offline.is_empty();
        for node in due.offline {
            // Offline unless another live instance holds it; no longer published from here.
            self.settle(node, now);
            self.note_local(node);
        }
        if went_offline {
            self.reelect();
        }
        // A key that just expired: peers must see `Expired` now.
        self.dirty.extend(due.expired);
        for id in due.ephemeral {
            if !self.cleans_up {
                // Another live instance deletes it; ours counts down again, in case it dies.
                self.track_timers(id);
                continue;
            }
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
        self.apply_ready_reports();
    }

    /// Presence reports whose node's budget allows them now.
    fn apply_ready_reports(&mut self) {
        for (node, report) in self.reports.ready() {
            if self.state.nodes.contains_key(&node) {
                self.update_presence(node, |p| report.apply_to(p));
            }
        }
    }

    /// One send: the newest state rendered, then one message per session that has
    /// something new and room to take it.
    fn flush(&mut self) {
        let started = Instant::now();
        self.catch_up();
        let opens = std::mem::take(&mut self.waiting_opens);
        self.open(opens);
        let snapshots = std::mem::take(&mut self.waiting_snapshots);
        self.snapshots(snapshots);
        let now = self.options.clock.now();
        self.render_dirty();

        let basis = Basis {
            state: &self.state,
            cache: &self.cache,
            context: &self.context,
            now,
        };
        let sent = fanout::fan_out(&mut self.sessions, &basis, &mut self.encoders);
        let cost = started.elapsed();
        if sent.frames > 0 {
            crate::metrics::metrics()
                .fanout_seconds
                .observe(cost.as_secs_f64());
        }
        self.publish();
        self.last_sent = Some(started);
        self.last_cost = cost;
        self.undelivered = sent.blocked;
        if !sent.gone.is_empty() {
            for node in sent.gone {
                self.sessions.remove(&node);
            }
            self.count_sessions();
        }
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

    /// Cut off from the shared log (several instances): the maps we would send may be
    /// missing what other instances wrote, so every stream ends (its client reconnects,
    /// through the load balancer, to a healthy instance) and `open` refuses new ones until
    /// the log is back.
    fn fail_closed_if_stale(&mut self) {
        if self.sessions.is_empty() || self.engine.is_fresh() {
            return;
        }
        tracing::warn!(
            sessions = self.sessions.len(),
            staleness = ?self.engine.staleness(),
            "cut off from the shared event log: ending every map stream so clients move to a healthy instance"
        );
        let now = Instant::now();
        for (node, _) in std::mem::take(&mut self.sessions) {
            self.timers.disconnected(node, now);
            self.track_timers(node);
        }
        self.count_sessions();
    }

    /// Brings the node's timers in line with the state (`Timers::track`).
    fn track_timers(&mut self, id: NodeId) {
        let node = self.state.nodes.get(&id);
        let expiry = node.and_then(|n| n.expiry);
        let away = node.is_some_and(|n| n.ephemeral)
            && !self.sessions.contains_key(&id)
            && !self.remote.contains_key(&id);
        self.timers.track(id, expiry, away, Instant::now());
    }
}
