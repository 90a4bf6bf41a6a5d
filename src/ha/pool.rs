//! Connections for the shared tables: a small pool (`deadpool-postgres`) for the many
//! short statements requests make (presence, logins in flight), and a dedicated connection
//! per LISTEN, since a pooled one would hand its notifications to whoever borrows it next.
//! Both reuse `store::postgres::connect`'s reading of the config (unix sockets, TLS through
//! rustls, the password file).

use crate::config::PostgresConfig;
use crate::store::postgres::connect::{self, Target, Tls};
use crate::store::postgres::error_text;
use crate::store::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;

/// Connections the pool keeps at most: the shared tables see a few statements per second
/// per instance, so a handful is plenty and bounds what one instance takes of
/// PostgreSQL's `max_connections`.
pub const POOL_SIZE: usize = 4;
/// Longest wait for a pooled connection (or a new one).
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Notifications queued for the consumer at most; beyond that they are dropped, which is
/// harmless: a notification is a hint and the consumer reads the truth anyway.
const HINT_QUEUE: usize = 64;

/// A pool for the shared, volatile tables.
#[derive(Clone)]
pub struct SharedPool {
    pool: Pool,
    target: Target,
}

impl SharedPool {
    /// Reads the config (one-line errors naming the key); connects lazily.
    pub fn new(config: &PostgresConfig) -> Result<SharedPool, StoreError> {
        let mut target = connect::target(config)?;
        target.config.application_name("headscale-rs shared");
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &target.tls {
            Tls::None => {
                Manager::from_config(target.config.clone(), tokio_postgres::NoTls, manager_config)
            }
            Tls::Rustls(tls) => {
                Manager::from_config(target.config.clone(), tls.clone(), manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CHECKOUT_TIMEOUT))
            .create_timeout(Some(connect::CONNECT_TIMEOUT))
            .recycle_timeout(Some(CHECKOUT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Io(format!("PostgreSQL pool: {e}")))?;
        Ok(SharedPool { pool, target })
    }

    /// A connection from the pool (returned to it when dropped).
    pub async fn get(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            StoreError::Io(format!(
                "PostgreSQL {}: no connection: {e}",
                self.target.describe
            ))
        })
    }

    /// How to reach PostgreSQL (for connections of their own, such as a lease's).
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Starts listening on `channels` over a connection of its own (see `listen`).
    pub fn listen(&self, channels: &[&str]) -> mpsc::Receiver<Hint> {
        listen(self.target.clone(), channels)
    }
}

/// What a LISTEN connection tells its consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// A NOTIFY on `channel` with `payload`.
    Notified { channel: String, payload: String },
    /// The connection is (re)established and listening: whatever was sent while it was down
    /// is lost, so the consumer must read the truth now.
    Listening,
    /// The connection broke; it is retried. Until `Listening`, no hints arrive.
    Lost(String),
}

/// Listens on `channels` over a dedicated connection, reconnecting (with a capped backoff)
/// whenever it breaks, until the receiver is dropped.
pub fn listen(mut target: Target, channels: &[&str]) -> mpsc::Receiver<Hint> {
    // Named, so an operator (or a test) can tell it from the others in pg_stat_activity.
    target.config.application_name("headscale-rs listen");
    let (tx, rx) = mpsc::channel(HINT_QUEUE);
    let statement: String = channels
        .iter()
        .map(|c| format!("LISTEN \"{}\";", c.replace('"', "")))
        .collect();
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(100);
        while !tx.is_closed() {
            let outcome = match &target.tls {
                Tls::None => listen_once(&target, tokio_postgres::NoTls, &statement, &tx).await,
                Tls::Rustls(tls) => listen_once(&target, tls.clone(), &statement, &tx).await,
            };
            let reason = match outcome {
                Ok(()) => return,
                Err(reason) => reason,
            };
            if tx.send(Hint::Lost(reason)).await.is_err() {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    });
    rx
}

/// One connection's life: LISTEN, then forward notifications. Ok when the consumer went
/// away; Err (why) when the connection ended.
async fn listen_once<T>(
    target: &Target,
    tls: T,
    statement: &str,
    tx: &mpsc::Sender<Hint>,
) -> Result<(), String>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    use futures_util::future::poll_fn;
    let connecting = tokio::time::timeout(connect::CONNECT_TIMEOUT, target.config.connect(tls));
    let (client, mut connection) = match connecting.await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(error_text(&e)),
        Err(_) => return Err("connecting timed out".into()),
    };
    // The statement runs while the same task drives the connection.
    let mut run = Box::pin(client.batch_execute(statement));
    let mut listening = false;
    loop {
        if tx.is_closed() {
            return Ok(());
        }
        let step = poll_fn(|cx| {
            use std::task::Poll;
            if !listening {
                if let Poll::Ready(result) = run.as_mut().poll(cx) {
                    return Poll::Ready(Step::Ran(result.map_err(|e| error_text(&e))));
                }
            }
            connection.poll_message(cx).map(|message| match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => Step::Notified {
                    channel: n.channel().to_string(),
                    payload: n.payload().to_string(),
                },
                Some(Ok(_)) => Step::Other,
                Some(Err(e)) => Step::Ended(error_text(&e)),
                None => Step::Ended("connection closed".into()),
            })
        });
        let step = tokio::select! {
            step = step => step,
            () = tx.closed() => return Ok(()),
        };
        match step {
            Step::Ran(Ok(())) => {
                listening = true;
                if tx.send(Hint::Listening).await.is_err() {
                    return Ok(());
                }
            }
            Step::Ran(Err(reason)) | Step::Ended(reason) => return Err(reason),
            Step::Notified { channel, payload } => {
                let _ = tx.try_send(Hint::Notified { channel, payload });
            }
            Step::Other => {}
        }
    }
}

/// What one poll of a listening connection brought.
enum Step {
    /// The LISTEN statement finished.
    Ran(Result<(), String>),
    Notified {
        channel: String,
        payload: String,
    },
    /// A notice or another message we do not use.
    Other,
    Ended(String),
}
