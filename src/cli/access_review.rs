//! `headscale policy who-can-reach DEST` and `headscale policy what-can NODE`: the access
//! review of `GET /api/v1/policy/who-can-reach` / `what-can` (daemon or offline store),
//! as a table for humans (source, resolves to, ports, rule) and the answer itself with
//! `-o json|yaml`; `--since/--until` adds when access was gained or lost.

use super::args::PolicyCommand;
use super::output::{self, Column, Format};
use super::transport::Transport;
use super::{query, urlencode};
use axum::http::Method;
use clap::Args;
use serde_json::Value;

/// `--at`, or `--since`/`--until`: the point answered, or the range walked.
#[derive(Args, Debug, Clone, Default)]
pub struct ReviewPoints {
    /// The answer at a past point: a seq, an RFC 3339 time or a duration ago (2h, 3d).
    #[arg(long, value_name = "SEQ|TIME|AGO", conflicts_with_all = ["since", "until"])]
    pub at: Option<String>,
    /// List when access was gained or lost after this point (default: the first event).
    #[arg(long, value_name = "SEQ|TIME|AGO")]
    pub since: Option<String>,
    /// ... up to this point (default: now).
    #[arg(long, value_name = "SEQ|TIME|AGO")]
    pub until: Option<String>,
}

impl ReviewPoints {
    fn query(&self) -> Vec<String> {
        [
            ("at", &self.at),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_ref().map(|v| format!("{key}={}", urlencode(v))))
        .collect()
    }

    fn walks(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }
}

pub async fn run(api: &Transport, format: Format, command: &PolicyCommand) -> anyhow::Result<()> {
    let (path, mut parts, points, who) = match command {
        PolicyCommand::WhoCanReach { dest, points } => (
            "/api/v1/policy/who-can-reach",
            vec![format!("dest={}", urlencode(dest))],
            points,
            true,
        ),
        PolicyCommand::WhatCan { node, points } => (
            "/api/v1/policy/what-can",
            vec![format!("node={}", urlencode(node))],
            points,
            false,
        ),
        _ => anyhow::bail!("internal: not an access review command"),
    };
    let mut walk = points.query();
    // A walk without --since starts at the beginning of the log.
    if points.walks() && points.since.is_none() {
        walk.push("since=0".into());
    }
    parts.extend(walk);
    let value = api
        .call(Method::GET, &format!("{path}{}", query(&parts)), None)
        .await?;
    if format != Format::Human {
        return output::print_machine(format, &value);
    }
    print!("{}", human(&value, who));
    Ok(())
}

fn names(nodes: &Value) -> String {
    nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(node_name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `laptop (alice)`, `db (tag:db)`, with `expired` when its key has.
fn node_name(node: &Value) -> String {
    let owner = match node.get("user").and_then(Value::as_str) {
        Some(user) => user.to_string(),
        None => output::list(node, "tags"),
    };
    let expired = if node.get("expired").and_then(Value::as_bool) == Some(true) {
        ", expired"
    } else {
        ""
    };
    format!("{} ({owner}{expired})", output::text(node, "name"))
}

fn joined(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

fn allowed(entry: &Value) -> String {
    let ports = joined(entry, "ports");
    let caps = joined(entry, "capabilities");
    match (ports.is_empty(), caps.is_empty()) {
        (_, true) => ports,
        (true, false) => format!("caps {caps}"),
        (false, false) => format!("{ports} caps {caps}"),
    }
}

fn rule(entry: &Value) -> String {
    let rule = entry.get("rule").cloned().unwrap_or(Value::Null);
    let (name, text) = (output::text(&rule, "rule"), output::text(&rule, "text"));
    if name == text || text.is_empty() {
        name
    } else {
        format!("{name}: {text}")
    }
}

fn destination(entry: &Value) -> String {
    let node = node_name(entry.get("destination").unwrap_or(&Value::Null));
    match output::text(entry, "through").as_str() {
        "direct" => node,
        through => format!("{} via {node} ({through})", joined(entry, "addresses")),
    }
}

const WHO_COLUMNS: [Column; 5] = [
    Column {
        header: "Source",
        cell: |e| output::text(e, "source"),
    },
    Column {
        header: "Resolves to",
        cell: |e| names(e.get("resolvesTo").unwrap_or(&Value::Null)),
    },
    Column {
        header: "Reaches",
        cell: destination,
    },
    Column {
        header: "Ports",
        cell: allowed,
    },
    Column {
        header: "Rule",
        cell: rule,
    },
];

const WHAT_COLUMNS: [Column; 4] = [
    Column {
        header: "Destination",
        cell: destination,
    },
    Column {
        header: "Ports",
        cell: allowed,
    },
    Column {
        header: "Rule",
        cell: rule,
    },
    Column {
        header: "As",
        cell: |e| output::text(e, "source"),
    },
];

/// The table, the notes and, for a walk, one line per change.
fn human(value: &Value, who: bool) -> String {
    let mut out = format!(
        "{} at seq {} ({})\n",
        output::text(value, "question"),
        output::text(value, "seq"),
        output::text(value, "at")
    );
    let entries: Vec<Value> = value
        .get("entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let columns: &[Column] = if who { &WHO_COLUMNS } else { &WHAT_COLUMNS };
    if entries.is_empty() {
        out.push_str(if who {
            "nobody can reach it\n"
        } else {
            "it can reach nothing\n"
        });
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|item| columns.iter().map(|c| (c.cell)(item)).collect())
            .collect();
        out.push_str(&output::render_table(columns, &rows));
    }
    for note in value
        .get("notes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "note: {}\n",
            output::escape(note.as_str().unwrap_or_default())
        ));
    }
    if let Some(timeline) = value.get("timeline") {
        let changes: Vec<&Value> = timeline
            .get("changes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        out.push_str(&format!(
            "\nchanges after seq {} up to seq {} ({} events read, {} could change access):\n",
            output::text(timeline, "since"),
            output::text(timeline, "until"),
            timeline.get("events").and_then(Value::as_u64).unwrap_or(0),
            timeline
                .get("recomputed")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        ));
        if changes.is_empty() {
            out.push_str("none\n");
        }
        for change in changes {
            out.push_str(&format!(
                "{}\n",
                output::escape(&output::text(change, "line"))
            ));
        }
        let dropped = timeline.get("dropped").and_then(Value::as_u64).unwrap_or(0);
        if dropped > 0 {
            out.push_str(&format!(
                "… and {dropped} more changes (narrow --since/--until)\n"
            ));
        }
    }
    out
}
