//! MagicDNS with real clients: a peer's name answers with its tailnet address from the
//! `DNSConfig` we send, and a record added to the watched `dns.extra_records_path` file is
//! answered by both client versions without a restart (`tailscale dns query`, which asks the
//! client's own resolver at 100.100.100.100; both pinned versions have it).

use crate::scenarios::{tailnet, wait_peers_online, SHORT};
use crate::server::{Server, BASE_DOMAIN};
use crate::tailscale::{Client, Options, Version};
use crate::wait_until;
use std::path::Path;
use std::time::{Duration, Instant};

/// Waits until `tailscale dns query NAME` on `client` answers with `address`; returns the
/// output.
fn wait_answer(client: &Client, name: &str, address: &str, limit: Duration) -> String {
    wait_until(
        limit,
        &format!("{} to resolve {name} to {address}", client.name),
        || {
            let run = client.run(&["dns", "query", name], SHORT);
            (run.ok && answers(&run.stdout, address)).then_some(run.stdout)
        },
    )
}

/// Whether the query output has `address` as a whole word (so 100.64.0.1 is not found
/// inside 100.64.0.10).
fn answers(output: &str, address: &str) -> bool {
    output
        .split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .any(|word| word == address)
}

/// Replaces the file as a script would: write a sibling, rename it over.
fn replace(path: &Path, text: &str) {
    let staged = path.with_extension("tmp");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// Two nodes (one per pinned version) resolve each other's MagicDNS names, then a record
/// added to the extra-records file while they run, and an edit of it.
pub fn magic_dns_and_extra_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("extra-records.json");
    std::fs::write(&path, "[]").unwrap();
    let server =
        Server::start_with_env(&[("HEADSCALE_DNS_EXTRA_RECORDS_PATH", path.to_str().unwrap())]);
    let none = Options::default();
    let clients = tailnet(
        &server,
        &[
            ("resolver-new", "alice", Version::Newest, none.clone()),
            ("resolver-old", "alice", Version::Oldest, none),
        ],
    );
    // v1.80 in userspace mode has only the no-op OS DNS configurator, which cannot read a
    // base config; with `accept-dns` (CorpDNS) its DNS manager then refuses any config with
    // routes (MagicDNS adds one) and 100.100.100.100 answers nothing ("getting OS base
    // config is not supported" in its log). Without CorpDNS it still loads the hosts, peers'
    // names and our ExtraRecords, into 100.100.100.100. v1.102 needs no such help.
    let set = clients[1].run(&["set", "--accept-dns=false"], SHORT);
    assert!(set.ok, "{set}");
    wait_peers_online(&clients[0], &["resolver-old"]);
    wait_peers_online(&clients[1], &["resolver-new"]);

    // MagicDNS: each resolves the other's FQDN to its tailnet IPv4.
    for (asker, peer) in [(&clients[0], &clients[1]), (&clients[1], &clients[0])] {
        let fqdn = format!("{}.{BASE_DOMAIN}.", peer.name);
        let output = wait_answer(asker, &fqdn, &peer.ipv4(), SHORT);
        println!(
            "  {}: {fqdn} -> {}",
            asker.version.tag(),
            output
                .lines()
                .find(|l| l.contains(&peer.ipv4()))
                .unwrap_or("")
                .trim()
        );
    }
    let unknown = format!("grafana.{BASE_DOMAIN}.");
    for client in &clients {
        let run = client.run(&["dns", "query", &unknown], SHORT);
        assert!(
            !answers(&run.stdout, "100.64.0.99"),
            "{}: answered before the record exists: {run}",
            client.name
        );
    }

    // A record added to the watched file, no restart: both versions answer it.
    let record =
        |name: &str, value: &str| serde_json::json!({"name": name, "type": "A", "value": value});
    // One name under the MagicDNS domain, one outside it (served by 100.100.100.100 too).
    let outside = "wiki.example.internal.";
    let written = Instant::now();
    replace(
        &path,
        &serde_json::json!([
            record(&unknown, "100.64.0.99"),
            record(outside, "100.64.0.97")
        ])
        .to_string(),
    );
    for client in &clients {
        wait_answer(client, &unknown, "100.64.0.99", SHORT);
        println!(
            "  {}: file written -> {unknown} answered in {} ms",
            client.version.tag(),
            written.elapsed().as_millis()
        );
        wait_answer(client, outside, "100.64.0.97", SHORT);
    }

    // Edited: the new address replaces the old one.
    let written = Instant::now();
    replace(
        &path,
        &serde_json::json!([record(&unknown, "100.64.0.98")]).to_string(),
    );
    for client in &clients {
        let output = wait_answer(client, &unknown, "100.64.0.98", SHORT);
        assert!(!answers(&output, "100.64.0.99"), "{output}");
        println!(
            "  {}: file edited -> new address in {} ms",
            client.version.tag(),
            written.elapsed().as_millis()
        );
    }
    for client in &clients {
        client.check_alive();
    }
}
