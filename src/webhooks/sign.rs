//! Tailscale's webhook signature (pure): `Tailscale-Webhook-Signature: t=<unix seconds>,
//! v1=<hex HMAC-SHA256 over "<t>.<body>">`, keyed with the endpoint's secret as UTF-8 text.
//! `verify` is what a receiver does (our tests use it).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header name.
pub const SIGNATURE_HEADER: &str = "Tailscale-Webhook-Signature";

fn mac(secret: &str, unix_seconds: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` sent at `unix_seconds`.
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let tag = mac(secret, unix_seconds, body).finalize().into_bytes();
    format!("t={unix_seconds},v1={}", hex::encode(tag))
}

/// Whether `header` is a valid signature of `body` under `secret` (constant-time compare).
/// Returns the signed time on success.
pub fn verify(secret: &str, header: &str, body: &[u8]) -> Option<i64> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (t, v1) = (t?, v1?);
    mac(secret, t, body).verify_slice(&v1).ok().map(|_| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_body_does_not() {
        let header = signature("hskey-webhook-secret", 1_700_000_000, b"[{}]");
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        assert_eq!(
            verify("hskey-webhook-secret", &header, b"[{}]"),
            Some(1_700_000_000)
        );
        assert_eq!(verify("hskey-webhook-secret", &header, b"[{ }]"), None);
        assert_eq!(verify("other", &header, b"[{}]"), None);
        assert_eq!(verify("hskey-webhook-secret", "garbage", b"[{}]"), None);
    }

    #[test]
    fn matches_an_independent_hmac_computation() {
        // The tag is HMAC-SHA256 over exactly "<t>.<body>".
        let header = signature("Jefe", 0, b"x");
        let mut direct = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        direct.update(b"0.x");
        let expected = hex::encode(direct.finalize().into_bytes());
        assert_eq!(header, format!("t=0,v1={expected}"));
    }
}
