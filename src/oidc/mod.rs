//! OIDC login (headscale's `oidc:` section): `tailscale up` gets an AuthURL as before; with
//! an issuer configured, that page sends the person to their identity provider, and after
//! they log in and confirm, the machine is registered for their user. The rules (who may
//! log in, which user a login is) are pure, in `core::oidc`, applied by `decide`; this
//! module is the shell around them: the provider (`provider`, over `http`), logins in
//! flight (`sessions`), the routes and their pages.

mod http;
pub mod pages;
pub mod provider;
pub mod routes;
pub mod sessions;

use crate::config::Config;
use crate::control::pending::PendingLogins;
use crate::core::oidc::LoginRules;
use crate::engine::EngineHandle;
use std::sync::Arc;
use std::time::Duration;

pub use routes::{router, OidcContext};

/// How long discovery may take at start (headscale's 30 s).
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why `serve` cannot start with the configured provider.
#[derive(Debug, thiserror::Error)]
#[error("oidc.issuer {issuer:?}: the OpenID provider is not available ({reason}); start it, or set oidc.only_start_if_oidc_is_available: false to serve with admin-approved logins meanwhile")]
pub struct ProviderUnavailable {
    pub issuer: String,
    pub reason: String,
}

/// Connects to the provider when one is configured (before the engine starts, so a start
/// that cannot serve records nothing). Unreachable: an error when
/// `only_start_if_oidc_is_available` (the default), else a warning and `None` (logins wait
/// for `headscale nodes register`, as without OIDC; headscale does the same).
pub async fn connect(config: &Config) -> Result<Option<provider::Provider>, ProviderUnavailable> {
    let oidc = &config.oidc;
    if !oidc.enabled() {
        return Ok(None);
    }
    let redirect = format!("{}/oidc/callback", config.server_url.trim_end_matches('/'));
    let discovered = tokio::time::timeout(
        DISCOVERY_TIMEOUT,
        provider::Provider::discover(oidc, &redirect),
    )
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {}s", DISCOVERY_TIMEOUT.as_secs())));
    match discovered {
        Ok(provider) => {
            tracing::info!(issuer = %oidc.issuer, pkce = oidc.pkce.enabled, "OIDC logins through the provider");
            Ok(Some(provider))
        }
        Err(reason) => {
            let error = ProviderUnavailable {
                issuer: oidc.issuer.clone(),
                reason,
            };
            if oidc.only_start_if_oidc_is_available {
                return Err(error);
            }
            tracing::warn!(%error, "OIDC is off until the next start: logins need `headscale nodes register`");
            Ok(None)
        }
    }
}

/// What the login routes share, once the engine runs.
pub fn context(
    config: &Config,
    provider: provider::Provider,
    engine: EngineHandle,
    pending: PendingLogins,
) -> OidcContext {
    let oidc = &config.oidc;
    OidcContext {
        provider: Arc::new(provider),
        sessions: sessions::Sessions::new(pending.shared_tables().cloned()),
        engine,
        pending,
        rules: LoginRules {
            allowed_domains: oidc.allowed_domains.clone(),
            allowed_users: oidc.allowed_users.clone(),
            allowed_groups: oidc.allowed_groups.clone(),
            email_verified_required: oidc.email_verified_required,
        },
        expiry_from_token: oidc.use_expiry_from_token,
        secure_cookies: config.server_url.starts_with("https://"),
    }
}
