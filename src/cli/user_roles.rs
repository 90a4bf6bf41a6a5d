//! `headscale users role` and `headscale users roles` (ours): give a user a role (naming a new
//! Owner transfers ownership) and list every user's role, through `/api/v1/user/{id}/role`
//! and `/api/v1/user/roles`. Machine formats print the API's answer.

use super::output::{self, text, Column, Format};
use super::transport::Transport;
use super::{at_query, items, query, user_id};
use crate::cli::args::AtArg;
use axum::http::Method;
use serde_json::{json, Value};

const ROLE_COLUMNS: &[Column] = &[
    Column {
        header: "ID",
        cell: |v| text(&v["user"], "id"),
    },
    Column {
        header: "Name",
        cell: |v| text(&v["user"], "name"),
    },
    Column {
        header: "Email",
        cell: |v| text(&v["user"], "email"),
    },
    Column {
        header: "Role",
        cell: |v| text(v, "role"),
    },
];

/// `users role --name alice --role admin`.
pub async fn set(
    api: &Transport,
    format: Format,
    id: Option<u64>,
    name: Option<&str>,
    role: &str,
) -> anyhow::Result<()> {
    let id = user_id(api, id, name).await?;
    let value = api
        .call(
            Method::POST,
            &format!("/api/v1/user/{id}/role"),
            Some(json!({ "role": role })),
        )
        .await?;
    if format != Format::Human {
        return output::print_machine(format, &value);
    }
    for changed in items(&value, "changed") {
        println!(
            "{}",
            output::escape(&format!(
                "User {} ({}) is now {}",
                text(&changed["user"], "name"),
                text(&changed["user"], "id"),
                text(&changed, "role")
            ))
        );
    }
    Ok(())
}

/// `users roles [--at ...]`.
pub async fn list(api: &Transport, format: Format, at: &AtArg) -> anyhow::Result<()> {
    let path = format!("/api/v1/user/roles{}", query(&[at_query(at)]));
    let value: Value = api.call(Method::GET, &path, None).await?;
    output::print_list(format, &items(&value, "roles"), ROLE_COLUMNS)
}
