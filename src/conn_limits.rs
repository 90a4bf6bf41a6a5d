//! Connection accounting for the public listener (audit M5): one global cap shared by plain
//! and TLS connections, upgraded `/ts2021` and `/derp` connections included, and a per-source
//! cap (IPv4 per address, IPv6 per /64). Each accepted connection holds a [`ConnPermit`]; the
//! listener attaches it to every request as a [`ConnectionSlot`], and the upgrade handlers
//! move a clone into the upgraded task, so the slot is free only when the last user is gone.
//! Noise handshakes (`/ts2021`) and DERP upgrades are also metered per source (audit L8): a
//! token bucket of [`HANDSHAKES_PER_SECOND`] with a burst of [`HANDSHAKE_BURST`], checked
//! before any X25519 work; over it the upgrade gets `429`.
//! Behind a trusted proxy (`trusted_proxies`) every client arrives from the proxy's address:
//! the proxy is then exempt from the per-source connection cap (the global cap still holds),
//! and handshakes are metered by the nearest untrusted `X-Forwarded-For` hop (not at all when
//! the proxy sends none: it is trusted to limit its own clients).
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit and the global cap lowered to
//! fit it, minus a reserve for the store, the other listeners and their connections.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections at once on the public listener, unless the fd limit is lower.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections at once from one source (an IPv4 address, an IPv6 /64).
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 256;
/// File descriptors kept out of the connection cap: the store, the unix socket, the metrics
/// listener and their connections, STUN, the runtime's own.
pub const FD_RESERVE: usize = 256;
/// Noise handshakes and DERP upgrades per second from one source, sustained...
pub const HANDSHAKES_PER_SECOND: u32 = 20;
/// ...and in a burst.
pub const HANDSHAKE_BURST: u32 = 100;
/// Forgotten buckets (full again) are dropped every this many checks, so the table holds
/// only sources seen in the last few seconds.
const HANDSHAKE_SWEEP_EVERY: u64 = 1024;
/// The global cap never goes below this, however low the fd limit.
const MIN_CONNECTIONS: usize = 16;

/// Whom a per-source limit counts: an IPv4 address or an IPv6 /64 (one host usually gets a
/// whole /64). IPv4-mapped IPv6 addresses count as their IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKey {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl SourceKey {
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                SourceKey::V6(prefix)
            }
        }
    }
}

/// The soft and hard `RLIMIT_NOFILE` before and after [`raise_fd_limit`].
#[derive(Clone, Copy, Debug)]
pub struct FdLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (logging both).
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    let (soft_before, hard) = rlimit::Resource::NOFILE.get()?;
    let soft = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok(FdLimit {
        soft_before,
        soft,
        hard,
    })
}

/// The global cap that fits `fd_soft_limit` descriptors: `configured`, lowered to the limit
/// minus [`FD_RESERVE`] (but not below a small floor).
pub fn fit_to_fd_limit(configured: usize, fd_soft_limit: u64) -> usize {
    let fitting = usize::try_from(fd_soft_limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(FD_RESERVE);
    configured.min(fitting).max(MIN_CONNECTIONS)
}

/// The caps and the live counts.
pub struct ConnLimits {
    global: Arc<Semaphore>,
    max: usize,
    per_source_max: usize,
    per_source: Mutex<HashMap<SourceKey, usize>>,
    handshakes: DefaultKeyedRateLimiter<SourceKey>,
    handshake_checks: AtomicU64,
    trusted_proxies: Vec<IpNet>,
}

/// Parses `trusted_proxies` entries (CIDRs or single addresses; others are ignored), for the
/// connection limits and the API-key limiter alike.
pub fn parse_trusted_proxies(entries: &[String]) -> Vec<IpNet> {
    entries
        .iter()
        .filter_map(|p| {
            p.parse::<IpNet>()
                .ok()
                .or_else(|| p.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

/// The client a request comes from: `peer`, or when `peer` is a trusted proxy, the nearest
/// untrusted `X-Forwarded-For` hop (`None` when the proxy names none).
pub fn client_source(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| {
        let ip = ip.to_canonical();
        trusted.iter().any(|net| net.contains(&ip))
    };
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse::<IpAddr>().ok())
        .collect();
    forwarded.into_iter().rev().find(|ip| !is_trusted(ip))
}

/// The start-up warning for a listener on loopback with no trusted proxy, if it applies:
/// that is the usual same-host reverse-proxy set-up, where every client arrives from the
/// proxy's address and so shares one source's connection cap, handshake rate and API-key
/// failure limit.
pub fn proxy_warning(
    listen_addr: &str,
    trusted_proxies: &[IpNet],
    per_source_max: usize,
) -> Option<String> {
    let ip = listen_addr.parse::<SocketAddr>().ok()?.ip();
    (ip.to_canonical().is_loopback() && trusted_proxies.is_empty()).then(|| {
        format!(
            "listen_addr {listen_addr} is loopback and trusted_proxies is empty: behind a \
             same-host reverse proxy every client shares the proxy's address, so the per-source \
             connection cap ({per_source_max}), the handshake rate and the API-key failure limit \
             apply to all of them together; set trusted_proxies to the proxy's address"
        )
    })
}

impl ConnLimits {
    pub fn new(max: usize, per_source_max: usize) -> Arc<ConnLimits> {
        ConnLimits::behind(max, per_source_max, Vec::new())
    }

    /// `new`, with the proxies whose connections carry many clients.
    pub fn behind(
        max: usize,
        per_source_max: usize,
        trusted_proxies: Vec<IpNet>,
    ) -> Arc<ConnLimits> {
        let quota =
            Quota::per_second(NonZeroU32::new(HANDSHAKES_PER_SECOND).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(HANDSHAKE_BURST).unwrap_or(NonZeroU32::MIN));
        Arc::new(ConnLimits {
            global: Arc::new(Semaphore::new(max)),
            max,
            per_source_max: per_source_max.max(1),
            per_source: Mutex::new(HashMap::new()),
            handshakes: RateLimiter::keyed(quota),
            handshake_checks: AtomicU64::new(0),
            trusted_proxies,
        })
    }

    fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Takes one handshake token for the client behind `peer` (see the module doc).
    pub fn allow_handshake_from(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        match client_source(peer, headers, &self.trusted_proxies) {
            Some(source) => self.allow_handshake(source),
            None => true,
        }
    }

    /// Takes one token of `ip`'s source's handshake bucket: `false` when it is empty.
    pub fn allow_handshake(&self, ip: IpAddr) -> bool {
        let checks = self.handshake_checks.fetch_add(1, Ordering::Relaxed) + 1;
        if checks.is_multiple_of(HANDSHAKE_SWEEP_EVERY) {
            self.handshakes.retain_recent();
            self.handshakes.shrink_to_fit();
        }
        self.handshakes.check_key(&SourceKey::of(ip)).is_ok()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn per_source_max(&self) -> usize {
        self.per_source_max
    }

    /// Connections holding a permit now.
    pub fn open(&self) -> usize {
        self.max - self.global.available_permits()
    }

    /// Waits for a free place under the global cap (callers wait *before* `accept`, so the
    /// excess waits in the kernel's backlog and costs no descriptor).
    /// `None` only if the semaphore were closed, which nothing does.
    pub async fn reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.global.clone().acquire_owned().await.ok()
    }

    /// Admits a connection from `ip` with its reserved global place, or `None` when its
    /// source already holds `per_source_max` connections.
    pub fn admit(self: &Arc<Self>, global: OwnedSemaphorePermit, ip: IpAddr) -> Option<ConnPermit> {
        if self.is_trusted_proxy(ip) {
            return Some(ConnPermit {
                _global: global,
                key: None,
                limits: self.clone(),
            });
        }
        let key = SourceKey::of(ip);
        let mut table = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        let count = table.entry(key).or_insert(0);
        if *count >= self.per_source_max {
            return None;
        }
        *count += 1;
        Some(ConnPermit {
            _global: global,
            key: Some(key),
            limits: self.clone(),
        })
    }

    /// Connections from `ip`'s source now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let table = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        table.get(&SourceKey::of(ip)).copied().unwrap_or(0)
    }
}

/// One admitted connection: its place under both caps, given back on drop.
pub struct ConnPermit {
    _global: OwnedSemaphorePermit,
    /// `None` for a trusted proxy (not counted per source).
    key: Option<SourceKey>,
    limits: Arc<ConnLimits>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let Some(key) = self.key else {
            return;
        };
        let mut table = self
            .limits
            .per_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = table.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                table.remove(&key);
            }
        }
    }
}

/// The connection a request arrived on, as a request extension: its TCP peer and its permit.
/// An upgrade handler keeps a clone for as long as the upgraded connection lives.
#[derive(Clone)]
pub struct ConnectionSlot {
    pub remote: SocketAddr,
    permit: Arc<ConnPermit>,
}

impl ConnectionSlot {
    pub fn new(remote: SocketAddr, permit: ConnPermit) -> ConnectionSlot {
        ConnectionSlot {
            remote,
            permit: Arc::new(permit),
        }
    }

    /// The limits this connection counts against.
    pub fn limits(&self) -> &Arc<ConnLimits> {
        &self.permit.limits
    }

    /// One token of the handshake bucket of the client behind this connection (see
    /// [`ConnLimits::allow_handshake_from`]).
    pub fn allow_handshake(&self, headers: &HeaderMap) -> bool {
        self.permit
            .limits
            .allow_handshake_from(self.remote.ip(), headers)
    }
}

/// For an upgrade handler (`/ts2021`, `/derp`): the request's [`ConnectionSlot`] (none when
/// the request did not come through the public listener), to keep for as long as the upgraded
/// connection lives, after taking one token of its client's handshake bucket (L8). Called
/// before any key exchange.
pub fn upgrade_slot(request: &Request) -> Result<Option<ConnectionSlot>, HandshakeRefused> {
    let slot = request.extensions().get::<ConnectionSlot>().cloned();
    if slot
        .as_ref()
        .is_some_and(|slot| !slot.allow_handshake(request.headers()))
    {
        return Err(HandshakeRefused);
    }
    Ok(slot)
}

/// The source's handshake bucket is empty: answered `429` with `Retry-After`.
#[derive(Debug)]
pub struct HandshakeRefused;

impl IntoResponse for HandshakeRefused {
    fn into_response(self) -> Response {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            "too many handshakes from this address; retry later\n",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn sources_are_addresses_and_ipv6_slash_64s() {
        assert_eq!(
            SourceKey::of(ip("::ffff:192.0.2.1")),
            SourceKey::of(ip("192.0.2.1"))
        );
        assert_eq!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:3::1"))
        );
        assert_ne!(
            SourceKey::of(ip("192.0.2.1")),
            SourceKey::of(ip("192.0.2.2"))
        );
    }

    #[test]
    fn a_loopback_listener_without_trusted_proxies_is_warned_about() {
        let warning = |addr: &str, trusted: &[&str]| {
            let trusted: Vec<String> = trusted.iter().map(|t| t.to_string()).collect();
            proxy_warning(addr, &parse_trusted_proxies(&trusted), 256)
        };
        assert!(warning("127.0.0.1:8080", &[]).is_some());
        assert!(warning("[::1]:8080", &[]).is_some());
        assert!(warning("127.0.0.1:8080", &["127.0.0.1"]).is_none());
        assert!(warning("0.0.0.0:8080", &[]).is_none());
        assert!(warning("[::]:8080", &[]).is_none());
    }

    #[test]
    fn the_cap_fits_the_fd_limit() {
        assert_eq!(fit_to_fd_limit(10_000, 1024), 1024 - FD_RESERVE);
        assert_eq!(fit_to_fd_limit(10_000, 1 << 20), 10_000);
        assert_eq!(fit_to_fd_limit(10_000, 100), MIN_CONNECTIONS);
        assert_eq!(fit_to_fd_limit(10_000, u64::MAX), 10_000);
    }

    #[test]
    fn handshakes_are_metered_per_source() {
        let limits = ConnLimits::new(10, 10);
        let flood = ip("2001:db8:0:1::7");
        let allowed = (0..HANDSHAKE_BURST + 50)
            .filter(|_| limits.allow_handshake(flood))
            .count() as u32;
        // The burst, plus what refilled while the loop ran (20/s: at most a couple).
        assert!(
            (HANDSHAKE_BURST..HANDSHAKE_BURST + 5).contains(&allowed),
            "{allowed} allowed"
        );
        // The same /64 shares the bucket; another source has its own.
        assert!(!limits.allow_handshake(ip("2001:db8:0:1::8")));
        assert!(limits.allow_handshake(ip("2001:db8:0:2::7")));
        assert!(limits.allow_handshake(ip("192.0.2.1")));
    }

    #[tokio::test]
    async fn a_trusted_proxy_is_not_capped_per_source_and_forwards_the_client() {
        let proxy = ip("10.0.0.1");
        let limits = ConnLimits::behind(10, 1, parse_trusted_proxies(&["10.0.0.0/24".into()]));
        let one = limits
            .admit(limits.reserve().await.unwrap(), proxy)
            .unwrap();
        let two = limits
            .admit(limits.reserve().await.unwrap(), proxy)
            .unwrap();
        assert_eq!(limits.open(), 2);
        assert_eq!(limits.open_from(proxy), 0);
        drop((one, two));
        assert_eq!(limits.open(), 0);
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "198.51.100.7, 10.0.0.2".parse().unwrap());
        assert_eq!(
            client_source(proxy, &headers, &limits.trusted_proxies),
            Some(ip("198.51.100.7"))
        );
        // The forwarded client's bucket empties; the proxy's other clients are not affected.
        let allowed = (0..HANDSHAKE_BURST + 10)
            .filter(|_| limits.allow_handshake_from(proxy, &headers))
            .count() as u32;
        assert!(allowed < HANDSHAKE_BURST + 5);
        let mut other = HeaderMap::new();
        other.insert("x-forwarded-for", "198.51.100.8".parse().unwrap());
        assert!(limits.allow_handshake_from(proxy, &other));
        // A proxy that names no client is trusted to limit its own.
        assert!(limits.allow_handshake_from(proxy, &HeaderMap::new()));
        // An untrusted peer's X-Forwarded-For is ignored.
        assert_eq!(
            client_source(ip("192.0.2.1"), &headers, &limits.trusted_proxies),
            Some(ip("192.0.2.1"))
        );
    }

    #[tokio::test]
    async fn per_source_and_global_caps_hold_and_permits_come_back() {
        let limits = ConnLimits::new(3, 2);
        let a = ip("192.0.2.1");
        let first = limits.admit(limits.reserve().await.unwrap(), a).unwrap();
        let second = limits.admit(limits.reserve().await.unwrap(), a).unwrap();
        // A third from the same source is refused, and its global place is given back.
        assert!(limits.admit(limits.reserve().await.unwrap(), a).is_none());
        assert_eq!(limits.open(), 2);
        let other = limits
            .admit(limits.reserve().await.unwrap(), ip("192.0.2.9"))
            .unwrap();
        assert_eq!(limits.open(), 3);
        // The global cap is reached: nothing more until a permit is dropped.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), limits.reserve());
        assert!(waiting.await.is_err());
        // Slots keep the permit alive while any clone (an upgraded task) lives.
        let slot = ConnectionSlot::new("192.0.2.1:1".parse().unwrap(), first);
        let upgraded = slot.clone();
        drop(slot);
        assert_eq!(limits.open_from(a), 2);
        drop(upgraded);
        assert_eq!(limits.open_from(a), 1);
        drop((second, other));
        assert_eq!(limits.open(), 0);
        assert_eq!(limits.open_from(a), 0);
    }
}
