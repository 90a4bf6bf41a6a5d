//! The three steps of an OIDC login on the main listener (headscale 0.29's routes):
//! `GET /register/{id}` sends the browser to the provider, `GET /oidc/callback` checks what
//! comes back and asks the user to confirm, `POST /register/confirm/{id}` registers the
//! machine and answers the waiting client. Each step checks its inputs and answers a clear
//! page; the decisions themselves (`OidcLogin`, `RegisterNode`) are commands to `decide`.

use super::pages::{self, CONFIRM_FIELD};
use super::provider::{CallbackError, Provider};
use super::sessions::{Confirmation, Flight, Sessions, Taken};
use crate::control::pending::{Outcome, PendingLogins};
use crate::core::event::Event;
use crate::core::oidc::LoginRules;
use crate::core::{Actor, Command, RegisterAuth};
use crate::engine::{EngineError, EngineHandle};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Router};
use cookie::{Cookie, SameSite};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;

/// Characters of a state or nonce that name its cookie (`state_abcdef`), as in headscale;
/// shorter values are refused before they are used.
const COOKIE_PREFIX_LEN: usize = 6;
/// The confirmation form is one token: anything larger is not ours.
const MAX_CONFIRM_BODY_BYTES: usize = 4 * 1024;
/// How long the state and nonce cookies live (headscale: one hour).
const FLIGHT_COOKIE_SECONDS: i64 = 3600;

/// What the handlers share.
#[derive(Clone)]
pub struct OidcContext {
    pub provider: Arc<Provider>,
    pub sessions: Sessions,
    pub engine: EngineHandle,
    pub pending: PendingLogins,
    pub rules: LoginRules,
    pub expiry_from_token: bool,
    /// `server_url` is https: cookies get `Secure`.
    pub secure_cookies: bool,
}

pub fn router(context: OidcContext) -> Router {
    Router::new()
        .route("/register/{id}", axum::routing::get(start))
        .route("/oidc/callback", axum::routing::get(callback))
        .route(
            "/register/confirm/{id}",
            axum::routing::post(confirm).layer(DefaultBodyLimit::max(MAX_CONFIRM_BODY_BYTES)),
        )
        .with_state(context)
}

fn cookie_name(base: &str, value: &str) -> String {
    let end = value
        .char_indices()
        .nth(COOKIE_PREFIX_LEN)
        .map_or(value.len(), |(i, _)| i);
    format!("{base}_{}", &value[..end])
}

/// The value of cookie `name` in the request, if sent.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// Sets an HttpOnly cookie for `path` only, `Secure` when we serve https.
fn set_cookie(
    response: &mut Response,
    (name, value): (String, String),
    path: String,
    seconds: i64,
    same_site: SameSite,
    secure: bool,
) {
    let cookie = Cookie::build((name, value))
        .path(path)
        .max_age(cookie::time::Duration::seconds(seconds))
        .http_only(true)
        .same_site(same_site)
        .secure(secure)
        .build();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn expired_login() -> Response {
    pages::error(StatusCode::GONE, "login session expired, try again")
}

fn engine_error(error: EngineError) -> Response {
    match error {
        EngineError::Rejected(rejection) => {
            pages::error(StatusCode::FORBIDDEN, &rejection.to_string())
        }
        other => {
            tracing::warn!(error = %other, "OIDC login not recorded");
            pages::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server could not record the login; try again in a moment",
            )
        }
    }
}

/// Step 1: a known registration id is sent to the provider with fresh state and nonce.
async fn start(State(ctx): State<OidcContext>, Path(id): Path<String>) -> Response {
    if ctx.pending.by_id(&id).await.is_none() {
        return pages::error(
            StatusCode::NOT_FOUND,
            "unknown or expired login; run tailscale up again for a new link",
        );
    }
    let authorization = ctx.provider.authorize();
    let flight = Flight {
        auth_id: id,
        nonce: authorization.nonce.clone(),
        pkce_verifier: authorization.pkce_verifier,
    };
    if let Err(busy) = ctx
        .sessions
        .start(authorization.state.clone(), flight)
        .await
    {
        return pages::error(StatusCode::SERVICE_UNAVAILABLE, &busy.to_string());
    }
    let mut response = (
        StatusCode::FOUND,
        [(header::LOCATION, authorization.url.as_str())],
    )
        .into_response();
    for (base, value) in [
        ("state", &authorization.state),
        ("nonce", &authorization.nonce),
    ] {
        // Lax: the provider's redirect back is a cross-site top-level GET.
        set_cookie(
            &mut response,
            (cookie_name(base, value), value.clone()),
            "/oidc/callback".into(),
            FLIGHT_COOKIE_SECONDS,
            SameSite::Lax,
            ctx.secure_cookies,
        );
    }
    response
}

/// Step 2: the provider's answer. Cookies first (cheap, and they bind the answer to this
/// browser), then the one-time state, the code exchange and token checks, then the rules.
async fn callback(
    State(ctx): State<OidcContext>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(error) = query.get("error") {
        let detail = query.get("error_description").map_or("", String::as_str);
        return pages::error(
            StatusCode::BAD_REQUEST,
            &format!("the identity provider refused the login: {error} {detail}"),
        );
    }
    let (Some(code), Some(state)) = (
        query.get("code").filter(|c| !c.is_empty()),
        query.get("state").filter(|s| !s.is_empty()),
    ) else {
        return pages::error(StatusCode::BAD_REQUEST, "missing code or state parameter");
    };
    if state.chars().count() < COOKIE_PREFIX_LEN {
        return pages::error(StatusCode::BAD_REQUEST, "invalid state parameter");
    }
    match cookie(&headers, &cookie_name("state", state)) {
        None => return pages::error(StatusCode::BAD_REQUEST, "state not found"),
        Some(sent) if sent != *state => {
            return pages::error(StatusCode::FORBIDDEN, "state did not match")
        }
        Some(_) => {}
    }
    let Some(flight) = ctx.sessions.take_flight(state).await else {
        return expired_login();
    };
    match cookie(&headers, &cookie_name("nonce", &flight.nonce)) {
        None => return pages::error(StatusCode::BAD_REQUEST, "nonce not found"),
        Some(sent) if sent != flight.nonce => {
            return pages::error(StatusCode::FORBIDDEN, "nonce did not match")
        }
        Some(_) => {}
    }
    let Some((login, _)) = ctx.pending.by_id(&flight.auth_id).await else {
        return expired_login();
    };
    let verified = match ctx
        .provider
        .complete(code, &flight.nonce, flight.pkce_verifier.as_deref())
        .await
    {
        Ok(verified) => verified,
        Err(error) => {
            tracing::info!(%error, "OIDC callback refused");
            let status = match error {
                CallbackError::NoIdToken => StatusCode::BAD_REQUEST,
                _ => StatusCode::FORBIDDEN,
            };
            let shown = match &error {
                CallbackError::InvalidCode(_) => "invalid code".to_string(),
                CallbackError::InvalidIdToken(_) => "failed to verify id_token".to_string(),
                other => other.to_string(),
            };
            return pages::error(status, &shown);
        }
    };
    let identity = verified.claims.identifier();
    let actor = Actor::Oidc(identity.clone());
    let command = Command::OidcLogin {
        claims: verified.claims.clone(),
        rules: ctx.rules.clone(),
    };
    let recorded = match ctx.engine.execute(actor, command).await {
        Ok(recorded) => recorded,
        Err(error) => return engine_error(error),
    };
    if let Some(reason) = recorded.iter().find_map(|e| match &e.event {
        Event::OidcLoginRefused { reason, .. } => Some(reason.clone()),
        _ => None,
    }) {
        tracing::info!(%identity, %reason, "OIDC login refused");
        return pages::error(StatusCode::UNAUTHORIZED, &reason);
    }
    let state = ctx.engine.state();
    let Some(user) = state.user_by_identity(&identity) else {
        return pages::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not create or update user",
        );
    };
    let csrf: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    let confirmation = Confirmation {
        user: user.id,
        identity,
        expiry: ctx.expiry_from_token.then_some(verified.expires),
        csrf: csrf.clone(),
    };
    if let Err(busy) = ctx
        .sessions
        .confirm_later(&flight.auth_id, confirmation)
        .await
    {
        return pages::error(StatusCode::SERVICE_UNAVAILABLE, &busy.to_string());
    }
    let shown_user = if user.display_name.is_empty() {
        user.name.clone()
    } else {
        format!("{} ({})", user.display_name, user.name)
    };
    let html = pages::confirm(&pages::ConfirmInfo {
        auth_id: &flight.auth_id,
        csrf: &csrf,
        user: &shown_user,
        hostname: &login.hostinfo.hostname,
        os: &login.hostinfo.os,
        machine_key: &login.machine_key.short(),
    });
    let mut response = Html(html).into_response();
    set_cookie(
        &mut response,
        (CONFIRM_FIELD.into(), csrf),
        format!("/register/confirm/{}", flight.auth_id),
        super::sessions::SESSION_TTL.as_secs() as i64,
        SameSite::Strict,
        ctx.secure_cookies,
    );
    response
}

/// Step 3: the user pressed "register": the machine joins as theirs.
async fn confirm(
    State(ctx): State<OidcContext>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(token) = form.get(CONFIRM_FIELD).filter(|t| !t.is_empty()) else {
        return pages::error(StatusCode::BAD_REQUEST, "missing csrf token");
    };
    match cookie(&headers, CONFIRM_FIELD) {
        None => return pages::error(StatusCode::FORBIDDEN, "missing csrf cookie"),
        Some(sent) if sent != *token => {
            return pages::error(StatusCode::FORBIDDEN, "csrf token mismatch")
        }
        Some(_) => {}
    }
    let confirmation = match ctx.sessions.take_confirmation(&id, token).await {
        Ok(confirmation) => confirmation,
        Err(Taken::Unknown) => {
            return pages::error(StatusCode::GONE, "registration session expired")
        }
        Err(Taken::Mismatch) => {
            return pages::error(
                StatusCode::FORBIDDEN,
                "csrf token does not match cached registration",
            )
        }
    };
    let Some((login, _)) = ctx.pending.by_id(&id).await else {
        return pages::error(StatusCode::GONE, "registration session expired");
    };
    let command = Command::RegisterNode {
        machine_key: login.machine_key,
        node_key: login.node_key,
        hostinfo: login.hostinfo,
        auth: RegisterAuth::Oidc {
            user: confirmation.user,
            expiry: confirmation.expiry,
        },
        requested_expiry: login.requested_expiry,
        ephemeral: login.ephemeral,
        entropy: rand::thread_rng().gen(),
    };
    let recorded = match ctx
        .engine
        .execute(Actor::Oidc(confirmation.identity), command)
        .await
    {
        Ok(recorded) => recorded,
        Err(EngineError::Rejected(rejection)) => {
            // The client is told too (e.g. tags its user may not own), not left waiting.
            let reason = rejection.to_string();
            ctx.pending
                .finish(&id, Outcome::Rejected(reason.clone()))
                .await;
            return pages::error(StatusCode::FORBIDDEN, &reason);
        }
        Err(error) => return engine_error(error),
    };
    let registered = recorded.iter().find_map(|e| match &e.event {
        Event::NodeRegistered(reg) => Some((reg.id, true)),
        Event::NodeReauthenticated { id, .. } => Some((*id, false)),
        _ => None,
    });
    let Some((node, new_node)) = registered else {
        return pages::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "registration recorded no event",
        );
    };
    ctx.pending.finish(&id, Outcome::Registered(node)).await;
    let user = ctx
        .engine
        .state()
        .users
        .get(&confirmation.user)
        .map(|u| u.name.clone())
        .unwrap_or_default();
    let mut response = Html(pages::success(&user, new_node)).into_response();
    set_cookie(
        &mut response,
        (CONFIRM_FIELD.into(), String::new()),
        format!("/register/confirm/{id}"),
        0,
        SameSite::Strict,
        ctx.secure_cookies,
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_names_use_at_most_six_characters() {
        assert_eq!(cookie_name("state", "abcdefgh"), "state_abcdef");
        assert_eq!(cookie_name("nonce", "ab"), "nonce_ab");
        assert_eq!(cookie_name("nonce", "ééééééé"), "nonce_éééééé");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; state_abcdef=xyz".parse().unwrap());
        headers.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&headers, "state_abcdef").as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
