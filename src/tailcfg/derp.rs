//! `tailcfg.DERPMap` and its parts: the relays a client may use, with the client's exact JSON
//! names. Region keys are region ids written as decimal strings (`"900"`). Zero-valued
//! optional fields are left out, as the Go client does.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn is_zero_i32(value: &i32) -> bool {
    *value == 0
}

fn is_zero_f64(value: &f64) -> bool {
    *value == 0.0
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// `tailcfg.DERPMap`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DerpMap {
    /// Keyed by `RegionID`; serde writes the `u32` keys as JSON strings.
    #[serde(rename = "Regions")]
    pub regions: BTreeMap<u32, DerpRegion>,
    /// Do not merge with Tailscale's default regions (lower-case name on the wire).
    #[serde(rename = "omitDefaultRegions", skip_serializing_if = "is_false")]
    pub omit_default_regions: bool,
    #[serde(rename = "HomeParams", skip_serializing_if = "Option::is_none")]
    pub home_params: Option<DerpHomeParams>,
}

/// `tailcfg.DERPHomeParams`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DerpHomeParams {
    /// Multipliers of a region's measured latency when choosing a home (region id → score).
    #[serde(rename = "RegionScore", skip_serializing_if = "BTreeMap::is_empty")]
    pub region_score: BTreeMap<u32, f64>,
}

/// `tailcfg.DERPRegion`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DerpRegion {
    #[serde(rename = "RegionID")]
    pub region_id: u32,
    #[serde(rename = "RegionCode")]
    pub region_code: String,
    #[serde(rename = "RegionName")]
    pub region_name: String,
    #[serde(rename = "Latitude", skip_serializing_if = "is_zero_f64")]
    pub latitude: f64,
    #[serde(rename = "Longitude", skip_serializing_if = "is_zero_f64")]
    pub longitude: f64,
    /// Deprecated in the client, still on the wire.
    #[serde(rename = "Avoid", skip_serializing_if = "is_false")]
    pub avoid: bool,
    #[serde(rename = "NoMeasureNoHome", skip_serializing_if = "is_false")]
    pub no_measure_no_home: bool,
    /// In priority order.
    #[serde(rename = "Nodes")]
    pub nodes: Vec<DerpNode>,
}

/// `tailcfg.DERPNode`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DerpNode {
    /// Unique across the map, e.g. `"900a"`.
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "RegionID")]
    pub region_id: u32,
    /// Used for SNI and the `Host` header.
    #[serde(rename = "HostName")]
    pub host_name: String,
    /// `sha256-raw:<hex>` pins a self-signed certificate.
    #[serde(rename = "CertName", skip_serializing_if = "String::is_empty")]
    pub cert_name: String,
    /// An IPv4 address, empty (use DNS) or `"none"` (no IPv4).
    #[serde(rename = "IPv4", skip_serializing_if = "String::is_empty")]
    pub ipv4: String,
    /// An IPv6 address, empty (use DNS) or `"none"` (no IPv6).
    #[serde(rename = "IPv6", skip_serializing_if = "String::is_empty")]
    pub ipv6: String,
    /// 0 means 3478, -1 turns STUN off.
    #[serde(rename = "STUNPort", skip_serializing_if = "is_zero_i32")]
    pub stun_port: i32,
    #[serde(rename = "STUNOnly", skip_serializing_if = "is_false")]
    pub stun_only: bool,
    /// 0 means 443.
    #[serde(rename = "DERPPort", skip_serializing_if = "is_zero_i32")]
    pub derp_port: i32,
    #[serde(rename = "InsecureForTests", skip_serializing_if = "is_false")]
    pub insecure_for_tests: bool,
    #[serde(rename = "STUNTestIP", skip_serializing_if = "String::is_empty")]
    pub stun_test_ip: String,
    #[serde(rename = "CanPort80", skip_serializing_if = "is_false")]
    pub can_port_80: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_and_omitted_zeroes() {
        let mut map = DerpMap {
            omit_default_regions: true,
            ..Default::default()
        };
        map.regions.insert(
            900,
            DerpRegion {
                region_id: 900,
                region_code: "test".into(),
                region_name: "Test".into(),
                nodes: vec![DerpNode {
                    name: "900a".into(),
                    region_id: 900,
                    host_name: "127.0.0.1".into(),
                    ipv4: "127.0.0.1".into(),
                    ipv6: "none".into(),
                    stun_port: 3478,
                    derp_port: 8443,
                    insecure_for_tests: true,
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        let json = serde_json::to_value(&map).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "Regions": {"900": {
                    "RegionID": 900, "RegionCode": "test", "RegionName": "Test",
                    "Nodes": [{
                        "Name": "900a", "RegionID": 900, "HostName": "127.0.0.1",
                        "IPv4": "127.0.0.1", "IPv6": "none", "STUNPort": 3478,
                        "DERPPort": 8443, "InsecureForTests": true
                    }]
                }},
                "omitDefaultRegions": true
            })
        );
        let back: DerpMap = serde_json::from_value(json).unwrap();
        assert_eq!(back, map);
    }
}
