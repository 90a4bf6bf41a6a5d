//! Revocation cuts off (issue #11, audit M3), against the real server binary with our own
//! control client and a small DERP client: a node that an admin expires loses its peers,
//! packet filter and DNS config on its open map stream within one tick, and its DERP
//! connection is closed within a second; a deleted node's stream ends and its relay
//! connection is closed; a non-streaming map of an expired node has no peers; a node
//! waiting for device approval cannot use the relay until it is approved.

mod common;

use common::TestServer;
use crypto_box::aead::{Aead, AeadCore, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use headscale::client::{self, ControlClient, MapStream, Netmap};
use headscale::derp::frame::{self, ClientFrame, ServerFrame};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);
/// How soon a revoked key's relay connection must be closed.
const RELAY_CUT: Duration = Duration::from_secs(1);
const TUNING: &str =
    "tuning:\n  batch_change_delay: 50ms\n  map_keepalive_interval: 2s\n  node_offline_grace: 1s\n";

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server with the embedded relay on and `verify_clients`; `extra_yaml` adds config.
fn start(extra_yaml: &str) -> TestServer {
    let mut server = TestServer::new(&format!("{TUNING}{extra_yaml}"));
    server.env = vec![
        ("HEADSCALE_DERP_SERVER_ENABLED".into(), "true".into()),
        (
            "HEADSCALE_DERP_SERVER_STUN_LISTEN_ADDR".into(),
            format!("127.0.0.1:{}", free_udp_port()),
        ),
        ("HEADSCALE_DERP_SERVER_VERIFY_CLIENTS".into(), "true".into()),
    ];
    server.spawn();
    server.ok(&["users", "create", "alice"]);
    server
}

/// A node registered with our own client, whose node key is also its DERP key.
struct Device {
    client: ControlClient,
    node_key: String,
    disco_key: String,
    secret: SecretKey,
}

impl Device {
    async fn join(server: &TestServer, auth_key: &str, hostname: &str) -> Device {
        let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        let client = ControlClient::connect(&server.url(), machine, common::CLIENT_CAPVER)
            .await
            .unwrap();
        let secret = SecretKey::generate(&mut OsRng);
        let node_key = format!("nodekey:{}", hex::encode(secret.public_key().as_bytes()));
        let (disco_key, _) = client::random_key("discokey:");
        let answer = client
            .register(&common::auth_key_registration(
                &node_key, auth_key, hostname,
            ))
            .await
            .unwrap();
        assert!(answer.error.is_empty(), "{answer:?}");
        Device {
            client,
            node_key,
            disco_key,
            secret,
        }
    }

    async fn watch(&self) -> Watch {
        let request = self.client.stream_request(
            &self.node_key,
            &self.disco_key,
            vec!["192.0.2.10:41641".into()],
        );
        let mut watch = Watch {
            stream: self.client.map_stream(&request).await.unwrap(),
            netmap: Netmap::new(),
        };
        watch.until("the full map", |n| n.self_node.is_some()).await;
        watch
    }

    /// A non-streaming full map (`Stream:false, OmitPeers:false`).
    async fn one_shot(&self) -> Netmap {
        let mut request = self
            .client
            .stream_request(&self.node_key, &self.disco_key, vec![]);
        request.stream = false;
        let mut once = self.client.map_stream(&request).await.unwrap();
        let message = once.next_within(WAIT).await.unwrap().unwrap();
        let mut netmap = Netmap::new();
        netmap.apply(&message.response).unwrap();
        netmap
    }
}

/// A map stream and what its client believes.
struct Watch {
    stream: MapStream,
    netmap: Netmap,
}

impl Watch {
    fn id(&self) -> String {
        self.netmap.self_node.as_ref().unwrap().id.to_string()
    }

    /// Applies messages until `done` holds; panics if the stream ends or time runs out.
    async fn until(&mut self, what: &str, done: impl Fn(&Netmap) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.netmap) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}");
            match self.stream.next_within(left).await {
                Some(Ok(message)) => self.netmap.apply(&message.response).unwrap(),
                Some(Err(error)) => panic!("waiting for {what}: {error}"),
                None => panic!("stream ended while waiting for {what}"),
            }
        }
    }

    /// The stream ends (cleanly or with an error) within the wait.
    async fn ends(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "stream did not end");
            match tokio::time::timeout(left, self.stream.next_raw()).await {
                Ok(None) | Ok(Some(Err(_))) => return,
                Ok(Some(Ok(_))) => continue,
                Err(_) => panic!("stream did not end"),
            }
        }
    }
}

/// The packet filter is empty (or absent).
fn no_filter(netmap: &Netmap) -> bool {
    netmap.packet_filters.values().all(Vec::is_empty)
}

/// A logged-in DERP connection.
struct Relay {
    reader: Box<dyn AsyncRead + Unpin + Send>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

async fn read_frame(reader: &mut (dyn AsyncRead + Unpin + Send)) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; frame::HEADER_LEN];
    reader.read_exact(&mut head).await.ok()?;
    let header = frame::parse_header(head).ok()?;
    let mut payload = vec![0u8; header.len];
    reader.read_exact(&mut payload).await.ok()?;
    Some((header.kind, payload))
}

impl Relay {
    /// Upgrades `/derp` and logs in with `secret`; `None` when the server closes instead of
    /// sending ServerInfo (the key is refused).
    async fn connect(port: u16, secret: &SecretKey) -> Option<Relay> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream
            .write_all(
                b"GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
                .await
                .expect("response head in time")
                .unwrap();
            assert!(n > 0, "closed during the upgrade");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
        let (read, mut writer) = stream.into_split();
        let mut reader: Box<dyn AsyncRead + Unpin + Send> = Box::new(read);
        let (kind, payload) = tokio::time::timeout(WAIT, read_frame(&mut *reader))
            .await
            .unwrap()?;
        let Ok(ServerFrame::ServerKey(server_key)) = ServerFrame::decode(kind, &payload) else {
            panic!("first frame is not ServerKey");
        };
        let sealer = SalsaBox::new(&PublicKey::from(server_key), secret);
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        let sealed = sealer.encrypt(&nonce, &br#"{"version":2}"#[..]).unwrap();
        let info = ClientFrame::ClientInfo {
            key: *secret.public_key().as_bytes(),
            nonce: nonce.into(),
            sealed: &sealed,
        };
        writer.write_all(&info.encode()).await.unwrap();
        let (kind, _) = tokio::time::timeout(WAIT, read_frame(&mut *reader))
            .await
            .unwrap()?;
        assert_eq!(kind, frame::kind::SERVER_INFO);
        Some(Relay { reader, writer })
    }

    /// A ping is answered: the connection is in use.
    async fn works(&mut self) {
        self.writer
            .write_all(&ClientFrame::Ping(*b"revoked?").encode())
            .await
            .unwrap();
        loop {
            let (kind, _) = tokio::time::timeout(WAIT, read_frame(&mut *self.reader))
                .await
                .expect("an answer in time")
                .expect("the connection stays open");
            if kind == frame::kind::PONG {
                return;
            }
        }
    }

    /// Reads (keep-alives) until the server closes the connection; how long that took.
    async fn closed_within(mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let left = limit.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, read_frame(&mut *self.reader)).await {
                Ok(None) => return started.elapsed(),
                Ok(Some(_)) => continue,
                Err(_) => panic!("relay connection still open after {limit:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_a_node_cuts_its_map_and_its_relay() {
    let server = start("");
    let key = server.pre_auth_key("alice", &["--reusable"]);
    let victim = Device::join(&server, &key, "victim").await;
    let peer = Device::join(&server, &key, "peer").await;
    let mut watch = victim.watch().await;
    let mut peer_watch = peer.watch().await;
    watch.until("a peer", |n| n.peers.len() == 1).await;
    assert!(!no_filter(&watch.netmap));
    let mut relay = Relay::connect(server.port, &victim.secret)
        .await
        .expect("an active node's key is admitted");
    relay.works().await;

    let id = watch.id();
    server.ok(&["nodes", "expire", "-i", &id]);
    let expired = Instant::now();
    let cut = relay.closed_within(RELAY_CUT).await;
    eprintln!("relay closed {cut:?} after the command returned");
    // Its stream stays open (it may log in again) but shows only itself.
    watch
        .until("no peers, no filter, no DNS", |n| {
            n.peers.is_empty()
                && no_filter(n)
                && n.dns_config
                    .as_ref()
                    .is_some_and(|d| d == &serde_json::json!({}))
                && n.self_node.as_ref().is_some_and(|me| me.expired)
        })
        .await;
    eprintln!("map cut {:?} after the command returned", expired.elapsed());
    // Peers see it expired, as before.
    let victim_id: u64 = id.parse().unwrap();
    peer_watch
        .until("the victim expired", |n| {
            n.peers.get(&victim_id).is_some_and(|v| v.expired)
        })
        .await;

    // A one-shot map of the expired node: itself only.
    let once = victim.one_shot().await;
    assert!(once.self_node.as_ref().is_some_and(|me| me.expired));
    assert!(once.peers.is_empty(), "{:?}", once.peers.keys());
    assert!(no_filter(&once));
    // And the relay refuses it from now on.
    assert!(Relay::connect(server.port, &victim.secret).await.is_none());
    // The peer was never affected.
    let mut still = Relay::connect(server.port, &peer.secret)
        .await
        .expect("the peer is admitted");
    still.works().await;
    assert!(!server.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_node_ends_its_stream_and_its_relay() {
    let server = start("");
    let key = server.pre_auth_key("alice", &["--reusable"]);
    let doomed = Device::join(&server, &key, "doomed").await;
    let _peer = Device::join(&server, &key, "peer").await;
    let mut watch = doomed.watch().await;
    watch.until("a peer", |n| n.peers.len() == 1).await;
    let mut relay = Relay::connect(server.port, &doomed.secret)
        .await
        .expect("admitted");
    relay.works().await;

    server.ok(&["nodes", "delete", "-i", &watch.id(), "--force"]);
    relay.closed_within(RELAY_CUT).await;
    watch.ends().await;
    assert!(Relay::connect(server.port, &doomed.secret).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unapproved_node_cannot_use_the_relay_until_approved() {
    let server = start("node:\n  require_approval: true\n");
    let approved_key = server.pre_auth_key("alice", &["--pre-approved"]);
    let waiting_key = server.pre_auth_key("alice", &[]);
    let member = Device::join(&server, &approved_key, "member").await;
    let waiting = Device::join(&server, &waiting_key, "waiting").await;
    let _member_watch = member.watch().await;

    // Waiting for approval: no relay, and a map of itself only.
    assert!(
        Relay::connect(server.port, &waiting.secret).await.is_none(),
        "an unapproved key must not use the relay"
    );
    let mut watch = waiting.watch().await;
    let me = watch.netmap.self_node.clone().unwrap();
    assert!(!me.machine_authorized);
    assert!(watch.netmap.peers.is_empty());
    assert!(no_filter(&watch.netmap));

    // Approved: peers, a filter and the relay.
    server.ok(&["nodes", "approve", "-i", &watch.id()]);
    watch
        .until("a peer and a filter", |n| {
            n.peers.len() == 1 && !no_filter(n)
        })
        .await;
    let mut relay = Relay::connect(server.port, &waiting.secret)
        .await
        .expect("admitted once approved");
    relay.works().await;
}

/// An expiry that passes with time (no event, no admin at that moment) cuts the map within
/// a hub tick and the relay within the relay's one-second re-check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_expiry_cuts_off_when_it_passes() {
    let server = start("");
    let key = server.pre_auth_key("alice", &["--reusable"]);
    let device = Device::join(&server, &key, "device").await;
    let _peer = Device::join(&server, &key, "peer").await;
    let mut watch = device.watch().await;
    watch.until("a peer", |n| n.peers.len() == 1).await;
    // An expiry on a whole second, about two seconds from now.
    let unix = (std::time::SystemTime::now() + Duration::from_secs(2))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires = std::time::UNIX_EPOCH + Duration::from_secs(unix);
    let at = headscale::core::time::Timestamp(unix as i64 * 1000).to_rfc3339();
    server.ok(&["nodes", "expire", "-i", &watch.id(), "--expiry", &at]);
    let mut relay = Relay::connect(server.port, &device.secret)
        .await
        .expect("admitted until its expiry");
    relay.works().await;
    watch
        .until("its new expiry", |n| {
            n.self_node.as_ref().unwrap().key_expiry.as_deref() == Some(at.as_str())
        })
        .await;
    assert_eq!(watch.netmap.peers.len(), 1, "not cut before its expiry");

    // Closed at most one re-check interval (plus slack) after the expiry passes.
    let until_expiry = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    relay
        .closed_within(until_expiry + RELAY_CUT + Duration::from_millis(500))
        .await;
    let late = std::time::SystemTime::now()
        .duration_since(expires)
        .unwrap_or_default();
    eprintln!("relay closed {late:?} after the expiry");
    watch
        .until("no peers once expired", |n| {
            n.peers.is_empty() && no_filter(n)
        })
        .await;
}
