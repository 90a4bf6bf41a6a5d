//! The HTML an OIDC login shows: the confirmation form, the outcome, and refusals (each
//! with headscale's wording, so what users and their scripts see stays the same). Every
//! value from the provider or the client is escaped.

use crate::control::login_page::escape;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// The name of the confirmation form's anti-forgery field and cookie (headscale's).
pub const CONFIRM_FIELD: &str = "headscale_register_confirm";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><meta charset=utf-8><title>headscale: {}</title>\n{body}\n",
        escape(title)
    )
}

/// An error page: the status and one line saying what went wrong and what to do.
pub fn error(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<h1>{}</h1>\n<p>{}</p>\n<p>Run <code>tailscale up</code> again, or ask your administrator.</p>",
        escape(status.canonical_reason().unwrap_or("Error")),
        escape(message)
    );
    (status, Html(page("login failed", &body))).into_response()
}

/// What the person confirms: which account, which machine.
pub struct ConfirmInfo<'a> {
    pub auth_id: &'a str,
    pub csrf: &'a str,
    pub user: &'a str,
    pub hostname: &'a str,
    pub os: &'a str,
    pub machine_key: &'a str,
}

/// headscale 0.29's interstitial: registering a machine takes a click, so a silent SSO
/// redirect cannot add one behind the user's back.
pub fn confirm(info: &ConfirmInfo<'_>) -> String {
    let os = if info.os.is_empty() {
        String::new()
    } else {
        format!(" ({})", escape(info.os))
    };
    page(
        "confirm registration",
        &format!(
            "<h1>Register this machine?</h1>\n\
             <p>You are logged in as <b>{user}</b>. Register the machine <b>{host}</b>{os} \
             with machine key <code>{machine}</code>…?</p>\n\
             <p>Only continue if you just ran <code>tailscale up</code> on it.</p>\n\
             <form method=\"post\" action=\"/register/confirm/{id}\">\n\
             <input type=\"hidden\" name=\"{CONFIRM_FIELD}\" value=\"{csrf}\">\n\
             <button type=\"submit\">Register</button>\n</form>",
            user = escape(info.user),
            host = escape(info.hostname),
            machine = escape(info.machine_key),
            id = escape(info.auth_id),
            csrf = escape(info.csrf),
        ),
    )
}

/// The end of a login: the node is (again) part of the tailnet.
pub fn success(user: &str, new_node: bool) -> String {
    let (heading, verb) = if new_node {
        ("Node registered", "Registered")
    } else {
        ("Node reauthenticated", "Reauthenticated")
    };
    page(
        heading,
        &format!(
            "<h1>{heading}</h1>\n<p>{verb} as <b>{}</b>. You can now close this window.</p>",
            escape(user)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let html = confirm(&ConfirmInfo {
            auth_id: "id",
            csrf: "t\"><script>",
            user: "<b>",
            hostname: "h&",
            os: "",
            machine_key: "mkey:1",
        });
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;b&gt;"));
        assert!(html.contains("h&amp;"));
        assert!(html.contains("action=\"/register/confirm/id\""));
    }
}
