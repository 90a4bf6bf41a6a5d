//! Writes the seed corpora of the control-protocol targets (`noise_frames`,
//! `noise_handshake`, `upgrade_request`, `control_json`) under `fuzz/corpus/<target>/`:
//! real initiations for the fuzzing server key, records, upgrade headers and the JSON bodies
//! tailscaled sends. Does nothing unless `REGENERATE_FUZZ_CORPUS=1`; only `seed-*` files are
//! (re)written. Initiations carry fresh ephemeral keys, so they differ on every run.

use base64::Engine as _;
use headscale::control::noise::initiation;
use std::path::{Path, PathBuf};
use x25519_dalek::{PublicKey, StaticSecret};

/// The fuzzing server key (`headscale_fuzz::FUZZ_SERVER_KEY`).
const SERVER_KEY: [u8; 32] = [9; 32];

fn corpus_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if manifest.ends_with("fuzz") {
        manifest.join("corpus")
    } else {
        manifest.join("fuzz").join("corpus")
    }
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus_root().join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn valid_initiation(version: u16) -> Vec<u8> {
    let server = PublicKey::from(&StaticSecret::from(SERVER_KEY)).to_bytes();
    initiation(&StaticSecret::from([7u8; 32]), &server, version)
        .unwrap()
        .1
}

fn handshakes() {
    for version in [113u16, 142, 145] {
        let init = valid_initiation(version);
        write("noise_handshake", &format!("valid-v{version}"), &init);
        let mut flipped = init.clone();
        flipped[50] ^= 1;
        write("noise_handshake", &format!("flipped-v{version}"), &flipped);
    }
    let mut low_order = valid_initiation(142);
    low_order[5..37].fill(0);
    write("noise_handshake", "low-order-ephemeral", &low_order);
    write("noise_handshake", "short", &valid_initiation(142)[..60]);
    write("noise_handshake", "empty", b"");
}

fn frames() {
    write("noise_frames", "empty", b"");
    write(
        "noise_frames",
        "http2-preface",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",
    );
    write(
        "noise_frames",
        "oversized-header",
        &[4, 0xff, 0xff, 1, 2, 3],
    );
    write(
        "noise_frames",
        "wrong-type",
        &[2, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    write("noise_frames", "big", &vec![0x5a; 9000]);
}

fn upgrades() {
    let encoded = base64::engine::general_purpose::STANDARD.encode(valid_initiation(142));
    let mut good = b"tailscale-control-protocol\0".to_vec();
    good.extend_from_slice(encoded.as_bytes());
    write("upgrade_request", "valid", &good);
    let mut upper = b"Tailscale-Control-Protocol\0".to_vec();
    upper.extend_from_slice(encoded.as_bytes());
    write("upgrade_request", "upper-case", &upper);
    write("upgrade_request", "websocket", b"websocket\0abc");
    write(
        "upgrade_request",
        "no-handshake",
        b"tailscale-control-protocol",
    );
    write(
        "upgrade_request",
        "bad-base64",
        b"tailscale-control-protocol\0!!!not base64!!!",
    );
    write(
        "upgrade_request",
        "short-init",
        b"tailscale-control-protocol\0AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
}

fn control_json() {
    let zero = format!("nodekey:{}", "0".repeat(64));
    let key = format!("nodekey:{}", "ab".repeat(32));
    let disco = format!("discokey:{}", "cd".repeat(32));
    let register = serde_json::json!({
        "Version": 142, "NodeKey": key, "OldNodeKey": zero, "NLKey": format!("nlpub:{}", "11".repeat(32)),
        "Auth": {"AuthKey": "hskey-auth-abcdefghijkl-secret"}, "Expiry": "0001-01-01T00:00:00Z",
        "Followup": "", "Hostinfo": {"IPNVersion": "1.102.3", "OS": "linux", "Hostname": "laptop",
        "RoutableIPs": ["10.0.0.0/24", "0.0.0.0/0"], "RequestTags": ["tag:web"],
        "sshHostKeys": ["ssh-ed25519 AAAA"], "NetInfo": {"PreferredDERP": 900}},
        "Ephemeral": false, "NodeKeySignature": null, "Tailnet": ""
    });
    write("control_json", "register", register.to_string().as_bytes());
    let logout =
        serde_json::json!({"Version": 142, "NodeKey": key, "Expiry": "1970-01-01T00:02:03Z"});
    write(
        "control_json",
        "register-logout",
        logout.to_string().as_bytes(),
    );
    let map = serde_json::json!({
        "Version": 145, "Compress": "zstd", "KeepAlive": true, "NodeKey": key, "DiscoKey": disco,
        "Stream": true, "Hostinfo": {"Hostname": "laptop", "OS": "linux", "NetInfo": {"PreferredDERP": 900, "DERPLatency": {"900-v4": 0.01}}},
        "Endpoints": ["198.51.100.7:41641", "[2001:db8::1]:41641"], "EndpointTypes": [1, 2],
        "OmitPeers": false, "DebugFlags": ["warn-ip-forwarding-off"], "TKAHead": ""
    });
    write("control_json", "map-stream", map.to_string().as_bytes());
    let lite = serde_json::json!({"Version": 145, "NodeKey": key, "DiscoKey": disco, "Stream": false, "OmitPeers": true, "Endpoints": ["192.0.2.1:1"], "Hostinfo": null});
    write("control_json", "map-lite", lite.to_string().as_bytes());
    write("control_json", "not-json", b"{\"Version\":");
    write(
        "control_json",
        "wrong-types",
        br#"{"Version":"x","NodeKey":7,"Endpoints":{}}"#,
    );
}

#[test]
fn regenerate_control_corpus() {
    if std::env::var("REGENERATE_FUZZ_CORPUS").as_deref() != Ok("1") {
        eprintln!("set REGENERATE_FUZZ_CORPUS=1 to rewrite the control-protocol seeds");
        return;
    }
    handshakes();
    frames();
    upgrades();
    control_json();
}
