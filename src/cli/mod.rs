//! The admin CLI: parses arguments, reaches the API (socket or in-process), prints results.
//! Every failure ends as one readable line on stderr and a non-zero exit (see `main.rs`).

pub mod access_review;
pub mod args;
mod events;
pub mod go_shape;
pub mod history_views;
pub mod import;
pub mod log_file;
pub mod output;
pub mod prompt;
pub mod remote;
pub mod transport;
pub mod user_roles;
pub mod webhooks;

use crate::config::{self, Config};
use crate::core::Timestamp;
use anyhow::{anyhow, bail, Context as _};
use args::*;
use axum::http::Method;
use go_shape::Message;
use output::{
    list, print_shared, print_shared_list, text, time, user_name, yes_no, Column, Format,
};
use serde_json::{json, Value};
use std::path::Path;
use transport::Transport;

/// Loads the config the same way `serve` does.
/// A remote-mode CLI (`HEADSCALE_CLI_ADDRESS` set) needs no config file: without one, the
/// defaults and the environment are used.
pub fn load_config(flag: Option<&Path>) -> anyhow::Result<config::Loaded> {
    let path = config::resolve_path(flag);
    match config::load(&path, &config::process_env) {
        Err(config::ConfigError::NotFound { .. }) if remote_address_in_env() => {
            Ok(config::load_str("", &path, &config::process_env)?)
        }
        other => Ok(other?),
    }
}

/// Loads the config for a command that talks to a server, as headscale's CLI reads it: only
/// what a client needs must make sense (`unix_socket`, `cli.*`), so a headscale config —
/// `database.type: sqlite`, keys only a server uses — works unchanged. The commands that open
/// the store themselves (no daemon: offline reads, `events salvage`) validate it then.
pub fn load_client_config(flag: Option<&Path>) -> anyhow::Result<config::Loaded> {
    let path = config::resolve_path(flag);
    match config::load_client(&path, &config::process_env) {
        Err(config::ConfigError::NotFound { .. }) if remote_address_in_env() => Ok(
            config::load_str_unvalidated("", &path, &config::process_env)?,
        ),
        other => Ok(other?),
    }
}

fn remote_address_in_env() -> bool {
    std::env::var("HEADSCALE_CLI_ADDRESS").is_ok_and(|a| !a.trim().is_empty())
}

/// Turns `--expiration` (a duration such as 1h/90d, or an RFC 3339 time) into a time.
fn expiration(text: &str, now: Timestamp) -> anyhow::Result<String> {
    if let Some(at) = Timestamp::parse_rfc3339(text) {
        return Ok(at.to_rfc3339());
    }
    let duration = config::duration::parse(text).map_err(|e| {
        anyhow!("invalid expiration {text:?}: {e} (use e.g. 30m, 24h, 90d or an RFC 3339 time)")
    })?;
    Ok(now.plus(duration).to_rfc3339())
}

fn now() -> Timestamp {
    use crate::engine::Clock;
    crate::engine::SystemClock.now()
}

fn at_query(at: &AtArg) -> String {
    match &at.at {
        Some(at) => format!("at={}", urlencode(at)),
        None => String::new(),
    }
}

/// Percent-encodes a query value.
fn urlencode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn query(parts: &[String]) -> String {
    let parts: Vec<&str> = parts
        .iter()
        .map(String::as_str)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn items(value: &Value, key: &str) -> Vec<Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn field(value: &Value, key: &str) -> Value {
    value.get(key).cloned().unwrap_or(Value::Null)
}

const USER_COLUMNS: &[Column] = &[
    Column {
        header: "ID",
        cell: |v| text(v, "id"),
    },
    Column {
        header: "Name",
        cell: |v| text(v, "name"),
    },
    Column {
        header: "Display name",
        cell: |v| text(v, "displayName"),
    },
    Column {
        header: "Email",
        cell: |v| text(v, "email"),
    },
    Column {
        header: "Created",
        cell: |v| time(v, "createdAt"),
    },
];

const NODE_COLUMNS: &[Column] = &[
    Column {
        header: "ID",
        cell: |v| text(v, "id"),
    },
    Column {
        header: "Hostname",
        cell: |v| text(v, "name"),
    },
    Column {
        header: "Name",
        cell: |v| text(v, "givenName"),
    },
    Column {
        header: "User",
        cell: user_name,
    },
    Column {
        header: "Tags",
        cell: |v| list(v, "tags"),
    },
    Column {
        header: "IP addresses",
        cell: |v| list(v, "ipAddresses"),
    },
    Column {
        header: "Ephemeral",
        cell: |v| yes_no(v, "ephemeral"),
    },
    Column {
        header: "Authorized",
        cell: |v| yes_no(v, "authorized"),
    },
    Column {
        header: "Expiry",
        cell: |v| time(v, "expiry"),
    },
    Column {
        header: "Online",
        cell: |v| yes_no(v, "online"),
    },
    Column {
        header: "Expired",
        cell: |v| yes_no(v, "expired"),
    },
];

const PRE_AUTH_KEY_COLUMNS: &[Column] = &[
    Column {
        header: "ID",
        cell: |v| text(v, "id"),
    },
    Column {
        header: "Key",
        cell: |v| text(v, "key"),
    },
    Column {
        header: "User",
        cell: user_name,
    },
    Column {
        header: "Reusable",
        cell: |v| yes_no(v, "reusable"),
    },
    Column {
        header: "Ephemeral",
        cell: |v| yes_no(v, "ephemeral"),
    },
    Column {
        header: "Used",
        cell: |v| yes_no(v, "used"),
    },
    Column {
        header: "State",
        cell: |v| text(v, "state"),
    },
    Column {
        header: "Expiration",
        cell: |v| time(v, "expiration"),
    },
    Column {
        header: "Created",
        cell: |v| time(v, "createdAt"),
    },
    Column {
        header: "Tags",
        cell: |v| list(v, "aclTags"),
    },
];

const API_KEY_COLUMNS: &[Column] = &[
    Column {
        header: "ID",
        cell: |v| text(v, "id"),
    },
    Column {
        header: "Prefix",
        cell: |v| text(v, "prefix"),
    },
    Column {
        header: "Expiration",
        cell: |v| time(v, "expiration"),
    },
    Column {
        header: "Created",
        cell: |v| time(v, "createdAt"),
    },
];

const ROUTE_COLUMNS: &[Column] = &[
    Column {
        header: "Node",
        cell: |v| text(v, "nodeId"),
    },
    Column {
        header: "Name",
        cell: |v| text(v, "nodeName"),
    },
    Column {
        header: "Prefix",
        cell: |v| text(v, "prefix"),
    },
    Column {
        header: "Advertised",
        cell: |v| yes_no(v, "advertised"),
    },
    Column {
        header: "Approved",
        cell: |v| yes_no(v, "approved"),
    },
    Column {
        header: "Enabled",
        cell: |v| yes_no(v, "enabled"),
    },
];

/// Prints a single object: the wire shape, or `message` for humans.
fn print_one(format: Format, value: &Value, message: &str) -> anyhow::Result<()> {
    if format == Format::Human {
        println!("{}", output::escape(message));
        Ok(())
    } else {
        output::print_machine(format, value)
    }
}

/// Resolves `-i`/`-n` to a user id through the API.
async fn user_id(api: &Transport, id: Option<u64>, name: Option<&str>) -> anyhow::Result<u64> {
    match (id, name) {
        (Some(id), _) => Ok(id),
        (None, Some(name)) => {
            let found = api
                .call(
                    Method::GET,
                    &format!("/api/v1/user?name={}", urlencode(name)),
                    None,
                )
                .await?;
            let users = items(&found, "users");
            let user = users
                .first()
                .ok_or_else(|| anyhow!("user {name:?} not found"))?;
            text(user, "id")
                .parse()
                .context("the API returned a malformed user id")
        }
        (None, None) => bail!("give the user with -i/--identifier or -n/--name"),
    }
}

/// The `node` of an API answer and the line that says what happened to it.
fn node_message(value: &Value, verb: &str) -> (Value, String) {
    let node = field(value, "node");
    let message = format!("Node {} {verb}", text(&node, "givenName"));
    (node, message)
}

async fn auth(api: &Transport, format: Format, command: &AuthCommand) -> anyhow::Result<()> {
    match command {
        AuthCommand::Register { auth_id, user } => {
            let body = json!({ "authId": auth_id, "user": user });
            let value = api
                .call(Method::POST, "/api/v1/auth/register", Some(body))
                .await?;
            let (node, message) = node_message(&value, "registered");
            print_shared(format, Message::Node, &node, &message)
        }
        AuthCommand::Approve { auth_id } => {
            let body = json!({ "authId": auth_id });
            let value = api
                .call(Method::POST, "/api/v1/auth/approve", Some(body))
                .await?;
            print_shared(
                format,
                Message::Empty,
                &value,
                &format!("Login {auth_id} approved"),
            )
        }
        AuthCommand::Reject { auth_id } => {
            let body = json!({ "authId": auth_id });
            let value = api
                .call(Method::POST, "/api/v1/auth/reject", Some(body))
                .await?;
            print_shared(
                format,
                Message::Empty,
                &value,
                &format!("Login {auth_id} rejected"),
            )
        }
    }
}

/// Runs a command that talks to the API.
pub async fn run_api_command(cli: &Cli, config: &Config) -> anyhow::Result<()> {
    if let Command::Events(EventsCommand::Salvage { write }) = &cli.command {
        // Offline: the server refuses to start on a damaged log, so there is no API.
        config.validate()?;
        return events::salvage(config, cli.output, *write);
    }
    match &cli.command {
        // Offline, on the store: a log moved between stores never goes through a server.
        Command::Events(command @ EventsCommand::Import { .. }) => {
            if log_file::needs_no_config(command) {
                return log_file::run_without_config(command, cli.output);
            }
            config.validate()?;
            return log_file::import(config, cli.output, log_file::import_file(command)?);
        }
        Command::Events(command @ EventsCommand::Verify { file: Some(_), .. }) => {
            return log_file::run_without_config(command, cli.output);
        }
        _ => {}
    }
    if let Command::Import(command) = &cli.command {
        // Offline: writes the first batch of an empty log, with no server running.
        config.validate()?;
        return import::run(config, cli.output, command).await;
    }
    let api = Transport::connect(config).await?;
    let format = cli.output;
    match &cli.command {
        Command::Health => {
            let value = api.call(Method::GET, "/api/v1/health", None).await?;
            let ok = value.get("databaseConnectivity").and_then(Value::as_bool) == Some(true);
            let message = if ok { "healthy" } else { "unhealthy" };
            print_shared(format, Message::Health, &value, message)?;
            if !ok {
                bail!("the server reports it is unhealthy");
            }
        }
        Command::Users(command) => users(&api, format, command, cli.force).await?,
        Command::PreAuthKeys(command) => pre_auth_keys(&api, format, command, cli.force).await?,
        Command::ApiKeys(command) => api_keys(&api, format, command, cli.force).await?,
        Command::Nodes(command) => nodes(&api, format, command, cli.force).await?,
        Command::Routes(command) => routes(&api, format, command).await?,
        Command::Policy(command) => policy(&api, format, command).await?,
        Command::Events(command) => events::run(&api, format, command).await?,
        Command::Auth(command) => auth(&api, format, command).await?,
        Command::State(command) => history_views::state(&api, format, command).await?,
        Command::Webhooks(command) => webhooks::run(&api, format, command).await?,
        Command::Debug(DebugCommand::CreateNode {
            name,
            user,
            key,
            routes,
        }) => {
            let body = json!({ "user": user, "name": name, "key": key, "routes": routes });
            let value = api
                .call(Method::POST, "/api/v1/debug/node", Some(body))
                .await?;
            let node = field(&value, "node");
            print_shared(
                format,
                Message::Node,
                &node,
                &format!(
                    "Node {} created (id {})",
                    text(&node, "givenName"),
                    text(&node, "id")
                ),
            )?;
        }
        _ => unreachable!("local commands are handled in main"),
    }
    Ok(())
}

async fn users(
    api: &Transport,
    format: Format,
    command: &UsersCommand,
    force: bool,
) -> anyhow::Result<()> {
    match command {
        UsersCommand::Create {
            name,
            display_name,
            email,
            picture_url,
        } => {
            let body = json!({
                "name": name,
                "displayName": display_name.clone().unwrap_or_default(),
                "email": email.clone().unwrap_or_default(),
                "pictureUrl": picture_url.clone().unwrap_or_default(),
            });
            let value = api.call(Method::POST, "/api/v1/user", Some(body)).await?;
            let user = field(&value, "user");
            print_shared(
                format,
                Message::User,
                &user,
                &format!(
                    "User {} created (id {})",
                    text(&user, "name"),
                    text(&user, "id")
                ),
            )
        }
        UsersCommand::List {
            id,
            name,
            email,
            at,
        } => {
            let mut parts = vec![at_query(at)];
            if let Some(id) = id {
                parts.push(format!("id={id}"));
            }
            if let Some(name) = name {
                parts.push(format!("name={}", urlencode(name)));
            }
            if let Some(email) = email {
                parts.push(format!("email={}", urlencode(email)));
            }
            let value = api
                .call(Method::GET, &format!("/api/v1/user{}", query(&parts)), None)
                .await?;
            print_shared_list(format, Message::User, &items(&value, "users"), USER_COLUMNS)
        }
        UsersCommand::Rename { id, name, new_name } => {
            let id = user_id(api, *id, name.as_deref()).await?;
            let path = format!("/api/v1/user/{id}/rename/{}", urlencode(new_name));
            let value = api.call(Method::POST, &path, None).await?;
            let user = field(&value, "user");
            print_shared(
                format,
                Message::User,
                &user,
                &format!("User {id} renamed to {}", text(&user, "name")),
            )
        }
        UsersCommand::Destroy { id, name } => {
            let id = user_id(api, *id, name.as_deref()).await?;
            let who = name.clone().unwrap_or_else(|| id.to_string());
            prompt::confirm(
                force,
                &format!("Do you want to remove the user {who:?} ({id}) and their pre-auth keys?"),
            )?;
            let path = format!(
                "/api/v1/user/{id}{}",
                if force { "?force=true" } else { "" }
            );
            let value = api.call(Method::DELETE, &path, None).await?;
            print_shared(
                format,
                Message::Empty,
                &value,
                &format!("User {id} destroyed"),
            )
        }
        UsersCommand::Role { id, name, role } => {
            user_roles::set(api, format, *id, name.as_deref(), role).await
        }
        UsersCommand::Roles { at } => user_roles::list(api, format, at).await,
    }
}

async fn pre_auth_keys(
    api: &Transport,
    format: Format,
    command: &PreAuthKeysCommand,
    force: bool,
) -> anyhow::Result<()> {
    match command {
        PreAuthKeysCommand::Create {
            user,
            reusable,
            ephemeral,
            expiration: lifetime,
            tags,
            pre_approved,
        } => {
            let user = match user {
                Some(user) => Some(resolve_user(api, user).await?),
                None => None,
            };
            let body = json!({
                "user": user,
                "reusable": reusable,
                "ephemeral": ephemeral,
                "preApproved": pre_approved,
                "expiration": expiration(lifetime, now())?,
                "aclTags": tags,
            });
            let value = api
                .call(Method::POST, "/api/v1/preauthkey", Some(body))
                .await?;
            let key = field(&value, "preAuthKey");
            print_shared(format, Message::PreAuthKey, &key, &text(&key, "key"))
        }
        PreAuthKeysCommand::List { user, at } => {
            let mut parts = vec![at_query(at)];
            if let Some(user) = user {
                parts.push(format!("user={}", resolve_user(api, user).await?));
            }
            let value = api
                .call(
                    Method::GET,
                    &format!("/api/v1/preauthkey{}", query(&parts)),
                    None,
                )
                .await?;
            print_shared_list(
                format,
                Message::PreAuthKey,
                &items(&value, "preAuthKeys"),
                PRE_AUTH_KEY_COLUMNS,
            )
        }
        PreAuthKeysCommand::Expire { id } => {
            require_pre_auth_key(api, *id).await?;
            let value = api
                .call(
                    Method::POST,
                    "/api/v1/preauthkey/expire",
                    Some(json!({ "id": id.to_string() })),
                )
                .await?;
            print_shared(
                format,
                Message::Empty,
                &value,
                &format!("Pre-auth key {id} expired"),
            )
        }
        PreAuthKeysCommand::Delete { id } => {
            require_pre_auth_key(api, *id).await?;
            prompt::confirm(force, &format!("Do you want to delete pre-auth key {id}?"))?;
            let value = api
                .call(Method::DELETE, &format!("/api/v1/preauthkey?id={id}"), None)
                .await?;
            print_shared(
                format,
                Message::Empty,
                &value,
                &format!("Pre-auth key {id} deleted"),
            )
        }
    }
}

/// The API (like headscale's) answers expire/delete of an unknown pre-auth key with success;
/// the CLI says plainly that there is no such key.
async fn require_pre_auth_key(api: &Transport, id: u64) -> anyhow::Result<()> {
    let value = api.call(Method::GET, "/api/v1/preauthkey", None).await?;
    let wanted = id.to_string();
    if items(&value, "preAuthKeys")
        .iter()
        .any(|k| k["id"].as_str() == Some(wanted.as_str()))
    {
        Ok(())
    } else {
        bail!("pre-auth key {id} not found")
    }
}

/// The bare prefix of API key `id`, from the listing (`hskey-api-<prefix>-***`).
async fn api_key_prefix(api: &Transport, id: u64) -> anyhow::Result<String> {
    let value = api.call(Method::GET, "/api/v1/apikey", None).await?;
    let wanted = id.to_string();
    let key = items(&value, "apiKeys")
        .into_iter()
        .find(|k| text(k, "id") == wanted)
        .ok_or_else(|| anyhow!("API key {id} not found"))?;
    let listed = text(&key, "prefix");
    Ok(listed
        .strip_prefix("hskey-api-")
        .and_then(|p| p.strip_suffix("-***"))
        .unwrap_or(&listed)
        .to_string())
}

/// A user given by name or id, as the id string the API wants.
async fn resolve_user(api: &Transport, user: &str) -> anyhow::Result<String> {
    let value = api
        .call(
            Method::GET,
            &format!("/api/v1/user?name={}", urlencode(user)),
            None,
        )
        .await?;
    if let Some(found) = items(&value, "users").first() {
        return Ok(text(found, "id"));
    }
    if let Ok(id) = user.parse::<u64>() {
        let value = api
            .call(Method::GET, &format!("/api/v1/user?id={id}"), None)
            .await?;
        if !items(&value, "users").is_empty() {
            return Ok(id.to_string());
        }
    }
    bail!("user {user:?} not found")
}

async fn api_keys(
    api: &Transport,
    format: Format,
    command: &ApiKeysCommand,
    force: bool,
) -> anyhow::Result<()> {
    match command {
        ApiKeysCommand::Create {
            expiration: lifetime,
        } => {
            let body = json!({ "expiration": expiration(lifetime, now())? });
            let value = api.call(Method::POST, "/api/v1/apikey", Some(body)).await?;
            let key = text(&value, "apiKey");
            match format {
                // The Go CLI prints the key string itself.
                Format::Json | Format::JsonLine | Format::Yaml => {
                    output::print_go(format, &go_shape::GoValue::Str(key))
                }
                _ => print_one(format, &value, &key),
            }
        }
        ApiKeysCommand::List { at } => {
            let value = api
                .call(
                    Method::GET,
                    &format!("/api/v1/apikey{}", query(&[at_query(at)])),
                    None,
                )
                .await?;
            print_shared_list(
                format,
                Message::ApiKey,
                &items(&value, "apiKeys"),
                API_KEY_COLUMNS,
            )
        }
        ApiKeysCommand::Expire { prefix, id } => {
            if prefix.is_none() && id.is_none() {
                bail!("give the key with -p/--prefix or -i/--id");
            }
            let body = json!({ "prefix": prefix, "id": id.map(|i| i.to_string()) });
            let value = api
                .call(Method::POST, "/api/v1/apikey/expire", Some(body))
                .await?;
            print_shared(format, Message::Empty, &value, "API key expired")
        }
        ApiKeysCommand::Delete { prefix, id } => {
            let prefix = match (prefix, id) {
                (Some(prefix), _) => prefix.clone(),
                // headscale's gateway deletes by prefix only (DELETE /api/v1/apikey/{prefix}):
                // find the key's prefix first, so this works against headscale too.
                (None, Some(id)) => api_key_prefix(api, *id).await?,
                (None, None) => bail!("give the key with -p/--prefix or -i/--id"),
            };
            let path = format!("/api/v1/apikey/{}", urlencode(&prefix));
            prompt::confirm(force, "Do you want to delete this API key?")?;
            let value = api.call(Method::DELETE, &path, None).await?;
            print_shared(format, Message::Empty, &value, "API key deleted")
        }
    }
}

async fn nodes(
    api: &Transport,
    format: Format,
    command: &NodesCommand,
    force: bool,
) -> anyhow::Result<()> {
    match command {
        NodesCommand::List { user, at } => {
            let mut parts = vec![at_query(at)];
            if let Some(user) = user {
                parts.push(format!("user={}", urlencode(user)));
            }
            let value = api
                .call(Method::GET, &format!("/api/v1/node{}", query(&parts)), None)
                .await?;
            print_shared_list(format, Message::Node, &items(&value, "nodes"), NODE_COLUMNS)
        }
        NodesCommand::Register { user, key } => {
            let path = format!(
                "/api/v1/node/register?user={}&key={}",
                urlencode(user),
                urlencode(key)
            );
            let value = api.call(Method::POST, &path, None).await?;
            let (node, message) = node_message(&value, "registered");
            print_shared(format, Message::Node, &node, &message)
        }
        NodesCommand::Backfillips => {
            prompt::confirm(
                force,
                "Are you sure that you want to assign/remove IPs to/from nodes?",
            )?;
            let value = api
                .call(
                    Method::POST,
                    "/api/v1/node/backfillips?confirmed=true",
                    None,
                )
                .await?;
            let changes = items(&value, "changes");
            let message = if changes.is_empty() {
                "Every node already has an address of each configured family".to_string()
            } else {
                changes
                    .iter()
                    .map(|c| {
                        c.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| c.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            print_shared(format, Message::BackfillNodeIps, &value, &message)
        }
        NodesCommand::Delete { node } => {
            prompt::confirm(force, &format!("Do you want to remove node {}?", node.id))?;
            let value = api
                .call(Method::DELETE, &format!("/api/v1/node/{}", node.id), None)
                .await?;
            let message = format!("Node {} deleted", node.id);
            match format {
                // The Go CLI answers `{"Result": "Node deleted"}`.
                Format::Json | Format::JsonLine | Format::Yaml => {
                    output::print_go(format, &go_shape::result("Node deleted"))
                }
                _ => print_one(format, &value, &message),
            }
        }
        NodesCommand::Expire {
            node,
            expiry,
            disable,
        } => {
            let expiry = match expiry {
                Some(text) => Some(
                    Timestamp::parse_rfc3339(text)
                        .ok_or_else(|| {
                            anyhow!("invalid expiry {text:?}: expected an RFC 3339 time")
                        })?
                        .to_rfc3339(),
                ),
                None => None,
            };
            // Query parameters, as headscale's gateway maps ExpireNode (it has no body: a
            // body would be ignored there, and the node expired now).
            let mut parts = Vec::new();
            if let Some(expiry) = &expiry {
                parts.push(format!("expiry={}", urlencode(expiry)));
            }
            if *disable {
                parts.push("disableExpiry=true".to_string());
            }
            let value = api
                .call(
                    Method::POST,
                    &format!("/api/v1/node/{}/expire{}", node.id, query(&parts)),
                    None,
                )
                .await?;
            let (node, message) = node_message(
                &value,
                if *disable {
                    "will never expire"
                } else {
                    "expiry set"
                },
            );
            print_shared(format, Message::Node, &node, &message)
        }
        NodesCommand::Rename { node, new_name } => {
            let path = format!("/api/v1/node/{}/rename/{}", node.id, urlencode(new_name));
            let value = api.call(Method::POST, &path, None).await?;
            let (node, message) = node_message(&value, "renamed");
            print_shared(format, Message::Node, &node, &message)
        }
        NodesCommand::Move { node, user } => {
            let value = api
                .call(
                    Method::POST,
                    &format!("/api/v1/node/{}/user", node.id),
                    Some(json!({ "user": user })),
                )
                .await?;
            let (node, message) = node_message(&value, &format!("moved to user {user}"));
            print_one(format, &node, &message)
        }
        NodesCommand::Tag { node, tags } => {
            let value = api
                .call(
                    Method::POST,
                    &format!("/api/v1/node/{}/tags", node.id),
                    Some(json!({ "tags": tags })),
                )
                .await?;
            let (node, message) = node_message(&value, "tagged");
            print_shared(format, Message::Node, &node, &message)
        }
        NodesCommand::Approve { node } => {
            let value = api
                .call(
                    Method::POST,
                    &format!("/api/v1/node/{}/approve", node.id),
                    None,
                )
                .await?;
            let (node, message) = node_message(&value, "approved");
            print_one(format, &node, &message)
        }
        NodesCommand::Netmap { node, at } => history_views::netmap(api, format, node, at).await,
        NodesCommand::ListRoutes { id, at } => match format {
            Format::Json | Format::JsonLine | Format::Yaml => {
                node_routes_go(api, format, *id, at).await
            }
            _ => list_routes(api, format, *id, at).await,
        },
        NodesCommand::ApproveRoutes { node, routes } => {
            let value = api
                .call(
                    Method::POST,
                    &format!("/api/v1/node/{}/approve_routes", node.id),
                    Some(json!({ "routes": routes })),
                )
                .await?;
            let node = field(&value, "node");
            let message = format!(
                "Node {} approved routes: {}",
                text(&node, "givenName"),
                list(&node, "approvedRoutes")
            );
            print_shared(format, Message::Node, &node, &message)
        }
    }
}

/// `nodes list-routes -o json|json-line|yaml` as the Go CLI answers it: the nodes (whole)
/// that announce, have approved or serve a route; with `-i`, only that node if it exists
/// (headscale then falls back to all nodes, and so do we).
async fn node_routes_go(
    api: &Transport,
    format: Format,
    id: Option<u64>,
    at: &AtArg,
) -> anyhow::Result<()> {
    let value = api
        .call(
            Method::GET,
            &format!("/api/v1/node{}", query(&[at_query(at)])),
            None,
        )
        .await?;
    let mut nodes = items(&value, "nodes");
    if let Some(id) = id.filter(|id| *id != 0) {
        let wanted = id.to_string();
        if let Some(node) = nodes.iter().find(|n| text(n, "id") == wanted) {
            nodes = vec![node.clone()];
        }
    }
    let has_routes = |node: &Value| {
        ["subnetRoutes", "approvedRoutes", "availableRoutes"]
            .iter()
            .any(|key| {
                node.get(*key)
                    .and_then(Value::as_array)
                    .is_some_and(|r| !r.is_empty())
            })
    };
    nodes.retain(has_routes);
    output::print_go(format, &go_shape::messages(Message::Node, &nodes)?)
}

async fn list_routes(
    api: &Transport,
    format: Format,
    id: Option<u64>,
    at: &AtArg,
) -> anyhow::Result<()> {
    let mut parts = vec![at_query(at)];
    if let Some(id) = id {
        parts.push(format!("node={id}"));
    }
    let value = api
        .call(
            Method::GET,
            &format!("/api/v1/routes{}", query(&parts)),
            None,
        )
        .await?;
    output::print_list(format, &items(&value, "routes"), ROUTE_COLUMNS)
}

async fn routes(api: &Transport, format: Format, command: &RoutesCommand) -> anyhow::Result<()> {
    let (route, id, enable) = match command {
        RoutesCommand::List { id, at } => return list_routes(api, format, *id, at).await,
        RoutesCommand::Enable(RouteChange { route, id }) => (route, id, true),
        RoutesCommand::Disable(RouteChange { route, id }) => (route, id, false),
    };
    let path = if enable {
        "/api/v1/routes/enable"
    } else {
        "/api/v1/routes/disable"
    };
    let body = json!({ "route": route, "nodeId": id.map(|i| i.to_string()) });
    let value = api.call(Method::POST, path, Some(body)).await?;
    let changed = items(&value, "nodes");
    let names: Vec<String> = changed
        .iter()
        .map(|n| format!("{} (id {})", text(n, "givenName"), text(n, "id")))
        .collect();
    let verb = if enable { "enabled" } else { "disabled" };
    let message = if names.is_empty() {
        format!("Route {route} was already {verb}")
    } else {
        format!("Route {route} {verb} on {}", names.join(", "))
    };
    print_one(format, &Value::Array(changed), &message)
}

async fn policy(api: &Transport, format: Format, command: &PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Get { at } => {
            let value = api
                .call(
                    Method::GET,
                    &format!("/api/v1/policy{}", query(&[at_query(at)])),
                    None,
                )
                .await?;
            match format {
                Format::Human => {
                    println!("{}", output::escape_multiline(&text(&value, "policy")));
                    Ok(())
                }
                // The Go CLI prints the policy text itself whatever the format.
                Format::Json | Format::JsonLine | Format::Yaml => {
                    println!("{}", text(&value, "policy"));
                    Ok(())
                }
                Format::ApiJson => output::print_machine(format, &value),
            }
        }
        PolicyCommand::Set { file } => {
            let policy = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read policy file {}", file.display()))?;
            let value = api
                .call(
                    Method::PUT,
                    "/api/v1/policy",
                    Some(json!({ "policy": policy })),
                )
                .await?;
            match format {
                // The Go CLI prints this line whatever the format.
                Format::ApiJson => output::print_machine(format, &value),
                _ => {
                    println!("Policy updated.");
                    Ok(())
                }
            }
        }
        PolicyCommand::Check { .. } => unreachable!("policy check is handled in main"),
        PolicyCommand::WhoCanReach { .. } | PolicyCommand::WhatCan { .. } => {
            access_review::run(api, format, command).await
        }
    }
}

/// `policy check -f FILE`. The file is parsed and checked here, so it works without a daemon
/// or even a config (e.g. in a policy repository's CI). What needs the tailnet — the
/// policy's `tests`/`sshTests` and `user:*@domain` references — is then checked by
/// `POST /api/v1/policy/check` on the daemon, or over the store when no daemon runs; with
/// neither at hand that part is skipped, and a note on stderr says so.
pub fn check_policy_file(cli: &Cli, file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read policy file {}", file.display()))?;
    crate::core::policy::Policy::parse(&text).map_err(|e| anyhow!("invalid policy: {e}"))?;
    let skipped = |why: String| {
        eprintln!("note: {why}; checked the file alone (its tests were not run)");
        Ok(false)
    };
    let checked = match load_client_config(cli.config.as_deref()) {
        Err(error) => skipped(format!(
            "no config ({})",
            error.to_string().replace('\n', " ")
        )),
        Ok(loaded) => {
            let config = loaded.config;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let daemon = tokio::net::UnixStream::connect(&config.unix_socket)
                    .await
                    .is_ok();
                // Without a daemon, only a store that exists: opening creates one otherwise
                // (a PostgreSQL log is opened where it is).
                let postgres =
                    config.database.backend() == Some(crate::config::DatabaseKind::Postgres);
                if !daemon && !postgres && !config.database.sled_path().is_dir() {
                    return skipped(format!(
                        "no daemon answers on {} and there is no store at {}",
                        config.unix_socket.display(),
                        config.database.sled_path().display()
                    ));
                }
                let api = match Transport::connect(&config).await {
                    Ok(api) => api,
                    Err(error) => return skipped(format!("cannot reach the tailnet ({error})")),
                };
                api.call(
                    Method::POST,
                    "/api/v1/policy/check",
                    Some(json!({ "policy": text })),
                )
                .await?;
                Ok::<bool, anyhow::Error>(true)
            })
        }
    }?;
    let value = json!({ "valid": true, "checkedAgainstTailnet": checked });
    match cli.output {
        // The Go CLI prints this line whatever the format.
        Format::ApiJson => output::print_machine(cli.output, &value),
        _ => {
            println!("Policy is valid");
            Ok(())
        }
    }
}
