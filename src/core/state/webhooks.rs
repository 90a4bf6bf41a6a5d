//! The projection of the webhook events: the CLI/API-managed endpoints (URL, event types,
//! when and at which seq each was added, so delivery starts after it). Endpoints from the
//! config file are not here: the config is their record. Left out of the readable state
//! while empty, so states without webhooks keep their golden JSON.

use super::State;
use crate::core::event::Event;
use crate::core::time::Timestamp;
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

/// One managed endpoint. Its secret is in `webhooks/<id>.secret` under the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: u64,
    pub url: String,
    pub kinds: Vec<String>,
    pub created_at: Timestamp,
    /// The seq of its `WebhookCreated`: it receives the events after it.
    pub created_seq: u64,
}

/// The managed endpoints and the next id (ids are never reused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhooks {
    pub endpoints: OrdMap<u64, Webhook>,
    pub next_id: u64,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            endpoints: OrdMap::new(),
            next_id: 1,
        }
    }
}

impl Webhooks {
    /// Never created one: left out of the readable state.
    pub fn is_empty(&self) -> bool {
        self == &Webhooks::default()
    }
}

impl State {
    /// Folds a webhook event in (`apply_event` routes only those here).
    pub(super) fn apply_webhooks_event(&mut self, event: &Event, seq: u64, at: Timestamp) {
        match event {
            Event::WebhookCreated { id, url, kinds } => {
                self.webhooks.next_id = self.webhooks.next_id.max(id.saturating_add(1));
                self.webhooks.endpoints.insert(
                    *id,
                    Webhook {
                        id: *id,
                        url: url.clone(),
                        kinds: kinds.clone(),
                        created_at: at,
                        created_seq: seq,
                    },
                );
            }
            Event::WebhookDeleted { id } => {
                self.webhooks.endpoints.remove(id);
            }
            _ => {}
        }
    }
}
