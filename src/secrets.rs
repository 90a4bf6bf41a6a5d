//! Secrets handed to admins: pre-auth keys and API keys, `hskey-<kind>-<prefix>-<secret>` as
//! headscale writes them. Only the prefix (for lookup and display) and the SHA-256 of the
//! secret are ever stored; the full key is shown once.

use crate::core::keys::Digest;
use crate::store::record::sha256;
use rand::distributions::Alphanumeric;
use rand::Rng;

pub const PRE_AUTH_KEY_KIND: &str = "auth";
pub const API_KEY_KIND: &str = "api";
const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 64;

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

/// Splits `hskey-<kind>-<prefix>-<secret>` into prefix and secret.
pub fn split_key<'a>(text: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
    let rest = text
        .trim()
        .strip_prefix("hskey-")?
        .strip_prefix(kind)?
        .strip_prefix('-')?;
    let (prefix, secret) = rest.split_once('-')?;
    (prefix.len() == PREFIX_LEN && !secret.is_empty() && secret.len() <= 256)
        .then_some((prefix, secret))
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
}
