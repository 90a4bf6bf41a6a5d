//! `headscale webhooks list|create|delete|deliveries|test` (ours): webhook endpoints and
//! their delivery, through `/api/v1/webhook`. `create` prints the signing secret once.

use super::output::{self, list, text, time, Column, Format};
use super::transport::Transport;
use anyhow::bail;
use axum::http::Method;
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// List endpoints with their cursor, lag behind the head and delivery health.
    #[command(visible_aliases = ["ls", "show"])]
    List,
    /// Add an endpoint; its signing secret is printed once.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        /// `http://` or `https://` URL that receives the POSTs.
        #[arg(long)]
        url: String,
        /// Event types, comma-separated (`nodeCreated,nodeDeleted`), or `*` for all.
        #[arg(short = 'e', long, value_delimiter = ',', required = true)]
        events: Vec<String>,
    },
    /// Delete a CLI/API-managed endpoint.
    #[command(visible_aliases = ["remove", "del", "rm"])]
    Delete {
        #[arg(short = 'i', long)]
        id: u64,
    },
    /// Recent delivery attempts to an endpoint (this server process only).
    Deliveries {
        /// The endpoint's id, or its name in the config file.
        #[arg(short = 'i', long)]
        id: String,
    },
    /// Send a signed `test` event to an endpoint now.
    Test {
        /// The endpoint's id, or its name in the config file.
        #[arg(short = 'i', long)]
        id: String,
    },
}

const WEBHOOK_COLUMNS: &[Column] = &[
    Column {
        header: "ID",
        cell: |v| text(v, "id"),
    },
    Column {
        header: "Source",
        cell: |v| text(v, "source"),
    },
    Column {
        header: "URL",
        cell: |v| text(v, "url"),
    },
    Column {
        header: "Events",
        cell: |v| list(v, "events"),
    },
    Column {
        header: "Cursor",
        cell: |v| text(v, "cursor"),
    },
    Column {
        header: "Head",
        cell: |v| text(v, "head"),
    },
    Column {
        header: "Lag",
        cell: |v| text(v, "lag"),
    },
    Column {
        header: "Last success",
        cell: |v| time(v, "lastSuccess"),
    },
    Column {
        header: "Failures",
        cell: |v| text(v, "consecutiveFailures"),
    },
    Column {
        header: "Last error",
        cell: |v| match text(v, "problem") {
            problem if !problem.is_empty() => problem,
            _ => text(v, "lastError"),
        },
    },
];

const ATTEMPT_COLUMNS: &[Column] = &[
    Column {
        header: "At",
        cell: |v| time(v, "at"),
    },
    Column {
        header: "Seqs",
        cell: |v| format!("{}-{}", text(v, "firstSeq"), text(v, "lastSeq")),
    },
    Column {
        header: "Events",
        cell: |v| text(v, "events"),
    },
    Column {
        header: "Status",
        cell: |v| text(v, "status"),
    },
    Column {
        header: "ms",
        cell: |v| text(v, "durationMs"),
    },
    Column {
        header: "Error",
        cell: |v| text(v, "error"),
    },
];

fn items(value: &Value, key: &str) -> Vec<Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Prints `message` (each line escaped) for humans, else the API's answer.
fn one(format: Format, value: &Value, message: &str) -> anyhow::Result<()> {
    if format == Format::Human {
        for line in message.lines() {
            println!("{}", output::escape(line));
        }
        Ok(())
    } else {
        output::print_machine(format, value)
    }
}

pub async fn run(api: &Transport, format: Format, command: &WebhooksCommand) -> anyhow::Result<()> {
    match command {
        WebhooksCommand::List => {
            let value = api.call(Method::GET, "/api/v1/webhook", None).await?;
            output::print_list(format, &items(&value, "webhooks"), WEBHOOK_COLUMNS)
        }
        WebhooksCommand::Create { url, events } => {
            let body = json!({ "url": url, "events": events });
            let value = api
                .call(Method::POST, "/api/v1/webhook", Some(body))
                .await?;
            let id = text(&value["webhook"], "id");
            let secret = text(&value, "secret");
            one(
                format,
                &value,
                &format!("Webhook {id} created; its signing secret (shown only now):\n{secret}"),
            )
        }
        WebhooksCommand::Delete { id } => {
            let value = api
                .call(Method::DELETE, &format!("/api/v1/webhook/{id}"), None)
                .await?;
            one(format, &value, &format!("Webhook {id} deleted"))
        }
        WebhooksCommand::Deliveries { id } => {
            let value = api
                .call(
                    Method::GET,
                    &format!("/api/v1/webhook/{}/deliveries", segment(id)?),
                    None,
                )
                .await?;
            output::print_list(format, &items(&value, "deliveries"), ATTEMPT_COLUMNS)
        }
        WebhooksCommand::Test { id } => {
            let value = api
                .call(
                    Method::POST,
                    &format!("/api/v1/webhook/{}/test", segment(id)?),
                    None,
                )
                .await?;
            let delivery = &value["delivery"];
            let ok = delivery["ok"].as_bool() == Some(true);
            let message = if ok {
                format!(
                    "Test event delivered to webhook {id} (HTTP {}, {} ms)",
                    text(delivery, "status"),
                    text(delivery, "durationMs")
                )
            } else {
                format!(
                    "Test event to webhook {id} failed: {}",
                    text(delivery, "error")
                )
            };
            one(format, &value, &message)?;
            if !ok {
                bail!("the test delivery failed");
            }
            Ok(())
        }
    }
}

/// An endpoint id or config name as a path segment (names are `[a-z0-9-]`).
fn segment(id: &str) -> anyhow::Result<&str> {
    let id = id.trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        bail!("invalid webhook id {id:?}: a number, or a configured name (a-z, 0-9, -)");
    }
    Ok(id)
}
