//! The policy document as written: Tailscale's field names, every field optional, unknown
//! fields refused (a typo such as `"srcs"` must not silently allow nothing). Meaning is
//! checked afterwards (`checked.rs`); this is only the shape.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub hosts: BTreeMap<String, String>,
    #[serde(default, rename = "tagOwners")]
    pub tag_owners: BTreeMap<String, Vec<String>>,
    /// `None` when absent: with neither `acls` nor `grants` everything is allowed.
    #[serde(default)]
    pub acls: Option<Vec<Acl>>,
    #[serde(default)]
    pub grants: Option<Vec<Grant>>,
    #[serde(default, rename = "autoApprovers")]
    pub auto_approvers: AutoApprovers,
    #[serde(default)]
    pub ssh: Option<Vec<Ssh>>,
    #[serde(default, rename = "nodeAttrs")]
    pub node_attrs: Vec<NodeAttr>,
    #[serde(default)]
    pub tests: Vec<AclTest>,
    #[serde(default, rename = "sshTests")]
    pub ssh_tests: Vec<SshTest>,
    #[serde(default, rename = "randomizeClientPort")]
    pub randomize_client_port: bool,
    /// Tailnet-wide `disable-ipv4`: every node is shown IPv6-only.
    #[serde(default, rename = "disableIPv4")]
    pub disable_ipv4: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub src: Vec<String>,
    #[serde(default)]
    pub dst: Vec<String>,
    #[serde(default)]
    pub proto: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    pub src: Vec<String>,
    #[serde(default)]
    pub dst: Vec<String>,
    #[serde(default)]
    pub ip: Vec<String>,
    #[serde(default)]
    pub app: BTreeMap<String, Vec<Value>>,
    #[serde(default)]
    pub via: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoApprovers {
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "exitNode")]
    pub exit_node: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub src: Vec<String>,
    #[serde(default)]
    pub dst: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default, rename = "checkPeriod")]
    pub check_period: Option<String>,
    /// `null` is accepted as empty, as Tailscale does.
    #[serde(default, rename = "acceptEnv")]
    pub accept_env: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAttr {
    #[serde(default)]
    pub target: Vec<String>,
    #[serde(default)]
    pub attr: Vec<String>,
    #[serde(default)]
    pub app: BTreeMap<String, Vec<Value>>,
    /// IPv4 ranges new nodes of the target are given addresses from.
    #[serde(default, rename = "ipPool")]
    pub ip_pool: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclTest {
    #[serde(default)]
    pub src: String,
    #[serde(default)]
    pub proto: String,
    #[serde(default)]
    pub accept: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshTest {
    #[serde(default)]
    pub src: String,
    #[serde(default)]
    pub dst: Vec<String>,
    #[serde(default)]
    pub accept: Vec<String>,
    #[serde(default)]
    pub check: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

/// Decodes the document, naming the path of the first bad field (`acls[2].srcs: unknown
/// field ...`).
pub fn decode(value: Value) -> Result<Document, String> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        if path == "." {
            error.inner().to_string()
        } else {
            format!("{path}: {}", error.inner())
        }
    })
}
