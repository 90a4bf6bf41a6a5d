//! The single writer. Commands arrive on a bounded channel; each batch is decided against the
//! current state, appended and flushed as one group commit, applied, and only then published
//! and acknowledged. Nothing a caller or a map stream sees can be lost by a crash. A failed
//! append stops the batch, and the writer reopens the store and replays before going on.

use crate::core::keys::Digest;
use crate::core::{decide, Actor, Command, Envelope, Rejection, State, Timestamp};
use crate::store::checkpoint::Checkpoint;
use crate::store::record::{encode_snapshot, StoredRecord};
use crate::store::replay::load_state;
use crate::store::{EventStore, StoreError};
use ed25519_dalek::SigningKey;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Commands waiting for the writer; callers wait (back-pressure) beyond this.
pub const COMMAND_QUEUE_CAPACITY: usize = 4096;
/// Commands decided and committed together in one flush.
pub const MAX_BATCH_COMMANDS: usize = 1024;

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

/// When to write snapshots and signed checkpoints.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub snapshot_every_events: u64,
    pub snapshot_every: Duration,
    pub checkpoint_every_events: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            snapshot_every_events: 100_000,
            snapshot_every: Duration::from_secs(3600),
            checkpoint_every_events: 1000,
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
}

/// Opens (or reopens, after a failure) the store.
pub type StoreOpener = Box<dyn Fn() -> Result<Arc<dyn EventStore>, StoreError> + Send>;

/// A cheap, cloneable handle to the writer.
#[derive(Clone)]
pub struct EngineHandle {
    sender: mpsc::Sender<Message>,
    published: watch::Receiver<Published>,
    store: Arc<dyn EventStore>,
}

impl EngineHandle {
    /// Runs `command` as `actor`; returns the committed envelopes (possibly none) once durable.
    pub async fn execute(
        &self,
        actor: Actor,
        command: Command,
    ) -> Result<Vec<Envelope>, EngineError> {
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Message::Command {
                command: Box::new(command),
                actor,
                reply,
            })
            .await
            .map_err(|_| EngineError::Stopped)?;
        let outcome = answer.await.map_err(|_| EngineError::Stopped)?;
        crate::metrics::metrics()
            .command_seconds
            .observe(started.elapsed().as_secs_f64());
        outcome
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
    opener: StoreOpener,
    clock: Box<dyn Clock>,
    signing_key: SigningKey,
    options: EngineOptions,
    state: Arc<State>,
    head_hash: Digest,
    publisher: watch::Sender<Published>,
    last_snapshot_seq: u64,
    last_snapshot_time: Instant,
    last_checkpoint_seq: u64,
}

/// Opens the store, rebuilds the state (snapshot + tail) and starts the writer thread.
pub fn start(
    opener: StoreOpener,
    clock: Box<dyn Clock>,
    signing_key: SigningKey,
    options: EngineOptions,
) -> Result<EngineHandle, StoreError> {
    let store = opener()?;
    let state = load_state(store.as_ref(), None)?;
    let head = store.head();
    let (sender, receiver) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
    let (publisher, published) = watch::channel(Published {
        state: Arc::new(state.clone()),
        batch: Arc::new(Vec::new()),
    });
    let last_snapshot_seq = store
        .snapshot_at_or_before(u64::MAX)?
        .map(|(seq, _)| seq)
        .unwrap_or(0);
    let last_checkpoint_seq = store.checkpoints()?.last().map(|c| c.seq).unwrap_or(0);
    let writer = Writer {
        store: store.clone(),
        opener,
        clock,
        signing_key,
        options,
        state: Arc::new(state),
        head_hash: head.hash,
        publisher,
        last_snapshot_seq,
        last_snapshot_time: Instant::now(),
        last_checkpoint_seq,
    };
    std::thread::Builder::new()
        .name("engine-writer".into())
        .spawn(move || writer.run(receiver))
        .map_err(|e| StoreError::Io(format!("cannot start the writer thread: {e}")))?;
    Ok(EngineHandle {
        sender,
        published,
        store,
    })
}

struct Pending {
    reply: Reply,
    outcome: Result<std::ops::Range<usize>, EngineError>,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut batch = Vec::new();
            let mut shutdown = None;
            match first {
                Message::Command {
                    command,
                    actor,
                    reply,
                } => batch.push((command, actor, reply)),
                Message::Shutdown(done) => shutdown = Some(done),
            }
            while shutdown.is_none() && batch.len() < MAX_BATCH_COMMANDS {
                match receiver.try_recv() {
                    Ok(Message::Command {
                        command,
                        actor,
                        reply,
                    }) => batch.push((command, actor, reply)),
                    Ok(Message::Shutdown(done)) => shutdown = Some(done),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit(batch);
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

    fn commit(&mut self, batch: Vec<(Box<Command>, Actor, Reply)>) {
        let now = self.clock.now().max(self.state.last_at);
        let mut working = (*self.state).clone();
        let mut envelopes: Vec<Envelope> = Vec::new();
        let mut records: Vec<StoredRecord> = Vec::new();
        let mut prev_hash = self.head_hash;
        let mut pending = Vec::with_capacity(batch.len());
        for (command, actor, reply) in batch {
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
            pending.push(Pending { reply, outcome });
        }
        if records.is_empty() {
            for p in pending {
                let _ = p.reply.send(p.outcome.map(|_| Vec::new()));
            }
            return;
        }
        let flush_started = Instant::now();
        let appended = self.store.append(&records);
        let metrics = crate::metrics::metrics();
        metrics
            .flush_seconds
            .observe(flush_started.elapsed().as_secs_f64());
        match appended {
            Ok(()) => {
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
                let batch = Arc::new(envelopes);
                self.publisher.send_replace(Published {
                    state: self.state.clone(),
                    batch: batch.clone(),
                });
                for p in pending {
                    let _ = p.reply.send(p.outcome.map(|range| batch[range].to_vec()));
                }
                self.after_commit();
            }
            Err(error) => {
                tracing::error!(%error, "append failed; nothing in this batch is acknowledged");
                for p in pending {
                    let _ = p.reply.send(Err(EngineError::Store(error.to_string())));
                }
                self.recover();
            }
        }
    }

    /// Reopens the store and replays, retrying until it works: after a failed flush we cannot
    /// know what reached the disk, so only what the store now says is true.
    fn recover(&mut self) {
        let mut delay = Duration::from_millis(50);
        loop {
            let reopened = (self.opener)().and_then(|store| {
                let state = load_state(store.as_ref(), None)?;
                Ok((store, state))
            });
            match reopened {
                Ok((store, state)) => {
                    self.head_hash = store.head().hash;
                    self.store = store;
                    self.state = Arc::new(state);
                    self.publisher.send_replace(Published {
                        state: self.state.clone(),
                        batch: Arc::new(Vec::new()),
                    });
                    tracing::warn!(seq = self.state.last_seq, "store reopened and replayed");
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot reopen the store; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn after_commit(&mut self) {
        let seq = self.state.last_seq;
        if seq - self.last_checkpoint_seq >= self.options.checkpoint_every_events {
            self.write_checkpoint();
        }
        let due_by_count = seq - self.last_snapshot_seq >= self.options.snapshot_every_events;
        let due_by_time = self.last_snapshot_time.elapsed() >= self.options.snapshot_every
            && seq > self.last_snapshot_seq;
        if due_by_count || due_by_time {
            self.write_snapshot(false);
        }
    }

    /// Encodes and stores a snapshot off the writer thread (or inline at shutdown).
    fn write_snapshot(&mut self, inline: bool) {
        let seq = self.state.last_seq;
        if seq == 0 || seq == self.last_snapshot_seq {
            return;
        }
        self.last_snapshot_seq = seq;
        self.last_snapshot_time = Instant::now();
        let state = self.state.clone();
        let store = self.store.clone();
        let work = move || match encode_snapshot(&state) {
            Ok(bytes) => {
                if let Err(error) = store.put_snapshot(seq, &bytes) {
                    tracing::warn!(%error, seq, "snapshot not written");
                } else {
                    tracing::debug!(seq, bytes = bytes.len(), "snapshot written");
                }
            }
            Err(error) => tracing::warn!(%error, seq, "snapshot not encoded"),
        };
        if inline {
            work();
        } else if let Err(error) = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(work)
        {
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
