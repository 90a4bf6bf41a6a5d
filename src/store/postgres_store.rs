//! `database.type: postgres`: the event log, snapshots and checkpoints in PostgreSQL, in our
//! own tables (`postgres::schema`), each record stored as the exact bytes the file log holds.
//!
//! The `EventStore` trait is synchronous and is called from the engine's writer thread, from
//! `spawn_blocking`/`block_in_place` in the API, and at start-up from inside the server's
//! runtime. So the store owns a small runtime on a thread of its own that drives
//! tokio-postgres; a call hands its future to that thread and waits on a std channel. It never
//! blocks a runtime it does not own in a way tokio forbids, and never panics inside one.
//!
//! Two connections, no pool: the writer's (appends, recovery, probes), so an append never
//! queues behind a snapshot upload or a long history scan, and the reader's (reads,
//! snapshots, checkpoints). Each reconnects when it finds itself closed.
//!
//! An append is one statement (one transaction, one round trip) that inserts the batch only
//! while the database's own head is still ours; `seq` is the primary key, so a second writer
//! fails rather than forks the chain. Its outcome is certain when the server answered (Ok, or
//! an error: nothing written). When the connection broke or the call timed out instead, the
//! batch may or may not have committed: it is remembered as *unsure* and settled before
//! anything else is written — the old session is terminated first so it cannot commit
//! later, then the head is read again. A batch that did commit stays (another instance may
//! already have read it; it was decided at the head it follows) and the engine catches up
//! to it, its callers having been told the outcome was unknown. `recover` succeeds even
//! while PostgreSQL is down: appends then fail (never acknowledged), `probe` fails, health
//! is red, and the first successful probe or append after PostgreSQL returns brings it back.
//!
//! Several instances append to one log (`src/ha/`): an append that finds the head moved
//! fails with `StoreError::Conflict` (nothing written), and `refresh_head` takes the
//! database's head as ours so the engine can read what the others wrote and retry.

use super::postgres::connect::{self, Target};
use super::postgres::{error_text, schema};
use super::{Checkpoint, EventStore, Head, StoreError, StoredRecord};
use crate::config::PostgresConfig;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_postgres::Client;

/// Longest wait for one statement on the writer's connection (appends, recovery), unless
/// `open_with_write_timeout` says otherwise.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for reads, snapshots and checkpoints (a snapshot can be large).
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Records per query when streaming a range: enough to stream, bounded in memory.
const CHUNK_RECORDS: u64 = 1024;
/// Snapshots kept (as the embedded store): enough for `--at` speed-ups, bounded growth.
const SNAPSHOTS_KEPT: i64 = 3;

pub struct PostgresStore {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    /// Dropped with the store: the runtime thread then ends and drops its runtime itself.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A server process: its pid and start time (a pid alone can be reused after it exits).
#[derive(Clone)]
struct Backend {
    pid: i32,
    started: String,
}

/// One connection and the server process behind it.
struct Session {
    client: Arc<Client>,
    backend: Backend,
    /// `schema::APPEND`, prepared once per session: an append is then one round trip.
    append: Option<tokio_postgres::Statement>,
}

/// A batch whose commit outcome is unknown (the connection broke during the append).
struct Unsure {
    records: Vec<(i64, Vec<u8>)>,
    /// The server process that ran the append: terminated before we look.
    backend: Backend,
}

struct Shared {
    target: Target,
    writer: Mutex<Option<Session>>,
    reader: Mutex<Option<Session>>,
    /// The acknowledged head.
    head: RwLock<Head>,
    unsure: Mutex<Option<Unsure>>,
    write_timeout: Duration,
    /// Serialises this process's appends, recovery, probes and head reads.
    appending: tokio::sync::Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn io(what: &str, error: &tokio_postgres::Error) -> StoreError {
    StoreError::Io(format!("PostgreSQL {what}: {}", error_text(error)))
}

/// Webhook delivery cursors (`src/webhooks/`), made on first use so databases created by
/// an older build get the table too.
const WEBHOOK_CURSORS_TABLE: &str = "CREATE TABLE IF NOT EXISTS headscale_rs.webhook_cursors (\
     endpoint text PRIMARY KEY, seq bigint NOT NULL)";

fn to_i64(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq)
        .map_err(|_| StoreError::Io(format!("seq {seq} is beyond PostgreSQL's bigint")))
}

fn to_u64(seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::Io(format!("a negative seq {seq} in PostgreSQL")))
}

/// Waits at most `limit` for `future`; a timeout is an I/O error.
async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Io(format!(
            "PostgreSQL {what}: no answer within {limit:?}"
        ))),
    }
}

impl PostgresStore {
    /// Connects, creates our tables if missing and reads the head.
    pub fn open(config: &PostgresConfig) -> Result<PostgresStore, StoreError> {
        Self::open_with_write_timeout(config, WRITE_TIMEOUT)
    }

    /// `open`, with appends (and recovery) given up after `write_timeout` (tests make an
    /// append's outcome unknown this way).
    pub fn open_with_write_timeout(
        config: &PostgresConfig,
        write_timeout: Duration,
    ) -> Result<PostgresStore, StoreError> {
        let mut target = connect::target(config)?;
        target.config.application_name("headscale-rs log");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("postgres-store".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| StoreError::Io(format!("cannot start the PostgreSQL thread: {e}")))?;
        let store = PostgresStore {
            shared: Arc::new(Shared {
                target,
                writer: Mutex::new(None),
                reader: Mutex::new(None),
                head: RwLock::new(Head::default()),
                unsure: Mutex::new(None),
                write_timeout,
                appending: tokio::sync::Mutex::new(()),
            }),
            runtime: handle,
            _stop: stop,
        };
        store.run(|shared| async move {
            let mut client = within(
                shared.write_timeout,
                "connecting",
                connect::connect(&shared.target),
            )
            .await?;
            within(
                shared.write_timeout,
                "creating tables",
                schema::ensure(&mut client),
            )
            .await?;
            let backend = backend(&client).await?;
            let head = within(shared.write_timeout, "reading the head", read_head(&client)).await?;
            *shared.head.write().unwrap_or_else(|e| e.into_inner()) = head;
            *lock(&shared.writer) = Some(Session {
                client: Arc::new(client),
                backend,
                append: None,
            });
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `work` on the store's runtime and waits for its answer on this thread.
    fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let future = work(self.shared.clone());
        self.runtime.spawn(async move {
            let _ = answer.send(future.await);
        });
        answered
            .recv()
            .map_err(|_| StoreError::Io("the PostgreSQL store's runtime stopped".into()))?
    }
}

async fn backend(client: &Client) -> Result<Backend, StoreError> {
    let row = client
        .query_one(
            "SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| io("session", &e))?;
    Ok(Backend {
        pid: row.get(0),
        started: row.get(1),
    })
}

/// The last record's seq and chain hash, as the database says.
async fn read_head(client: &Client) -> Result<Head, StoreError> {
    let rows = client
        .query(schema::LAST, &[])
        .await
        .map_err(|e| io("reading the head", &e))?;
    match rows.first() {
        None => Ok(Head::default()),
        Some(row) => {
            let seq = to_u64(row.get(0))?;
            let bytes: &[u8] = row.get(1);
            let record = StoredRecord::from_bytes(seq, bytes)
                .map_err(|source| StoreError::Corrupt { seq, source })?;
            Ok(Head {
                seq,
                hash: record.hash(),
            })
        }
    }
}

impl Shared {
    /// The live session in `slot`, connecting anew when there is none or it closed.
    async fn session(
        &self,
        slot: &Mutex<Option<Session>>,
    ) -> Result<(Arc<Client>, Backend), StoreError> {
        if let Some(session) = lock(slot).as_ref() {
            if !session.client.is_closed() {
                return Ok((session.client.clone(), session.backend.clone()));
            }
        }
        let client = within(
            self.write_timeout,
            "connecting",
            connect::connect(&self.target),
        )
        .await?;
        let backend = within(self.write_timeout, "session", backend(&client)).await?;
        let client = Arc::new(client);
        *lock(slot) = Some(Session {
            client: client.clone(),
            backend: backend.clone(),
            append: None,
        });
        Ok((client, backend))
    }

    /// The append statement prepared on the writer's session `client`.
    async fn append_statement(
        &self,
        client: &Client,
    ) -> Result<tokio_postgres::Statement, StoreError> {
        if let Some(statement) = lock(&self.writer).as_ref().and_then(|s| s.append.clone()) {
            return Ok(statement);
        }
        let statement = within(self.write_timeout, "prepare", async {
            client
                .prepare(schema::APPEND)
                .await
                .map_err(|e| io("prepare", &e))
        })
        .await?;
        if let Some(session) = lock(&self.writer).as_mut() {
            session.append = Some(statement.clone());
        }
        Ok(statement)
    }

    fn drop_session(&self, slot: &Mutex<Option<Session>>) {
        lock(slot).take();
    }

    fn head(&self) -> Head {
        *self.head.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set_head(&self, head: Head) {
        *self.head.write().unwrap_or_else(|e| e.into_inner()) = head;
    }

    async fn append(&self, records: Vec<(i64, Vec<u8>)>, last: Head) -> Result<(), StoreError> {
        let _appending = self.appending.lock().await;
        self.settle_unsure().await?;
        let head = self.head();
        let first = records.first().map_or(0, |(seq, _)| *seq);
        if i64::try_from(head.seq).ok().map(|h| h + 1) != Some(first) {
            return Err(StoreError::OutOfOrder {
                head: head.seq,
                got: to_u64(first)?,
            });
        }
        let (client, backend) = self.session(&self.writer).await?;
        let statement = match self.append_statement(&client).await {
            Ok(statement) => statement,
            Err(error) => {
                self.drop_session(&self.writer);
                return Err(error);
            }
        };
        let seqs: Vec<i64> = records.iter().map(|(seq, _)| *seq).collect();
        let bytes: Vec<&[u8]> = records.iter().map(|(_, b)| b.as_slice()).collect();
        let expected = to_i64(head.seq)?;
        let sent = tokio::time::timeout(
            self.write_timeout,
            client.query_one(&statement, &[&seqs, &bytes, &expected]),
        )
        .await;
        let conflict = || StoreError::Conflict { head: head.seq };
        match sent {
            Ok(Ok(row)) if row.get::<_, i64>(0) == records.len() as i64 => {
                self.set_head(last);
                Ok(())
            }
            // The database's head was not ours (another instance appended): nothing written.
            Ok(Ok(_)) => Err(conflict()),
            // The server answered with an error: the statement did not commit.
            Ok(Err(error)) if error.as_db_error().is_some() => {
                if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                    return Err(conflict());
                }
                Err(io("append", &error))
            }
            outcome => {
                // No answer: it may have committed. Settled before anything else is written.
                self.drop_session(&self.writer);
                *lock(&self.unsure) = Some(Unsure { records, backend });
                Err(match outcome {
                    Ok(Err(error)) => io("append (outcome unknown)", &error),
                    _ => StoreError::Io(format!(
                        "PostgreSQL append: no answer within {:?} (outcome unknown)",
                        self.write_timeout
                    )),
                })
            }
        }
    }

    /// The database's head becomes ours (other instances append too).
    async fn refresh_head(&self) -> Result<Head, StoreError> {
        let _appending = self.appending.lock().await;
        let reread = async {
            self.settle_unsure().await?;
            let (client, _) = self.session(&self.writer).await?;
            read_head(&client).await
        };
        match within(self.write_timeout, "reading the head", reread).await {
            Ok(head) => {
                self.set_head(head);
                Ok(head)
            }
            Err(error) => {
                self.drop_session(&self.writer);
                Err(error)
            }
        }
    }

    /// Settles an unsure batch, if any (the caller holds `appending`): afterwards the
    /// database holds none of it and the head is the database's.
    async fn settle_unsure(&self) -> Result<(), StoreError> {
        let Some(unsure) = lock(&self.unsure).take() else {
            return Ok(());
        };
        let settled = async {
            let (client, _) = self.session(&self.writer).await?;
            settle(&client, &unsure).await?;
            read_head(&client).await
        };
        match within(self.write_timeout, "recovery", settled).await {
            Ok(head) => {
                self.set_head(head);
                Ok(())
            }
            Err(error) => {
                self.drop_session(&self.writer);
                *lock(&self.unsure) = Some(unsure);
                Err(error)
            }
        }
    }

    /// After a failed append: the head becomes what the database says. While the database
    /// cannot be reached this still succeeds with the acknowledged head, which is then true
    /// (an unsure batch stays pending and is removed before the next write); only damage
    /// read from the database fails.
    async fn recover(&self) -> Result<(), StoreError> {
        let _appending = self.appending.lock().await;
        let reread = async {
            self.settle_unsure().await?;
            let (client, _) = self.session(&self.writer).await?;
            read_head(&client).await
        };
        match within(self.write_timeout, "recovery", reread).await {
            Ok(head) => {
                if head != self.head() {
                    tracing::warn!(
                        seq = head.seq,
                        "the PostgreSQL log's head differs from the acknowledged one; using the \
                         database's"
                    );
                }
                self.set_head(head);
                Ok(())
            }
            Err(StoreError::Io(reason)) => {
                self.drop_session(&self.writer);
                tracing::warn!(%reason, "PostgreSQL unreachable; appends fail until it answers");
                Ok(())
            }
            Err(damage) => Err(damage),
        }
    }

    /// Whether an append could work now: reachable, settled, and the head still ours.
    async fn probe(&self) -> Result<(), StoreError> {
        let _appending = self.appending.lock().await;
        let checked = async {
            self.settle_unsure().await?;
            let (client, _) = self.session(&self.writer).await?;
            read_head(&client).await
        };
        match within(self.write_timeout, "probe", checked).await {
            // A head past ours is another instance's work: the engine catches up to it.
            Ok(_) => Ok(()),
            Err(error) => {
                self.drop_session(&self.writer);
                Err(error)
            }
        }
    }

    /// Runs `query` on the reader's connection (reads, snapshots, checkpoints), connecting
    /// anew when it had closed.
    async fn on_reader<T, F, Fut>(&self, what: &str, query: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let attempt = async {
            let (client, _) = self.session(&self.reader).await?;
            query(client).await.map_err(|e| io(what, &e))
        };
        let result = within(READ_TIMEOUT, what, attempt).await;
        if result.is_err() {
            let closed = lock(&self.reader)
                .as_ref()
                .is_none_or(|session| session.client.is_closed());
            if closed {
                self.drop_session(&self.reader);
            }
        }
        result
    }
}

/// Makes sure the unsure batch can no longer commit (its server process is gone), then
/// removes it if it did: it was never acknowledged.
async fn settle(client: &Client, unsure: &Unsure) -> Result<(), StoreError> {
    let alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 \
                 AND backend_start::text = $2";
    let terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 \
                     AND backend_start::text = $2";
    let backend = [
        &unsure.backend.pid as &(dyn tokio_postgres::types::ToSql + Sync),
        &unsure.backend.started,
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let row = client
            .query_one(alive, &backend)
            .await
            .map_err(|e| io("recovery", &e))?;
        if row.get::<_, i64>(0) == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Io(format!(
                "the PostgreSQL session {} of the failed append is still running",
                unsure.backend.pid
            )));
        }
        client
            .execute(terminate, &backend)
            .await
            .map_err(|e| io("recovery", &e))?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (Some((first, _)), Some((last, _))) = (unsure.records.first(), unsure.records.last())
    else {
        return Ok(());
    };
    let rows = client
        .query(
            "SELECT seq, record FROM headscale_rs.events WHERE seq >= $1 AND seq <= $2 \
             ORDER BY seq",
            &[first, last],
        )
        .await
        .map_err(|e| io("recovery", &e))?;
    let ours = !rows.is_empty()
        && rows.len() == unsure.records.len()
        && rows.iter().zip(&unsure.records).all(|(row, (seq, bytes))| {
            row.get::<_, i64>(0) == *seq && row.get::<_, &[u8]>(1) == bytes.as_slice()
        });
    if ours {
        // It committed. It stays: it was decided at the head it follows, and another
        // instance may already have read it. The engine catches up to it; its callers
        // were told the outcome was unknown.
        tracing::warn!(
            first,
            last,
            "the append whose outcome was unknown had reached PostgreSQL; it stays in the log"
        );
    }
    Ok(())
}

fn decode(seq: i64, bytes: &[u8]) -> Result<StoredRecord, StoreError> {
    let seq = to_u64(seq)?;
    StoredRecord::from_bytes(seq, bytes).map_err(|source| StoreError::Corrupt { seq, source })
}

impl EventStore for PostgresStore {
    fn head(&self) -> Head {
        self.shared.head()
    }

    fn append(&self, records: &[StoredRecord]) -> Result<(), StoreError> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let head = self.head();
        let mut prev = head.hash;
        let mut rows = Vec::with_capacity(records.len());
        for (expected, record) in (head.seq + 1..).zip(records) {
            if record.seq != expected {
                return Err(StoreError::OutOfOrder {
                    head: expected - 1,
                    got: record.seq,
                });
            }
            if record.prev_hash != prev {
                return Err(StoreError::ChainBroken {
                    seq: record.seq,
                    reason: "prev_hash does not match the head".into(),
                });
            }
            prev = record.hash();
            rows.push((to_i64(record.seq)?, record.to_bytes()));
        }
        let new_head = Head {
            seq: last.seq,
            hash: prev,
        };
        self.run(move |shared| async move { shared.append(rows, new_head).await })
    }

    fn recover(&self) -> Result<(), StoreError> {
        self.run(|shared| async move { shared.recover().await })
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn refresh_head(&self) -> Result<Head, StoreError> {
        self.run(|shared| async move { shared.refresh_head().await })
    }

    fn probe(&self) -> Result<(), StoreError> {
        self.run(|shared| async move { shared.probe().await })
    }

    fn read(&self, seq: u64) -> Result<Option<StoredRecord>, StoreError> {
        let key = to_i64(seq)?;
        let row = self.run(move |shared| async move {
            shared
                .on_reader("read", |client| async move {
                    client
                        .query_opt(
                            "SELECT record FROM headscale_rs.events WHERE seq = $1",
                            &[&key],
                        )
                        .await
                })
                .await
        })?;
        row.map(|row| decode(key, row.get(0))).transpose()
    }

    fn read_range(
        &self,
        from: u64,
        to: u64,
    ) -> Box<dyn Iterator<Item = Result<StoredRecord, StoreError>> + '_> {
        let to = to.min(self.head().seq);
        let mut next = from.max(1);
        let mut buffered = std::collections::VecDeque::new();
        Box::new(std::iter::from_fn(move || {
            if buffered.is_empty() && next <= to {
                let last = to.min(next.saturating_add(CHUNK_RECORDS - 1));
                let chunk = (|| {
                    let (a, b) = (to_i64(next)?, to_i64(last)?);
                    let rows = self.run(move |shared| async move {
                        shared
                            .on_reader("read", |client| async move {
                                client
                                    .query(
                                        "SELECT seq, record FROM headscale_rs.events \
                                         WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
                                        &[&a, &b],
                                    )
                                    .await
                            })
                            .await
                    })?;
                    rows.iter()
                        .map(|row| decode(row.get(0), row.get(1)))
                        .collect::<Result<Vec<_>, _>>()
                })();
                match chunk {
                    Ok(records) => buffered.extend(records.into_iter().map(Ok)),
                    Err(error) => {
                        next = to.saturating_add(1);
                        return Some(Err(error));
                    }
                }
                next = last.saturating_add(1);
            }
            buffered.pop_front()
        }))
    }

    fn put_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let key = to_i64(seq)?;
        let bytes = bytes.to_vec();
        self.run(move |shared| async move {
            shared
                .on_reader("snapshot", move |client| async move {
                    client
                        .execute(
                            "INSERT INTO headscale_rs.snapshots (seq, bytes) VALUES ($1, $2) \
                                 ON CONFLICT (seq) DO UPDATE SET bytes = EXCLUDED.bytes",
                            &[&key, &bytes],
                        )
                        .await?;
                    client
                        .execute(
                            "DELETE FROM headscale_rs.snapshots WHERE seq NOT IN \
                                 (SELECT seq FROM headscale_rs.snapshots ORDER BY seq DESC \
                                 LIMIT $1)",
                            &[&SNAPSHOTS_KEPT],
                        )
                        .await
                })
                .await
        })?;
        Ok(())
    }

    fn snapshot_at_or_before(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let key = i64::try_from(seq).unwrap_or(i64::MAX);
        let row = self.run(move |shared| async move {
            shared
                .on_reader("snapshot", |client| async move {
                    client
                        .query_opt(
                            "SELECT seq, bytes FROM headscale_rs.snapshots WHERE seq <= $1 \
                             ORDER BY seq DESC LIMIT 1",
                            &[&key],
                        )
                        .await
                })
                .await
        })?;
        row.map(|row| Ok((to_u64(row.get(0))?, row.get::<_, Vec<u8>>(1))))
            .transpose()
    }

    fn remove_snapshots_from(&self, seq: u64) -> Result<(), StoreError> {
        let key = i64::try_from(seq).unwrap_or(i64::MAX);
        self.run(move |shared| async move {
            shared
                .on_reader("snapshot", |client| async move {
                    client
                        .execute(
                            "DELETE FROM headscale_rs.snapshots WHERE seq >= $1",
                            &[&key],
                        )
                        .await
                })
                .await
        })?;
        Ok(())
    }

    fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let key = to_i64(checkpoint.seq)?;
        let bytes = checkpoint.to_bytes();
        self.run(move |shared| async move {
            shared
                .on_reader("checkpoint", move |client| async move {
                    client
                        .execute(
                            "INSERT INTO headscale_rs.checkpoints (seq, bytes) \
                                 VALUES ($1, $2) \
                                 ON CONFLICT (seq) DO UPDATE SET bytes = EXCLUDED.bytes",
                            &[&key, &bytes],
                        )
                        .await
                })
                .await
        })?;
        Ok(())
    }

    fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows = self.run(|shared| async move {
            shared
                .on_reader("checkpoints", |client| async move {
                    client
                        .query(
                            "SELECT seq, bytes FROM headscale_rs.checkpoints ORDER BY seq",
                            &[],
                        )
                        .await
                })
                .await
        })?;
        rows.iter()
            .map(|row| {
                let seq = to_u64(row.get(0))?;
                Checkpoint::from_bytes(row.get(1))
                    .map_err(|reason| StoreError::ChainBroken { seq, reason })
            })
            .collect()
    }

    fn webhook_cursor(&self, endpoint: &str) -> Result<Option<u64>, StoreError> {
        let endpoint = endpoint.to_string();
        let row = self.run(move |shared| async move {
            shared
                .on_reader("webhook cursor", move |client| async move {
                    client.batch_execute(WEBHOOK_CURSORS_TABLE).await?;
                    client
                        .query_opt(
                            "SELECT seq FROM headscale_rs.webhook_cursors WHERE endpoint = $1",
                            &[&endpoint],
                        )
                        .await
                })
                .await
        })?;
        row.map(|row| to_u64(row.get(0))).transpose()
    }

    /// A conditional upsert: the cursor only moves forward, so an instance that delivered
    /// less cannot move it back.
    fn set_webhook_cursor(&self, endpoint: &str, seq: u64) -> Result<(), StoreError> {
        let endpoint = endpoint.to_string();
        let seq = to_i64(seq)?;
        self.run(move |shared| async move {
            shared
                .on_reader("webhook cursor", move |client| async move {
                    client.batch_execute(WEBHOOK_CURSORS_TABLE).await?;
                    client
                        .execute(
                            "INSERT INTO headscale_rs.webhook_cursors (endpoint, seq) \
                                 VALUES ($1, $2) \
                                 ON CONFLICT (endpoint) DO UPDATE SET seq = EXCLUDED.seq \
                                 WHERE headscale_rs.webhook_cursors.seq < EXCLUDED.seq",
                            &[&endpoint, &seq],
                        )
                        .await
                })
                .await
        })?;
        Ok(())
    }
}
