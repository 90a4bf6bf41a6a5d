//! The server's Noise static key (X25519), persisted 0600 at `noise.private_key_path` in
//! headscale's `privkey:<hex>` form, and `GET /key?v=<capver>`, which tells clients its public
//! half before they open the Noise channel.

use crate::core::keys::MachineKey;
use crate::keyfile::{self, KeyFileError};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::path::Path;
use x25519_dalek::{PublicKey, StaticSecret};

/// The server's Noise identity.
#[derive(Clone)]
pub struct ServerKey {
    secret: StaticSecret,
}

impl ServerKey {
    /// Loads the key, generating it on first start.
    pub fn load_or_create(path: &Path) -> Result<ServerKey, KeyFileError> {
        let bytes = keyfile::load_or_create(path, "privkey", keyfile::random_key)?;
        Ok(ServerKey {
            secret: StaticSecret::from(bytes),
        })
    }

    pub fn public(&self) -> MachineKey {
        MachineKey(PublicKey::from(&self.secret).to_bytes())
    }

    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

#[derive(Deserialize)]
struct KeyQuery {
    v: Option<String>,
}

/// `GET /key?v=N` → `{"legacyPublicKey": zero key, "publicKey": "mkey:<hex>"}` (the legacy
/// NaCl transport is gone; modern clients only use `publicKey`).
async fn key(State(public): State<MachineKey>, Query(query): Query<KeyQuery>) -> Response {
    if let Some(v) = query.v.as_deref() {
        if v.parse::<u32>().is_err() {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid capability version {v:?}\n"),
            )
                .into_response();
        }
    }
    Json(serde_json::json!({
        "legacyPublicKey": MachineKey::default().to_string(),
        "publicKey": public.to_string(),
    }))
    .into_response()
}

/// Routes served on the main listener.
pub fn router(public: MachineKey) -> Router {
    Router::new().route("/key", get(key)).with_state(public)
}
