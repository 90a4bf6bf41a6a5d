//! A named lease among the instances on one PostgreSQL log: a session-level advisory lock
//! held on a connection of its own, so exactly one instance holds it at a time and an
//! instance that dies gives it up with its session (PostgreSQL releases the lock when the
//! connection closes). Used for webhook delivery: one deliverer per endpoint.

use super::pool::SharedPool;
use crate::store::postgres::{connect, error_text};
use crate::store::StoreError;
use std::time::Duration;
use tokio_postgres::Client;

/// Longest wait for the lock query or a liveness probe: past it the lease counts as lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The lock's key: the name hashed by PostgreSQL into the 64-bit advisory key space, under
/// a prefix of ours so other users of advisory locks in the same database do not collide.
const TRY_LOCK: &str =
    "SELECT pg_try_advisory_lock(hashtextextended('headscale-rs lease ' || $1, 0))";

/// One lease's connection, kept between attempts (a standby retries on it without
/// reconnecting); dropping it closes the connection, which releases the lock.
pub struct Lease {
    name: String,
    client: Option<Client>,
    held: bool,
}

impl Lease {
    /// The lease `name`, not yet taken (connects on the first `hold`).
    pub fn new(name: String) -> Lease {
        Lease {
            name,
            client: None,
            held: false,
        }
    }

    /// Whether this instance held the lease at the last `hold`.
    pub fn held(&self) -> bool {
        self.held
    }

    /// Whether this instance holds the lease now, taking it if nobody does. A held lease is
    /// checked by a probe on its session (a session that answers holds its lock); a broken
    /// session loses it — another instance may then take it — and is replaced next time.
    pub async fn hold(&mut self, pool: &SharedPool) -> Result<bool, StoreError> {
        let outcome = self.attempt(pool).await;
        if !matches!(outcome, Ok(true)) && self.held {
            tracing::warn!(lease = %self.name, "lease lost");
        }
        match &outcome {
            Ok(held) => self.held = *held,
            Err(_) => {
                self.held = false;
                self.client = None;
            }
        }
        outcome
    }

    async fn attempt(&mut self, pool: &SharedPool) -> Result<bool, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.held = false;
            let mut target = pool.target().clone();
            // Named, so an operator can tell it from the others in pg_stat_activity.
            target.config.application_name("headscale-rs lease");
            self.client = Some(connect::connect(&target).await?);
        }
        let client = self.client.as_ref().expect("connected above");
        let fail = |why: String| StoreError::Io(format!("lease {}: {why}", self.name));
        if self.held {
            return match tokio::time::timeout(PROBE_TIMEOUT, client.simple_query("SELECT 1")).await
            {
                Ok(Ok(_)) => Ok(true),
                Ok(Err(e)) => Err(fail(error_text(&e))),
                Err(_) => Err(fail(format!("no answer within {PROBE_TIMEOUT:?}"))),
            };
        }
        match tokio::time::timeout(PROBE_TIMEOUT, client.query_one(TRY_LOCK, &[&self.name])).await {
            Ok(Ok(row)) => Ok(row.get::<_, bool>(0)),
            Ok(Err(e)) => Err(fail(error_text(&e))),
            Err(_) => Err(fail(format!("no answer within {PROBE_TIMEOUT:?}"))),
        }
    }
}
