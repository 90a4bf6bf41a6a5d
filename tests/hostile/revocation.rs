//! A6: revocation. The admin expires one node and deletes another while each holds a map
//! stream and a DERP connection: within a second the expired node's map has no peers (or
//! its stream ends) and a non-streaming map gives it none; the deleted node's stream ends;
//! both DERP connections are closed within 1 s.

use crate::derp_client::{node_secret, DerpClient};
use crate::harness::{ip, register_node_as, Canary, Scenario, Streaming};
use crate::{MAX_FDS, MAX_RSS_MIB};
use headscale::tailcfg::MapRequest;
use std::time::Duration;

/// Whether a `Streaming::until` error means the server ended the stream (not a timeout).
fn stream_ended(error: &str) -> bool {
    !error.contains("not within") && !error.contains("timed out")
}

/// A registered node holding a map stream and a DERP connection.
async fn revocable(s: &Scenario, hostname: &str, source: u8) -> (Streaming, DerpClient) {
    let (secret, node_key) = node_secret();
    let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    let node = register_node_as(&s.url(), machine, &s.attacker_key, hostname, &node_key)
        .await
        .unwrap();
    let stream = Streaming::open(node).await;
    let derp = DerpClient::connect(s.port(), ip(6, 0, source), &secret)
        .await
        .expect("a registered node is admitted to DERP");
    (stream, derp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a6_revocation_ends_streams_and_derp() {
    let mut s = Scenario::start("a6_revocation", "").await;
    let canary = Canary::start(&s).await;
    let (mut expired, mut expired_derp) = revocable(&s, "to-expire", 1).await;
    let (mut deleted, mut deleted_derp) = revocable(&s, "to-delete", 2).await;
    let peers_before = expired.netmap.peers.len();
    s.check(peers_before > 0, || {
        "the node to expire sees no peers to lose".into()
    });

    let id = expired.netmap.self_node.as_ref().unwrap().id;
    let (status, _) = s
        .admin("POST", &format!("/api/v1/node/{id}/expire"), None)
        .await;
    assert_eq!(status, 200);
    let no_peers = expired
        .until(Duration::from_secs(1), |n| n.peers.is_empty())
        .await;
    s.check(no_peers.is_ok() || no_peers.as_ref().is_err_and(|e| stream_ended(e)), || {
        format!(
            "1 s after expiry the expired node still has {} peers and its stream is open ({no_peers:?})",
            expired.netmap.peers.len()
        )
    });
    let closed = expired_derp.closed_within(Duration::from_secs(1)).await;
    s.check(closed, || {
        "the expired node's DERP connection is open 1 s after expiry".into()
    });
    // A fresh, non-streaming full map for the expired node.
    let m = &expired.machine;
    let request = MapRequest {
        stream: false,
        ..m.client.stream_request(&m.node_key, &m.disco_key, vec![])
    };
    match m.client.map_stream(&request).await {
        Ok(mut one) => match one.next_within(Duration::from_secs(5)).await {
            Some(Ok(message)) => {
                let peers = message.response.peers.map_or(0, |p| p.len());
                s.check(peers == 0, || {
                    format!("a non-streaming map for the expired node lists {peers} peers")
                });
            }
            other => eprintln!("a6: non-streaming map for the expired node: {other:?}"),
        },
        Err(e) => eprintln!("a6: non-streaming map for the expired node refused: {e}"),
    }

    let id = deleted.netmap.self_node.as_ref().unwrap().id;
    let (status, _) = s.admin("DELETE", &format!("/api/v1/node/{id}"), None).await;
    assert_eq!(status, 200);
    let ended = deleted.until(Duration::from_secs(1), |_| false).await;
    s.check(ended.as_ref().is_err_and(|e| stream_ended(e)), || {
        format!("the deleted node's stream is still open 1 s after deletion ({ended:?})")
    });
    let closed = deleted_derp.closed_within(Duration::from_secs(1)).await;
    s.check(closed, || {
        "the deleted node's DERP connection is open 1 s after deletion".into()
    });
    let report = canary.finish().await;
    s.finish(report, MAX_RSS_MIB, MAX_FDS);
}
