//! Our real `headscale` binary as the real clients' control server: a temp data dir, a config
//! with the embedded DERP on (region 999, STUN on a free loopback UDP port, client
//! verification) and `tailnet.test` as the MagicDNS domain; admin through the CLI
//! (`common::TestServer`). Optionally `https://` with a certificate from a test CA. Prints the
//! tail of its log when a scenario fails.

use crate::common::{self, TestServer};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const BASE_DOMAIN: &str = "tailnet.test";

pub struct Server {
    inner: TestServer,
    /// With TLS: the PEM file of the test CA that signed the server's certificate.
    pub ca: Option<PathBuf>,
}

impl Server {
    /// Plain `http://`: writes the config and starts the server; returns once `/health` answers.
    pub fn start() -> Server {
        Server::start_with(false, &[])
    }

    /// Plain `http://` with `HEADSCALE_*` config overrides (e.g. `HEADSCALE_NODE_REQUIRE_APPROVAL`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Server {
        Server::start_with(false, env)
    }

    /// `https://` with a certificate for 127.0.0.1 from a fresh test CA (`ca`), which clients
    /// must trust through `SSL_CERT_FILE`; DERP then goes over TLS too.
    pub fn start_tls() -> Server {
        Server::start_with(true, &[])
    }

    /// Plain `http://` with config lines appended that need the server's port first (an
    /// `oidc:` section: the provider must know our callback URL before we start).
    pub fn start_with_extra(extra: impl FnOnce(u16) -> String) -> Server {
        Server::start_configured(false, &[], extra)
    }

    /// `start_tls` with config lines appended that need the server's port first.
    pub fn start_tls_with_extra(extra: impl FnOnce(u16) -> String) -> Server {
        Server::start_configured(true, &[], extra)
    }

    fn start_with(tls: bool, env: &[(&str, &str)]) -> Server {
        Server::start_configured(tls, env, |_| String::new())
    }

    fn start_configured(
        tls: bool,
        env: &[(&str, &str)],
        extra: impl FnOnce(u16) -> String,
    ) -> Server {
        let mut ca = None;
        let stun = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let inner = TestServer::with_yaml(|data, port| {
            let mut tls_yaml = String::new();
            if tls {
                let dir = data.parent().unwrap();
                ca = Some(write_test_certificates(dir));
                tls_yaml = format!(
                    "tls_cert_path: {}\ntls_key_path: {}\ngrpc_listen_addr: 127.0.0.1:0\n",
                    dir.join("server.pem").display(),
                    dir.join("server.key").display()
                );
            }
            let yaml = format!(
                "{base}\
                 dns:\n  magic_dns: true\n  base_domain: {BASE_DOMAIN}\n  override_local_dns: false\n\
                 derp:\n  server:\n    enabled: true\n    region_id: 999\n    verify_clients: true\n\
                 \x20   stun_listen_addr: 127.0.0.1:{stun}\n    private_key_path: {data}/derp.key\n\
                 \x20   automatically_add_embedded_derp_region: true\n  urls: []\n  paths: []\n\
                 policy:\n  mode: database\n\
                 node:\n  ephemeral:\n    inactivity_timeout: 30s\n\
                 log:\n  level: info\n",
                base = common::base_yaml(data, port),
                data = data.display()
            );
            let yaml = if tls {
                yaml.replace("http://127.0.0.1", "https://127.0.0.1") + &tls_yaml
            } else {
                yaml
            };
            yaml + &extra(port)
        });
        let mut server = Server { inner, ca };
        server.inner.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        server.restart();
        server
    }

    /// (Re)starts the process on the same data dir and port; returns once healthy.
    pub fn restart(&mut self) {
        self.inner.spawn();
        if self.ca.is_none() {
            self.inner.wait_healthy();
        } else {
            let port = self.inner.port;
            crate::wait_until(Duration::from_secs(20), "the TLS listener", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).ok()
            });
        }
    }

    /// What clients pass as `--login-server`.
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.inner.port)
    }

    /// The node called `name` in `nodes list`, if any.
    pub fn node(&self, name: &str) -> Option<serde_json::Value> {
        self.inner.nodes().into_iter().find(|n| n["name"] == name)
    }
}

impl Deref for Server {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.inner
    }
}

impl DerefMut for Server {
    fn deref_mut(&mut self) -> &mut TestServer {
        &mut self.inner
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            crate::print_tail("server log", &self.inner.log());
        }
    }
}

/// A test CA (`ca.pem`) and a certificate for 127.0.0.1 and localhost it signed
/// (`server.pem`, `server.key`) in `dir`; returns the CA's path.
fn write_test_certificates(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let certificate = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), certificate.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}
