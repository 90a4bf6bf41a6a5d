//! Limits on connections, streams and request bodies against the real binary (audit H2, M5,
//! L8, L4): a stalled body inside the Noise channel is answered and reset within the read
//! deadline, oversized bodies are refused, a 9th concurrent HTTP/2 stream is refused, the
//! connection caps hold (upgraded connections included) while a legitimate client still
//! registers, handshake floods from one source get 429, and the debug listener times out
//! silent peers.

mod common;

use axum::body::Bytes;
use common::TestServer;
use headscale::client::{self, ControlClient};
use headscale::control::noise_stream::NoiseStream;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use x25519_dalek::StaticSecret;

const CAPVER: u16 = common::CLIENT_CAPVER;

fn machine() -> StaticSecret {
    StaticSecret::random_from_rng(rand::rngs::OsRng)
}

/// A Noise byte stream to the server, HTTP/2 not yet started.
async fn noise(server: &TestServer) -> NoiseStream<TcpStream> {
    let key = client::fetch_server_key(&server.url(), CAPVER)
        .await
        .unwrap();
    client::noise_connect(&server.url(), &machine(), key, CAPVER)
        .await
        .unwrap()
}

/// An HTTP/2 client (the `h2` crate, which lets a test hold a body open) inside Noise.
async fn h2_session(server: &TestServer) -> h2::client::SendRequest<Bytes> {
    let (sender, connection) = h2::client::handshake(noise(server).await).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

fn post(path: &str) -> axum::http::Request<()> {
    axum::http::Request::post(format!("https://127.0.0.1{path}"))
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_inside_noise_is_answered_and_reset_within_the_deadline() {
    let server = TestServer::start();
    let mut session = h2_session(&server).await;
    session = session.ready().await.unwrap();
    let started = Instant::now();
    let (response, mut body) = session.send_request(post("/machine/map"), false).unwrap();
    body.send_data(Bytes::from_static(b"{\"Version\":"), false)
        .unwrap();
    // ...and nothing more: the server answers 408 after its 10 s deadline.
    let response = tokio::time::timeout(Duration::from_secs(20), response)
        .await
        .expect("no answer to a stalled body within 20 s")
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status(), 408);
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "answered after {waited:?}"
    );
    // The request stream is over: more data is refused (reset or closed).
    let mut refused = false;
    for _ in 0..50 {
        if body.send_data(Bytes::from_static(b"x"), false).is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the stalled stream was not reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused() {
    let server = TestServer::start();
    let client = ControlClient::connect(&server.url(), machine(), CAPVER)
        .await
        .unwrap();
    let status = |path: &'static str, size: usize| {
        let client = &client;
        async move {
            client
                .post(path, vec![b' '; size])
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("/machine/register", 64 * 1024 + 1).await, 413);
    assert_eq!(status("/machine/map", 256 * 1024 + 1).await, 413);
    assert_eq!(status("/machine/whatever", 64 * 1024 + 1).await, 413);
    // Within the limits the body reaches the handler (a blank body is bad JSON: 400).
    assert_eq!(status("/machine/register", 64 * 1024).await, 400);
    assert_eq!(status("/machine/map", 256 * 1024).await, 400);
    // A streamed body without a length is cut at the limit too.
    let mut session = h2_session(&server).await.ready().await.unwrap();
    let (response, mut body) = session
        .send_request(post("/machine/register"), false)
        .unwrap();
    let chunk = Bytes::from(vec![b' '; 16 * 1024]);
    let sender = tokio::spawn(async move {
        for _ in 0..8 {
            body.reserve_capacity(chunk.len());
            if body.send_data(chunk.clone(), false).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 413);
    sender.abort();
}

/// One HTTP/2 frame header.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK for `POST https://x/machine/map` (static-table indices, literals without indexing).
fn post_map_headers() -> Vec<u8> {
    let mut block = vec![0x83, 0x87]; // :method POST, :scheme https
    block.push(0x04); // :path, literal value
    block.push(12);
    block.extend_from_slice(b"/machine/map");
    block.push(0x01); // :authority, literal value
    block.push(1);
    block.push(b'x');
    block
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ninth_concurrent_stream_is_refused() {
    let server = TestServer::start();
    let mut noise = noise(&server).await;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
                                       // Nine streams (1, 3, ..., 17) whose bodies never come: HEADERS with END_HEADERS only.
    for n in 0..9u32 {
        out.extend(frame(0x1, 0x4, 1 + 2 * n, &post_map_headers()));
    }
    noise.write_all(&out).await.unwrap();
    noise.flush().await.unwrap();
    // Read frames until the server resets stream 17 with REFUSED_STREAM (7).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buffer = Vec::new();
    let mut resets = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline && !resets.contains(&(17, 7)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, noise.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
        }
        while buffer.len() >= 9 {
            let len = (buffer[0] as usize) << 16 | (buffer[1] as usize) << 8 | buffer[2] as usize;
            if buffer.len() < 9 + len {
                break;
            }
            let kind = buffer[3];
            let stream =
                u32::from_be_bytes([buffer[5], buffer[6], buffer[7], buffer[8]]) & !(1 << 31);
            if kind == 0x3 && len == 4 {
                let code = u32::from_be_bytes([buffer[9], buffer[10], buffer[11], buffer[12]]);
                resets.push((stream, code));
            }
            buffer.drain(..9 + len);
        }
    }
    assert_eq!(resets, vec![(17, 7)], "expected only stream 17 refused");
}

/// A TCP connection to the server from the loopback address `source` (127.0.0.0/8 is all
/// loopback on Linux, so each address is a different source to the server's caps).
async fn connect_from(port: u16, source: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
}

/// Reads a response head byte by byte (nothing after it is consumed); `None` on EOF.
async fn read_head(tcp: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// `/ts2021` from `source` by hand: the Noise stream, or the status line that refused it
/// (`"closed"` when the connection closed without an answer).
async fn noise_from(
    port: u16,
    server_key: [u8; 32],
    source: &str,
) -> Result<NoiseStream<TcpStream>, String> {
    use base64::Engine as _;
    use headscale::control::noise;
    let (initiator, initiation) = noise::initiation(&machine(), &server_key, CAPVER).unwrap();
    let mut tcp = connect_from(port, source).await;
    let request = format!(
        "POST /ts2021 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: {}\r\nContent-Length: 0\r\n\r\n",
        base64::engine::general_purpose::STANDARD.encode(&initiation)
    );
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return Err("closed".into());
    }
    let head = read_head(&mut tcp).await.ok_or("closed")?;
    let status = head.lines().next().unwrap_or("").to_string();
    if !status.contains(" 101 ") {
        return Err(status);
    }
    let mut response = [0u8; noise::RESPONSE_LEN];
    tcp.read_exact(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let (sender, receiver) = noise::finish_initiation(initiator, &response).unwrap();
    Ok(NoiseStream::new(tcp, sender, receiver))
}

/// A live HTTP/2 session inside Noise from `source` (h2 answers the server's pings, so it
/// stays open); the returned handle closes it when dropped.
async fn session_from(port: u16, server_key: [u8; 32], source: &str) -> Option<H2Session> {
    let noise = noise_from(port, server_key, source).await.ok()?;
    let (sender, connection) = h2::client::handshake(noise).await.ok()?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Some(H2Session {
        _sender: sender,
        task,
    })
}

struct H2Session {
    _sender: h2::client::SendRequest<Bytes>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `true` when the peer closes `tcp` (EOF or error) within `wait` without sending anything.
async fn closed_within(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, tcp.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Open descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

async fn server_key(server: &TestServer) -> [u8; 32] {
    client::fetch_server_key(&server.url(), CAPVER)
        .await
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_hold_with_upgraded_sessions_while_a_new_client_registers() {
    const PER_SOURCE: usize = 20;
    const GLOBAL: usize = 60;
    let server = TestServer::start_with(&format!(
        "tuning:\n  max_connections: {GLOBAL}\n  max_connections_per_ip: {PER_SOURCE}\n"
    ));
    server.create_user("canary");
    let auth = server.pre_auth_key("canary", &["--reusable"]);
    let key = server_key(&server).await;
    let pid = server.pid().unwrap();
    let baseline = fd_count(pid);

    // One source fills its share with upgraded Noise sessions...
    let mut first = Vec::new();
    for _ in 0..PER_SOURCE {
        first.push(
            session_from(server.port, key, "127.0.0.2")
                .await
                .expect("a session under the per-source cap"),
        );
    }
    // ...and its next connection is closed at once, although the upgrades left hyper.
    let mut over = connect_from(server.port, "127.0.0.2").await;
    assert!(
        closed_within(&mut over, Duration::from_secs(5)).await,
        "a connection over the per-source cap was not closed"
    );
    // Another source is not affected: a new client registers.
    common::join(&server, &auth, "canary-1").await;

    // Two more sources fill the global cap.
    let mut second = Vec::new();
    let mut third = Vec::new();
    for _ in 0..PER_SOURCE {
        second.push(session_from(server.port, key, "127.0.0.3").await.unwrap());
        third.push(session_from(server.port, key, "127.0.0.4").await.unwrap());
    }
    let fds = fd_count(pid);
    eprintln!("server fds: {baseline} before, {fds} with {GLOBAL} upgraded sessions (the cap)");
    assert!(
        fds <= baseline + GLOBAL + 8,
        "{fds} descriptors open (baseline {baseline}, cap {GLOBAL})"
    );
    assert!(fds <= GLOBAL + headscale::conn_limits::FD_RESERVE);
    // The global cap is reached: a fifth source waits in the backlog, unanswered.
    let mut waiting = connect_from(server.port, "127.0.0.5").await;
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_secs(2), read_head(&mut waiting)).await;
    assert!(early.is_err(), "answered over the global cap: {early:?}");
    assert!(fd_count(pid) <= baseline + GLOBAL + 8);

    // When one source leaves, the waiting request is served and a new client registers.
    drop(second);
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut waiting))
        .await
        .expect("the waiting connection was not served after places freed")
        .expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(waiting);
    common::join(&server, &auth, "canary-2").await;
    drop((first, third));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_idle_and_local_connections_are_closed_by_the_header_deadline() {
    let server = TestServer::start();
    let started = Instant::now();
    // Says nothing at all.
    let mut silent = connect_from(server.port, "127.0.0.1").await;
    // Trickles a request line and never finishes its headers (slowloris).
    let mut trickle = connect_from(server.port, "127.0.0.1").await;
    trickle
        .write_all(b"GET /health HTTP/1.1\r\n")
        .await
        .unwrap();
    // A silent local client on the admin socket.
    let mut local = tokio::net::UnixStream::connect(server.socket())
        .await
        .unwrap();
    // Finishes one request, then stays idle on keep-alive.
    let mut idle = connect_from(server.port, "127.0.0.1").await;
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut idle).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = [0u8; 64];
    let _ = idle.read(&mut body).await;
    for (name, tcp) in [
        ("silent", &mut silent),
        ("trickling", &mut trickle),
        ("idle keep-alive", &mut idle),
    ] {
        assert!(
            closed_within(tcp, Duration::from_secs(15)).await,
            "{name} connection still open after {:?}",
            started.elapsed()
        );
    }
    let mut byte = [0u8; 1];
    let local_closed = tokio::time::timeout(Duration::from_secs(15), local.read(&mut byte)).await;
    assert!(
        matches!(local_closed, Ok(Ok(0)) | Ok(Err(_))),
        "silent unix socket client still open: {local_closed:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(9));
    // HTTP/2 prior knowledge is not served on the main listener (nothing needs h2c there).
    let mut h2c = connect_from(server.port, "127.0.0.1").await;
    h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let answer = read_head(&mut h2c).await.unwrap_or_default();
    assert!(!answer.contains(" 200 "), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_from_one_source_gets_429_while_others_connect() {
    let server = TestServer::start();
    server.create_user("canary");
    let auth = server.pre_auth_key("canary", &[]);
    let key = server_key(&server).await;
    let burst = headscale::conn_limits::HANDSHAKE_BURST as usize;
    let started = Instant::now();
    let (mut upgraded, mut limited) = (0usize, 0usize);
    for _ in 0..burst + 60 {
        match noise_from(server.port, key, "127.0.0.6").await {
            Ok(_) => upgraded += 1,
            Err(status) if status.contains(" 429 ") => limited += 1,
            Err(other) => panic!("unexpected answer {other}"),
        }
    }
    // The burst, plus 20/s refilled while the flood ran; the rest is refused.
    let refilled = (started.elapsed().as_secs_f64() * 20.0).ceil() as usize + 1;
    assert!(
        upgraded >= burst && upgraded <= burst + refilled,
        "{upgraded} upgraded, {limited} refused in {:?}",
        started.elapsed()
    );
    assert!(limited > 0, "no 429 in a flood of {}", burst + 60);
    // Meanwhile another source completes the handshake and registers.
    assert!(noise_from(server.port, key, "127.0.0.1").await.is_ok());
    common::join(&server, &auth, "canary").await;
}

/// `GET path` on `port` with `Connection: close`: status and JSON body.
async fn get_json(port: u16, path: &str) -> (u16, serde_json::Value) {
    let mut tcp = connect_from(port, "127.0.0.1").await;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debug_listener_times_out_caps_and_pages() {
    let metrics_port = common::free_port();
    let mut server = TestServer::new("");
    server.env.push((
        "HEADSCALE_METRICS_LISTEN_ADDR".into(),
        format!("127.0.0.1:{metrics_port}"),
    ));
    server.spawn();
    server.create_user("pager");
    let auth = server.pre_auth_key("pager", &["--reusable"]);
    for name in ["one", "two", "three"] {
        common::join(&server, &auth, name).await;
    }
    // /debug/filter without ?node= is paged.
    let (status, page) = get_json(metrics_port, "/debug/filter?limit=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 3);
    assert_eq!(page["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], 2);
    let (_, last) = get_json(metrics_port, "/debug/filter?offset=2&limit=2").await;
    assert_eq!(last["nodes"].as_array().unwrap().len(), 1);
    assert!(last["next"].is_null());
    let (_, default) = get_json(metrics_port, "/debug/filter").await;
    assert_eq!(
        default["limit"],
        headscale::debug_listener::FILTER_PAGE_DEFAULT
    );

    // A silent peer is closed by the header deadline.
    let started = Instant::now();
    let mut silent = connect_from(metrics_port, "127.0.0.1").await;
    // One source holds at most its share; the next connection is closed at once.
    let per_source = headscale::debug_listener::MAX_CONNECTIONS_PER_SOURCE;
    let mut held = Vec::new();
    for _ in 0..per_source {
        held.push(connect_from(metrics_port, "127.0.0.7").await);
    }
    let mut over = connect_from(metrics_port, "127.0.0.7").await;
    assert!(
        closed_within(&mut over, Duration::from_secs(5)).await,
        "a debug connection over the per-source cap was not closed"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(15)).await,
        "a silent debug connection was held for {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() >= Duration::from_secs(9));
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_headers_close_the_session_within_the_deadline() {
    let server = TestServer::start();
    // A HEADERS frame without END_HEADERS, whose CONTINUATION never comes.
    let mut block = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    block.extend(frame(0x4, 0, 0, &[]));
    block.extend(frame(0x1, 0, 1, &post_map_headers()));
    // Half a frame: a frame header announcing 100 bytes, and 10 of them.
    let mut half = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    half.extend(frame(0x4, 0, 0, &[]));
    half.extend(&frame(0x0, 0, 1, &[0; 100])[..19]);
    let started = Instant::now();
    let mut sessions = Vec::new();
    for bytes in [block, half] {
        let mut noise = noise(&server).await;
        noise.write_all(&bytes).await.unwrap();
        noise.flush().await.unwrap();
        sessions.push(noise);
    }
    for (name, noise) in ["header block", "half frame"]
        .into_iter()
        .zip(&mut sessions)
    {
        let mut sink = [0u8; 4096];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(20), noise.read(&mut sink)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(_)) => continue, // the server's SETTINGS and the like
                Err(_) => break false,
            }
        };
        assert!(
            closed,
            "{name}: session still open after {:?}",
            started.elapsed()
        );
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(16),
        "closed after {waited:?}"
    );
}

/// The server's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_stalled_bodies_stays_within_the_body_budget() {
    // 320 streams without a declared length each reserve the map limit (256 KiB): 80 MiB
    // wanted, 64 MiB budget, so at least 64 are refused at once with 503.
    const SESSIONS: usize = 40;
    const STREAMS: usize = 8;
    let server = TestServer::start();
    let pid = server.pid().unwrap();
    let baseline = rss(pid);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut held = Vec::new();
    let started = Instant::now();
    for _ in 0..SESSIONS {
        let session = h2_session(&server).await;
        for _ in 0..STREAMS {
            let mut session = session.clone().ready().await.unwrap();
            let (response, mut body) = session.send_request(post("/machine/map"), false).unwrap();
            // The start of a body that never ends.
            let _ = body.send_data(Bytes::from(vec![b' '; 1024]), false);
            held.push(body);
            let done = done_tx.clone();
            tokio::spawn(async move {
                if let Ok(response) = response.await {
                    let _ = done.send(response.status().as_u16());
                }
            });
        }
    }
    let opened = started.elapsed();
    let mut answers = Vec::new();
    let mut peak = baseline;
    while answers.len() < SESSIONS * STREAMS && started.elapsed() < opened + Duration::from_secs(25)
    {
        peak = peak.max(rss(pid));
        if let Ok(Some(status)) =
            tokio::time::timeout(Duration::from_millis(200), done_rx.recv()).await
        {
            answers.push(status);
        }
    }
    let refused = answers.iter().filter(|status| **status == 503).count();
    eprintln!(
        "stalled-body flood: {} streams opened in {opened:?}, {refused} refused 503, RSS {} -> peak {} MiB",
        SESSIONS * STREAMS,
        baseline >> 20,
        peak >> 20
    );
    assert!(
        opened < Duration::from_secs(8),
        "too slow to test the budget: {opened:?}"
    );
    assert!(refused >= SESSIONS * STREAMS - 256, "{answers:?}");
    // Every admitted body times out (408): nothing waits forever.
    assert_eq!(answers.len(), SESSIONS * STREAMS, "{answers:?}");
    assert!(answers
        .iter()
        .all(|status| *status == 503 || *status == 408));
    assert!(peak.saturating_sub(baseline) < 64 << 20);
    drop(held);
}
