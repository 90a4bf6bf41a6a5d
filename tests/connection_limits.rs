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
