//! The checks behind each fuzz target, shared with the corpus-replay test in the main crate
//! (`tests/fuzz_corpus.rs` includes this file with `#[path]`), so a crash input kept in
//! `fuzz/corpus/<target>/` is replayed by every plain `cargo test`. Each check panics only
//! when the code under test breaks one of its promises; decode errors are fine.

use headscale::store::record::{decode_snapshot, encode_snapshot, sha256, RECORD_HEADER_LEN};
use headscale::store::{Checkpoint, DecodeError, StoredRecord};
use std::path::Path;

/// Fuzz target names, which are also the corpus directory names.
pub const TARGETS: &[&str] = &[
    "event_record",
    "snapshot",
    "config",
    "checkpoint",
    "derp_frame",
    "stun",
    "noise_frames",
    "noise_handshake",
    "upgrade_request",
    "control_json",
    "extra_records",
    "policy",
    "jsonl_export",
];

/// Runs the check of `target` on one input; `false` for an unknown target.
pub fn check(target: &str, data: &[u8]) -> bool {
    match target {
        "event_record" => check_event_record(data),
        "snapshot" => check_snapshot(data),
        "config" => check_config(data),
        "checkpoint" => check_checkpoint(data),
        "derp_frame" => check_derp_frame(data),
        "stun" => check_stun(data),
        "noise_frames" => check_noise_frames(data),
        "noise_handshake" => check_noise_handshake(data),
        "upgrade_request" => check_upgrade_request(data),
        "control_json" => check_control_json(data),
        "extra_records" => check_extra_records(data),
        "policy" => check_policy(data),
        "jsonl_export" => check_jsonl_export(data),
        _ => return false,
    }
    true
}

/// `data` is a stored record value (`StoredRecord::to_bytes`). It is decoded as stored, then
/// again with its payload hash recomputed, so that mutated payloads get past the SHA-256
/// check and reach the envelope decoder.
pub fn check_event_record(data: &[u8]) {
    decode_record(data);
    if data.len() >= RECORD_HEADER_LEN {
        let mut fixed = data.to_vec();
        let hash = sha256(&data[RECORD_HEADER_LEN..]);
        fixed[33..RECORD_HEADER_LEN].copy_from_slice(&hash.0);
        decode_record(&fixed);
    }
}

/// Decodes at seq 0 (no real record is stored there), then at the seq the envelope names,
/// and checks that a decoded envelope survives re-encoding.
fn decode_record(data: &[u8]) {
    let Ok(record) = StoredRecord::from_bytes(0, data) else {
        return;
    };
    let envelope = match record.envelope() {
        Ok(envelope) => envelope,
        Err(DecodeError::SeqMismatch { found, .. }) => {
            let record = StoredRecord::from_bytes(found, data)
                .expect("bytes that parsed at seq 0 parse at any seq");
            record
                .envelope()
                .expect("an envelope that decoded at the wrong seq decodes at its own")
        }
        Err(_) => return,
    };
    let reencoded = StoredRecord::encode(&envelope, record.prev_hash)
        .expect("a decoded envelope encodes again");
    assert_eq!(reencoded.seq, envelope.seq);
    assert_eq!(reencoded.prev_hash, record.prev_hash);
    let back = reencoded
        .envelope()
        .expect("a re-encoded envelope decodes again");
    assert_eq!(
        back, envelope,
        "envelope changed on an encode/decode round trip"
    );
    let reparsed = StoredRecord::from_bytes(envelope.seq, &reencoded.to_bytes())
        .expect("a freshly encoded record parses");
    assert_eq!(reparsed, reencoded);
}

/// `data` is snapshot bytes (`encode_snapshot`).
pub fn check_snapshot(data: &[u8]) {
    let Ok(state) = decode_snapshot(data) else {
        return;
    };
    let bytes = encode_snapshot(&state).expect("a decoded state encodes again");
    let back = decode_snapshot(&bytes).expect("a re-encoded snapshot decodes again");
    assert_eq!(back, state, "state changed on an encode/decode round trip");
}

/// `data` is a YAML config file; input that is not UTF-8 is skipped, as `load` would refuse it.
pub fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = headscale::config::load_str(text, Path::new("fuzz.yaml"), &|_| None);
}

/// `data` is an extra-records file (`dns.extra_records_path`). Parsing never panics; what it
/// accepts is within the size bound, duplicate-free, passes the per-record rules, survives a
/// write-out in the same format unchanged, and renders into a `DNSConfig`.
pub fn check_extra_records(data: &[u8]) {
    use headscale::config::extra_records::{check_record, parse, MAX_FILE_BYTES};
    let Ok(records) = parse(data) else {
        return;
    };
    assert!(data.len() as u64 <= MAX_FILE_BYTES);
    for (i, record) in records.iter().enumerate() {
        assert!(
            check_record(record).is_ok(),
            "accepted a bad record: {record:?}"
        );
        assert!(
            !records[..i].contains(record),
            "kept a duplicate: {record:?}"
        );
    }
    let written = serde_json::to_vec(&records).expect("records serialise");
    let back = parse(&written).expect("written-out records parse again");
    assert_eq!(back, records, "records changed on a write-out round trip");
    let config = headscale::config::Config::default();
    let dns = headscale::control::netmap_context::dns_config_with(&config, &records);
    assert_eq!(dns.extra_records.len(), records.len());
    headscale::tailcfg::SharedJson::new(&dns).expect("a DNSConfig with these records encodes");
}

/// `data` is checkpoint bytes (`Checkpoint::to_bytes`); a decoded checkpoint must survive
/// re-encoding (its signature need not verify).
pub fn check_checkpoint(data: &[u8]) {
    let Ok(checkpoint) = Checkpoint::from_bytes(data) else {
        return;
    };
    let back = Checkpoint::from_bytes(&checkpoint.to_bytes())
        .expect("a re-encoded checkpoint decodes again");
    assert_eq!(
        back, checkpoint,
        "checkpoint changed on an encode/decode round trip"
    );
}

/// `data` is a stream of DERP frames, read as the relay reads a client and as a client reads
/// the relay: splitting and decoding never panic, no frame exceeds its type's limit, and a
/// decoded frame re-encodes to bytes that decode to the same frame.
pub fn check_derp_frame(data: &[u8]) {
    use headscale::derp::frame::{max_payload, split_frame, ClientFrame, ServerFrame};
    let mut rest = data;
    while let Ok(Some((header, payload, used))) = split_frame(rest) {
        assert!(used <= rest.len() && payload.len() == header.len);
        assert!(header.len <= max_payload(header.kind), "limit not enforced");
        if let Ok(frame) = ClientFrame::decode(header.kind, payload) {
            let bytes = frame.encode();
            let (again, again_payload, _) = split_frame(&bytes)
                .expect("an encoded client frame splits")
                .expect("an encoded client frame is complete");
            let back = ClientFrame::decode(again.kind, again_payload)
                .expect("an encoded client frame decodes");
            assert_eq!(back, frame, "client frame changed on a round trip");
        }
        if let Ok(frame) = ServerFrame::decode(header.kind, payload) {
            let bytes = frame.encode();
            let (again, again_payload, _) = split_frame(&bytes)
                .expect("an encoded server frame splits")
                .expect("an encoded server frame is complete");
            let back = ServerFrame::decode(again.kind, again_payload)
                .expect("an encoded server frame decodes");
            assert_eq!(back, frame, "server frame changed on a round trip");
        }
        rest = &rest[used..];
    }
}

/// `data` is one UDP datagram to the STUN port: parsing never panics, and an accepted
/// request gets a response that carries its transaction id and the sender's address.
pub fn check_stun(data: &[u8]) {
    use headscale::derp::stun::{binding_response, parse_binding_request, parse_binding_response};
    let Ok(txid) = parse_binding_request(data) else {
        return;
    };
    assert_eq!(
        &data[8..20],
        &txid,
        "transaction id not taken from the header"
    );
    for addr in ["192.0.2.7:41641", "[2001:db8::7]:3478"] {
        let addr: std::net::SocketAddr = addr.parse().expect("a literal address");
        let response = binding_response(&txid, addr);
        assert_eq!(parse_binding_response(&txid, &response), Some(addr));
    }
}

/// The server's Noise static key in the handshake checks (the seeds are made for it).
pub const FUZZ_SERVER_KEY: [u8; 32] = [9; 32];
/// Split keys of the record-layer checks: k1 protects client→server, k2 server→client.
const K1: [u8; 32] = [1; 32];
const K2: [u8; 32] = [2; 32];

/// The server's record reader after a handshake: `data` is fed raw (in two pieces, split
/// where its first byte says), then sealed by the matching client sender and read back,
/// which must give `data` again whatever the piece sizes.
pub fn check_noise_frames(data: &[u8]) {
    use headscale::control::noise::{client_records, MAX_FRAME_LEN};
    let (_, mut server_rx) = client_records(K2, K1);
    let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let mut out = Vec::new();
    if server_rx.open(&data[..split], &mut out).is_ok() {
        let _ = server_rx.open(&data[split..], &mut out);
    }
    assert!(out.len() <= data.len(), "more plaintext than input");

    let (mut client_tx, _) = client_records(K1, K2);
    let (_, mut server_rx) = client_records(K2, K1);
    let mut wire = Vec::new();
    client_tx
        .seal(data, &mut wire)
        .expect("sealing never fails");
    let mut pos = 0;
    while pos < wire.len() {
        let len = u16::from_be_bytes([wire[pos + 1], wire[pos + 2]]) as usize;
        assert!(3 + len <= MAX_FRAME_LEN, "a sealed record over 4096 bytes");
        pos += 3 + len;
    }
    let piece = data.first().map_or(1, |b| *b as usize % 97 + 1);
    let mut plain = Vec::new();
    for chunk in wire.chunks(piece) {
        server_rx.open(chunk, &mut plain).expect("own records open");
    }
    assert_eq!(plain, data, "records did not round-trip");
}

/// `data` is a handshake initiation for the responder. Also tried with the header forced to
/// type 1 / length 96, so mutations of the keys and tags reach the Noise code.
pub fn check_noise_handshake(data: &[u8]) {
    use headscale::control::noise::{accept, INITIATION_LEN, RESPONSE_LEN};
    let server = x25519_dalek::StaticSecret::from(FUZZ_SERVER_KEY);
    if let Ok(accepted) = accept(&server, data) {
        assert_eq!(data.len(), INITIATION_LEN);
        assert_eq!(accepted.response.len(), RESPONSE_LEN);
        assert_eq!(accepted.version, u16::from_be_bytes([data[0], data[1]]));
    }
    if data.len() >= INITIATION_LEN {
        let mut forced = data[..INITIATION_LEN].to_vec();
        forced[2..5].copy_from_slice(&[1, 0, 96]);
        let _ = accept(&server, &forced);
    }
}

/// `data` is `Upgrade` and `X-Tailscale-Handshake` values separated by a NUL byte (no NUL:
/// the handshake header is absent). What passes the checks goes on to the handshake.
pub fn check_upgrade_request(data: &[u8]) {
    use headscale::control::upgrade::{validate_upgrade, UPGRADE_PROTOCOL};
    let (upgrade, handshake) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let upgrade = (!upgrade.is_empty()).then_some(upgrade);
    if let Ok(initiation) = validate_upgrade(upgrade, handshake) {
        let protocol = upgrade.map(|u| String::from_utf8_lossy(u).to_ascii_lowercase());
        assert_eq!(protocol.as_deref(), Some(UPGRADE_PROTOCOL));
        assert!(initiation.len() <= 1024);
        check_noise_handshake(&initiation);
    }
}

/// `data` is a JSON body of `/machine/register` or `/machine/map`: decoded as both, and
/// put through the conversions the handlers do. What decodes must survive our client's
/// encoding (the same types, serialized) unchanged.
pub fn check_control_json(data: &[u8]) {
    use headscale::control::map_stream::report_of;
    use headscale::core::keys::{DiscoKey, NodeKey};
    use headscale::core::limits::{self, Mode};
    use headscale::tailcfg::{Hostinfo, MapRequest, RegisterRequest};
    if let Ok(request) = serde_json::from_slice::<RegisterRequest>(data) {
        let _ = NodeKey::parse(&request.node_key, false);
        let _ = NodeKey::parse(&request.old_node_key, false);
        let _ = request
            .expiry
            .as_deref()
            .and_then(headscale::core::Timestamp::parse_rfc3339);
        let _ = limits::normalise_hostinfo(request.hostinfo.as_ref(), Mode::Refuse);
        let value = serde_json::to_value(&request).expect("encodes");
        let again: RegisterRequest = serde_json::from_value(value.clone()).expect("decodes again");
        assert_eq!(serde_json::to_value(&again).expect("encodes"), value);
    }
    if let Ok(request) = serde_json::from_slice::<MapRequest>(data) {
        let _ = NodeKey::parse(&request.node_key, false);
        let _ = DiscoKey::parse(&request.disco_key, false);
        // Whatever a map request carries, what is kept is within the named limits.
        let (report, facts) = report_of(&request);
        if let Some(shown) = &report.hostinfo {
            let len = serde_json::to_vec(shown.as_ref()).expect("encodes").len();
            assert!(len <= limits::MAX_HOSTINFO_JSON_BYTES);
        }
        assert!(report
            .endpoints
            .is_none_or(|e| e.len() <= limits::MAX_ENDPOINTS));
        if let Some(facts) = facts {
            assert!(facts.hostname.len() <= limits::MAX_HOSTNAME_BYTES);
            assert!(facts.advertised_routes.len() <= limits::MAX_ROUTES);
            assert!(facts.requested_tags.len() <= limits::MAX_TAGS);
            assert!(facts.ssh_host_keys.len() <= limits::MAX_SSH_HOST_KEYS);
        }
        if let Some(raw) = &request.hostinfo {
            if let Ok(wire) = serde_json::from_value::<Hostinfo>(raw.clone()) {
                let _ = limits::normalise_hostinfo(Some(&wire), Mode::Truncate);
            }
        }
        let value = serde_json::to_value(&request).expect("encodes");
        let again: MapRequest = serde_json::from_value(value.clone()).expect("decodes again");
        assert_eq!(serde_json::to_value(&again).expect("encodes"), value);
    }
}

/// Policy inputs larger than this are skipped: real policies are a few KB, and the check
/// compiles every input against a whole tailnet, so big inputs only slow the fuzzer down.
pub const MAX_POLICY_INPUT: usize = 64 << 10;

/// The tailnet every fuzzed policy is compiled against: three users (two e-mail domains),
/// personal nodes, tagged nodes (one with two tags and no IPv6), a tagged subnet router, a
/// user-owned subnet router and an exit node, so every alias kind resolves to something.
pub fn policy_topology() -> headscale::core::policy::Topology {
    use headscale::core::policy::{Topology, TopologyNode, TopologyUser};
    let user = |id: u64, name: &str, email: &str| TopologyUser {
        id,
        name: name.into(),
        email: email.into(),
        provider_identifier: String::new(),
        role: Default::default(),
    };
    let node =
        |id: u64, name: &str, user: Option<u64>, tags: &[&str], routes: &[&str]| TopologyNode {
            id,
            name: name.into(),
            user,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ipv4: Some(std::net::Ipv4Addr::new(100, 64, 0, id as u8)),
            ipv6: Some(
                format!("fd7a:115c:a1e0::{id:x}")
                    .parse()
                    .expect("an IPv6 literal"),
            ),
            routes: routes
                .iter()
                .map(|r| r.parse().expect("a route literal"))
                .collect(),
        };
    let mut kakuna = node(7, "kakuna", None, &["tag:prod", "tag:server"], &[]);
    kakuna.ipv6 = None;
    Topology {
        users: vec![
            user(1, "odin", "odin@example.com"),
            user(2, "thor", "thor@example.org"),
            user(3, "freya", "freya@example.com"),
        ],
        nodes: vec![
            node(1, "bulbasaur", Some(1), &[], &[]),
            node(2, "ivysaur", Some(2), &[], &[]),
            node(3, "venusaur", Some(3), &[], &["192.168.1.0/24"]),
            node(4, "beedrill", None, &["tag:server"], &[]),
            node(5, "squirtle", None, &["tag:router"], &["10.33.0.0/16"]),
            node(6, "charmander", None, &["tag:exit"], &["0.0.0.0/0", "::/0"]),
            kakuna,
        ],
    }
}

/// `data` is HuJSON policy text (non-UTF-8 and inputs over `MAX_POLICY_INPUT` skipped).
/// Errors must be one non-empty line (they end up in API answers and CLI output); a policy
/// that parses is compiled against `policy_topology` and every per-node question is asked,
/// and its own `tests` are run: none of that may panic.
pub fn check_policy(data: &[u8]) {
    use headscale::core::policy::{policy_tests, Compiled, Policy};
    use std::sync::Arc;
    if data.len() > MAX_POLICY_INPUT {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let one_line = |what: &str, error: &str| {
        assert!(
            !error.is_empty() && !error.contains('\n'),
            "{what} error is not one line: {error:?}"
        );
    };
    let policy = match Policy::parse(text) {
        Ok(policy) => Arc::new(policy),
        Err(error) => return one_line("parse", &error),
    };
    let topology = Arc::new(policy_topology());
    if let Err(error) = policy_tests::run(&policy, &topology) {
        one_line("tests", &error);
    }
    let compiled = Compiled::new(policy, topology.clone());
    let n = topology.nodes.len();
    let mut routes: Vec<_> = topology
        .nodes
        .iter()
        .flat_map(|n| n.routes.clone())
        .collect();
    routes.push("172.16.0.0/12".parse().expect("a route literal"));
    routes.push("10.33.5.0/24".parse().expect("a route literal"));
    for i in 0..n {
        let _ = compiled.filter(i);
        let peers = compiled.peers(i);
        assert!(
            peers.iter().all(|&p| p < n && p != i),
            "peers of node {i} out of range or include itself: {peers:?}"
        );
        let _ = compiled.ssh(i, "https://headscale.example.com");
        let _ = compiled.node_caps(i);
        for route in &routes {
            let _ = compiled.route_access(i, route);
            let ranked: Vec<usize> = (0..n).collect();
            for router in 0..n {
                let _ = compiled.shows_route(i, router, route, &ranked);
            }
        }
    }
}

/// `data` is an export file (`headscale events export`, JSON lines). Verifying it never
/// panics, and a file that verifies re-exports, from what the verifier read, to exactly the
/// same bytes (the format has one encoding, so nothing in a verified file goes unchecked).
pub fn check_jsonl_export(data: &[u8]) {
    use headscale::store::jsonl_export::{verify_with, Item, Writer};
    let mut items = Vec::new();
    let Ok(summary) = verify_with(data, None, |item| {
        items.push(item);
        Ok(())
    }) else {
        return;
    };
    let mut writer = Writer::new(Vec::new(), &summary.header).expect("a verified header writes");
    for item in &items {
        match item {
            Item::Record(record, _) => writer.record(record).expect("a verified record writes"),
            Item::Checkpoint(checkpoint) => writer
                .checkpoint(checkpoint)
                .expect("a verified checkpoint writes"),
            Item::Header(_) | Item::Trailer(_) => {}
        }
    }
    let (bytes, trailer) = writer.finish().expect("a verified export finishes");
    assert_eq!(trailer.last_hash, summary.head_hash);
    assert!(bytes == data, "a verified export re-exports to other bytes");
}
