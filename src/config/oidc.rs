//! headscale's `oidc:` section: logins through an OpenID Connect provider (`src/oidc/`).
//! Keys, defaults and meanings are headscale 0.29's; OIDC is on when `issuer` is set.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The `oidc:` section as written (the secret unresolved; see [`OidcConfig::client_secret`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OidcConfig {
    /// Refuse to start when the provider cannot be reached (discovery fails); otherwise
    /// start with CLI-approved logins only, as headscale does.
    pub only_start_if_oidc_is_available: bool,
    /// The provider's issuer URL; empty = OIDC off.
    pub issuer: String,
    pub client_id: String,
    /// The client secret itself; exclusive with `client_secret_path`.
    pub client_secret: String,
    /// A file holding the client secret (environment variables in the path expanded).
    #[serde(deserialize_with = "super::scalar::opt_from_str")]
    pub client_secret_path: Option<PathBuf>,
    /// Scopes asked for.
    pub scope: Vec<String>,
    /// Extra query parameters for the authorization request (`domain_hint`, `prompt`, ...).
    pub extra_params: BTreeMap<String, String>,
    /// Email domains allowed to log in; empty = any.
    pub allowed_domains: Vec<String>,
    /// Email addresses allowed to log in; empty = any.
    pub allowed_users: Vec<String>,
    /// Groups (the `groups` claim) of which a user must be in one; empty = any.
    pub allowed_groups: Vec<String>,
    /// Email-based rules (and the user's email) count only when `email_verified` is true.
    pub email_verified_required: bool,
    /// Nodes expire when the ID token does, instead of by `node.expiry`.
    pub use_expiry_from_token: bool,
    pub pkce: PkceConfig,
}

/// Proof Key for Code Exchange (RFC 7636).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PkceConfig {
    pub enabled: bool,
    pub method: PkceMethod,
}

/// How the PKCE challenge is derived from the verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PkceMethod {
    #[default]
    S256,
    #[serde(rename = "plain")]
    Plain,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            only_start_if_oidc_is_available: true,
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            client_secret_path: None,
            scope: vec!["openid".into(), "profile".into(), "email".into()],
            extra_params: BTreeMap::new(),
            allowed_domains: Vec::new(),
            allowed_users: Vec::new(),
            allowed_groups: Vec::new(),
            email_verified_required: true,
            use_expiry_from_token: false,
            pkce: PkceConfig::default(),
        }
    }
}

impl Default for PkceConfig {
    fn default() -> Self {
        PkceConfig {
            enabled: false,
            method: PkceMethod::S256,
        }
    }
}

/// Never prints the client secret.
impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field(
                "only_start_if_oidc_is_available",
                &self.only_start_if_oidc_is_available,
            )
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &if self.client_secret.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("client_secret_path", &self.client_secret_path)
            .field("scope", &self.scope)
            .field("extra_params", &self.extra_params)
            .field("allowed_domains", &self.allowed_domains)
            .field("allowed_users", &self.allowed_users)
            .field("allowed_groups", &self.allowed_groups)
            .field("email_verified_required", &self.email_verified_required)
            .field("use_expiry_from_token", &self.use_expiry_from_token)
            .field("pkce", &self.pkce)
            .finish()
    }
}

impl OidcConfig {
    /// Whether OIDC logins are configured at all.
    pub fn enabled(&self) -> bool {
        !self.issuer.trim().is_empty()
    }
}
