//! The DERP map handed to clients, built the way headscale 0.29 builds it: the maps of
//! `derp.urls` (fetched by `map_fetch.rs`; this module never does I/O on them), then the
//! `derp.paths` files (YAML or JSON in headscale's format, field names matched
//! case-insensitively), merged by region id with the later source winning; the nodes of each
//! region shuffled in an order fixed by `dns.base_domain` (so one tailnet's clients spread
//! over a region's relays the same way every time); and last the embedded relay's own
//! region from `server_url` and `derp.server.*`, which wins over any region with its id.
//! Merging, parsing and the on-disk cache of fetched maps are pure and unit-tested here.

use crate::config::Config;
use crate::tailcfg::derp::{DerpMap, DerpNode, DerpRegion};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sha2::Digest;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

/// A DERP map file larger than this is refused.
const MAX_MAP_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The cache of fetched maps is refused (and the URLs fetched afresh) above this size: one
/// fetched map is at most `map_fetch::MAX_FETCHED_MAP_BYTES` (4 MiB) and a config names few.
pub const MAX_CACHE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DerpMapError {
    #[error("DERP map file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("DERP map file {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("server_url {0:?} has no usable host and port for the embedded DERP region")]
    ServerUrl(String),
    #[error("derp.server.stun_listen_addr {0:?} has no port")]
    StunAddr(String),
}

/// The map clients get from the `derp.paths` files and the embedded region alone (no
/// fetched maps).
pub fn derp_map(config: &Config) -> Result<DerpMap, DerpMapError> {
    merge(config, &[], &load_files(config)?)
}

/// Reads every `derp.paths` file, in order.
pub fn load_files(config: &Config) -> Result<Vec<DerpMap>, DerpMapError> {
    config
        .derp
        .paths
        .iter()
        .map(|path| load_file(path))
        .collect()
}

/// headscale's merge: `fetched` (the `derp.urls` maps, in config order) then `files`, a
/// region of a later map replacing one with the same id; then each region's nodes shuffled
/// by the tailnet's seed; then the embedded region on top. `omitDefaultRegions` is kept if
/// any source sets it and `HomeParams` from the last source that has them (headscale drops
/// both; clients ignore the first and use the second for home selection).
pub fn merge(
    config: &Config,
    fetched: &[DerpMap],
    files: &[DerpMap],
) -> Result<DerpMap, DerpMapError> {
    let mut map = DerpMap::default();
    for source in fetched.iter().chain(files) {
        map.omit_default_regions |= source.omit_default_regions;
        if source.home_params.is_some() {
            map.home_params = source.home_params.clone();
        }
        map.regions
            .extend(source.regions.iter().map(|(id, r)| (*id, r.clone())));
    }
    shuffle_nodes(&mut map, &config.dns.base_domain);
    let server = &config.derp.server;
    if server.enabled && server.automatically_add_embedded_derp_region {
        let region = embedded_region(config)?;
        map.regions.insert(region.region_id, region);
    }
    Ok(map)
}

/// Reorders each region's nodes with a generator seeded by `seed` (the base domain), as
/// headscale does: deterministic for one tailnet, different between tailnets.
fn shuffle_nodes(map: &mut DerpMap, seed: &str) {
    let digest = sha2::Sha256::digest(seed.as_bytes());
    let mut seed_bytes = [0u8; 32];
    seed_bytes.copy_from_slice(&digest);
    let mut rng = rand::rngs::StdRng::from_seed(seed_bytes);
    // BTreeMap: regions in id order, so the same input always gives the same output.
    for region in map.regions.values_mut() {
        region.nodes.shuffle(&mut rng);
    }
}

/// What `map_fetch` keeps on disk between runs: the last map each URL answered with.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FetchedCache {
    /// URL → its last good map.
    pub maps: BTreeMap<String, DerpMap>,
}

impl FetchedCache {
    /// Parses the cache file's text; `Err` says why it is unusable (it is then ignored).
    pub fn parse(text: &str) -> Result<FetchedCache, String> {
        if text.len() > MAX_CACHE_BYTES {
            return Err(format!("larger than {MAX_CACHE_BYTES} bytes"));
        }
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// The embedded relay's region: reachable at the `server_url` host and port.
pub fn embedded_region(config: &Config) -> Result<DerpRegion, DerpMapError> {
    let server = &config.derp.server;
    let (host, derp_port) = url_host_port(&config.server_url)
        .ok_or_else(|| DerpMapError::ServerUrl(config.server_url.clone()))?;
    let stun_port = server
        .stun_listen_addr
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .ok_or_else(|| DerpMapError::StunAddr(server.stun_listen_addr.clone()))?;
    let mut ipv4 = server.ipv4.clone().unwrap_or_default();
    let mut ipv6 = server.ipv6.clone().unwrap_or_default();
    // An IP-literal host needs no DNS: advertise it, and turn the other family off unless
    // the config names an address for it.
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            ipv4 = v4.to_string();
            if ipv6.is_empty() {
                ipv6 = "none".into();
            }
        }
        Ok(IpAddr::V6(v6)) => {
            ipv6 = v6.to_string();
            if ipv4.is_empty() {
                ipv4 = "none".into();
            }
        }
        Err(_) => {}
    }
    Ok(DerpRegion {
        region_id: server.region_id,
        region_code: server.region_code.clone(),
        region_name: server.region_name.clone(),
        nodes: vec![DerpNode {
            name: format!("{}a", server.region_id),
            region_id: server.region_id,
            host_name: host,
            ipv4,
            ipv6,
            stun_port: i32::from(stun_port),
            derp_port: i32::from(derp_port),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// Host (without IPv6 brackets) and port (or the scheme's default) of an http(s) URL.
fn url_host_port(url: &str) -> Option<(String, u16)> {
    let (rest, default_port) = if let Some(rest) = url.strip_prefix("https://") {
        (rest, 443)
    } else {
        (url.strip_prefix("http://")?, 80)
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Reads one map file (YAML or JSON).
pub fn load_file(path: &Path) -> Result<DerpMap, DerpMapError> {
    let shown = path.display().to_string();
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_MAP_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|source| DerpMapError::Io {
            path: shown.clone(),
            source,
        })?;
    if text.len() as u64 > MAX_MAP_FILE_BYTES {
        return Err(DerpMapError::Invalid {
            path: shown,
            message: format!("larger than {MAX_MAP_FILE_BYTES} bytes"),
        });
    }
    parse_map(&text).map_err(|message| DerpMapError::Invalid {
        path: shown,
        message,
    })
}

/// Parses a DERP map in headscale's YAML form (`regions: {900: {regionid: 900, ...}}`) or
/// Tailscale's JSON form (`{"Regions": {"900": {"RegionID": 900, ...}}}`).
pub fn parse_map(text: &str) -> Result<DerpMap, String> {
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let mut json = canonical(yaml)?;
    let Some(object) = json.as_object_mut() else {
        return Err("expected a mapping with a `regions` key".into());
    };
    // A null region is left out, as headscale's merge drops nil regions.
    if let Some(serde_json::Value::Object(regions)) = object.get_mut("Regions") {
        regions.retain(|_, region| !region.is_null());
    }
    let mut map: DerpMap = serde_json::from_value(json).map_err(|e| e.to_string())?;
    for (id, region) in map.regions.iter_mut() {
        if region.region_id == 0 {
            region.region_id = *id;
        }
        if region.region_id != *id {
            return Err(format!(
                "region {id} has regionid {} (they must match)",
                region.region_id
            ));
        }
        for node in &mut region.nodes {
            if node.region_id == 0 {
                node.region_id = *id;
            }
            if node.host_name.is_empty() {
                return Err(format!("region {id}: node {:?} has no hostname", node.name));
            }
        }
    }
    Ok(map)
}

/// The wire names of every DERP map field; file keys are matched to them ignoring case.
const FIELD_NAMES: &[&str] = &[
    "Regions",
    "omitDefaultRegions",
    "HomeParams",
    "RegionScore",
    "RegionID",
    "RegionCode",
    "RegionName",
    "Latitude",
    "Longitude",
    "Avoid",
    "NoMeasureNoHome",
    "Nodes",
    "Name",
    "HostName",
    "CertName",
    "IPv4",
    "IPv6",
    "STUNPort",
    "STUNOnly",
    "DERPPort",
    "InsecureForTests",
    "STUNTestIP",
    "CanPort80",
];

/// YAML → JSON with string keys (region ids become `"900"`) and field names in wire case.
fn canonical(value: serde_yaml_ng::Value) -> Result<serde_json::Value, String> {
    use serde_yaml_ng::Value as Y;
    Ok(match value {
        Y::Null => serde_json::Value::Null,
        Y::Bool(b) => serde_json::Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).map_err(|e| e.to_string())?,
        Y::String(s) => serde_json::Value::String(s),
        Y::Sequence(items) => {
            serde_json::Value::Array(items.into_iter().map(canonical).collect::<Result<_, _>>()?)
        }
        Y::Mapping(entries) => {
            let mut out = serde_json::Map::new();
            for (key, value) in entries {
                let key = match key {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    other => return Err(format!("unsupported key {other:?}")),
                };
                let key = FIELD_NAMES
                    .iter()
                    .find(|name| name.eq_ignore_ascii_case(&key))
                    .map_or(key, |name| (*name).to_string());
                out.insert(key, canonical(value)?);
            }
            serde_json::Value::Object(out)
        }
        Y::Tagged(tagged) => canonical(tagged.value)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        crate::config::load_str(yaml, Path::new("test.yaml"), &|_| None)
            .unwrap()
            .config
    }

    #[test]
    fn headscale_yaml_and_tailscale_json_parse_alike() {
        let yaml = "regions:\n  900:\n    regionid: 900\n    regioncode: custom\n    \
                    regionname: My Region\n    nodes:\n      - name: 900a\n        \
                    regionid: 900\n        hostname: derp.example.com\n        \
                    ipv4: 198.51.100.1\n        ipv6: \"2001:db8::1\"\n        \
                    stunport: 0\n        stunonly: false\n        derpport: 0\n";
        let from_yaml = parse_map(yaml).unwrap();
        let json = r#"{"Regions":{"900":{"RegionID":900,"RegionCode":"custom",
            "RegionName":"My Region","Nodes":[{"Name":"900a","RegionID":900,
            "HostName":"derp.example.com","IPv4":"198.51.100.1","IPv6":"2001:db8::1"}]}}}"#;
        assert_eq!(parse_map(json).unwrap(), from_yaml);
        let node = &from_yaml.regions[&900].nodes[0];
        assert_eq!(node.host_name, "derp.example.com");
        assert_eq!(node.ipv6, "2001:db8::1");
    }

    #[test]
    fn bad_maps_are_errors() {
        assert!(parse_map("regions:\n  abc:\n    regionid: 1\n").is_err());
        assert!(parse_map("regions:\n  900:\n    regionid: 901\n").is_err());
        assert!(parse_map("regions:\n  900:\n    nodes:\n      - name: a\n").is_err());
        assert!(parse_map("- 1\n").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "regions: [").unwrap();
        let err = load_file(&path).unwrap_err().to_string();
        assert!(err.contains("bad.yaml"), "{err}");
    }

    #[test]
    fn embedded_region_from_an_ip_literal_url() {
        let config = config(
            "server_url: http://127.0.0.1:8080\nderp:\n  server:\n    enabled: true\n    \
             stun_listen_addr: 127.0.0.1:3479\n    region_id: 901\n    region_code: t\n",
        );
        let map = derp_map(&config).unwrap();
        let node = &map.regions[&901].nodes[0];
        assert_eq!(node.name, "901a");
        assert_eq!(node.host_name, "127.0.0.1");
        assert_eq!(node.ipv4, "127.0.0.1");
        assert_eq!(node.ipv6, "none");
        assert_eq!(node.derp_port, 8080);
        assert_eq!(node.stun_port, 3479);
    }

    #[test]
    fn embedded_region_from_a_host_name_merged_with_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("derp.yaml");
        std::fs::write(
            &file,
            "regions:\n  900:\n    regionid: 900\n    regioncode: a\n    nodes:\n      \
             - name: 900a\n        hostname: a.example\n  999:\n    regionid: 999\n    \
             regioncode: replaced\n",
        )
        .unwrap();
        let config = config(&format!(
            "server_url: https://hs.example.org\nderp:\n  paths: [{}]\n  server:\n    \
             enabled: true\n    ipv4: 198.51.100.7\n",
            file.display()
        ));
        let map = derp_map(&config).unwrap();
        assert_eq!(map.regions.len(), 2);
        let region = &map.regions[&999];
        assert_eq!(region.region_code, "headscale");
        let node = &region.nodes[0];
        assert_eq!(node.host_name, "hs.example.org");
        assert_eq!(node.derp_port, 443);
        assert_eq!(node.stun_port, 3478);
        assert_eq!(node.ipv4, "198.51.100.7");
        assert_eq!(node.ipv6, "");
        assert_eq!(map.regions[&900].nodes[0].region_id, 900);
    }

    fn region(id: u32, code: &str, nodes: &[&str]) -> DerpRegion {
        DerpRegion {
            region_id: id,
            region_code: code.into(),
            nodes: nodes
                .iter()
                .map(|name| DerpNode {
                    name: (*name).into(),
                    region_id: id,
                    host_name: format!("{name}.example"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn map_of(regions: Vec<DerpRegion>) -> DerpMap {
        DerpMap {
            regions: regions.into_iter().map(|r| (r.region_id, r)).collect(),
            ..Default::default()
        }
    }

    /// headscale's order: URLs in order, then files; the later source wins a region id;
    /// the embedded region wins over everything.
    #[test]
    fn later_sources_win_and_the_embedded_region_wins_last() {
        let config = config(
            "server_url: http://127.0.0.1:8080\nderp:\n  server:\n    enabled: true\n    \
             stun_listen_addr: 127.0.0.1:3479\n    region_id: 999\n",
        );
        let first_url = map_of(vec![region(1, "url1", &["1a"]), region(2, "url1", &["2a"])]);
        let second_url = map_of(vec![
            region(2, "url2", &["2a"]),
            region(999, "url2", &["x"]),
        ]);
        let file = map_of(vec![region(1, "file", &["1a"]), region(3, "file", &["3a"])]);
        let map = merge(&config, &[first_url, second_url], &[file]).unwrap();
        let codes: Vec<(u32, &str)> = map
            .regions
            .iter()
            .map(|(id, r)| (*id, r.region_code.as_str()))
            .collect();
        assert_eq!(
            codes,
            vec![(1, "file"), (2, "url2"), (3, "file"), (999, "headscale")]
        );
        // Without the embedded relay, a fetched region 999 stays.
        let plain = crate::config::Config::default();
        let map = merge(&plain, &[map_of(vec![region(999, "url", &["x"])])], &[]).unwrap();
        assert_eq!(map.regions[&999].region_code, "url");
    }

    #[test]
    fn nodes_are_shuffled_per_tailnet_deterministically() {
        let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let source = map_of(vec![region(1, "r", &names), region(2, "s", &names)]);
        let order = |domain: &str| {
            let mut config = crate::config::Config::default();
            config.dns.base_domain = domain.into();
            let map = merge(&config, std::slice::from_ref(&source), &[]).unwrap();
            map.regions
                .values()
                .map(|r| r.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        let one = order("one.example");
        assert_eq!(one, order("one.example"));
        assert_ne!(one, order("two.example"));
        for nodes in &one {
            let mut sorted = nodes.clone();
            sorted.sort();
            assert_eq!(sorted, names);
        }
    }

    /// A fetched body in Tailscale's JSON (null regions dropped, as headscale does).
    #[test]
    fn fetched_json_with_a_null_region() {
        let map = parse_map(
            r#"{"Regions":{"1":{"RegionID":1,"RegionCode":"nyc","Nodes":[{"Name":"1a",
            "HostName":"derp1.example","CanPort80":true}]},"2":null}}"#,
        )
        .unwrap();
        assert_eq!(map.regions.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(map.regions[&1].nodes[0].can_port_80);
    }

    #[test]
    fn the_cache_round_trips_and_refuses_garbage() {
        let mut cache = FetchedCache::default();
        cache.maps.insert(
            "https://derp.example/map".into(),
            map_of(vec![region(7, "c", &["7a"])]),
        );
        assert_eq!(FetchedCache::parse(&cache.to_json()).unwrap(), cache);
        assert!(FetchedCache::parse("{\"maps\": [").is_err());
        assert!(FetchedCache::parse(&" ".repeat(MAX_CACHE_BYTES + 1)).is_err());
    }
}
