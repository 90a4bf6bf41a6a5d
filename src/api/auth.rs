//! Bearer API keys on the TCP listener: `hskey-api-<prefix>-<secret>` (or headscale's legacy
//! `<prefix>.<secret>`), looked up by prefix and compared by hash in constant time (with a
//! dummy compare for unknown prefixes); keys imported from headscale are checked by bcrypt.
//! Repeated failures from one source (an IPv4 address, or an IPv6 /64) are answered 429 with
//! `Retry-After` until the source cools down. The secrets are far too long to guess, so this
//! limiter protects the logs and the CPU, not the keys: a *valid* key is always let through,
//! even from a locked-out source, so a neighbour behind the same NAT or proxy cannot lock an
//! admin out (L3). When each key was last used is
//! volatile (kept here, not in the log): recording every API call as an event would bury
//! the audit trail in reads.

use super::{error, ApiContext};
use crate::core::ids::ApiKeyId;
use crate::core::{Actor, State, Timestamp};
use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed attempts a source may make within `FAILURE_WINDOW` before it is made to wait.
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a source that went over the limit is refused.
pub const LOCKOUT: Duration = Duration::from_secs(60);
/// Sources tracked at once (memory stays bounded whatever a scanner does). When the table is
/// full, stale entries are dropped first, then the oldest one still counting; a live lockout
/// is never dropped. A table full of live lockouts tracks no newcomer until the first of them
/// ends: the newcomer's failures are answered 401 but not counted (they cost a hash compare
/// each, and a valid key from anywhere still gets through).
const MAX_SOURCES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
}

/// Failed attempts per source and last use per key; shared by every request.
#[derive(Clone, Default)]
pub struct AuthGuard {
    inner: Arc<Mutex<Inner>>,
    /// Peers whose `X-Forwarded-For` names the real source.
    trusted_proxies: Arc<Vec<IpNet>>,
}

#[derive(Default)]
struct Inner {
    /// Keyed by [`bucket`].
    failures: HashMap<IpAddr, Failures>,
    /// Set when the table was found full of live lockouts: until then, newcomers are not
    /// tracked (no point scanning the table again before the first lockout ends).
    full_until: Option<Instant>,
    last_seen: HashMap<ApiKeyId, Timestamp>,
}

/// The address a source's failures are counted under: an IPv4 address (IPv4-mapped IPv6
/// included) as is, an IPv6 address by its /64 (one subscriber's usual allocation, so a host
/// cannot escape its count by rotating through its 2^64 addresses).
fn bucket(source: IpAddr) -> IpAddr {
    match source.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !(u128::from(u64::MAX))).into()),
        v4 => v4,
    }
}

impl AuthGuard {
    pub fn new(trusted_proxies: &[String]) -> AuthGuard {
        AuthGuard {
            inner: Arc::default(),
            trusted_proxies: Arc::new(crate::conn_limits::parse_trusted_proxies(trusted_proxies)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When `key` was last used to authenticate since the server started.
    pub fn last_seen(&self, key: ApiKeyId) -> Option<Timestamp> {
        self.lock().last_seen.get(&key).copied()
    }

    /// How long `source` must still wait, if it is locked out.
    fn locked_for(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        let inner = self.lock();
        let until = inner.failures.get(&bucket(source))?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a failure; the lockout left if this one crossed the limit (or the source is
    /// still locked out).
    fn fail(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        let source = bucket(source);
        let mut inner = self.lock();
        if inner.failures.len() >= MAX_SOURCES && !inner.failures.contains_key(&source) {
            if inner.full_until.is_some_and(|until| until > now) {
                return None;
            }
            let live = |f: &Failures| f.locked_until.is_some_and(|u| u > now);
            inner
                .failures
                .retain(|_, f| now.duration_since(f.window_start) < FAILURE_WINDOW || live(f));
            if inner.failures.len() >= MAX_SOURCES {
                // Still full: forget the oldest window that is only counting, never a lockout.
                let oldest = inner
                    .failures
                    .iter()
                    .filter(|(_, f)| !live(f))
                    .min_by_key(|(_, f)| f.window_start)
                    .map(|(ip, _)| *ip);
                match oldest {
                    Some(oldest) => {
                        inner.failures.remove(&oldest);
                    }
                    None => {
                        // Full of live lockouts: do not track the newcomer.
                        inner.full_until =
                            inner.failures.values().filter_map(|f| f.locked_until).min();
                        return None;
                    }
                }
            }
        }
        if let Some(until) = inner
            .failures
            .get(&source)
            .and_then(|f| f.locked_until)
            .filter(|until| *until > now)
        {
            // Already locked out: the lockout runs its course, not extended by more failures.
            return Some(until - now);
        }
        let entry = inner.failures.entry(source).or_insert(Failures {
            count: 0,
            window_start: now,
            locked_until: None,
        });
        if now.duration_since(entry.window_start) >= FAILURE_WINDOW {
            *entry = Failures {
                count: 0,
                window_start: now,
                locked_until: None,
            };
        }
        entry.count += 1;
        if entry.count > MAX_FAILURES {
            entry.locked_until = Some(now + LOCKOUT);
            return Some(LOCKOUT);
        }
        None
    }

    fn succeed(&self, key: ApiKeyId, at: Timestamp) {
        self.lock().last_seen.insert(key, at);
    }

    /// The request's source: the peer, or — when the peer is a trusted proxy — the nearest
    /// untrusted address in `X-Forwarded-For` (the peer when the proxy names none).
    fn source(&self, request: &Request) -> IpAddr {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        crate::conn_limits::client_source(peer, request.headers(), &self.trusted_proxies)
            .unwrap_or(peer)
    }
}

/// The message of a lockout, REST and gRPC alike.
pub fn too_many_message(seconds: u64) -> String {
    format!("too many failed API key attempts from this address; retry in {seconds} s")
}

fn too_many(wait: Duration) -> Response {
    let seconds = wait_seconds(wait);
    let mut response =
        error::status_body(StatusCode::TOO_MANY_REQUESTS, 8, &too_many_message(seconds));
    if let Ok(value) = seconds.to_string().parse() {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

/// Why a request's API key was refused.
#[derive(Debug)]
pub enum KeyRefusal {
    /// No `authorization` header.
    Missing,
    /// An `authorization` header without the `Bearer ` prefix.
    NotBearer,
    /// Unknown, expired or malformed.
    Invalid,
    /// Too many failures from this source: wait this long.
    TooMany(Duration),
    /// The state could not be read.
    Unavailable(super::ApiError),
}

/// Checks the `authorization: Bearer <key>` of `request` (REST and gRPC alike): the key's id
/// when it is valid now (its last use is recorded), else why not, with the failure counted
/// against the request's source.
pub fn verify_bearer<'a>(
    ctx: &'a ApiContext,
    request: &Request,
) -> impl std::future::Future<Output = Result<ApiKeyId, KeyRefusal>> + Send + 'a {
    // Everything needed from the request is taken before the future: a request body is not
    // `Sync`, so a future holding `&Request` would not be `Send`.
    let header: Option<String> = request
        .headers()
        .get(AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or("").to_string());
    let source = ctx.auth.source(request);
    async move { verify_token(ctx, header.as_deref(), source).await }
}

async fn verify_token(
    ctx: &ApiContext,
    header: Option<&str>,
    source: IpAddr,
) -> Result<ApiKeyId, KeyRefusal> {
    let guard = &ctx.auth;
    let state = ctx.state_at(None).map_err(KeyRefusal::Unavailable)?;
    let at = ctx.now();
    let token = header.and_then(|h| h.strip_prefix("Bearer "));
    let key = match token {
        Some(token) => authenticate_api_key(&state, token, at).await,
        None => None,
    };
    let Some(id) = key else {
        // Only a failure consults the limiter: a valid key is let through even from a source
        // that is locked out (the limiter guards the logs and the CPU, not the secrets).
        let now = Instant::now();
        let was_locked = guard.locked_for(source, now).is_some();
        if let Some(wait) = guard.fail(source, now) {
            if !was_locked {
                tracing::warn!(%source, "API key failures over the limit; refusing this source for a while");
            }
            return Err(KeyRefusal::TooMany(wait));
        }
        return Err(match (header, token) {
            (None, _) => KeyRefusal::Missing,
            (Some(_), None) => KeyRefusal::NotBearer,
            (Some(_), Some(_)) => KeyRefusal::Invalid,
        });
    };
    guard.succeed(id, at);
    Ok(id)
}

/// Whole seconds to wait, rounded up (for `Retry-After` and messages).
pub fn wait_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The middleware on the TCP listener's `/api/*`.
pub async fn require_api_key(
    AxumState(ctx): AxumState<ApiContext>,
    mut request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    match verify_bearer(&ctx, &request).await {
        Ok(id) => {
            request.extensions_mut().insert(Actor::ApiKey(id));
            next.run(request).await
        }
        Err(KeyRefusal::Unavailable(error)) => error.into_response(),
        Err(KeyRefusal::TooMany(wait)) => too_many(wait),
        Err(KeyRefusal::Missing | KeyRefusal::NotBearer | KeyRefusal::Invalid) => {
            error::unauthorized()
        }
    }
}

/// Checks an API key against the state; the key's id when it is valid now. Our keys and
/// headscale's (`hskey-api-…` with a mixed-case prefix, or legacy `<prefix>.<secret>`, bcrypt
/// hashed) are accepted; a bcrypt check runs off the runtime workers (`secrets::Verifier`).
pub async fn authenticate_api_key(state: &State, token: &str, now: Timestamp) -> Option<ApiKeyId> {
    let (prefix, secret) = crate::secrets::split_api_key(token)?;
    let key = state.api_key_by_prefix(prefix);
    let hash = key.map(|k| state.api_key_hash(k));
    let key_ref = crate::secrets::KeyRef::Api(key.map_or(0, |k| k.id.0));
    let matches = crate::secrets::verifier()
        .matches(key_ref, secret, hash.as_ref())
        .await;
    key.filter(|k| matches && k.expiration > now).map(|k| k.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state holding one imported (bcrypt) API key.
    fn with_imported_key(prefix: &str, secret: &str, expiration: Option<Timestamp>) -> State {
        use crate::core::event::{Envelope, Event, ImportedApiKey, SecretHash};
        let mut state = State::default();
        state.apply(&Envelope {
            seq: 1,
            at: Timestamp(1),
            actor: Actor::System,
            event: Event::ApiKeyImported(Box::new(ImportedApiKey {
                id: ApiKeyId(3),
                prefix: prefix.into(),
                hash: SecretHash::Bcrypt(bcrypt::hash(secret, 4).unwrap()),
                created_at: Timestamp(1),
                expiration,
            })),
        });
        state
    }

    #[tokio::test]
    async fn headscale_api_keys_authenticate_in_both_forms() {
        let now = Timestamp(1_000);
        let secret = "x".repeat(64);
        // Current form: a mixed-case prefix with a dash inside, cut at 12 characters.
        let state = with_imported_key("Ab-dEF_h1k2z", &secret, None);
        let key = format!("hskey-api-Ab-dEF_h1k2z-{secret}");
        assert_eq!(
            authenticate_api_key(&state, &key, now).await,
            Some(ApiKeyId(3))
        );
        let lower = format!("hskey-api-ab-def_h1k2z-{secret}");
        assert_eq!(authenticate_api_key(&state, &lower, now).await, None);
        let wrong = format!("hskey-api-Ab-dEF_h1k2z-{}", "y".repeat(64));
        assert_eq!(authenticate_api_key(&state, &wrong, now).await, None);
        // Legacy form `<7>.<secret>`; a NULL expiration never expires.
        let state = with_imported_key("abcdefg", "legacysecret", None);
        let far = Timestamp(4_000_000_000_000);
        assert_eq!(
            authenticate_api_key(&state, "abcdefg.legacysecret", far).await,
            Some(ApiKeyId(3))
        );
        // An expired one is refused.
        let state = with_imported_key("abcdefg", "legacysecret", Some(Timestamp(10)));
        assert_eq!(
            authenticate_api_key(&state, "abcdefg.legacysecret", now).await,
            None
        );
    }

    #[test]
    fn a_source_is_locked_out_after_the_limit_and_cools_down() {
        let guard = AuthGuard::new(&[]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert_eq!(guard.fail(ip, t0), None);
        }
        assert_eq!(guard.fail(ip, t0), Some(LOCKOUT));
        assert!(guard.locked_for(ip, t0 + Duration::from_secs(1)).is_some());
        assert_eq!(guard.locked_for(other, t0), None);
        assert_eq!(guard.locked_for(ip, t0 + LOCKOUT), None);
        // A new window starts clean.
        assert_eq!(guard.fail(ip, t0 + LOCKOUT + FAILURE_WINDOW), None);
    }

    #[test]
    fn failures_spread_over_windows_never_lock() {
        let guard = AuthGuard::new(&[]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..100u64 {
            let at = t0 + FAILURE_WINDOW.mul_f64(i as f64 / 5.0);
            assert_eq!(guard.fail(ip, at), None, "attempt {i}");
        }
    }

    #[test]
    fn tracked_sources_stay_bounded() {
        let guard = AuthGuard::new(&[]);
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 50) {
            guard.fail(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(guard.lock().failures.len() <= MAX_SOURCES);
    }

    #[test]
    fn ipv6_sources_count_per_64_and_mapped_ipv4_as_ipv4() {
        let guard = AuthGuard::new(&[]);
        let t0 = Instant::now();
        let in_64 = |host: u32| {
            IpAddr::from(
                format!("2001:db8:1:2::{host:x}")
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap(),
            )
        };
        for host in 1..=MAX_FAILURES {
            assert_eq!(guard.fail(in_64(host), t0), None, "host {host}");
        }
        // The eleventh failure from yet another address of the same /64 locks the /64.
        assert_eq!(guard.fail(in_64(0xffff), t0), Some(LOCKOUT));
        assert!(guard.locked_for(in_64(0xabcd), t0).is_some());
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(guard.locked_for(next_64, t0), None);
        // An IPv4-mapped IPv6 peer is the IPv4 address it maps.
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            guard.fail(mapped, t0);
        }
        assert_eq!(guard.fail(v4, t0), Some(LOCKOUT));
    }

    #[test]
    fn live_lockouts_are_never_evicted_and_a_full_table_ignores_newcomers() {
        let guard = AuthGuard::new(&[]);
        let t0 = Instant::now();
        let ip = |i: u32| IpAddr::from(i.to_be_bytes());
        for i in 0..MAX_SOURCES as u32 {
            for _ in 0..=MAX_FAILURES {
                guard.fail(ip(i), t0);
            }
        }
        assert!(guard.locked_for(ip(0), t0).is_some());
        // A newcomer over the limit is not tracked, and evicts nobody.
        let newcomer = ip(u32::MAX);
        for attempt in 0..3 * MAX_FAILURES {
            assert_eq!(guard.fail(newcomer, t0), None, "attempt {attempt}");
        }
        assert_eq!(guard.locked_for(newcomer, t0), None);
        assert_eq!(guard.lock().failures.len(), MAX_SOURCES);
        for i in 0..MAX_SOURCES as u32 {
            assert!(
                guard.locked_for(ip(i), t0).is_some(),
                "source {i} lost its lockout"
            );
        }
        // Once the lockouts have run out, the newcomer is counted again.
        let later = t0 + LOCKOUT;
        for _ in 0..MAX_FAILURES {
            assert_eq!(guard.fail(newcomer, later), None);
        }
        assert_eq!(guard.fail(newcomer, later), Some(LOCKOUT));
    }

    #[test]
    fn a_full_table_evicts_a_counting_entry_before_a_lockout() {
        let guard = AuthGuard::new(&[]);
        let t0 = Instant::now();
        let ip = |i: u32| IpAddr::from(i.to_be_bytes());
        // The oldest entry is a lockout; all others only count.
        for _ in 0..=MAX_FAILURES {
            guard.fail(ip(0), t0);
        }
        let t1 = t0 + Duration::from_secs(1);
        for i in 1..MAX_SOURCES as u32 {
            guard.fail(ip(i), t1);
        }
        guard.fail(ip(u32::MAX), t1);
        assert_eq!(guard.lock().failures.len(), MAX_SOURCES);
        assert!(guard.locked_for(ip(0), t1).is_some());
        assert!(guard.lock().failures.contains_key(&ip(u32::MAX)));
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let guard = AuthGuard::new(&["10.0.0.0/8".into()]);
        let request = |peer: &str, xff: &str| {
            let mut r = Request::builder()
                .uri("/api/v1/user")
                .header("x-forwarded-for", xff)
                .body(axum::body::Body::empty())
                .unwrap();
            r.extensions_mut()
                .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
            r
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Direct peer: the header is the client's own claim, ignored.
        assert_eq!(
            guard.source(&request("192.0.2.9:1", "198.51.100.1")),
            ip("192.0.2.9")
        );
        // Behind the proxy: the nearest untrusted hop.
        assert_eq!(
            guard.source(&request(
                "10.1.1.1:1",
                "203.0.113.5, 198.51.100.1, 10.2.2.2"
            )),
            ip("198.51.100.1")
        );
    }
}
