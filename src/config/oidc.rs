//! headscale's `oidc:` section: logins through an OpenID Connect provider (`src/oidc/`).
//! Keys, defaults and meanings are headscale 0.29's; OIDC is on when `issuer` is set. Also
//! resolving `client_secret_path` (headscale expands environment variables in it, as Go's
//! `os.ExpandEnv`) and the one-line `configtest` summary. The secret itself is never
//! printed, logged, serialized or put in an error.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

/// The most a `client_secret_path` file may hold: secrets are tens of bytes; this stops a
/// path pointed at a device or a log from being read whole.
pub const MAX_CLIENT_SECRET_FILE_BYTES: u64 = 64 * 1024;

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
    /// The client secret: as written, or, after loading, read from `client_secret_path`
    /// (exclusive with it). Never serialized (always written as `""`), never in `Debug`.
    #[serde(serialize_with = "never_serialize")]
    pub client_secret: String,
    /// A file holding the client secret (environment variables in the path expanded).
    #[serde(deserialize_with = "super::scalar::opt_from_str")]
    pub client_secret_path: Option<PathBuf>,
    /// Scopes asked for.
    #[serde(deserialize_with = "text_list")]
    pub scope: Vec<String>,
    /// Extra query parameters for the authorization request (`domain_hint`, `prompt`, ...).
    #[serde(deserialize_with = "text_map")]
    pub extra_params: BTreeMap<String, String>,
    /// Email domains allowed to log in; empty = any.
    #[serde(deserialize_with = "text_list")]
    pub allowed_domains: Vec<String>,
    /// Email addresses allowed to log in; empty = any.
    #[serde(deserialize_with = "text_list")]
    pub allowed_users: Vec<String>,
    /// Groups (the `groups` claim) of which a user must be in one; empty = any.
    #[serde(deserialize_with = "text_list")]
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

/// How the PKCE challenge is derived from the verifier. Written exactly `S256` or `plain`
/// (headscale's values; anything else is refused with headscale's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
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

    /// headscale's resolution of the secret at load: `client_secret` and
    /// `client_secret_path` are exclusive; the path has `$VAR`/`${VAR}` expanded from `env`
    /// and the file's content, trimmed, becomes `client_secret`. Errors are
    /// `(key, message)`, naming the expanded path, never the content.
    pub(super) fn resolve_client_secret(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), (&'static str, String)> {
        let Some(path) = &self.client_secret_path else {
            return Ok(());
        };
        if !self.client_secret.is_empty() {
            return Err((
                "oidc.client_secret",
                "and oidc.client_secret_path are mutually exclusive (set one)".into(),
            ));
        }
        let expanded = PathBuf::from(expand_env(&path.to_string_lossy(), env));
        let cannot = |problem: String| {
            (
                "oidc.client_secret_path",
                format!(
                    "{:?}: cannot read: {problem}",
                    expanded.display().to_string()
                ),
            )
        };
        let file = std::fs::File::open(&expanded).map_err(|e| cannot(e.to_string()))?;
        let mut bytes = Vec::new();
        file.take(MAX_CLIENT_SECRET_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| cannot(e.to_string()))?;
        if bytes.len() as u64 > MAX_CLIENT_SECRET_FILE_BYTES {
            return Err(cannot(format!(
                "larger than {MAX_CLIENT_SECRET_FILE_BYTES} bytes, not a client secret"
            )));
        }
        let text = String::from_utf8(bytes).map_err(|_| cannot("not UTF-8 text".into()))?;
        self.client_secret = text.trim().to_string();
        Ok(())
    }

    /// One line for `configtest`: where logins go and what is checked; never the secret.
    pub fn describe(&self) -> String {
        if !self.enabled() {
            return "off".into();
        }
        let secret = match (&self.client_secret_path, self.client_secret.is_empty()) {
            (Some(path), _) => format!("secret from {}", path.display()),
            (None, false) => "secret set".into(),
            (None, true) => "no secret".into(),
        };
        let mut line = format!(
            "{}, client {:?}, {secret}, scopes {}",
            self.issuer,
            self.client_id,
            self.scope.join(" ")
        );
        if self.pkce.enabled {
            line.push_str(&format!(", PKCE {}", self.pkce.method.as_str()));
        }
        let limits: Vec<String> = [
            ("domain", self.allowed_domains.len()),
            ("user", self.allowed_users.len()),
            ("group", self.allowed_groups.len()),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{n} {what}(s)"))
        .collect();
        if !limits.is_empty() {
            line.push_str(&format!(", allowed: {}", limits.join(", ")));
        }
        if !self.only_start_if_oidc_is_available {
            line.push_str(", starts without the provider");
        }
        line
    }
}

impl PkceMethod {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PkceMethod::S256 => "S256",
            PkceMethod::Plain => "plain",
        }
    }
}

impl<'de> Deserialize<'de> for PkceMethod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "S256" => Ok(PkceMethod::S256),
            "plain" => Ok(PkceMethod::Plain),
            other => Err(serde::de::Error::custom(format!(
                "must be either 'plain' or 'S256', not {other:?}"
            ))),
        }
    }
}

/// Writes `""` whatever the value: the secret never leaves through serialization (headscale:
/// `json:"-"`), while the key stays in the schema of known keys.
fn never_serialize<S: Serializer>(_: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str("")
}

/// A mapping of text, with scalar values taken as text (`max_age: 0` is `"0"`), as viper's
/// `GetStringMapString` reads `extra_params`.
fn text_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    use serde_yaml_ng::Value;
    let raw = Option::<BTreeMap<String, Value>>::deserialize(deserializer)?.unwrap_or_default();
    raw.into_iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text,
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Null => String::new(),
                _ => {
                    return Err(serde::de::Error::custom(format!(
                        "{key:?} must be text, a number or a boolean"
                    )))
                }
            };
            Ok((key, text))
        })
        .collect()
}

/// A list of text, or one string split on white space (`scope: openid profile email`), as
/// viper's `GetStringSlice` reads a string; scalar entries are taken as text.
fn text_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    use serde_yaml_ng::Value;
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(text.split_whitespace().map(String::from).collect()),
        Some(Value::Sequence(items)) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::String(text) => Ok(text),
                Value::Bool(b) => Ok(b.to_string()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(serde::de::Error::custom(format!(
                    "entry {index} must be text, not a list or a mapping"
                ))),
            })
            .collect(),
        Some(_) => Err(serde::de::Error::custom(
            "must be a list of text (or one space-separated string)",
        )),
    }
}

/// Go's `os.ExpandEnv`: `$NAME` (letters, digits, `_`) and `${NAME}` become the variable's
/// value, empty when unset; `$` plus a special character (`$1`, `$$`, `${*}`) names that
/// one-character variable; `${}` and an unclosed `${` are dropped; a `$` followed by
/// anything else (or nothing) stays.
pub fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            out.push_str(&text[copied..j]);
            let (name, width) = shell_name(&text[j + 1..]);
            match name {
                // Bad syntax: the characters are eaten.
                None if width > 0 => {}
                None => out.push('$'),
                Some(name) => out.push_str(&env(name).unwrap_or_default()),
            }
            j += width;
            copied = j + 1;
        }
        j += 1;
    }
    out.push_str(&text[copied.min(text.len())..]);
    out
}

/// The variable name at the start of `rest` (just after a `$`) and how many bytes it takes.
fn shell_name(rest: &str) -> (Option<&str>, usize) {
    let bytes = rest.as_bytes();
    let special = |c: u8| {
        matches!(
            c,
            b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
        )
    };
    if bytes[0] == b'{' {
        if bytes.len() > 2 && special(bytes[1]) && bytes[2] == b'}' {
            return (Some(&rest[1..2]), 3);
        }
        return match rest[1..].find('}') {
            Some(0) => (None, 2),
            Some(end) => (Some(&rest[1..end + 1]), end + 2),
            None => (None, 1),
        };
    }
    if special(bytes[0]) {
        return (Some(&rest[..1]), 1);
    }
    let end = bytes
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
        .unwrap_or(bytes.len());
    match end {
        0 => (None, 0),
        end => (Some(&rest[..end]), end),
    }
}
