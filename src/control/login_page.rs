//! `GET /register/<id>`: the page an AuthURL opens. It tells the user what to ask their
//! admin to run, and shows the machine-key fingerprint, source address and time so the admin
//! can confirm with the user out of band; nothing on it is secret (the id only names a login
//! that an admin must still approve). Only a registration id opens it, never a node key.

use super::pending::PendingLogins;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Router;

pub fn router(pending: PendingLogins) -> Router {
    Router::new()
        .route("/register/{id}", axum::routing::get(page))
        .with_state(pending)
}

/// Escapes text for HTML (ids and node keys are plain, but never trust a URL).
pub fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

async fn page(State(pending): State<PendingLogins>, Path(id): Path<String>) -> Response {
    // Only a registration id opens the page: a node key must not reveal one (L9).
    let Some((login, origin)) = pending.by_id(&id).await else {
        return (
            StatusCode::NOT_FOUND,
            Html(
                "<!doctype html><title>headscale</title><h1>Unknown or expired login</h1>\
                  <p>Run <code>tailscale up</code> again for a new link.</p>\n",
            ),
        )
            .into_response();
    };
    let id = escape(&id);
    let host = escape(&login.hostinfo.hostname);
    let machine = escape(&login.machine_key.short());
    let source = origin
        .source
        .map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    let started = origin
        .started
        .map_or_else(|| "unknown".to_string(), |t| t.to_rfc3339());
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>headscale: machine registration</title>\n\
         <h1>Machine registration</h1>\n\
         <p>A machine calling itself <b>{host}</b> is waiting to join. Before approving, check \
         with its owner that these match their machine:</p>\n\
         <ul><li>machine key <code>{machine}</code>…</li>\n\
         <li>connected from <code>{source}</code></li>\n\
         <li>at <code>{started}</code></li></ul>\n\
         <p>An administrator completes it with:</p>\n\
         <pre>headscale nodes register --user USERNAME --key {id}</pre>\n"
    ))
    .into_response()
}
