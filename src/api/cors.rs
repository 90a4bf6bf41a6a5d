//! CORS for browser admin UIs (Headplane, headscale-ui) on the TCP listener: `api.cors`.
//! No origins configured (the default) means no layer at all, so no CORS headers are sent and
//! a preflight is an ordinary unauthenticated request.

use crate::config::CorsConfig;
use axum::http::{header, HeaderValue, Method};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The layer for `config`, or `None` when no origin is allowed. Origins are checked by
/// config validation; one that is not a valid header value is skipped.
pub fn layer(config: &CorsConfig) -> Option<CorsLayer> {
    let origins = &config.allowed_origins;
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o.trim() == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim().trim_end_matches('/')).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}
