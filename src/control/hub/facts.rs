//! Recorded facts (hostname, OS, routes, tags, SSH keys): the newest facts each node wants
//! recorded wait in one "latest wins" slot per node, committed by one task at most at the
//! `limits::HOSTINFO_EVENT_*` rate, so a node that changes its Hostinfo on every request
//! adds a bounded number of events to the log (and holds one slot, not a task per request).

use super::budgets::{limiter, NodeLimiter, RequestLimits};
use crate::core::command::Command;
use crate::core::event::{Actor, NodeHostinfo};
use crate::core::ids::NodeId;
use crate::core::keys::MachineKey;
use crate::core::limits;
use crate::core::State;
use crate::engine::EngineHandle;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

pub(super) struct FactSlots {
    wanted: Mutex<HashMap<NodeId, (MachineKey, NodeHostinfo)>>,
    wake: Notify,
    limiter: NodeLimiter,
}

impl FactSlots {
    pub fn new() -> FactSlots {
        FactSlots {
            wanted: Mutex::default(),
            wake: Notify::new(),
            limiter: limiter(
                Duration::from_secs(limits::HOSTINFO_EVENT_PERIOD_SECS),
                limits::HOSTINFO_EVENT_BURST,
            ),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, (MachineKey, NodeHostinfo)>> {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces whatever `node` wanted recorded before, and wakes the recorder.
    pub fn want(&self, node: NodeId, machine: MachineKey, facts: NodeHostinfo) {
        self.slots().insert(node, (machine, facts));
        self.wake.notify_one();
    }

    /// The slots whose node may record now (and still wants something new), taken out.
    fn due(&self, state: &State) -> Vec<(NodeId, MachineKey, NodeHostinfo)> {
        let mut slots = self.slots();
        slots.retain(|id, (_, facts)| state.nodes.get(id).is_some_and(|n| n.hostinfo != *facts));
        let ready: Vec<NodeId> = slots
            .keys()
            .copied()
            .filter(|id| self.limiter.check_key(id).is_ok())
            .collect();
        ready
            .into_iter()
            .filter_map(|id| slots.remove(&id).map(|(m, f)| (id, m, f)))
            .collect()
    }
}

/// The task behind `FactSlots`: commits what is due, then waits for a new wish (or, while
/// some slot still waits for its node's next token, at most a second). Ends when `alive`
/// says the hub is gone. It also trims the request limiters' tables (their keys are
/// registered nodes, so they are bounded anyway; trimming forgets the idle ones).
pub(super) async fn record_facts(
    engine: EngineHandle,
    slots: Arc<FactSlots>,
    requests: Arc<RequestLimits>,
    alive: impl Fn() -> bool,
) {
    loop {
        let waiting = !slots.slots().is_empty();
        let pause = if waiting {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        };
        let _ = tokio::time::timeout(pause, slots.wake.notified()).await;
        if !alive() {
            return;
        }
        let due = slots.due(&engine.state());
        let commands = due.into_iter().map(|(id, machine, hostinfo)| {
            let engine = engine.clone();
            async move {
                let command = Command::UpdateHostinfo { id, hostinfo };
                // `execute` answers within the engine's command deadline (10 s).
                if let Err(error) = engine.execute(Actor::Machine(machine), command).await {
                    tracing::warn!(node = id.0, %error, "hostinfo not recorded");
                }
            }
        });
        // One batch: the engine commits them together.
        futures_util::future::join_all(commands).await;
        slots.limiter.retain_recent();
        requests.trim();
    }
}
