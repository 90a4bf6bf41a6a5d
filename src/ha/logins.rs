//! Logins in flight, shared by every instance on one PostgreSQL database: the interactive
//! logins waiting for an admin (`control::pending`) and the OIDC flights and confirmations
//! (`oidc::sessions`). Behind a load balancer the client's waiting `/machine/register`, the
//! admin's `nodes register`, the browser's AuthURL and the provider's callback may each land
//! on a different instance, so what one starts another must find.
//!
//! Three tables of our own in schema `headscale_rs`, created idempotently at start and never
//! part of the event log (anyone can start a login; only the admin's or the user's decision
//! becomes an event). Times are PostgreSQL's clock (`now()`), so instances whose clocks
//! differ agree on what has expired.
//!
//! - `pending_logins`: registration id → the login, where it came from, and, once decided,
//!   its outcome (a tombstone kept `TOMBSTONE_TTL` for the follow-up request). The
//!   registration id is stored as it is: it is what the admin is shown and types, the page
//!   it opens shows nothing secret, and whoever can read this database can already append
//!   to the event log. The bounds of `core::limits` are global, exactly as on one instance:
//!   every start runs in a transaction under an advisory lock, counts what waits in the
//!   table and refuses the newcomer.
//! - `oidc_flights`: OAuth state → registration id, nonce, PKCE verifier; taken out by
//!   `DELETE … RETURNING`, so one callback uses it, on whichever instance it lands. The
//!   nonce and verifier live only as long as the flight (`SESSION_TTL`).
//! - `oidc_confirmations`: registration id → the verified user waiting for "register".
//!
//! A decision wakes the waiting request wherever it is: the deciding instance writes the
//! outcome and NOTIFYs `LOGINS_CHANNEL` with the id (a hint); each instance polls the
//! outcomes of the logins its own requests wait for every `ha.poll_interval` (the truth).

use super::pool::{Hint, SharedPool};
use crate::control::pending::{source_key, LookupError, Origin, Outcome, PendingLogin};
use crate::control::pending::{StartRefused, TOMBSTONE_TTL};
use crate::core::event::NodeHostinfo;
use crate::core::ids::{NodeId, UserId};
use crate::core::keys::{MachineKey, NodeKey};
use crate::core::limits;
use crate::core::Timestamp;
use crate::oidc::sessions::{Confirmation, Flight, SessionError, Taken};
use crate::store::postgres::error_text;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The NOTIFY channel a decided login signals (payload: its registration id). A hint only.
pub const LOGINS_CHANNEL: &str = "headscale_rs_logins";
/// Advisory lock keys serialising the bounded inserts of all instances.
const PENDING_LOCK: i64 = 0x6873_5f6c_6f67_696e; // "hs_login"
const SESSIONS_LOCK: i64 = 0x6873_5f6f_6964_6373; // "hs_oidcs"
/// Expired rows are swept this often (reads ignore them anyway).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS headscale_rs;
CREATE TABLE IF NOT EXISTS headscale_rs.pending_logins (
    id text PRIMARY KEY,
    machine_key text NOT NULL,
    node_key text NOT NULL,
    source text,
    bytes bigint NOT NULL,
    login text NOT NULL,
    outcome text,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_logins_node_key ON headscale_rs.pending_logins (node_key);
CREATE TABLE IF NOT EXISTS headscale_rs.oidc_flights (
    state text PRIMARY KEY,
    auth_id text NOT NULL,
    nonce text NOT NULL,
    pkce_verifier text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS headscale_rs.oidc_confirmations (
    auth_id text PRIMARY KEY,
    user_id bigint NOT NULL,
    identity text NOT NULL,
    expiry bigint,
    csrf text NOT NULL,
    expires_at timestamptz NOT NULL
);
";

/// The shared tables could not be read or written (the request is answered with this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the shared login table is unavailable ({0}); try again in a moment")]
pub struct Unavailable(pub String);

impl From<tokio_postgres::Error> for Unavailable {
    fn from(error: tokio_postgres::Error) -> Unavailable {
        Unavailable(error_text(&error))
    }
}

impl From<crate::store::StoreError> for Unavailable {
    fn from(error: crate::store::StoreError) -> Unavailable {
        Unavailable(error.to_string())
    }
}

/// What a row's `login` column holds.
#[derive(Serialize, Deserialize)]
struct StoredLogin {
    machine_key: MachineKey,
    node_key: NodeKey,
    hostinfo: NodeHostinfo,
    ephemeral: bool,
    requested_expiry: Option<Timestamp>,
    source: Option<std::net::IpAddr>,
    started: Option<Timestamp>,
}

fn encode_login(login: &PendingLogin, origin: &Origin) -> String {
    serde_json::to_string(&StoredLogin {
        machine_key: login.machine_key,
        node_key: login.node_key,
        hostinfo: login.hostinfo.clone(),
        ephemeral: login.ephemeral,
        requested_expiry: login.requested_expiry,
        source: origin.source,
        started: origin.started,
    })
    .expect("a login serialises")
}

fn decode_login(text: &str) -> Result<(PendingLogin, Origin), Unavailable> {
    let stored: StoredLogin = serde_json::from_str(text)
        .map_err(|e| Unavailable(format!("unreadable pending login: {e}")))?;
    Ok((
        PendingLogin {
            machine_key: stored.machine_key,
            node_key: stored.node_key,
            hostinfo: stored.hostinfo,
            ephemeral: stored.ephemeral,
            requested_expiry: stored.requested_expiry,
        },
        Origin {
            source: stored.source,
            started: stored.started,
        },
    ))
}

fn encode_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Registered(id) => format!("registered:{id}"),
        Outcome::Rejected(reason) => format!("rejected:{reason}"),
    }
}

fn decode_outcome(text: &str) -> Option<Outcome> {
    if let Some(id) = text.strip_prefix("registered:") {
        return id.parse().ok().map(|id| Outcome::Registered(NodeId(id)));
    }
    text.strip_prefix("rejected:")
        .map(|reason| Outcome::Rejected(reason.to_string()))
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// The shared tables and this instance's waiting follow-ups (cheap to clone).
#[derive(Clone)]
pub struct SharedLogins {
    pool: SharedPool,
    /// Registration id → the outcome the follow-ups on this instance wait for.
    waiters: Arc<Mutex<HashMap<String, watch::Sender<Option<Outcome>>>>>,
}

impl SharedLogins {
    /// Creates the tables if missing (under a lock: instances may start together) and
    /// starts following decisions.
    pub async fn start(pool: &SharedPool, poll_interval: Duration) -> Result<Self, Unavailable> {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PENDING_LOCK])
            .await?;
        tx.batch_execute(SCHEMA).await?;
        tx.commit().await?;
        drop(client);
        let logins = SharedLogins {
            pool: pool.clone(),
            waiters: Arc::default(),
        };
        let hints = pool.listen(&[LOGINS_CHANNEL]);
        tokio::spawn(logins.clone().follow(hints, poll_interval));
        Ok(logins)
    }

    /// See `PendingLogins::start`: the same bounds, over every instance's logins.
    pub async fn start_login(
        &self,
        login: PendingLogin,
        origin: Origin,
        ttl: Duration,
        id: String,
    ) -> Result<String, StartRefused> {
        let unavailable = |e: Unavailable| StartRefused::Unavailable(e.0);
        let mut client = self.pool.get().await.map_err(|e| unavailable(e.into()))?;
        let result: Result<Result<String, StartRefused>, Unavailable> = async {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PENDING_LOCK])
                .await?;
            tx.execute(
                "DELETE FROM headscale_rs.pending_logins WHERE expires_at <= now()",
                &[],
            )
            .await?;
            let machine = login.machine_key.to_string();
            let node = login.node_key.to_string();
            let source = origin.source.map(|ip| source_key(ip).to_string());
            let row = tx
                .query_one(
                    "SELECT (array_agg(id) FILTER (WHERE machine_key = $1 AND node_key = $2))[1],
                            count(*) FILTER (WHERE node_key = $2),
                            count(*) FILTER (WHERE machine_key = $1),
                            count(*) FILTER (WHERE source IS NOT DISTINCT FROM $3),
                            count(*),
                            coalesce(sum(bytes), 0)::bigint
                     FROM headscale_rs.pending_logins WHERE outcome IS NULL",
                    &[&machine, &node, &source],
                )
                .await?;
            if let Some(existing) = row.get::<_, Option<String>>(0) {
                return Ok(Ok(existing));
            }
            let count = |i: usize| row.get::<_, i64>(i) as usize;
            let bytes = crate::control::pending::entry_bytes(&id, &login);
            let refused = if count(1) > 0 {
                Some(StartRefused::NodeKeyPendingElsewhere)
            } else if count(2) >= limits::MAX_PENDING_LOGINS_PER_MACHINE {
                Some(StartRefused::MachineQuota)
            } else if count(3) >= limits::MAX_PENDING_LOGINS_PER_SOURCE {
                Some(StartRefused::SourceQuota)
            } else if count(4) >= limits::MAX_PENDING_LOGINS
                || count(5) + bytes > limits::MAX_PENDING_LOGIN_BYTES
            {
                Some(StartRefused::Full)
            } else {
                None
            };
            if let Some(refused) = refused {
                return Ok(Err(refused));
            }
            tx.execute(
                "INSERT INTO headscale_rs.pending_logins
                     (id, machine_key, node_key, source, bytes, login, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))",
                &[
                    &id,
                    &machine,
                    &node,
                    &source,
                    &(bytes as i64),
                    &encode_login(&login, &origin),
                    &secs(ttl),
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(Ok(id))
        }
        .await;
        result.map_err(unavailable)?
    }

    /// See `PendingLogins::insert` (the admin API's own ids; no quotas).
    pub async fn insert(
        &self,
        id: &str,
        login: &PendingLogin,
        ttl: Duration,
    ) -> Result<(), Unavailable> {
        let origin = Origin {
            source: None,
            started: None,
        };
        let bytes = crate::control::pending::entry_bytes(id, login) as i64;
        self.pool
            .get()
            .await?
            .execute(
                "INSERT INTO headscale_rs.pending_logins
                     (id, machine_key, node_key, source, bytes, login, expires_at)
                 VALUES ($1, $2, $3, NULL, $4, $5, now() + make_interval(secs => $6))
                 ON CONFLICT (id) DO UPDATE SET machine_key = $2, node_key = $3, source = NULL,
                     bytes = $4, login = $5, outcome = NULL, expires_at = excluded.expires_at",
                &[
                    &id,
                    &login.machine_key.to_string(),
                    &login.node_key.to_string(),
                    &bytes,
                    &encode_login(login, &origin),
                    &secs(ttl),
                ],
            )
            .await?;
        Ok(())
    }

    /// See `PendingLogins::find_with_origin`.
    pub async fn find(&self, key: &str) -> Result<(String, PendingLogin, Origin), LookupError> {
        let unavailable = |e: Unavailable| LookupError::Unavailable(e.0);
        if let Some((login, origin)) = self.by_id(key).await.map_err(unavailable)? {
            return Ok((key.to_string(), login, origin));
        }
        let not_found = || LookupError::NotFound(key.to_string());
        let node_key = NodeKey::parse(key, false).map_err(|_| not_found())?;
        let client = self.pool.get().await.map_err(|e| unavailable(e.into()))?;
        let rows = client
            .query(
                "SELECT id, login FROM headscale_rs.pending_logins
                 WHERE node_key = $1 AND outcome IS NULL AND expires_at > now()",
                &[&node_key.to_string()],
            )
            .await
            .map_err(|e| unavailable(e.into()))?;
        match rows.as_slice() {
            [] => Err(not_found()),
            [row] => {
                let (login, origin) = decode_login(row.get(1)).map_err(unavailable)?;
                Ok((row.get(0), login, origin))
            }
            more => Err(LookupError::Ambiguous {
                key: node_key.to_string(),
                count: more.len(),
            }),
        }
    }

    /// See `PendingLogins::by_id`.
    pub async fn by_id(&self, id: &str) -> Result<Option<(PendingLogin, Origin)>, Unavailable> {
        let row = self
            .pool
            .get()
            .await?
            .query_opt(
                "SELECT login FROM headscale_rs.pending_logins
                 WHERE id = $1 AND outcome IS NULL AND expires_at > now()",
                &[&id],
            )
            .await?;
        row.map(|row| decode_login(row.get(0))).transpose()
    }

    /// See `PendingLogins::watch`: the receiver is fed by `follow` on this instance,
    /// whichever instance decides.
    pub async fn watch(
        &self,
        id: &str,
        machine_key: &MachineKey,
    ) -> Result<Option<watch::Receiver<Option<Outcome>>>, Unavailable> {
        // Subscribed before reading, so an outcome written in between is not missed.
        let receiver = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        let row = self
            .pool
            .get()
            .await?
            .query_opt(
                "SELECT machine_key, outcome FROM headscale_rs.pending_logins
                 WHERE id = $1 AND expires_at > now()",
                &[&id],
            )
            .await?;
        let Some(row) = row.filter(|r| r.get::<_, String>(0) == machine_key.to_string()) else {
            drop(receiver);
            self.forget_unwatched(id);
            return Ok(None);
        };
        if let Some(outcome) = row
            .get::<_, Option<String>>(1)
            .and_then(|o| decode_outcome(&o))
        {
            self.deliver(id, outcome);
        }
        Ok(Some(receiver))
    }

    fn deliver(&self, id: &str, outcome: Outcome) {
        if let Some(sender) = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            sender.send_replace(Some(outcome));
        }
    }

    /// Drops `id`'s channel if no request waits on it any more.
    fn forget_unwatched(&self, id: &str) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if waiters.get(id).is_some_and(|s| s.receiver_count() == 0) {
            waiters.remove(id);
        }
    }

    /// See `PendingLogins::finish`: records the outcome (the follow-up on any instance reads
    /// it) and keeps it as a tombstone; at most `MAX_TOMBSTONES` tombstones stay.
    pub async fn finish(&self, id: &str, outcome: &Outcome) -> Result<(), Unavailable> {
        let client = self.pool.get().await?;
        client
            .execute(
                "WITH done AS (
                     UPDATE headscale_rs.pending_logins
                     SET outcome = $2, expires_at = now() + make_interval(secs => $3)
                     WHERE id = $1 AND outcome IS NULL AND expires_at > now()
                     RETURNING id)
                 SELECT pg_notify($4, id) FROM done",
                &[
                    &id,
                    &encode_outcome(outcome),
                    &secs(TOMBSTONE_TTL),
                    &LOGINS_CHANNEL,
                ],
            )
            .await?;
        client
            .execute(
                "DELETE FROM headscale_rs.pending_logins WHERE id IN (
                     SELECT id FROM headscale_rs.pending_logins WHERE outcome IS NOT NULL
                     ORDER BY expires_at DESC OFFSET $1)",
                &[&(crate::control::pending::MAX_TOMBSTONES as i64)],
            )
            .await?;
        self.deliver(id, outcome.clone());
        Ok(())
    }

    /// Wakes this instance's waiting follow-ups: a NOTIFY naming one of them checks it at
    /// once, a (re)connected LISTEN or the poll checks them all.
    async fn follow(self, mut hints: tokio::sync::mpsc::Receiver<Hint>, poll_interval: Duration) {
        let mut poll = tokio::time::interval(poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            let ids: Vec<String> = tokio::select! {
                hint = hints.recv() => match hint {
                    None => return,
                    Some(Hint::Notified { payload, .. }) => vec![payload],
                    Some(Hint::Listening) => self.waited(),
                    Some(Hint::Lost(reason)) => {
                        tracing::debug!(%reason, "login notifications lost; polling");
                        continue;
                    }
                },
                _ = poll.tick() => self.waited(),
            };
            if let Err(error) = self.check(&ids).await {
                tracing::debug!(%error, "could not read login outcomes; retrying");
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = tokio::time::Instant::now();
                if let Err(error) = self.sweep().await {
                    tracing::debug!(%error, "could not sweep expired logins");
                }
            }
        }
    }

    /// The ids follow-ups on this instance wait for (dropping those nobody waits for).
    fn waited(&self) -> Vec<String> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.retain(|_, s| s.receiver_count() > 0);
        waiters.keys().cloned().collect()
    }

    /// Delivers the outcomes of `ids` decided anywhere; a login that is gone (expired)
    /// closes its channel, which its follow-up reports as expired.
    async fn check(&self, ids: &[String]) -> Result<(), Unavailable> {
        let ids: Vec<&String> = {
            let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            ids.iter().filter(|id| waiters.contains_key(*id)).collect()
        };
        if ids.is_empty() {
            return Ok(());
        }
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT id, outcome FROM headscale_rs.pending_logins
                 WHERE id = ANY($1) AND expires_at > now()",
                &[&ids],
            )
            .await?;
        let found: HashMap<String, Option<String>> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            match found.get(id) {
                Some(Some(outcome)) => {
                    if let (Some(sender), Some(outcome)) =
                        (waiters.get(id), decode_outcome(outcome))
                    {
                        if sender.borrow().is_none() {
                            sender.send_replace(Some(outcome));
                        }
                    }
                }
                Some(None) => {}
                None => {
                    if waiters.get(id).is_some_and(|s| s.borrow().is_none()) {
                        waiters.remove(id);
                    }
                }
            }
        }
        Ok(())
    }

    async fn sweep(&self) -> Result<(), Unavailable> {
        self.pool
            .get()
            .await?
            .batch_execute(
                "DELETE FROM headscale_rs.pending_logins WHERE expires_at <= now();
                 DELETE FROM headscale_rs.oidc_flights WHERE expires_at <= now();
                 DELETE FROM headscale_rs.oidc_confirmations WHERE expires_at <= now();",
            )
            .await?;
        Ok(())
    }

    // ---- OIDC flights and confirmations (`oidc::sessions`) ----

    /// See `Sessions::start`: the same bounds, over every instance's flights.
    pub async fn start_flight(
        &self,
        state: &str,
        flight: &Flight,
        ttl: Duration,
        max_flights: usize,
        per_login: usize,
    ) -> Result<(), SessionError> {
        let result: Result<Result<(), SessionError>, Unavailable> = async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SESSIONS_LOCK])
                .await?;
            tx.execute(
                "DELETE FROM headscale_rs.oidc_flights WHERE expires_at <= now()",
                &[],
            )
            .await?;
            // This login's oldest flights beyond the newest `per_login - 1` go.
            tx.execute(
                "DELETE FROM headscale_rs.oidc_flights WHERE state IN (
                     SELECT state FROM headscale_rs.oidc_flights WHERE auth_id = $1
                     ORDER BY created_at DESC OFFSET $2)",
                &[&flight.auth_id, &(per_login.saturating_sub(1) as i64)],
            )
            .await?;
            let count: i64 = tx
                .query_one("SELECT count(*) FROM headscale_rs.oidc_flights", &[])
                .await?
                .get(0);
            if count as usize >= max_flights {
                return Ok(Err(SessionError::Busy));
            }
            tx.execute(
                "INSERT INTO headscale_rs.oidc_flights
                     (state, auth_id, nonce, pkce_verifier, expires_at)
                 VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
                &[
                    &state,
                    &flight.auth_id,
                    &flight.nonce,
                    &flight.pkce_verifier,
                    &secs(ttl),
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(Ok(()))
        }
        .await;
        result.map_err(|e| SessionError::Unavailable(e.0))?
    }

    /// See `Sessions::take_flight`: deleted as it is read, so exactly one callback, on
    /// whichever instance, gets it.
    pub async fn take_flight(&self, state: &str) -> Result<Option<Flight>, Unavailable> {
        let row = self
            .pool
            .get()
            .await?
            .query_opt(
                "DELETE FROM headscale_rs.oidc_flights WHERE state = $1
                 RETURNING auth_id, nonce, pkce_verifier, expires_at > now()",
                &[&state],
            )
            .await?;
        Ok(row.filter(|r| r.get::<_, bool>(3)).map(|r| Flight {
            auth_id: r.get(0),
            nonce: r.get(1),
            pkce_verifier: r.get(2),
        }))
    }

    /// See `Sessions::confirm_later`.
    pub async fn confirm_later(
        &self,
        auth_id: &str,
        confirmation: &Confirmation,
        ttl: Duration,
        max: usize,
    ) -> Result<(), SessionError> {
        let result: Result<Result<(), SessionError>, Unavailable> = async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SESSIONS_LOCK])
                .await?;
            tx.execute(
                "DELETE FROM headscale_rs.oidc_confirmations WHERE expires_at <= now()",
                &[],
            )
            .await?;
            let row = tx
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE auth_id = $1)
                     FROM headscale_rs.oidc_confirmations",
                    &[&auth_id],
                )
                .await?;
            if row.get::<_, i64>(0) as usize >= max && row.get::<_, i64>(1) == 0 {
                return Ok(Err(SessionError::Busy));
            }
            tx.execute(
                "INSERT INTO headscale_rs.oidc_confirmations
                     (auth_id, user_id, identity, expiry, csrf, expires_at)
                 VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
                 ON CONFLICT (auth_id) DO UPDATE SET user_id = $2, identity = $3, expiry = $4,
                     csrf = $5, expires_at = excluded.expires_at",
                &[
                    &auth_id,
                    &(confirmation.user.0 as i64),
                    &confirmation.identity,
                    &confirmation.expiry.map(|t| t.unix_ms()),
                    &confirmation.csrf,
                    &secs(ttl),
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(Ok(()))
        }
        .await;
        result.map_err(|e| SessionError::Unavailable(e.0))?
    }

    /// See `Sessions::take_confirmation`: the token is compared in constant time; the row
    /// is deleted only with its own token, so one confirmation, anywhere, takes it.
    pub async fn take_confirmation(
        &self,
        auth_id: &str,
        csrf: &str,
    ) -> Result<Result<Confirmation, Taken>, Unavailable> {
        use subtle::ConstantTimeEq;
        let client = self.pool.get().await?;
        let Some(row) = client
            .query_opt(
                "SELECT csrf FROM headscale_rs.oidc_confirmations
                 WHERE auth_id = $1 AND expires_at > now()",
                &[&auth_id],
            )
            .await?
        else {
            return Ok(Err(Taken::Unknown));
        };
        let stored: String = row.get(0);
        if !bool::from(stored.as_bytes().ct_eq(csrf.as_bytes())) {
            return Ok(Err(Taken::Mismatch));
        }
        let taken = client
            .query_opt(
                "DELETE FROM headscale_rs.oidc_confirmations
                 WHERE auth_id = $1 AND csrf = $2 AND expires_at > now()
                 RETURNING user_id, identity, expiry",
                &[&auth_id, &stored],
            )
            .await?;
        Ok(taken
            .map(|r| Confirmation {
                user: UserId(r.get::<_, i64>(0) as u64),
                identity: r.get(1),
                expiry: r.get::<_, Option<i64>>(2).map(Timestamp::from_unix_ms),
                csrf: stored,
            })
            .ok_or(Taken::Unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_logins_survive_the_table() {
        for outcome in [
            Outcome::Registered(NodeId(42)),
            Outcome::Rejected("no: not: this".into()),
        ] {
            assert_eq!(decode_outcome(&encode_outcome(&outcome)), Some(outcome));
        }
        assert_eq!(decode_outcome("other"), None);
        let login = PendingLogin {
            machine_key: MachineKey([1; 32]),
            node_key: NodeKey([2; 32]),
            hostinfo: NodeHostinfo {
                hostname: "h".into(),
                ..Default::default()
            },
            ephemeral: true,
            requested_expiry: Some(Timestamp::from_unix_ms(5)),
        };
        let origin = Origin {
            source: Some("192.0.2.1".parse().unwrap()),
            started: Some(Timestamp::from_unix_ms(7)),
        };
        let (back, back_origin) = decode_login(&encode_login(&login, &origin)).unwrap();
        assert_eq!(back.machine_key, login.machine_key);
        assert_eq!(back.node_key, login.node_key);
        assert_eq!(back.hostinfo, login.hostinfo);
        assert!(back.ephemeral);
        assert_eq!(back.requested_expiry, login.requested_expiry);
        assert_eq!(back_origin, origin);
    }
}
