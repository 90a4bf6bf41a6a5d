//! The fan-out: the hub owns every live map session and the volatile presence table,
//! watches the engine's published state, and on each coalescing tick turns what changed into
//! one message per affected session.
//!
//! Why one owner: it is the only place that reads "the state at seq S" and registers
//! sessions, so the watermark rule (a new session's full map is built from exactly the state
//! its later deltas start from) holds by construction. Rendering is shared (`PeerCache`) and
//! deltas are computed against what each session was sent (`SessionView`), so a slow client
//! coalesces instead of queueing without bound: when its channel is full its pending set
//! simply grows (bounded by the number of nodes) until the next tick finds room.
//!
//! Where it runs: on a thread of its own (`map-hub`, with a single-threaded runtime for its
//! channels and timers), never on the server's runtime, whose workers stay free for
//! connections; the per-session CPU work of a send (delta, JSON, zstd; full maps of new
//! sessions) is spread over every core (`fanout`).
//!
//! When it sends: `tuning.batch_change_delay` bounds how often, not when. A change after a
//! quiet spell goes out at once; changes within the delay of the last send (or within that
//! send's own duration, when it took longer) wait for the window's end and go out together.
//! The engine's newest state is taken in only when sending, and stream opens that need it
//! wait for that send: 10,000 nodes registering at once cost one access rebuild per send,
//! not one per open, and under load the batches grow instead of the hub falling behind.
//!
//! - `task`: the hub itself (catch-up, rendering, sessions, HA election);
//! - `fanout`: per-session deltas and full maps, on all cores;
//! - `presence`: reports, the per-node presence budget, and the merge of what other
//!   instances hold (`ha::presence` carries it to and from PostgreSQL, off the hub's thread);
//! - `timers`: offline grace, ephemeral deletion, key expiry (sans I/O);
//! - `facts`: recorded facts (`UpdateHostinfo`), rate-limited per node;
//! - `budgets`: the per-node token buckets;
//! - `framing`: the stream's frames and the shared zstd encoder.

mod budgets;
mod facts;
mod fanout;
mod framing;
mod presence;
mod task;
mod timers;

pub use framing::{frame, keep_alive_frame};
pub use presence::{LocalChanges, PresenceTable, RemoteView, Report};

use crate::core::event::NodeHostinfo;
use crate::core::ids::NodeId;
use crate::core::keys::MachineKey;
use crate::core::netmap::{Access, NetmapContext};
use crate::core::routes::Primaries;
use crate::engine::{Clock, EngineHandle};
use crate::tailcfg::SharedJson;
use axum::body::Bytes;
use budgets::{admit, RequestLimits};
use facts::FactSlots;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Commands from stream handlers to the hub.
const HUB_QUEUE: usize = 4096;

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
    /// Several instances: publish what this instance holds on `outbound` from now on.
    SharePresence(mpsc::Sender<LocalChanges>),
    /// Several instances: what the other live instances hold now.
    Remote(RemoteView),
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

/// Timers and sizes (from `tuning:` in the config), and the wall clock (injected, so key
/// expiry and `LastSeen` follow a test's clock).
#[derive(Clone)]
pub struct HubOptions {
    pub batch_change_delay: Duration,
    pub session_queue: usize,
    pub offline_grace: Duration,
    /// An ephemeral node offline (or never connected) this long is deleted.
    pub ephemeral_inactivity: Duration,
    pub clock: Arc<dyn Clock + Sync>,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("batch_change_delay", &self.batch_change_delay)
            .field("session_queue", &self.session_queue)
            .field("offline_grace", &self.offline_grace)
            .field("ephemeral_inactivity", &self.ephemeral_inactivity)
            .finish_non_exhaustive()
    }
}

/// The handle stream handlers hold.
#[derive(Clone)]
pub struct MapHub {
    tx: mpsc::Sender<HubMessage>,
    presence: PresenceTable,
    facts: Arc<FactSlots>,
    requests: Arc<RequestLimits>,
}

impl MapHub {
    /// Starts the hub on its own thread; it ends when every handle is dropped.
    pub fn start(engine: &EngineHandle, context: NetmapContext, options: HubOptions) -> MapHub {
        let (tx, rx) = mpsc::channel(HUB_QUEUE);
        let presence: PresenceTable = Arc::default();
        task::spawn(engine, context, options, presence.clone(), rx);
        let facts = Arc::new(FactSlots::new());
        let requests = Arc::new(RequestLimits::new());
        let hub = tx.downgrade();
        crate::supervise::spawn_critical(
            "hostinfo recorder",
            facts::record_facts(engine.clone(), facts.clone(), requests.clone(), move || {
                hub.upgrade().is_some()
            }),
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
        self.facts.want(node, machine, facts);
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

    /// Several instances (`ha::presence`): the hub sends what this instance holds on
    /// `outbound` (everything at once, then the changes, at most one batch per send).
    pub async fn share_presence(&self, outbound: mpsc::Sender<LocalChanges>) {
        let _ = self.tx.send(HubMessage::SharePresence(outbound)).await;
    }

    /// Several instances: what the others hold now (replaces the previous view). False
    /// when the hub is gone.
    pub async fn remote_presence(&self, view: RemoteView) -> bool {
        self.tx.send(HubMessage::Remote(view)).await.is_ok()
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
