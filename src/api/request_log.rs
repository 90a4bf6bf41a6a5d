//! A log line per API request: every request at debug, every refused or failed one (4xx,
//! 5xx) at info with its status, a short reason and who asked, so an admin whose tool gets an
//! error can find out why in the server's log.
//!
//! Only the method, the path (never the query: old clients put pre-auth keys there), the
//! status, the actor and the error's own message (cut to [`MAX_REASON_CHARS`], controls
//! escaped) are logged; never a request body, a header or a key. [`log_requests`] wraps the
//! API from outside its authentication, so refused keys (401, 429) are logged too; the actor
//! comes back from inside on the response ([`mark_actor`]).

use crate::core::Actor;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Response};
use axum::middleware::Next;

/// Longest reason logged.
pub const MAX_REASON_CHARS: usize = 160;
/// Largest error body read back for its reason; a larger one is logged without.
const MAX_ERROR_BODY_BYTES: usize = 8 << 10;

/// Who made a request, carried on the response for [`log_requests`].
#[derive(Clone)]
struct AnsweredFor(Actor);

/// Inside the authentication: copies the request's actor onto the response.
pub async fn mark_actor(request: Request, next: Next) -> Response<Body> {
    let actor = request.extensions().get::<Actor>().cloned();
    let mut response = next.run(request).await;
    if let Some(actor) = actor {
        response.extensions_mut().insert(AnsweredFor(actor));
    }
    response
}

/// Outside the authentication: logs the request once it is answered.
pub async fn log_requests(request: Request, next: Next) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    let actor = match response.extensions().get::<AnsweredFor>() {
        Some(AnsweredFor(actor)) => actor.to_string(),
        None => "unauthenticated".to_string(),
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if !(status.is_client_error() || status.is_server_error()) {
        tracing::debug!(%method, path = %path, status = status.as_u16(), %actor, elapsed_ms, "API request");
        return response;
    }
    let (response, reason) = reason(response).await;
    tracing::info!(
        %method,
        path = %path,
        status = status.as_u16(),
        reason = %reason,
        %actor,
        elapsed_ms,
        "API request refused"
    );
    response
}

/// The error's message (`message` of the JSON error body, or a short plain-text body), and
/// the response rebuilt around the bytes read.
async fn reason(response: Response<Body>) -> (Response<Body>, String) {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let small = http_body::Body::size_hint(response.body())
        .upper()
        .is_some_and(|n| n <= MAX_ERROR_BODY_BYTES as u64);
    let fallback = response
        .status()
        .canonical_reason()
        .unwrap_or("error")
        .to_string();
    if !small {
        return (response, fallback);
    }
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ERROR_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => return (Response::from_parts(parts, Body::empty()), fallback),
    };
    let text = if is_json {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
    } else {
        Some(String::from_utf8_lossy(&bytes).trim().to_string())
    };
    let reason = text
        .filter(|t| !t.is_empty())
        .map(|t| short(&t))
        .unwrap_or(fallback);
    (Response::from_parts(parts, Body::from(bytes)), reason)
}

/// `text` on one line, controls escaped, at most [`MAX_REASON_CHARS`].
fn short(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_REASON_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn refused() -> axum::response::Response {
        axum::response::IntoResponse::into_response(super::super::ApiError::BadRequest(
            "invalid user id \"x\u{1b}y\": expected a number".into(),
        ))
    }

    #[tokio::test]
    async fn refusals_are_logged_with_reason_and_actor_and_bodies_pass_through() {
        let sink = Captured::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = Router::new()
            .route("/api/v1/user", get(refused))
            .route("/api/v1/ok", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(mark_actor))
            .layer(axum::middleware::from_fn(
                |mut request: Request, next: Next| async move {
                    request.extensions_mut().insert(Actor::LocalSocket);
                    next.run(request).await
                },
            ))
            .layer(axum::middleware::from_fn(log_requests));
        let request = Request::builder()
            .uri("/api/v1/user?key=hskey-auth-secretsecret-topsecret")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("expected a number"));
        let request = Request::builder()
            .uri("/api/v1/ok")
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.oneshot(request).await.unwrap().status(), StatusCode::OK);

        let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let refused_line = log
            .lines()
            .find(|l| l.contains("API request refused"))
            .unwrap_or_else(|| panic!("{log}"));
        assert!(refused_line.contains(" INFO "), "{refused_line}");
        assert!(refused_line.contains("status=400"), "{refused_line}");
        assert!(
            refused_line.contains("path=/api/v1/user "),
            "{refused_line}"
        );
        assert!(refused_line.contains("expected a number"), "{refused_line}");
        assert!(
            refused_line.contains("admin (local socket)"),
            "{refused_line}"
        );
        assert!(
            refused_line.contains("\\u{1b}"),
            "controls escaped: {refused_line}"
        );
        assert!(
            !log.contains("topsecret"),
            "queries are never logged: {log}"
        );
        assert!(
            log.lines().any(|l| l.contains(" DEBUG ")
                && l.contains("path=/api/v1/ok")
                && l.contains("status=200")),
            "{log}"
        );
    }
}
