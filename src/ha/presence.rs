//! Presence shared between instances: which nodes hold a map stream where, and what their
//! peers are shown of them (endpoints, disco key, home DERP, hostinfo). Never part of the
//! event log: it changes on every reconnect, and an instance's death would otherwise cost
//! one append per node it held.
//!
//! Two tables of our own (UNLOGGED: a crash of PostgreSQL empties them, and every instance
//! writes its rows again at its next heartbeat): `instances` (name, `expires_at`), renewed
//! every `ha.heartbeat_interval` to PostgreSQL's `now() + ha.presence_ttl` so instance clocks
//! do not matter; and `presence` (instance, node, what peers see, when written). Rows of an
//! instance whose `expires_at` passed are ignored, and collected later.
//!
//! The hub never waits for PostgreSQL: it hands this task what it holds (`LocalChanges`, at
//! most one batch per send) and takes what the others hold (`RemoteView`) through its
//! channel. This task writes the changes as one transaction and signals them with a NOTIFY
//! on `PRESENCE_CHANNEL` (payload: the writer's name); a notification is a hint to read the
//! others' rows, a poll every heartbeat is the safety net.

use super::pool::{Hint, SharedPool};
use crate::config::HaConfig;
use crate::control::hub::{LocalChanges, MapHub, RemoteView};
use crate::core::ids::NodeId;
use crate::core::keys::DiscoKey;
use crate::core::netmap::NodePresence;
use crate::store::postgres::error_text;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The NOTIFY channel a presence write signals (payload: the writing instance's name).
pub const PRESENCE_CHANNEL: &str = "headscale_rs_presence";

/// A row's serialized presence larger than this is neither written nor read (the hub
/// already bounds endpoints and hostinfo far below it).
const MAX_ROW_BYTES: usize = 64 * 1024;
/// Batches from the hub waiting at most; when full, the hub keeps its changes for its next
/// send (they coalesce there).
const OUTBOUND_QUEUE: usize = 8;
/// How long a clean shutdown waits for its rows to be deleted.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);

const SCHEMA: &str = "CREATE SCHEMA IF NOT EXISTS headscale_rs;
CREATE UNLOGGED TABLE IF NOT EXISTS headscale_rs.instances (
    name text PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNLOGGED TABLE IF NOT EXISTS headscale_rs.presence (
    instance text NOT NULL,
    node_id bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    data text NOT NULL,
    PRIMARY KEY (instance, node_id)
);";

/// What a row holds: what peers are shown of a node (`NodePresence` minus what every
/// instance decides itself: online, last seen, primary routes).
#[derive(Debug, Serialize)]
struct RowOut<'a> {
    endpoints: &'a [String],
    disco_key: Option<DiscoKey>,
    home_derp: u32,
    capability_version: u32,
    hostinfo: Option<&'a serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct RowIn {
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    disco_key: Option<DiscoKey>,
    #[serde(default)]
    home_derp: u32,
    #[serde(default)]
    capability_version: u32,
    #[serde(default)]
    hostinfo: Option<serde_json::Value>,
}

fn encode(presence: &NodePresence) -> Option<String> {
    let row = RowOut {
        endpoints: &presence.endpoints,
        disco_key: presence.disco_key,
        home_derp: presence.home_derp,
        capability_version: presence.capability_version,
        hostinfo: presence.hostinfo.as_deref(),
    };
    serde_json::to_string(&row)
        .ok()
        .filter(|text| text.len() <= MAX_ROW_BYTES)
}

fn decode(text: &str) -> Option<NodePresence> {
    if text.len() > MAX_ROW_BYTES {
        return None;
    }
    let row: RowIn = serde_json::from_str(text).ok()?;
    Some(NodePresence {
        online: true,
        last_seen: None,
        endpoints: row.endpoints,
        disco_key: row.disco_key,
        home_derp: row.home_derp,
        capability_version: row.capability_version,
        hostinfo: row.hostinfo.map(Arc::new),
        primary_routes: Vec::new(),
    })
}

/// One row another live instance holds.
#[derive(Debug, Clone)]
pub struct RemoteRow {
    pub instance: String,
    pub node: NodeId,
    /// When it was written (PostgreSQL's clock, Unix ms).
    pub updated_ms: i64,
    pub presence: NodePresence,
}

/// The view the hub gets: a node listed by several live instances (it moved and the one
/// it left is still in its offline grace) takes the newest row, where its session is now.
/// The first live instance by name deletes inactive ephemeral nodes.
pub fn merge(me: &str, live: &[String], rows: Vec<RemoteRow>) -> RemoteView {
    let mut newest: HashMap<NodeId, RemoteRow> = HashMap::new();
    for row in rows {
        if row.instance == me || !live.contains(&row.instance) {
            continue;
        }
        let replace = newest
            .get(&row.node)
            .is_none_or(|held| (row.updated_ms, &row.instance) > (held.updated_ms, &held.instance));
        if replace {
            newest.insert(row.node, row);
        }
    }
    let first = live.iter().min();
    RemoteView {
        online: newest
            .into_iter()
            .map(|(node, row)| (node, row.presence))
            .collect(),
        cleans_up: first.is_none_or(|name| name == me),
    }
}

/// Ends the sharing cleanly: this instance's rows are deleted, so the others show its nodes
/// offline at once rather than after `ha.presence_ttl`.
pub struct PresenceSync {
    stop: oneshot::Sender<oneshot::Sender<()>>,
}

impl PresenceSync {
    pub async fn stop(self) {
        let (done, finished) = oneshot::channel();
        if self.stop.send(done).is_ok() {
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, finished).await;
        }
    }
}

/// Starts sharing the hub's presence through PostgreSQL; runs on the server's runtime.
pub async fn spawn(pool: SharedPool, ha: &HaConfig, hub: MapHub) -> PresenceSync {
    let (outbound_tx, outbound) = mpsc::channel(OUTBOUND_QUEUE);
    hub.share_presence(outbound_tx).await;
    let hints = pool.listen(&[PRESENCE_CHANNEL]);
    let (stop, stopped) = oneshot::channel();
    let sync = Sync {
        pool,
        me: super::instance_name(&ha.instance_name),
        ttl: ha.presence_ttl,
        hub,
        desired: HashMap::new(),
        resync: true,
        last_read: None,
        sent_empty: false,
        schema_ready: false,
        last_view: None,
    };
    tokio::spawn(sync.run(outbound, hints, stopped, ha.heartbeat_interval));
    PresenceSync { stop }
}

struct Sync {
    pool: SharedPool,
    me: String,
    ttl: Duration,
    hub: MapHub,
    /// What this instance holds (serialized): what its rows should say.
    desired: HashMap<NodeId, String>,
    /// The rows may not say it (a write failed, the instance row expired, PostgreSQL lost
    /// its unlogged tables): rewrite them all at the next heartbeat.
    resync: bool,
    /// The last successful read of the others' rows.
    last_read: Option<Instant>,
    /// The hub was told the others hold nothing because reading failed too long.
    sent_empty: bool,
    /// The tables were created (or found); checked again after any failure.
    schema_ready: bool,
    /// The view the hub has: an unchanged one is not sent again (the comparison happens
    /// here, off the hub's thread).
    last_view: Option<RemoteView>,
}

impl Sync {
    async fn run(
        mut self,
        mut outbound: mpsc::Receiver<LocalChanges>,
        mut hints: mpsc::Receiver<Hint>,
        mut stopped: oneshot::Receiver<oneshot::Sender<()>>,
        heartbeat_interval: Duration,
    ) {
        let mut heartbeat = tokio::time::interval(heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                done = &mut stopped => {
                    self.goodbye().await;
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                batch = outbound.recv() => {
                    let Some(batch) = batch else { return };
                    let mut changes: HashMap<NodeId, Option<NodePresence>> =
                        batch.into_iter().collect();
                    while let Ok(more) = outbound.try_recv() {
                        changes.extend(more);
                    }
                    self.write(changes).await;
                }
                hint = hints.recv() => {
                    let Some(hint) = hint else { return };
                    let mut read = self.wants_read(&hint);
                    while let Ok(more) = hints.try_recv() {
                        read |= self.wants_read(&more);
                    }
                    if read && !self.read().await {
                        return;
                    }
                }
                _ = heartbeat.tick() => {
                    self.heartbeat().await;
                    if !self.read().await {
                        return;
                    }
                }
            }
        }
    }

    fn wants_read(&self, hint: &Hint) -> bool {
        match hint {
            Hint::Notified { payload, .. } => *payload != self.me,
            Hint::Listening => true,
            Hint::Lost(reason) => {
                tracing::debug!(%reason, "lost the presence notification connection; polling until it is back");
                false
            }
        }
    }

    /// Applies the hub's changes to `desired` and writes what differs, as one transaction.
    async fn write(&mut self, changes: HashMap<NodeId, Option<NodePresence>>) {
        let mut upserts: Vec<(i64, String)> = Vec::new();
        let mut deletes: Vec<i64> = Vec::new();
        for (node, presence) in changes {
            let Ok(id) = i64::try_from(node.0) else {
                continue;
            };
            match presence.as_ref().and_then(encode) {
                Some(text) => {
                    if self.desired.get(&node) != Some(&text) {
                        self.desired.insert(node, text.clone());
                        upserts.push((id, text));
                    }
                }
                None => {
                    if self.desired.remove(&node).is_some() {
                        deletes.push(id);
                    }
                }
            }
        }
        if upserts.is_empty() && deletes.is_empty() || self.resync {
            // A pending resync rewrites everything at the next heartbeat anyway.
            return;
        }
        if let Err(error) = self.write_rows(&upserts, &deletes, false).await {
            tracing::warn!(%error, "cannot publish presence; retrying at the next heartbeat");
            self.resync = true;
        }
    }

    /// Upserts and deletes this instance's rows (all of them first when `replace_all`), then
    /// signals the others.
    async fn write_rows(
        &self,
        upserts: &[(i64, String)],
        deletes: &[i64],
        replace_all: bool,
    ) -> Result<(), String> {
        let mut client = self.pool.get().await.map_err(|e| e.to_string())?;
        let tx = client.transaction().await.map_err(|e| error_text(&e))?;
        if replace_all {
            tx.execute(
                "DELETE FROM headscale_rs.presence WHERE instance = $1",
                &[&self.me],
            )
            .await
            .map_err(|e| error_text(&e))?;
        }
        if !deletes.is_empty() {
            tx.execute(
                "DELETE FROM headscale_rs.presence WHERE instance = $1 AND node_id = ANY($2)",
                &[&self.me, &deletes],
            )
            .await
            .map_err(|e| error_text(&e))?;
        }
        if !upserts.is_empty() {
            let ids: Vec<i64> = upserts.iter().map(|(id, _)| *id).collect();
            let data: Vec<&str> = upserts.iter().map(|(_, text)| text.as_str()).collect();
            tx.execute(
                "INSERT INTO headscale_rs.presence (instance, node_id, data, updated_at) \
                 SELECT $1, u.node_id, u.data, now() FROM unnest($2::bigint[], $3::text[]) \
                 AS u(node_id, data) \
                 ON CONFLICT (instance, node_id) DO UPDATE \
                 SET data = EXCLUDED.data, updated_at = EXCLUDED.updated_at",
                &[&self.me, &ids, &data],
            )
            .await
            .map_err(|e| error_text(&e))?;
        }
        tx.execute("SELECT pg_notify($1, $2)", &[&PRESENCE_CHANNEL, &self.me])
            .await
            .map_err(|e| error_text(&e))?;
        tx.commit().await.map_err(|e| error_text(&e))?;
        crate::metrics::metrics()
            .presence_rows_written
            .inc_by((upserts.len() + deletes.len()) as u64);
        Ok(())
    }

    /// Renews this instance's row; rewrites its rows when they may be wrong (its row had
    /// expired or was gone, or a write failed); collects the rows of long-dead instances.
    async fn heartbeat(&mut self) {
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let renewed = async {
            let client = self.pool.get().await.map_err(|e| e.to_string())?;
            if !self.schema_ready {
                client
                    .batch_execute(SCHEMA)
                    .await
                    .map_err(|e| error_text(&e))
                    .or_else(|error| {
                        // Two instances creating the tables at once: one loses, both go on.
                        if error.contains("already exists") || error.contains("duplicate key") {
                            Ok(())
                        } else {
                            Err(error)
                        }
                    })?;
            }
            let was_alive = client
                .query_opt(
                    "SELECT expires_at > now() FROM headscale_rs.instances WHERE name = $1",
                    &[&self.me],
                )
                .await
                .map_err(|e| error_text(&e))?
                .is_some_and(|row| row.get::<_, bool>(0));
            client
                .execute(
                    "INSERT INTO headscale_rs.instances (name, expires_at) \
                     VALUES ($1, now() + $2::float8 * interval '1 millisecond') \
                     ON CONFLICT (name) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                    &[&self.me, &(ttl_ms as f64)],
                )
                .await
                .map_err(|e| error_text(&e))?;
            // Long dead (twice the TTL): nobody reads their rows any more.
            client
                .execute(
                    "DELETE FROM headscale_rs.presence WHERE instance IN \
                     (SELECT name FROM headscale_rs.instances \
                      WHERE expires_at < now() - $1::float8 * interval '1 millisecond')",
                    &[&(ttl_ms as f64)],
                )
                .await
                .map_err(|e| error_text(&e))?;
            client
                .execute(
                    "DELETE FROM headscale_rs.instances \
                     WHERE expires_at < now() - $1::float8 * interval '1 millisecond'",
                    &[&(ttl_ms as f64)],
                )
                .await
                .map_err(|e| error_text(&e))?;
            Ok::<bool, String>(was_alive)
        };
        match renewed.await {
            Ok(was_alive) => {
                self.schema_ready = true;
                if !was_alive {
                    self.resync = true;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot renew this instance's presence heartbeat");
                self.schema_ready = false;
                self.resync = true;
                return;
            }
        }
        if self.resync {
            let rows: Vec<(i64, String)> = self
                .desired
                .iter()
                .filter_map(|(node, text)| Some((i64::try_from(node.0).ok()?, text.clone())))
                .collect();
            match self.write_rows(&rows, &[], true).await {
                Ok(()) => self.resync = false,
                Err(error) => tracing::warn!(%error, "cannot publish presence"),
            }
        }
    }

    /// Reads what the other live instances hold and hands it to the hub. When reading fails
    /// for longer than the TTL, the hub is told the others hold nothing (their nodes go
    /// offline here, as they would had those instances died). False when the hub is gone.
    async fn read(&mut self) -> bool {
        match self.read_rows().await {
            Ok((live, rows)) => {
                self.last_read = Some(Instant::now());
                self.sent_empty = false;
                crate::metrics::metrics()
                    .presence_instances
                    .set(live.len() as i64);
                self.tell_hub(merge(&self.me, &live, rows)).await
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the other instances' presence");
                let blind = self.last_read.is_none_or(|at| at.elapsed() > self.ttl);
                if blind && !self.sent_empty {
                    self.sent_empty = true;
                    let view = RemoteView {
                        online: HashMap::new(),
                        cleans_up: false,
                    };
                    return self.tell_hub(view).await;
                }
                true
            }
        }
    }

    /// Hands the hub `view` unless it has it already. False when the hub is gone.
    async fn tell_hub(&mut self, view: RemoteView) -> bool {
        if self.last_view.as_ref() == Some(&view) {
            return true;
        }
        self.last_view = Some(view.clone());
        self.hub.remote_presence(view).await
    }

    async fn read_rows(&self) -> Result<(Vec<String>, Vec<RemoteRow>), String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let live: Vec<String> = client
            .query(
                "SELECT name FROM headscale_rs.instances WHERE expires_at > now()",
                &[],
            )
            .await
            .map_err(|e| error_text(&e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let rows = client
            .query(
                "SELECT p.instance, p.node_id, \
                 (extract(epoch FROM p.updated_at) * 1000)::bigint, p.data \
                 FROM headscale_rs.presence p \
                 JOIN headscale_rs.instances i ON i.name = p.instance \
                 WHERE i.expires_at > now() AND p.instance <> $1",
                &[&self.me],
            )
            .await
            .map_err(|e| error_text(&e))?;
        let rows = rows
            .iter()
            .filter_map(|row| {
                let node = u64::try_from(row.get::<_, i64>(1)).ok()?;
                Some(RemoteRow {
                    instance: row.get(0),
                    node: NodeId(node),
                    updated_ms: row.get(2),
                    presence: decode(row.get::<_, &str>(3))?,
                })
            })
            .collect();
        Ok((live, rows))
    }

    /// A clean shutdown: this instance's rows and its own row go, and the others are told.
    async fn goodbye(&self) {
        let deleted = async {
            let mut client = self.pool.get().await.map_err(|e| e.to_string())?;
            let tx = client.transaction().await.map_err(|e| error_text(&e))?;
            tx.execute(
                "DELETE FROM headscale_rs.presence WHERE instance = $1",
                &[&self.me],
            )
            .await
            .map_err(|e| error_text(&e))?;
            tx.execute(
                "DELETE FROM headscale_rs.instances WHERE name = $1",
                &[&self.me],
            )
            .await
            .map_err(|e| error_text(&e))?;
            tx.execute("SELECT pg_notify($1, $2)", &[&PRESENCE_CHANNEL, &self.me])
                .await
                .map_err(|e| error_text(&e))?;
            tx.commit().await.map_err(|e| error_text(&e))
        };
        if let Err(error) = deleted.await {
            tracing::warn!(%error, "cannot withdraw this instance's presence; the others see it expire");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(instance: &str, node: u64, updated_ms: i64, endpoint: &str) -> RemoteRow {
        RemoteRow {
            instance: instance.into(),
            node: NodeId(node),
            updated_ms,
            presence: NodePresence {
                online: true,
                endpoints: vec![endpoint.into()],
                ..Default::default()
            },
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_newest_row_of_a_live_other_instance_wins() {
        let rows = vec![
            row("a", 1, 10, "a:1"),
            row("b", 1, 20, "b:1"),
            row("dead", 2, 30, "dead:2"),
            row("me", 3, 40, "me:3"),
            row("a", 4, 5, "a:4"),
        ];
        let view = merge("me", &names(&["a", "b", "me"]), rows);
        assert_eq!(view.online.len(), 2);
        assert_eq!(view.online[&NodeId(1)].endpoints, vec!["b:1".to_string()]);
        assert_eq!(view.online[&NodeId(4)].endpoints, vec!["a:4".to_string()]);
        assert!(view.online[&NodeId(4)].online);
        // "a" comes first by name: it deletes inactive ephemeral nodes, not us.
        assert!(!view.cleans_up);
        assert!(merge("a", &names(&["me", "a"]), vec![]).cleans_up);
        // Nobody seen live (our own row not yet renewed): we do not hold back.
        assert!(merge("me", &[], vec![]).cleans_up);
    }

    #[test]
    fn a_row_round_trips_what_peers_see_and_nothing_decided_locally() {
        let presence = NodePresence {
            online: true,
            last_seen: None,
            endpoints: vec!["192.0.2.1:41641".into()],
            disco_key: Some(DiscoKey::default()),
            home_derp: 3,
            capability_version: 120,
            hostinfo: Some(Arc::new(serde_json::json!({"Hostname": "n"}))),
            primary_routes: vec!["10.0.0.0/24".parse().unwrap()],
        };
        let back = decode(&encode(&presence).unwrap()).unwrap();
        assert_eq!(
            back,
            NodePresence {
                primary_routes: Vec::new(),
                ..presence
            }
        );
        assert!(decode("{not json").is_none());
        assert!(decode(&"x".repeat(MAX_ROW_BYTES + 1)).is_none());
    }
}
