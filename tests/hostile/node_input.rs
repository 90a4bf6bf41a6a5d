//! Node input from an authenticated node. A3: a node rewrites its Hostname, routes and SSH
//! host keys as fast as it can over 8 connections — the log must take at most the per-node
//! hostinfo rate (1 per 10 s, burst 3), peers at most the presence rate (≤ 2/s) with a
//! bounded Hostinfo, and still end up with the latest value. A4: oversized fields one at a
//! time — each refused or cut to its documented cap, the rendered peer bounded, no panic.

use crate::harness::{register_node_as, scale, Canary, Scenario, Streaming};
use crate::{MAX_FDS, MAX_FORWARDED_HOSTINFO_BYTES, MAX_PEER_MESSAGE_BYTES, MAX_RSS_MIB};
use headscale::client::{self, ClientError, ControlClient};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Hostinfo events per node: 1 per 10 s, burst 3 (limits table).
fn hostinfo_event_bound(seconds: f64) -> usize {
    3 + (seconds / 10.0).ceil() as usize
}

/// Watches `observer`'s stream until `stop`: messages that carry `peer` and the largest
/// Hostinfo JSON rendered for it.
async fn watch_peer(
    mut observer: Streaming,
    peer: u64,
    stop: Arc<AtomicBool>,
) -> (Streaming, usize, usize) {
    let (mut messages, mut largest_hostinfo) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let Ok(message) = observer.next_within(Duration::from_millis(200)).await else {
            continue;
        };
        let r = &message.response;
        let changed = r.peers_changed.iter().flatten().filter(|n| n.id == peer);
        let mut carries = false;
        for node in changed {
            carries = true;
            largest_hostinfo = largest_hostinfo.max(node.hostinfo.to_string().len());
        }
        carries |= r
            .peers_changed_patch
            .iter()
            .flatten()
            .any(|p| p.node_id == peer);
        if carries {
            messages += 1;
        }
    }
    (observer, messages, largest_hostinfo)
}

fn churn_hostinfo(i: usize) -> Value {
    let side = i % 2;
    json!({
        "Hostname": format!("churn-{side}"),
        "OS": "linux",
        "RoutableIPs": [format!("10.{}.0.0/24", 100 + side)],
        "sshHostKeys": [format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{side:0>40}")],
    })
}

/// A registered attacking node holding a map stream, and an observer that sees it as a peer.
struct Attacker {
    machine: x25519_dalek::StaticSecret,
    node_key: String,
    disco_key: String,
    _stream: Streaming,
    observer: Streaming,
    attacker_id: u64,
}

impl Attacker {
    async fn join(s: &Scenario, name: &str) -> Attacker {
        let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        let (node_key, _) = client::random_key("nodekey:");
        let attacker =
            register_node_as(&s.url(), machine.clone(), &s.attacker_key, name, &node_key)
                .await
                .unwrap();
        let disco_key = attacker.disco_key.clone();
        let stream = Streaming::open(attacker).await;
        let observer = Streaming::join(&s.url(), &s.canary_key, "observer").await;
        let attacker_id = observer
            .peer_id(name)
            .unwrap_or_else(|| panic!("the observer sees {name}"));
        Attacker {
            machine,
            node_key,
            disco_key,
            _stream: stream,
            observer,
            attacker_id,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_hostinfo_churn_from_one_node() {
    let mut s = Scenario::start("a3_hostinfo_churn", "").await;
    let canary = Canary::start(&s).await;
    let Attacker {
        machine,
        node_key,
        disco_key,
        _stream: _attacker_stream,
        observer,
        attacker_id,
    } = Attacker::join(&s, "churn").await;
    let head = s.head_seq().await;
    let log_before = s.log_bytes();

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_peer(observer, attacker_id, stop.clone()));
    let seconds = scale(5, 60) as f64;
    let (sent, limited, failed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let start = Instant::now();
    let mut floods = Vec::new();
    for _ in 0..8 {
        let connection =
            ControlClient::connect(&s.url(), machine.clone(), crate::common::CLIENT_CAPVER)
                .await
                .unwrap();
        let (node_key, disco_key) = (node_key.clone(), disco_key.clone());
        let (sent, limited, failed) = (sent.clone(), limited.clone(), failed.clone());
        floods.push(tokio::spawn(async move {
            let mut i = 0;
            while start.elapsed().as_secs_f64() < seconds {
                i += 1;
                let endpoints = vec![format!("192.0.2.{}:41641", i % 200 + 1)];
                match connection
                    .lite_update(&node_key, endpoints, &disco_key, Some(churn_hostinfo(i)))
                    .await
                {
                    Ok(()) => sent.fetch_add(1, Ordering::Relaxed),
                    Err(ClientError::Status { status: 429, .. }) => {
                        limited.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for flood in floods {
        flood.await.unwrap();
    }
    let flood_seconds = start.elapsed().as_secs_f64();
    // The last word: peers must end up with it.
    let last = ControlClient::connect(&s.url(), machine.clone(), crate::common::CLIENT_CAPVER)
        .await
        .unwrap();
    let final_hostinfo = json!({"Hostname": "churn-final", "OS": "linux"});
    let final_sent = last
        .lite_update(
            &node_key,
            vec!["192.0.2.250:41641".into()],
            &disco_key,
            Some(final_hostinfo),
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    let (mut observer, peer_messages, largest_hostinfo) = watcher.await.unwrap();
    let latest = observer
        .until(Duration::from_secs(2), |n| {
            n.peers
                .get(&attacker_id)
                .is_some_and(|p| p.hostinfo["Hostname"] == "churn-final")
        })
        .await;
    let events = s.events(&format!("since={head}&node={attacker_id}")).await;
    let hostinfo_events = events
        .iter()
        .filter(|e| e["type"] == "NodeHostinfoChanged")
        .count();
    let event_bytes: usize = events.iter().map(|e| e.to_string().len()).sum();
    let log_growth = s.log_bytes().saturating_sub(log_before);
    let report = canary.finish().await;
    eprintln!(
        "a3: {:.1} s, {} updates accepted, {} limited (429), {} failed; {hostinfo_events} hostinfo events ({event_bytes} bytes as JSON), events.log +{log_growth} bytes (canary included); peers got {peer_messages} messages about the node, largest Hostinfo {largest_hostinfo} bytes",
        flood_seconds,
        sent.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let event_bound = hostinfo_event_bound(flood_seconds + 1.0) + 1;
    s.check(hostinfo_events <= event_bound, || {
        format!("{hostinfo_events} NodeHostinfoChanged events in {flood_seconds:.1} s, bound {event_bound} (1 per 10 s, burst 3)")
    });
    s.check(log_growth <= 64 * 1024, || {
        format!(
            "events.log grew {log_growth} bytes during the flood (canary included), bound 64 KiB"
        )
    });
    s.check(event_bytes <= 64 * 1024, || {
        format!("the node's events take {event_bytes} bytes, bound 64 KiB")
    });
    let presence_bound = (2.0 * (flood_seconds + 1.0)).ceil() as usize + 3;
    s.check(peer_messages <= presence_bound, || {
        format!("peers got {peer_messages} messages about the node in {flood_seconds:.1} s, bound {presence_bound} (≤ 2/s)")
    });
    s.check(largest_hostinfo <= MAX_FORWARDED_HOSTINFO_BYTES, || {
        format!(
            "a peer got a {largest_hostinfo}-byte Hostinfo, bound {MAX_FORWARDED_HOSTINFO_BYTES}"
        )
    });
    s.check(final_sent.is_ok(), || {
        format!("the final update was refused: {final_sent:?}")
    });
    s.check(latest.is_ok(), || {
        format!("the observer never saw the latest Hostname within 2 s: {latest:?}")
    });
    s.check(
        sent.load(Ordering::Relaxed) + limited.load(Ordering::Relaxed) > 20,
        || "the flood sent almost nothing: the attack did not run".into(),
    );
    s.finish(report, MAX_RSS_MIB, MAX_FDS);
}

/// One oversized variant of a lite update's fields.
struct Oversized {
    name: &'static str,
    hostinfo: Value,
    endpoints: Vec<String>,
}

fn oversized_variants() -> Vec<Oversized> {
    let big = |n: usize| "h".repeat(n);
    let mut deep = json!(0);
    for _ in 0..120 {
        deep = json!([deep]);
    }
    let routes: Vec<String> = (0..scale(5_000, 50_000))
        .map(|i| format!("10.{}.{}.0/24", (i >> 8) & 255, i & 255))
        .collect();
    let endpoints: Vec<String> = (0..scale(10_000, 100_000))
        .map(|i| format!("192.0.{}.{}:{}", (i >> 8) & 255, i & 255, 1024 + i % 60000))
        .collect();
    let base = |extra: Value| {
        let mut h = json!({"Hostname": "wide", "OS": "linux"});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        h
    };
    let normal = vec!["192.0.2.9:41641".to_string()];
    vec![
        Oversized {
            name: "Hostname 1 MiB",
            hostinfo: base(json!({"Hostname": big((1 << 20) - 4096)})),
            endpoints: normal.clone(),
        },
        Oversized {
            name: "Hostname 200 KiB",
            hostinfo: base(json!({"Hostname": big(200 << 10)})),
            endpoints: normal.clone(),
        },
        Oversized {
            name: "OS 100 KiB",
            hostinfo: base(
                json!({"OS": big(100 << 10), "OSVersion": big(50 << 10), "IPNVersion": big(50 << 10)}),
            ),
            endpoints: normal.clone(),
        },
        Oversized {
            name: "RoutableIPs",
            hostinfo: base(json!({"RoutableIPs": routes})),
            endpoints: normal.clone(),
        },
        Oversized {
            name: "Endpoints",
            hostinfo: base(json!({})),
            endpoints,
        },
        Oversized {
            name: "sshHostKeys",
            hostinfo: base(json!({"sshHostKeys": vec![big(4096); 40]})),
            endpoints: normal.clone(),
        },
        Oversized {
            name: "RequestTags",
            hostinfo: base(json!({"RequestTags": vec![format!("tag:{}", big(200)); 300]})),
            endpoints: normal.clone(),
        },
        Oversized {
            name: "Hostinfo [0,0,...] 200 KiB",
            hostinfo: base(json!({"Services": vec![0; 100 << 10]})),
            endpoints: normal.clone(),
        },
        Oversized {
            name: "Hostinfo [0,0,...] 1 MiB",
            hostinfo: base(json!({"Services": vec![0; (1 << 19) - 4096]})),
            endpoints: normal.clone(),
        },
        Oversized {
            name: "nesting at the serde limit",
            hostinfo: base(json!({"Deep": deep})),
            endpoints: normal,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_oversized_fields_one_at_a_time() {
    let mut s = Scenario::start("a4_oversized_fields", "").await;
    let canary = Canary::start(&s).await;
    let Attacker {
        machine,
        node_key,
        disco_key,
        _stream: _attacker_stream,
        observer,
        attacker_id,
    } = Attacker::join(&s, "wide").await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_peer(observer, attacker_id, stop.clone()));
    let connection = ControlClient::connect(&s.url(), machine, crate::common::CLIENT_CAPVER)
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for variant in oversized_variants() {
        let request = json!({
            "Version": crate::common::CLIENT_CAPVER,
            "Compress": "zstd",
            "KeepAlive": true,
            "NodeKey": node_key,
            "DiscoKey": disco_key,
            "Stream": false,
            "OmitPeers": true,
            "Hostinfo": variant.hostinfo,
            "Endpoints": variant.endpoints,
        });
        let body = serde_json::to_vec(&request).unwrap();
        let size = body.len();
        let status = match connection.post("/machine/map", body).await {
            Ok(response) => response.status().as_u16(),
            Err(e) => {
                s.check(false, || {
                    format!("{}: the connection failed: {e}", variant.name)
                });
                0
            }
        };
        outcomes.push(format!("{} ({size} B) → {status}", variant.name));
        s.check((200..500).contains(&status) && status != 0, || {
            format!(
                "{}: answered {status} (want 200 with the field cut to its cap, or a 4xx)",
                variant.name
            )
        });
        // Pacing, not synchronisation: one variant per presence tick, so each is rendered
        // to the observer on its own.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (observer, _, largest_hostinfo) = watcher.await.unwrap();
    // The hostname at registration: refused, or stored cut to 255 bytes.
    let long_name = "n".repeat(4096);
    let registered = crate::harness::register_node(&s.url(), &s.attacker_key, &long_name).await;
    outcomes.push(format!(
        "register with a 4 KiB Hostname → {}",
        if registered.is_ok() {
            "accepted"
        } else {
            "refused"
        }
    ));
    let nodes = s.server.nodes();
    let longest = nodes
        .iter()
        .map(|n| n["name"].as_str().unwrap_or("").len())
        .max()
        .unwrap_or(0);
    s.check(longest <= 255, || {
        format!("a node's stored hostname is {longest} bytes, cap 255")
    });
    let report = canary.finish().await;
    eprintln!("a4: {}", outcomes.join("; "));
    let node = nodes
        .iter()
        .find(|n| n["id"].as_str().and_then(|i| i.parse().ok()) == Some(attacker_id))
        .cloned()
        .unwrap_or_default();
    let name_len = node["name"].as_str().unwrap_or("").len();
    let routes = node["availableRoutes"].as_array().map_or(0, |r| r.len());
    let peer = observer
        .netmap
        .peers
        .get(&attacker_id)
        .cloned()
        .unwrap_or_default();
    eprintln!(
        "a4: stored hostname {name_len} bytes, {routes} announced routes; peers see {} endpoints, Hostinfo {} bytes; largest message to a peer {} bytes",
        peer.endpoints.len(),
        largest_hostinfo,
        observer.largest_message
    );
    s.check(name_len <= 255, || {
        format!("stored hostname is {name_len} bytes, cap 255")
    });
    s.check(routes <= 1024, || {
        format!("{routes} announced routes stored, cap 1024")
    });
    s.check(peer.endpoints.len() <= 64, || {
        format!("peers see {} endpoints, cap 64", peer.endpoints.len())
    });
    s.check(largest_hostinfo <= MAX_FORWARDED_HOSTINFO_BYTES, || {
        format!("peers got a {largest_hostinfo}-byte Hostinfo, cap {MAX_FORWARDED_HOSTINFO_BYTES}")
    });
    s.check(observer.largest_message <= MAX_PEER_MESSAGE_BYTES, || {
        format!(
            "a peer got a {}-byte map message, bound {MAX_PEER_MESSAGE_BYTES}",
            observer.largest_message
        )
    });
    s.finish(report, MAX_RSS_MIB, MAX_FDS);
}
