//! User roles, as Tailscale has them: one role per user, `Member` unless an admin gave
//! another (`UserRoleChanged`). At most one user is the `Owner`. Roles are what the policy's
//! role autogroups (`autogroup:admin`, `autogroup:owner`, ...) name; this server grants no
//! admin-console permissions by them (its admins are whoever reaches the socket or holds an
//! API key).

use serde::{Deserialize, Serialize};

/// A user's role. The serialised order is part of the event schema: new roles go at the end.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The tailnet's owner: one user at most; also counts as an Admin.
    Owner,
    Admin,
    NetworkAdmin,
    ItAdmin,
    BillingAdmin,
    Auditor,
    /// Every user's role until an admin gives another.
    #[default]
    Member,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Owner,
        Role::Admin,
        Role::NetworkAdmin,
        Role::ItAdmin,
        Role::BillingAdmin,
        Role::Auditor,
        Role::Member,
    ];

    /// The role's name as the CLI, the API and the policy's autogroups spell it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::NetworkAdmin => "network-admin",
            Role::ItAdmin => "it-admin",
            Role::BillingAdmin => "billing-admin",
            Role::Auditor => "auditor",
            Role::Member => "member",
        }
    }

    /// A role by name (`admin`, `network-admin`, ...; case-insensitive).
    pub fn parse(text: &str) -> Option<Role> {
        let text = text.trim();
        Role::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(text))
    }

    /// Whether a user with this role is one of `group`'s: the Owner is also an Admin (Tailscale
    /// gives the Owner's devices `is-admin` too, and `autogroup:admin` targets them).
    pub fn is_in(self, group: Role) -> bool {
        self == group || (self == Role::Owner && group == Role::Admin)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.name()), Some(role));
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::json!(role.name())
            );
        }
        assert_eq!(Role::parse(" Network-Admin "), Some(Role::NetworkAdmin));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn the_owner_is_also_an_admin() {
        assert!(Role::Owner.is_in(Role::Admin));
        assert!(Role::Owner.is_in(Role::Owner));
        assert!(!Role::Admin.is_in(Role::Owner));
        assert!(!Role::Owner.is_in(Role::NetworkAdmin));
    }
}
