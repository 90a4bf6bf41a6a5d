//! Built-in ACME certificates (`tls_letsencrypt_hostname`), as headscale 0.29 gets them with
//! autocert: a certificate for the hostname from `acme_url` (Let's Encrypt by default), served
//! on `listen_addr` (and so on DERP and everything else there), kept in
//! `tls_letsencrypt_cache_dir` in autocert's layout (`cache.rs`), renewed in the background
//! before it expires (`schedule.rs`) without a restart. A renewal that fails is logged, counted
//! (`headscale_acme_order_failures_total`) and retried with back-off while the certificate in
//! force keeps serving.
//!
//! Start-up refuses rather than serving without TLS: an unusable cache directory, an HTTP-01
//! listener that cannot bind, or — when no valid certificate is cached — an ACME server that
//! cannot be reached or refuses the account, stop `serve` with the reason. The first order
//! itself runs once the listeners are up (TLS-ALPN-01 is answered on `listen_addr`); until it
//! succeeds, TLS handshakes fail (no certificate), never fall back to plain text.

pub mod cache;
pub mod challenge;
mod client;
pub mod schedule;

use crate::config::{AcmeChallenge, Config};
use anyhow::{anyhow, Context as _};
use cache::{CacheDir, Certificate};
use challenge::{Challenges, ACME_TLS_ALPN};
use client::{AcmeError, AcmeHttp};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use schedule::Schedule;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// The renewal loop wakes at least this often, so a clock jump or a suspend cannot make it
/// oversleep a renewal.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// One whole attempt (account, order, validation, issuance), whatever hangs inside it.
const ATTEMPT_DEADLINE: Duration = Duration::from_secs(300);
/// Connections at once on the HTTP-01 listener (only the CA and redirected browsers use it).
const HTTP01_MAX_CONNECTIONS: usize = 256;
const HTTP01_MAX_CONNECTIONS_PER_SOURCE: usize = 16;

/// The TLS certificate resolver for ACME: the certificate in force, or a TLS-ALPN-01
/// validation certificate to a client offering ALPN `acme-tls/1` while an order waits.
#[derive(Debug)]
pub struct AcmeResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    challenges: Arc<Challenges>,
    tls_alpn: bool,
}

impl AcmeResolver {
    /// Whether `acme-tls/1` must be offered in ALPN (TLS-ALPN-01 challenges).
    pub fn answers_tls_alpn(&self) -> bool {
        self.tls_alpn
    }

    fn install(&self, certified: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(certified);
    }

    fn has_certificate(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validation = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if validation {
            // RFC 8737: only the validation certificate, only for a name being validated.
            return self.challenges.tls_alpn_answer(hello.server_name()?);
        }
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// ACME set up and checked at start, not yet running (see [`Acme::spawn`]).
pub struct Acme {
    hostname: String,
    challenge: AcmeChallenge,
    directory: String,
    email: String,
    server_url: String,
    cache: CacheDir,
    http: AcmeHttp,
    account: Option<instant_acme::Account>,
    resolver: Arc<AcmeResolver>,
    schedule: Schedule,
    http01: Option<tokio::net::TcpListener>,
}

/// Sets ACME up when `tls_letsencrypt_hostname` is set; `Ok(None)` otherwise. An error says
/// why the server must not start.
pub async fn setup(config: &Config) -> anyhow::Result<Option<Acme>> {
    let Some(hostname) = config.tls_letsencrypt_hostname.clone() else {
        return Ok(None);
    };
    let directory = config.acme_directory().to_string();
    let challenge = config.acme_challenge();
    let cache = CacheDir::open(&config.acme_cache_dir())
        .context("tls_letsencrypt_cache_dir must be a directory this server can write")?;
    let http = AcmeHttp::new().map_err(|e| anyhow!("ACME: {e}"))?;
    let resolver = Arc::new(AcmeResolver {
        current: RwLock::new(None),
        challenges: Arc::new(Challenges::default()),
        tls_alpn: challenge == AcmeChallenge::TlsAlpn01,
    });
    // Local checks first: they fail the same way whatever the CA says.
    let http01 = match challenge {
        AcmeChallenge::Http01 => Some(bind_http01(&config.tls_letsencrypt_listen).await?),
        AcmeChallenge::TlsAlpn01 => None,
    };
    let mut schedule = Schedule::default();
    let now = SystemTime::now();
    match cache.read_certificate(&hostname) {
        Ok(Some(certificate)) if certificate.validity.is_current(now) => {
            tracing::info!(
                hostname,
                expires = %humantime::format_rfc3339_seconds(certificate.validity.not_after),
                renew_at = %humantime::format_rfc3339_seconds(certificate.validity.renew_at()),
                "ACME: serving the cached certificate"
            );
            record_expiry(&certificate);
            schedule.current = Some(certificate.validity);
            resolver.install(certificate.certified);
        }
        Ok(Some(_)) => tracing::info!(
            hostname,
            "ACME: the cached certificate has expired; ordering a new one"
        ),
        Ok(None) => {
            tracing::info!(hostname, cache = %cache.path().display(), "ACME: no cached certificate; ordering one")
        }
        Err(error) => {
            tracing::warn!(%error, "ACME: the cached certificate is unusable; ordering a new one")
        }
    }
    // Nothing to serve yet: the CA must answer now, or the server would start with TLS that
    // can never work; say so instead.
    let account = if resolver.has_certificate() {
        None
    } else {
        let account = client::account(&http, &cache, &directory, &config.acme_email)
            .await
            .map_err(|e| {
                anyhow!("cannot set up ACME for {hostname} with the ACME server {directory}: {e}")
            })?;
        Some(account)
    };
    Ok(Some(Acme {
        hostname,
        challenge,
        directory,
        email: config.acme_email.clone(),
        server_url: config.server_url.clone(),
        cache,
        http,
        account,
        resolver,
        schedule,
        http01,
    }))
}

/// Binds `tls_letsencrypt_listen` (Go syntax: an empty host is every address, IPv6 and IPv4).
async fn bind_http01(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let (host, port) = crate::config::split_listen(listen)
        .map_err(|problem| anyhow!("tls_letsencrypt_listen {listen:?} {problem}"))?;
    let bound = if host.is_empty() {
        match tokio::net::TcpListener::bind(("::", port)).await {
            Ok(listener) => Ok(listener),
            Err(_) => tokio::net::TcpListener::bind(("0.0.0.0", port)).await,
        }
    } else {
        tokio::net::TcpListener::bind((host.as_str(), port)).await
    };
    bound.with_context(|| {
        format!("cannot listen on {listen} (tls_letsencrypt_listen, for HTTP-01 challenges)")
    })
}

impl Acme {
    pub fn resolver(&self) -> Arc<AcmeResolver> {
        self.resolver.clone()
    }

    /// Runs the HTTP-01 listener and the order/renewal loop until `stop` turns true. Call it
    /// once `listen_addr` is bound: TLS-ALPN-01 challenges are answered there.
    pub fn spawn(self, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(stop))
    }

    async fn run(mut self, stop: watch::Receiver<bool>) {
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let http01 = self.http01.take().map(|listener| {
            let router =
                challenge::http01_router(self.resolver.challenges.clone(), &self.server_url);
            tokio::spawn(crate::listener::serve(
                listener,
                None,
                router,
                crate::conn_limits::ConnLimits::new(
                    HTTP01_MAX_CONNECTIONS,
                    HTTP01_MAX_CONNECTIONS_PER_SOURCE,
                ),
                stopped(stop.clone()),
            ))
        });
        let mut stop_signal = std::pin::pin!(stopped(stop.clone()));
        loop {
            let now = SystemTime::now();
            let next = self.schedule.next_attempt(now);
            let wait = next.duration_since(now).unwrap_or_default();
            tokio::select! {
                _ = &mut stop_signal => break,
                _ = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
            }
            if SystemTime::now() < next {
                continue;
            }
            let attempt = tokio::select! {
                _ = &mut stop_signal => break,
                attempt = tokio::time::timeout(ATTEMPT_DEADLINE, self.obtain()) => {
                    attempt.unwrap_or_else(|_| Err(AcmeError::Other(format!(
                        "no certificate within {}s", ATTEMPT_DEADLINE.as_secs()
                    ))))
                }
            };
            let now = SystemTime::now();
            match attempt {
                Ok(certificate) => {
                    tracing::info!(
                        hostname = self.hostname,
                        expires = %humantime::format_rfc3339_seconds(certificate.validity.not_after),
                        renew_at = %humantime::format_rfc3339_seconds(certificate.validity.renew_at()),
                        "ACME: new certificate in force"
                    );
                    record_expiry(&certificate);
                    self.schedule.succeeded(certificate.validity, now);
                    self.resolver.install(certificate.certified);
                }
                Err(error) => {
                    crate::metrics::metrics().acme_order_failures.inc();
                    self.schedule.failed(now);
                    let retry = self.schedule.next_attempt(now);
                    let retry_in = retry.duration_since(now).unwrap_or_default();
                    match self.schedule.current {
                        Some(current) => tracing::error!(
                            hostname = self.hostname,
                            %error,
                            retry_in_secs = retry_in.as_secs(),
                            current_expires = %humantime::format_rfc3339_seconds(current.not_after),
                            "ACME: certificate renewal failed; the current certificate stays in force"
                        ),
                        None => tracing::error!(
                            hostname = self.hostname,
                            %error,
                            retry_in_secs = retry_in.as_secs(),
                            "ACME: certificate order failed; TLS handshakes fail until one succeeds"
                        ),
                    }
                }
            }
        }
        if let Some(http01) = http01 {
            let _ = http01.await;
        }
    }

    /// One order: the account (set up on first use), the challenge, the certificate, cached.
    async fn obtain(&mut self) -> Result<Certificate, AcmeError> {
        let account = match &self.account {
            Some(account) => account.clone(),
            None => {
                let account =
                    client::account(&self.http, &self.cache, &self.directory, &self.email).await?;
                self.account = Some(account.clone());
                account
            }
        };
        let issued = client::order(
            &account,
            &self.hostname,
            self.challenge,
            &self.resolver.challenges,
        )
        .await?;
        let pem = format!("{}\n{}", issued.key_pem.trim_end(), issued.chain_pem);
        let certificate = cache::parse_certificate(pem.as_bytes(), &self.hostname)
            .map_err(|e| AcmeError::Other(format!("the CA's certificate is unusable: {e}")))?;
        if let Err(error) =
            self.cache
                .write_certificate(&self.hostname, &issued.key_pem, &issued.chain_pem)
        {
            // Served anyway; the next start orders again.
            tracing::error!(%error, "ACME: cannot cache the new certificate");
        }
        Ok(certificate)
    }
}

fn record_expiry(certificate: &Certificate) {
    let expiry = certificate
        .validity
        .not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    crate::metrics::metrics()
        .acme_certificate_expiry
        .set(i64::try_from(expiry.as_secs()).unwrap_or(i64::MAX));
}
