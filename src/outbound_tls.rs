//! TLS for the requests this server makes (DERP map fetches, ACME, the OIDC provider): rustls
//! with the ring provider and the system's trusted roots, which honour `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` (how tests and private CAs are trusted). One place, so every outbound
//! client verifies servers the same way.

use std::sync::Arc;

/// The roots found on this system; empty when there are none (callers decide whether that
/// is fatal: ACME cannot work without, a plain-HTTP provider can).
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// A client config over `roots` (TLS 1.2 and 1.3, no client certificate).
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
