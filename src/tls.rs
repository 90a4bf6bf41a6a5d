//! TLS on the main listener: loads `tls_cert_path`/`tls_key_path` (PEM) into a rustls acceptor
//! (ring provider, ALPN `http/1.1`: the DERP client and the `/ts2021` upgrade speak HTTP/1.1).
//! The accept loop, shared with plain TCP, is `listener.rs`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {path}: {message}")]
    Cert { path: String, message: String },
    #[error("TLS key {path}: {message}")]
    Key { path: String, message: String },
    #[error("TLS setup: {0}")]
    Config(#[from] rustls::Error),
}

/// Builds the acceptor from PEM files (certificate chain, then the private key).
pub fn acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_error = |message: String| TlsError::Cert {
        path: cert_path.display().to_string(),
        message,
    };
    let key_error = |message: String| TlsError::Key {
        path: key_path.display().to_string(),
        message,
    };
    let cert_pem = std::fs::read(cert_path).map_err(|e| cert_error(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no CERTIFICATE block".into()));
    }
    let key_pem = std::fs::read(key_path).map_err(|e| key_error(e.to_string()))?;
    // L10: the TLS key is a secret file like the others.
    crate::keyfile::warn_if_readable_by_others(key_path);
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| key_error(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| key_error(format!("does not match the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
