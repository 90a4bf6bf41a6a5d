//! `headscale events …`: the audit log read through the API (list, follow, show, verify,
//! export) and the offline repair of the embedded log (`salvage`).

use super::args::EventsCommand;
use super::output::{self, text, time, Column, Format};
use super::transport::Transport;
use super::{items, log_file, print_one, query, urlencode};
use crate::config::Config;
use anyhow::{anyhow, bail};
use axum::http::Method;
use serde_json::Value;

const EVENT_COLUMNS: &[Column] = &[
    Column {
        header: "Seq",
        cell: |v| text(v, "seq"),
    },
    Column {
        header: "Time",
        cell: |v| time(v, "at"),
    },
    Column {
        header: "Actor",
        cell: |v| text(v, "actor"),
    },
    Column {
        header: "Type",
        cell: |v| text(v, "type"),
    },
    Column {
        header: "Details",
        cell: |v| {
            let details = v.get("data").map(|d| d.to_string()).unwrap_or_default();
            if details.chars().count() > 100 {
                format!("{}…", details.chars().take(99).collect::<String>())
            } else {
                details
            }
        },
    },
];

/// `events list --follow`: one line per event as it arrives (a table row for humans, one
/// JSON object per line with `-o json`, a YAML document each with `-o yaml`).
async fn follow_events(api: &Transport, format: Format, path: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut header_printed = false;
    api.follow(path, |data| {
        let event: Value =
            serde_json::from_str(data).map_err(|e| anyhow!("the server sent a bad event: {e}"))?;
        let mut out = std::io::stdout().lock();
        match format {
            Format::Human => {
                let row = output::row(EVENT_COLUMNS, &event);
                if !header_printed {
                    let headers: Vec<&str> = EVENT_COLUMNS.iter().map(|c| c.header).collect();
                    writeln!(out, "{}", headers.join(" | "))?;
                    header_printed = true;
                }
                writeln!(out, "{}", row.join(" | "))?;
            }
            Format::Json | Format::JsonLine | Format::ApiJson => {
                writeln!(out, "{}", serde_json::to_string(&event)?)?
            }
            Format::Yaml => write!(out, "---\n{}", serde_yaml_ng::to_string(&event)?)?,
        }
        out.flush()?;
        Ok(())
    })
    .await
}

/// `events salvage [--write]` on the store named by the config.
pub(super) fn salvage(config: &Config, format: Format, write: bool) -> anyhow::Result<()> {
    if config.database.backend() == Some(crate::config::DatabaseKind::Postgres) {
        bail!(
            "events salvage repairs the embedded log file; it does not apply to database.type: \
             postgres (PostgreSQL keeps its own durability; check the log with `headscale \
             events verify`)"
        );
    }
    let store = &config.database.sled_path();
    let report = if write {
        crate::store::salvage::write(store)?
    } else {
        crate::store::salvage::inspect(store)?
    };
    let message = match (report.first_bad_seq, &report.reason) {
        (Some(seq), Some(reason)) if write => format!(
            "kept records 1..={} ({} bytes); cut {} bytes from record {seq} ({reason}), saved \
             to {}; the original log is {}; sled's snapshots and checkpoints were moved aside \
             and will be rebuilt",
            report.last_good_seq,
            report.kept_bytes,
            report.cut_bytes,
            report.cut_saved_to.as_deref().unwrap_or("-"),
            report.original_saved_to.as_deref().unwrap_or("-"),
        ),
        (Some(seq), Some(reason)) => format!(
            "would keep records 1..={} ({} bytes) and cut {} bytes from record {seq}: \
             {reason}\nstop the server and run `headscale events salvage --write` to do it",
            report.last_good_seq, report.kept_bytes, report.cut_bytes,
        ),
        _ => format!(
            "the event log is whole: {} records, {} bytes; nothing to cut",
            report.last_good_seq, report.file_bytes
        ),
    };
    print_one(format, &serde_json::to_value(&report)?, &message)
}

pub(super) async fn run(
    api: &Transport,
    format: Format,
    command: &EventsCommand,
) -> anyhow::Result<()> {
    match command {
        EventsCommand::Salvage { .. } | EventsCommand::Import { .. } => {
            bail!("this events command runs offline, on the store")
        }
        EventsCommand::Export { since, until, file } => {
            log_file::export(
                api,
                format,
                since.as_deref(),
                until.as_deref(),
                file.as_deref(),
            )
            .await
        }
        EventsCommand::List {
            since,
            until,
            kinds,
            node,
            user,
            actor,
            follow,
        } => {
            let mut parts = Vec::new();
            if let Some(since) = since {
                parts.push(format!("since={}", urlencode(since)));
            }
            if let Some(actor) = actor {
                parts.push(format!("actor={}", urlencode(actor)));
            }
            if let Some(until) = until {
                parts.push(format!("until={}", urlencode(until)));
            }
            if !kinds.is_empty() {
                parts.push(format!("type={}", urlencode(&kinds.join(","))));
            }
            if let Some(node) = node {
                parts.push(format!("node={node}"));
            }
            if let Some(user) = user {
                parts.push(format!("user={}", urlencode(user)));
            }
            if *follow {
                parts.push("follow=true".into());
                return follow_events(api, format, &format!("/api/v1/events{}", query(&parts)))
                    .await;
            }
            let value = api
                .call(
                    Method::GET,
                    &format!("/api/v1/events{}", query(&parts)),
                    None,
                )
                .await?;
            output::print_list(format, &items(&value, "events"), EVENT_COLUMNS)?;
            if value.get("truncated").and_then(Value::as_bool) == Some(true) {
                match value.get("nextSince").and_then(Value::as_str) {
                    Some(next) => {
                        eprintln!("note: the list was cut short; continue with --since {next}")
                    }
                    None => {
                        eprintln!("note: the list was cut short; continue with --since <last seq>")
                    }
                }
            }
            Ok(())
        }
        EventsCommand::Show { seq } => {
            let value = api
                .call(Method::GET, &format!("/api/v1/events/{seq}"), None)
                .await?;
            if format == Format::Human {
                println!("{}", output::human_json(&value)?);
                Ok(())
            } else {
                output::print_machine(format, &value)
            }
        }
        EventsCommand::Verify { .. } => {
            let value = api.call(Method::GET, "/api/v1/events/verify", None).await?;
            if value.get("ok").and_then(Value::as_bool) != Some(true) {
                bail!(
                    "the event log does not verify: {}",
                    output::escape(&text(&value, "error"))
                );
            }
            let signatures =
                if value.get("signaturesChecked").and_then(Value::as_bool) == Some(true) {
                    "signatures checked"
                } else {
                    "signatures NOT checked: the checkpoint key is not readable here"
                };
            // Each stored snapshot: `seq: status` (L11).
            let snapshots: Vec<String> = value
                .get("snapshots")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|s| format!("{}: {}", text(s, "seq"), output::escape(&text(s, "detail"))))
                .collect();
            let snapshots = match snapshots.is_empty() {
                true => "no snapshots".to_string(),
                false => format!("snapshots {}", snapshots.join(", ")),
            };
            let key = match value.get("checkpointKey").and_then(Value::as_str) {
                Some(key) => format!("; checkpoint key {key}"),
                None => String::new(),
            };
            let message = format!(
                "ok: {} events, head {}, {} checkpoint(s) verified ({signatures}); {snapshots}{key}",
                text(&value, "events"),
                text(&value, "headHash"),
                value
                    .get("checkpointsVerified")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            );
            print_one(format, &value, &message)
        }
    }
}
