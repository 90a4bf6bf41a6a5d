//! Interactive logins waiting for an admin: `tailscale up` without a key gets an AuthURL
//! naming a registration id; the admin completes it with `headscale nodes register --key
//! <id>` (or the node key, when exactly one login waits with it). Anyone can start one, so
//! they live here — a bounded table with a time to live — and never in the event log; only
//! the admin's decision (the registration) becomes an event.
//!
//! Bounds (`core::limits`): at most `MAX_PENDING_LOGINS` entries and
//! `MAX_PENDING_LOGIN_BYTES` (estimated) in all, `MAX_PENDING_LOGINS_PER_SOURCE` per source
//! address (an IPv6 /64 counts as one source) and `MAX_PENDING_LOGINS_PER_MACHINE` per
//! machine key. When a bound is reached the *newcomer* is refused (its client is told why);
//! nothing is evicted by age, so a flood cannot push out a genuine login. Only what the
//! approval page and the registration need is kept: the hostname and the small strings,
//! the requested tags, the keys, the source and the time (advertised routes and SSH host
//! keys arrive again with the node's first map request).
//!
//! A finished login leaves a tombstone with its outcome for `TOMBSTONE_TTL`, so a follow-up
//! that arrives just after the admin decided gets the outcome, not "expired".
//!
//! With several instances on one PostgreSQL database (`ha`), the table is `ha::logins`'s
//! shared one instead of this process's memory, with the same bounds over all instances:
//! chosen once at start (`PendingLogins::shared`), the methods below are the same.

use crate::core::event::NodeHostinfo;
use crate::core::ids::NodeId;
use crate::core::keys::{MachineKey, NodeKey};
use crate::core::limits;
use crate::core::Timestamp;
use crate::ha::logins::SharedLogins;
use rand::Rng;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Registration ids: 24 characters of this alphabet (as headscale's are).
const ID_LEN: usize = 24;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// How long a finished login's outcome stays available to its follow-up request (longer
/// than the follow-up's wait, `register::FOLLOWUP_WAIT`).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(600);
/// Finished logins remembered at most (the oldest tombstone goes first: it is finished).
pub const MAX_TOMBSTONES: usize = limits::MAX_PENDING_LOGINS;

/// What the client asked for, kept until an admin decides.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub machine_key: MachineKey,
    pub node_key: NodeKey,
    pub hostinfo: NodeHostinfo,
    pub ephemeral: bool,
    pub requested_expiry: Option<Timestamp>,
}

/// Where and when a pending login started (shown on the approval page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The TCP peer's address (`None` when unknown: in-process requests, admin inserts).
    pub source: Option<IpAddr>,
    /// `None` for logins queued by the admin API.
    pub started: Option<Timestamp>,
}

/// How a pending login ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Registered(NodeId),
    Rejected(String),
}

/// Why a new pending login was refused (told to the client in `RegisterResponse.Error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartRefused {
    #[error("too many logins are waiting for an administrator; try again later")]
    Full,
    #[error("too many logins from this network are waiting for an administrator; try again later")]
    SourceQuota,
    #[error("too many logins from this machine are waiting for an administrator; use the login URL you already have, or wait")]
    MachineQuota,
    #[error("this node key is already waiting for approval from another machine")]
    NodeKeyPendingElsewhere,
    /// Several instances: the shared table could not be reached.
    #[error("the server cannot record logins right now ({0}); try again in a moment")]
    Unavailable(String),
}

/// Why a lookup found no single login.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no pending registration with key {0:?} (it may have expired; `tailscale up` shows a new one)")]
    NotFound(String),
    #[error("{count} pending registrations have node key {key}: use the registration id from the login URL instead")]
    Ambiguous { key: String, count: usize },
    /// Several instances: the shared table could not be reached.
    #[error("the shared login table is unavailable ({0}); try again in a moment")]
    Unavailable(String),
}

struct Entry {
    login: PendingLogin,
    origin: Origin,
    created: Instant,
    /// `entry_bytes` at insertion.
    bytes: usize,
    outcome: watch::Sender<Option<Outcome>>,
}

struct Tombstone {
    machine_key: MachineKey,
    finished: Instant,
    outcome: watch::Sender<Option<Outcome>>,
}

#[derive(Default)]
struct Table {
    entries: HashMap<String, Entry>,
    bytes: usize,
    tombstones: HashMap<String, Tombstone>,
}

/// The shared table (cheap to clone).
#[derive(Clone)]
pub struct PendingLogins {
    inner: Arc<Mutex<Table>>,
    ttl: Duration,
    /// Several instances: the shared table, used instead of `inner`.
    shared: Option<SharedLogins>,
}

/// The source a quota counts: the address, with IPv6 cut to its /64 (one site) and an
/// IPv4-mapped address counted as IPv4.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
        v4 => v4,
    }
}

/// What a login costs in memory, estimated: the entry plus its strings.
pub(crate) fn entry_bytes(id: &str, login: &PendingLogin) -> usize {
    let h = &login.hostinfo;
    std::mem::size_of::<Entry>()
        + id.len()
        + h.hostname.len()
        + h.os.len()
        + h.os_version.len()
        + h.client_version.len()
        + h.requested_tags
            .iter()
            .map(|t| t.len() + std::mem::size_of::<String>())
            .sum::<usize>()
        + h.advertised_routes.len() * std::mem::size_of::<ipnet::IpNet>()
        + h.ssh_host_keys
            .iter()
            .map(|k| k.len() + std::mem::size_of::<String>())
            .sum::<usize>()
}

/// A fresh registration id.
fn new_id() -> String {
    let mut rng = rand::thread_rng();
    (0..ID_LEN)
        .map(|_| ID_ALPHABET[rng.gen_range(0..ID_ALPHABET.len())] as char)
        .collect()
}

/// Only what the approval and the registration need (see the module doc).
fn kept(mut login: PendingLogin) -> PendingLogin {
    login.hostinfo.advertised_routes = Vec::new();
    login.hostinfo.ssh_host_keys = Vec::new();
    login
}

impl Table {
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        self.bytes -= entry.bytes;
        Some(entry)
    }

    fn add(&mut self, id: String, login: PendingLogin, origin: Origin) {
        self.remove(&id);
        let bytes = entry_bytes(&id, &login);
        self.bytes += bytes;
        let (outcome, _) = watch::channel(None);
        self.entries.insert(
            id,
            Entry {
                login,
                origin,
                created: Instant::now(),
                bytes,
                outcome,
            },
        );
    }
}

impl PendingLogins {
    pub fn new(ttl: Duration) -> PendingLogins {
        PendingLogins {
            inner: Arc::default(),
            ttl,
            shared: None,
        }
    }

    /// The table every instance on one PostgreSQL database shares (`ha::logins`).
    pub fn shared(ttl: Duration, shared: SharedLogins) -> PendingLogins {
        PendingLogins {
            inner: Arc::default(),
            ttl,
            shared: Some(shared),
        }
    }

    /// The shared tables, when several instances share them (OIDC flights live there too).
    pub fn shared_tables(&self) -> Option<&SharedLogins> {
        self.shared.as_ref()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        let mut table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl;
        let expired: Vec<String> = table
            .entries
            .iter()
            .filter(|(_, e)| e.created.elapsed() >= ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            table.remove(&id);
        }
        table
            .tombstones
            .retain(|_, t| t.finished.elapsed() < TOMBSTONE_TTL);
        table
    }

    /// The id of `login`'s pending registration: the existing one for the same machine and
    /// node key, or a new one if every bound allows it (else the reason to tell the client).
    pub async fn start(&self, login: PendingLogin, origin: Origin) -> Result<String, StartRefused> {
        let login = kept(login);
        if let Some(shared) = &self.shared {
            return shared.start_login(login, origin, self.ttl, new_id()).await;
        }
        let mut table = self.table();
        if let Some((id, _)) = table.entries.iter().find(|(_, e)| {
            e.login.machine_key == login.machine_key && e.login.node_key == login.node_key
        }) {
            return Ok(id.clone());
        }
        if table
            .entries
            .values()
            .any(|e| e.login.node_key == login.node_key)
        {
            return Err(StartRefused::NodeKeyPendingElsewhere);
        }
        let same_machine = table
            .entries
            .values()
            .filter(|e| e.login.machine_key == login.machine_key)
            .count();
        if same_machine >= limits::MAX_PENDING_LOGINS_PER_MACHINE {
            return Err(StartRefused::MachineQuota);
        }
        let source = origin.source.map(source_key);
        let same_source = table
            .entries
            .values()
            .filter(|e| e.origin.source.map(source_key) == source)
            .count();
        if same_source >= limits::MAX_PENDING_LOGINS_PER_SOURCE {
            return Err(StartRefused::SourceQuota);
        }
        let id = new_id();
        if table.entries.len() >= limits::MAX_PENDING_LOGINS
            || table.bytes + entry_bytes(&id, &login) > limits::MAX_PENDING_LOGIN_BYTES
        {
            return Err(StartRefused::Full);
        }
        table.add(id.clone(), login, origin);
        Ok(id)
    }

    /// Queues `login` under an id the caller chose (headscale's `debug/node` names its
    /// registration `hskey-authreq-…`); replaces any login already under that id. Only the
    /// admin API calls this, so the per-source and per-machine quotas do not apply.
    pub async fn insert(&self, id: &str, login: PendingLogin) -> Result<(), LookupError> {
        if let Some(shared) = &self.shared {
            return shared
                .insert(id, &kept(login), self.ttl)
                .await
                .map_err(|e| LookupError::Unavailable(e.0));
        }
        let mut table = self.table();
        let origin = Origin {
            source: None,
            started: None,
        };
        table.add(id.to_string(), kept(login), origin);
        Ok(())
    }

    /// The login waiting under `key`: a registration id, or the node key it registers (which
    /// must name exactly one waiting login).
    pub async fn find(&self, key: &str) -> Result<(String, PendingLogin), LookupError> {
        self.find_with_origin(key)
            .await
            .map(|(id, login, _)| (id, login))
    }

    /// `find`, with where and when the login started.
    pub async fn find_with_origin(
        &self,
        key: &str,
    ) -> Result<(String, PendingLogin, Origin), LookupError> {
        if let Some(shared) = &self.shared {
            return shared.find(key).await;
        }
        let table = self.table();
        if let Some(entry) = table.entries.get(key) {
            return Ok((key.to_string(), entry.login.clone(), entry.origin.clone()));
        }
        let not_found = || LookupError::NotFound(key.to_string());
        let node_key = NodeKey::parse(key, false).map_err(|_| not_found())?;
        let mut matches = table
            .entries
            .iter()
            .filter(|(_, e)| e.login.node_key == node_key);
        let Some((id, entry)) = matches.next() else {
            return Err(not_found());
        };
        let others = matches.count();
        if others > 0 {
            return Err(LookupError::Ambiguous {
                key: node_key.to_string(),
                count: others + 1,
            });
        }
        Ok((id.clone(), entry.login.clone(), entry.origin.clone()))
    }

    /// The login waiting under the registration id `id` only (the public page: a node key
    /// must not reveal a registration id).
    /// Several instances: an unreachable shared table reads as no login (logged).
    pub async fn by_id(&self, id: &str) -> Option<(PendingLogin, Origin)> {
        if let Some(shared) = &self.shared {
            return shared.by_id(id).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "pending login not readable");
                None
            });
        }
        let table = self.table();
        table
            .entries
            .get(id)
            .map(|e| (e.login.clone(), e.origin.clone()))
    }

    /// Subscribes to the outcome of `id` for the machine that started it (`None` if there
    /// is no such login, or another machine asks). A login finished a moment ago answers
    /// with its outcome at once.
    /// Several instances: the decision may be taken on any of them; an unreachable shared
    /// table reads as no login (logged).
    pub async fn watch(
        &self,
        id: &str,
        machine_key: &MachineKey,
    ) -> Option<watch::Receiver<Option<Outcome>>> {
        if let Some(shared) = &self.shared {
            return shared.watch(id, machine_key).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "pending login not readable");
                None
            });
        }
        let table = self.table();
        if let Some(entry) = table.entries.get(id) {
            return (entry.login.machine_key == *machine_key).then(|| entry.outcome.subscribe());
        }
        table
            .tombstones
            .get(id)
            .filter(|t| t.machine_key == *machine_key)
            .map(|t| t.outcome.subscribe())
    }

    /// Ends the login `id` with `outcome`, waking its follow-up request, and keeps the
    /// outcome as a tombstone for a follow-up that is still on its way.
    /// Several instances: the outcome reaches the follow-up on whichever instance holds it;
    /// if the shared table cannot be written, a registration still reaches it through the
    /// event log (the follow-up also watches for its node), a rejection is logged.
    pub async fn finish(&self, id: &str, outcome: Outcome) {
        if let Some(shared) = &self.shared {
            if let Err(error) = shared.finish(id, &outcome).await {
                tracing::warn!(%error, %id, "login outcome not recorded in the shared table");
            }
            return;
        }
        let mut table = self.table();
        let Some(entry) = table.remove(id) else {
            return;
        };
        entry.outcome.send_replace(Some(outcome));
        if table.tombstones.len() >= MAX_TOMBSTONES {
            if let Some(oldest) = table
                .tombstones
                .iter()
                .min_by_key(|(_, t)| t.finished)
                .map(|(id, _)| id.clone())
            {
                table.tombstones.remove(&oldest);
            }
        }
        table.tombstones.insert(
            id.to_string(),
            Tombstone {
                machine_key: entry.login.machine_key,
                finished: Instant::now(),
                outcome: entry.outcome,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn login(machine: u8, node: u8) -> PendingLogin {
        PendingLogin {
            machine_key: MachineKey([machine; 32]),
            node_key: NodeKey([node; 32]),
            hostinfo: NodeHostinfo::default(),
            ephemeral: false,
            requested_expiry: None,
        }
    }

    fn from(ip: IpAddr) -> Origin {
        Origin {
            source: Some(ip),
            started: Some(Timestamp::from_unix_ms(0)),
        }
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[tokio::test]
    async fn the_same_client_keeps_its_id_and_lookups_find_it() {
        let pending = PendingLogins::new(Duration::from_secs(60));
        let id = pending.start(login(1, 1), from(v4(1))).await.unwrap();
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(
            pending.start(login(1, 1), from(v4(1))).await,
            Ok(id.clone())
        );
        assert_eq!(pending.find(&id).await.map(|(i, _)| i), Ok(id.clone()));
        let by_node_key = pending.find(&NodeKey([1; 32]).to_string()).await;
        assert_eq!(by_node_key.map(|(i, _)| i), Ok(id.clone()));
        assert!(pending.by_id(&NodeKey([1; 32]).to_string()).await.is_none());
        assert!(pending.by_id(&id).await.is_some());
    }

    #[tokio::test]
    async fn quotas_refuse_the_newcomer_and_never_evict() {
        let pending = PendingLogins::new(Duration::from_secs(60));
        let genuine = pending.start(login(200, 200), from(v4(99))).await.unwrap();
        // One machine: 4.
        for n in 0..limits::MAX_PENDING_LOGINS_PER_MACHINE as u8 {
            pending.start(login(1, 10 + n), from(v4(1))).await.unwrap();
        }
        assert_eq!(
            pending.start(login(1, 50), from(v4(1))).await,
            Err(StartRefused::MachineQuota)
        );
        // One source (an IPv6 /64): 16, whatever the machine.
        let net = |host: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, host));
        for n in 0..limits::MAX_PENDING_LOGINS_PER_SOURCE as u8 {
            pending
                .start(login(100 + n, 100 + n), from(net(n.into())))
                .await
                .unwrap();
        }
        assert_eq!(
            pending.start(login(150, 150), from(net(999))).await,
            Err(StartRefused::SourceQuota)
        );
        // Another /64 is another source.
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert!(pending.start(login(151, 151), from(other)).await.is_ok());
        // The node key of a waiting login cannot be claimed by another machine.
        assert_eq!(
            pending.start(login(152, 200), from(v4(7))).await,
            Err(StartRefused::NodeKeyPendingElsewhere)
        );
        assert!(pending.find(&genuine).await.is_ok(), "nothing was evicted");
    }

    #[tokio::test]
    async fn a_full_table_refuses_and_keeps_the_old_logins() {
        let pending = PendingLogins::new(Duration::from_secs(60));
        let first = pending.start(login(0, 0), from(v4(0))).await.unwrap();
        let mut n: u32 = 1;
        loop {
            let mut l = login(0, 0);
            l.machine_key = MachineKey([
                (n % 251) as u8,
                (n / 251) as u8,
                1,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ]);
            l.node_key = NodeKey(l.machine_key.0);
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            match pending.start(l, from(ip)).await {
                Ok(_) => n += 1,
                Err(refused) => {
                    assert_eq!(refused, StartRefused::Full);
                    break;
                }
            }
        }
        assert_eq!(n as usize, limits::MAX_PENDING_LOGINS);
        assert!(pending.find(&first).await.is_ok());
    }

    #[tokio::test]
    async fn an_ambiguous_node_key_is_refused() {
        let pending = PendingLogins::new(Duration::from_secs(60));
        pending
            .insert("hskey-authreq-aaaaaaaaaaaaaaaaaaaaaaaa", login(1, 5))
            .await
            .unwrap();
        pending
            .insert("hskey-authreq-bbbbbbbbbbbbbbbbbbbbbbbb", login(2, 5))
            .await
            .unwrap();
        let error = pending
            .find(&NodeKey([5; 32]).to_string())
            .await
            .unwrap_err();
        assert!(
            matches!(error, LookupError::Ambiguous { count: 2, .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn logins_expire_and_finishing_wakes_only_the_owner_even_afterwards() {
        let pending = PendingLogins::new(Duration::from_millis(0));
        let id = pending.start(login(1, 1), from(v4(1))).await.unwrap();
        assert!(pending.find(&id).await.is_err(), "expired immediately");
        let pending = PendingLogins::new(Duration::from_secs(60));
        let id = pending.start(login(1, 1), from(v4(1))).await.unwrap();
        assert!(
            pending.watch(&id, &MachineKey([2; 32])).await.is_none(),
            "not its login"
        );
        let waiter = pending.watch(&id, &MachineKey([1; 32])).await.unwrap();
        pending.finish(&id, Outcome::Registered(NodeId(7))).await;
        assert_eq!(*waiter.borrow(), Some(Outcome::Registered(NodeId(7))));
        assert!(pending.find(&id).await.is_err());
        // A follow-up that arrives after the decision gets it.
        let late = pending.watch(&id, &MachineKey([1; 32])).await.unwrap();
        assert_eq!(*late.borrow(), Some(Outcome::Registered(NodeId(7))));
        assert!(pending.watch(&id, &MachineKey([2; 32])).await.is_none());
    }
}
