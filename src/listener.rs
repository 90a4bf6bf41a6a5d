//! The one accept loop of the public listener, plain or TLS (code review P4/P5): HTTP/1.1
//! with upgrades (`/ts2021` and `/derp` are HTTP/1.1 upgrades; nothing needs h2c here), a
//! header read deadline that also bounds idle keep-alive connections and slowloris peers,
//! the connection caps of `conn_limits.rs`, and a graceful drain at shutdown. The debug
//! listener uses the same loop with its own, smaller caps; the admin unix socket gets the
//! same HTTP/1.1 serving (header deadline) under a plain count cap ([`serve_unix`]), or
//! HTTP/2 with prior knowledge for the gRPC clients there (`grpc::authority` tells them
//! apart within the header deadline and mends the `:authority` grpc-go sends);
//! `grpc_listen_addr` uses the main loop and caps with HTTP/2 only.

use crate::conn_limits::{ConnLimits, ConnectionSlot};
use axum::body::Body;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// A connection must finish each request's headers this long after it starts waiting for
/// them (from accept, and again after each response): silent, trickling and idle keep-alive
/// peers are closed instead of held.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has not finished the TLS handshake by then is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open requests (upgraded connections are not waited for).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Streams one HTTP/2 connection may have open at once (the unix socket, `grpc_listen_addr`).
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 64;
/// The largest header list an HTTP/2 request may send (names + values + 32 per field).
pub const HTTP2_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// How often an HTTP/2 connection is pinged, and how long the answer may take before the
/// connection is closed (dead peers do not keep their place).
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Which HTTP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 with upgrades: the public and debug listeners, REST on the unix socket.
    Http1,
    /// HTTP/2 (TLS with ALPN `h2`, or prior knowledge): gRPC on `grpc_listen_addr` and on
    /// the unix socket.
    Http2,
}

/// Serves `router` on `listener` (over TLS when `tls` is set) until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Arc<ConnLimits>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, tls, router, limits, Protocols::Http1, shutdown).await
}

/// [`serve`], speaking `protocols`.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Arc<ConnLimits>,
    protocols: Protocols,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut refused_since_log = 0u64;
    let mut last_refusal_log = tokio::time::Instant::now();
    let mut last_accept_error_log: Option<tokio::time::Instant> = None;
    loop {
        while connections.try_join_next().is_some() {}
        // Wait for a place under the global cap before accepting: the excess waits in the
        // kernel's backlog and holds no descriptor.
        let global = tokio::select! {
            _ = &mut shutdown => break,
            global = limits.reserve() => match global {
                Some(global) => global,
                None => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning; log every 10 s at most.
                    if last_accept_error_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(%error, "accept failed");
                        last_accept_error_log = Some(tokio::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(permit) = limits.admit(global, peer.ip()) else {
            // Over the per-source cap: closed at once. Logged at most once a minute (L5).
            refused_since_log += 1;
            if last_refusal_log.elapsed() >= Duration::from_secs(60) {
                tracing::warn!(
                    refused = refused_since_log,
                    last = %peer.ip(),
                    per_source = limits.per_source_max(),
                    "connections refused: per-source cap reached"
                );
                refused_since_log = 0;
                last_refusal_log = tokio::time::Instant::now();
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let slot = ConnectionSlot::new(peer, permit);
        let router = router.clone();
        let stop = stop_rx.clone();
        match tls.clone() {
            None => {
                connections.spawn(serve_http(tcp, Some(slot), router, protocols, stop));
            }
            Some(acceptor) => {
                connections.spawn(async move {
                    let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    match tls.await {
                        Ok(Ok(tls)) => serve_http(tls, Some(slot), router, protocols, stop).await,
                        Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT * 2, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Connections at once on the admin unix socket (local users only).
pub const UNIX_MAX_CONNECTIONS: usize = 128;

/// Serves `router` on the unix socket until `shutdown` resolves: HTTP/1.1 with the header
/// deadline, or HTTP/2 (gRPC) behind the `:authority` shim; at most `max` connections (the
/// excess waits in the backlog).
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    router: Router,
    max: usize,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let permits = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "unix socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let stop = stop_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut stream = crate::grpc::authority::AuthorityShim::new(stream);
            // The first bytes say which: the HTTP/2 preface (gRPC) or an HTTP/1.1 request.
            // A client that says nothing within the header deadline is closed.
            let protocols = match tokio::time::timeout(HEADER_READ_TIMEOUT, stream.is_http2()).await
            {
                Ok(Ok(true)) => Protocols::Http2,
                Ok(Ok(false)) => Protocols::Http1,
                Ok(Err(_)) | Err(_) => return,
            };
            serve_http(stream, None, router, protocols, stop).await;
        });
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT * 2, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Runs one connection until it ends, or until `stop`, then lets it drain for
/// [`DRAIN_TIMEOUT`].
macro_rules! drive {
    ($connection:expr, $stop:expr, $peer:expr) => {{
        let mut connection = std::pin::pin!($connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, peer = ?$peer, "connection ended with an error");
                }
                return;
            }
            _ = $stop.wait_for(|stop| *stop) => {}
        }
        connection.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, connection).await;
    }};
}

/// One connection speaking `protocols`; on TCP each request carries `ConnectInfo` and the
/// connection's slot.
async fn serve_http<IO>(
    io: IO,
    slot: Option<ConnectionSlot>,
    router: Router,
    protocols: Protocols,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer: Option<SocketAddr> = slot.as_ref().map(|slot| slot.remote);
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut request = request.map(Body::new);
            if let Some(slot) = &slot {
                let extensions = request.extensions_mut();
                extensions.insert(axum::extract::ConnectInfo(slot.remote));
                extensions.insert(slot.clone());
            }
            router.clone().oneshot(request)
        });
    if protocols == Protocols::Http1 {
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        drive!(connection, stop, peer);
        return;
    }
    // hyper's HTTP/2 server has no header deadline: the preface, each frame and each header
    // block get HEADER_READ_TIMEOUT, as inside the Noise channel (audit H2).
    let io = crate::control::h2_deadline::H2ReadDeadline::new(io, HEADER_READ_TIMEOUT);
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(HTTP2_MAX_HEADER_LIST_BYTES)
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE)
        .serve_connection(TokioIo::new(io), service);
    drive!(connection, stop, peer);
}
