//! Volatile presence (online, endpoints, DERP home, last seen): what clients report on their
//! map requests, never logged. The table is written only by the hub; the API reads it.
//! Reports that change something are applied at most 2/s per node
//! (`limits::PRESENCE_UPDATE_PERIOD_MS`); the rest merge, newest values winning, into one
//! deferred report per node that a later tick applies.
//!
//! With several instances (`ha::presence`), the nodes other instances hold arrive as a
//! `RemoteView` and are merged in (`settle`), and what this instance holds goes out as
//! `LocalChanges`; the rest of the hub reads one table either way.

use super::budgets::{limiter, NodeLimiter};
use crate::core::ids::NodeId;
use crate::core::keys::DiscoKey;
use crate::core::limits;
use crate::core::netmap::NodePresence;
use crate::core::time::Timestamp;
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

/// What the other live instances hold (`ha::presence`): each node online on one of them, with
/// what its newest session there reports (`online` set, no `last_seen`, no primary routes:
/// every instance elects those itself).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteView {
    pub online: HashMap<NodeId, NodePresence>,
    /// Whether this instance deletes inactive ephemeral nodes: one live instance does (the
    /// first by name), so a node gone from every instance is deleted once, not once each.
    pub cleans_up: bool,
}

/// What this instance holds, changed since it last published: `Some` = a session here (or
/// its offline grace), with what peers see; `None` = not held here any more.
pub type LocalChanges = Vec<(NodeId, Option<NodePresence>)>;

/// A node without a session here: online with the remote values if another live instance
/// holds it; else unchanged during this instance's offline grace; else offline from `now`
/// (if it was online). The elected primary routes stay: they are this instance's election.
pub fn settle(
    current: &NodePresence,
    remote: Option<&NodePresence>,
    in_grace: bool,
    now: Timestamp,
) -> NodePresence {
    let mut out = current.clone();
    match remote {
        Some(remote) => {
            out.online = true;
            out.last_seen = None;
            out.endpoints = remote.endpoints.clone();
            out.disco_key = remote.disco_key;
            out.home_derp = remote.home_derp;
            out.capability_version = remote.capability_version;
            out.hostinfo = remote.hostinfo.clone();
        }
        None if in_grace => {}
        None => {
            if out.online {
                out.online = false;
                out.last_seen = Some(now);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(endpoint: &str) -> NodePresence {
        NodePresence {
            online: true,
            endpoints: vec![endpoint.to_string()],
            home_derp: 7,
            capability_version: 100,
            ..Default::default()
        }
    }

    #[test]
    fn a_node_online_elsewhere_takes_the_remote_values_but_keeps_our_election() {
        let route: ipnet::IpNet = "10.0.0.0/24".parse().unwrap();
        let current = NodePresence {
            online: false,
            last_seen: Some(Timestamp::from_unix_ms(5)),
            endpoints: vec!["1.1.1.1:1".into()],
            primary_routes: vec![route],
            ..Default::default()
        };
        let settled = settle(
            &current,
            Some(&remote("2.2.2.2:2")),
            false,
            Timestamp::from_unix_ms(9),
        );
        assert!(settled.online);
        assert_eq!(settled.last_seen, None);
        assert_eq!(settled.endpoints, vec!["2.2.2.2:2".to_string()]);
        assert_eq!(settled.home_derp, 7);
        assert_eq!(settled.primary_routes, vec![route]);
    }

    #[test]
    fn a_node_held_nowhere_goes_offline_after_the_grace_only() {
        let now = Timestamp::from_unix_ms(1_000);
        let online = remote("3.3.3.3:3");
        assert_eq!(settle(&online, None, true, now), online);
        let gone = settle(&online, None, false, now);
        assert!(!gone.online);
        assert_eq!(gone.last_seen, Some(now));
        assert_eq!(gone.endpoints, online.endpoints);
        // Already offline: its last seen stays.
        assert_eq!(
            settle(&gone, None, false, Timestamp::from_unix_ms(2_000)),
            gone
        );
    }
}
