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

/// An HTTP/1.1 connector for `https://` (verified against `tls`) and plain `http://` URLs,
/// with a connect timeout: what our fetches of operator-configured URLs use.
pub fn https_or_http_connector(
    tls: rustls::ClientConfig,
    connect_timeout: std::time::Duration,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}
