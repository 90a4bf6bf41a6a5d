//! Our own Tailscale control client, as `tailscaled` speaks the protocol: `GET /key`, the
//! `/ts2021` upgrade carrying the Noise IK initiation, the Noise transport, the server's
//! optional early payload, then HTTP/2 (prior knowledge) inside the channel for
//! `/machine/register` and `/machine/map`. Used by the protocol tests and the `loadgen`
//! binary; `Netmap` is the model of what the client believes after each map message.
//! Only `http://` server URLs (the test and bench setups); everything read is bounded.

pub mod early;
pub mod frames;
pub mod loadgen;
pub mod netmap;
pub mod raw;
pub mod wire;

use crate::control::noise::{self, NoiseError, RESPONSE_LEN};
use crate::control::noise_stream::NoiseStream;
use crate::core::keys::MachineKey;
use crate::tailcfg::{MapRequest, RegisterRequest, RegisterResponse};
use base64::Engine as _;
use early::{EarlyPayload, EarlyPayloadStream};
use frames::{FrameError, FrameReader, MAX_FRAME_BYTES};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::MapResponseIn;
use x25519_dalek::{PublicKey, StaticSecret};

pub use netmap::Netmap;

/// `/key` answers are tiny; the Go client reads at most 64 KiB.
const MAX_KEY_RESPONSE_BYTES: usize = 64 * 1024;
/// Register responses and error bodies.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// The 101 response's header block.
const MAX_UPGRADE_HEADER_BYTES: usize = 8 * 1024;
/// Everything up to a working HTTP/2 session.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unsupported server URL {0:?} (only http://host[:port])")]
    Url(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("server answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("upgrade refused: {0}")]
    Upgrade(String),
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    #[error("server error during handshake: {0}")]
    ServerError(String),
    #[error("bad JSON from the server: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("response body over its limit or unreadable: {0}")]
    Body(String),
    #[error("timed out")]
    Timeout,
    #[error("register refused: {0}")]
    Refused(String),
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// `host:port` and the path prefix of an `http://` server URL.
fn split_url(server_url: &str) -> Result<(String, String), ClientError> {
    let rest = server_url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Url(server_url.into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(ClientError::Url(server_url.into()));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, ClientError> {
    Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ClientError::Body(e.to_string()))
}

async fn expect_ok(response: hyper::Response<Incoming>) -> Result<Incoming, ClientError> {
    let status = response.status().as_u16();
    if status == 200 {
        return Ok(response.into_body());
    }
    let body = read_limited(response.into_body(), MAX_RESPONSE_BYTES)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body[..body.len().min(200)])
        .trim()
        .to_string();
    Err(ClientError::Status { status, body })
}

/// `GET <server>/key?v=N`: the server's Noise public key.
pub async fn fetch_server_key(
    server_url: &str,
    capability_version: u16,
) -> Result<MachineKey, ClientError> {
    let (authority, path) = split_url(server_url)?;
    let fetch = async {
        let tcp = TcpStream::connect(&authority).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::get(format!("{path}/key?v={capability_version}"))
            .header(hyper::header::HOST, &authority)
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let response = sender.send_request(request).await?;
        let body = read_limited(expect_ok(response).await?, MAX_KEY_RESPONSE_BYTES).await?;
        let value: serde_json::Value = serde_json::from_slice(&body)?;
        let key = value
            .get("publicKey")
            .and_then(|k| k.as_str())
            .and_then(|k| MachineKey::parse(k, false).ok())
            .filter(|k| k.0 != [0; 32])
            .ok_or_else(|| {
                ClientError::Upgrade("control server is too old; no noise key".into())
            })?;
        Ok(key)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fetch)
        .await
        .map_err(|_| ClientError::Timeout)?
}

/// One Noise + HTTP/2 session with the control server, as one machine.
pub struct ControlClient {
    sender: Sender,
    authority: String,
    path: String,
    machine_key: MachineKey,
    capability_version: u16,
    early_payload: EarlyPayload,
}

/// Reads the 101 header block byte by byte, so nothing after it is consumed.
async fn read_upgrade_head(tcp: &mut TcpStream) -> Result<String, ClientError> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_UPGRADE_HEADER_BYTES {
            return Err(ClientError::Upgrade("response headers too long".into()));
        }
        if tcp.read(&mut byte).await? == 0 {
            return Err(ClientError::Upgrade(
                "connection closed during upgrade".into(),
            ));
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// `POST /ts2021` with the initiation, the `101`, the handshake response: the Noise byte
/// stream, before the early payload and HTTP/2. Public for tests that misbehave on purpose.
pub async fn noise_connect(
    server_url: &str,
    machine_key: &StaticSecret,
    server: MachineKey,
    capability_version: u16,
) -> Result<NoiseStream<TcpStream>, ClientError> {
    let (authority, _) = split_url(server_url)?;
    let (initiator, initiation) = noise::initiation(machine_key, &server.0, capability_version)?;
    let mut tcp = TcpStream::connect(&authority).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(upgrade_request(&authority, &initiation).as_bytes())
        .await?;
    let head = read_upgrade_head(&mut tcp).await?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "101" {
        return Err(ClientError::Upgrade(
            head.lines().next().unwrap_or("").to_string(),
        ));
    }
    // Go's checks: Connection has the token `upgrade`, Upgrade is exactly our protocol.
    let connection_ok = header(&head, "connection").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !connection_ok || header(&head, "upgrade") != Some(crate::control::upgrade::UPGRADE_PROTOCOL)
    {
        return Err(ClientError::Upgrade(
            "101 without the tailscale-control-protocol upgrade".into(),
        ));
    }
    let mut frame_head = [0u8; 3];
    tcp.read_exact(&mut frame_head).await?;
    finish_handshake(tcp, frame_head, initiator).await
}

/// The `/ts2021` upgrade request carrying the Noise `initiation`.
fn upgrade_request(authority: &str, initiation: &[u8]) -> String {
    format!(
        "POST /ts2021 HTTP/1.1\r\nHost: {authority}\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: {}\r\nContent-Length: 0\r\n\r\n",
        base64::engine::general_purpose::STANDARD.encode(initiation)
    )
}

/// After the `101` and the server's first frame header `frame_head`: the rest of its
/// handshake response and the Noise byte stream, or its error frame's text as
/// `ClientError::ServerError`.
async fn finish_handshake(
    mut tcp: TcpStream,
    frame_head: [u8; 3],
    initiator: snow::HandshakeState,
) -> Result<NoiseStream<TcpStream>, ClientError> {
    let len = u16::from_be_bytes([frame_head[1], frame_head[2]]) as usize;
    match frame_head[0] {
        3 => {
            let mut message = vec![0u8; len];
            tcp.read_exact(&mut message).await?;
            return Err(ClientError::ServerError(
                String::from_utf8_lossy(&message).into_owned(),
            ));
        }
        2 if len == RESPONSE_LEN - 3 => {}
        kind => {
            return Err(ClientError::Noise(NoiseError::Handshake(format!(
                "unexpected frame type {kind} length {len} in handshake"
            ))))
        }
    }
    let mut response = [0u8; RESPONSE_LEN];
    response[..3].copy_from_slice(&frame_head);
    tcp.read_exact(&mut response[3..]).await?;
    let (sender, receiver) = noise::finish_initiation(initiator, &response)?;
    Ok(NoiseStream::new(tcp, sender, receiver))
}

/// HTTP/2 over the Noise stream (after the server's early payload, kept in `early_payload`);
/// the connection task logs `what` when it ends.
async fn http2_session<B>(
    noise: NoiseStream<TcpStream>,
    early_payload: EarlyPayload,
    what: &'static str,
) -> Result<hyper::client::conn::http2::SendRequest<B>, ClientError>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = EarlyPayloadStream::new(noise, early_payload);
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "{what} connection ended");
        }
    });
    Ok(sender)
}

impl ControlClient {
    /// `GET /key`, then `connect_with_server_key`.
    pub async fn connect(
        server_url: &str,
        machine_key: StaticSecret,
        capability_version: u16,
    ) -> Result<ControlClient, ClientError> {
        let server = fetch_server_key(server_url, capability_version).await?;
        ControlClient::connect_with_server_key(server_url, machine_key, server, capability_version)
            .await
    }

    /// The upgrade, Noise handshake and HTTP/2 session, with a known server key.
    pub async fn connect_with_server_key(
        server_url: &str,
        machine_key: StaticSecret,
        server: MachineKey,
        capability_version: u16,
    ) -> Result<ControlClient, ClientError> {
        let (authority, path) = split_url(server_url)?;
        let connect = async {
            let noise = noise_connect(server_url, &machine_key, server, capability_version).await?;
            let early_payload = EarlyPayload::default();
            let sender = http2_session(noise, early_payload.clone(), "control").await?;
            Ok::<_, ClientError>((sender, early_payload))
        };
        let (sender, early_payload) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok(ControlClient {
            sender,
            authority,
            path,
            machine_key: MachineKey(PublicKey::from(&machine_key).to_bytes()),
            capability_version,
            early_payload,
        })
    }

    pub fn machine_key(&self) -> MachineKey {
        self.machine_key
    }

    pub fn capability_version(&self) -> u16 {
        self.capability_version
    }

    /// The server's early payload (`tailcfg.EarlyNoise`), once the session has read past it.
    pub fn early_payload(&self) -> Option<serde_json::Value> {
        self.early_payload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends `POST <server path><path>` with a JSON body inside the channel.
    pub async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let mut sender = self.sender.clone();
        sender.ready().await?;
        let request =
            hyper::Request::post(format!("https://{}{}{}", self.authority, self.path, path))
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| ClientError::Url(e.to_string()))?;
        Ok(sender.send_request(request).await?)
    }

    /// `POST /machine/register`. A non-empty `Error` in the answer is returned as is: the
    /// caller decides (tests check refusals).
    pub async fn register(
        &self,
        request: &RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        let response = self
            .post("/machine/register", serde_json::to_vec(request)?)
            .await?;
        let body = read_limited(expect_ok(response).await?, MAX_RESPONSE_BYTES).await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// `POST /machine/map`: the stream of messages (one message for `Stream:false`).
    pub async fn map_stream(&self, request: &MapRequest) -> Result<MapStream, ClientError> {
        let response = self
            .post("/machine/map", serde_json::to_vec(request)?)
            .await?;
        let body = expect_ok(response).await?;
        Ok(MapStream {
            body,
            reader: FrameReader::new(MAX_FRAME_BYTES),
            compressed: request.compress == "zstd",
            decompressor: None,
            done: false,
        })
    }

    /// The lite update (`Stream:false, OmitPeers:true`): endpoints, disco key, hostinfo.
    pub async fn lite_update(
        &self,
        node_key: &str,
        endpoints: Vec<String>,
        disco_key: &str,
        hostinfo: Option<serde_json::Value>,
    ) -> Result<(), ClientError> {
        let request = MapRequest {
            version: u32::from(self.capability_version),
            compress: "zstd".into(),
            keep_alive: true,
            node_key: node_key.into(),
            disco_key: disco_key.into(),
            stream: false,
            hostinfo,
            endpoints: Some(endpoints),
            omit_peers: true,
            read_only: false,
        };
        let response = self
            .post("/machine/map", serde_json::to_vec(&request)?)
            .await?;
        read_limited(expect_ok(response).await?, MAX_RESPONSE_BYTES).await?;
        Ok(())
    }

    /// A streaming map request as tailscaled sends it.
    pub fn stream_request(
        &self,
        node_key: &str,
        disco_key: &str,
        endpoints: Vec<String>,
    ) -> MapRequest {
        MapRequest {
            version: u32::from(self.capability_version),
            compress: "zstd".into(),
            keep_alive: true,
            node_key: node_key.into(),
            disco_key: disco_key.into(),
            stream: true,
            hostinfo: None,
            endpoints: Some(endpoints),
            omit_peers: false,
            read_only: false,
        }
    }
}

/// One map message: the decompressed JSON exactly as sent, and its size on the wire.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub json: Vec<u8>,
    /// Bytes of the frame body (compressed), without the 4-byte length.
    pub wire_len: usize,
}

impl RawMessage {
    pub fn decode(&self) -> Result<MapResponseIn, ClientError> {
        Ok(serde_json::from_slice(&self.json)?)
    }
}

/// A decoded map message.
#[derive(Debug, Clone)]
pub struct MapMessage {
    pub raw: RawMessage,
    pub response: MapResponseIn,
}

/// The body of a map response, cut into messages.
pub struct MapStream {
    body: Incoming,
    reader: FrameReader,
    compressed: bool,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    done: bool,
}

impl MapStream {
    /// The next message undecoded; `None` when the server ended the stream cleanly.
    pub async fn next_raw(&mut self) -> Option<Result<RawMessage, ClientError>> {
        loop {
            match self.reader.next_frame() {
                Ok(Some(body)) => {
                    let wire_len = body.len();
                    let json = if self.compressed {
                        match frames::decompress(&mut self.decompressor, &body, MAX_FRAME_BYTES) {
                            Ok(json) => json,
                            Err(error) => return Some(Err(error.into())),
                        }
                    } else {
                        body
                    };
                    return Some(Ok(RawMessage { json, wire_len }));
                }
                Ok(None) => {}
                Err(error) => return Some(Err(error.into())),
            }
            if self.done {
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.reader.push(data);
                    }
                }
                Some(Err(error)) => {
                    self.done = true;
                    return Some(Err(error.into()));
                }
                None => {
                    self.done = true;
                    if let Err(error) = self.reader.finish() {
                        return Some(Err(error.into()));
                    }
                    return None;
                }
            }
        }
    }

    /// The next message, decoded.
    pub async fn next(&mut self) -> Option<Result<MapMessage, ClientError>> {
        let raw = match self.next_raw().await? {
            Ok(raw) => raw,
            Err(error) => return Some(Err(error)),
        };
        Some(raw.decode().map(|response| MapMessage { raw, response }))
    }

    /// `next` with a deadline: `Err(Timeout)` if nothing arrives in time.
    pub async fn next_within(
        &mut self,
        limit: Duration,
    ) -> Option<Result<MapMessage, ClientError>> {
        match tokio::time::timeout(limit, self.next()).await {
            Ok(next) => next,
            Err(_) => Some(Err(ClientError::Timeout)),
        }
    }
}

/// A fresh random X25519 key as `prefix:hex` text and its secret (node or disco keys).
pub fn random_key(prefix: &str) -> (String, StaticSecret) {
    let secret = StaticSecret::random_from_rng(rand::rngs::OsRng);
    let public = PublicKey::from(&secret);
    (
        format!("{prefix}{}", hex::encode(public.as_bytes())),
        secret,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1:8080".into(), String::new())
        );
        assert_eq!(
            split_url("http://example.com/hs/").unwrap(),
            ("example.com:80".into(), "/hs".into())
        );
        assert!(split_url("https://example.com").is_err());
        assert!(split_url("http://").is_err());
    }
}
