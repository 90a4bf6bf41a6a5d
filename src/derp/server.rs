//! The DERP relay: its Curve25519 key (created 0600 at `derp.server.private_key_path`), the
//! login handshake (ServerKey → sealed ClientInfo → sealed ServerInfo), the registry of
//! connected clients (newest connection per key wins), and one task pair per connection that
//! forwards SendPacket as RecvPacket, answers pings, sends keep-alives and tells recent
//! correspondents when a client leaves. Every queue and table is bounded; bad input closes
//! that one connection with a log line. `disconnect_unless` closes the connections whose key
//! no longer passes a check (the embedded relay runs it on every publication: M3).

use super::frame::{self, ClientFrame, FrameError, Key, PeerGoneReason, ServerFrame};
use crate::keyfile::{self, KeyFileError};
use crypto_box::aead::{Aead, AeadCore, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::Notify;

/// Text prefix of the key file (headscale writes the same kind).
pub const KEY_KIND: &str = "privkey";

/// Decides whether a client key may use the relay (e.g. "is it a registered node key").
pub type ClientVerifier = Arc<dyn Fn(&Key) -> bool + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum DerpError {
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error("the DERP server key at {0} equals the Noise key; use a different key file")]
    SameAsNoiseKey(String),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake not done within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("expected ClientInfo, got frame type {0:#04x}")]
    NotClientInfo(u8),
    #[error("ClientInfo does not open with the client's key")]
    BadClientInfo,
    #[error("client refused by the verifier")]
    Refused,
    #[error("relay is full ({0} clients)")]
    Full(usize),
    #[error("write stalled for {0:?}")]
    WriteTimeout(Duration),
    #[error("the client's key is no longer admitted")]
    Revoked,
}

/// Tunables; the defaults follow the Go server.
#[derive(Debug, Clone)]
pub struct DerpOptions {
    pub keepalive_interval: Duration,
    pub handshake_timeout: Duration,
    pub write_timeout: Duration,
    /// Frames queued per client; the oldest is dropped when full.
    pub send_queue_len: usize,
    pub max_clients: usize,
    /// Peers remembered per client for PeerGone on disconnect.
    pub max_correspondents: usize,
}

impl Default for DerpOptions {
    fn default() -> Self {
        DerpOptions {
            keepalive_interval: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(2),
            send_queue_len: 32,
            max_clients: 100_000,
            max_correspondents: 1024,
        }
    }
}

/// A bounded queue of encoded frames for one connection's writer.
struct SendQueue {
    frames: Mutex<VecDeque<Vec<u8>>>,
    capacity: usize,
    ready: Notify,
    dropped: AtomicU64,
}

impl SendQueue {
    fn new(capacity: usize) -> SendQueue {
        SendQueue {
            frames: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    fn push(&self, frame: Vec<u8>) {
        {
            let mut frames = lock(&self.frames);
            while frames.len() >= self.capacity {
                frames.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            frames.push_back(frame);
        }
        self.ready.notify_one();
    }

    fn take(&self) -> VecDeque<Vec<u8>> {
        std::mem::take(&mut *lock(&self.frames))
    }
}

/// Locks a mutex, recovering from poisoning (every critical section leaves data consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Client {
    conn_id: u64,
    queue: Arc<SendQueue>,
}

/// Every live connection, registered or replaced by a newer one of the same key (which
/// still sends): what `disconnect_unless` looks at.
struct Connection {
    key: Key,
    close: Arc<Notify>,
}

/// A token bucket for PeerGone(not here) replies: 1 per second, burst 3.
struct NotHereLimiter {
    tokens: f64,
    at: Instant,
}

impl NotHereLimiter {
    fn new() -> NotHereLimiter {
        NotHereLimiter {
            tokens: 3.0,
            at: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64()).min(3.0);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The embedded DERP relay.
pub struct DerpServer {
    secret: SecretKey,
    public: Key,
    verifier: Option<ClientVerifier>,
    options: DerpOptions,
    clients: Mutex<HashMap<Key, Client>>,
    connections: Mutex<HashMap<u64, Connection>>,
    next_conn_id: AtomicU64,
}

impl DerpServer {
    pub fn new(secret: [u8; 32], verifier: Option<ClientVerifier>, options: DerpOptions) -> Self {
        let secret = SecretKey::from(secret);
        let public = *secret.public_key().as_bytes();
        DerpServer {
            secret,
            public,
            verifier,
            options,
            clients: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            next_conn_id: AtomicU64::new(1),
        }
    }

    /// Loads the key at `path` (creating it on first start) and refuses the Noise key.
    pub fn load_key(path: &Path, noise_secret: &[u8; 32]) -> Result<[u8; 32], DerpError> {
        let key = keyfile::load_or_create(path, KEY_KIND, keyfile::random_key)?;
        if bool::from(subtle::ConstantTimeEq::ct_eq(&key[..], &noise_secret[..])) {
            return Err(DerpError::SameAsNoiseKey(path.display().to_string()));
        }
        Ok(key)
    }

    pub fn public_key(&self) -> Key {
        self.public
    }

    /// Number of registered clients.
    pub fn client_count(&self) -> usize {
        lock(&self.clients).len()
    }

    /// Closes every connection whose key `admit` refuses now (a node deleted, expired or
    /// unapproved since it logged in); returns how many. `admit` runs outside the relay's
    /// locks, so forwarding is not held up while it checks.
    pub fn disconnect_unless(&self, admit: impl Fn(&Key) -> bool) -> usize {
        let live: Vec<(Key, Arc<Notify>)> = lock(&self.connections)
            .values()
            .map(|c| (c.key, c.close.clone()))
            .collect();
        let mut closed = 0;
        for (key, close) in live {
            if !admit(&key) {
                // A stored permit: the connection ends even if it is not waiting yet.
                close.notify_one();
                closed += 1;
            }
        }
        closed
    }

    /// Serves one DERP connection (after the HTTP upgrade) until it ends.
    pub async fn serve_connection<S>(self: Arc<Self>, io: S)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let mut reader = BufReader::new(read);
        let mut writer = BufWriter::new(write);
        match self.run(&mut reader, &mut writer).await {
            Ok(()) => {}
            Err(DerpError::Io(error))
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                tracing::debug!(%error, "derp client went away");
            }
            // Refused keys are logged (at debug) where they are refused.
            Err(DerpError::Refused) => {}
            Err(error) => tracing::info!(%error, "derp connection closed"),
        }
        let _ = writer.shutdown().await;
    }

    async fn run<R, W>(&self, reader: &mut R, writer: &mut W) -> Result<(), DerpError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let timeout = self.options.handshake_timeout;
        let client_key = tokio::time::timeout(timeout, self.handshake(reader, writer))
            .await
            .map_err(|_| DerpError::HandshakeTimeout(timeout))??;

        let queue = Arc::new(SendQueue::new(self.options.send_queue_len));
        let conn_id = self.register(client_key, queue.clone())?;
        let close = Arc::new(Notify::new());
        lock(&self.connections).insert(
            conn_id,
            Connection {
                key: client_key,
                close: close.clone(),
            },
        );
        let metrics = crate::metrics::metrics();
        metrics.derp_connections.inc();
        tracing::debug!(client = %hex::encode(&client_key[..8]), conn_id, "derp client connected");
        let mut correspondents = HashSet::new();
        let result = tokio::select! {
            result = self.read_loop(reader, &client_key, &queue, &mut correspondents) => result,
            result = self.write_loop(writer, &queue) => result,
            () = close.notified() => Err(DerpError::Revoked),
        };
        lock(&self.connections).remove(&conn_id);
        self.unregister(&client_key, conn_id, &correspondents);
        metrics.derp_connections.dec();
        result
    }

    /// ServerKey out, ClientInfo in, the verifier's verdict, ServerInfo out.
    async fn handshake<R, W>(&self, reader: &mut R, writer: &mut W) -> Result<Key, DerpError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        writer
            .write_all(&ServerFrame::ServerKey(self.public).encode())
            .await?;
        writer.flush().await?;
        let client_key = self.read_client_info(reader).await?;
        if let Some(verify) = &self.verifier {
            if !verify(&client_key) {
                // Anyone can present a fresh key: debug, so refusals cannot flood the log.
                tracing::debug!(client = %hex::encode(&client_key[..8]), "derp client refused: not the key of an active node");
                return Err(DerpError::Refused);
            }
        }
        writer.write_all(&self.server_info(&client_key)).await?;
        writer.flush().await?;
        Ok(client_key)
    }

    async fn read_client_info<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
    ) -> Result<Key, DerpError> {
        let (kind, payload) = read_frame(reader).await?;
        let ClientFrame::ClientInfo { key, nonce, sealed } = ClientFrame::decode(kind, &payload)?
        else {
            return Err(DerpError::NotClientInfo(kind));
        };
        let client_box = SalsaBox::new(&PublicKey::from(key), &self.secret);
        let json = client_box
            .decrypt(&nonce.into(), sealed)
            .map_err(|_| DerpError::BadClientInfo)?;
        // Its content (version, CanAckPings, meshKey...) changes nothing for us, but it must be
        // a JSON object.
        match serde_json::from_slice::<serde_json::Value>(&json) {
            Ok(serde_json::Value::Object(_)) => Ok(key),
            _ => Err(DerpError::BadClientInfo),
        }
    }

    fn server_info(&self, client: &Key) -> Vec<u8> {
        let server_box = SalsaBox::new(&PublicKey::from(*client), &self.secret);
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        let info = format!("{{\"version\":{}}}", frame::PROTOCOL_VERSION);
        // Sealing a short message into a Vec cannot fail (the error is for fixed buffers).
        let sealed = server_box
            .encrypt(&nonce, info.as_bytes())
            .unwrap_or_default();
        frame::encode(frame::kind::SERVER_INFO, &[nonce.as_slice(), &sealed])
    }

    fn register(&self, key: Key, queue: Arc<SendQueue>) -> Result<u64, DerpError> {
        let conn_id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let mut clients = lock(&self.clients);
        if !clients.contains_key(&key) && clients.len() >= self.options.max_clients {
            return Err(DerpError::Full(clients.len()));
        }
        // Newest connection wins; the older one keeps sending but no longer receives.
        clients.insert(key, Client { conn_id, queue });
        Ok(conn_id)
    }

    fn unregister(&self, key: &Key, conn_id: u64, correspondents: &HashSet<Key>) {
        let mut clients = lock(&self.clients);
        if clients.get(key).is_some_and(|c| c.conn_id == conn_id) {
            clients.remove(key);
            let gone = ServerFrame::PeerGone {
                key: *key,
                reason: PeerGoneReason::Disconnected,
            }
            .encode();
            for peer in correspondents {
                if let Some(client) = clients.get(peer) {
                    client.queue.push(gone.clone());
                }
            }
        }
        tracing::debug!(client = %hex::encode(&key[..8]), conn_id, "derp client disconnected");
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        me: &Key,
        queue: &SendQueue,
        correspondents: &mut HashSet<Key>,
    ) -> Result<(), DerpError> {
        let mut not_here = NotHereLimiter::new();
        loop {
            let (kind, payload) = read_frame(reader).await?;
            crate::metrics::metrics().derp_bytes("received", frame::HEADER_LEN + payload.len());
            match ClientFrame::decode(kind, &payload)? {
                ClientFrame::SendPacket { dst, packet } => {
                    let target = lock(&self.clients).get(&dst).map(|c| c.queue.clone());
                    match target {
                        Some(target) => {
                            target.push(ServerFrame::RecvPacket { src: *me, packet }.encode());
                            if correspondents.len() < self.options.max_correspondents {
                                correspondents.insert(dst);
                            }
                        }
                        None if frame::is_disco(packet) && not_here.allow() => {
                            queue.push(
                                ServerFrame::PeerGone {
                                    key: dst,
                                    reason: PeerGoneReason::NotHere,
                                }
                                .encode(),
                            );
                        }
                        None => {}
                    }
                }
                ClientFrame::Ping(data) => queue.push(ServerFrame::Pong(data).encode()),
                ClientFrame::NotePreferred(_) | ClientFrame::Pong(_) => {}
                ClientFrame::ClientInfo { .. } | ClientFrame::Other(_) => {}
            }
        }
    }

    async fn write_loop<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
        queue: &SendQueue,
    ) -> Result<(), DerpError> {
        let mut keepalive = tokio::time::interval(self.options.keepalive_interval);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.tick().await;
        loop {
            let frames = tokio::select! {
                _ = queue.ready.notified() => queue.take(),
                _ = keepalive.tick() => VecDeque::from([ServerFrame::KeepAlive.encode()]),
            };
            if frames.is_empty() {
                continue;
            }
            let timeout = self.options.write_timeout;
            tokio::time::timeout(timeout, async {
                for frame in &frames {
                    writer.write_all(frame).await?;
                }
                writer.flush().await
            })
            .await
            .map_err(|_| DerpError::WriteTimeout(timeout))??;
            let sent: usize = frames.iter().map(Vec::len).sum();
            crate::metrics::metrics().derp_bytes("sent", sent);
        }
    }
}

/// Reads one frame: the header is checked (per-type limits) before the payload is read.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<(u8, Vec<u8>), DerpError> {
    let mut head = [0u8; frame::HEADER_LEN];
    reader.read_exact(&mut head).await?;
    let header = frame::parse_header(head)?;
    let mut payload = vec![0u8; header.len];
    reader.read_exact(&mut payload).await?;
    Ok((header.kind, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_drops_the_oldest_when_full() {
        let queue = SendQueue::new(2);
        queue.push(vec![1]);
        queue.push(vec![2]);
        queue.push(vec![3]);
        assert_eq!(queue.take(), VecDeque::from([vec![2], vec![3]]));
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn not_here_is_rate_limited() {
        let mut limiter = NotHereLimiter::new();
        assert!(limiter.allow() && limiter.allow() && limiter.allow());
        assert!(!limiter.allow());
    }

    #[test]
    fn the_noise_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("derp.key");
        let key = DerpServer::load_key(&path, &[1; 32]).unwrap();
        let err = DerpServer::load_key(&path, &key).unwrap_err();
        assert!(err.to_string().contains("equals the Noise key"), "{err}");
    }
}
