//! The OpenID provider, through the openidconnect crate: discovery at start, the
//! authorization URL (state, nonce, PKCE, extra parameters), and the callback's work — code
//! exchange, ID token validation (signature against the provider's JWKS, issuer, audience,
//! expiry, nonce) and the userinfo claims merged in. Nothing here decides who may log in:
//! that is `core::oidc`, through `decide`.

use super::http::ProviderHttp;
use crate::config::{OidcConfig, PkceMethod};
use crate::core::oidc::{Claims, MAX_GROUPS};
use crate::core::Timestamp;
use crate::error_chain::error_chain;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Claims beyond the standard ones that headscale reads: `groups` (an array, or one string
/// as some providers send a single group).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraClaims {
    #[serde(
        default,
        deserialize_with = "flexible_groups",
        skip_serializing_if = "Option::is_none"
    )]
    groups: Option<Vec<String>>,
}

impl AdditionalClaims for ExtraClaims {}

fn flexible_groups<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Groups {
        Many(Vec<String>),
        One(String),
    }
    Ok(Option::<Groups>::deserialize(d)?.map(|g| match g {
        Groups::Many(mut list) => {
            list.truncate(MAX_GROUPS);
            list
        }
        Groups::One(one) => vec![one],
    }))
}

type IdFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<IdFields, CoreTokenType>;
/// The client as discovery leaves it: authorization endpoint known, token and userinfo
/// endpoints as the provider announced them.
type OidcClient = openidconnect::Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A started login: where to send the browser, and what the callback must see again.
pub struct Authorization {
    pub url: String,
    pub state: String,
    pub nonce: String,
    /// The PKCE verifier, when PKCE is on.
    pub pkce_verifier: Option<String>,
}

/// Who the provider says logged in, and until when its ID token is valid.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Claims,
    pub expires: Timestamp,
}

/// Why a callback could not be turned into verified claims (texts are headscale's).
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The provider refused the code exchange (bad or reused code, wrong PKCE verifier).
    #[error("invalid code: {0}")]
    InvalidCode(String),
    #[error("no id_token in the provider's answer")]
    NoIdToken,
    /// The ID token failed validation; a nonce mismatch is reported apart.
    #[error("failed to verify id_token: {0}")]
    InvalidIdToken(String),
    #[error("nonce did not match")]
    NonceMismatch,
}

/// The claims headscale reads, from an ID token's claims or from a userinfo answer: the two
/// openidconnect types have the same accessors but no trait in common.
macro_rules! claims_of {
    ($source:expr, $issuer:expr) => {{
        let source = &$source;
        Claims {
            issuer: $issuer,
            subject: source.subject().to_string(),
            name: source
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string())
                .unwrap_or_default(),
            preferred_username: source
                .preferred_username()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            email: source.email().map(|e| e.to_string()).unwrap_or_default(),
            email_verified: source.email_verified().unwrap_or(false),
            picture: source
                .picture()
                .and_then(|p| p.get(None))
                .map(|p| p.to_string())
                .unwrap_or_default(),
            groups: source.additional_claims().groups.clone(),
        }
    }};
}

pub struct Provider {
    /// Replaced when the provider's keys have rotated (see [`Provider::refresh_keys`]).
    client: std::sync::RwLock<Arc<OidcClient>>,
    http: ProviderHttp,
    config: OidcConfig,
    redirect: String,
    /// When keys were last rediscovered, to do it at most once per [`KEY_REFRESH_GAP`].
    refreshed: std::sync::Mutex<Option<Instant>>,
    scopes: Vec<String>,
    extra_params: Vec<(String, String)>,
    pkce: Option<PkceMethod>,
}

/// An ID token signed by a key we do not know triggers a new discovery (the provider rotated
/// its keys, as go-oidc's key set notices too), at most this often. ID tokens come from the
/// provider's token endpoint over our own request, never from the browser, so only the
/// provider can cause this; the gap keeps a confused provider from costing more.
pub const KEY_REFRESH_GAP: Duration = Duration::from_secs(10);

/// Discovery (metadata and key set) and the client built from it.
async fn build_client(
    http: &ProviderHttp,
    config: &OidcConfig,
    redirect: &str,
) -> Result<OidcClient, String> {
    let issuer = IssuerUrl::new(config.issuer.trim().to_string())
        .map_err(|e| format!("invalid issuer URL: {e}"))?;
    let metadata = CoreProviderMetadata::discover_async(issuer, http)
        .await
        .map_err(|e| error_chain(&e))?;
    let secret = Some(config.client_secret.clone())
        .filter(|s| !s.is_empty())
        .map(ClientSecret::new);
    let redirect =
        RedirectUrl::new(redirect.to_string()).map_err(|e| format!("redirect URL: {e}"))?;
    Ok(OidcClient::from_provider_metadata(
        metadata,
        ClientId::new(config.client_id.clone()),
        secret,
    )
    .set_redirect_uri(redirect))
}

impl Provider {
    /// Reads the provider's discovery document and key set (bounded by the HTTP client's
    /// timeouts); `redirect` is our `/oidc/callback`.
    pub async fn discover(config: &OidcConfig, redirect: &str) -> Result<Provider, String> {
        let http = ProviderHttp::new()?;
        let client = build_client(&http, config, redirect).await?;
        Ok(Provider {
            client: std::sync::RwLock::new(Arc::new(client)),
            http,
            config: config.clone(),
            redirect: redirect.to_string(),
            refreshed: std::sync::Mutex::new(None),
            scopes: config.scope.clone(),
            extra_params: config
                .extra_params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            pkce: config.pkce.enabled.then_some(config.pkce.method),
        })
    }

    fn client(&self) -> Arc<OidcClient> {
        self.client
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Rediscovers the provider (new signing keys) unless that was done less than
    /// [`KEY_REFRESH_GAP`] ago; the new client, when there is one.
    async fn refresh_keys(&self) -> Option<Arc<OidcClient>> {
        {
            let mut refreshed = self.refreshed.lock().unwrap_or_else(|p| p.into_inner());
            if refreshed.is_some_and(|at| at.elapsed() < KEY_REFRESH_GAP) {
                return None;
            }
            *refreshed = Some(Instant::now());
        }
        match build_client(&self.http, &self.config, &self.redirect).await {
            Ok(client) => {
                let client = Arc::new(client);
                *self.client.write().unwrap_or_else(|p| p.into_inner()) = client.clone();
                tracing::info!(
                    "OIDC provider rediscovered: an ID token was signed by a key we did not know"
                );
                Some(client)
            }
            Err(error) => {
                tracing::warn!(%error, "OIDC provider rediscovery failed");
                None
            }
        }
    }

    /// A new authorization request with fresh state, nonce and (when on) PKCE verifier.
    pub fn authorize(&self) -> Authorization {
        let client = self.client();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            || CsrfToken::new_random_len(32),
            || Nonce::new_random_len(32),
        );
        for scope in self.scopes.iter().filter(|s| s.as_str() != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let mut pkce_verifier = None;
        if let Some(method) = self.pkce {
            let (challenge, verifier) = match method {
                PkceMethod::S256 => PkceCodeChallenge::new_random_sha256(),
                PkceMethod::Plain => PkceCodeChallenge::new_random_plain(),
            };
            request = request
                .set_pkce_challenge(challenge)
                .add_extra_param("access_type", "offline");
            pkce_verifier = Some(verifier.secret().clone());
        }
        for (key, value) in &self.extra_params {
            request = request.add_extra_param(key.clone(), value.clone());
        }
        let (url, state, nonce) = request.url();
        Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier,
        }
    }

    /// Exchanges the code, validates the ID token against `nonce`, and merges userinfo (an
    /// unreachable or inconsistent userinfo endpoint leaves the token's claims, as in
    /// headscale).
    pub async fn complete(
        &self,
        code: &str,
        nonce: &str,
        pkce_verifier: Option<&str>,
    ) -> Result<Verified, CallbackError> {
        let client = self.client();
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| CallbackError::InvalidCode(e.to_string()))?;
        if let Some(verifier) = pkce_verifier {
            exchange = exchange.set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()));
        }
        let tokens = exchange
            .request_async(&self.http)
            .await
            .map_err(|e| CallbackError::InvalidCode(error_chain(&e)))?;
        let id_token = tokens.id_token().ok_or(CallbackError::NoIdToken)?;
        let nonce = Nonce::new(nonce.to_string());
        let mut verified = id_token
            .claims(&client.id_token_verifier(), &nonce)
            .cloned();
        if matches!(
            verified,
            Err(
                openidconnect::ClaimsVerificationError::SignatureVerification(
                    openidconnect::SignatureVerificationError::NoMatchingKey
                )
            )
        ) {
            if let Some(newer) = self.refresh_keys().await {
                verified = id_token.claims(&newer.id_token_verifier(), &nonce).cloned();
            }
        }
        let token_claims = verified.map_err(|e| match e {
            openidconnect::ClaimsVerificationError::InvalidNonce(_) => CallbackError::NonceMismatch,
            other => CallbackError::InvalidIdToken(error_chain(&other)),
        })?;
        let mut claims = claims_of!(token_claims, token_claims.issuer().to_string());
        let expires = Timestamp::from_unix_ms(token_claims.expiration().timestamp_millis());
        match self.userinfo(&tokens, token_claims.subject()).await {
            Ok(info) => claims.merge_userinfo(&info),
            Err(error) => {
                tracing::info!(%error, "OIDC userinfo unavailable; using the ID token's claims only")
            }
        }
        Ok(Verified { claims, expires })
    }

    async fn userinfo(
        &self,
        tokens: &Tokens,
        subject: &openidconnect::SubjectIdentifier,
    ) -> Result<Claims, String> {
        let info: openidconnect::UserInfoClaims<ExtraClaims, CoreGenderClaim> = self
            .client()
            .user_info(tokens.access_token().clone(), Some(subject.clone()))
            .map_err(|e| e.to_string())?
            .request_async(&self.http)
            .await
            .map_err(|e| error_chain(&e))?;
        Ok(claims_of!(info, String::new()))
    }
}
