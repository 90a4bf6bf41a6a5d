//! The projection of the node events: registration, re-authentication, key rotation,
//! hostinfo, names, owners, tags, approval, expiry, routes, deletion and imports.
//! `State::apply_event` routes each of these events here (its match stays exhaustive); every
//! arm keeps the derived index in step with the maps.

use super::{Node, State};
use crate::core::event::Event;
use crate::core::time::Timestamp;

impl State {
    /// Folds one of this aggregate's events in (`apply_event` routes only those here).
    pub(super) fn apply_nodes_event(&mut self, event: &Event, at: Timestamp) {
        match event {
            Event::NodeRegistered(reg) => {
                self.next_ids.node = self.next_ids.node.max(reg.id.0.saturating_add(1));
                self.remove_node(reg.id);
                self.insert_node(Node {
                    id: reg.id,
                    machine_key: reg.machine_key,
                    node_key: reg.node_key,
                    user: reg.user,
                    tags: reg.tags.clone(),
                    given_name: reg.given_name.clone(),
                    given_name_by_admin: false,
                    hostinfo: reg.hostinfo.clone(),
                    ipv4: reg.ipv4,
                    ipv6: reg.ipv6,
                    expiry: reg.expiry,
                    register_method: reg.register_method,
                    auth_key: reg.auth_key,
                    ephemeral: reg.ephemeral,
                    authorized: reg.authorized,
                    approved_routes: reg.approved_routes.clone(),
                    created_at: at,
                });
            }
            Event::NodeReauthenticated {
                id,
                node_key,
                expiry,
                auth_key,
                register_method,
            } => {
                if let Some(node) = self.nodes.get_mut(id) {
                    self.index.node_keys.remove(&(node.node_key, *id));
                    self.index.node_keys.insert((*node_key, *id));
                    node.node_key = *node_key;
                    node.expiry = *expiry;
                    node.auth_key = *auth_key;
                    node.register_method = *register_method;
                }
            }
            Event::NodeKeyRotated { id, node_key } => {
                if let Some(node) = self.nodes.get_mut(id) {
                    self.index.node_keys.remove(&(node.node_key, *id));
                    self.index.node_keys.insert((*node_key, *id));
                    node.node_key = *node_key;
                }
            }
            Event::NodeHostinfoChanged { id, hostinfo } => {
                if let Some(node) = self.nodes.get_mut(id) {
                    node.hostinfo = hostinfo.clone();
                }
            }
            Event::NodeRenamed {
                id,
                given_name,
                by_admin,
            } => {
                if let Some(node) = self.nodes.get_mut(id) {
                    self.index.remove_given_name(&node.given_name, *id);
                    self.index.add_given_name(given_name, *id);
                    node.given_name = given_name.clone();
                    node.given_name_by_admin |= *by_admin;
                }
            }
            Event::NodeMoved { id, user } => {
                if let Some(node) = self.nodes.get_mut(id) {
                    node.user = Some(*user);
                    node.tags.clear();
                }
            }
            Event::NodeTagsSet { id, tags } => {
                if let Some(node) = self.nodes.get_mut(id) {
                    node.tags = tags.clone();
                    if !tags.is_empty() {
                        // Tags are the node's identity: a tagged node has no owner, and its
                        // key does not expire unless an admin sets an expiry afterwards.
                        node.user = None;
                        node.expiry = None;
                    }
                }
            }
            Event::NodeApproved { id } => {
                if let Some(node) = self.nodes.get_mut(id) {
                    node.authorized = true;
                }
            }
            Event::NodeExpiryChanged { id, expiry } => {
                if let Some(node) = self.nodes.get_mut(id) {
                    node.expiry = *expiry;
                }
            }
            Event::NodeDeleted { id } => {
                self.remove_node(*id);
            }
            Event::RoutesApproved { id, routes } => {
                if let Some(node) = self.nodes.get_mut(id) {
                    node.approved_routes = routes.clone();
                }
            }
            // An empty policy (never written before it meant "clear") removes the policy.
            Event::NodeImported(node) => self.apply_node_imported(node),
            // Other events are not routed here (`State::apply_event`).
            _ => {}
        }
    }

    pub(super) fn apply_node_imported(&mut self, node: &crate::core::event::ImportedNode) {
        let reg = &node.registration;
        self.next_ids.node = self.next_ids.node.max(reg.id.0.saturating_add(1));
        self.remove_node(reg.id);
        self.insert_node(Node {
            id: reg.id,
            machine_key: reg.machine_key,
            node_key: reg.node_key,
            user: reg.user,
            tags: reg.tags.clone(),
            given_name: reg.given_name.clone(),
            given_name_by_admin: node.given_name_by_admin,
            hostinfo: reg.hostinfo.clone(),
            ipv4: reg.ipv4,
            ipv6: reg.ipv6,
            expiry: reg.expiry,
            register_method: reg.register_method,
            auth_key: reg.auth_key,
            ephemeral: reg.ephemeral,
            authorized: reg.authorized,
            approved_routes: reg.approved_routes.clone(),
            created_at: node.created_at,
        });
        if let Some(seen) = node.last_seen {
            self.extras.node_last_seen.insert(reg.id, seen);
        }
    }
}
