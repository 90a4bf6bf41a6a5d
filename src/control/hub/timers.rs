//! The hub's clocks, sans I/O: when a disconnected node counts as offline (after a grace, so
//! a quick reconnect is invisible to peers), when an ephemeral node that stays away is
//! deleted, and when a node's key expiry passes (its peers must see `Expired` at once; the
//! expiry itself is already in the log). Time comes in as arguments, so the rules are
//! tested without waiting. With several instances, "connected" means a session here or on
//! another live instance (the hub passes that in), so a node that moved to another
//! instance is neither shown offline nor deleted as an inactive ephemeral node.

use crate::core::ids::NodeId;
use crate::core::time::Timestamp;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

pub(super) struct Timers {
    offline_grace: Duration,
    ephemeral_inactivity: Duration,
    going_offline: HashMap<NodeId, Instant>,
    /// Ephemeral nodes without a session, and when they are deleted.
    ephemeral_deadlines: HashMap<NodeId, Instant>,
    /// Every node's key expiry, soonest first.
    expiries: BTreeSet<(Timestamp, NodeId)>,
    expiry_of: HashMap<NodeId, Timestamp>,
}

/// What fell due at one tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Due {
    /// Disconnected past the grace: now offline.
    pub offline: Vec<NodeId>,
    /// Key expiry passed: re-render.
    pub expired: Vec<NodeId>,
    /// Ephemeral and away past the inactivity timeout: delete.
    pub ephemeral: Vec<NodeId>,
}

impl Timers {
    pub fn new(offline_grace: Duration, ephemeral_inactivity: Duration) -> Timers {
        Timers {
            offline_grace,
            ephemeral_inactivity,
            going_offline: HashMap::new(),
            ephemeral_deadlines: HashMap::new(),
            expiries: BTreeSet::new(),
            expiry_of: HashMap::new(),
        }
    }

    /// Brings the node's timers in line with the state: its key expiry, and the inactivity
    /// deadline of an ephemeral node that has no session (counted from `now`: from its
    /// disconnect, its registration, or the server's start).
    pub fn track(
        &mut self,
        id: NodeId,
        expiry: Option<Timestamp>,
        ephemeral_away: bool,
        now: Instant,
    ) {
        if self.expiry_of.get(&id).copied() != expiry {
            if let Some(old) = self.expiry_of.remove(&id) {
                self.expiries.remove(&(old, id));
            }
            if let Some(at) = expiry {
                self.expiry_of.insert(id, at);
                self.expiries.insert((at, id));
            }
        }
        if !ephemeral_away {
            self.ephemeral_deadlines.remove(&id);
        } else if !self.ephemeral_deadlines.contains_key(&id) {
            self.ephemeral_deadlines
                .insert(id, now + self.ephemeral_inactivity);
        }
    }

    /// The node opened a session: it is not going offline, nor away.
    pub fn connected(&mut self, id: NodeId) {
        self.going_offline.remove(&id);
        self.ephemeral_deadlines.remove(&id);
    }

    /// The node's session ended at `now`: offline after the grace.
    pub fn disconnected(&mut self, id: NodeId, now: Instant) {
        self.going_offline.insert(id, now + self.offline_grace);
    }

    /// Whether the node's session here ended and its offline grace is running.
    pub fn in_grace(&self, id: NodeId) -> bool {
        self.going_offline.contains_key(&id)
    }

    /// The node was deleted.
    pub fn forget(&mut self, id: NodeId) {
        self.going_offline.remove(&id);
        self.ephemeral_deadlines.remove(&id);
        if let Some(at) = self.expiry_of.remove(&id) {
            self.expiries.remove(&(at, id));
        }
    }

    /// What is due at `now` (monotonic, for the grace and inactivity) and `wall` (for key
    /// expiry), taken out. An ephemeral node `connected` again (a session here or on another
    /// live instance) is not deleted.
    pub fn due(
        &mut self,
        now: Instant,
        wall: Timestamp,
        connected: impl Fn(NodeId) -> bool,
    ) -> Due {
        let mut due = Due::default();
        self.going_offline.retain(|id, at| {
            let passed = *at <= now;
            if passed {
                due.offline.push(*id);
            }
            !passed
        });
        while let Some(&(at, id)) = self.expiries.first() {
            if at > wall {
                break;
            }
            // `expiry_of` keeps it: tracking the same expiry again does not re-arm it.
            self.expiries.pop_first();
            due.expired.push(id);
        }
        self.ephemeral_deadlines.retain(|id, at| {
            let passed = *at <= now && !connected(*id);
            if passed {
                due.ephemeral.push(*id);
            }
            !passed
        });
        due.offline.sort();
        due.ephemeral.sort();
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);
    const INACTIVITY: Duration = Duration::from_secs(30);

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(ms)
    }

    #[test]
    fn a_disconnected_node_goes_offline_after_the_grace_unless_it_reconnects() {
        let start = Instant::now();
        let mut timers = Timers::new(GRACE, INACTIVITY);
        timers.disconnected(NodeId(1), start);
        timers.disconnected(NodeId(2), start);
        timers.connected(NodeId(2));
        let none = |_| false;
        assert!(timers.in_grace(NodeId(1)));
        assert!(!timers.in_grace(NodeId(2)));
        assert_eq!(timers.due(start + GRACE / 2, at(0), none).offline, vec![]);
        assert_eq!(
            timers.due(start + GRACE, at(0), none).offline,
            vec![NodeId(1)]
        );
        assert_eq!(timers.due(start + GRACE * 2, at(0), none).offline, vec![]);
        assert!(!timers.in_grace(NodeId(1)));
    }

    #[test]
    fn a_key_expiry_falls_due_once_and_follows_changes() {
        let now = Instant::now();
        let mut timers = Timers::new(GRACE, INACTIVITY);
        timers.track(NodeId(1), Some(at(1_000)), false, now);
        timers.track(NodeId(2), Some(at(2_000)), false, now);
        // Node 2's expiry moves later.
        timers.track(NodeId(2), Some(at(5_000)), false, now);
        let none = |_| false;
        assert_eq!(timers.due(now, at(999), none).expired, vec![]);
        assert_eq!(timers.due(now, at(2_000), none).expired, vec![NodeId(1)]);
        timers.track(NodeId(1), Some(at(1_000)), false, now);
        assert_eq!(timers.due(now, at(3_000), none).expired, vec![]);
        assert_eq!(timers.due(now, at(5_000), none).expired, vec![NodeId(2)]);
        timers.track(NodeId(3), Some(at(6_000)), false, now);
        timers.forget(NodeId(3));
        assert_eq!(timers.due(now, at(9_000), none).expired, vec![]);
    }

    #[test]
    fn an_ephemeral_node_away_past_the_timeout_is_due_for_deletion() {
        let now = Instant::now();
        let mut timers = Timers::new(GRACE, INACTIVITY);
        timers.track(NodeId(1), None, true, now);
        timers.track(NodeId(2), None, true, now);
        timers.track(NodeId(3), None, true, now);
        // Node 2 came back; node 3 has a session the hub has not told us about yet.
        timers.track(NodeId(2), None, false, now);
        // Tracking again does not restart the countdown.
        timers.track(NodeId(1), None, true, now + INACTIVITY / 2);
        let session = |id: NodeId| id == NodeId(3);
        assert_eq!(
            timers.due(now + INACTIVITY / 2, at(0), session).ephemeral,
            vec![]
        );
        assert_eq!(
            timers.due(now + INACTIVITY, at(0), session).ephemeral,
            vec![NodeId(1)]
        );
        assert_eq!(
            timers.due(now + INACTIVITY * 3, at(0), session).ephemeral,
            vec![]
        );
    }
}
