//! `headscale serve`: wires config, keys, store, engine and listeners together, records
//! start-up facts, and shuts down cleanly (final snapshot and checkpoint) on SIGTERM/SIGINT.
//! SIGHUP reloads the policy file and the TLS certificate files (ACME certificates renew by
//! themselves, `acme/`).

use crate::api::{self, ApiContext, Backend};
use crate::config::{Config, ExtraRecord, IpAllocation, PolicyMode};
use crate::conn_limits::ConnLimits;
use crate::control::extra_records_file::RecordsFile;
use crate::control::hub::{HubOptions, MapHub};
use crate::control::map_stream::MachineContext;
use crate::control::pending::PendingLogins;
use crate::control::{self, server_key::ServerKey};
use crate::core::event::{Allocation, CoreConfig};
use crate::core::keys::Digest;
use crate::core::{Actor, Command};
use crate::derp::map_fetch::DerpMaps;
use crate::engine::{self, Clock, EngineHandle, EngineOptions, SystemClock};
use crate::keyfile;
use crate::store::disk_store::DiskStore;
use crate::store::postgres_store::PostgresStore;
use crate::store::EventStore;
use crate::tailcfg::SharedJson;
use anyhow::Context as _;
use axum::routing::get;
use axum::Router;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The directory holding the embedded store and the server's keys. With `database.type:
/// postgres` and no `database.sled.path`, there is no embedded store: the keys live beside
/// the Noise key (headscale's data directory), never under a sled path that does not exist.
pub fn data_dir(config: &Config) -> PathBuf {
    let postgres_without_sled = config.database.backend()
        == Some(crate::config::DatabaseKind::Postgres)
        && config.database.sled.path.as_os_str().is_empty();
    let beside = if postgres_without_sled {
        config.noise.private_key_path.clone()
    } else {
        config.database.sled_path()
    };
    beside
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The text prefix of the checkpoint signing key file.
pub const CHECKPOINT_KEY_KIND: &str = "ed25519-private";

/// Where the checkpoint signing key lives (beside the store).
pub fn checkpoint_key_path(config: &Config) -> PathBuf {
    data_dir(config).join("checkpoint_signing.key")
}

/// Reads the checkpoint verifying key if the key file is there (the CLI's `events verify`).
pub fn read_checkpoint_key(config: &Config) -> Option<ed25519_dalek::VerifyingKey> {
    keyfile::read(&checkpoint_key_path(config), CHECKPOINT_KEY_KIND)
        .ok()
        .flatten()
        .map(|bytes| ed25519_dalek::SigningKey::from_bytes(&bytes).verifying_key())
}

/// The part of the config the core decides with.
pub fn core_config(config: &Config) -> CoreConfig {
    CoreConfig {
        prefix_v4: config.prefixes.v4,
        prefix_v6: config.prefixes.v6,
        allocation: match config.prefixes.allocation {
            IpAllocation::Sequential => Allocation::Sequential,
            IpAllocation::Random => Allocation::Random,
        },
        base_domain: config.dns.base_domain.clone(),
        node_expiry_secs: config.node.expiry.as_secs(),
        ephemeral_inactivity_secs: config.node.ephemeral.inactivity_timeout.as_secs(),
        require_approval: config.node.require_approval,
    }
}

/// Opens the event store the config names: PostgreSQL for `database.type: postgres`, else
/// the embedded store at `database.sled_path()`.
pub fn open_store(config: &Config) -> Result<Arc<dyn EventStore>, crate::store::StoreError> {
    if config.database.backend() == Some(crate::config::DatabaseKind::Postgres) {
        return Ok(Arc::new(PostgresStore::open(&config.database.postgres)?));
    }
    Ok(Arc::new(DiskStore::open(
        &config.database.sled_path(),
        config.database.sled.cache_capacity_bytes,
    )?))
}

/// Where `open_store` finds the log, for messages: the sled path or `postgres user@host…`.
pub fn store_location(config: &Config) -> String {
    if config.database.backend() == Some(crate::config::DatabaseKind::Postgres) {
        let pg = &config.database.postgres;
        format!("postgres {}@{}:{}/{}", pg.user, pg.host, pg.port, pg.name)
    } else {
        config.database.sled_path().display().to_string()
    }
}

/// The API context over a running engine.
pub fn live_context(
    config: &Config,
    engine: EngineHandle,
    presence: Option<crate::control::hub::PresenceTable>,
) -> ApiContext {
    let clock = Arc::new(SystemClock);
    ApiContext {
        backend: Backend::Live(engine),
        now: Arc::new(move || clock.now()),
        policy_in_database: config.policy.mode == PolicyMode::Database,
        checkpoint_key: read_checkpoint_key(config),
        presence,
        auth: api::AuthGuard::new(&config.trusted_proxies),
        pending: None,
        netmap: None,
        webhooks: None,
    }
}

/// Snapshot and checkpoint cadence from the config.
pub fn engine_options(config: &Config) -> EngineOptions {
    let sled = &config.database.sled;
    EngineOptions {
        snapshot_every_events: sled.snapshot_every_events.max(1),
        snapshot_every: sled.snapshot_interval,
        checkpoint_every_events: sled.checkpoint_every_events.max(1),
        max_staleness: config.ha.max_staleness,
        ..EngineOptions::default()
    }
}

/// Starts the engine and records the start-up facts. With `database.type: sqlite|postgres`
/// and an empty log, the headscale database is imported first (`import_on_first_start`).
pub async fn start_engine(config: &Config, options: EngineOptions) -> anyhow::Result<EngineHandle> {
    let engine = open_engine(config, options)?;
    import_on_first_start(config, &engine).await?;
    record_start(config, &engine).await?;
    Ok(engine)
}

/// Where the event log lives, for messages.
pub fn log_location(config: &Config) -> String {
    match config.database.backend() {
        Some(crate::config::DatabaseKind::Postgres) => config.database.describe(),
        _ => config.database.sled_path().display().to_string(),
    }
}

/// `serve` on a headscale config: an empty log takes in headscale's database once (one log
/// line); a log that already holds events ignores it (one log line saying so).
pub async fn import_on_first_start(config: &Config, engine: &EngineHandle) -> anyhow::Result<()> {
    let Some(source) = config.database.import_source() else {
        return Ok(());
    };
    let seq = engine.state().last_seq;
    if seq != 0 {
        tracing::info!(
            source = %crate::import::run::describe(&source),
            log = %log_location(config),
            seq,
            "our event log already holds events: headscale's database is ignored (it was imported on the first start, or never needed)"
        );
        return Ok(());
    }
    let origin = crate::import::run::Origin::from_config(&source)?;
    if !origin.exists() {
        tracing::info!(source = %origin.describe(), log = %log_location(config), "no headscale database to import: starting with an empty log");
        return Ok(());
    }
    let report = match crate::import::run::import(engine, &origin).await {
        Ok(report) => report,
        Err(error) if error.is::<crate::import::postgres::NoHeadscaleTables>() => {
            tracing::info!(source = %origin.describe(), log = %log_location(config), "no headscale tables in the database: starting with an empty log");
            return Ok(());
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("importing headscale's database ({})", origin.describe()))
        }
    };
    tracing::info!(
        source = %origin.describe(),
        log = %log_location(config),
        skipped = ?report.skipped,
        renamed = ?report.renamed,
        "imported headscale's database: {report}; from now on we run on our own event log and never write headscale's database"
    );
    Ok(())
}

/// Starts the engine over the configured store, without recording anything.
pub fn open_engine(config: &Config, options: EngineOptions) -> anyhow::Result<EngineHandle> {
    let dir = data_dir(config);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let signing = keyfile::load_or_create(
        &checkpoint_key_path(config),
        CHECKPOINT_KEY_KIND,
        keyfile::random_key,
    )?;
    let signing_key = ed25519_dalek::SigningKey::from_bytes(&signing);
    let store_config = config.clone();
    let engine = engine::start(
        Box::new(move || open_store(&store_config)),
        Box::new(SystemClock),
        signing_key,
        options,
    )?;
    Ok(engine)
}

/// `ServerStarted`, the config in force and, in file mode, the policy file.
pub async fn record_start(config: &Config, engine: &EngineHandle) -> anyhow::Result<()> {
    engine
        .execute(
            Actor::System,
            Command::StartServer {
                version: VERSION.to_string(),
            },
        )
        .await?;
    engine
        .execute(
            Actor::System,
            Command::ApplyConfig {
                hash: Digest(config.netmap_relevant_hash()),
                core: core_config(config),
                netmap_json: config.netmap_relevant_json(),
            },
        )
        .await?;
    load_policy_file(config, engine).await?;
    Ok(())
}

/// In file mode, records the policy file's content when it differs from the one in force.
pub async fn load_policy_file(config: &Config, engine: &EngineHandle) -> anyhow::Result<()> {
    if config.policy.mode != PolicyMode::File {
        return Ok(());
    }
    let Some(path) = &config.policy.path else {
        return Ok(());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    engine
        .execute(Actor::System, Command::ReplacePolicy { text })
        .await?;
    Ok(())
}

/// Binds the unix socket, replacing a stale socket file left by a crash (audit L7).
///
/// The socket is bound inside a fresh private (0700) directory beside its final path, given
/// its configured mode there, and only then renamed into place: there is no moment when it
/// exists with the umask's permissions where others can reach it. A socket directory that is
/// world-writable without the sticky bit is refused (anyone could replace the socket), and a
/// mode that lets every local user write (connect) is warned about: that user is an admin.
fn bind_unix_socket(config: &Config) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::DirBuilderExt as _;
    let path = &config.unix_socket;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create socket dir {}", dir.display()))?;
    let dir_mode = std::fs::metadata(&dir)
        .with_context(|| format!("cannot stat socket dir {}", dir.display()))?
        .permissions()
        .mode();
    if !socket_dir_is_safe(dir_mode) {
        anyhow::bail!(
            "socket dir {} is writable by everyone and not sticky (mode {:o}): another user could replace the admin socket; use a private directory",
            dir.display(),
            dir_mode & 0o7777
        );
    }
    let mode = config.unix_socket_mode()?;
    if mode & 0o002 != 0 {
        tracing::warn!(
            socket = %path.display(),
            mode = format!("{mode:o}"),
            "unix_socket_permission lets every local user use the admin socket (full admin rights); 0770 or stricter is advised"
        );
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another server is already listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "headscale.sock".into());
    let private = dir.join(format!(".{name}.{:016x}", rand::random::<u64>()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .with_context(|| format!("cannot create {}", private.display()))?;
    let bound = (|| {
        let staged = private.join(&name);
        let listener = tokio::net::UnixListener::bind(&staged)
            .with_context(|| format!("cannot listen on unix socket {}", path.display()))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {}", staged.display()))?;
        std::fs::rename(&staged, path)
            .with_context(|| format!("cannot move the socket into {}", path.display()))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// A directory where only its owner (or, with the sticky bit, each file's owner) can remove
/// or replace entries.
fn socket_dir_is_safe(mode: u32) -> bool {
    mode & 0o002 == 0 || mode & 0o1000 != 0
}

/// How long an interactive login waits for an admin (headscale: 15 min).
const PENDING_LOGIN_TTL: Duration = Duration::from_secs(15 * 60);

/// Starts the map-stream fan-out and returns what the `/machine/*` handlers share.
/// `file_records` are the records of `dns.extra_records_path` as read at start, `derp_map`
/// the DERP map built at start (`derp::map_fetch`).
pub fn start_map_hub(
    config: &Config,
    engine: &EngineHandle,
    file_records: Option<&[ExtraRecord]>,
    derp_map: &crate::tailcfg::derp::DerpMap,
) -> anyhow::Result<MachineContext> {
    let context = netmap_template(config, file_records, derp_map)?;
    let tuning = &config.tuning;
    let hub = MapHub::start(
        engine,
        context,
        HubOptions {
            batch_change_delay: tuning.batch_change_delay,
            session_queue: tuning.node_mapsession_buffered_chan_size,
            offline_grace: tuning.node_offline_grace,
            ephemeral_inactivity: config.node.ephemeral.inactivity_timeout,
            clock: Arc::new(SystemClock),
        },
    );
    Ok(MachineContext {
        engine: engine.clone(),
        hub,
        keep_alive: tuning.map_keepalive_interval,
        pending: PendingLogins::new(PENDING_LOGIN_TTL),
        server_url: config.server_url.trim_end_matches('/').to_string(),
    })
}

/// The tailnet-wide netmap parts as the map hub starts with them (also what
/// `GET /api/v1/node/{id}/netmap` renders past maps with).
pub fn netmap_template(
    config: &Config,
    file_records: Option<&[ExtraRecord]>,
    derp_map: &crate::tailcfg::derp::DerpMap,
) -> anyhow::Result<crate::core::netmap::NetmapContext> {
    let mut context =
        control::netmap_context::netmap_context(config, &serde_json::to_value(derp_map)?)?;
    if let Some(records) = file_records {
        context.dns_config =
            SharedJson::new(&control::netmap_context::dns_config_with(config, records))?;
    }
    Ok(context)
}

/// [`netmap_template`] for the CLI without a daemon: the DERP map from `derp.paths` and the
/// embedded region only (nothing is fetched), the inline DNS records only.
pub fn offline_netmap_template(config: &Config) -> Option<Arc<crate::core::netmap::NetmapContext>> {
    let derp_map = crate::derp::map::derp_map(config).unwrap_or_default();
    netmap_template(config, None, &derp_map).ok().map(Arc::new)
}

/// The headscale release whose API and CLI we implement, as `/version` reports it.
pub const HEADSCALE_API_LEVEL: &str = "v0.29.2";

/// `GET /version`, in headscale's shape (its `go` object names the platform we run on;
/// architectures use Go's names so tools that parse them keep working). `version` is the
/// headscale API level with our own version as semver build metadata
/// (`v0.29.2+headscale-rs.0.1.0`): tools that gate features on headscale's version (Headplane
/// hides tags and sends old request bodies below 0.28) see the API we serve.
pub fn version_info() -> serde_json::Value {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    serde_json::json!({
        "version": format!("{HEADSCALE_API_LEVEL}+headscale-rs.{VERSION}"),
        "commit": "unknown",
        "buildTime": "unknown",
        "go": {"version": "none (rust)", "os": std::env::consts::OS, "arch": arch},
        "dirty": false,
    })
}

/// Routes on the main (TCP) listener. The API needs a key; its documentation does not; CORS
/// (`api.cors`), when configured, covers both, and answers preflights before the key check.
fn public_router(
    ctx: ApiContext,
    server_key: &ServerKey,
    machine: MachineContext,
    cors: Option<tower_http::cors::CorsLayer>,
    oidc: Option<crate::oidc::OidcContext>,
) -> Router {
    // With OIDC, the AuthURL page sends the browser to the provider; without, it tells the
    // user what to ask their admin.
    let login = match oidc {
        Some(oidc) => crate::oidc::router(oidc),
        None => control::login_page::router(machine.pending.clone()),
    };
    let health_backend = ctx.backend.clone();
    let api = api::router(ctx.clone())
        .layer(axum::middleware::from_fn_with_state(
            ctx,
            api::require_api_key,
        ))
        .layer(axum::middleware::from_fn(api::request_log::log_requests))
        .merge(api::openapi::router());
    let api = match cors {
        Some(cors) => api.layer(cors),
        None => api,
    };
    Router::new()
        .route(
            "/health",
            get({
                let backend = health_backend;
                move || async move {
                    // `fail` (503) while the engine cannot write its log (H1, L6), or
                    // has lost the shared log (several instances: clients move on).
                    let problem = match &backend {
                        api::Backend::Live(engine) => engine.health_problem(),
                        api::Backend::ReadOnly(_) => None,
                    };
                    let (status, body) = match problem {
                        None => (
                            axum::http::StatusCode::OK,
                            serde_json::json!({"status": "pass"}),
                        ),
                        Some(problem) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            serde_json::json!({"status": "fail", "output": problem}),
                        ),
                    };
                    (
                        status,
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/health+json; charset=utf-8",
                        )],
                        body.to_string(),
                    )
                }
            }),
        )
        .route("/version", get(|| async { axum::Json(version_info()) }))
        .route(
            "/robots.txt",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/plain")],
                    "User-agent: *\nDisallow: /",
                )
            }),
        )
        .merge(control::server_key::router(server_key.public()))
        .merge(login)
        .route(
            "/ts2021",
            axum::routing::get(control::upgrade::handle)
                .post(control::upgrade::handle)
                .with_state(control::upgrade::ControlContext {
                    server_key: server_key.clone(),
                    machine_router: control::machine::router(
                        machine,
                        control::machine::BodyBudget::default(),
                    ),
                }),
        )
        .merge(api)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and sizes the public listener's
/// connection caps to fit it (audit M5).
fn connection_limits(config: &Config) -> Arc<ConnLimits> {
    let configured = config.tuning.max_connections;
    let max = match crate::conn_limits::raise_fd_limit() {
        Ok(fd) => {
            let max = crate::conn_limits::fit_to_fd_limit(configured, fd.soft);
            tracing::info!(
                soft_before = fd.soft_before,
                soft = fd.soft,
                hard = fd.hard,
                max_connections = max,
                per_source = config.tuning.max_connections_per_ip,
                "file descriptor limit"
            );
            if max < configured {
                tracing::warn!(
                    configured,
                    max_connections = max,
                    fd_limit = fd.soft,
                    "connection cap lowered to fit the file descriptor limit; raise the hard RLIMIT_NOFILE (e.g. LimitNOFILE=) to serve more"
                );
            }
            max
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise RLIMIT_NOFILE; connection cap not fitted");
            configured
        }
    };
    let trusted = crate::conn_limits::parse_trusted_proxies(&config.trusted_proxies);
    if let Some(warning) = crate::conn_limits::proxy_warning(
        &config.listen_addr,
        &trusted,
        config.tuning.max_connections_per_ip,
    ) {
        tracing::warn!("{warning}");
    }
    ConnLimits::behind(max, config.tuning.max_connections_per_ip, trusted)
}

/// Runs the server until `shutdown` resolves or a SIGTERM/SIGINT arrives.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let connection_limits = connection_limits(&config);
    let server_key = ServerKey::load_or_create(&config.noise.private_key_path)?;
    // Before the engine, so a bad file stops the start before anything is recorded.
    let extra_records = match &config.dns.extra_records_path {
        Some(path) => Some(RecordsFile::open(path)?),
        None => None,
    };
    // Also before the engine: a bad derp.paths file stops the start; a derp.urls fetch that
    // fails only leaves that URL's last good map (or none) in force.
    let derp_maps = DerpMaps::start(&config, &data_dir(&config)).await?;
    // ACME (tls_letsencrypt_hostname) refuses to start rather than serve without TLS; also
    // before the engine, so nothing is recorded for a start that cannot serve.
    let acme = crate::acme::setup(&config).await?;
    // The OpenID provider, when configured: unreachable stops the start here (by default).
    let oidc_provider = crate::oidc::connect(&config).await?;
    let engine = start_engine(&config, engine_options(&config)).await?;
    let shared_pool = if engine.is_shared() {
        // Several instances on one PostgreSQL log: follow what the others append.
        let pool = crate::ha::pool::SharedPool::new(&config.database.postgres)?;
        crate::ha::tail::spawn(engine.clone(), &pool, config.ha.poll_interval);
        Some(pool)
    } else {
        None
    };
    let mut machine = start_map_hub(
        &config,
        &engine,
        extra_records.as_ref().map(RecordsFile::records),
        derp_maps.current(),
    )?;
    // Logins waiting for an admin or a provider, on any instance (ha/logins.rs).
    if let Some(pool) = &shared_pool {
        let logins = crate::ha::logins::SharedLogins::start(pool, config.ha.poll_interval);
        machine.pending = PendingLogins::shared(PENDING_LOGIN_TTL, logins.await?);
    }
    // ... and share with them who is online where (ha/presence.rs); withdrawn at shutdown.
    let webhook_leases = shared_pool.clone();
    let presence_sync = match shared_pool {
        Some(pool) => Some(crate::ha::presence::spawn(pool, &config.ha, machine.hub.clone()).await),
        None => None,
    };
    let mut ctx = live_context(&config, engine.clone(), Some(machine.hub.presence()));
    ctx.pending = Some(machine.pending.clone());
    ctx.netmap = Some(Arc::new(netmap_template(
        &config,
        extra_records.as_ref().map(RecordsFile::records),
        derp_maps.current(),
    )?));
    // Webhook delivery follows the log from each endpoint's cursor (src/webhooks/).
    let webhooks = crate::webhooks::hub_for(&config).map_err(|e| anyhow::anyhow!(e))?;
    ctx.webhooks = Some(webhooks.clone());
    let _webhook_delivery = crate::webhooks::spawn(webhooks, engine.clone(), webhook_leases);
    let oidc = oidc_provider.map(|provider| {
        crate::oidc::context(&config, provider, engine.clone(), machine.pending.clone())
    });

    // Embedded DERP relay and TLS (see derp/embedded.rs and tls.rs).
    let derp =
        crate::derp::embedded::start(&config, &server_key.secret().to_bytes(), &engine).await?;
    let certificates = match (&config.tls_cert_path, &config.tls_key_path, &acme) {
        (Some(cert), Some(key), _) => Some(crate::tls::CertificateSource::Files(
            crate::tls::TlsCertificates::load(cert, key)?,
        )),
        (_, _, Some(acme)) => Some(crate::tls::CertificateSource::Acme(acme.resolver())),
        _ => None,
    };
    let tls = match &certificates {
        Some(certificates) => Some(crate::tls::acceptor(certificates)?),
        None => None,
    };

    let tcp = tokio::net::TcpListener::bind(&config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    // gRPC for remote CLIs, as headscale: only with TLS, or when plaintext is allowed.
    let grpc_listener = if certificates.is_some() || config.grpc_allow_insecure {
        if certificates.is_none() {
            tracing::warn!(
                addr = %config.grpc_listen_addr,
                "gRPC is served without TLS (grpc_allow_insecure): API keys cross the network in the clear"
            );
        }
        // Go's ":50443" (headscale's default) means every interface.
        let addr = match config.grpc_listen_addr.strip_prefix(':') {
            Some(port) => format!("[::]:{port}"),
            None => config.grpc_listen_addr.clone(),
        };
        Some(
            tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} (grpc_listen_addr)",
                        config.grpc_listen_addr
                    )
                })?,
        )
    } else {
        tracing::info!(
            addr = %config.grpc_listen_addr,
            "gRPC for remote CLIs is off: it needs TLS (tls_cert_path) or grpc_allow_insecure; the unix socket serves it locally"
        );
        None
    };
    let metrics_listener = match config.metrics_listen_addr.trim() {
        "" => None,
        addr => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics_listen_addr)"))?,
        ),
    };
    // The admin socket is bound last: once it answers, every listener is up (scripts and
    // tests wait for it).
    let unix = bind_unix_socket(&config)?;
    tracing::info!(
        listen = %config.listen_addr,
        socket = %config.unix_socket.display(),
        seq = engine.state().last_seq,
        "headscale is serving"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // After listen_addr is bound: TLS-ALPN-01 challenges are answered there.
    let acme_task = acme.map(|acme| acme.spawn(stop_rx.clone()));
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let local = api::router(ctx.clone())
        .layer(axum::middleware::from_fn(api::local_trust))
        .layer(axum::middleware::from_fn(api::request_log::log_requests))
        .merge(api::openapi::router());
    let local = crate::grpc::socket::unix_router(local, ctx.clone())?;
    let unix_server = tokio::spawn(crate::listener::serve_unix(
        unix,
        local,
        crate::listener::UNIX_MAX_CONNECTIONS,
        stopped(stop_rx.clone()),
    ));
    if let Some(file) = extra_records {
        tracing::info!(
            path = %file.path().display(),
            records = file.records().len(),
            "serving extra DNS records; the file is watched"
        );
        let watch = file.watch(
            config.clone(),
            machine.hub.clone(),
            stopped(stop_rx.clone()),
        );
        tokio::spawn(watch);
    }
    if derp_maps.needs_refresh() {
        tokio::spawn(derp_maps.run(machine.hub.clone(), stopped(stop_rx.clone())));
    }
    let metrics_server = metrics_listener.map(|listener| {
        let router = crate::debug_listener::router(crate::debug_listener::DebugContext {
            engine: engine.clone(),
            hub: machine.hub.clone(),
        });
        // The same accept loop as the main listener (header deadline), with small caps.
        tokio::spawn(crate::listener::serve(
            listener,
            None,
            router,
            ConnLimits::new(
                crate::debug_listener::MAX_CONNECTIONS,
                crate::debug_listener::MAX_CONNECTIONS_PER_SOURCE,
            ),
            stopped(stop_rx.clone()),
        ))
    });
    let grpc_server = match grpc_listener {
        Some(listener) => {
            let tls = match &certificates {
                Some(certificates) => {
                    Some(crate::tls::acceptor_for(certificates, crate::tls::ALPN_H2)?)
                }
                None => None,
            };
            tracing::info!(addr = %config.grpc_listen_addr, tls = tls.is_some(), "serving gRPC");
            // The public listener's caps: a remote CLI is one more TCP client.
            Some(tokio::spawn(crate::listener::serve_with(
                listener,
                tls,
                crate::grpc::socket::remote_router(ctx.clone()),
                connection_limits.clone(),
                crate::listener::Protocols::Http2,
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };
    let cors = api::cors::layer(&config.api.cors);
    if cors.is_some() {
        tracing::info!(origins = ?config.api.cors.allowed_origins, "CORS enabled for /api/v1");
    }
    let mut public = public_router(ctx, &server_key, machine, cors, oidc);
    let mut stun_server = None;
    if let Some(derp) = derp {
        public = public.merge(crate::derp::router(derp.relay));
        stun_server = Some(tokio::spawn(crate::derp::stun::serve_stun(
            derp.stun,
            stopped(stop_rx.clone()),
        )));
    }
    let tcp_server = tokio::spawn(crate::listener::serve(
        tcp,
        tls,
        public,
        connection_limits,
        stopped(stop_rx.clone()),
    ));

    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut shutdown = Box::pin(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => {
                match load_policy_file(&config, &engine).await {
                    Ok(()) => tracing::info!("policy reloaded"),
                    Err(error) => tracing::error!(%error, "policy not reloaded; the previous one stays in force"),
                }
                if let Some(certificates) = &certificates {
                    match certificates.reload() {
                        Ok(true) => tracing::info!("TLS certificate reloaded"),
                        Ok(false) => {}
                        Err(error) => tracing::error!(%error, "TLS certificate not reloaded; the previous one stays in force"),
                    }
                }
            }
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = unix_server.await;
    let _ = tcp_server.await;
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    if let Some(grpc_server) = grpc_server {
        let _ = grpc_server.await;
    }
    if let Some(stun_server) = stun_server {
        let _ = stun_server.await;
    }
    if let Some(acme_task) = acme_task {
        let _ = acme_task.await;
    }
    if let Some(presence_sync) = presence_sync {
        presence_sync.stop().await;
    }
    engine.shutdown().await;
    let _ = std::fs::remove_file(&config.unix_socket);
    tracing::info!("stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_dirs_writable_by_all_must_be_sticky() {
        assert!(socket_dir_is_safe(0o755));
        assert!(socket_dir_is_safe(0o770));
        assert!(socket_dir_is_safe(0o1777));
        assert!(!socket_dir_is_safe(0o777));
        assert!(!socket_dir_is_safe(0o773));
    }

    fn config_in(dir: &Path, permission: &str) -> Config {
        Config {
            unix_socket: dir.join("sock/headscale.sock"),
            unix_socket_permission: permission.into(),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn the_socket_appears_with_its_mode_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "0660");
        let listener = bind_unix_socket(&config).unwrap();
        let meta = std::fs::metadata(&config.unix_socket).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        // Only the socket is left in its directory (the private staging dir is gone).
        let entries: Vec<_> = std::fs::read_dir(dir.path().join("sock"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("headscale.sock")]);
        // It answers at its final path; a second server is refused.
        let _client = tokio::net::UnixStream::connect(&config.unix_socket)
            .await
            .unwrap();
        let second = bind_unix_socket(&config).unwrap_err().to_string();
        assert!(second.contains("already listening"), "{second}");
        // A stale socket (no listener) is replaced.
        drop(listener);
        bind_unix_socket(&config).unwrap();
    }

    #[test]
    fn a_world_writable_socket_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("sock");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = bind_unix_socket(&config_in(dir.path(), "0770"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("writable by everyone"), "{error}");
    }
}
