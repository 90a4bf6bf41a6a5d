//! The OpenAPI 3 document of `/api/v1`, generated from the code: the `#[utoipa::path]`
//! attributes on the handlers and the `ToSchema` derives on the wire types and request bodies,
//! collected in [`ApiDoc`]. Served as JSON and YAML, and rendered server-side into a
//! self-contained HTML page (`/api/v1/docs`: no scripts, nothing fetched). Like headscale's
//! documentation, these three routes are public (no API key).

use super::error::ErrorBody;
use super::wire::{ApiKeyWire, EventWire, NodeWire, PreAuthKeyWire, UserWire};
use super::{history, keys, nodes, users, webhooks};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// The public documentation routes (method, path), served by [`router`].
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/openapi.yaml"),
    ("GET", "/api/v1/docs"),
];

/// The name of the Bearer API key scheme in the document.
pub const SECURITY_SCHEME: &str = "apiKey";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "headscale admin API",
        description = "headscale 0.29's `/api/v1` (users, keys, nodes, routes, policy) plus this \
server's history endpoints (events, state at any point). On the TCP listener every operation \
except the documentation needs `Authorization: Bearer hskey-api-<prefix>-<secret>` \
(`headscale apikeys create`); the unix socket needs none. Errors are `{code, message, details}` \
with a gRPC status code, except a refused API key: a plain-text `401 Unauthorized`, as headscale.",
    ),
    paths(
        super::health,
        users::list,
        users::create,
        users::rename,
        users::delete,
        keys::list_pre_auth,
        keys::create_pre_auth,
        keys::delete_pre_auth,
        keys::expire_pre_auth,
        keys::list_api,
        keys::create_api,
        keys::delete_api_by_query,
        keys::expire_api,
        keys::delete_api,
        nodes::list,
        nodes::register,
        nodes::get_register,
        nodes::backfill_ips,
        nodes::auth_register,
        nodes::auth_approve,
        nodes::auth_reject,
        nodes::get_one,
        nodes::delete,
        nodes::expire,
        nodes::rename,
        nodes::set_tags,
        nodes::move_to_user,
        nodes::approve,
        nodes::approve_routes,
        nodes::debug_create,
        nodes::list_routes,
        nodes::enable_route,
        nodes::disable_route,
        history::get_policy,
        history::set_policy,
        history::check_policy,
        history::list_events,
        history::verify,
        history::show_event,
        history::state,
        super::netmap_at::netmap,
        super::state_diff::diff,
        super::access_review::who_can_reach,
        super::access_review::what_can,
        super::export::export_events,
        webhooks::list,
        webhooks::create,
        webhooks::delete,
        webhooks::deliveries,
        webhooks::test,
        super::user_roles::list,
        super::user_roles::set,
        openapi_json,
        openapi_yaml,
        docs,
    ),
    components(schemas(
        ErrorBody,
        UserWire,
        PreAuthKeyWire,
        ApiKeyWire,
        NodeWire,
        EventWire,
        Empty,
    )),
    modifiers(&Security),
    security(("apiKey" = [])),
    tags(
        (name = "users", description = "Users (headscale)"),
        (name = "preauthkeys", description = "Pre-auth keys (headscale)"),
        (name = "apikeys", description = "API keys (headscale)"),
        (name = "nodes", description = "Nodes and interactive logins (headscale)"),
        (name = "routes", description = "Subnet routes by prefix (ours)"),
        (name = "policy", description = "The ACL policy (headscale)"),
        (name = "history", description = "The event log: audit trail and past states (ours)"),
        (name = "server", description = "Health"),
        (name = "docs", description = "This document (public)"),
        (name = "webhooks", description = "Webhook endpoints and their delivery (ours)"),
    )
)]
pub struct ApiDoc;

/// The Bearer scheme, and no security on the public documentation routes.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("hskey-api-<prefix>-<secret>")
                    .description(Some(
                        "An API key from `headscale apikeys create`, sent as \
                         `Authorization: Bearer hskey-api-…` (TCP listener only)",
                    ))
                    .build(),
            ),
        );
        for (_, path) in ROUTES {
            if let Some(item) = openapi.paths.paths.get_mut(*path) {
                if let Some(operation) = item.get.as_mut() {
                    operation.security = Some(Vec::new());
                }
            }
        }
    }
}

/// The errors any authenticated operation may answer.
#[derive(IntoResponses)]
pub enum CommonErrors {
    /// Invalid input (a path or query value, an unreadable body, a bad `at`): gRPC code 3.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// TCP listener: a missing, unknown or expired API key (plain text `Unauthorized`).
    #[response(status = 401, content_type = "text/plain")]
    Unauthorized(String),
    /// TCP listener: too many failed API keys from this address; see `Retry-After`. Code 8.
    #[response(status = 429)]
    TooManyRequests(ErrorBody),
    /// An internal failure (code 13).
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// The errors of an operation that changes something, beyond [`CommonErrors`].
#[derive(IntoResponses)]
pub enum WriteErrors {
    /// A rule refused the change (code 7).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Something named does not exist (code 5).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The change conflicts with the current state, e.g. a name in use (code 6).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// No daemon is running (the CLI's offline mode is read-only): code 14.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// An empty JSON object, `{}`: the answer of operations with nothing to return.
#[derive(Serialize, ToSchema)]
pub struct Empty {}

/// `GET /api/v1/health`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// Whether the state could be read.
    pub database_connectivity: bool,
}

/// `POST /api/v1/apikey`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateApiKeyResponse {
    /// The full key, `hskey-api-<prefix>-<secret>`: shown only here.
    pub api_key: String,
}

/// `POST /api/v1/node/backfillips`.
#[derive(Serialize, ToSchema)]
pub struct BackfillResponse {
    /// Always empty: every node keeps the addresses it got at registration.
    pub changes: Vec<String>,
}

/// `GET /api/v1/routes`.
#[derive(Serialize, ToSchema)]
pub struct RouteList {
    pub routes: Vec<nodes::RouteWire>,
}

/// `GET /api/v1/policy` and `PUT /api/v1/policy`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResponse {
    /// The policy text (HuJSON) as it was set.
    pub policy: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// `GET /api/v1/events/{seq}`: one event and its place in the hash chain.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventDetail {
    pub event: EventWire,
    /// Hex SHA-256 of the previous record.
    pub prev_hash: String,
    /// Hex SHA-256 of this record.
    pub hash: String,
}

/// `GET /api/v1/events/verify`: `ok` with the chain's facts, or not `ok` with the first
/// problem found.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub ok: bool,
    /// Events checked (a decimal string). Only when `ok`.
    pub events: Option<String>,
    /// Hex hash of the last record. Only when `ok`.
    pub head_hash: Option<String>,
    /// Signed checkpoints verified. Only when `ok`.
    pub checkpoints_verified: Option<u64>,
    /// Whether checkpoint signatures were checked (the server's key was readable).
    pub signatures_checked: Option<bool>,
    /// Every stored snapshot, oldest first, checked against the chain and the fold of the
    /// log. Only when the chain verifies.
    pub snapshots: Option<Vec<SnapshotVerdict>>,
    /// What is wrong. Only when not `ok`.
    pub error: Option<String>,
    /// The server's checkpoint public key (64 hex digits), when readable: what an auditor
    /// pins with `events verify --file F --key`.
    pub checkpoint_key: Option<String>,
}

/// One stored snapshot as `events verify` found it.
#[derive(Serialize, ToSchema)]
pub struct SnapshotVerdict {
    /// The seq it is a snapshot of (a decimal string).
    pub seq: String,
    /// `ok`, `unsigned`, `bad signature`, `head mismatch`, `differs from the log` or
    /// `unreadable`; `bad signature`, `head mismatch` and `differs from the log` are evidence
    /// of tampering and make the verdict not `ok` (see `error`).
    pub status: String,
    /// The status with its detail.
    pub detail: String,
}

/// `GET /api/v1/state`: the whole state after event `seq`.
#[derive(Serialize, ToSchema)]
pub struct StateResponse {
    /// The last event applied (a decimal string).
    pub seq: String,
    /// When that event was appended.
    #[schema(format = DateTime)]
    pub at: String,
    /// The state's canonical JSON (users, nodes, keys, policy, config).
    pub state: serde_json::Value,
}

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = crate::server::VERSION.to_string();
        doc
    })
}

/// The public documentation routes (no API key, no state).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(ROUTES[0].1, get(openapi_json))
        .route(ROUTES[1].1, get(openapi_yaml))
        .route(ROUTES[2].1, get(docs))
}

/// Rendered once: (JSON, YAML, HTML).
fn rendered() -> &'static (String, String, String) {
    static RENDERED: OnceLock<(String, String, String)> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let doc = document();
        let value = serde_json::to_value(doc).unwrap_or_default();
        let json = serde_json::to_string_pretty(&value).unwrap_or_default();
        let yaml = serde_yaml_ng::to_string(&value).unwrap_or_default();
        (json, yaml, html_page(&value))
    })
}

fn text(content_type: &'static str, body: &'static str) -> Response {
    ([(CONTENT_TYPE, content_type)], body).into_response()
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "docs",
    operation_id = "openapiJson",
    summary = "This document, as JSON",
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    text("application/json", &rendered().0)
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.yaml",
    tag = "docs",
    operation_id = "openapiYaml",
    summary = "This document, as YAML",
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/yaml", body = String))
)]
pub async fn openapi_yaml() -> Response {
    text("application/yaml", &rendered().1)
}

#[utoipa::path(
    get,
    path = "/api/v1/docs",
    tag = "docs",
    operation_id = "docs",
    summary = "This document, as a readable page",
    responses((status = 200, description = "Self-contained HTML (no scripts)", content_type = "text/html", body = String))
)]
pub async fn docs() -> Response {
    text("text/html; charset=utf-8", &rendered().2)
}

// ---- The HTML page -------------------------------------------------------------------------

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch"];

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;\
padding:0 1rem;color:#222;line-height:1.4}code,.path{font-family:ui-monospace,monospace}\
.op{border:1px solid #ccc;border-radius:6px;margin:.8rem 0;padding:.6rem .9rem}\
.m{display:inline-block;min-width:4.5rem;font-weight:bold;font-family:ui-monospace,monospace}\
.get{color:#1b6ac9}.post{color:#2e8540}.put{color:#a36a00}.delete{color:#c0392b}\
table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;\
text-align:left;vertical-align:top}.muted{color:#666}nav a{margin-right:.8rem}";

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped text with Markdown code spans (`…`) as `<code>`.
fn prose(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{}</code>", escape(part))
            } else {
                escape(part)
            }
        })
        .collect()
}

fn str_at<'a>(value: &'a serde_json::Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(|v| v.as_str())
        .unwrap_or("")
}

/// A schema in a few words, with links to named components.
fn schema_text(schema: &serde_json::Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(|r| r.as_str()) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        let name = escape(name);
        return format!("<a href=\"#schema-{name}\">{name}</a>");
    }
    if let Some(any) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(|v| v.as_array())
    {
        let parts: Vec<String> = any.iter().map(schema_text).collect();
        return parts.join(" | ");
    }
    let kind = match schema.get("type") {
        Some(serde_json::Value::String(kind)) => kind.clone(),
        Some(serde_json::Value::Array(kinds)) => kinds
            .iter()
            .filter_map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".into(),
    };
    let mut out = if kind.starts_with("array") {
        let items = schema
            .get("items")
            .map(schema_text)
            .unwrap_or_else(|| "any".into());
        format!(
            "array of {items}{}",
            kind.strip_prefix("array").unwrap_or("")
        )
    } else {
        escape(&kind)
    };
    if let Some(format) = schema.get("format").and_then(|f| f.as_str()) {
        let _ = write!(out, " ({})", escape(format));
    }
    out
}

fn html_page(doc: &serde_json::Value) -> String {
    let mut out = String::new();
    let title = escape(str_at(doc, "/info/title"));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title} \
         <span class=\"muted\">{}</span></h1>\n<p>{}</p>\n<p>The machine-readable document: \
         <a href=\"openapi.yaml\">openapi.yaml</a>, <a href=\"openapi.json\">openapi.json</a> \
         (OpenAPI {}).</p>\n",
        escape(str_at(doc, "/info/version")),
        prose(str_at(doc, "/info/description")),
        escape(str_at(doc, "/openapi")),
    );
    let tags: Vec<(String, String)> = doc
        .get("tags")
        .and_then(|t| t.as_array())
        .map(|tags| {
            tags.iter()
                .map(|t| {
                    (
                        str_at(t, "/name").to_string(),
                        str_at(t, "/description").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str("<nav>");
    for (name, _) in &tags {
        let name = escape(name);
        let _ = write!(out, "<a href=\"#tag-{name}\">{name}</a>");
    }
    out.push_str("<a href=\"#schemas\">schemas</a></nav>\n");
    let empty = serde_json::Map::new();
    let paths = doc
        .get("paths")
        .and_then(|p| p.as_object())
        .unwrap_or(&empty);
    for (tag, description) in &tags {
        let _ = write!(
            out,
            "<h2 id=\"tag-{0}\">{0}</h2>\n<p class=\"muted\">{1}</p>\n",
            escape(tag),
            prose(description)
        );
        for (path, item) in paths {
            for method in METHODS {
                let Some(operation) = item.get(*method) else {
                    continue;
                };
                let in_tag = operation
                    .get("tags")
                    .and_then(|t| t.as_array())
                    .is_some_and(|t| t.iter().any(|t| t.as_str() == Some(tag)));
                if in_tag {
                    operation_html(&mut out, method, path, operation);
                }
            }
        }
    }
    schemas_html(&mut out, doc);
    out.push_str("</body></html>\n");
    out
}

fn operation_html(out: &mut String, method: &str, path: &str, operation: &serde_json::Value) {
    let id = escape(str_at(operation, "/operationId"));
    let _ = write!(
        out,
        "<div class=\"op\" id=\"op-{id}\"><span class=\"m {method}\">{}</span> \
         <span class=\"path\">{}</span> — {}",
        method.to_uppercase(),
        escape(path),
        prose(str_at(operation, "/summary")),
    );
    let public = operation
        .get("security")
        .and_then(|s| s.as_array())
        .is_some_and(|s| s.is_empty());
    if public {
        out.push_str(" <span class=\"muted\">(public)</span>");
    }
    let description = str_at(operation, "/description");
    if !description.is_empty() {
        let _ = write!(out, "<p>{}</p>", prose(description));
    }
    if let Some(parameters) = operation.get("parameters").and_then(|p| p.as_array()) {
        out.push_str("<table><tr><th>parameter</th><th>in</th><th>type</th><th>required</th><th>description</th></tr>");
        for parameter in parameters {
            let required = parameter
                .get("required")
                .and_then(|r| r.as_bool())
                .unwrap_or(false);
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(str_at(parameter, "/name")),
                escape(str_at(parameter, "/in")),
                parameter.get("schema").map(schema_text).unwrap_or_default(),
                if required { "yes" } else { "no" },
                prose(str_at(parameter, "/description")),
            );
        }
        out.push_str("</table>");
    }
    if let Some(content) = operation
        .pointer("/requestBody/content")
        .and_then(|c| c.as_object())
    {
        for (media, body) in content {
            let _ = write!(
                out,
                "<p>Request body (<code>{}</code>): {}</p>",
                escape(media),
                body.get("schema").map(schema_text).unwrap_or_default()
            );
        }
    }
    if let Some(responses) = operation.get("responses").and_then(|r| r.as_object()) {
        out.push_str("<table><tr><th>status</th><th>body</th><th>description</th></tr>");
        for (status, response) in responses {
            let bodies: Vec<String> = response
                .get("content")
                .and_then(|c| c.as_object())
                .map(|content| {
                    content
                        .iter()
                        .map(|(media, body)| {
                            format!(
                                "{} <span class=\"muted\">{}</span>",
                                body.get("schema").map(schema_text).unwrap_or_default(),
                                escape(media)
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(status),
                bodies.join("<br>"),
                prose(str_at(response, "/description")),
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</div>\n");
}

fn schemas_html(out: &mut String, doc: &serde_json::Value) {
    out.push_str("<h2 id=\"schemas\">Schemas</h2>\n");
    let Some(schemas) = doc
        .pointer("/components/schemas")
        .and_then(|s| s.as_object())
    else {
        return;
    };
    for (name, schema) in schemas {
        let name = escape(name);
        let _ = write!(
            out,
            "<div class=\"op\" id=\"schema-{name}\"><b>{name}</b> {}",
            prose(str_at(schema, "/description"))
        );
        let required: Vec<&str> = schema
            .get("required")
            .and_then(|r| r.as_array())
            .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        match schema.get("properties").and_then(|p| p.as_object()) {
            Some(properties) if !properties.is_empty() => {
                out.push_str("<table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>");
                for (field, property) in properties {
                    let _ = write!(
                        out,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        escape(field),
                        schema_text(property),
                        if required.contains(&field.as_str()) {
                            "yes"
                        } else {
                            "no"
                        },
                        prose(str_at(property, "/description")),
                    );
                }
                out.push_str("</table>");
            }
            _ => {
                let _ = write!(out, "<p>{}</p>", schema_text(schema));
            }
        }
        out.push_str("</div>\n");
    }
}
