//! Interactive logins across instances (issue #15): two `headscale serve` on one PostgreSQL
//! database, no stickiness. The client's waiting `/machine/register` is held by one
//! instance while the admin's decision, the approval page or the expiry is seen on the
//! other (`ha::logins`).

mod common;
mod pg_cluster;

use common::TestServer;
use headscale::client::{self, ControlClient};
use headscale::tailcfg::{Hostinfo, RegisterRequest, RegisterResponse};
use pg_cluster::PgCluster;
use std::time::{Duration, Instant};

/// How long anything here may take (a poll is 1 s).
const WAIT: Duration = Duration::from_secs(20);

/// An instance named `name` on `cluster`; `keys_from` gives it the first instance's noise
/// and checkpoint keys (instances of one tailnet share them).
fn instance(cluster: &PgCluster, name: &str, keys_from: Option<&TestServer>) -> TestServer {
    instance_with(cluster, name, keys_from, None, "")
}

/// `instance`, with `server_url` (instances behind one name share it) and `extra` config.
fn instance_with(
    cluster: &PgCluster,
    name: &str,
    keys_from: Option<&TestServer>,
    server_url: Option<&str>,
    extra: &str,
) -> TestServer {
    let mut server = configure(cluster, name, keys_from, server_url, extra);
    server.spawn();
    server.wait_healthy();
    server
}

/// `instance_with`'s server, configured but not started.
fn configure(
    cluster: &PgCluster,
    name: &str,
    keys_from: Option<&TestServer>,
    server_url: Option<&str>,
    extra: &str,
) -> TestServer {
    let database = cluster.database_yaml();
    let server = TestServer::with_yaml(|data, port| {
        let url = server_url.map_or_else(|| format!("http://127.0.0.1:{port}"), str::to_string);
        format!(
            "server_url: {url}\n\
             listen_addr: 127.0.0.1:{port}\n\
             metrics_listen_addr: \"\"\n\
             unix_socket: {data}/headscale.sock\n\
             noise:\n  private_key_path: {data}/noise_private.key\n\
             {database}\
             ha:\n  instance_name: {name}\n  poll_interval: 1s\n\
             dns:\n  base_domain: tailnet.example\n  override_local_dns: false\n\
             derp:\n  server:\n    enabled: false\n    private_key_path: {data}/derp.key\n\
             policy:\n  mode: database\n\
             log:\n  level: warn\n\
             {extra}",
            data = data.display()
        )
    });
    if let Some(first) = keys_from {
        std::fs::create_dir_all(server.data_dir()).unwrap();
        for file in ["noise_private.key", "checkpoint_signing.key"] {
            std::fs::copy(first.data_dir().join(file), server.data_dir().join(file)).unwrap();
        }
    }
    server
}

/// Two instances of one tailnet with user `ursula`.
fn pair(cluster: &PgCluster) -> (TestServer, TestServer) {
    let a = instance(cluster, "a", None);
    let b = instance(cluster, "b", Some(&a));
    a.create_user("ursula");
    (a, b)
}

/// A machine waiting in an interactive login started on `server`.
struct Waiting {
    id: String,
    auth_url: String,
    node_key: String,
    answer: tokio::task::JoinHandle<(ControlClient, RegisterResponse)>,
}

async fn start_login(server: &TestServer, hostname: &str) -> Waiting {
    let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    let client = ControlClient::connect(&server.url(), machine, common::CLIENT_CAPVER)
        .await
        .unwrap();
    let node_key = client::random_key("nodekey:").0;
    let request = RegisterRequest {
        version: common::CLIENT_CAPVER.into(),
        node_key: node_key.clone(),
        hostinfo: Some(Hostinfo {
            hostname: hostname.into(),
            os: "linux".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let first = client.register(&request).await.unwrap();
    assert!(first.error.is_empty(), "{first:?}");
    let prefix = format!("{}/register/", server.url());
    assert!(first.auth_url.starts_with(&prefix), "{first:?}");
    let id = first.auth_url[prefix.len()..].to_string();
    let mut followup = request;
    followup.followup = first.auth_url.clone();
    let answer = tokio::spawn(async move {
        let answer = client.register(&followup).await.unwrap();
        (client, answer)
    });
    Waiting {
        id,
        auth_url: first.auth_url,
        node_key,
        answer,
    }
}

/// `GET path` on `port`: status and body text.
fn get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_waiting_on_one_instance_is_approved_on_the_other_and_streams() {
    let cluster = PgCluster::start();
    let (a, b) = pair(&cluster);
    let waiting = start_login(&a, "laptop").await;

    // (b) The approval page on B shows the login started on A; an unknown id is a 404.
    let (status, page) = get(b.port, &format!("/register/{}", waiting.id));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("laptop"), "{page}");
    assert!(page.contains(&waiting.id), "{page}");
    let (status, _) = get(b.port, "/register/aaaaaaaaaaaaaaaaaaaaaaaa");
    assert_eq!(status, 404);
    // A node key never opens the page (L9), on any instance.
    let (status, _) = get(b.port, &format!("/register/{}", waiting.node_key));
    assert_eq!(status, 404);

    // (a) The admin registers it on B; the request waiting on A completes.
    let node = b.json(&[
        "nodes",
        "register",
        "--key",
        &waiting.id,
        "--user",
        "ursula",
    ]);
    assert_eq!(node["name"], "laptop", "{node}");
    let (client, answer) = tokio::time::timeout(WAIT, waiting.answer)
        .await
        .expect("the follow-up on A completes")
        .unwrap();
    assert!(answer.error.is_empty(), "{answer:?}");
    assert!(answer.machine_authorized, "{answer:?}");
    assert_eq!(answer.user.display_name, "ursula", "{answer:?}");

    // The node streams on A.
    let (disco_key, _) = client::random_key("discokey:");
    let request = client.stream_request(&waiting.node_key, &disco_key, vec![]);
    let mut stream = client.map_stream(&request).await.unwrap();
    let first = stream
        .next_within(WAIT)
        .await
        .expect("a first map message")
        .unwrap();
    let me = first.response.node.expect("the node itself");
    assert_eq!(me.key, waiting.node_key);

    // A second decision, on either instance, finds nothing: the login is done.
    for server in [&a, &b] {
        let refused = server.fails(&[
            "nodes",
            "register",
            "--key",
            &waiting.id,
            "--user",
            "ursula",
        ]);
        assert!(refused.contains("no pending registration"), "{refused}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejection_on_one_instance_reaches_the_client_waiting_on_the_other() {
    let cluster = PgCluster::start();
    let (a, b) = pair(&cluster);
    let waiting = start_login(&b, "tablet").await;
    a.ok(&["auth", "reject", "--auth-id", &waiting.id]);
    let (_, answer) = tokio::time::timeout(WAIT, waiting.answer)
        .await
        .expect("the follow-up on B completes")
        .unwrap();
    assert!(answer.error.contains("rejected"), "{answer:?}");
    assert!(!answer.machine_authorized);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_login_is_gone_on_both_instances() {
    let cluster = PgCluster::start();
    let (a, b) = pair(&cluster);
    let waiting = start_login(&a, "old").await;
    for server in [&a, &b] {
        let (status, _) = get(server.port, &format!("/register/{}", waiting.id));
        assert_eq!(status, 200);
    }
    // Its time is up (the lifetime is 15 minutes: move its expiry into the past).
    cluster.psql_in(
        pg_cluster::DATABASE,
        &format!(
            "UPDATE headscale_rs.pending_logins SET expires_at = now() - interval '1 second' \
         WHERE id = '{}'",
            waiting.id
        ),
    );
    for server in [&a, &b] {
        let (status, _) = get(server.port, &format!("/register/{}", waiting.id));
        assert_eq!(status, 404);
        let refused = server.fails(&[
            "nodes",
            "register",
            "--key",
            &waiting.id,
            "--user",
            "ursula",
        ]);
        assert!(refused.contains("no pending registration"), "{refused}");
    }
    // The client waiting on A is told at its next poll, not left waiting.
    let (_, answer) = tokio::time::timeout(WAIT, waiting.answer)
        .await
        .expect("the follow-up on A ends")
        .unwrap();
    assert!(answer.error.contains("expired"), "{answer:?}");
    assert!(answer.auth_url.is_empty() || answer.auth_url == waiting.auth_url);
}

#[test]
fn the_shared_bounds_hold_across_instances() {
    // One machine may hold at most 4 waiting logins, whichever instance it asks.
    let cluster = PgCluster::start();
    let (a, b) = pair(&cluster);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        let mut answers = Vec::new();
        for n in 0..5 {
            let server = if n % 2 == 0 { &a } else { &b };
            let client =
                ControlClient::connect(&server.url(), machine.clone(), common::CLIENT_CAPVER)
                    .await
                    .unwrap();
            let answer = client
                .register(&RegisterRequest {
                    version: common::CLIENT_CAPVER.into(),
                    node_key: client::random_key("nodekey:").0,
                    ..Default::default()
                })
                .await
                .unwrap();
            answers.push(answer);
        }
        for answer in &answers[..4] {
            assert!(answer.error.is_empty(), "{answer:?}");
        }
        assert!(
            answers[4].error.contains("from this machine"),
            "{:?}",
            answers[4]
        );
    });
    let deadline = Instant::now() + WAIT;
    let count = loop {
        let count = cluster.psql_in(
            pg_cluster::DATABASE,
            "SELECT count(*) FROM headscale_rs.pending_logins",
        );
        if count.trim() == "4" || Instant::now() > deadline {
            break count;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(count.trim(), "4");
}

// ---- OIDC across instances (the provider runs in a network namespace, as in tests/oidc.rs) ----

/// Set in the re-executed test: "we are inside the namespace".
const INSIDE: &str = "HEADSCALE_HA_LOGINS_NETNS";

/// Runs the calling test's `body` in a network and PID namespace of its own (only loopback;
/// everything started dies with it): re-executes this test under `unshare`. Needs root.
fn isolated<F: std::future::Future<Output = ()>>(body: impl FnOnce() -> F) {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(INSIDE).is_some() {
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .output()
            .expect("`ip` (iproute2) is needed");
        assert!(up.status.success(), "ip link set lo up: {up:?}");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(body());
        return;
    }
    let thread = std::thread::current();
    let name = thread.name().expect("libtest names each test's thread");
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (unshare)"
    );
    let mut command = std::process::Command::new("unshare");
    command
        .args(["--net", "--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1");
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run `unshare` ({e}): util-linux is needed"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} failed inside its namespace ({})",
        output.status
    );
}

/// `url` on `port` instead of its own (the same instance set behind one name).
fn on_port(url: &str, port: u16) -> String {
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .expect("a loopback URL");
    let path = &rest[rest.find('/').unwrap_or(rest.len())..];
    format!("http://127.0.0.1:{port}{path}")
}

#[test]
fn an_oidc_login_crosses_instances_and_its_callback_is_used_once() {
    isolated(|| async {
        use common::oidc::{oidc_yaml, Browser, OidcProvider, OidcUser};
        let cluster = PgCluster::start();
        let alice = OidcUser::new("sub-alice", "alice", "alice@example.com");
        let provider_port = common::free_port();
        let oidc = oidc_yaml(provider_port, "");
        let mut a = configure(&cluster, "a", None, None, &oidc);
        // Both instances answer to A's name (as behind a load balancer).
        let callback = format!("{}/oidc/callback", a.url());
        let _provider = OidcProvider::start_on(provider_port, &[&alice], &[&callback]);
        a.spawn();
        a.wait_healthy();
        let b = instance_with(&cluster, "b", Some(&a), Some(&a.url()), &oidc);
        let waiting = start_login(&a, "laptop").await;
        // The AuthURL handed out by A is opened on B (B starts the flight).
        let mut browser = Browser::new();
        let form = browser
            .open_login(&on_port(&waiting.auth_url, b.port))
            .await
            .unwrap_or_else(|page| panic!("no login form through B: {page}"));
        let callback = browser
            .submit_login(&form, &alice.username, &alice.password)
            .await
            .unwrap_or_else(|page| panic!("the provider did not redirect back: {page}"));
        // The callback lands on A, which takes B's flight and shows the confirmation.
        let confirmation = browser.get(&on_port(&callback, a.port)).await;
        assert_eq!(confirmation.status, 200, "{confirmation}");
        // Replayed on B: the flight is gone everywhere.
        let replay = browser.get(&on_port(&callback, b.port)).await;
        assert_eq!(replay.status, 410, "{replay}");
        // Confirmed on B; the client waiting on A is registered.
        let mut confirm_on_b = confirmation.clone();
        confirm_on_b.url = on_port(&confirmation.url, b.port);
        let done = browser.confirm(&confirm_on_b).await;
        assert!(done.body.contains("Node registered"), "{done}");
        let (_, answer) = tokio::time::timeout(WAIT, waiting.answer)
            .await
            .expect("the follow-up on A completes")
            .unwrap();
        assert!(answer.error.is_empty(), "{answer:?}");
        assert!(answer.machine_authorized, "{answer:?}");
        // A second confirmation, anywhere, finds nothing.
        let twice = browser.confirm(&confirmation).await;
        assert_ne!(twice.status, 200, "{twice}");
    });
}
