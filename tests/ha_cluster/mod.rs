//! Several `headscale serve` processes on one PostgreSQL log, for the cluster-level HA tests
//! (issue #15): instance 0 starts first, its Noise key and checkpoint key are copied into the
//! other instances' data dirs, then they start. Clients reach the instances through a front
//! [`Proxy`] (an L4 balancer: round-robin, skipping dead instances); each instance reaches
//! PostgreSQL through its own proxy, which a test can cut to partition that instance from the
//! database while its clients still reach it. Kill switches: `kill` (SIGKILL), `partition`.
//!
//! Include with `#[path = "ha_cluster/mod.rs"] mod ha_cluster;` beside `common` and
//! `pg_cluster`.

#![allow(dead_code)]

pub mod proxy;

use crate::common::{http, TestServer};
use crate::pg_cluster::{PgCluster, DATABASE, USER};
pub use proxy::Proxy;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The config sections of instance `index` besides the listener, keys, database and `ha:`
/// (`dns:`, `derp:`, `policy:`, `log:`…), given its data dir.
pub type Sections = Arc<dyn Fn(usize, &Path) -> String + Send + Sync>;

/// How the instances are tuned: short intervals, so failures show within seconds.
#[derive(Clone)]
pub struct ClusterOptions {
    pub instances: usize,
    pub poll_interval: &'static str,
    pub max_staleness: &'static str,
    pub heartbeat_interval: &'static str,
    pub presence_ttl: &'static str,
    pub node_offline_grace: &'static str,
    /// Appended to every instance's config.
    pub extra_yaml: String,
    /// `dns:`, `derp:` (off), `policy:` and `log:` by default.
    pub sections: Sections,
}

/// The default sections: MagicDNS domain `tailnet.example`, no DERP, database policy (as
/// every test server's).
fn default_sections(_index: usize, data: &Path) -> String {
    crate::common::common_sections(data)
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            instances: 3,
            poll_interval: "250ms",
            max_staleness: "3s",
            heartbeat_interval: "500ms",
            presence_ttl: "3s",
            node_offline_grace: "1s",
            extra_yaml: String::new(),
            sections: Arc::new(default_sections),
        }
    }
}

pub struct Cluster {
    /// Dropped last (fields drop in order): the instances and proxies go first.
    pub instances: Vec<TestServer>,
    /// Clients → instances (backend `i` is instance `i`).
    pub front: Proxy,
    /// Instance `i` → PostgreSQL.
    pub db: Vec<Proxy>,
    pub options: ClusterOptions,
    pub pg: PgCluster,
}

/// Instance `index`'s config: listener on `port`, the front proxy as its URL and a trusted
/// proxy (every client arrives from loopback, as behind a real balancer: no per-source caps
/// on the proxy's address), PostgreSQL through `db_port` (plain TCP on loopback), its own
/// `ha.instance_name`.
fn instance_yaml(
    options: &ClusterOptions,
    index: usize,
    data: &Path,
    port: u16,
    front: u16,
    db_port: u16,
    pass_file: &Path,
) -> String {
    format!(
        "server_url: http://127.0.0.1:{front}\n\
         listen_addr: 127.0.0.1:{port}\n\
         metrics_listen_addr: \"\"\n\
         trusted_proxies: [\"127.0.0.1\"]\n\
         unix_socket: {data}/headscale.sock\n\
         noise:\n  private_key_path: {data}/noise_private.key\n\
         database:\n  type: postgres\n  postgres:\n    host: 127.0.0.1\n    port: {db_port}\n    \
         name: {DATABASE}\n    user: {USER}\n    pass_file: {pass}\n    ssl: false\n\
         {sections}\
         ha:\n  instance_name: ha-{index}\n  poll_interval: {poll}\n  max_staleness: {stale}\n  \
         heartbeat_interval: {beat}\n  presence_ttl: {ttl}\n\
         tuning:\n  node_offline_grace: {grace}\n\
         {extra}\n",
        data = data.display(),
        pass = pass_file.display(),
        poll = options.poll_interval,
        stale = options.max_staleness,
        beat = options.heartbeat_interval,
        ttl = options.presence_ttl,
        grace = options.node_offline_grace,
        extra = options.extra_yaml,
        sections = (options.sections)(index, data),
    )
}

/// The files every instance must share: the Noise key (clients pin the server's key) and
/// the checkpoint signing key (checkpoints in the shared log verify with one key).
const SHARED_KEYS: [&str; 2] = ["noise_private.key", "checkpoint_signing.key"];

impl Cluster {
    /// `instances` instances with the default tuning.
    pub fn start(instances: usize) -> Cluster {
        Cluster::start_with(ClusterOptions {
            instances,
            ..Default::default()
        })
    }

    pub fn start_with(options: ClusterOptions) -> Cluster {
        // PostgreSQL on loopback TCP (the TLS variant also accepts plain connections), so a
        // proxy can sit between each instance and it.
        let pg = PgCluster::start_with_tls();
        let pg_addr: SocketAddr = ([127, 0, 0, 1], pg.port()).into();
        let front = Proxy::start();
        let mut db = Vec::new();
        let mut instances = Vec::new();
        for index in 0..options.instances {
            let db_proxy = Proxy::to(&[pg_addr]);
            let (db_port, front_port, pass) = (db_proxy.port(), front.port(), pg.pass_file());
            let server = TestServer::with_yaml(|data, port| {
                instance_yaml(&options, index, data, port, front_port, db_port, &pass)
            });
            front.add_backend(([127, 0, 0, 1], server.port).into());
            db.push(db_proxy);
            instances.push(server);
        }
        let mut cluster = Cluster {
            instances,
            front,
            db,
            options,
            pg,
        };
        cluster.instances[0].spawn();
        cluster.instances[0].wait_healthy();
        let first = cluster.instances[0].data_dir();
        for server in &mut cluster.instances[1..] {
            std::fs::create_dir_all(server.data_dir()).unwrap();
            for name in SHARED_KEYS {
                std::fs::copy(first.join(name), server.data_dir().join(name))
                    .unwrap_or_else(|e| panic!("cannot copy {name} from instance 0: {e}"));
            }
            server.spawn();
            server.wait_healthy();
        }
        cluster
    }

    /// The front proxy's URL (what clients use).
    pub fn url(&self) -> String {
        self.front.url()
    }

    pub fn instance(&self, index: usize) -> &TestServer {
        &self.instances[index]
    }

    /// SIGKILL instance `index` (a crash); the front proxy notices by the refused connects.
    pub fn kill(&mut self, index: usize) {
        self.instances[index].kill();
    }

    /// Starts instance `index` again (after `kill`) and waits until it is healthy.
    pub fn restart(&mut self, index: usize) {
        self.instances[index].spawn();
        self.instances[index].wait_healthy();
    }

    /// Cuts instance `index` off from PostgreSQL (open connections closed, new ones closed
    /// at once); its clients still reach it through the front proxy.
    pub fn partition(&self, index: usize) {
        self.db[index].set_down(0);
    }

    /// Lets instance `index` reach PostgreSQL again.
    pub fn heal(&self, index: usize) {
        self.db[index].set_up(0);
    }

    /// `GET /health` on instance `index` directly: the status.
    pub fn health(&self, index: usize) -> u16 {
        http(self.instances[index].port, "GET", "/health", None).0
    }

    /// The whole log as instance `index` sees it (`events list -o json`).
    pub fn events(&self, index: usize) -> Vec<serde_json::Value> {
        let out = self.instances[index].ok(&["events", "list", "-o", "json"]);
        match serde_json::from_str(&out) {
            Ok(serde_json::Value::Array(events)) => events,
            _ => panic!("events list on instance {index} is not a JSON list: {out}"),
        }
    }

    /// Waits until every instance in `instances` lists the same log as instance 0; the time
    /// it took (panics after 20 s).
    pub fn wait_same_log(&self, instances: &[usize]) -> Duration {
        let mut seen = Vec::new();
        Cluster::within(Duration::from_secs(20), || {
            let head = self.events(0);
            seen = instances.iter().map(|i| self.events(*i).len()).collect();
            instances.iter().all(|i| self.events(*i) == head)
        })
        .unwrap_or_else(|| {
            panic!(
                "instances {instances:?} do not reach instance 0's {} events: {seen:?}",
                self.events(0).len()
            )
        })
    }

    /// What identifies each node on instance `index`, in id order (no presence, which is
    /// volatile and per instance until presence is shared).
    pub fn node_facts(&self, index: usize) -> Vec<serde_json::Value> {
        let mut nodes: Vec<_> = self.instances[index]
            .nodes()
            .into_iter()
            .map(|n| {
                serde_json::json!({
                    "id": n["id"], "name": n["givenName"], "ips": n["ipAddresses"],
                    "user": n["user"]["name"], "nodeKey": n["nodeKey"], "tags": n["tags"],
                })
            })
            .collect();
        nodes.sort_by_key(|n| n["id"].as_str().unwrap_or("0").parse::<u64>().unwrap_or(0));
        nodes
    }

    /// Polls `check` every 20 ms until it holds or `limit` passes; the time it took, or
    /// `None` on the deadline.
    pub fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if check() {
                return Some(start.elapsed());
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs the CLI with `config` (for threads that cannot borrow a `TestServer`).
pub fn cli_at(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::common::BIN)
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}
