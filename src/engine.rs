//! The single writer. Commands arrive on a bounded channel; each batch is decided against the
//! current state, appended and flushed as one group commit, applied, and only then published
//! and acknowledged. Nothing a caller or a map stream sees can be lost by a crash. A failed
//! append stops the batch (nothing in it is acknowledged), marks the engine down (health,
//! `headscale_engine_up`; up again after a commit, or a successful `EventStore::probe` while
//! idle) and the writer recovers the store in place (`EventStore::recover`)
//! and re-derives its state from what the store then says. If recovery keeps failing for
//! `EngineOptions::recovery_deadline` the process exits non-zero, so a supervisor restarts
//! it; a panic in the writer thread does the same. Callers wait at most
//! `EngineOptions::command_deadline` for an answer.
//!
//! Snapshots are signed by the checkpoint key and bound to the chain (audit L11,
//! `store::snapshot_sig`); start-up uses only such a one. Since whoever can read that key
//! (it sits in the data directory) can still sign a forged snapshot, a start from a snapshot
//! is followed, `EngineOptions::snapshot_check_delay` later, by a background thread (not on
//! the tokio runtime) that replays the log up to the snapshot's seq and compares. On a
//! mismatch it logs one loud error naming the seq, counts
//! `headscale_snapshot_mismatches_total`, and asks the writer to remove that snapshot and
//! every later one (all derived from it) and to re-derive its state from the log alone,
//! then write a fresh snapshot: the live state and the next start follow the log, not the
//! forgery. The real remedy, an external signing key or a witness, is out of scope.

use crate::core::keys::Digest;
use crate::core::{decide, Actor, Command, Envelope, Rejection, State, Timestamp};
use crate::store::checkpoint::Checkpoint;
use crate::store::record::{encode_snapshot, StoredRecord};
use crate::store::replay::{load_state_with, replay_into};
use crate::store::snapshot_sig;
use crate::store::{EventStore, StoreError};
use crate::supervise::fatal;
use ed25519_dalek::SigningKey;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Commands waiting for the writer; callers wait (back-pressure) beyond this.
pub const COMMAND_QUEUE_CAPACITY: usize = 4096;
/// Commands decided and committed together in one flush.
pub const MAX_BATCH_COMMANDS: usize = 1024;
/// While down and idle, how often the writer checks whether the store takes writes again.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often a batch that lost the race for the next seq to another instance (a shared
/// log) is decided again after catching up, at most, before its callers are told it
/// failed; retries also stop at half the command deadline. Generous: under a burst from
/// several instances, the one that just won is at the head and tends to win again, so a
/// loser may need many rounds (with a growing random pause) before its turn.
pub const MAX_APPEND_CONFLICTS: u32 = 256;

/// Supplies the current time; the only clock the engine reads.
pub trait Clock: Send + 'static {
    fn now(&self) -> Timestamp;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// When to write snapshots and signed checkpoints, and how long to wait on failures.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub snapshot_every_events: u64,
    pub snapshot_every: Duration,
    pub checkpoint_every_events: u64,
    /// How long the writer keeps retrying a failed recovery before the process exits.
    pub recovery_deadline: Duration,
    /// How long `EngineHandle::execute` waits for the writer before answering `Timeout`.
    pub command_deadline: Duration,
    /// After a start from a snapshot, how long to wait before comparing it with a full
    /// replay in the background (start-up and the first clients come first).
    pub snapshot_check_delay: Duration,
    /// On a shared log: without confirming the head for this long, the instance is stale
    /// and fails closed (`EngineHandle::is_fresh`).
    pub max_staleness: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            snapshot_every_events: 100_000,
            snapshot_every: Duration::from_secs(3600),
            checkpoint_every_events: 1000,
            recovery_deadline: Duration::from_secs(30),
            command_deadline: Duration::from_secs(10),
            snapshot_check_delay: Duration::from_secs(10),
            max_staleness: Duration::from_secs(10),
        }
    }
}

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("not committed: {0}")]
    Store(String),
    #[error("the server is shutting down")]
    Stopped,
    /// The writer did not answer in time (storage stuck or overloaded). The command was
    /// dropped if the writer had not reached it yet; if it had, it may still have committed.
    #[error("the engine did not answer within {0:?}; the command may not have been applied")]
    Timeout(Duration),
}

/// What the writer publishes after each committed batch.
#[derive(Debug, Clone)]
pub struct Published {
    pub state: Arc<State>,
    /// The envelopes of the batch that produced this state (empty for the initial state).
    pub batch: Arc<Vec<Envelope>>,
}

type Reply = oneshot::Sender<Result<Vec<Envelope>, EngineError>>;

enum Message {
    Command {
        /// Boxed: commands vary a lot in size and the queue holds thousands.
        command: Box<Command>,
        actor: Actor,
        reply: Reply,
    },
    Shutdown(oneshot::Sender<()>),
    /// The start-up snapshot at this seq differs from the log: drop it and every later
    /// snapshot, and re-derive the state from the log alone.
    Rebuild(u64),
    /// Read what other instances appended to a shared log; answers the seq reached.
    CatchUp(Option<oneshot::Sender<Result<u64, String>>>),
    /// Sign a checkpoint at the head now (unless one is there); answers the last signed seq.
    Checkpoint(oneshot::Sender<u64>),
}

/// The background comparison of the start-up snapshot with a full replay (audit L11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotCheck {
    /// The state was replayed from the log alone: nothing to compare.
    NotNeeded,
    /// Waiting or replaying.
    Pending {
        seq: u64,
    },
    Matched {
        seq: u64,
    },
    /// The snapshot differed from the log; it was dropped and the state re-derived.
    Mismatched {
        seq: u64,
    },
    /// The log could not be replayed (or the engine stopped first): nothing concluded.
    Abandoned {
        seq: u64,
    },
}

/// Opens (or reopens, after a failure) the store.
pub type StoreOpener = Box<dyn Fn() -> Result<Arc<dyn EventStore>, StoreError> + Send>;

/// A cheap, cloneable handle to the writer.
#[derive(Clone)]
pub struct EngineHandle {
    sender: mpsc::Sender<Message>,
    published: watch::Receiver<Published>,
    store: Arc<dyn EventStore>,
    up: Arc<AtomicBool>,
    failed_appends: Arc<AtomicU64>,
    deadline: Duration,
    snapshot_check: Arc<Mutex<SnapshotCheck>>,
    /// When the writer last confirmed it holds the shared log's head (a read of the head
    /// or an append that succeeded).
    last_contact: Arc<Mutex<Instant>>,
    max_staleness: Duration,
}

impl EngineHandle {
    /// Brings the state up to the log's head (what other instances appended to a shared
    /// log) and answers the seq reached; a store nobody else writes to answers at once. A
    /// request that depends on a write made elsewhere calls this before it answers
    /// "unknown".
    pub async fn catch_up(&self) -> Result<u64, EngineError> {
        if !self.store.is_shared() {
            return Ok(self.state().last_seq);
        }
        self.ask(|reply| Message::CatchUp(Some(reply)))
            .await?
            .map_err(EngineError::Store)
    }

    /// Signs a checkpoint at the current head unless one is there already, and answers the
    /// last signed seq: an export taken right after vouches for every record it holds, not
    /// only for those up to the last periodic checkpoint.
    pub async fn checkpoint_now(&self) -> Result<u64, EngineError> {
        self.ask(Message::Checkpoint).await
    }

    /// The latest state, read up to the shared log's head first when `found` says it lacks
    /// what the caller looks for (a node or key written a moment ago on another instance).
    /// Only a miss costs a read of the log; a failed read leaves the state as it was.
    pub async fn state_where(&self, found: impl Fn(&State) -> bool) -> Arc<State> {
        let state = self.state();
        if found(&state) || !self.store.is_shared() || self.catch_up().await.is_err() {
            return state;
        }
        self.state()
    }

    /// Sends the writer the message `message(reply)` builds and waits for its answer, both
    /// within the command deadline.
    async fn ask<T>(
        &self,
        message: impl FnOnce(oneshot::Sender<T>) -> Message,
    ) -> Result<T, EngineError> {
        let deadline = tokio::time::Instant::now() + self.deadline;
        let timeout = |_| EngineError::Timeout(self.deadline);
        let (reply, answer) = oneshot::channel();
        tokio::time::timeout_at(deadline, self.sender.send(message(reply)))
            .await
            .map_err(timeout)?
            .map_err(|_| EngineError::Stopped)?;
        // Dropping `answer` on timeout tells the writer to skip a command not yet begun.
        tokio::time::timeout_at(deadline, answer)
            .await
            .map_err(timeout)?
            .map_err(|_| EngineError::Stopped)
    }

    /// Asks the writer to catch up without waiting (a hint that the shared log moved);
    /// dropped when the writer's queue is full, since it then runs soon anyway.
    pub fn nudge(&self) {
        if self.store.is_shared() {
            let _ = self.sender.try_send(Message::CatchUp(None));
        }
    }

    /// False when, on a shared log, the head has not been confirmed for longer than
    /// `EngineOptions::max_staleness`: the instance may be missing what others wrote, so it
    /// fails closed (health, map streams).
    pub fn is_fresh(&self) -> bool {
        self.staleness() <= self.max_staleness
    }

    /// Why this instance should not be served from, if it should not: its appends fail, or
    /// it lost the shared log.
    pub fn health_problem(&self) -> Option<String> {
        if !self.is_up() {
            return Some("event log writes are failing".into());
        }
        if !self.is_fresh() {
            return Some(format!(
                "cut off from the shared event log for {:.0?} (ha.max_staleness {:?})",
                self.staleness(),
                self.max_staleness
            ));
        }
        None
    }

    /// Resolves when the writer has stopped (every sender of its queue gone or closed).
    pub async fn stopped(&self) {
        self.sender.closed().await
    }

    /// Whether other instances append to the same log (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.store.is_shared()
    }

    /// How long since the writer last confirmed it holds the shared log's head; zero for a
    /// log nobody else writes to (its head is always ours).
    pub fn staleness(&self) -> Duration {
        if !self.store.is_shared() {
            return Duration::ZERO;
        }
        self.last_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// Where the background check of the start-up snapshot stands.
    pub fn snapshot_check(&self) -> SnapshotCheck {
        *self
            .snapshot_check
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `command` as `actor`; returns the committed envelopes (possibly none) once durable.
    pub async fn execute(
        &self,
        actor: Actor,
        command: Command,
    ) -> Result<Vec<Envelope>, EngineError> {
        let started = Instant::now();
        let outcome = self
            .ask(|reply| Message::Command {
                command: Box::new(command),
                actor,
                reply,
            })
            .await?;
        crate::metrics::metrics()
            .command_seconds
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// False from a failed append until a later commit succeeds or the idle writer's probe
    /// finds the store writable again (health endpoints).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Appends that failed since start (each one marked the engine down).
    pub fn failed_appends(&self) -> u64 {
        self.failed_appends.load(Ordering::SeqCst)
    }

    /// The latest published state.
    pub fn state(&self) -> Arc<State> {
        self.published.borrow().state.clone()
    }

    /// Follows every publication (map streams, event followers).
    pub fn subscribe(&self) -> watch::Receiver<Published> {
        self.published.clone()
    }

    /// The store, for read-only queries (history, `--at`).
    pub fn store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    /// Writes a final snapshot and checkpoint and stops the writer.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

struct Writer {
    store: Arc<dyn EventStore>,
    clock: Box<dyn Clock>,
    signing_key: SigningKey,
    options: EngineOptions,
    state: Arc<State>,
    head_hash: Digest,
    publisher: watch::Sender<Published>,
    last_snapshot_seq: u64,
    last_snapshot_time: Instant,
    last_checkpoint_seq: u64,
    up: Arc<AtomicBool>,
    failed_appends: Arc<AtomicU64>,
    /// Set while a background snapshot is being written; no second one starts meanwhile.
    snapshot_running: Arc<AtomicBool>,
    /// See `EngineHandle::staleness`.
    last_contact: Arc<Mutex<Instant>>,
    /// When the down engine probes the store next: kept across messages, since on a shared
    /// log the tail's catch-up hints arrive more often than `PROBE_EVERY` and would
    /// otherwise postpone the probe for ever (an instance healed from a partition stayed
    /// unhealthy until something was written on it).
    next_probe: Instant,
}

/// Opens the store, rebuilds the state (snapshot + tail) and starts the writer thread.
pub fn start(
    opener: StoreOpener,
    clock: Box<dyn Clock>,
    signing_key: SigningKey,
    options: EngineOptions,
) -> Result<EngineHandle, StoreError> {
    // The opener runs once: recovery happens in place (`EventStore::recover`).
    let store = opener()?;
    // Only a snapshot signed by our key and bound to the log's chain hash is used (L11).
    let loaded = load_state_with(store.as_ref(), None, Some(&signing_key.verifying_key()))?;
    let state = loaded.state;
    let snapshot_check = Arc::new(Mutex::new(match &loaded.snapshot {
        Some((seq, _)) => SnapshotCheck::Pending { seq: *seq },
        None => SnapshotCheck::NotNeeded,
    }));
    let head = store.head();
    let (sender, receiver) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
    let (publisher, published) = watch::channel(Published {
        state: Arc::new(state.clone()),
        batch: Arc::new(Vec::new()),
    });
    // Counted from the snapshot actually used: an unusable one (unsigned, planted, even
    // far beyond the head) must not hold back the next signed snapshot (L11).
    let last_snapshot_seq = loaded.snapshot.as_ref().map_or(0, |(seq, _)| *seq);
    let last_checkpoint_seq = store.checkpoints()?.last().map(|c| c.seq).unwrap_or(0);
    let up = Arc::new(AtomicBool::new(true));
    let failed_appends = Arc::new(AtomicU64::new(0));
    let last_contact = Arc::new(Mutex::new(Instant::now()));
    crate::metrics::metrics().engine_up.set(1);
    let deadline = options.command_deadline;
    let max_staleness = options.max_staleness;
    let check_delay = options.snapshot_check_delay;
    let writer = Writer {
        store: store.clone(),
        clock,
        signing_key,
        options,
        state: Arc::new(state),
        head_hash: head.hash,
        publisher,
        last_snapshot_seq,
        last_snapshot_time: Instant::now(),
        last_checkpoint_seq,
        up: up.clone(),
        failed_appends: failed_appends.clone(),
        snapshot_running: Arc::new(AtomicBool::new(false)),
        last_contact: last_contact.clone(),
        next_probe: Instant::now(),
    };
    std::thread::Builder::new()
        .name("engine-writer".into())
        .stack_size(WRITER_STACK_BYTES)
        .spawn(move || {
            let ran =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.run(receiver)));
            if ran.is_err() {
                fatal("the engine writer thread panicked; exiting so a supervisor restarts us");
            }
        })
        .map_err(|e| StoreError::Io(format!("cannot start the writer thread: {e}")))?;
    if let Some((seq, snapshot)) = loaded.snapshot {
        spawn_snapshot_check(SnapshotChecker {
            store: Arc::downgrade(&store),
            writer: sender.downgrade(),
            seq,
            snapshot,
            delay: check_delay,
            outcome: snapshot_check.clone(),
        });
    }
    Ok(EngineHandle {
        sender,
        published,
        store,
        up,
        failed_appends,
        deadline,
        snapshot_check,
        last_contact,
        max_staleness,
    })
}

/// One decision of a batch: the state after it, its events and records, and per command
/// (in order; `None` for one whose caller gave up) the range of its events or why not.
struct Attempt {
    working: State,
    envelopes: Vec<Envelope>,
    records: Vec<StoredRecord>,
    prev_hash: Digest,
    outcomes: Vec<Option<Result<std::ops::Range<usize>, EngineError>>>,
}

impl Attempt {
    fn any_rejected(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, Some(Err(EngineError::Rejected(_)))))
    }
}

impl Writer {
    /// The next message. While the engine is down and idle, probes the store about once a
    /// second, so health comes back when the storage does even if nothing is written.
    fn next_message(&mut self, receiver: &mut mpsc::Receiver<Message>) -> Option<Message> {
        while !self.up.load(Ordering::SeqCst) {
            match receiver.try_recv() {
                Ok(message) => return Some(message),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if Instant::now() >= self.next_probe {
                match self.store.probe().and_then(|()| self.resync()) {
                    Ok(()) => self.set_up(true),
                    Err(error) => tracing::debug!(%error, "store still not writable"),
                }
                self.next_probe = Instant::now() + PROBE_EVERY;
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        receiver.blocking_recv()
    }

    fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
        let mut catch_ups = Vec::new();
        let mut checkpoints = Vec::new();
        while let Some(first) = self.next_message(&mut receiver) {
            let mut batch = Vec::new();
            let mut shutdown = None;
            match first {
                Message::Command {
                    command,
                    actor,
                    reply,
                } => batch.push((command, actor, reply)),
                Message::Shutdown(done) => shutdown = Some(done),
                Message::Rebuild(seq) => {
                    self.rebuild_from_log(seq);
                    continue;
                }
                Message::CatchUp(reply) => catch_ups.push(reply),
                Message::Checkpoint(reply) => checkpoints.push(reply),
            }
            let mut rebuild = None;
            while shutdown.is_none() && batch.len() < MAX_BATCH_COMMANDS {
                match receiver.try_recv() {
                    Ok(Message::Command {
                        command,
                        actor,
                        reply,
                    }) => batch.push((command, actor, reply)),
                    Ok(Message::Shutdown(done)) => shutdown = Some(done),
                    Ok(Message::Rebuild(seq)) => rebuild = Some(seq),
                    Ok(Message::CatchUp(reply)) => catch_ups.push(reply),
                    Ok(Message::Checkpoint(reply)) => checkpoints.push(reply),
                    Err(_) => break,
                }
            }
            if !catch_ups.is_empty() {
                // Before deciding: a batch decided at the newest head rarely conflicts.
                let reached = self.catch_up().map_err(|e| e.to_string());
                for reply in catch_ups.drain(..).flatten() {
                    let _ = reply.send(reached.clone());
                }
            }
            if !batch.is_empty() {
                self.commit(batch);
            }
            if !checkpoints.is_empty() {
                // After the batch: the checkpoint vouches for what was just committed too.
                self.write_checkpoint();
                for reply in checkpoints.drain(..) {
                    let _ = reply.send(self.last_checkpoint_seq);
                }
            }
            if let Some(seq) = rebuild {
                self.rebuild_from_log(seq);
            }
            if let Some(done) = shutdown {
                self.stop();
                let _ = done.send(());
                return;
            }
        }
        // Every handle is gone: the same clean stop.
        self.stop();
    }

    /// Final snapshot and checkpoint; consumes the writer, so the store is released before
    /// the caller is told (it may reopen it at once).
    fn stop(mut self) {
        self.write_snapshot(true);
        self.write_checkpoint();
    }

    /// Decides every command of `batch` (skipping those whose caller gave up) against the
    /// current state, in order, into one group of records.
    fn decide_batch(&self, batch: &[(Box<Command>, Actor, Reply)]) -> Attempt {
        let now = self.clock.now().max(self.state.last_at);
        let mut working = (*self.state).clone();
        let mut envelopes: Vec<Envelope> = Vec::new();
        let mut records: Vec<StoredRecord> = Vec::new();
        let mut prev_hash = self.head_hash;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (command, actor, reply) in batch {
            if reply.is_closed() {
                // The caller gave up (deadline or cancelled): never acknowledged, not run.
                outcomes.push(None);
                continue;
            }
            let outcome = match decide(&working, command.as_ref(), now) {
                Ok(events) => {
                    // Undo point: a command whose events cannot be encoded is refused whole.
                    let undo = (working.clone(), envelopes.len(), prev_hash);
                    let start = envelopes.len();
                    let mut failure = None;
                    for event in events {
                        let envelope = Envelope {
                            seq: working.last_seq + 1,
                            at: now,
                            actor: actor.clone(),
                            event,
                        };
                        match StoredRecord::encode(&envelope, prev_hash) {
                            Ok(record) => {
                                prev_hash = record.hash();
                                records.push(record);
                                working.apply(&envelope);
                                envelopes.push(envelope);
                            }
                            Err(error) => {
                                failure = Some(EngineError::Store(error.to_string()));
                                break;
                            }
                        }
                    }
                    match failure {
                        Some(error) => {
                            let (saved_state, saved_len, saved_hash) = undo;
                            working = saved_state;
                            envelopes.truncate(saved_len);
                            records.truncate(saved_len);
                            prev_hash = saved_hash;
                            Err(error)
                        }
                        None => Ok(start..envelopes.len()),
                    }
                }
                Err(rejection) => Err(EngineError::Rejected(rejection)),
            };
            outcomes.push(Some(outcome));
        }
        Attempt {
            working,
            envelopes,
            records,
            prev_hash,
            outcomes,
        }
    }

    /// Decides, appends, applies, publishes and answers one batch. On a shared log, a batch
    /// that lost the race for the next seq is decided again at the new head (after reading
    /// what the winner wrote), up to `MAX_APPEND_CONFLICTS` times: the decision is always
    /// made against the exact head it commits on, so no address or key is handed out twice.
    fn commit(&mut self, batch: Vec<(Box<Command>, Actor, Reply)>) {
        let mut conflicts = 0;
        let mut refreshed = false;
        let batch_started = Instant::now();
        let metrics = crate::metrics::metrics();
        let (attempt, appended) = loop {
            if self.store.is_shared() && self.behind_store() {
                if let Err(error) = self.catch_up() {
                    tracing::warn!(%error, "cannot read the shared log's head before deciding");
                }
            }
            let attempt = self.decide_batch(&batch);
            if self.store.is_shared() && !refreshed && attempt.any_rejected() {
                // A refusal may rest on a write made on another instance a moment ago (an
                // auth key, a user): decide again if the log's head moved.
                refreshed = true;
                let before = self.state.last_seq;
                if self.catch_up().is_ok() && self.state.last_seq != before {
                    continue;
                }
            }
            if attempt.records.is_empty() {
                for ((_, _, reply), outcome) in batch.into_iter().zip(attempt.outcomes) {
                    if let Some(outcome) = outcome {
                        let _ = reply.send(outcome.map(|_| Vec::new()));
                    }
                }
                return;
            }
            let flush_started = Instant::now();
            let appended = self.store.append(&attempt.records);
            metrics
                .flush_seconds
                .observe(flush_started.elapsed().as_secs_f64());
            match appended {
                Err(StoreError::Conflict { head })
                    if conflicts < MAX_APPEND_CONFLICTS
                        && batch_started.elapsed() < self.options.command_deadline / 2 =>
                {
                    conflicts += 1;
                    metrics.append_conflicts.inc();
                    tracing::debug!(head, conflicts, "another instance appended first; retrying");
                    if let Err(error) = self.catch_up() {
                        break (attempt, Err(error));
                    }
                    // Spreads out writers that keep colliding: up to 2^k ms, capped.
                    let cap = 1u64 << conflicts.min(6);
                    std::thread::sleep(Duration::from_millis(rand::random::<u64>() % cap));
                }
                appended => break (attempt, appended),
            }
        };
        let Attempt {
            working,
            envelopes,
            prev_hash,
            outcomes,
            ..
        } = attempt;
        match appended {
            Ok(()) => {
                self.set_up(true);
                self.touch();
                for envelope in &envelopes {
                    metrics.event(envelope.event.kind());
                    if let crate::core::Event::NodeRegistered(registration) = &envelope.event {
                        let method = match registration.register_method {
                            crate::core::event::RegisterMethod::AuthKey => "authkey",
                            crate::core::event::RegisterMethod::Cli => "cli",
                            crate::core::event::RegisterMethod::Oidc => "oidc",
                        };
                        metrics
                            .registrations
                            .get_or_create(&crate::metrics::MethodLabel { method })
                            .inc();
                    }
                }
                self.head_hash = prev_hash;
                self.state = Arc::new(working);
                let batch_envelopes = Arc::new(envelopes);
                self.publisher.send_replace(Published {
                    state: self.state.clone(),
                    batch: batch_envelopes.clone(),
                });
                for ((_, _, reply), outcome) in batch.into_iter().zip(outcomes) {
                    if let Some(outcome) = outcome {
                        let _ = reply.send(outcome.map(|range| batch_envelopes[range].to_vec()));
                    }
                }
                self.after_commit();
            }
            Err(error) => {
                // A conflict wrote nothing and the store is sound (only busy): not down.
                let conflict = matches!(error, StoreError::Conflict { .. });
                tracing::error!(%error, "append failed; nothing in this batch is acknowledged");
                if !conflict {
                    // Marked down before anyone hears of the failure.
                    self.failed_appends.fetch_add(1, Ordering::SeqCst);
                    self.set_up(false);
                    self.next_probe = Instant::now() + PROBE_EVERY;
                }
                for ((_, _, reply), outcome) in batch.into_iter().zip(outcomes) {
                    if outcome.is_some() {
                        let _ = reply.send(Err(EngineError::Store(error.to_string())));
                    }
                }
                if !conflict {
                    self.recover();
                }
            }
        }
    }

    /// Whether the store's head (as it last knew it) is past the state's.
    fn behind_store(&self) -> bool {
        let head = self.store.head();
        head.seq != self.state.last_seq || head.hash != self.head_hash
    }

    /// Notes that the writer holds the shared log's head as of now.
    fn touch(&self) {
        *self.last_contact.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Reads the log's head and applies what other instances appended since ours, published
    /// as one batch. If the log does not continue our state (it was cut or rewritten behind
    /// us), the state is re-derived from it. Returns the seq reached.
    fn catch_up(&mut self) -> Result<u64, StoreError> {
        let head = self.store.refresh_head()?;
        self.touch();
        let ours = self.state.last_seq;
        if head.seq == ours && head.hash == self.head_hash {
            return Ok(ours);
        }
        if head.seq < ours {
            return self.reload();
        }
        let mut working = (*self.state).clone();
        let mut prev_hash = self.head_hash;
        let mut envelopes = Vec::with_capacity((head.seq - ours) as usize);
        let store = self.store.clone();
        for (expected, record) in (ours + 1..).zip(store.read_range(ours + 1, head.seq)) {
            let record = record?;
            if expected == ours + 1 && record.prev_hash != prev_hash {
                tracing::warn!(seq = expected, "the shared log does not continue our state");
                return self.reload();
            }
            let envelope = crate::store::replay::check_link(&record, expected, &prev_hash)?;
            working.apply(&envelope);
            prev_hash = record.hash();
            envelopes.push(envelope);
        }
        if working.last_seq != head.seq || prev_hash != head.hash {
            return Err(StoreError::ChainBroken {
                seq: working.last_seq + 1,
                reason: format!(
                    "reading up to the head ({}) stopped at {}",
                    head.seq, working.last_seq
                ),
            });
        }
        crate::metrics::metrics()
            .events_tailed
            .inc_by(envelopes.len() as u64);
        self.head_hash = prev_hash;
        self.state = Arc::new(working);
        self.publisher.send_replace(Published {
            state: self.state.clone(),
            batch: Arc::new(envelopes),
        });
        self.after_commit();
        Ok(self.state.last_seq)
    }

    /// Re-derives the state from the store (snapshot and replay) and publishes it.
    fn reload(&mut self) -> Result<u64, StoreError> {
        let trusted = self.signing_key.verifying_key();
        let state = load_state_with(self.store.as_ref(), None, Some(&trusted))?.state;
        self.head_hash = self.store.head().hash;
        self.state = Arc::new(state);
        self.publisher.send_replace(Published {
            state: self.state.clone(),
            batch: Arc::new(Vec::new()),
        });
        tracing::warn!(seq = self.state.last_seq, "state replayed from the store");
        Ok(self.state.last_seq)
    }

    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::SeqCst) != up {
            crate::metrics::metrics().engine_up.set(i64::from(up));
            if up {
                tracing::warn!(
                    seq = self.state.last_seq,
                    "the event log accepts writes again"
                );
            }
        }
    }

    /// Brings the store back to what was acknowledged and re-derives the state from it,
    /// retrying until it works or `recovery_deadline` passes (then the process exits): after
    /// a failed flush we cannot know what reached the disk, so only what the store now says
    /// is true.
    fn recover(&mut self) {
        let started = Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            match self.store.recover().and_then(|()| self.resync()) {
                Ok(()) => return,
                Err(error) => {
                    let elapsed = started.elapsed();
                    if elapsed >= self.options.recovery_deadline {
                        fatal(&format!(
                            "the event store could not be recovered for {elapsed:?} (last error: \
                             {error}); exiting so a supervisor restarts us"
                        ));
                    }
                    tracing::error!(%error, "cannot recover the store; retrying");
                    let left = self.options.recovery_deadline - elapsed;
                    std::thread::sleep(delay.min(left));
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Makes the in-memory state match the store's head, replaying only if they differ (on
    /// a shared log, reading on from ours when the log still continues it).
    fn resync(&mut self) -> Result<(), StoreError> {
        if self.store.is_shared() {
            return self.catch_up().map(|_| ());
        }
        let head = self.store.head();
        if head.seq == self.state.last_seq && head.hash == self.head_hash {
            return Ok(());
        }
        self.reload().map(|_| ())
    }

    /// The start-up snapshot at `seq` differs from the log (audit L11): waits for a
    /// background snapshot in flight (written from the same state), removes the snapshots
    /// from `seq` on, re-derives the state from the log alone, publishes it and writes a
    /// fresh snapshot. Commands wait meanwhile (as long as a start-up without snapshot).
    fn rebuild_from_log(&mut self, seq: u64) {
        let waiting_until = Instant::now() + Duration::from_secs(60);
        while self.snapshot_running.load(Ordering::SeqCst) && Instant::now() < waiting_until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Err(error) = self.store.remove_snapshots_from(seq) {
            tracing::error!(%error, seq, "cannot remove the snapshots that differ from the log");
        }
        let replayed = match load_state_with(self.store.as_ref(), None, None) {
            Ok(loaded) => loaded.state,
            Err(error) => {
                tracing::error!(%error, seq, "cannot replay the log; keeping the current state");
                return;
            }
        };
        self.head_hash = self.store.head().hash;
        self.state = Arc::new(replayed);
        self.publisher.send_replace(Published {
            state: self.state.clone(),
            batch: Arc::new(Vec::new()),
        });
        tracing::warn!(
            seq = self.state.last_seq,
            "state re-derived from the log alone"
        );
        self.last_snapshot_seq = 0;
        self.write_snapshot(false);
    }

    fn after_commit(&mut self) {
        let seq = self.state.last_seq;
        if seq.saturating_sub(self.last_checkpoint_seq) >= self.options.checkpoint_every_events {
            self.write_checkpoint();
        }
        let due_by_count =
            seq.saturating_sub(self.last_snapshot_seq) >= self.options.snapshot_every_events;
        let due_by_time = self.last_snapshot_time.elapsed() >= self.options.snapshot_every
            && seq > self.last_snapshot_seq;
        if due_by_count || due_by_time {
            self.write_snapshot(false);
        }
    }

    /// Encodes, signs and stores a snapshot off the writer thread (or inline at shutdown).
    /// The signature, by the checkpoint key, covers the seq, the chain hash of that record
    /// and sha256 of the bytes, so start-up never trusts a snapshot the log does not vouch
    /// for (audit L11; `store::snapshot_sig`, which also says what it cannot stop).
    fn write_snapshot(&mut self, inline: bool) {
        let seq = self.state.last_seq;
        if seq == 0 || seq == self.last_snapshot_seq {
            return;
        }
        // One background snapshot at a time (P2): a slow one is not joined by more.
        if !inline && self.snapshot_running.swap(true, Ordering::SeqCst) {
            return;
        }
        self.last_snapshot_seq = seq;
        self.last_snapshot_time = Instant::now();
        let state = self.state.clone();
        let head_hash = self.head_hash;
        let key = self.signing_key.clone();
        let store = self.store.clone();
        let running = self.snapshot_running.clone();
        let encode_and_put = move || match encode_snapshot(&state) {
            Ok(bytes) => {
                let value = snapshot_sig::sign(&key, seq, head_hash, &bytes);
                if let Err(error) = store.put_snapshot(seq, &value) {
                    tracing::warn!(%error, seq, "snapshot not written");
                } else {
                    tracing::debug!(seq, bytes = bytes.len(), "snapshot written");
                }
            }
            Err(error) => tracing::warn!(%error, seq, "snapshot not encoded"),
        };
        if inline {
            encode_and_put();
        } else if let Err(error) =
            std::thread::Builder::new()
                .name("snapshot".into())
                .spawn(move || {
                    /// Clears the flag however the work ends (even by a panic).
                    struct Done(Arc<AtomicBool>);
                    impl Drop for Done {
                        fn drop(&mut self) {
                            self.0.store(false, Ordering::SeqCst);
                        }
                    }
                    let _done = Done(running);
                    encode_and_put();
                })
        {
            self.snapshot_running.store(false, Ordering::SeqCst);
            tracing::warn!(%error, "cannot start the snapshot thread");
        }
    }

    fn write_checkpoint(&mut self) {
        let seq = self.state.last_seq;
        if seq == 0 || seq == self.last_checkpoint_seq {
            return;
        }
        let checkpoint =
            Checkpoint::sign(&self.signing_key, seq, self.head_hash, self.state.last_at);
        match self.store.put_checkpoint(&checkpoint) {
            Ok(()) => self.last_checkpoint_seq = seq,
            Err(error) => tracing::warn!(%error, seq, "checkpoint not written"),
        }
    }
}

/// What the background check of a start-up snapshot needs. Weak references: it never
/// keeps the store open or the writer running after the engine stops.
struct SnapshotChecker {
    store: std::sync::Weak<dyn EventStore>,
    writer: mpsc::WeakSender<Message>,
    seq: u64,
    snapshot: State,
    delay: Duration,
    outcome: Arc<Mutex<SnapshotCheck>>,
}

/// Stack of the writer thread: a margin over the default 2 MiB for folding events into the
/// persistent maps (imbl's B-trees take large frames for our map values; unoptimised they
/// overflowed 2 MiB past 64 nodes, which `[profile.dev] opt-level = 1` fixes for every
/// thread). Reserved address space, not memory: pages are touched only as deep as the code goes.
const WRITER_STACK_BYTES: usize = 64 << 20;

/// Records read per step of the check (the store is held only during a step).
const CHECK_CHUNK: u64 = 4096;

fn spawn_snapshot_check(checker: SnapshotChecker) {
    let outcome = checker.outcome.clone();
    let seq = checker.seq;
    let started = std::thread::Builder::new()
        .name("snapshot-check".into())
        .spawn(move || checker.run());
    if let Err(error) = started {
        tracing::warn!(%error, seq, "cannot start the snapshot check");
        *outcome.lock().unwrap_or_else(|e| e.into_inner()) = SnapshotCheck::Abandoned { seq };
    }
}

impl SnapshotChecker {
    fn set(&self, check: SnapshotCheck) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = check;
    }

    fn engine_stopped(&self) -> bool {
        self.writer
            .upgrade()
            .is_none_or(|sender| sender.is_closed())
    }

    fn run(self) {
        let seq = self.seq;
        // Deferred, so start-up and the first clients get the CPU; gives up if the engine
        // stops first.
        let begin = Instant::now() + self.delay;
        while Instant::now() < begin {
            if self.engine_stopped() {
                return self.set(SnapshotCheck::Abandoned { seq });
            }
            std::thread::sleep((begin - Instant::now()).min(Duration::from_millis(50)));
        }
        let mut state = State::default();
        let mut prev_hash = Digest::default();
        let mut from = 1;
        while from <= seq {
            let to = seq.min(from.saturating_add(CHECK_CHUNK - 1));
            let (Some(store), false) = (self.store.upgrade(), self.engine_stopped()) else {
                return self.set(SnapshotCheck::Abandoned { seq });
            };
            if let Err(error) = replay_into(store.as_ref(), &mut state, &mut prev_hash, from, to) {
                tracing::warn!(%error, seq, "cannot replay the log to check the start-up snapshot");
                return self.set(SnapshotCheck::Abandoned { seq });
            }
            drop(store);
            std::thread::yield_now();
            from = to + 1;
        }
        if state == self.snapshot {
            tracing::debug!(
                seq,
                "the start-up snapshot matches a full replay of the log"
            );
            return self.set(SnapshotCheck::Matched { seq });
        }
        tracing::error!(
            seq,
            "SNAPSHOT DIFFERS FROM THE EVENT LOG: the state loaded at start from the signed \
             snapshot at seq {seq} is not the fold of the log up to it. Someone who can read the \
             checkpoint signing key may have forged it (or this is a bug). Dropping it and \
             re-deriving the state from the log; run `headscale events verify` and investigate"
        );
        crate::metrics::metrics().snapshot_mismatches.inc();
        self.set(SnapshotCheck::Mismatched { seq });
        if let Some(writer) = self.writer.upgrade() {
            if writer.blocking_send(Message::Rebuild(seq)).is_err() {
                tracing::warn!(
                    seq,
                    "the engine stopped before the state could be re-derived"
                );
            }
        }
    }
}
