//! A throwaway PostgreSQL cluster for tests: `initdb` into a temp dir, the server run by
//! `pg_ctl` as the `postgres` user (we run as root, which PostgreSQL refuses), listening only
//! on a unix socket in that dir (no TCP, unless `start_with_tls`: then also 127.0.0.1), password authentication (scram) for a role and
//! database made for the test. Stopped (`-m immediate`) and removed when dropped, also when a
//! test panics. Include it with `#[path = "pg_cluster/mod.rs"] mod pg_cluster;`.
//!
//! Needs PostgreSQL's server binaries (Debian: `apt-get install -y postgresql`); they are
//! looked up in `PG_BIN`, on `PATH`, then in `/usr/lib/postgresql/<version>/bin`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod conformance;

/// The role and database made for the test, and its password.
pub const USER: &str = "hs";
pub const DATABASE: &str = "hs";
pub const PASSWORD: &str = "test-password-1";
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Names the socket file; also the loopback TCP port when `tls` is on.
    port: u16,
    /// Also listening on 127.0.0.1:`port` with TLS (`start_with_tls`).
    tls: bool,
}

/// Where `initdb`, `pg_ctl` and `psql` are.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file());
    if let Some(dir) = on_path {
        return dir;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|dir| dir.join("initdb").is_file())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL's initdb/pg_ctl not found (PG_BIN, PATH, /usr/lib/postgresql/*/bin): \
                 install it with `apt-get install -y postgresql`"
            )
        })
}

/// Runs `program args` as the `postgres` user; panics with its output when it fails.
fn as_postgres(bin: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(program))
        .args(args)
        .envs(env.iter().copied())
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} as postgres: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl PgCluster {
    /// A new cluster, started, with role `USER` / database `DATABASE`, on a unix socket only.
    pub fn start() -> PgCluster {
        Self::start_with(false)
    }

    /// `start`, also listening on a free loopback port with TLS: a self-signed certificate
    /// for `localhost`, in `ca_file()`.
    pub fn start_with_tls() -> PgCluster {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> PgCluster {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("pg").tempdir().unwrap();
        let chown = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(chown.success(), "cannot hand the temp dir to postgres");
        let port = if tls {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        } else {
            5432
        };
        let cluster = PgCluster {
            dir,
            bin,
            port,
            tls,
        };
        if tls {
            cluster.write_certificate();
        }
        let superuser_pw = cluster.dir.path().join("superuser.pw");
        std::fs::write(&superuser_pw, "superuser-pw\n").unwrap();
        let data = cluster.data();
        as_postgres(
            &cluster.bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--pwfile",
                superuser_pw.to_str().unwrap(),
                "--no-sync",
                "--no-instructions",
                "-E",
                "UTF8",
            ],
            &[],
        );
        cluster.start_server();
        cluster.psql(&format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'"));
        cluster.psql(&format!("CREATE DATABASE {DATABASE} OWNER {USER}"));
        cluster
    }

    /// The server's certificate (self-signed, so also the CA to trust).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    fn write_certificate(&self) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = self.dir.path().join("server.key");
        std::fs::write(self.ca_file(), certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let owned = Command::new("chown")
            .arg("postgres:postgres")
            .arg(self.ca_file())
            .arg(&key)
            .status()
            .unwrap();
        assert!(owned.success());
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory holding the socket (the `host` to connect to).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A file holding the test role's password (for `pass_file`).
    pub fn pass_file(&self) -> PathBuf {
        let path = self.dir.path().join("hs.pw");
        if !path.exists() {
            std::fs::write(&path, format!("{PASSWORD}\n")).unwrap();
        }
        path
    }

    /// `database.postgres` for the test role.
    pub fn config(&self) -> headscale::config::PostgresConfig {
        headscale::config::PostgresConfig {
            host: self.socket_dir().display().to_string(),
            port: self.port,
            name: DATABASE.into(),
            user: USER.into(),
            pass: String::new(),
            pass_file: self.pass_file(),
            ssl: "false".into(),
            ..Default::default()
        }
    }

    /// The `database:` section of a headscale config for this cluster.
    pub fn database_yaml(&self) -> String {
        self.database_yaml_at(&self.socket_dir().display().to_string(), false)
    }

    /// The `database:` section reaching the cluster at `host` (a socket dir, or `localhost`
    /// over TLS when the cluster has it), with `ssl`.
    pub fn database_yaml_at(&self, host: &str, ssl: bool) -> String {
        format!(
            "database:\n  type: postgres\n  postgres:\n    host: {host}\n    port: {}\n    \
             name: {DATABASE}\n    user: {USER}\n    pass_file: {}\n    ssl: {ssl}\n",
            self.port,
            self.pass_file().display()
        )
    }

    /// Starts the server (after `stop`), waiting until it accepts connections.
    pub fn start_server(&self) {
        let mut options = format!(
            "-k {} -p {} -c max_connections=40 -c shared_buffers=16MB",
            self.socket_dir().display(),
            self.port
        );
        if self.tls {
            options.push_str(&format!(
                " -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} \
                 -c ssl_key_file={}",
                self.ca_file().display(),
                self.dir.path().join("server.key").display()
            ));
        } else {
            options.push_str(" -c listen_addresses=''");
        }
        let log = self.dir.path().join("postgres.log");
        as_postgres(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            &[],
        );
    }

    /// Stops the server (`fast`: sessions are ended, committed work is kept).
    pub fn stop_server(&self) {
        as_postgres(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
            &[],
        );
    }

    /// Runs SQL as the superuser in the `postgres` database; returns psql's unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// Runs SQL as the superuser in `database`; returns psql's unaligned output.
    pub fn psql_in(&self, database: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let host = self.socket_dir().display().to_string();
        as_postgres(
            &self.bin_psql(),
            "psql",
            &[
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAt",
                "-c",
                sql,
            ],
            &[("PGPASSWORD", "superuser-pw")],
        )
    }

    /// psql sits beside initdb in Debian's layout; else the one on PATH.
    fn bin_psql(&self) -> PathBuf {
        if self.bin.join("psql").is_file() {
            self.bin.clone()
        } else {
            PathBuf::from("/usr/bin")
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Best effort: never panic while a failing test unwinds.
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir("/")
            .output();
    }
}
