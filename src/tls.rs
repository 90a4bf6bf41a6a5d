//! TLS on the main listener. The certificate comes from a [`CertificateSource`]: files
//! (`tls_cert_path`/`tls_key_path`, PEM, re-read on SIGHUP so a renewed certificate needs no
//! restart, audit L10) or built-in ACME (`tls_letsencrypt_hostname`, `src/acme/`, renewed in
//! the background). [`server_config`] builds the rustls config (ring provider) for any ALPN
//! list, so other TLS listeners (gRPC's `h2`) share the certificate; the main listener offers
//! `http/1.1` (the DERP client and the `/ts2021` upgrade speak HTTP/1.1), plus `acme-tls/1`
//! when TLS-ALPN-01 challenges are answered. The accept loop, shared with plain TCP, is
//! `listener.rs`.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
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

/// The certificate and key in force, re-read from their files on `reload` (SIGHUP, as
/// `systemctl reload` sends), so a renewed certificate needs no restart. A reload that fails
/// keeps the pair in force. rustls asks for the pair on every handshake, so the swap takes
/// effect for the next connection; open ones keep theirs.
#[derive(Debug)]
pub struct TlsCertificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl TlsCertificates {
    /// Loads the pair once; an error names the file at fault.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<TlsCertificates>, TlsError> {
        let current = read_pair(cert_path, key_path)?;
        Ok(Arc::new(TlsCertificates {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Re-reads both files; on success the new pair serves the next handshakes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = read_pair(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(())
    }
}

impl ResolvesServerCert for TlsCertificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Where the served certificate comes from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// `tls_cert_path`/`tls_key_path`, re-read by [`CertificateSource::reload`].
    Files(Arc<TlsCertificates>),
    /// Built-in ACME; the certificate changes by itself when renewed.
    Acme(Arc<crate::acme::AcmeResolver>),
}

impl CertificateSource {
    /// SIGHUP: re-reads certificate files; an ACME certificate needs nothing (`Ok(false)`).
    /// `Ok(true)` when files were re-read.
    pub fn reload(&self) -> Result<bool, TlsError> {
        match self {
            CertificateSource::Files(files) => files.reload().map(|()| true),
            CertificateSource::Acme(_) => Ok(false),
        }
    }

    fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        match self {
            CertificateSource::Files(files) => files.clone(),
            CertificateSource::Acme(acme) => acme.clone(),
        }
    }
}

/// A rustls server config serving `source`'s current certificate (every handshake asks it),
/// offering `alpn` in order, plus `acme-tls/1` when TLS-ALPN-01 challenges are answered.
pub fn server_config(
    source: &CertificateSource,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(source.resolver());
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if let CertificateSource::Acme(acme) = source {
        if acme.answers_tls_alpn() {
            config
                .alpn_protocols
                .push(crate::acme::challenge::ACME_TLS_ALPN.to_vec());
        }
    }
    Ok(Arc::new(config))
}

/// The acceptor for the main listener (ALPN `http/1.1`).
pub fn acceptor(source: &CertificateSource) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(server_config(source, &[b"http/1.1"])?))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a PEM pair (certificate chain, then the private key matching its first
/// certificate).
fn read_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
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
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| key_error(format!("does not match the certificate: {e}")))
}
