//! The policy document as written: Tailscale's field names, every field optional, unknown
//! fields refused (a typo such as `"srcs"` must not silently allow nothing). Meaning is
//! checked afterwards (`checked.rs`); this is only the shape. Fields of Tailscale's schema
//! we do not implement are parsed (as [`Unsupported`]) so that `checked.rs` can refuse them
//! by name, saying why, rather than as unknown; legacy spellings (`users`, `ports`, `user`,
//! `allow`) are folded into the current ones here.

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
    #[serde(default, rename = "derpMap")]
    pub derp_map: Unsupported,
    #[serde(default, rename = "oneCGNATRoute")]
    pub one_cgnat_route: Unsupported,
    #[serde(default)]
    pub ipsets: Unsupported,
    #[serde(default)]
    pub postures: Unsupported,
    #[serde(default, rename = "defaultSrcPosture")]
    pub default_src_posture: Unsupported,
    #[serde(default, rename = "attrConfig")]
    pub attr_config: Unsupported,
}

/// A field of Tailscale's schema that we parse only to refuse by name (see `checked.rs`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Unsupported(pub Option<Value>);

impl Unsupported {
    /// Whether the field was written (`null` counts as absent, as for every other field).
    pub fn is_present(&self) -> bool {
        self.0.is_some()
    }
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
    /// Legacy name of `src`.
    #[serde(default)]
    pub users: Option<Vec<String>>,
    /// Legacy name of `dst`.
    #[serde(default)]
    pub ports: Option<Vec<String>>,
    #[serde(default, rename = "srcPosture")]
    pub src_posture: Unsupported,
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
    #[serde(default, rename = "srcPosture")]
    pub src_posture: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoApprovers {
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "exitNode")]
    pub exit_node: Vec<String>,
    #[serde(default)]
    pub services: Unsupported,
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
    /// `null` is accepted here and refused as missing (`users must be specified`).
    #[serde(default)]
    pub users: Option<Vec<String>>,
    #[serde(default, rename = "checkPeriod")]
    pub check_period: Option<String>,
    /// `null` is accepted as empty, as Tailscale does.
    #[serde(default, rename = "acceptEnv")]
    pub accept_env: Option<Vec<String>>,
    #[serde(default)]
    pub recorder: Unsupported,
    #[serde(default, rename = "enforceRecorder")]
    pub enforce_recorder: Unsupported,
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
    /// Legacy name of `src`.
    #[serde(default)]
    pub user: Option<String>,
    /// Legacy name of `accept`.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    #[serde(default, rename = "srcPostureAttrs")]
    pub src_posture_attrs: Unsupported,
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
/// field ...`), with legacy field names folded into the current ones.
pub fn decode(value: Value) -> Result<Document, String> {
    let mut doc: Document = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        if path == "." {
            error.inner().to_string()
        } else {
            format!("{path}: {}", error.inner())
        }
    })?;
    for (i, acl) in doc.acls.iter_mut().flatten().enumerate() {
        legacy(&mut acl.src, acl.users.take(), "src", "users")
            .map_err(|e| format!("acls[{i}]: {e}"))?;
        legacy(&mut acl.dst, acl.ports.take(), "dst", "ports")
            .map_err(|e| format!("acls[{i}]: {e}"))?;
    }
    for (i, test) in doc.tests.iter_mut().enumerate() {
        if let Some(user) = test.user.take() {
            if !test.src.is_empty() {
                return Err(format!(
                    "tests[{i}]: src and user (its legacy name) cannot both be given"
                ));
            }
            test.src = user;
        }
        legacy(&mut test.accept, test.allow.take(), "accept", "allow")
            .map_err(|e| format!("tests[{i}]: {e}"))?;
    }
    Ok(doc)
}

/// Moves a legacy field's value into its current field; both given is ambiguous.
fn legacy(
    current: &mut Vec<String>,
    old: Option<Vec<String>>,
    name: &str,
    old_name: &str,
) -> Result<(), String> {
    if let Some(old) = old {
        if !current.is_empty() {
            return Err(format!(
                "{name} and {old_name} (its legacy name) cannot both be given"
            ));
        }
        *current = old;
    }
    Ok(())
}
