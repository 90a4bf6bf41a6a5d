//! The ACME protocol work (RFC 8555) through `instant-acme`: the account (its key cached in
//! the cache directory), and one order for the hostname with the configured challenge.
//! Requests go through our own hyper-rustls client trusting the system roots
//! (`rustls-native-certs`, so `SSL_CERT_FILE`/`SSL_CERT_DIR` work as they do for Go), each
//! bounded by [`REQUEST_TIMEOUT`]; an order gives up after [`ORDER_TIMEOUT`].

use super::cache::CacheDir;
use super::challenge::{tls_alpn_certificate, Challenges};
use crate::config::AcmeChallenge;
use crate::error_chain::error_chain;
use bytes::Bytes;
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, Identifier, Key,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::PrivateKeyDer;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// One request to the ACME server (connect, send, headers).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Waiting for the CA to validate, and then to issue.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME server: {0}")]
    Protocol(#[from] instant_acme::Error),
    #[error(transparent)]
    Cache(#[from] super::cache::CacheError),
    #[error("{0}")]
    Other(String),
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    BodyWrapper<Bytes>,
>;

/// The HTTPS client instant-acme sends its requests through.
#[derive(Clone)]
pub struct AcmeHttp(HyperClient);

impl AcmeHttp {
    /// A client trusting the system roots; none found is an error (we could never verify the
    /// ACME server).
    pub fn new() -> Result<AcmeHttp, AcmeError> {
        let roots = crate::outbound_tls::system_roots();
        if roots.is_empty() {
            return Err(AcmeError::Other(
                "no trusted root certificates found on this system to verify the ACME server \
                 (install ca-certificates, or set SSL_CERT_FILE)"
                    .into(),
            ));
        }
        let tls = crate::outbound_tls::client_config(roots).map_err(AcmeError::Other)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(AcmeHttp(client))
    }
}

impl instant_acme::HttpClient for AcmeHttp {
    fn request(
        &self,
        request: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = self.0.request(request);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, response).await {
                Ok(Ok(response)) => Ok(BytesResponse::from(response)),
                Ok(Err(error)) => Err(instant_acme::Error::Other(error_chain(&error).into())),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()).into(),
                )),
            }
        })
    }
}

/// The account for `directory`: the cached key's (registered again if this CA does not know
/// it), or a new one whose key is cached before it is used.
pub async fn account(
    http: &AcmeHttp,
    cache: &CacheDir,
    directory: &str,
    email: &str,
) -> Result<Account, AcmeError> {
    let builder = || Account::builder_with_http(Box::new(http.clone()));
    if let Some(key) = cache.read_account_key()? {
        let acme_key = Key::from_pkcs8_der(key.clone_key())?;
        let (account, _) = builder()
            .create_from_key((acme_key, PrivateKeyDer::Pkcs8(key)), directory.to_string())
            .await?;
        return Ok(account);
    }
    let contact = match email.trim() {
        "" => Vec::new(),
        email => vec![format!("mailto:{email}")],
    };
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_string(),
            None,
        )
        .await?;
    cache.write_account_key(credentials.private_key())?;
    tracing::info!(directory, cache = %cache.path().display(), "created an ACME account");
    Ok(account)
}

/// A certificate from the CA: the new private key PEM and the chain PEM.
pub struct Issued {
    pub key_pem: String,
    pub chain_pem: String,
}

/// Orders a certificate for `hostname`, answering with `kind` through `challenges`.
pub async fn order(
    account: &Account,
    hostname: &str,
    kind: AcmeChallenge,
    challenges: &Challenges,
) -> Result<Issued, AcmeError> {
    let identifiers = [Identifier::Dns(hostname.to_string())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut answers = OpenAnswers {
        challenges,
        http_tokens: Vec::new(),
        tls_alpn_hosts: Vec::new(),
    };
    let wanted = match kind {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(AcmeError::Other(format!(
                    "the CA's authorization for {hostname} is {status:?}"
                )))
            }
        }
        let mut challenge = authorization.challenge(wanted.clone()).ok_or_else(|| {
            AcmeError::Other(format!(
                "the CA offers no {wanted:?} challenge for {hostname}"
            ))
        })?;
        let key_authorization = challenge.key_authorization();
        match kind {
            AcmeChallenge::Http01 => {
                challenges.put_http(&challenge.token, key_authorization.as_str());
                answers.http_tokens.push(challenge.token.clone());
            }
            AcmeChallenge::TlsAlpn01 => {
                let name = challenge.identifier().to_string();
                let certified = tls_alpn_certificate(&name, key_authorization.digest().as_ref())
                    .map_err(|e| AcmeError::Other(format!("TLS-ALPN-01 certificate: {e}")))?;
                challenges.put_tls_alpn(&name, Arc::new(certified));
                answers.tls_alpn_hosts.push(name);
            }
        }
        challenge.set_ready().await?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(ORDER_TIMEOUT);
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        let detail = order
            .state()
            .error
            .as_ref()
            .map(|problem| format!(": {problem}"))
            .unwrap_or_default();
        return Err(AcmeError::Other(format!(
            "the CA did not validate the {wanted:?} challenge for {hostname} (order {status:?}){detail}"
        )));
    }
    drop(answers);
    let key_pem = order.finalize().await?;
    let chain_pem = order.poll_certificate(&retries).await?;
    Ok(Issued { key_pem, chain_pem })
}

/// Removes an order's challenge answers when the order ends, however it ends.
struct OpenAnswers<'a> {
    challenges: &'a Challenges,
    http_tokens: Vec<String>,
    tls_alpn_hosts: Vec<String>,
}

impl Drop for OpenAnswers<'_> {
    fn drop(&mut self) {
        for token in &self.http_tokens {
            self.challenges.remove_http(token);
        }
        for host in &self.tls_alpn_hosts {
            self.challenges.remove_tls_alpn(host);
        }
    }
}
