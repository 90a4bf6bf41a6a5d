//! Captures in the layout headscale keeps them (`hscontrol/policy/v2/testdata/*_results/*.hujson`
//! in its Go module): the same capture tool and scenario ids as `../shared/compat/policy`, but
//! the raw netmap per node instead of our extracted view. Converted here into the shape
//! `check_case` reads, so both sets are judged by one comparison.

use serde_json::{json, Map, Value};

/// One `.hujson` capture as a case: `id`, `category`, `policy`, `accepted`, `error`,
/// `topology`, `tailnet_settings` and `expected` per node.
pub fn case(text: &str) -> Result<Value, String> {
    let capture = headscale::core::policy::hujson::parse(text)?;
    let input = &capture["input"];
    let accepted = input["api_response_code"].as_u64() == Some(200);
    let mut expected = Map::new();
    for (node, seen) in capture["captures"].as_object().into_iter().flatten() {
        let netmap = &seen["netmap"];
        if netmap.is_null() {
            continue;
        }
        let me = &netmap["SelfNode"];
        let peers: Vec<Value> = netmap["Peers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|peer| {
                json!({
                    "name": host_name(&peer["Name"]),
                    "Addresses": peer["Addresses"],
                    "AllowedIPs": peer["AllowedIPs"],
                    "PrimaryRoutes": peer["PrimaryRoutes"],
                    "Tags": peer["Tags"],
                    "CapMap": peer["CapMap"],
                })
            })
            .collect();
        expected.insert(
            node.clone(),
            json!({
                "packet_filter_rules": seen["packet_filter_rules"],
                "peers": peers,
                "self_addresses": me["Addresses"],
                "self_allowed_ips": me["AllowedIPs"],
                "self_cap_map": me["CapMap"],
                "self_tags": me["Tags"],
                "ssh_policy": netmap["SSHPolicy"],
            }),
        );
    }
    Ok(json!({
        "id": capture["test_id"],
        "category": capture["category"],
        "description": capture["description"],
        "policy": input["full_policy"],
        "accepted": accepted,
        "error": {"message": input["api_response_body"]["message"]},
        "topology": capture["topology"],
        "tailnet_settings": input["tailnet"],
        "expected": expected,
    }))
}

/// `kakuna.tail78f774.ts.net.` → `kakuna`: the capture's topology names nodes by host name.
fn host_name(name: &Value) -> String {
    name.as_str()
        .unwrap_or_default()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string()
}
