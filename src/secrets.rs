//! Secrets handed to admins: pre-auth keys and API keys, `hskey-<kind>-<prefix>-<secret>` as
//! headscale writes them. Only the prefix (for lookup and display) and a hash of the secret
//! are ever stored; the full key is shown once. Our keys are hashed with SHA-256; keys
//! imported from headscale keep its bcrypt hash, and headscale's older forms (legacy API keys
//! `<7-char prefix>.<secret>`, legacy plaintext pre-auth keys) are accepted for them.
//!
//! bcrypt is slow on purpose (tens of milliseconds per check): it never runs on the engine's
//! writer or a runtime worker but on the blocking pool, at most [`MAX_CONCURRENT_BCRYPT`] at
//! once, and a successful check is remembered (key id → SHA-256 of the presented secret) so a
//! script's repeated calls pay it once.

use crate::core::event::SecretHash;
use crate::core::keys::Digest;
use crate::store::record::sha256;
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

pub const PRE_AUTH_KEY_KIND: &str = "auth";
pub const API_KEY_KIND: &str = "api";
/// Length of the public prefix in `hskey-` keys (ours and headscale's).
pub const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 64;
/// The longest secret we accept (ours and headscale's are 64 characters).
const MAX_SECRET_LEN: usize = 256;
/// Length of the prefix of headscale's legacy API keys (`<prefix>.<secret>`).
pub const LEGACY_API_PREFIX_LEN: usize = 7;
/// bcrypt checks running at once; more wait their turn (each costs one blocking thread).
pub const MAX_CONCURRENT_BCRYPT: usize = 2;
/// Successful bcrypt checks remembered; when full, the cache is emptied and refilled.
pub const MAX_CACHED_BCRYPT: usize = 4096;

/// A freshly generated key: the full text for the admin, the parts for the log.
pub struct GeneratedKey {
    pub full: String,
    pub prefix: String,
    pub secret_hash: Digest,
}

fn random_text(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn generate(kind: &str) -> GeneratedKey {
    let prefix = random_text(PREFIX_LEN).to_ascii_lowercase();
    let secret = random_text(SECRET_LEN);
    GeneratedKey {
        full: format!("hskey-{kind}-{prefix}-{secret}"),
        prefix,
        secret_hash: sha256(secret.as_bytes()),
    }
}

/// Whether `secret` hashes to `expected`, compared in constant time. With `None` (unknown
/// prefix) the same work is done against a dummy, so timing does not reveal which exist.
pub fn secret_matches(secret: &str, expected: Option<&Digest>) -> bool {
    use subtle::ConstantTimeEq;
    let candidate = sha256(secret.as_bytes());
    let equal: bool = expected
        .copied()
        .unwrap_or_default()
        .0
        .ct_eq(&candidate.0)
        .into();
    equal && expected.is_some()
}

/// headscale's key alphabet (base64url without padding).
fn is_base64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Splits `hskey-<kind>-<prefix>-<secret>` into prefix and secret by fixed length, as
/// headscale does: its prefixes are base64url and may themselves contain `-`.
pub fn split_key<'a>(text: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
    let rest = text
        .trim()
        .strip_prefix("hskey-")?
        .strip_prefix(kind)?
        .strip_prefix('-')?;
    if !rest.is_ascii() || rest.len() < PREFIX_LEN + 2 || rest.as_bytes()[PREFIX_LEN] != b'-' {
        return None;
    }
    let (prefix, secret) = (&rest[..PREFIX_LEN], &rest[PREFIX_LEN + 1..]);
    (is_base64url(prefix) && is_base64url(secret) && secret.len() <= MAX_SECRET_LEN)
        .then_some((prefix, secret))
}

/// An API key as presented: `hskey-api-<prefix>-<secret>`, or headscale's legacy
/// `<7-char prefix>.<secret>`. Returns (prefix, secret).
pub fn split_api_key(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    if text.starts_with("hskey-") {
        return split_key(text, API_KEY_KIND);
    }
    let (prefix, secret) = text.split_once('.')?;
    (prefix.len() == LEGACY_API_PREFIX_LEN
        && prefix.is_ascii()
        && !secret.is_empty()
        && secret.len() <= MAX_SECRET_LEN)
        .then_some((prefix, secret))
}

/// A pre-auth key as presented.
#[derive(Debug, PartialEq, Eq)]
pub enum PresentedAuthKey<'a> {
    /// `hskey-auth-<prefix>-<secret>`.
    Prefixed { prefix: &'a str, secret: &'a str },
    /// headscale's legacy plaintext key (imported with an empty prefix and the SHA-256 of
    /// the whole key).
    Legacy(&'a str),
}

pub fn parse_auth_key(text: &str) -> Option<PresentedAuthKey<'_>> {
    let text = text.trim();
    if text.starts_with("hskey-") {
        let (prefix, secret) = split_key(text, PRE_AUTH_KEY_KIND)?;
        return Some(PresentedAuthKey::Prefixed { prefix, secret });
    }
    (!text.is_empty() && text.len() <= MAX_SECRET_LEN && is_base64url(text))
        .then_some(PresentedAuthKey::Legacy(text))
}

/// Which key a cached bcrypt success belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRef {
    Api(u64),
    PreAuth(u64),
}

/// Checks secrets against either hash kind; shared by the API and registration.
pub struct Verifier {
    permits: tokio::sync::Semaphore,
    /// Key → SHA-256 of the secret that passed bcrypt for it.
    cache: Mutex<HashMap<KeyRef, Digest>>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            permits: tokio::sync::Semaphore::new(MAX_CONCURRENT_BCRYPT),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

/// The process-wide verifier (its cache and bcrypt limit are per process by nature).
pub fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(Verifier::default)
}

impl Verifier {
    fn cached(&self, key: KeyRef, digest: &Digest) -> bool {
        use subtle::ConstantTimeEq;
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&key)
            .is_some_and(|known| bool::from(known.0.ct_eq(&digest.0)))
    }

    fn remember(&self, key: KeyRef, digest: Digest) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_BCRYPT {
            cache.clear();
        }
        cache.insert(key, digest);
    }

    /// Whether `secret` matches `hash` (`None`: unknown key, a dummy compare is done).
    /// SHA-256 is checked inline; bcrypt on the blocking pool under the concurrency limit,
    /// unless this exact secret already passed for this key.
    pub async fn matches(&self, key: KeyRef, secret: &str, hash: Option<&SecretHash>) -> bool {
        let bcrypt_hash = match hash {
            Some(SecretHash::Bcrypt(text)) => text.clone(),
            Some(SecretHash::Sha256(digest)) => return secret_matches(secret, Some(digest)),
            None => return secret_matches(secret, None),
        };
        let digest = sha256(secret.as_bytes());
        if self.cached(key, &digest) {
            return true;
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let secret = secret.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            bcrypt::verify(secret.as_bytes(), &bcrypt_hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if ok {
            self.remember(key, digest);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_split_back() {
        let key = generate(API_KEY_KIND);
        let (prefix, secret) = split_key(&key.full, API_KEY_KIND).unwrap();
        assert_eq!(prefix, key.prefix);
        assert_eq!(sha256(secret.as_bytes()), key.secret_hash);
        assert!(split_key(&key.full, PRE_AUTH_KEY_KIND).is_none());
        assert!(split_key("hskey-api-short-x", API_KEY_KIND).is_none());
    }

    #[test]
    fn headscale_prefixes_with_dashes_split_by_length() {
        let secret = "a-b_C".repeat(12) + "dEf4";
        let text = format!("hskey-api-Ab-d_EF-h1k2-{secret}");
        assert_eq!(
            split_api_key(&text),
            Some(("Ab-d_EF-h1k2", secret.as_str()))
        );
        let text = format!("hskey-auth--bcdefghijk_-{secret}");
        assert_eq!(
            parse_auth_key(&text),
            Some(PresentedAuthKey::Prefixed {
                prefix: "-bcdefghijk_",
                secret: &secret
            })
        );
        // The separator must sit right after the 12 characters.
        assert!(split_key("hskey-api-abcdefghijk-xyz", API_KEY_KIND).is_none());
        assert!(split_key("hskey-api-abcdefghijklmxyz", API_KEY_KIND).is_none());
        assert!(split_key("hskey-api-abcdefghijkl-x y", API_KEY_KIND).is_none());
    }

    #[test]
    fn legacy_forms_are_recognised() {
        assert_eq!(split_api_key("abcdefg.s3cret"), Some(("abcdefg", "s3cret")));
        assert_eq!(split_api_key("abcdef.s3cret"), None);
        assert_eq!(
            parse_auth_key("0123456789abcdef0123456789abcdef0123456789abcdef"),
            Some(PresentedAuthKey::Legacy(
                "0123456789abcdef0123456789abcdef0123456789abcdef"
            ))
        );
        assert_eq!(parse_auth_key(""), None);
        assert_eq!(parse_auth_key("not a key"), None);
    }

    #[tokio::test]
    async fn bcrypt_hashes_verify_and_successes_are_cached() {
        let verifier = Verifier::default();
        let hash = SecretHash::Bcrypt(bcrypt::hash("s3cret", 4).unwrap());
        let key = KeyRef::Api(7);
        assert!(!verifier.matches(key, "wrong", Some(&hash)).await);
        assert!(!verifier.cached(key, &sha256(b"s3cret")));
        assert!(verifier.matches(key, "s3cret", Some(&hash)).await);
        assert!(verifier.cached(key, &sha256(b"s3cret")));
        assert!(!verifier.cached(KeyRef::PreAuth(7), &sha256(b"s3cret")));
        assert!(!verifier.matches(key, "wrong", Some(&hash)).await);
        let sha = SecretHash::Sha256(sha256(b"x"));
        assert!(verifier.matches(key, "x", Some(&sha)).await);
        assert!(!verifier.matches(key, "x", None).await);
    }
}
