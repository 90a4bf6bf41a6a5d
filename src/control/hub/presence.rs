//! Volatile presence (online, endpoints, DERP home, last seen): what clients report on their
//! map requests, never logged. The table is written only by the hub; the API reads it.
//! Reports that change something are applied at most 2/s per node
//! (`limits::PRESENCE_UPDATE_PERIOD_MS`); the rest merge, newest values winning, into one
//! deferred report per node that a later tick applies.

use super::budgets::{limiter, NodeLimiter};
use crate::core::ids::NodeId;
use crate::core::keys::DiscoKey;
use crate::core::limits;
use crate::core::netmap::NodePresence;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Presence as the API reads it (`online`, `lastSeen`): written only by the hub.
pub type PresenceTable = Arc<RwLock<HashMap<NodeId, NodePresence>>>;

/// What a client reports about itself on a map request. `None` fields leave the stored value
/// alone (streaming requests are read-only for what they leave empty).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub endpoints: Option<Vec<String>>,
    pub disco_key: Option<DiscoKey>,
    pub home_derp: Option<u32>,
    pub capability_version: u32,
    pub hostinfo: Option<Arc<serde_json::Value>>,
}

impl Report {
    /// `newer` over `self`: what `newer` leaves out keeps this report's value.
    pub fn merged_with(self, newer: Report) -> Report {
        Report {
            endpoints: newer.endpoints.or(self.endpoints),
            disco_key: newer.disco_key.or(self.disco_key),
            home_derp: newer.home_derp.or(self.home_derp),
            capability_version: if newer.capability_version != 0 {
                newer.capability_version
            } else {
                self.capability_version
            },
            hostinfo: newer.hostinfo.or(self.hostinfo),
        }
    }

    pub fn apply_to(self, presence: &mut NodePresence) {
        if let Some(endpoints) = self.endpoints {
            presence.endpoints = endpoints;
        }
        if let Some(disco) = self.disco_key {
            presence.disco_key = Some(disco);
        }
        if let Some(home) = self.home_derp {
            presence.home_derp = home;
        }
        if self.capability_version != 0 {
            presence.capability_version = self.capability_version;
        }
        if let Some(hostinfo) = self.hostinfo {
            presence.hostinfo = Some(hostinfo);
        }
    }

    /// Whether applying this report to `current` would change what peers are shown.
    pub fn changes(&self, current: &NodePresence) -> bool {
        let mut after = current.clone();
        self.clone().apply_to(&mut after);
        after != *current
    }
}

/// The per-node budget for presence changes, and the reports waiting for it.
pub(super) struct ReportBudget {
    limiter: NodeLimiter,
    deferred: HashMap<NodeId, Report>,
}

impl ReportBudget {
    pub fn new() -> ReportBudget {
        ReportBudget {
            limiter: limiter(Duration::from_millis(limits::PRESENCE_UPDATE_PERIOD_MS), 1),
            deferred: HashMap::new(),
        }
    }

    /// `report` merged over what `node` had waiting (taken out).
    pub fn take_merged(&mut self, node: NodeId, report: Report) -> Report {
        match self.deferred.remove(&node) {
            Some(older) => older.merged_with(report),
            None => report,
        }
    }

    /// Whether `node` may change its presence now; if not, `report` waits (merged).
    pub fn admit(&mut self, node: NodeId, report: Report) -> Option<Report> {
        if self.limiter.check_key(&node).is_ok() {
            Some(report)
        } else {
            self.deferred.insert(node, report);
            None
        }
    }

    /// The waiting reports whose node's budget allows them now, taken out.
    pub fn ready(&mut self) -> Vec<(NodeId, Report)> {
        if self.deferred.is_empty() {
            return Vec::new();
        }
        let ready: Vec<NodeId> = self
            .deferred
            .keys()
            .copied()
            .filter(|node| self.limiter.check_key(node).is_ok())
            .collect();
        let out = ready
            .into_iter()
            .filter_map(|node| self.deferred.remove(&node).map(|r| (node, r)))
            .collect();
        self.limiter.retain_recent();
        out
    }
}
