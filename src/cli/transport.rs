//! How the CLI reaches the API: HTTPS to a remote server when `cli.address` is set, else
//! HTTP/1.1 over the daemon's unix socket, or, when no daemon runs, the same router
//! in-process over a read-only view of the store.

use crate::api::{self, ApiContext, Backend};
use crate::config::{Config, PolicyMode};
use crate::engine::{Clock, SystemClock};
use crate::server;
use crate::store::StoreError;
use anyhow::{anyhow, bail, Context as _};
use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;

/// Largest API answer the CLI will read.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

pub enum Transport {
    /// `cli.address`: a server elsewhere, with an API key.
    Remote(Box<super::remote::Remote>),
    Socket(PathBuf),
    /// No daemon: the API router runs here over the store, read-only.
    InProcess(Router),
}

impl Transport {
    /// The daemon's socket if it answers; otherwise the store, opened directly (reads only).
    pub async fn connect(config: &Config) -> anyhow::Result<Transport> {
        if let Some(remote) = super::remote::Remote::from_config(&config.cli)? {
            return Ok(Transport::Remote(Box::new(remote)));
        }
        let socket = config.unix_socket.clone();
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            return Ok(Transport::Socket(socket));
        }
        // Reading the store here needs what `serve` needs of the config; a client-only config
        // (headscale's, with `database.type: sqlite`) says so instead of guessing a store.
        config.validate().map_err(|e| {
            anyhow!(
                "no daemon answers on {}, and without one the store is read directly, which \
                 needs a valid server config: {e}",
                socket.display()
            )
        })?;
        // Reads never create a store: a client config whose server has not run here yet
        // (headscale's, before the first `serve` imports it) has nothing to read. A
        // PostgreSQL log is read where it is.
        let postgres = config.database.backend() == Some(crate::config::DatabaseKind::Postgres);
        let store_path = config.database.sled_path();
        if !postgres && !store_path.is_dir() {
            bail!(
                "no daemon answers on {}, and there is no store at {} to read directly (is \
                 the server running, and is this its config?)",
                socket.display(),
                store_path.display()
            );
        }
        let store = match server::open_store(config) {
            Ok(store) => store,
            Err(StoreError::Locked { path }) => bail!(
                "the store at {path} is in use by a running server, but its socket {} does not answer",
                socket.display()
            ),
            Err(error) => return Err(anyhow!(error)),
        };
        eprintln!(
            "note: no daemon answers on {}; reading the store at {} directly (read-only)",
            socket.display(),
            server::store_location(config)
        );
        let clock = Arc::new(SystemClock);
        let ctx = ApiContext {
            backend: Backend::ReadOnly(store),
            now: Arc::new(move || clock.now()),
            policy_in_database: config.policy.mode == PolicyMode::Database,
            checkpoint_key: server::read_checkpoint_key(config),
            presence: None,
            auth: api::AuthGuard::default(),
            pending: None,
            netmap: server::offline_netmap_template(config),
            webhooks: crate::webhooks::hub_for(config).ok(),
        };
        let router = api::router(ctx).layer(axum::middleware::from_fn(api::local_trust));
        Ok(Transport::InProcess(router))
    }

    /// Sends one request and returns the raw response (any status).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<axum::http::Response<Body>> {
        let bytes = match &body {
            Some(value) => serde_json::to_vec(value)?,
            None => Vec::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Body::from(bytes))?;
        Ok(match self {
            Transport::Remote(remote) => remote.send(request).await?,
            Transport::Socket(socket) => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .with_context(|| format!("cannot reach the daemon at {}", socket.display()))?;
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                sender.send_request(request).await?.map(Body::new)
            }
            Transport::InProcess(router) => router.clone().oneshot(request).await?,
        })
    }

    /// Reads a streamed answer (`GET path`), handing each piece of the body to `on_bytes` as
    /// it arrives, so an answer of any length is never held whole; a non-2xx answer is an
    /// error carrying the API's message.
    pub async fn stream(
        &self,
        path: &str,
        mut on_bytes: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        use http_body_util::BodyExt;
        let response = self.send(Method::GET, path, None).await?;
        if !response.status().is_success() {
            return self.answer(response).await.map(|_| ());
        }
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| anyhow!("the stream broke: {e}"))?;
            if let Ok(data) = frame.into_data() {
                on_bytes(&data)?;
            }
        }
        Ok(())
    }

    /// Follows a server-sent-events answer (`GET path`), calling `on_data` with each
    /// event's data until the server ends the stream.
    pub async fn follow(
        &self,
        path: &str,
        mut on_data: impl FnMut(&str) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut buffer = String::new();
        self.stream(path, |bytes| {
            buffer.push_str(&String::from_utf8_lossy(bytes));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if !data.is_empty() {
                    on_data(&data.join("\n"))?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Sends one request; a non-2xx answer becomes an error carrying the API's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let response = self.send(method, path, body).await?;
        self.answer(response).await
    }

    /// The JSON of a response, or its error as one line.
    async fn answer(
        &self,
        response: axum::http::Response<Body>,
    ) -> anyhow::Result<serde_json::Value> {
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| anyhow!("cannot read the answer: {e}"))?;
        // Like headscale, the server answers a refused key with a plain-text 401.
        if status == axum::http::StatusCode::UNAUTHORIZED {
            if let Transport::Remote(remote) = self {
                bail!(
                    "{} refused the API key (401 Unauthorized): check cli.api_key / \
                     HEADSCALE_CLI_API_KEY",
                    remote.base()
                );
            }
        }
        let value: serde_json::Value = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|_| {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
                let text: String = text.chars().take(200).collect();
                anyhow!("unexpected answer ({status}): {text}")
            })?
        };
        if !status.is_success() {
            let message = value
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("request failed with {status}"));
            bail!(message);
        }
        Ok(value)
    }
}
