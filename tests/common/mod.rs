//! Test doors shared by the full-stack tests: start the real `headscale` binary on a temp
//! data dir (unix socket, TCP on a free loopback port), run CLI commands against it, and
//! stop it gracefully or with SIGKILL.

#![allow(dead_code)]

use headscale::client::{self, ControlClient};
use headscale::tailcfg::{RegisterAuth, RegisterRequest};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_headscale");

/// A free TCP port on loopback (bound then released; fine for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The config lines every test server shares: loopback URL and listener on `port`, no metrics,
/// and the unix socket, Noise key and store under `data`.
pub fn base_yaml(data: &std::path::Path, port: u16) -> String {
    base_yaml_on(
        data,
        port,
        &format!(
            "database:\n  type: sled\n  sled:\n    path: {}/db.sled\n",
            data.display()
        ),
    )
}

/// `base_yaml` with `database` (a whole `database:` section) as the store.
pub fn base_yaml_on(data: &std::path::Path, port: u16, database: &str) -> String {
    format!(
        "server_url: http://127.0.0.1:{port}\n\
         listen_addr: 127.0.0.1:{port}\n\
         metrics_listen_addr: \"\"\n\
         unix_socket: {data}/headscale.sock\n\
         noise:\n  private_key_path: {data}/noise_private.key\n\
         {database}",
        data = data.display()
    )
}

/// The rest of every test server's config: no DERP, policy in the database, quiet logs.
pub fn common_sections(data: &std::path::Path) -> String {
    format!(
        "dns:\n  base_domain: tailnet.example\n  override_local_dns: false\n\
         derp:\n  server:\n    enabled: false\n    private_key_path: {data}/derp.key\n\
         policy:\n  mode: database\n\
         log:\n  level: warn\n",
        data = data.display()
    )
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    /// Extra environment for the server process (e.g. `HEADSCALE_*` overrides).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl TestServer {
    /// Writes a config into a fresh temp dir (without starting the server).
    pub fn new(extra_yaml: &str) -> TestServer {
        TestServer::with_yaml(|data, port| {
            format!(
                "{}{}{extra_yaml}\n",
                base_yaml(data, port),
                common_sections(data)
            )
        })
    }

    /// `new` with `database` (a whole `database:` section, e.g. PostgreSQL's) as the store.
    pub fn on_database(database: &str, extra_yaml: &str) -> TestServer {
        TestServer::with_yaml(|data, port| {
            format!(
                "{}{}{extra_yaml}\n",
                base_yaml_on(data, port, database),
                common_sections(data)
            )
        })
    }

    /// Writes the config `yaml(data_dir, port)` returns into a fresh temp dir (without
    /// starting the server); the config must keep the unix socket at `data_dir/headscale.sock`.
    pub fn with_yaml(yaml: impl FnOnce(&std::path::Path, u16) -> String) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml(&dir.path().join("data"), port)).unwrap();
        TestServer {
            dir,
            config,
            port,
            env: Vec::new(),
            child: None,
        }
    }

    /// Starts a server with the default test config.
    pub fn start() -> TestServer {
        let mut server = TestServer::new("");
        server.spawn();
        server
    }

    /// Starts a server whose config has `extra_yaml` appended (e.g. a `tuning:` section).
    pub fn start_with(extra_yaml: &str) -> TestServer {
        let mut server = TestServer::new(extra_yaml);
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn socket(&self) -> PathBuf {
        self.data_dir().join("headscale.sock")
    }

    /// Starts `headscale serve` and waits until its socket answers.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_for("start", |server| {
            std::os::unix::net::UnixStream::connect(server.socket()).is_ok()
        });
    }

    /// Waits until the TCP listener answers `GET /health` with 200.
    pub fn wait_healthy(&mut self) {
        self.wait_for("be healthy", |server| {
            std::net::TcpStream::connect(("127.0.0.1", server.port)).is_ok()
                && http(server.port, "GET", "/health", None).0 == 200
        });
    }

    /// Polls `ready` for up to 20 s; panics with the log if the server exits or time runs out.
    fn wait_for(&mut self, what: &str, ready: impl Fn(&TestServer) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready(self) {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("server exited early with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not {what}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `users create NAME`.
    pub fn create_user(&self, name: &str) {
        self.ok(&["users", "create", name]);
    }

    /// `preauthkeys create --user USER [extra...]`: the full key text.
    pub fn pre_auth_key(&self, user: &str, extra: &[&str]) -> String {
        let mut args = vec!["preauthkeys", "create", "--user", user];
        args.extend(extra);
        let key = self.json(&args);
        key["key"].as_str().unwrap().to_string()
    }

    /// `nodes list -o api-json` as a list.
    pub fn nodes(&self) -> Vec<serde_json::Value> {
        match self.json(&["nodes", "list"]) {
            serde_json::Value::Array(nodes) => nodes,
            other => panic!("nodes list is not a list: {other}"),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGTERM and wait: the graceful path (final snapshot and checkpoint).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("server ignored SIGTERM: {}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs the CLI with this server's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs the CLI and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`headscale {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the CLI with `-o api-json` (the API's wire shape with our extra fields; `-o json`
    /// is headscale's Go-struct shape, tests/cli_output.rs) and parses the output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "api-json"]);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Runs the CLI, expects failure, and returns the one line on stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "`headscale {}` should have failed but printed {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("note:")).collect();
        assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
        lines[0].to_string()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One plain HTTP/1.1 request to the server's TCP listener: status and JSON body (`Null`
/// when the body is not JSON).
pub fn http(port: u16, method: &str, path: &str, bearer: Option<&str>) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = bearer
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// The capability version our own test client announces.
pub const CLIENT_CAPVER: u16 = 145;

/// A node registered with our own control client (`headscale::client`), not yet streaming.
pub struct Machine {
    pub client: ControlClient,
    pub node_key: String,
    pub disco_key: String,
}

/// Registers a Linux node named `hostname` with an auth key.
pub async fn join(server: &TestServer, auth_key: &str, hostname: &str) -> Machine {
    join_with_routes(server, auth_key, hostname, &[]).await
}

/// `join`, announcing `routes` (`--advertise-routes`).
pub async fn join_with_routes(
    server: &TestServer,
    auth_key: &str,
    hostname: &str,
    routes: &[&str],
) -> Machine {
    let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    let client = ControlClient::connect(&server.url(), machine, CLIENT_CAPVER)
        .await
        .unwrap();
    let (node_key, _) = client::random_key("nodekey:");
    let (disco_key, _) = client::random_key("discokey:");
    let answer = client
        .register(&RegisterRequest {
            version: CLIENT_CAPVER.into(),
            node_key: node_key.clone(),
            auth: Some(RegisterAuth {
                auth_key: auth_key.into(),
            }),
            hostinfo: Some(headscale::tailcfg::Hostinfo {
                hostname: hostname.into(),
                os: "linux".into(),
                routable_ips: (!routes.is_empty())
                    .then(|| routes.iter().map(|r| r.to_string()).collect()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(answer.error.is_empty(), "{answer:?}");
    assert!(answer.machine_authorized);
    Machine {
        client,
        node_key,
        disco_key,
    }
}

// ---- Engine-level tests (tests/engine.rs, tests/bitflip.rs, tests/storage_faults.rs) ----

/// A clock stuck at 2026-01-01T00:00:00Z, so what the engine records does not depend on when
/// the test runs.
pub struct FixedClock;

impl headscale::engine::Clock for FixedClock {
    fn now(&self) -> headscale::core::Timestamp {
        headscale::core::Timestamp(1_767_225_600_000)
    }
}

/// `CreateUser` for `name`, every other field empty.
pub fn create_user(name: &str) -> headscale::core::Command {
    headscale::core::Command::CreateUser {
        name: name.into(),
        display_name: String::new(),
        email: String::new(),
        picture_url: String::new(),
    }
}

/// `engine::start` on the store `opener` opens, with [`FixedClock`] and a fixed signing key.
pub fn start_engine(
    opener: headscale::engine::StoreOpener,
    options: headscale::engine::EngineOptions,
) -> Result<headscale::engine::EngineHandle, headscale::store::StoreError> {
    headscale::engine::start(
        opener,
        Box::new(FixedClock),
        ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
        options,
    )
}

// ---- Shared by the DERP and hostile suites (tests/derp.rs, tests/revocation.rs,
// tests/hostile/harness.rs) ----

/// A free UDP port on loopback (for STUN; bound then released).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The registration of a Linux node named `hostname` with node key `node_key` and an auth
/// key, at our client's capability version.
pub fn auth_key_registration(node_key: &str, auth_key: &str, hostname: &str) -> RegisterRequest {
    RegisterRequest {
        version: CLIENT_CAPVER.into(),
        node_key: node_key.to_string(),
        auth: Some(RegisterAuth {
            auth_key: auth_key.into(),
        }),
        hostinfo: Some(headscale::tailcfg::Hostinfo {
            hostname: hostname.into(),
            os: "linux".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

// ---- grpc slice: a self-signed certificate for the TLS tests of grpc_listen_addr ----

/// A self-signed certificate for `localhost` written as PEM into `dir`: (cert path, key
/// path, the certificate's PEM for a client's trust store).
pub fn self_signed_localhost(dir: &std::path::Path) -> (PathBuf, PathBuf, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let pem = certified.cert.pem();
    std::fs::write(&cert, &pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, pem)
}

// ---- tools built once by `.ci/install-*` (the real Go headscale, pebble) ----

/// A binary a `.ci/install-*` script builds into the cache (`$HEADSCALE_CACHE`, default
/// `~/.cache/headscale-rs`): `$variable` when set, else `<cache>/<relative>`; a clear failure
/// naming `script` when it is missing.
pub fn cached_tool(variable: &str, relative: &str, script: &str) -> PathBuf {
    let path = match std::env::var_os(variable) {
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("HEADSCALE_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                    .join(".cache/headscale-rs")
            })
            .join(relative),
    };
    assert!(
        path.is_file(),
        "{} is missing: run `bash {script}` (or set {variable})",
        path.display()
    );
    path
}

/// The real Go headscale v0.29.2 (server and CLI).
pub fn go_headscale() -> PathBuf {
    cached_tool(
        "HEADSCALE_GO",
        "go-headscale-0.29.2/headscale",
        ".ci/install-go-headscale",
    )
}

/// Runs the Go CLI with `config` and `env` (no update check, no prompts' stdin).
pub fn go_cli_output(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(go_headscale())
        .arg("-c")
        .arg(config)
        .args(args)
        .env("HEADSCALE_DISABLE_CHECK_UPDATES", "true")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs the Go CLI and expects success; its stdout.
pub fn go_cli_ok(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = go_cli_output(config, args, env);
    assert!(
        out.status.success(),
        "Go `headscale {}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the Go CLI with `-o json` and parses its output.
pub fn go_cli_json(
    config: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = go_cli_ok(config, &all, env);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("Go `headscale {}`: not JSON ({e}): {out}", args.join(" ")))
}

// ---- oidc-tests slice: the OpenID provider and the scripted browser (tests/oidc.rs,
// tests/real_clients/oidc.rs) ----

pub mod oidc;

// ---- HA / PostgreSQL: what identifies a server's nodes ----

/// Each node by what identifies it, in id order (not presence, which is volatile): a log
/// moved or shared between servers must give the same.
pub fn node_facts(server: &TestServer) -> Vec<serde_json::Value> {
    let mut nodes: Vec<_> = server
        .nodes()
        .into_iter()
        .map(|n| {
            serde_json::json!({
                "id": n["id"], "name": n["givenName"], "ips": n["ipAddresses"],
                "user": n["user"]["name"], "nodeKey": n["nodeKey"],
            })
        })
        .collect();
    nodes.sort_by_key(|n| {
        n["id"]
            .as_str()
            .unwrap_or_default()
            .parse::<u64>()
            .unwrap_or(0)
    });
    nodes
}
