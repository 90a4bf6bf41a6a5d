//! `GET /register/<id>`: the page an AuthURL opens. It tells the user what to ask their
//! admin to run; nothing on it is secret (the id only names a login that an admin must still
//! approve).

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
fn escape(text: &str) -> String {
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
    let Some((id, login)) = pending.find(&id) else {
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
    let node_key = escape(&login.node_key.to_string());
    let host = escape(&login.hostinfo.hostname);
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>headscale: machine registration</title>\n\
         <h1>Machine registration</h1>\n\
         <p>Machine <b>{host}</b> is waiting to join. An administrator completes it with:</p>\n\
         <pre>headscale nodes register --user USERNAME --key {id}</pre>\n\
         <p>(The node key <code>{node_key}</code> works as <code>--key</code> too.)</p>\n"
    ))
    .into_response()
}
