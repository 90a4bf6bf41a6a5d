//! The map-stream wire types: `MapRequest` in, `MapResponse` out, and what a response
//! carries (`Node`, `UserProfile`, `PeerChange`, `DNSConfig`, `FilterRule`). JSON names are
//! the client's. On output every field is omitted when it is "unchanged" (the client's delta
//! convention: absent means keep what you have), so a delta is exactly what changed.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `tailcfg.MapRequest`, the fields the server reads (serialized by our own client).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct MapRequest {
    #[serde(rename = "Version")]
    pub version: u32,
    #[serde(rename = "Compress")]
    pub compress: String,
    #[serde(rename = "KeepAlive")]
    pub keep_alive: bool,
    #[serde(rename = "NodeKey")]
    pub node_key: String,
    #[serde(rename = "DiscoKey")]
    pub disco_key: String,
    #[serde(rename = "Stream")]
    pub stream: bool,
    /// Kept as JSON: peers are shown the node's own Hostinfo (services, peerAPI ports, ...),
    /// and only a few fields of it are facts worth logging.
    #[serde(rename = "Hostinfo")]
    pub hostinfo: Option<serde_json::Value>,
    #[serde(rename = "Endpoints")]
    pub endpoints: Option<Vec<String>>,
    #[serde(rename = "OmitPeers")]
    pub omit_peers: bool,
    #[serde(rename = "ReadOnly")]
    pub read_only: bool,
}

/// A peer rendered once and shared, byte for byte, by every message that carries it.
#[derive(Debug, Clone)]
pub struct SharedJson(pub Arc<RawValue>);

impl SharedJson {
    pub fn new<T: Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        let text = serde_json::to_string(value)?;
        let raw: Box<RawValue> = RawValue::from_string(text)?;
        Ok(SharedJson(Arc::from(raw)))
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl Serialize for SharedJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// `tailcfg.MapResponse`. `None` / empty means "unchanged" for every field.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MapResponse {
    #[serde(rename = "KeepAlive", skip_serializing_if = "is_false")]
    pub keep_alive: bool,
    #[serde(rename = "Node", skip_serializing_if = "Option::is_none")]
    pub node: Option<SharedJson>,
    #[serde(rename = "DERPMap", skip_serializing_if = "Option::is_none")]
    pub derp_map: Option<SharedJson>,
    /// Replaces the whole peer list; only meaningful when non-empty.
    #[serde(rename = "Peers", skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<SharedJson>,
    #[serde(rename = "PeersChanged", skip_serializing_if = "Vec::is_empty")]
    pub peers_changed: Vec<SharedJson>,
    #[serde(rename = "PeersRemoved", skip_serializing_if = "Vec::is_empty")]
    pub peers_removed: Vec<u64>,
    #[serde(rename = "PeersChangedPatch", skip_serializing_if = "Vec::is_empty")]
    pub peers_changed_patch: Vec<PeerChange>,
    #[serde(rename = "DNSConfig", skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<SharedJson>,
    #[serde(rename = "Domain", skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(rename = "CollectServices", skip_serializing_if = "Option::is_none")]
    pub collect_services: Option<bool>,
    /// Named packet filters; the server always uses the `"base"` chunk so that an empty
    /// filter (block everything) can be expressed.
    #[serde(rename = "PacketFilters", skip_serializing_if = "Option::is_none")]
    pub packet_filters: Option<BTreeMap<String, SharedJson>>,
    #[serde(rename = "UserProfiles", skip_serializing_if = "Vec::is_empty")]
    pub user_profiles: Vec<UserProfile>,
    #[serde(rename = "SSHPolicy", skip_serializing_if = "Option::is_none")]
    pub ssh_policy: Option<SharedJson>,
    #[serde(rename = "ControlTime", skip_serializing_if = "Option::is_none")]
    pub control_time: Option<String>,
    #[serde(rename = "Debug", skip_serializing_if = "Option::is_none")]
    pub debug: Option<Debug>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// `tailcfg.Debug`: only the switch that keeps clients from uploading logs to Tailscale.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Debug {
    /// Left out when false (Go's `omitempty`): the client only ever acts on `true`.
    #[serde(rename = "DisableLogTail", skip_serializing_if = "is_false")]
    pub disable_log_tail: bool,
}

/// `tailcfg.Node` as the server sends it (self and peers); our client decodes it too.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(rename = "StableID")]
    pub stable_id: String,
    /// MagicDNS FQDN with a trailing dot.
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "User")]
    pub user: u64,
    #[serde(rename = "Key")]
    pub key: String,
    /// Absent: never expires.
    #[serde(rename = "KeyExpiry", skip_serializing_if = "Option::is_none")]
    pub key_expiry: Option<String>,
    #[serde(rename = "Machine")]
    pub machine: String,
    /// Peers without a disco key are unreachable, so it is omitted only when unknown.
    #[serde(rename = "DiscoKey", skip_serializing_if = "String::is_empty")]
    pub disco_key: String,
    #[serde(rename = "Addresses")]
    pub addresses: Vec<String>,
    #[serde(rename = "AllowedIPs")]
    pub allowed_ips: Vec<String>,
    #[serde(rename = "Endpoints", skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Legacy home DERP (`127.3.3.40:<region>`), for clients before capability version 111.
    #[serde(rename = "DERP", skip_serializing_if = "String::is_empty")]
    pub legacy_derp: String,
    #[serde(rename = "HomeDERP", skip_serializing_if = "is_zero")]
    pub home_derp: u32,
    #[serde(rename = "Hostinfo")]
    pub hostinfo: serde_json::Value,
    #[serde(rename = "Created")]
    pub created: String,
    #[serde(rename = "Cap", skip_serializing_if = "is_zero")]
    pub cap: u32,
    #[serde(rename = "Tags", skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(rename = "PrimaryRoutes", skip_serializing_if = "Vec::is_empty")]
    pub primary_routes: Vec<String>,
    /// Only for offline nodes.
    #[serde(rename = "LastSeen", skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(rename = "Online", skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(rename = "MachineAuthorized", skip_serializing_if = "is_false")]
    pub machine_authorized: bool,
    #[serde(rename = "CapMap", skip_serializing_if = "BTreeMap::is_empty")]
    pub cap_map: BTreeMap<String, Vec<serde_json::Value>>,
    #[serde(rename = "Expired", skip_serializing_if = "is_false")]
    pub expired: bool,
}

/// `tailcfg.UserProfile`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct UserProfile {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(rename = "LoginName")]
    pub login_name: String,
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    #[serde(
        rename = "ProfilePicURL",
        skip_serializing_if = "String::is_empty",
        default
    )]
    pub profile_pic_url: String,
}

/// `tailcfg.PeerChange`: a patch of the fields that change without a new identity.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PeerChange {
    #[serde(rename = "NodeID")]
    pub node_id: u64,
    #[serde(rename = "DERPRegion", skip_serializing_if = "Option::is_none")]
    pub derp_region: Option<u32>,
    #[serde(rename = "Endpoints", skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    #[serde(rename = "DiscoKey", skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<String>,
    #[serde(rename = "Online", skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(rename = "LastSeen", skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

/// `tailcfg.DNSConfig`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DnsConfig {
    #[serde(rename = "Resolvers", skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<Resolver>,
    /// Split DNS; an empty list means "answered by MagicDNS (100.100.100.100)".
    #[serde(rename = "Routes", skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, Vec<Resolver>>,
    #[serde(rename = "FallbackResolvers", skip_serializing_if = "Vec::is_empty")]
    pub fallback_resolvers: Vec<Resolver>,
    #[serde(rename = "Domains", skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    #[serde(rename = "Proxied", skip_serializing_if = "is_false")]
    pub proxied: bool,
    #[serde(rename = "ExtraRecords", skip_serializing_if = "Vec::is_empty")]
    pub extra_records: Vec<DnsRecord>,
}

/// `dnstype.Resolver`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Resolver {
    #[serde(rename = "Addr")]
    pub addr: String,
}

/// `tailcfg.DNSRecord`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DnsRecord {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Type", skip_serializing_if = "String::is_empty")]
    pub record_type: String,
    #[serde(rename = "Value")]
    pub value: String,
}

/// `tailcfg.FilterRule`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FilterRule {
    #[serde(rename = "SrcIPs")]
    pub src_ips: Vec<String>,
    #[serde(rename = "DstPorts", skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<NetPortRange>,
    #[serde(rename = "IPProto", skip_serializing_if = "Vec::is_empty")]
    pub ip_proto: Vec<i32>,
    /// Capabilities granted to the sources on these destinations (app grants).
    #[serde(rename = "CapGrant", skip_serializing_if = "Vec::is_empty")]
    pub cap_grant: Vec<CapGrant>,
}

/// `tailcfg.CapGrant`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CapGrant {
    #[serde(rename = "Dsts")]
    pub dsts: Vec<String>,
    /// Capability → its values; `null` for the companion capabilities Tailscale adds.
    #[serde(rename = "CapMap")]
    pub cap_map: std::collections::BTreeMap<String, serde_json::Value>,
}

/// `tailcfg.NetPortRange`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct NetPortRange {
    #[serde(rename = "IP")]
    pub ip: String,
    #[serde(rename = "Ports")]
    pub ports: PortRange,
}

/// `tailcfg.PortRange`, inclusive.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct PortRange {
    #[serde(rename = "First")]
    pub first: u16,
    #[serde(rename = "Last")]
    pub last: u16,
}

impl FilterRule {
    /// Everyone may reach everything: the filter until a policy says otherwise.
    pub fn allow_all() -> Vec<FilterRule> {
        vec![FilterRule {
            src_ips: vec!["*".into()],
            dst_ports: vec![NetPortRange {
                ip: "*".into(),
                ports: PortRange {
                    first: 0,
                    last: 65535,
                },
            }],
            ip_proto: Vec::new(),
            cap_grant: Vec::new(),
        }]
    }
}
