//! Interactive logins waiting for an admin: `tailscale up` without a key gets an AuthURL
//! naming a registration id; the admin completes it with `headscale nodes register --key
//! <id>` (or the node key shown on the page). Anyone can start one, so they live here — a
//! bounded map with a time to live — and never in the event log; only the admin's decision
//! (the registration) becomes an event.

use crate::core::event::NodeHostinfo;
use crate::core::ids::NodeId;
use crate::core::keys::{MachineKey, NodeKey};
use crate::core::Timestamp;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// At most this many logins wait at once; the oldest is dropped for a new one.
const MAX_PENDING: usize = 1024;
/// Registration ids: 24 characters of this alphabet (as headscale's are).
const ID_LEN: usize = 24;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// What the client asked for, kept until an admin decides.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub machine_key: MachineKey,
    pub node_key: NodeKey,
    pub hostinfo: NodeHostinfo,
    pub ephemeral: bool,
    pub requested_expiry: Option<Timestamp>,
}

/// How a pending login ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Registered(NodeId),
    Rejected(String),
}

struct Entry {
    login: PendingLogin,
    created: Instant,
    outcome: watch::Sender<Option<Outcome>>,
}

/// The shared table (cheap to clone).
#[derive(Clone)]
pub struct PendingLogins {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
    ttl: Duration,
}

impl PendingLogins {
    pub fn new(ttl: Duration) -> PendingLogins {
        PendingLogins {
            inner: Arc::default(),
            ttl,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expire(&self, table: &mut HashMap<String, Entry>) {
        let ttl = self.ttl;
        table.retain(|_, entry| entry.created.elapsed() < ttl);
    }

    /// The id of `login`'s pending registration: the existing one for the same machine and
    /// node key, or a new one.
    pub fn start(&self, login: PendingLogin) -> String {
        let mut table = self.table();
        self.expire(&mut table);
        if let Some((id, _)) = table.iter().find(|(_, e)| {
            e.login.machine_key == login.machine_key && e.login.node_key == login.node_key
        }) {
            return id.clone();
        }
        if table.len() >= MAX_PENDING {
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(id, _)| id.clone())
            {
                table.remove(&oldest);
            }
        }
        let mut rng = rand::thread_rng();
        let id: String = (0..ID_LEN)
            .map(|_| ID_ALPHABET[rng.gen_range(0..ID_ALPHABET.len())] as char)
            .collect();
        let (outcome, _) = watch::channel(None);
        table.insert(
            id.clone(),
            Entry {
                login,
                created: Instant::now(),
                outcome,
            },
        );
        id
    }

    /// Queues `login` under an id the caller chose (headscale's `debug/node` names its
    /// registration `hskey-authreq-…`); replaces any login already under that id.
    pub fn insert(&self, id: &str, login: PendingLogin) {
        let mut table = self.table();
        self.expire(&mut table);
        if table.len() >= MAX_PENDING && !table.contains_key(id) {
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(id, _)| id.clone())
            {
                table.remove(&oldest);
            }
        }
        let (outcome, _) = watch::channel(None);
        table.insert(
            id.to_string(),
            Entry {
                login,
                created: Instant::now(),
                outcome,
            },
        );
    }

    /// The login waiting under `key`: a registration id, or the node key it registers.
    pub fn find(&self, key: &str) -> Option<(String, PendingLogin)> {
        let mut table = self.table();
        self.expire(&mut table);
        if let Some(entry) = table.get(key) {
            return Some((key.to_string(), entry.login.clone()));
        }
        let node_key = NodeKey::parse(key, false).ok()?;
        table
            .iter()
            .find(|(_, e)| e.login.node_key == node_key)
            .map(|(id, e)| (id.clone(), e.login.clone()))
    }

    /// Subscribes to the outcome of `id` (`None` if there is no such login).
    pub fn watch(&self, id: &str) -> Option<watch::Receiver<Option<Outcome>>> {
        let mut table = self.table();
        self.expire(&mut table);
        table.get(id).map(|e| e.outcome.subscribe())
    }

    /// Ends the login `id` with `outcome`, waking its follow-up request.
    pub fn finish(&self, id: &str, outcome: Outcome) {
        if let Some(entry) = self.table().remove(id) {
            let _ = entry.outcome.send(Some(outcome));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(n: u8) -> PendingLogin {
        PendingLogin {
            machine_key: MachineKey([n; 32]),
            node_key: NodeKey([n; 32]),
            hostinfo: NodeHostinfo::default(),
            ephemeral: false,
            requested_expiry: None,
        }
    }

    #[test]
    fn the_same_client_keeps_its_id_and_the_table_is_bounded() {
        let pending = PendingLogins::new(Duration::from_secs(60));
        let id = pending.start(login(1));
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(pending.start(login(1)), id);
        assert_eq!(pending.find(&id).map(|(i, _)| i), Some(id.clone()));
        let by_node_key = pending.find(&NodeKey([1; 32]).to_string());
        assert_eq!(by_node_key.map(|(i, _)| i), Some(id.clone()));
        for n in 0..(MAX_PENDING as u32 + 5) {
            let mut l = login(2);
            l.node_key = NodeKey([(n % 251) as u8; 32]);
            l.machine_key = MachineKey([(n / 251) as u8 + 10; 32]);
            pending.start(l);
        }
        assert!(pending.table().len() <= MAX_PENDING);
    }

    #[test]
    fn logins_expire_and_finishing_wakes_the_waiter() {
        let pending = PendingLogins::new(Duration::from_millis(0));
        let id = pending.start(login(1));
        assert!(pending.find(&id).is_none(), "expired immediately");
        let pending = PendingLogins::new(Duration::from_secs(60));
        let id = pending.start(login(1));
        let waiter = pending.watch(&id).unwrap();
        pending.finish(&id, Outcome::Registered(NodeId(7)));
        assert_eq!(*waiter.borrow(), Some(Outcome::Registered(NodeId(7))));
        assert!(pending.find(&id).is_none());
    }
}
