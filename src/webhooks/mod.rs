//! Webhooks driven by the log (the imperative shell). Every endpoint — from the config's
//! `webhooks:` list or added with `headscale webhooks create` (recorded as `WebhookCreated`)
//! — has a durable cursor in the store (the last seq delivered and acknowledged) and a
//! worker task that reads the log after it in bounded batches, maps each record to webhook
//! events (`payload`, pure), signs the body (`sign`, pure) and POSTs it, retrying with
//! capped exponential backoff and jitter, and moves the cursor only after a 2xx: delivery is
//! at-least-once, each event carrying a stable `id`. Workers read the store, never the
//! writer: a slow or failing receiver only holds back its own cursor. Recent attempts are
//! kept per endpoint in a bounded ring (`webhooks deliveries`). Several instances on one
//! PostgreSQL log share the cursors; each endpoint is delivered by the one instance holding
//! its lease (`ha::lease`, an advisory lock), and another takes over when that one dies.

pub mod payload;
pub mod secret;
pub mod sign;
mod worker;

use crate::config::WebhookConfig;
use crate::core::state::State;
use crate::core::time::Timestamp;
use crate::engine::EngineHandle;
use crate::ha::pool::SharedPool;
use crate::store::EventStore;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use worker::{Attempt, DeliveryOptions};

/// Recent attempts kept per endpoint.
pub const MAX_RECENT_ATTEMPTS: usize = 100;

/// One endpoint as the workers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Keys its cursor and status: `config:<name>` or `api:<id>`.
    pub key: String,
    /// What `webhooks` commands call it: the config name, or the managed id.
    pub name: String,
    /// `config` or `api`.
    pub source: &'static str,
    pub url: String,
    pub kinds: Vec<String>,
    pub secret_path: PathBuf,
    /// Where delivery starts when it has no cursor yet: after this seq (a managed endpoint's
    /// creation), or at the log's head then (`None`: a newly configured endpoint).
    pub start_after: Option<u64>,
}

/// What `webhooks list` shows of an endpoint's delivery (volatile, this process only).
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The cursor as this process last knew it.
    pub cursor: Option<u64>,
    pub last_success: Option<Timestamp>,
    pub last_failure: Option<(Timestamp, String)>,
    pub consecutive_failures: u64,
    pub delivered_events: u64,
    pub failed_attempts: u64,
    /// A problem that stops delivery (e.g. an unreadable secret file).
    pub problem: Option<String>,
    pub recent: VecDeque<Attempt>,
}

/// Shared by the workers, the supervisor and the API.
pub struct Hub {
    pub data_dir: PathBuf,
    tailnet: String,
    configured: Vec<Endpoint>,
    status: Mutex<HashMap<String, Status>>,
    options: DeliveryOptions,
    client: worker::HttpClient,
}

impl Hub {
    pub fn new(
        data_dir: PathBuf,
        tailnet: String,
        configured: &[WebhookConfig],
        options: DeliveryOptions,
    ) -> Result<Arc<Hub>, String> {
        let configured = configured
            .iter()
            .map(|hook| Endpoint {
                key: format!("config:{}", hook.name),
                name: hook.name.clone(),
                source: "config",
                url: hook.url.trim().to_string(),
                kinds: hook.events.clone(),
                secret_path: hook.secret_path.clone(),
                start_after: None,
            })
            .collect();
        Ok(Arc::new(Hub {
            data_dir,
            tailnet,
            configured,
            status: Mutex::new(HashMap::new()),
            client: worker::HttpClient::new(options.request_timeout)?,
            options,
        }))
    }

    /// Every endpoint: the configured ones, then the managed ones in `state`.
    pub fn endpoints(&self, state: &State) -> Vec<Endpoint> {
        endpoints(&self.configured, &self.data_dir, state)
    }

    /// The named endpoint (a config name or a managed id).
    pub fn endpoint(&self, state: &State, name: &str) -> Option<Endpoint> {
        self.endpoints(state).into_iter().find(|e| e.name == name)
    }

    pub fn status(&self, key: &str) -> Status {
        self.lock().get(key).cloned().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Status>> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, key: &str, change: impl FnOnce(&mut Status)) {
        change(self.lock().entry(key.to_string()).or_default());
    }

    /// Sends one signed `test` event to `endpoint` now (no retries, no cursor).
    pub async fn send_test(&self, endpoint: &Endpoint, now: Timestamp) -> Attempt {
        worker::send_test(self, endpoint, now).await
    }
}

/// The hub for a server (or the CLI's offline view) with this config: secrets under the
/// data directory, the tailnet named by `dns.base_domain`.
pub fn hub_for(config: &crate::config::Config) -> Result<Arc<Hub>, String> {
    Hub::new(
        crate::server::data_dir(config),
        config.dns.base_domain.clone(),
        &config.webhooks,
        DeliveryOptions::default(),
    )
}

/// Endpoints from the config and the state (pure apart from building paths).
pub fn endpoints(
    configured: &[Endpoint],
    data_dir: &std::path::Path,
    state: &State,
) -> Vec<Endpoint> {
    let managed = state.webhooks.endpoints.values().map(|hook| Endpoint {
        key: format!("api:{}", hook.id),
        name: hook.id.to_string(),
        source: "api",
        url: hook.url.clone(),
        kinds: hook.kinds.clone(),
        secret_path: secret::managed_path(data_dir, hook.id),
        start_after: Some(hook.created_seq),
    });
    configured.iter().cloned().chain(managed).collect()
}

/// Starts the supervisor: one worker per endpoint, started and stopped as endpoints are
/// added and deleted (it follows the published state). Stops with the runtime. With
/// `leases` (several instances on one PostgreSQL log), a worker delivers only while it holds
/// its endpoint's lease, so one instance at a time delivers to an endpoint.
pub fn spawn(
    hub: Arc<Hub>,
    engine: EngineHandle,
    leases: Option<SharedPool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut states = engine.subscribe();
        let mut workers: BTreeMap<String, (Endpoint, tokio::task::JoinHandle<()>)> =
            BTreeMap::new();
        loop {
            let wanted = hub.endpoints(&engine.state());
            workers.retain(|key, (endpoint, task)| {
                let keep = wanted.iter().any(|w| w == endpoint);
                if !keep {
                    task.abort();
                    if !wanted.iter().any(|w| w.key == *key) {
                        hub.lock().remove(key);
                    }
                }
                keep
            });
            for endpoint in wanted {
                if workers.contains_key(&endpoint.key) {
                    continue;
                }
                let task = tokio::spawn(worker::run(
                    hub.clone(),
                    engine.store(),
                    engine.subscribe(),
                    endpoint.clone(),
                    leases.clone(),
                ));
                workers.insert(endpoint.key.clone(), (endpoint, task));
            }
            // Webhook changes come from the log; any publish may hold one.
            if states.changed().await.is_err() {
                break;
            }
        }
        for (_, (_, task)) in workers {
            task.abort();
        }
    })
}

/// The cursor of `endpoint` in `store`, as the API shows it (read off the runtime by the
/// caller).
pub fn cursor(store: &dyn EventStore, endpoint: &Endpoint) -> Option<u64> {
    store.webhook_cursor(&endpoint.key).ok().flatten()
}

/// How long to wait before retry number `failures` (1-based): exponential from
/// `options.initial_backoff`, capped at `options.max_backoff`, with up to 25% jitter
/// (`jitter` in [0, 1)).
pub fn backoff(options: &DeliveryOptions, failures: u64, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(20) as u32;
    let base = options
        .initial_backoff
        .saturating_mul(2u32.saturating_pow(exp))
        .min(options.max_backoff);
    base.mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0))
        .min(options.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::disk_store::DiskStore;
    use crate::store::memory::MemoryStore;

    /// Cursors start absent, move forward only, and survive a reopen.
    fn cursors_move_forward_only(store: &dyn EventStore) {
        assert_eq!(store.webhook_cursor("api:1").unwrap(), None);
        store.set_webhook_cursor("api:1", 7).unwrap();
        store.set_webhook_cursor("api:1", 5).unwrap();
        assert_eq!(store.webhook_cursor("api:1").unwrap(), Some(7));
        store.set_webhook_cursor("config:siem", 3).unwrap();
        assert_eq!(store.webhook_cursor("config:siem").unwrap(), Some(3));
        assert_eq!(store.webhook_cursor("api:1").unwrap(), Some(7));
    }

    #[test]
    fn the_memory_and_disk_stores_keep_cursors() {
        cursors_move_forward_only(&MemoryStore::new());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sled");
        {
            let store = DiskStore::open(&path, 1 << 20).unwrap();
            cursors_move_forward_only(&store);
        }
        let reopened = DiskStore::open(&path, 1 << 20).unwrap();
        assert_eq!(reopened.webhook_cursor("api:1").unwrap(), Some(7));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let options = DeliveryOptions::default();
        assert_eq!(backoff(&options, 1, 0.0), options.initial_backoff);
        assert_eq!(backoff(&options, 2, 0.0), options.initial_backoff * 2);
        assert_eq!(backoff(&options, 60, 0.9), options.max_backoff);
        assert!(backoff(&options, 1, 0.99) < options.initial_backoff * 2);
    }
}
