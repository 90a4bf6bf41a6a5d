//! The HTTP client openidconnect sends its requests through (discovery, JWKS, token,
//! userinfo): our hyper-rustls client with the system roots, bounded in time and size, and
//! never following redirects (OAuth 2 clients must not: a redirect could send the client
//! secret or a code elsewhere).

use crate::error_chain::error_chain;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// One request to the provider, connection to last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from the provider (discovery documents and key sets are a few
/// KiB; a provider sending more is broken or hostile).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct ProviderHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl ProviderHttp {
    /// HTTPS with the system roots, and plain HTTP (an issuer on `http://` is the operator's
    /// choice, as in headscale).
    pub fn new() -> Result<ProviderHttp, String> {
        let tls = crate::outbound_tls::client_config(crate::outbound_tls::system_roots())?;
        let connector = crate::outbound_tls::https_or_http_connector(tls, REQUEST_TIMEOUT);
        Ok(ProviderHttp {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends one request as openidconnect hands it over and returns the whole answer.
    pub async fn send(
        &self,
        request: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let request = hyper::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| HttpError(error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| HttpError(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(hyper::Response::from_parts(parts, body.to_vec()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                HttpError(format!(
                    "no complete answer within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ))
            })?
    }
}

/// What openidconnect calls: a boxed, `Send` future borrowing the client, so handlers that
/// await it stay `Send` (a closure here trips over higher-ranked lifetimes).
impl<'c> openidconnect::AsyncHttpClient<'c> for ProviderHttp {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
