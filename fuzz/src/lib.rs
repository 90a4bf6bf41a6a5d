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
