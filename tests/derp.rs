//! The embedded DERP relay and STUN against the real server binary, driven by a small DERP
//! client written here (x25519 key, SalsaBox, the frame codec): packets both ways over plain
//! HTTP and over TLS, PeerGone on disconnect, pings, verify_clients, garbage and oversized
//! frames closing only their own connection, the probe and captive-portal endpoints, and a
//! STUN binding over UDP loopback. Keep-alives are checked in-process with a short interval.

mod common;

use common::{free_udp_port, TestServer};
use crypto_box::aead::{Aead, AeadCore, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use headscale::derp::frame::{self, ClientFrame, PeerGoneReason, ServerFrame};
use headscale::derp::stun;
use headscale::derp::{DerpOptions, DerpServer};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

struct DerpClient {
    reader: Reader,
    writer: Writer,
    public: [u8; 32],
}

/// Sends the upgrade request and returns the response head (lower-cased) and the stream.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, extra: &str) -> String {
    let request = format!(
        "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_head(stream).await
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("response head in time")
            .unwrap();
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

async fn read_frame(reader: &mut Reader) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; frame::HEADER_LEN];
    tokio::time::timeout(WAIT, reader.read_exact(&mut head))
        .await
        .expect("a frame or EOF in time")
        .ok()?;
    let header = frame::parse_header(head).unwrap();
    let mut payload = vec![0u8; header.len];
    reader.read_exact(&mut payload).await.ok()?;
    Some((header.kind, payload))
}

impl DerpClient {
    /// The DERP login on an already upgraded stream: `None` when the server closes instead
    /// of sending ServerInfo.
    async fn handshake<S>(stream: S, secret: &SecretKey) -> Option<DerpClient>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        let mut reader: Reader = Box::new(read);
        let mut writer: Writer = Box::new(write);
        let (kind, payload) = read_frame(&mut reader).await.expect("ServerKey");
        let ServerFrame::ServerKey(server_key) = ServerFrame::decode(kind, &payload).unwrap()
        else {
            panic!("first frame is not ServerKey");
        };
        let public = *secret.public_key().as_bytes();
        let sealer = SalsaBox::new(&PublicKey::from(server_key), secret);
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        let sealed = sealer
            .encrypt(&nonce, &br#"{"version":2,"CanAckPings":true}"#[..])
            .unwrap();
        let info = ClientFrame::ClientInfo {
            key: public,
            nonce: nonce.into(),
            sealed: &sealed,
        };
        writer.write_all(&info.encode()).await.unwrap();
        writer.flush().await.unwrap();
        let (kind, payload) = read_frame(&mut reader).await?;
        let ServerFrame::ServerInfo { nonce, sealed } =
            ServerFrame::decode(kind, &payload).unwrap()
        else {
            panic!("second frame is not ServerInfo");
        };
        let json = sealer
            .decrypt(&nonce.into(), sealed)
            .expect("ServerInfo opens");
        let info: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(info["version"], 2);
        Some(DerpClient {
            reader,
            writer,
            public,
        })
    }

    async fn send(&mut self, frame: ClientFrame<'_>) {
        self.writer.write_all(&frame.encode()).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// The next frame that is not a keep-alive.
    async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            let (kind, payload) = read_frame(&mut self.reader).await?;
            if kind != frame::kind::KEEP_ALIVE {
                return Some((kind, payload));
            }
        }
    }

    async fn recv_packet(&mut self) -> ([u8; 32], Vec<u8>) {
        let (kind, payload) = self.recv().await.expect("a packet");
        match ServerFrame::decode(kind, &payload).unwrap() {
            ServerFrame::RecvPacket { src, packet } => (src, packet.to_vec()),
            other => panic!("expected RecvPacket, got {other:?}"),
        }
    }
}

/// Connects over plain TCP, upgrades and logs in.
async fn connect(port: u16, secret: &SecretKey) -> Option<DerpClient> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = upgrade(&mut stream, "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    DerpClient::handshake(stream, secret).await
}

/// A server with the embedded relay on; `extra_env` adds `HEADSCALE_*` overrides.
fn derp_server(verify_clients: bool, extra_env: &[(&str, String)]) -> (TestServer, u16) {
    let mut server = TestServer::new("");
    let stun_port = free_udp_port();
    server.env = vec![
        ("HEADSCALE_DERP_SERVER_ENABLED".into(), "true".into()),
        (
            "HEADSCALE_DERP_SERVER_STUN_LISTEN_ADDR".into(),
            format!("127.0.0.1:{stun_port}"),
        ),
        (
            "HEADSCALE_DERP_SERVER_VERIFY_CLIENTS".into(),
            verify_clients.to_string(),
        ),
    ];
    server
        .env
        .extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    server.spawn();
    (server, stun_port)
}

async fn raw_request(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&response).to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_relay_both_ways_over_http() {
    let (server, stun_port) = derp_server(false, &[]);
    let port = server.port;
    let (a_key, b_key) = (
        SecretKey::generate(&mut OsRng),
        SecretKey::generate(&mut OsRng),
    );
    let mut a = connect(port, &a_key).await.expect("a admitted");
    let mut b = connect(port, &b_key).await.expect("b admitted");

    a.send(ClientFrame::NotePreferred(true)).await;
    a.send(ClientFrame::SendPacket {
        dst: b.public,
        packet: b"hello b",
    })
    .await;
    assert_eq!(b.recv_packet().await, (a.public, b"hello b".to_vec()));
    b.send(ClientFrame::SendPacket {
        dst: a.public,
        packet: b"hello a",
    })
    .await;
    assert_eq!(a.recv_packet().await, (b.public, b"hello a".to_vec()));

    // Ping → Pong.
    a.send(ClientFrame::Ping(*b"12345678")).await;
    let (kind, payload) = a.recv().await.unwrap();
    assert_eq!(
        ServerFrame::decode(kind, &payload).unwrap(),
        ServerFrame::Pong(*b"12345678")
    );

    // An unknown frame type is skipped; a disco packet to nobody gets PeerGone(not here).
    a.send(ClientFrame::Other(0x7f)).await;
    let mut disco = frame::DISCO_MAGIC.to_vec();
    disco.extend_from_slice(&[0; 40]);
    a.send(ClientFrame::SendPacket {
        dst: [9; 32],
        packet: &disco,
    })
    .await;
    let (kind, payload) = a.recv().await.unwrap();
    assert_eq!(
        ServerFrame::decode(kind, &payload).unwrap(),
        ServerFrame::PeerGone {
            key: [9; 32],
            reason: PeerGoneReason::NotHere
        }
    );

    // When b leaves, a (who sent to b) hears PeerGone(disconnected).
    drop(b);
    let (kind, payload) = a.recv().await.unwrap();
    assert_eq!(
        ServerFrame::decode(kind, &payload).unwrap(),
        ServerFrame::PeerGone {
            key: b_key.public_key().to_bytes(),
            reason: PeerGoneReason::Disconnected
        }
    );

    // A newer connection with the same key takes over delivery.
    let mut b1 = connect(port, &b_key).await.unwrap();
    let mut b2 = connect(port, &b_key).await.unwrap();
    a.send(ClientFrame::SendPacket {
        dst: b2.public,
        packet: b"to the newest",
    })
    .await;
    assert_eq!(b2.recv_packet().await.1, b"to the newest".to_vec());
    b1.send(ClientFrame::Ping(*b"stillup!")).await;
    assert_eq!(
        b1.recv().await.unwrap().0,
        frame::kind::PONG,
        "the older connection still works for sending"
    );

    // STUN on UDP loopback answers a Tailscale binding request with our address.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let txid = *b"0123456789ab";
    udp.send_to(&stun::binding_request(&txid), ("127.0.0.1", stun_port))
        .await
        .unwrap();
    let mut buf = [0u8; 1500];
    let (len, _) = tokio::time::timeout(WAIT, udp.recv_from(&mut buf))
        .await
        .expect("a STUN reply")
        .unwrap();
    assert_eq!(
        stun::parse_binding_response(&txid, &buf[..len]),
        Some(udp.local_addr().unwrap())
    );
    // An invalid request gets no answer, and the responder keeps answering valid ones.
    udp.send_to(b"not stun at all, not at all", ("127.0.0.1", stun_port))
        .await
        .unwrap();
    let txid2 = *b"ba9876543210";
    udp.send_to(&stun::binding_request(&txid2), ("127.0.0.1", stun_port))
        .await
        .unwrap();
    let (len, _) = tokio::time::timeout(WAIT, udp.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(stun::parse_binding_response(&txid2, &buf[..len]).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_and_upgrade_headers() {
    let (server, _) = derp_server(false, &[]);
    let port = server.port;

    let probe = raw_request(
        port,
        "GET /derp/probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(probe.starts_with("http/1.1 200"), "{probe}");
    assert!(probe.contains("access-control-allow-origin: *"), "{probe}");
    let head = raw_request(
        port,
        "HEAD /derp/latency-check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let post = raw_request(
        port,
        "POST /derp/probe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("http/1.1 405"), "{post}");

    let no_content = raw_request(
        port,
        "GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: ts-abc.1:2_3\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(no_content.starts_with("http/1.1 204"), "{no_content}");
    assert!(
        no_content.contains("x-tailscale-response: response ts-abc.1:2_3"),
        "{no_content}"
    );
    assert!(
        no_content.contains("cache-control: no-cache"),
        "{no_content}"
    );
    let bad_challenge = raw_request(
        port,
        "GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: a/b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        !bad_challenge.contains("x-tailscale-response"),
        "{bad_challenge}"
    );

    let plain = raw_request(
        port,
        "GET /derp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(plain.starts_with("http/1.1 426"), "{plain}");
    assert!(
        plain.contains("derp requires connection upgrade"),
        "{plain}"
    );

    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = upgrade(&mut stream, "").await;
    assert!(head.contains("upgrade: derp"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    assert!(head.contains("derp-version: 2"), "{head}");
    let header_key = head
        .lines()
        .find_map(|l| l.strip_prefix("derp-public-key: "))
        .expect("Derp-Public-Key")
        .trim()
        .to_string();
    let mut reader: Reader = Box::new(stream);
    let (kind, payload) = read_frame(&mut reader).await.unwrap();
    let ServerFrame::ServerKey(key) = ServerFrame::decode(kind, &payload).unwrap() else {
        panic!("no ServerKey");
    };
    assert_eq!(header_key, hex::encode(key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_that_connection() {
    let (server, _) = derp_server(false, &[("HEADSCALE_LOG_LEVEL", "info".into())]);
    let port = server.port;
    let good = SecretKey::generate(&mut OsRng);
    let mut client = connect(port, &good).await.unwrap();

    // Garbage instead of ClientInfo.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    upgrade(&mut stream, "").await;
    let (mut read, mut write) = stream.into_split();
    let mut head = [0u8; 5];
    read.read_exact(&mut head).await.unwrap();
    let mut key = vec![0u8; head[4] as usize];
    read.read_exact(&mut key).await.unwrap();
    write.write_all(&[0xde; 300]).await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, read.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(n.is_err() || rest.is_empty(), "server sent {rest:?}");

    // A ClientInfo that does not open.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    upgrade(&mut stream, "").await;
    let mut reader_stream = stream;
    let mut head = [0u8; 45];
    reader_stream.read_exact(&mut head).await.unwrap();
    let bogus = ClientFrame::ClientInfo {
        key: [1; 32],
        nonce: [2; 24],
        sealed: &[3; 64],
    };
    reader_stream.write_all(&bogus.encode()).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, reader_stream.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(rest.is_empty(), "server sent {rest:?}");

    // An oversized frame after a good login.
    let other = SecretKey::generate(&mut OsRng);
    let mut victim = connect(port, &other).await.unwrap();
    victim
        .writer
        .write_all(&[frame::kind::SEND_PACKET, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    victim.writer.flush().await.unwrap();
    assert!(victim.recv().await.is_none(), "connection closed");

    // The first client and new clients are still served.
    let mut again = connect(port, &other).await.expect("new connection");
    client
        .send(ClientFrame::SendPacket {
            dst: again.public,
            packet: b"still here",
        })
        .await;
    assert_eq!(again.recv_packet().await.1, b"still here".to_vec());
    assert!(
        server.log().contains("derp connection closed"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_clients_admits_only_registered_node_keys() {
    let (server, _) = derp_server(true, &[]);
    let known = SecretKey::generate(&mut OsRng);
    let node_key = format!("nodekey:{}", hex::encode(known.public_key().as_bytes()));
    server.ok(&["users", "create", "alice"]);
    server.ok(&[
        "debug",
        "create-node",
        "--user",
        "alice",
        "--name",
        "n1",
        "--key",
        &node_key,
    ]);
    let mut admitted = connect(server.port, &known)
        .await
        .expect("known key admitted");
    admitted.send(ClientFrame::Ping(*b"abcdefgh")).await;
    assert_eq!(admitted.recv().await.unwrap().0, frame::kind::PONG);

    let stranger = SecretKey::generate(&mut OsRng);
    assert!(
        connect(server.port, &stranger).await.is_none(),
        "an unknown key gets no ServerInfo"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_over_tls() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let (server, _) = derp_server(
        false,
        &[
            ("HEADSCALE_TLS_CERT_PATH", cert_path.display().to_string()),
            ("HEADSCALE_TLS_KEY_PATH", key_path.display().to_string()),
        ],
    );
    let port = server.port;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

    let mut clients = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let head = upgrade(&mut tls, "").await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        let key = SecretKey::generate(&mut OsRng);
        clients.push(DerpClient::handshake(tls, &key).await.unwrap());
    }
    let (mut a, mut b) = (clients.remove(0), clients.remove(0));
    a.send(ClientFrame::SendPacket {
        dst: b.public,
        packet: b"over tls",
    })
    .await;
    assert_eq!(b.recv_packet().await, (a.public, b"over tls".to_vec()));
    b.send(ClientFrame::SendPacket {
        dst: a.public,
        packet: b"and back",
    })
    .await;
    assert_eq!(a.recv_packet().await, (b.public, b"and back".to_vec()));

    // Plain requests work over TLS too.
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_are_sent_on_the_configured_interval() {
    let options = DerpOptions {
        keepalive_interval: Duration::from_millis(50),
        ..DerpOptions::default()
    };
    let relay = Arc::new(DerpServer::new([7; 32], None, options));
    let (client_side, server_side) = tokio::io::duplex(64 * 1024);
    tokio::spawn(relay.clone().serve_connection(server_side));
    let key = SecretKey::generate(&mut OsRng);
    let mut client = DerpClient::handshake(client_side, &key).await.unwrap();
    for _ in 0..3 {
        let (kind, _) = read_frame(&mut client.reader).await.unwrap();
        assert_eq!(kind, frame::kind::KEEP_ALIVE);
    }
    assert_eq!(relay.client_count(), 1);
    drop(client);
    let deadline = tokio::time::Instant::now() + WAIT;
    while relay.client_count() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "client not removed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let options = DerpOptions {
        handshake_timeout: Duration::from_millis(100),
        ..DerpOptions::default()
    };
    let relay = Arc::new(DerpServer::new([7; 32], None, options));
    let (client_side, server_side) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(relay.serve_connection(server_side));
    let mut reader: Reader = Box::new(client_side);
    let (kind, _) = read_frame(&mut reader).await.unwrap();
    assert_eq!(kind, frame::kind::SERVER_KEY);
    assert!(
        read_frame(&mut reader).await.is_none(),
        "closed, no ServerInfo"
    );
    tokio::time::timeout(WAIT, served).await.unwrap().unwrap();
}
