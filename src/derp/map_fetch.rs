//! `derp.urls`: DERP maps fetched over HTTP(S) and kept current, the I/O half of the DERP map
//! (merging and parsing are pure, in `map.rs`).
//!
//! At start every URL is fetched once (concurrently, each bounded by [`FETCH_TIMEOUT`]); the
//! last good map of each URL is kept in the data directory ([`CACHE_FILE_NAME`], written
//! atomically), so a URL that does not answer — at start or later — keeps serving the map it
//! last gave, across restarts too. A URL that never answered contributes nothing until it
//! does, and a failure never stops `serve`. With `derp.auto_update_enabled`, the URLs are
//! fetched and the `derp.paths` files re-read every `derp.update_frequency` (as headscale
//! does); a failed URL is retried sooner, with a back-off, whether or not auto-update is on.
//! A map that differs from the one in force goes to the map hub, which sends it to every
//! connected client in its next batch: a netmap change, not an event (like the DNS records of
//! `extra_records_path`, the DERP map is not in the log).

use crate::config::Config;
use crate::control::hub::MapHub;
use crate::derp::map::{self, DerpMapError, FetchedCache};
use crate::error_chain::error_chain;
use crate::tailcfg::derp::DerpMap;
use crate::tailcfg::SharedJson;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// TCP connect (and, inside it, nothing else) to a DERP map server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One whole fetch: connect, TLS, request, every redirect and the body (headscale's
/// `HTTPTimeout` is also 30 s).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// A DERP map body larger than this is refused (Tailscale's default map is about 30 KiB).
pub const MAX_FETCHED_MAP_BYTES: usize = 4 * 1024 * 1024;
/// Redirects followed per fetch (Go's client, which headscale uses, follows them too).
pub const MAX_REDIRECTS: usize = 3;
/// The last good map of every URL, in the data directory.
pub const CACHE_FILE_NAME: &str = "derpmap-cache.json";
/// First retry of a failed fetch; doubled per failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(600);

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The DERP map in force and what it is built from.
pub struct DerpMaps {
    config: Config,
    /// `Err`: TLS could not be set up (every fetch then fails with this).
    client: Result<HttpsClient, String>,
    cache_path: PathBuf,
    /// The last good map of each `derp.urls` entry (config order); `None`: never answered.
    fetched: Vec<Option<DerpMap>>,
    /// URLs whose latest fetch failed (indexes into `fetched`).
    failing: Vec<usize>,
    /// The `derp.paths` files as last read successfully.
    files: Vec<DerpMap>,
    current: DerpMap,
}

impl DerpMaps {
    /// Reads the `derp.paths` files (a bad one stops the start, as in headscale) and the
    /// cache, fetches every URL once, and builds the first map. Fetch failures are logged
    /// and leave the cached map of that URL in force.
    pub async fn start(config: &Config, data_dir: &Path) -> Result<DerpMaps, DerpMapError> {
        let files = map::load_files(config)?;
        let cache_path = data_dir.join(CACHE_FILE_NAME);
        let cached = if config.derp.urls.is_empty() {
            FetchedCache::default()
        } else {
            read_cache(&cache_path)
        };
        let fetched = config
            .derp
            .urls
            .iter()
            .map(|url| cached.maps.get(url).cloned())
            .collect();
        let mut maps = DerpMaps {
            config: config.clone(),
            client: https_client(),
            cache_path,
            fetched,
            failing: Vec::new(),
            files,
            current: DerpMap::default(),
        };
        if !config.derp.urls.is_empty() {
            let all: Vec<usize> = (0..config.derp.urls.len()).collect();
            maps.fetch(&all).await;
        }
        maps.current = maps.build()?;
        Ok(maps)
    }

    /// The map to hand to clients now.
    pub fn current(&self) -> &DerpMap {
        &self.current
    }

    /// Whether anything is left to do after start: periodic refreshes, or a URL to retry.
    pub fn needs_refresh(&self) -> bool {
        let sources = !self.config.derp.urls.is_empty() || !self.config.derp.paths.is_empty();
        (self.config.derp.auto_update_enabled && sources) || !self.failing.is_empty()
    }

    /// Refreshes until `stop` resolves (or nothing is left to refresh), pushing each changed
    /// map to `hub`.
    pub async fn run(mut self, hub: MapHub, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut failures: u32 = u32::from(!self.failing.is_empty());
        while let Some(delay) = self.next_delay(failures) {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let ok = self.refresh(&hub).await;
            failures = if ok { 0 } else { failures.saturating_add(1) };
        }
    }

    /// When to refresh next: `update_frequency` with auto-update, sooner after a failure
    /// (back-off), never when auto-update is off and every URL has answered.
    fn next_delay(&self, failures: u32) -> Option<Duration> {
        let periodic = self
            .config
            .derp
            .auto_update_enabled
            .then_some(self.config.derp.update_frequency);
        let retry = (failures > 0).then(|| {
            let doublings = (failures - 1).min(16);
            RETRY_FIRST.saturating_mul(1 << doublings).min(RETRY_MAX)
        });
        match (periodic, retry) {
            (Some(p), Some(r)) => Some(p.min(r)),
            (p, r) => p.or(r),
        }
    }

    /// One refresh: re-read the files and fetch the URLs (with auto-update), or only retry
    /// the failing URLs. Pushes a changed map; false if anything failed.
    async fn refresh(&mut self, hub: &MapHub) -> bool {
        let mut ok = true;
        let targets: Vec<usize> = if self.config.derp.auto_update_enabled {
            let config = self.config.clone();
            match tokio::task::spawn_blocking(move || map::load_files(&config)).await {
                Ok(Ok(files)) => self.files = files,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "DERP map file not re-read; the files as last read stay in force");
                    ok = false;
                }
                Err(error) => {
                    tracing::warn!(%error, "DERP map files not re-read");
                    ok = false;
                }
            }
            (0..self.config.derp.urls.len()).collect()
        } else {
            self.failing.clone()
        };
        if !targets.is_empty() {
            self.fetch(&targets).await;
            ok &= self.failing.is_empty();
        }
        match self.build() {
            Ok(map) if map != self.current => match SharedJson::new(&map) {
                Ok(json) => {
                    tracing::info!(
                        regions = map.regions.len(),
                        "DERP map changed; sending it to connected clients"
                    );
                    hub.set_derp_map(json).await;
                    self.current = map;
                }
                Err(error) => {
                    tracing::error!(%error, "DERP map not serialisable; the old one stays")
                }
            },
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "DERP map not rebuilt; the old one stays");
                ok = false;
            }
        }
        ok
    }

    /// Fetches the URLs at `indexes` concurrently; keeps each success, logs each failure,
    /// and rewrites the cache when a map changed.
    async fn fetch(&mut self, indexes: &[usize]) {
        let urls = &self.config.derp.urls;
        let client = &self.client;
        let results = futures_util::future::join_all(indexes.iter().map(|&i| async move {
            let result = match client {
                Ok(client) => fetch_map(client, &urls[i]).await,
                Err(error) => Err(error.clone()),
            };
            (i, result)
        }))
        .await;
        let mut changed = false;
        self.failing.retain(|i| !indexes.contains(i));
        for (i, result) in results {
            let url = &urls[i];
            match result {
                Ok(map) => {
                    if self.fetched[i].as_ref() != Some(&map) {
                        tracing::info!(%url, regions = map.regions.len(), "fetched DERP map");
                        self.fetched[i] = Some(map);
                        changed = true;
                    }
                }
                Err(error) => {
                    self.failing.push(i);
                    if self.fetched[i].is_some() {
                        tracing::warn!(%url, %error, "DERP map fetch failed; its last good map stays in force");
                    } else {
                        tracing::warn!(%url, %error, "DERP map fetch failed and no earlier map of it is kept: its regions are missing until a fetch succeeds");
                    }
                }
            }
        }
        self.failing.sort_unstable();
        if changed {
            self.write_cache().await;
        }
    }

    /// The merged map from what is in hand.
    fn build(&self) -> Result<DerpMap, DerpMapError> {
        let fetched: Vec<DerpMap> = self.fetched.iter().flatten().cloned().collect();
        map::merge(&self.config, &fetched, &self.files)
    }

    async fn write_cache(&self) {
        let mut cache = FetchedCache::default();
        for (url, map) in self.config.derp.urls.iter().zip(&self.fetched) {
            if let Some(map) = map {
                cache.maps.insert(url.clone(), map.clone());
            }
        }
        let path = self.cache_path.clone();
        let text = cache.to_json();
        let written =
            tokio::task::spawn_blocking(move || write_replacing(&path, text.as_bytes())).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(
                path = %self.cache_path.display(),
                %error,
                "cannot write the DERP map cache; a restart while the URLs fail starts without their maps"
            ),
            Err(error) => tracing::warn!(%error, "cannot write the DERP map cache"),
        }
    }
}

/// The cache, or an empty one when it is missing or unusable (said once in the log).
fn read_cache(path: &Path) -> FetchedCache {
    let text = match std::fs::metadata(path) {
        Ok(meta) if meta.len() > map::MAX_CACHE_BYTES as u64 => {
            tracing::warn!(path = %path.display(), "DERP map cache too large; ignored");
            return FetchedCache::default();
        }
        Ok(_) => std::fs::read_to_string(path),
        Err(e) => Err(e),
    };
    match text {
        Ok(text) => FetchedCache::parse(&text).unwrap_or_else(|problem| {
            tracing::warn!(path = %path.display(), %problem, "DERP map cache unreadable; ignored");
            FetchedCache::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FetchedCache::default(),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "DERP map cache unreadable; ignored");
            FetchedCache::default()
        }
    }
}

/// Replaces `path` with `contents` so that it is whole or the old file: a temporary file
/// beside it, fsynced, renamed over it, then the directory fsynced.
fn write_replacing(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    // The first fetch may come before anything else created the data directory.
    std::fs::create_dir_all(&dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = dir.join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()));
    let written = std::fs::File::create(&temporary)
        .and_then(|mut file| file.write_all(contents).and_then(|_| file.sync_all()))
        .and_then(|_| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    std::fs::File::open(&dir)?.sync_all()
}

/// HTTPS (and plain HTTP) with the system's roots, which honour `SSL_CERT_FILE` and
/// `SSL_CERT_DIR`; HTTP/1.1.
fn https_client() -> Result<HttpsClient, String> {
    let roots = crate::outbound_tls::system_roots();
    if roots.is_empty() {
        tracing::warn!(
            "no trusted root certificates found (set SSL_CERT_FILE): https derp.urls will fail"
        );
    }
    let tls = crate::outbound_tls::client_config(roots)?;
    let connector = crate::outbound_tls::https_or_http_connector(tls, CONNECT_TIMEOUT);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// GETs one DERP map (following up to [`MAX_REDIRECTS`] redirects, never from https to
/// http), within [`FETCH_TIMEOUT`] and [`MAX_FETCHED_MAP_BYTES`]. A map without regions is
/// an error: it would silently take every relay of that source away.
async fn fetch_map(client: &HttpsClient, url: &str) -> Result<DerpMap, String> {
    fetch_map_within(client, url, FETCH_TIMEOUT).await
}

/// [`fetch_map`] with the whole-fetch deadline given (tests use a short one).
async fn fetch_map_within(
    client: &HttpsClient,
    url: &str,
    deadline: Duration,
) -> Result<DerpMap, String> {
    let work = async {
        let mut uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
        let mut redirects = 0;
        let response = loop {
            let request = Request::get(uri.clone())
                .header(
                    hyper::header::USER_AGENT,
                    concat!("headscale-rs/", env!("CARGO_PKG_VERSION")),
                )
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let response = client.request(request).await.map_err(|e| error_chain(&e))?;
            let status = response.status();
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                break response;
            }
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(format!("more than {MAX_REDIRECTS} redirects"));
            }
            let next = redirect_target(&uri, response.headers())?;
            if uri.scheme_str() == Some("https") && next.scheme_str() != Some("https") {
                return Err(format!("refused a redirect from https to {next}"));
            }
            uri = next;
        };
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered HTTP {status}"));
        }
        let body = Limited::new(response.into_body(), MAX_FETCHED_MAP_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("answer larger than {MAX_FETCHED_MAP_BYTES} bytes")
                } else {
                    format!("reading the answer: {e}")
                }
            })?
            .to_bytes();
        let parsed = tokio::task::spawn_blocking(move || {
            let text = std::str::from_utf8(&body).map_err(|_| "answer is not UTF-8".to_string())?;
            map::parse_map(text).map_err(|e| format!("not a DERP map: {e}"))
        })
        .await
        .map_err(|e| e.to_string())??;
        if parsed.regions.is_empty() {
            return Err("the DERP map has no regions".into());
        }
        Ok(parsed)
    };
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| format!("no complete answer within {}s", deadline.as_secs_f32()))?
}

/// The absolute URI a redirect's `Location` names (relative ones resolved against `base`).
fn redirect_target(base: &Uri, headers: &hyper::HeaderMap) -> Result<Uri, String> {
    let location = headers
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("redirect without a Location")?;
    if location.starts_with("http://") || location.starts_with("https://") {
        return location
            .parse()
            .map_err(|e| format!("redirect to an invalid URL: {e}"));
    }
    if !location.starts_with('/') {
        return Err(format!("unsupported redirect target {location:?}"));
    }
    let authority = base.authority().ok_or("no host")?;
    format!(
        "{}://{}{}",
        base.scheme_str().unwrap_or("https"),
        authority,
        location
    )
    .parse()
    .map_err(|e| format!("redirect to an invalid URL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(auto_update: bool, failing: Vec<usize>) -> DerpMaps {
        let mut config = Config::default();
        config.derp.urls = vec!["https://a.example/map".into()];
        config.derp.auto_update_enabled = auto_update;
        config.derp.update_frequency = Duration::from_secs(60);
        DerpMaps {
            config,
            client: https_client(),
            cache_path: PathBuf::from("/nonexistent/cache.json"),
            fetched: vec![None],
            failing,
            files: Vec::new(),
            current: DerpMap::default(),
        }
    }

    #[test]
    fn refresh_schedule() {
        let periodic = maps(true, vec![]);
        assert_eq!(periodic.next_delay(0), Some(Duration::from_secs(60)));
        // A failure retries sooner, never later than the period.
        assert_eq!(periodic.next_delay(1), Some(RETRY_FIRST));
        assert_eq!(periodic.next_delay(2), Some(RETRY_FIRST * 2));
        assert_eq!(periodic.next_delay(9), Some(Duration::from_secs(60)));
        // Without auto-update only failures are retried, up to RETRY_MAX.
        let once = maps(false, vec![0]);
        assert!(once.needs_refresh());
        assert_eq!(once.next_delay(0), None);
        assert_eq!(once.next_delay(3), Some(RETRY_FIRST * 4));
        assert_eq!(once.next_delay(40), Some(RETRY_MAX));
        assert!(!maps(false, vec![]).needs_refresh());
    }

    #[test]
    fn redirects_resolve_and_need_a_location() {
        let base: Uri = "https://a.example/derpmap/default".parse().unwrap();
        let mut headers = hyper::HeaderMap::new();
        assert!(redirect_target(&base, &headers).is_err());
        headers.insert(hyper::header::LOCATION, "/v2/map".parse().unwrap());
        assert_eq!(
            redirect_target(&base, &headers).unwrap().to_string(),
            "https://a.example/v2/map"
        );
        headers.insert(
            hyper::header::LOCATION,
            "http://b.example/map".parse().unwrap(),
        );
        assert_eq!(
            redirect_target(&base, &headers).unwrap().to_string(),
            "http://b.example/map"
        );
    }

    #[test]
    fn the_cache_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CACHE_FILE_NAME);
        write_replacing(&path, b"{\"maps\":{}}").unwrap();
        write_replacing(&path, b"{\"maps\":{\"u\":{\"Regions\":{}}}}").unwrap();
        let cache = read_cache(&path);
        assert!(cache.maps.contains_key("u"));
        // Only the file itself is left (no temporary files).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(read_cache(&path), FetchedCache::default());
    }

    /// A plain-HTTP server on loopback answering every connection with `answer` (then
    /// keeping the connection open, so a short answer stalls the client); returns its URL.
    async fn serve_once(answer: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = tcp.read(&mut request).await;
                    let _ = tcp.write_all(&answer).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        format!("http://127.0.0.1:{port}/map")
    }

    fn answer(status: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    async fn fetch(answer: Vec<u8>) -> Result<DerpMap, String> {
        let url = serve_once(answer).await;
        fetch_map_within(&https_client().unwrap(), &url, Duration::from_secs(2)).await
    }

    #[tokio::test]
    async fn fetches_are_bounded_and_checked() {
        let good =
            br#"{"Regions":{"5":{"RegionID":5,"Nodes":[{"Name":"5a","HostName":"d.example"}]}}}"#;
        let map = fetch(answer("200 OK", good)).await.unwrap();
        assert_eq!(map.regions[&5].nodes[0].host_name, "d.example");

        let error = fetch(answer("503 Service Unavailable", b"down"))
            .await
            .unwrap_err();
        assert!(error.contains("503"), "{error}");
        let error = fetch(answer("200 OK", b"<html>")).await.unwrap_err();
        assert!(error.contains("not a DERP map"), "{error}");
        let error = fetch(answer("200 OK", br#"{"Regions":{}}"#))
            .await
            .unwrap_err();
        assert!(error.contains("no regions"), "{error}");
        let huge = vec![b' '; MAX_FETCHED_MAP_BYTES + 1];
        let error = fetch(answer("200 OK", &huge)).await.unwrap_err();
        assert!(error.contains("larger than"), "{error}");
        // Headers promising more than ever comes: the whole-fetch deadline ends it.
        let mut stalled = answer("200 OK", b"{");
        stalled.truncate(stalled.len() - 1);
        let stalled = String::from_utf8(stalled)
            .unwrap()
            .replace("content-length: 1", "content-length: 100")
            .into_bytes();
        let error = fetch(stalled).await.unwrap_err();
        assert!(error.contains("no complete answer within"), "{error}");
        // Nobody listening.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{closed}/map");
        assert!(fetch_map(&https_client().unwrap(), &url).await.is_err());
    }
}
