//! From `database.postgres` to a PostgreSQL connection: libpq's meaning of the keys (a `host`
//! starting with `/` is the directory of a unix socket), the password from `pass` or
//! `pass_file`, and `ssl` mapped to no TLS or to TLS through rustls that verifies the server's
//! certificate and name against the system's roots (`SSL_CERT_FILE` honoured) — stricter
//! than libpq's `require`, which encrypts without verifying. `prefer`/`allow` are refused: a
//! connection that may silently go unencrypted is not offered.

use crate::config::PostgresConfig;
use crate::store::StoreError;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::Client;

/// How long opening a connection may take (TCP, TLS and authentication).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the connection is protected.
#[derive(Clone)]
pub enum Tls {
    None,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Everything needed to (re)connect.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: Tls,
    /// `user@host:port/name`, for messages (never the password).
    pub describe: String,
}

/// Reads the config (and the password file) once; errors are one line naming the key.
pub fn target(pg: &PostgresConfig) -> Result<Target, StoreError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&pg.host)
        .port(pg.port)
        .dbname(&pg.name)
        .user(&pg.user)
        .application_name("headscale-rs")
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    if let Some(password) = password(pg)? {
        config.password(password);
    }
    // As libpq: TLS does not apply to a unix socket (the `ssl` value is still checked).
    let unix_socket = pg.host.starts_with('/');
    let tls = match pg.ssl.trim().to_ascii_lowercase().as_str() {
        "" | "false" | "disable" => {
            config.ssl_mode(SslMode::Disable);
            Tls::None
        }
        "true" | "require" | "verify-ca" | "verify-full" if unix_socket => {
            config.ssl_mode(SslMode::Disable);
            Tls::None
        }
        "true" | "require" | "verify-ca" | "verify-full" => {
            config.ssl_mode(SslMode::Require);
            Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
                rustls_config()?,
            ))
        }
        other => {
            return Err(StoreError::Io(format!(
                "database.postgres.ssl: {other:?} is not supported: use false (disable) or true \
                 (require: TLS, the server's certificate verified against the system's roots)"
            )))
        }
    };
    Ok(Target {
        config,
        tls,
        describe: format!("{}@{}:{}/{}", pg.user, pg.host, pg.port, pg.name),
    })
}

fn password(pg: &PostgresConfig) -> Result<Option<String>, StoreError> {
    if !pg.pass.is_empty() {
        return Ok(Some(pg.pass.clone()));
    }
    if pg.pass_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&pg.pass_file).map_err(|e| {
        StoreError::Io(format!(
            "database.postgres.pass_file {}: {e}",
            pg.pass_file.display()
        ))
    })?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
}

fn rustls_config() -> Result<rustls::ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Io(format!("TLS setup: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(StoreError::Io(
            "database.postgres.ssl: no trusted root certificates found on this system (set \
             SSL_CERT_FILE to the CA that signed the PostgreSQL server's certificate)"
                .into(),
        ));
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Opens one connection and drives it on the current runtime; the client reports
/// `is_closed` once the connection ends.
pub async fn connect(target: &Target) -> Result<Client, StoreError> {
    let fail = |e: tokio_postgres::Error| {
        StoreError::Io(format!(
            "cannot connect to PostgreSQL {}: {}",
            target.describe,
            super::error_text(&e)
        ))
    };
    let client = match &target.tls {
        Tls::None => {
            let (client, connection) = target
                .config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(fail)?;
            tokio::spawn(drive(connection));
            client
        }
        Tls::Rustls(tls) => {
            let (client, connection) = target.config.connect(tls.clone()).await.map_err(fail)?;
            tokio::spawn(drive(connection));
            client
        }
    };
    Ok(client)
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(error) = connection.await {
        tracing::warn!(error = %super::error_text(&error), "PostgreSQL connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(host: &str, ssl: &str) -> PostgresConfig {
        PostgresConfig {
            host: host.into(),
            ssl: ssl.into(),
            ..Default::default()
        }
    }

    #[test]
    fn ssl_takes_headscales_forms_and_refuses_maybe_plaintext_modes() {
        for off in ["false", "disable", "", "FALSE"] {
            assert!(
                matches!(target(&pg("db", off)).unwrap().tls, Tls::None),
                "{off}"
            );
        }
        for bad in ["prefer", "allow", "maybe"] {
            let error = target(&pg("db", bad)).err().unwrap().to_string();
            assert!(error.contains("database.postgres.ssl"), "{error}");
        }
        // No TLS over a unix socket, as libpq.
        assert!(matches!(
            target(&pg("/run/postgresql", "true")).unwrap().tls,
            Tls::None
        ));
    }

    #[test]
    fn the_password_file_loses_its_line_end_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\r\n").unwrap();
        let config = PostgresConfig {
            pass_file: file,
            ..Default::default()
        };
        assert_eq!(password(&config).unwrap().as_deref(), Some("s3cret"));
        let missing = PostgresConfig {
            pass_file: dir.path().join("none"),
            ..Default::default()
        };
        let error = password(&missing).unwrap_err().to_string();
        assert!(error.contains("database.postgres.pass_file"), "{error}");
        let described = target(&PostgresConfig::default()).unwrap().describe;
        assert_eq!(described, "headscale@localhost:5432/headscale");
    }
}
