//! Views of the past built from the log: `nodes netmap --node N --at P` (what a node's client
//! was given at a point) and `state diff --from A --to B` (what changed between two points,
//! with the events responsible). Both are API calls, so they work against a daemon and
//! offline alike; this module only prints. Human output is escaped (`output::escape`): node
//! names, hostnames and tags come from clients.

use super::args::AtArg;
use super::output::{escape, escape_multiline, print_machine, render_table, Column, Format};
use super::transport::Transport;
use super::{at_query, query, urlencode};
use axum::http::Method;
use serde_json::Value;

/// `headscale nodes netmap --node N [--at P]`.
pub async fn netmap(api: &Transport, format: Format, node: &str, at: &AtArg) -> anyhow::Result<()> {
    let path = format!(
        "/api/v1/node/{}/netmap{}",
        urlencode(node.trim()),
        query(&[at_query(at)])
    );
    let value = api.call(Method::GET, &path, None).await?;
    match format {
        Format::Human => print!("{}", human_netmap(&value)),
        _ => print_machine(format, &value)?,
    }
    Ok(())
}

fn s(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().map(s).collect())
        .unwrap_or_default()
}

fn joined(value: &Value) -> String {
    let items = strings(value);
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

const PEER_COLUMNS: &[Column] = &[
    Column {
        header: "ID",
        cell: |v| s(&v["ID"]),
    },
    Column {
        header: "Name",
        cell: |v| s(&v["Name"]),
    },
    Column {
        header: "Addresses",
        cell: |v| joined(&v["Addresses"]),
    },
    Column {
        header: "Allowed IPs",
        cell: |v| joined(&v["AllowedIPs"]),
    },
    Column {
        header: "Tags",
        cell: |v| joined(&v["Tags"]),
    },
];

/// One packet-filter rule on one line: sources → destinations (protocols).
fn filter_line(rule: &Value) -> String {
    let sources = joined(&rule["SrcIPs"]);
    let mut destinations: Vec<String> = rule["DstPorts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|dst| {
            let (first, last) = (&dst["Ports"]["First"], &dst["Ports"]["Last"]);
            let ports = match (first.as_u64(), last.as_u64()) {
                (Some(0), Some(65535)) => "*".to_string(),
                (Some(a), Some(b)) if a == b => a.to_string(),
                (Some(a), Some(b)) => format!("{a}-{b}"),
                _ => "*".to_string(),
            };
            format!("{}:{ports}", s(&dst["IP"]))
        })
        .collect();
    for grant in rule["CapGrant"].as_array().into_iter().flatten() {
        let caps: Vec<String> = grant["CapMap"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        destinations.push(format!(
            "{} (caps {})",
            joined(&grant["Dsts"]),
            caps.join(", ")
        ));
    }
    let protocols = strings(&rule["IPProto"]);
    let protocols = if protocols.is_empty() {
        String::new()
    } else {
        format!(" (proto {})", protocols.join(","))
    };
    format!("{sources} -> {}{protocols}", destinations.join(", "))
}

/// One SSH rule on one line: principals → local users: action.
fn ssh_line(rule: &Value) -> String {
    let principals: Vec<String> = rule["principals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p.as_object() {
            Some(fields) => fields
                .iter()
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect::<Vec<_>>()
                .join(" "),
            None => s(p),
        })
        .collect();
    let users: Vec<String> = rule["sshUsers"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
        .unwrap_or_default();
    let action = &rule["action"];
    let verdict = if action["accept"] == Value::Bool(true) {
        "accept".to_string()
    } else if let Some(check) = action["holdAndDelegate"].as_str() {
        format!("check ({check})")
    } else {
        "reject".to_string()
    };
    format!(
        "{} -> users {}: {verdict}",
        principals.join(", "),
        users.join(", ")
    )
}

/// The readable summary of a `GET /api/v1/node/{id}/netmap` answer.
pub fn human_netmap(value: &Value) -> String {
    let map = &value["netmap"];
    let own = &map["Node"];
    let mut out = format!(
        "Netmap of node {} ({}) at seq {} ({})\n",
        s(&value["nodeId"]),
        escape(&s(&value["nodeName"])),
        s(&value["seq"]),
        s(&value["at"])
    );
    out.push_str(&format!("note: {}\n\n", s(&value["note"])));
    let mut status = Vec::new();
    if own["Expired"] == Value::Bool(true) {
        status.push("key expired");
    }
    if own["MachineAuthorized"] != Value::Bool(true) {
        status.push("awaiting approval");
    }
    out.push_str(&format!(
        "Self:    {}  addresses {}  allowed IPs {}{}\n",
        escape(&s(&own["Name"])),
        joined(&own["Addresses"]),
        joined(&own["AllowedIPs"]),
        if status.is_empty() {
            String::new()
        } else {
            format!("  ({}: sees only itself)", status.join(", "))
        }
    ));
    let caps: Vec<String> = own["CapMap"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "Caps:    {}\n",
        escape(&if caps.is_empty() {
            "-".into()
        } else {
            caps.join(", ")
        })
    ));
    let dns = &map["DNSConfig"];
    let resolvers = |key: &str| -> Vec<String> {
        dns[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| s(&r["Addr"]))
            .collect()
    };
    let mut dns_parts = vec![format!(
        "MagicDNS {}",
        if dns["Proxied"] == Value::Bool(true) {
            "on"
        } else {
            "off"
        }
    )];
    for (label, key) in [
        ("resolvers", "Resolvers"),
        ("fallback", "FallbackResolvers"),
    ] {
        let found = resolvers(key);
        if !found.is_empty() {
            dns_parts.push(format!("{label} {}", found.join(", ")));
        }
    }
    if !strings(&dns["Domains"]).is_empty() {
        dns_parts.push(format!("search {}", joined(&dns["Domains"])));
    }
    if let Some(routes) = dns["Routes"].as_object() {
        for (domain, servers) in routes {
            let servers: Vec<String> = servers
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| s(&r["Addr"]))
                .collect();
            dns_parts.push(format!("{domain} via {}", servers.join(", ")));
        }
    }
    out.push_str(&format!("DNS:     {}\n", escape(&dns_parts.join("; "))));

    let peers = map["Peers"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("\nPeers ({}):\n", peers.len()));
    if !peers.is_empty() {
        let rows: Vec<Vec<String>> = peers
            .iter()
            .map(|peer| PEER_COLUMNS.iter().map(|c| (c.cell)(peer)).collect())
            .collect();
        out.push_str(&render_table(PEER_COLUMNS, &rows));
    }
    let rules = map["PacketFilters"]["base"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    out.push_str(&format!("\nPacket filter ({} rules):\n", rules.len()));
    for rule in &rules {
        out.push_str(&format!("  {}\n", escape(&filter_line(rule))));
    }
    match map["SSHPolicy"]["rules"].as_array() {
        Some(rules) => {
            out.push_str(&format!("\nSSH policy ({} rules):\n", rules.len()));
            for rule in rules {
                out.push_str(&format!("  {}\n", escape(&ssh_line(rule))));
            }
        }
        None => out.push_str("\nSSH policy: none\n"),
    }
    escape_multiline(&out).into_owned()
}

/// `headscale state diff|show`.
pub async fn state(
    api: &Transport,
    format: Format,
    command: &super::args::StateCommand,
) -> anyhow::Result<()> {
    use super::args::StateCommand;
    match command {
        StateCommand::Diff { from, to } => {
            let mut parts = vec![format!("from={}", urlencode(from))];
            if let Some(to) = to {
                parts.push(format!("to={}", urlencode(to)));
            }
            let value = api
                .call(
                    Method::GET,
                    &format!("/api/v1/state/diff{}", query(&parts)),
                    None,
                )
                .await?;
            match format {
                Format::Human => print!("{}", human_diff(&value)),
                _ => print_machine(format, &value)?,
            }
        }
        StateCommand::Show { at } => {
            let value = api
                .call(
                    Method::GET,
                    &format!("/api/v1/state{}", query(&[at_query(at)])),
                    None,
                )
                .await?;
            print_machine(format, &value)?;
        }
    }
    Ok(())
}

/// A fact for humans: owners by name, lists in brackets, nothing as `-`.
fn fact(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) if text.is_empty() => "\"\"".into(),
        Value::String(text) => text.clone(),
        Value::Object(fields) if fields.contains_key("name") => s(&fields["name"]),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(fact).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

fn event_lines(change: &Value) -> String {
    change["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "      seq {} {} by {} at {}\n",
                s(&e["seq"]),
                s(&e["type"]),
                s(&e["actor"]),
                s(&e["at"])
            )
        })
        .collect()
}

/// One entity's line: `+`/`-` with its non-empty facts, `~` with `field: from -> to`.
fn change_line(change: &Value) -> String {
    let fields = change["fields"].as_array().cloned().unwrap_or_default();
    let (mark, facts): (&str, Vec<String>) = match change["change"].as_str() {
        Some("added") | Some("removed") => {
            let side = if change["change"] == "added" {
                "to"
            } else {
                "from"
            };
            let facts = fields
                .iter()
                .filter(|f| {
                    !matches!(&f[side], Value::Null | Value::Bool(false))
                        && f[side] != Value::Array(vec![])
                        && f[side] != ""
                })
                .map(|f| format!("{} {}", s(&f["field"]), fact(&f[side])))
                .collect();
            (if side == "to" { "+" } else { "-" }, facts)
        }
        _ => (
            "~",
            fields
                .iter()
                .map(|f| {
                    format!(
                        "{}: {} -> {}",
                        s(&f["field"]),
                        fact(&f["from"]),
                        fact(&f["to"])
                    )
                })
                .collect(),
        ),
    };
    format!(
        "  {mark} {} {}: {}\n{}",
        s(&change["id"]),
        s(&change["name"]),
        facts.join("; "),
        event_lines(change)
    )
}

/// The readable form of a `GET /api/v1/state/diff` answer: one section per kind of entity.
pub fn human_diff(value: &Value) -> String {
    let mut out = format!(
        "State diff: seq {} ({}) -> seq {} ({}), {} events\n",
        s(&value["from"]),
        s(&value["fromAt"]),
        s(&value["to"]),
        s(&value["toAt"]),
        s(&value["eventCount"])
    );
    if let Some(note) = value["note"].as_str() {
        out.push_str(&format!("note: {note}\n"));
    }
    let mut empty = true;
    for (title, key) in [
        ("Users", "users"),
        ("Pre-auth keys", "preAuthKeys"),
        ("API keys", "apiKeys"),
        ("Nodes", "nodes"),
    ] {
        let changes = value[key].as_array().cloned().unwrap_or_default();
        if changes.is_empty() {
            continue;
        }
        empty = false;
        out.push_str(&format!("\n{title}:\n"));
        for change in &changes {
            out.push_str(&change_line(change));
        }
    }
    if let Some(fields) = value["config"].as_array() {
        empty = false;
        out.push_str("\nConfig:\n");
        for f in fields {
            out.push_str(&format!(
                "  ~ {}: {} -> {}\n",
                s(&f["field"]),
                fact(&f["from"]),
                fact(&f["to"])
            ));
        }
    }
    if let Some(policy) = value.get("policy").filter(|p| !p.is_null()) {
        empty = false;
        out.push_str(&format!(
            "\nPolicy ({}):\n{}",
            s(&policy["change"]),
            event_lines(policy)
        ));
        for line in s(&policy["unified"]).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if empty {
        out.push_str("\nno differences\n");
    }
    escape_multiline(&out).into_owned()
}
