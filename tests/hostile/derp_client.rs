//! A small DERP client for the hostile scenarios: upgrade `/derp` from a chosen loopback
//! address, the SalsaBox login with a node's key (the relay runs with `verify_clients`),
//! frames out, frames in with a deadline, and "was I closed?" checks.

use crypto_box::aead::{Aead, AeadCore, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use headscale::derp::frame::{self, ClientFrame, ServerFrame};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub struct DerpClient {
    pub reader: OwnedReadHalf,
    pub writer: OwnedWriteHalf,
    pub public: [u8; 32],
}

/// A new node key for DERP: the secret and its `nodekey:` text.
pub fn node_secret() -> (SecretKey, String) {
    let secret = SecretKey::generate(&mut OsRng);
    let text = format!("nodekey:{}", hex::encode(secret.public_key().as_bytes()));
    (secret, text)
}

/// TCP to the server from `source` and the `Upgrade: DERP` request; the stream after a 101.
pub async fn upgrade(port: u16, source: IpAddr) -> Option<TcpStream> {
    let mut tcp = headscale::client::raw::tcp_from(&format!("http://127.0.0.1:{port}"), source)
        .await
        .ok()?;
    tcp.write_all(
        b"GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n",
    )
    .await
    .ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    head.starts_with(b"HTTP/1.1 101").then_some(tcp)
}

/// The next frame within `limit`: `Ok(None)` when the server closed the connection.
pub async fn read_frame(
    reader: &mut OwnedReadHalf,
    limit: Duration,
) -> Result<Option<(u8, Vec<u8>)>, ()> {
    let read = async {
        let mut head = [0u8; frame::HEADER_LEN];
        if reader.read_exact(&mut head).await.is_err() {
            return None;
        }
        let header = frame::parse_header(head).ok()?;
        let mut payload = vec![0u8; header.len];
        reader.read_exact(&mut payload).await.ok()?;
        Some((header.kind, payload))
    };
    tokio::time::timeout(limit, read).await.map_err(|_| ())
}

impl DerpClient {
    /// Upgrade and log in as `secret`; `None` when the server closes instead of admitting.
    pub async fn connect(port: u16, source: IpAddr, secret: &SecretKey) -> Option<DerpClient> {
        let tcp = upgrade(port, source).await?;
        let (mut reader, mut writer) = tcp.into_split();
        let (kind, payload) = read_frame(&mut reader, Duration::from_secs(10))
            .await
            .ok()??;
        let ServerFrame::ServerKey(server_key) = ServerFrame::decode(kind, &payload).ok()? else {
            return None;
        };
        let public = *secret.public_key().as_bytes();
        let sealer = SalsaBox::new(&PublicKey::from(server_key), secret);
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        let sealed = sealer
            .encrypt(&nonce, &br#"{"version":2,"CanAckPings":true}"#[..])
            .ok()?;
        let info = ClientFrame::ClientInfo {
            key: public,
            nonce: nonce.into(),
            sealed: &sealed,
        };
        writer.write_all(&info.encode()).await.ok()?;
        let (kind, _) = read_frame(&mut reader, Duration::from_secs(10))
            .await
            .ok()??;
        (kind == frame::kind::SERVER_INFO).then_some(DerpClient {
            reader,
            writer,
            public,
        })
    }

    /// Writes raw bytes; false once the server has closed.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).await.is_ok()
    }

    pub async fn send(&mut self, frame: ClientFrame<'_>) -> bool {
        self.send_raw(&frame.encode()).await
    }

    /// The next packet received within `limit` (other frames skipped).
    pub async fn recv_packet(&mut self, limit: Duration) -> Option<([u8; 32], Vec<u8>)> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (kind, payload) = read_frame(&mut self.reader, left).await.ok()??;
            if let Ok(ServerFrame::RecvPacket { src, packet }) = ServerFrame::decode(kind, &payload)
            {
                return Some((src, packet.to_vec()));
            }
        }
    }

    /// Whether the server closes this connection within `limit` (frames before are skipped).
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match read_frame(&mut self.reader, left).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(()) => return false,
            }
        }
    }
}
