//! Our real `headscale` binary as the real clients' control server: a temp data dir, a config
//! with the embedded DERP on (region 999, STUN on a free loopback UDP port, client
//! verification) and `tailnet.test` as the MagicDNS domain; admin through the CLI
//! (`common::TestServer`). Prints the tail of its log when a scenario fails.

use crate::common::{self, TestServer};
use std::ops::{Deref, DerefMut};

pub const BASE_DOMAIN: &str = "tailnet.test";

pub struct Server {
    inner: TestServer,
}

impl Server {
    /// Writes the config and starts the server; returns once `/health` answers.
    pub fn start() -> Server {
        let stun = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let inner = TestServer::with_yaml(|data, port| {
            format!(
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
            )
        });
        let mut server = Server { inner };
        server.restart();
        server
    }

    /// (Re)starts the process on the same data dir and port; returns once healthy.
    pub fn restart(&mut self) {
        self.inner.spawn();
        self.inner.wait_healthy();
    }

    /// What clients pass as `--login-server`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port)
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
