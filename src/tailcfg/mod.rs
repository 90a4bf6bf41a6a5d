//! The Tailscale client's wire types, with its exact JSON names. Only what the server reads
//! or writes is modelled; unknown fields are ignored on input. These types never enter the
//! event log: `control/` converts them to domain types by hand.

pub mod derp;
mod map;

pub use map::*;

use serde::{Deserialize, Serialize};

/// `tailcfg.RegisterRequest` (serialized by our own client, `crate::client`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RegisterRequest {
    #[serde(rename = "Version")]
    pub version: u32,
    #[serde(rename = "NodeKey")]
    pub node_key: String,
    #[serde(rename = "OldNodeKey")]
    pub old_node_key: String,
    #[serde(rename = "Auth")]
    pub auth: Option<RegisterAuth>,
    /// Zero: no request; in the past: logout; in the future: a shorter expiry.
    #[serde(rename = "Expiry")]
    pub expiry: Option<String>,
    #[serde(rename = "Followup")]
    pub followup: String,
    #[serde(rename = "Hostinfo")]
    pub hostinfo: Option<Hostinfo>,
    #[serde(rename = "Ephemeral")]
    pub ephemeral: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RegisterAuth {
    #[serde(rename = "AuthKey")]
    pub auth_key: String,
}

/// `tailcfg.Hostinfo`, the fields the server uses.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Hostinfo {
    #[serde(rename = "IPNVersion")]
    pub ipn_version: String,
    #[serde(rename = "OS")]
    pub os: String,
    #[serde(rename = "OSVersion")]
    pub os_version: String,
    #[serde(rename = "Hostname")]
    pub hostname: String,
    #[serde(rename = "RoutableIPs")]
    pub routable_ips: Option<Vec<String>>,
    #[serde(rename = "RequestTags")]
    pub request_tags: Option<Vec<String>>,
    #[serde(rename = "sshHostKeys")]
    pub ssh_host_keys: Option<Vec<String>>,
}

/// `tailcfg.RegisterResponse` (decoded by our own client).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RegisterResponse {
    #[serde(rename = "User")]
    pub user: User,
    #[serde(rename = "Login")]
    pub login: Login,
    #[serde(rename = "NodeKeyExpired")]
    pub node_key_expired: bool,
    #[serde(rename = "MachineAuthorized")]
    pub machine_authorized: bool,
    #[serde(rename = "AuthURL")]
    pub auth_url: String,
    #[serde(rename = "Error", skip_serializing_if = "String::is_empty")]
    pub error: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    #[serde(rename = "ProfilePicURL")]
    pub profile_pic_url: String,
    /// RFC 3339; empty is sent as Go's zero time, because the client parses this field
    /// even in a refusal (an empty string fails the whole response).
    #[serde(rename = "Created", serialize_with = "go_time")]
    pub created: String,
}

/// Serializes an RFC 3339 text, or Go's zero `time.Time` when empty.
fn go_time<S: serde::Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(if text.is_empty() {
        "0001-01-01T00:00:00Z"
    } else {
        text
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Login {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(rename = "Provider")]
    pub provider: String,
    #[serde(rename = "LoginName")]
    pub login_name: String,
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    #[serde(rename = "ProfilePicURL")]
    pub profile_pic_url: String,
}
