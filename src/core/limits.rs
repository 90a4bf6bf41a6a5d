//! The named limits on what a node (or an anonymous client) may report, and the one
//! normaliser every client-reported field goes through before it is recorded, kept in
//! presence or forwarded to peers.
//!
//! Two modes, chosen by where the data comes from:
//! - **Registration** (`Mode::Refuse`): a request over a limit is refused with a readable
//!   reason (`RegisterResponse.Error`). Nothing is recorded yet, and a real client never
//!   comes near these limits, so refusing loses nothing and says clearly what was wrong.
//! - **Map requests** (`Mode::Truncate`): the node is already registered and its stream must
//!   keep working, so the excess is dropped (strings cut at a character boundary, lists cut
//!   after the limit, unparseable entries skipped) and the shell logs what was cut at debug
//!   level.
//!
//! The serialized shape of `NodeHostinfo` does not change: the limits only bound its contents.
//! Pure: no I/O, no clock.

use super::command::normalize_hostinfo;
use super::event::NodeHostinfo;
use crate::tailcfg;
use std::fmt;

/// `Hostinfo.Hostname`, in bytes (a DNS name's length; Tailscale's own limit is lower).
pub const MAX_HOSTNAME_BYTES: usize = 255;
/// `Hostinfo.OS`, `OSVersion`, `IPNVersion` and other short strings, in bytes each.
pub const MAX_SHORT_STRING_BYTES: usize = 64;
/// Advertised routes (`RoutableIPs`) per node, counted after canonicalisation (truncated to
/// the network, sorted, duplicates removed).
pub const MAX_ROUTES: usize = 1024;
/// Requested tags (`RequestTags`, `--advertise-tags`) per node.
pub const MAX_TAGS: usize = 64;
/// One requested tag, in bytes.
pub const MAX_TAG_BYTES: usize = 128;
/// SSH host keys (`sshHostKeys`) per node.
pub const MAX_SSH_HOST_KEYS: usize = 16;
/// One SSH host key, in bytes (an RSA-4096 public key is about 750).
pub const MAX_SSH_HOST_KEY_BYTES: usize = 2048;
/// `Endpoints` per map request; each must parse as `ip:port`.
pub const MAX_ENDPOINTS: usize = 64;
/// The client's own Hostinfo JSON kept in presence and forwarded to peers, serialized. Over
/// it, peers get only the normalised fields (`hostinfo_json`).
pub const MAX_HOSTINFO_JSON_BYTES: usize = 16 * 1024;

/// Pending interactive logins in the whole table.
pub const MAX_PENDING_LOGINS: usize = 1024;
/// Pending interactive logins, in (estimated) bytes for the whole table.
pub const MAX_PENDING_LOGIN_BYTES: usize = 8 * 1024 * 1024;
/// Pending interactive logins from one source address (IPv6: one /64).
pub const MAX_PENDING_LOGINS_PER_SOURCE: usize = 16;
/// Pending interactive logins from one machine key.
pub const MAX_PENDING_LOGINS_PER_MACHINE: usize = 4;

/// Recorded hostinfo changes (`NodeHostinfoChanged`) per node: one per this period...
pub const HOSTINFO_EVENT_PERIOD_SECS: u64 = 10;
/// ...after a burst of this many. The newest wanted facts wait in a per-node slot.
pub const HOSTINFO_EVENT_BURST: u32 = 3;
/// Presence updates (endpoints, disco key, hostinfo re-render) per node: one per this many
/// milliseconds (2/s); the rest coalesce, the newest wins.
pub const PRESENCE_UPDATE_PERIOD_MS: u64 = 500;
/// Non-streaming full-map requests per node: one per this period after a burst (over: 429).
pub const FULL_MAP_PERIOD_SECS: u64 = 5;
/// Burst of non-streaming full-map requests.
pub const FULL_MAP_BURST: u32 = 3;
/// Map-stream (re)opens per node: one per this period after a burst (over: 429).
pub const STREAM_OPEN_PERIOD_SECS: u64 = 2;
/// Burst of map-stream (re)opens: a client that reconnects after `down`/`up` or a network
/// change opens one stream at a time, far below it.
pub const STREAM_OPEN_BURST: u32 = 10;

/// What to do with data over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Registration: refuse the request.
    Refuse,
    /// Map requests: drop the excess.
    Truncate,
}

/// A field over its limit (the reason a registration is refused, or what was cut).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    /// The wire name of the field (`Hostinfo.Hostname`, ...).
    pub field: &'static str,
    /// What the client sent: a length in bytes or a count.
    pub got: usize,
    pub limit: usize,
    /// `bytes` or `entries`.
    pub unit: &'static str,
}

impl fmt::Display for OverLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is too large: {} {} (at most {} allowed)",
            self.field, self.got, self.unit, self.limit
        )
    }
}

impl std::error::Error for OverLimit {}

/// The facts of a Hostinfo, within the limits, plus what was cut (`Mode::Truncate`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Normalised {
    pub hostinfo: NodeHostinfo,
    pub cut: Vec<OverLimit>,
}

/// Cuts `text` to at most `max` bytes at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Checks (or cuts) one string field.
fn string(
    field: &'static str,
    text: &str,
    limit: usize,
    mode: Mode,
    cut: &mut Vec<OverLimit>,
) -> Result<String, OverLimit> {
    if text.len() <= limit {
        return Ok(text.to_string());
    }
    let over = OverLimit {
        field,
        got: text.len(),
        limit,
        unit: "bytes",
    };
    if mode == Mode::Refuse {
        return Err(over);
    }
    cut.push(over);
    Ok(truncate(text, limit).to_string())
}

/// Checks (or cuts) a list of strings: each entry ≤ `each` bytes, at most `count` entries.
/// In `Truncate` mode over-long entries are dropped (a cut key or tag is meaningless).
fn list(
    field: &'static str,
    items: &[String],
    count: usize,
    each: usize,
    mode: Mode,
    cut: &mut Vec<OverLimit>,
) -> Result<Vec<String>, OverLimit> {
    let mut out = Vec::new();
    for item in items {
        if item.len() > each {
            let over = OverLimit {
                field,
                got: item.len(),
                limit: each,
                unit: "bytes",
            };
            if mode == Mode::Refuse {
                return Err(over);
            }
            cut.push(over);
            continue;
        }
        out.push(item.clone());
    }
    cap_count(field, out, count, mode, cut)
}

fn cap_count<T>(
    field: &'static str,
    mut items: Vec<T>,
    count: usize,
    mode: Mode,
    cut: &mut Vec<OverLimit>,
) -> Result<Vec<T>, OverLimit> {
    if items.len() > count {
        let over = OverLimit {
            field,
            got: items.len(),
            limit: count,
            unit: "entries",
        };
        if mode == Mode::Refuse {
            return Err(over);
        }
        cut.push(over);
        items.truncate(count);
    }
    Ok(items)
}

/// The one normaliser of a client's Hostinfo: the facts worth recording, within the limits,
/// in the recorded form (`command::normalize_hostinfo`: canonical routes and tags), so a
/// comparison with the recorded facts is exact. Unparseable routes are skipped in both modes
/// (as before: a client never sends them). Counts are taken after canonicalisation.
pub fn normalise_hostinfo(
    hostinfo: Option<&tailcfg::Hostinfo>,
    mode: Mode,
) -> Result<Normalised, OverLimit> {
    let Some(h) = hostinfo else {
        return Ok(Normalised::default());
    };
    let mut cut = Vec::new();
    let short = MAX_SHORT_STRING_BYTES;
    let hostname = string(
        "Hostinfo.Hostname",
        &h.hostname,
        MAX_HOSTNAME_BYTES,
        mode,
        &mut cut,
    )?;
    let os = string("Hostinfo.OS", &h.os, short, mode, &mut cut)?;
    let os_version = string("Hostinfo.OSVersion", &h.os_version, short, mode, &mut cut)?;
    let client_version = string("Hostinfo.IPNVersion", &h.ipn_version, short, mode, &mut cut)?;
    let requested_tags = list(
        "Hostinfo.RequestTags",
        h.request_tags.as_deref().unwrap_or_default(),
        usize::MAX,
        MAX_TAG_BYTES,
        mode,
        &mut cut,
    )?;
    let ssh_host_keys = list(
        "Hostinfo.sshHostKeys",
        h.ssh_host_keys.as_deref().unwrap_or_default(),
        MAX_SSH_HOST_KEYS,
        MAX_SSH_HOST_KEY_BYTES,
        mode,
        &mut cut,
    )?;
    let routes = h.routable_ips.as_deref().unwrap_or_default();
    // Parsing a route costs little, but an absurd list is refused before the work.
    if mode == Mode::Refuse && routes.len() > MAX_ROUTES * 4 {
        return Err(OverLimit {
            field: "Hostinfo.RoutableIPs",
            got: routes.len(),
            limit: MAX_ROUTES,
            unit: "entries",
        });
    }
    let mut normalised = normalize_hostinfo(&NodeHostinfo {
        hostname,
        os,
        os_version,
        client_version,
        advertised_routes: routes.iter().filter_map(|r| r.parse().ok()).collect(),
        requested_tags,
        ssh_host_keys,
    });
    normalised.advertised_routes = cap_count(
        "Hostinfo.RoutableIPs",
        std::mem::take(&mut normalised.advertised_routes),
        MAX_ROUTES,
        mode,
        &mut cut,
    )?;
    normalised.requested_tags = cap_count(
        "Hostinfo.RequestTags",
        std::mem::take(&mut normalised.requested_tags),
        MAX_TAGS,
        mode,
        &mut cut,
    )?;
    Ok(Normalised {
        hostinfo: normalised,
        cut,
    })
}

/// A map request's `Endpoints`, within the limits: entries that are not `ip:port` are
/// dropped, then everything after `MAX_ENDPOINTS` (map requests only: always truncates).
pub fn normalise_endpoints(endpoints: &[String]) -> (Vec<String>, Vec<OverLimit>) {
    let mut cut = Vec::new();
    let valid: Vec<String> = endpoints
        .iter()
        .filter(|e| e.parse::<std::net::SocketAddr>().is_ok())
        .cloned()
        .collect();
    if valid.len() < endpoints.len() {
        cut.push(OverLimit {
            field: "Endpoints (not ip:port)",
            got: endpoints.len() - valid.len(),
            limit: 0,
            unit: "entries",
        });
    }
    let valid =
        cap_count("Endpoints", valid, MAX_ENDPOINTS, Mode::Truncate, &mut cut).unwrap_or_default();
    (valid, cut)
}

/// The Hostinfo peers are shown when only the normalised facts are known (before the node
/// reported since a restart, or when its own JSON is over `MAX_HOSTINFO_JSON_BYTES`).
pub fn hostinfo_json(h: &NodeHostinfo) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let mut text = |key: &str, value: &str| {
        if !value.is_empty() {
            out.insert(key.into(), value.into());
        }
    };
    text("Hostname", &h.hostname);
    text("OS", &h.os);
    text("OSVersion", &h.os_version);
    text("IPNVersion", &h.client_version);
    if !h.advertised_routes.is_empty() {
        let routes: Vec<String> = h.advertised_routes.iter().map(|r| r.to_string()).collect();
        out.insert("RoutableIPs".into(), routes.into());
    }
    if !h.requested_tags.is_empty() {
        out.insert("RequestTags".into(), h.requested_tags.clone().into());
    }
    if !h.ssh_host_keys.is_empty() {
        out.insert("sshHostKeys".into(), h.ssh_host_keys.clone().into());
    }
    serde_json::Value::Object(out)
}

fn json_len(value: &serde_json::Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

/// `hostinfo_json`, within `MAX_HOSTINFO_JSON_BYTES`: the normalised facts can be larger
/// (1024 routes, 16 keys of 2 KiB), so the lists peers need least go first until it fits:
/// `RoutableIPs` (peers route by `AllowedIPs`), then `RequestTags`, then `sshHostKeys`. The
/// strings always fit.
pub fn bounded_hostinfo_json(h: &NodeHostinfo) -> serde_json::Value {
    let mut shown = hostinfo_json(h);
    for key in ["RoutableIPs", "RequestTags", "sshHostKeys"] {
        if json_len(&shown) <= MAX_HOSTINFO_JSON_BYTES {
            break;
        }
        if let Some(object) = shown.as_object_mut() {
            object.remove(key);
        }
    }
    shown
}

/// What a map request's Hostinfo becomes, everything within the limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedHostinfo {
    /// The facts worth recording (`None`: the Hostinfo did not have the expected shape, so
    /// nothing is recorded from it).
    pub facts: Option<NodeHostinfo>,
    /// What peers are shown: the client's own JSON without `NetInfo`, with the normalised
    /// facts written over the client's values; only the normalised facts
    /// (`bounded_hostinfo_json`) when the result is over `MAX_HOSTINFO_JSON_BYTES` or not an
    /// object. Never over `MAX_HOSTINFO_JSON_BYTES`.
    pub shown: serde_json::Value,
    /// `NetInfo.PreferredDERP`, the node's home DERP region.
    pub home_derp: Option<u32>,
    pub cut: Vec<OverLimit>,
}

/// The normaliser for a map request's raw Hostinfo JSON (always `Mode::Truncate`).
pub fn normalise_reported_hostinfo(raw: &serde_json::Value) -> ReportedHostinfo {
    let parsed = serde_json::from_value::<tailcfg::Hostinfo>(raw.clone()).ok();
    let normalised = parsed
        .as_ref()
        .and_then(|h| normalise_hostinfo(Some(h), Mode::Truncate).ok());
    let mut cut = normalised
        .as_ref()
        .map(|n| n.cut.clone())
        .unwrap_or_default();
    let facts = normalised.map(|n| n.hostinfo);
    let mut home_derp = None;
    let fallback = || bounded_hostinfo_json(facts.as_ref().unwrap_or(&NodeHostinfo::default()));
    let shown = match (raw.as_object(), &facts) {
        (Some(object), Some(facts)) => {
            let mut object = object.clone();
            if let Some(net_info) = object.remove("NetInfo") {
                home_derp = net_info
                    .get("PreferredDERP")
                    .and_then(|v| v.as_u64())
                    .and_then(|v| u32::try_from(v).ok());
            }
            // The client's values of the normalised fields give way to the normalised ones
            // (the keys the client left out stay out).
            let ours = hostinfo_json(facts);
            for key in [
                "Hostname",
                "OS",
                "OSVersion",
                "IPNVersion",
                "RoutableIPs",
                "RequestTags",
                "sshHostKeys",
            ] {
                if object.contains_key(key) {
                    match ours.get(key) {
                        Some(value) => object.insert(key.into(), value.clone()),
                        None => object.remove(key),
                    };
                }
            }
            let shown = serde_json::Value::Object(object);
            let size = json_len(&shown);
            if size > MAX_HOSTINFO_JSON_BYTES {
                cut.push(OverLimit {
                    field: "Hostinfo (forwarded to peers)",
                    got: size,
                    limit: MAX_HOSTINFO_JSON_BYTES,
                    unit: "bytes",
                });
                fallback()
            } else {
                shown
            }
        }
        _ => fallback(),
    };
    ReportedHostinfo {
        facts,
        shown,
        home_derp,
        cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire(f: impl FnOnce(&mut tailcfg::Hostinfo)) -> tailcfg::Hostinfo {
        let mut h = tailcfg::Hostinfo {
            hostname: "laptop".into(),
            os: "linux".into(),
            ..Default::default()
        };
        f(&mut h);
        h
    }

    #[test]
    fn registration_refuses_each_field_over_its_limit() {
        let cases: Vec<(tailcfg::Hostinfo, &str)> = vec![
            (
                wire(|h| h.hostname = "h".repeat(MAX_HOSTNAME_BYTES + 1)),
                "Hostname",
            ),
            (wire(|h| h.os = "x".repeat(65)), "OS"),
            (wire(|h| h.os_version = "x".repeat(65)), "OSVersion"),
            (wire(|h| h.ipn_version = "x".repeat(65)), "IPNVersion"),
            (
                wire(|h| h.request_tags = Some(vec!["tag:x".repeat(30)])),
                "RequestTags",
            ),
            (
                wire(|h| {
                    h.request_tags = Some((0..=MAX_TAGS).map(|i| format!("tag:t{i}")).collect())
                }),
                "RequestTags",
            ),
            (
                wire(|h| h.ssh_host_keys = Some(vec![String::new(); MAX_SSH_HOST_KEYS + 1])),
                "sshHostKeys",
            ),
            (
                wire(|h| h.ssh_host_keys = Some(vec!["k".repeat(MAX_SSH_HOST_KEY_BYTES + 1)])),
                "sshHostKeys",
            ),
            (
                wire(|h| {
                    h.routable_ips = Some(
                        (0..=MAX_ROUTES)
                            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
                            .collect(),
                    )
                }),
                "RoutableIPs",
            ),
        ];
        for (hostinfo, field) in cases {
            let error = normalise_hostinfo(Some(&hostinfo), Mode::Refuse).unwrap_err();
            assert!(error.field.ends_with(field), "{error} for {field}");
            assert!(error.to_string().contains("at most"), "{error}");
        }
    }

    #[test]
    fn routes_are_counted_after_canonicalisation() {
        // 2048 spellings of 1024 routes: within the limit.
        let routes: Vec<String> = (0..MAX_ROUTES)
            .flat_map(|i| {
                let (a, b) = (i / 256, i % 256);
                [format!("10.{a}.{b}.0/24"), format!("10.{a}.{b}.7/24")]
            })
            .collect();
        let h = wire(|h| h.routable_ips = Some(routes));
        let n = normalise_hostinfo(Some(&h), Mode::Refuse).unwrap();
        assert_eq!(n.hostinfo.advertised_routes.len(), MAX_ROUTES);
    }

    #[test]
    fn map_requests_truncate_and_say_what_was_cut() {
        let h = wire(|h| {
            h.hostname = "é".repeat(200); // 400 bytes, 2 per char
            h.request_tags = Some((0..100).map(|i| format!("tag:t{i:03}")).collect());
            h.ssh_host_keys = Some(
                std::iter::once("k".repeat(5000))
                    .chain((0..40).map(|i| format!("ssh-ed25519 {i}")))
                    .collect(),
            );
        });
        let n = normalise_hostinfo(Some(&h), Mode::Truncate).unwrap();
        assert_eq!(n.hostinfo.hostname.len(), 254, "cut at a char boundary");
        assert_eq!(n.hostinfo.requested_tags.len(), MAX_TAGS);
        assert_eq!(n.hostinfo.ssh_host_keys.len(), MAX_SSH_HOST_KEYS);
        assert!(n.hostinfo.ssh_host_keys.iter().all(|k| k.len() < 100));
        assert_eq!(n.cut.len(), 4, "{:?}", n.cut);
    }

    #[test]
    fn endpoints_keep_the_first_valid_ones() {
        let mut endpoints = vec!["garbage".to_string(), "[::1]:41641".into()];
        endpoints.extend((0..100).map(|i| format!("192.0.2.1:{}", 1000 + i)));
        let (kept, cut) = normalise_endpoints(&endpoints);
        assert_eq!(kept.len(), MAX_ENDPOINTS);
        assert_eq!(kept[0], "[::1]:41641");
        assert_eq!(cut.len(), 2);
    }

    #[test]
    fn the_forwarded_hostinfo_is_bounded_and_consistent_with_the_facts() {
        let raw = json!({
            "Hostname": "h".repeat(1000),
            "OS": "linux",
            "NetInfo": {"PreferredDERP": 7},
            "Services": [{"Proto": "peerapi4", "Port": 1}],
        });
        let r = normalise_reported_hostinfo(&raw);
        assert_eq!(r.home_derp, Some(7));
        assert_eq!(
            r.shown["Hostname"].as_str().unwrap().len(),
            MAX_HOSTNAME_BYTES
        );
        assert!(r.shown.get("NetInfo").is_none());
        assert!(r.shown.get("Services").is_some(), "the rest passes through");
        assert_eq!(r.facts.unwrap().hostname.len(), MAX_HOSTNAME_BYTES);

        let huge = json!({"Hostname": "big", "Userspace": false, "Filler": "x".repeat(20_000)});
        let r = normalise_reported_hostinfo(&huge);
        assert_eq!(r.shown, json!({"Hostname": "big"}));
        assert!(r
            .cut
            .iter()
            .any(|c| c.field.starts_with("Hostinfo (forwarded")));

        let most = json!({
            "Hostname": "h".repeat(300),
            "RoutableIPs": (0..2000).map(|i| format!("fd00:{i:x}::/64")).collect::<Vec<_>>(),
            "sshHostKeys": (0..16).map(|i| format!("{i}{}", "k".repeat(2000))).collect::<Vec<_>>(),
        });
        let r = normalise_reported_hostinfo(&most);
        assert!(json_len(&r.shown) <= MAX_HOSTINFO_JSON_BYTES);
        assert_eq!(
            r.shown["Hostname"].as_str().unwrap().len(),
            MAX_HOSTNAME_BYTES
        );

        let not_an_object = json!([0, 0, 0]);
        let r = normalise_reported_hostinfo(&not_an_object);
        assert!(r.facts.is_none());
        assert_eq!(r.shown, json!({}));
    }
}
