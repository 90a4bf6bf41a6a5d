//! Raw access to the control protocol for hostile-client tests (`tests/hostile.rs`), the
//! parts the polite `ControlClient` does not offer: connecting from a chosen local source
//! address (so one test can play many IPs on loopback, `127.0.0.0/8`), the bare `/ts2021`
//! handshake, and an HTTP/2 session whose request bodies are streamed chunk by chunk and
//! may be left unfinished on purpose (a stalled body never sends `END_STREAM`).

use super::early::EarlyPayload;
use super::{
    finish_handshake, header, http2_session, read_upgrade_head, split_url, upgrade_request,
    ClientError, CONNECT_TIMEOUT,
};
use crate::control::noise;
use crate::control::noise_stream::NoiseStream;
use crate::core::keys::MachineKey;
use hyper::body::{Bytes, Frame, Incoming};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use x25519_dalek::StaticSecret;

/// A TCP connection to `server_url`'s host from the local address `source` (port chosen by
/// the kernel).
pub async fn tcp_from(server_url: &str, source: IpAddr) -> Result<TcpStream, ClientError> {
    let (authority, _) = split_url(server_url)?;
    let target: SocketAddr = tokio::net::lookup_host(&authority)
        .await?
        .next()
        .ok_or_else(|| ClientError::Url(server_url.into()))?;
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(target).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// What the server answered to a `/ts2021` upgrade attempt.
pub enum Handshake {
    /// `101` and a valid handshake response: the Noise channel.
    Accepted(Box<NoiseStream<TcpStream>>),
    /// Anything else: the status line (e.g. `HTTP/1.1 429 Too Many Requests`), a Noise error
    /// frame's text, or the connection closing.
    Refused(String),
}

/// `POST /ts2021` on an open TCP connection, as `super::noise_connect` does, but a refusal
/// is an answer, not an error (hostile tests count refusals).
pub async fn handshake_on(
    mut tcp: TcpStream,
    server_url: &str,
    machine_key: &StaticSecret,
    server: MachineKey,
    capability_version: u16,
) -> Result<Handshake, ClientError> {
    let (authority, _) = split_url(server_url)?;
    let (initiator, initiation) = noise::initiation(machine_key, &server.0, capability_version)?;
    tcp.write_all(upgrade_request(&authority, &initiation).as_bytes())
        .await?;
    let head = match read_upgrade_head(&mut tcp).await {
        Ok(head) => head,
        Err(ClientError::Upgrade(why)) => return Ok(Handshake::Refused(why)),
        Err(ClientError::Io(error)) => return Ok(Handshake::Refused(error.to_string())),
        Err(other) => return Err(other),
    };
    let status_line = head.lines().next().unwrap_or("").to_string();
    if head.split_whitespace().nth(1) != Some("101")
        || header(&head, "upgrade") != Some(crate::control::upgrade::UPGRADE_PROTOCOL)
    {
        return Ok(Handshake::Refused(status_line));
    }
    let mut frame_head = [0u8; 3];
    if let Err(error) = tcp.read_exact(&mut frame_head).await {
        return Ok(Handshake::Refused(format!("closed after 101: {error}")));
    }
    match finish_handshake(tcp, frame_head, initiator).await {
        Ok(noise) => Ok(Handshake::Accepted(Box::new(noise))),
        Err(ClientError::ServerError(message)) => Ok(Handshake::Refused(message)),
        Err(other) => Err(other),
    }
}

/// A request body fed chunk by chunk through a channel; it ends (`END_STREAM`) only when
/// the `BodyWriter` is dropped.
pub struct ChannelBody {
    chunks: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// The sending end of a `ChannelBody`: each `send` waits until HTTP/2 took the previous
/// chunk (one chunk in flight), so a writer stalls when the server stops granting window.
pub type BodyWriter = mpsc::Sender<Bytes>;

/// One Noise + HTTP/2 session with streamed request bodies.
pub struct RawSession {
    sender: hyper::client::conn::http2::SendRequest<ChannelBody>,
    authority: String,
    path: String,
}

impl RawSession {
    /// Upgrade, Noise handshake and HTTP/2 from the local address `source`. A refused
    /// handshake is `ClientError::Upgrade` with the server's answer.
    pub async fn connect_from(
        server_url: &str,
        source: IpAddr,
        machine_key: &StaticSecret,
        server: MachineKey,
        capability_version: u16,
    ) -> Result<RawSession, ClientError> {
        let (authority, path) = split_url(server_url)?;
        let connect = async {
            let tcp = tcp_from(server_url, source).await?;
            let noise = match handshake_on(tcp, server_url, machine_key, server, capability_version)
                .await?
            {
                Handshake::Accepted(noise) => *noise,
                Handshake::Refused(why) => return Err(ClientError::Upgrade(why)),
            };
            http2_session(noise, EarlyPayload::default(), "raw control").await
        };
        let sender = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok(RawSession {
            sender,
            authority,
            path,
        })
    }

    /// Opens `POST <path>` and returns the body writer and the pending response. Nothing
    /// is sent as body until the caller writes; dropping the writer finishes the body.
    pub async fn open_post(
        &self,
        path: &str,
    ) -> Result<
        (
            BodyWriter,
            impl std::future::Future<Output = Result<hyper::Response<Incoming>, hyper::Error>>,
        ),
        ClientError,
    > {
        let mut sender = self.sender.clone();
        sender.ready().await?;
        let (writer, chunks) = mpsc::channel(1);
        let request =
            hyper::Request::post(format!("https://{}{}{}", self.authority, self.path, path))
                .body(ChannelBody { chunks })
                .map_err(|e| ClientError::Url(e.to_string()))?;
        Ok((writer, sender.send_request(request)))
    }

    /// A complete `POST <path>` with `body`: the status and up to `limit` bytes of the
    /// answer.
    pub async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        limit: usize,
    ) -> Result<(u16, Bytes), ClientError> {
        let (writer, response) = self.open_post(path).await?;
        let send = async move {
            // The server may answer (e.g. 413) before taking the whole body.
            let _ = writer.send(Bytes::from(body)).await;
        };
        let (_, response) = tokio::join!(send, response);
        let response = response?;
        let status = response.status().as_u16();
        let body = super::read_limited(response.into_body(), limit).await?;
        Ok((status, body))
    }

    /// Whether the HTTP/2 connection is still usable.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }
}
