//! The answers to the CA's challenges while an order is open: HTTP-01 tokens served on the
//! `tls_letsencrypt_listen` listener (which redirects everything else to `server_url`, as
//! headscale does), and TLS-ALPN-01 certificates (RFC 8737) handed out by the TLS resolver
//! to a client that offers ALPN `acme-tls/1`. Entries live only while their order does.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The ALPN protocol of TLS-ALPN-01 validation connections.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Open challenges at once (one order for one name has one; this only bounds a bug).
const MAX_OPEN_CHALLENGES: usize = 16;

/// Challenge answers shared by the order task, the HTTP-01 listener and the TLS resolver.
#[derive(Debug, Default)]
pub struct Challenges {
    /// HTTP-01: token → key authorization.
    http: Mutex<HashMap<String, String>>,
    /// TLS-ALPN-01: hostname (lowercase) → validation certificate.
    tls_alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    pub fn put_http(&self, token: &str, key_authorization: &str) {
        let mut http = self.http.lock().unwrap_or_else(|e| e.into_inner());
        if http.len() < MAX_OPEN_CHALLENGES {
            http.insert(token.to_string(), key_authorization.to_string());
        }
    }

    pub fn remove_http(&self, token: &str) {
        self.http
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }

    fn http_answer(&self, token: &str) -> Option<String> {
        self.http
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    pub fn put_tls_alpn(&self, hostname: &str, certified: Arc<CertifiedKey>) {
        let mut tls = self.tls_alpn.lock().unwrap_or_else(|e| e.into_inner());
        if tls.len() < MAX_OPEN_CHALLENGES {
            tls.insert(hostname.to_ascii_lowercase(), certified);
        }
    }

    pub fn remove_tls_alpn(&self, hostname: &str) {
        self.tls_alpn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&hostname.to_ascii_lowercase());
    }

    /// The validation certificate for `server_name`, if an order is waiting for it.
    pub fn tls_alpn_answer(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&server_name.to_ascii_lowercase())
            .cloned()
    }
}

/// The RFC 8737 validation certificate: self-signed for `hostname` alone, with the critical
/// `acmeIdentifier` extension holding SHA-256(key authorization).
pub fn tls_alpn_certificate(
    hostname: &str,
    key_authorization_digest: &[u8],
) -> Result<CertifiedKey, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![hostname.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(
        key_authorization_digest,
    )];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki, which
    // refuses the critical acmeIdentifier extension.
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing_key,
    ))
}

#[derive(Clone)]
struct HttpState {
    challenges: Arc<Challenges>,
    server_url: String,
}

/// The HTTP-01 listener's routes: the tokens, and a redirect to `server_url` for the rest.
pub fn http01_router(challenges: Arc<Challenges>, server_url: &str) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(answer))
        .fallback(redirect)
        .with_state(HttpState {
            challenges,
            server_url: server_url.trim_end_matches('/').to_string(),
        })
}

async fn answer(State(state): State<HttpState>, Path(token): Path<String>) -> Response {
    match state.challenges.http_answer(&token) {
        Some(key_authorization) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            key_authorization,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn redirect(State(state): State<HttpState>, uri: Uri) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    (
        StatusCode::FOUND,
        [(header::LOCATION, format!("{}{path}", state.server_url))],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    async fn get_path(router: &Router, path: &str) -> (StatusCode, String, String) {
        let response = router
            .clone()
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, location, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn http01_serves_open_tokens_and_redirects_the_rest() {
        let challenges = Arc::new(Challenges::default());
        let router = http01_router(challenges.clone(), "https://hs.example.com/");
        challenges.put_http("tok-1", "tok-1.thumb");
        let (status, _, body) = get_path(&router, "/.well-known/acme-challenge/tok-1").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "tok-1.thumb"));
        let (status, _, _) = get_path(&router, "/.well-known/acme-challenge/other").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        challenges.remove_http("tok-1");
        let (status, _, _) = get_path(&router, "/.well-known/acme-challenge/tok-1").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, location, _) = get_path(&router, "/apple?x=1").await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(location, "https://hs.example.com/apple?x=1");
    }

    #[test]
    fn the_tls_alpn_certificate_names_the_host_and_carries_the_digest() {
        let digest = [7u8; 32];
        let certified = tls_alpn_certificate("hs.example.com", &digest).unwrap();
        let der = certified.cert[0].as_ref();
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 1);
        // id-pe-acmeIdentifier, critical, an OCTET STRING of the digest.
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert!(ext.critical);
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);

        let challenges = Challenges::default();
        challenges.put_tls_alpn("HS.example.com", Arc::new(certified));
        assert!(challenges.tls_alpn_answer("hs.EXAMPLE.com").is_some());
        challenges.remove_tls_alpn("hs.example.com");
        assert!(challenges.tls_alpn_answer("hs.example.com").is_none());
    }
}
