//! The CLI's remote mode: the same `/api/v1` requests, sent over HTTPS to a server elsewhere
//! with a Bearer API key (`cli.address`, `cli.api_key`; `HEADSCALE_CLI_ADDRESS`,
//! `HEADSCALE_CLI_API_KEY`). Certificates are checked against the system roots (which honour
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`) unless `cli.insecure` says otherwise.

use crate::config::CliConfig;
use crate::error_chain::error_chain;
use anyhow::{anyhow, bail, Context as _};
use axum::body::Body;
use axum::http::{Request, Response, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

/// A configured remote server.
pub struct Remote {
    /// `https://host:port` (or `http://…` when the address says so), no trailing slash.
    base: String,
    api_key: String,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

impl Remote {
    /// Checks the CLI settings and builds the HTTPS client; `None` when no address is set.
    pub fn from_config(cli: &CliConfig) -> anyhow::Result<Option<Remote>> {
        let Some(address) = cli
            .address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
        else {
            return Ok(None);
        };
        let api_key = cli
            .api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "cli.address is {address} but no API key is set: set cli.api_key or \
                     HEADSCALE_CLI_API_KEY (create one on the server with `headscale apikeys create`)"
                )
            })?
            .to_string();
        let base = base_url(address)?;
        let tls = tls_config(cli.insecure)?;
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Some(Remote {
            base,
            api_key,
            timeout: cli.timeout,
            client,
        }))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `request` (its URI a path and query) to the server with the API key.
    pub async fn send(&self, request: Request<Body>) -> anyhow::Result<Response<Body>> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = format!("{}{path}", self.base)
            .parse::<Uri>()
            .context("invalid request path")?;
        parts.headers.remove(axum::http::header::HOST);
        parts.headers.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {}", self.api_key)
                .parse()
                .map_err(|_| anyhow!("the API key contains characters not allowed in a header"))?,
        );
        let request = Request::from_parts(parts, body);
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| {
                anyhow!(
                    "no answer from {} within {} (cli.timeout)",
                    self.base,
                    humantime::format_duration(self.timeout)
                )
            })?
            .map_err(|e| anyhow!("cannot reach {}: {}", self.base, error_chain(&e)))?;
        Ok(response.map(Body::new))
    }
}

/// `host:port` means HTTPS; an explicit `http://` or `https://` scheme is kept.
fn base_url(address: &str) -> anyhow::Result<String> {
    let with_scheme = if address.contains("://") {
        address.to_string()
    } else {
        format!("https://{address}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|_| anyhow!("cli.address {address:?} is not host:port or a URL"))?;
    match uri.scheme_str() {
        Some("https") | Some("http") => {}
        _ => bail!("cli.address {address:?} must use https:// (or http://)"),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("cli.address {address:?} has no host"))?;
    Ok(format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("https"),
        authority
    ))
}

fn tls_config(insecure: bool) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS setup: {e}"))?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            bail!(
                "no trusted root certificates found on this system (set SSL_CERT_FILE, or \
                 cli.insecure: true to skip verification)"
            );
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(config)
}

/// `cli.insecure: true`: any certificate is accepted (signatures are still checked, so the
/// connection is encrypted to whoever holds the presented key).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::base_url;

    #[test]
    fn addresses_become_base_urls() {
        assert_eq!(
            base_url("hs.example.com:443").unwrap(),
            "https://hs.example.com:443"
        );
        assert_eq!(
            base_url("https://hs.example.com/").unwrap(),
            "https://hs.example.com"
        );
        assert_eq!(
            base_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("not a host").is_err());
    }
}
