//! A11: DERP abuse. An unknown key is not admitted; a registered node sending a 1 MiB frame
//! of an unknown type has it skipped and one declaring more than the 1 MiB frame cap is
//! closed (only its own connection); a ping flood from a node that
//! never reads and a flood of packets to absent keys do not starve two legitimate nodes
//! relaying to each other (≥ 95 % of their packets arrive, each within 1 s).

use crate::derp_client::{node_secret, read_frame, DerpClient};
use crate::harness::{ip, register_node_as, scale, Canary, Scenario};
use crate::{MAX_FDS, MAX_RSS_MIB};
use crypto_box::aead::OsRng;
use crypto_box::SecretKey;
use headscale::derp::frame::{self, ClientFrame, MAX_FRAME_LEN};
use std::time::{Duration, Instant};

/// A node registered with the attacker's key, logged in to DERP from `source`.
async fn derp_node(s: &Scenario, hostname: &str, source: u8) -> DerpClient {
    let (secret, node_key) = node_secret();
    let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    register_node_as(&s.url(), machine, &s.attacker_key, hostname, &node_key)
        .await
        .unwrap();
    DerpClient::connect(s.port(), ip(11, 0, source), &secret)
        .await
        .expect("a registered node is admitted")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a11_derp_abuse() {
    let mut s = Scenario::start("a11_derp_abuse", "").await;
    let canary = Canary::start(&s).await;
    let mut alice = derp_node(&s, "alice", 1).await;
    let mut bob = derp_node(&s, "bob", 2).await;

    let stranger = SecretKey::generate(&mut OsRng);
    let admitted = DerpClient::connect(s.port(), ip(11, 0, 3), &stranger)
        .await
        .is_some();
    s.check(!admitted, || "an unknown key was admitted to DERP".into());

    // Unknown frame types are skipped up to the 1 MiB frame cap (as Tailscale does) and
    // the connection keeps working; a frame declaring more closes it.
    let mut big = derp_node(&s, "big-frames", 4).await;
    let unknown = |len: usize| {
        let mut frame = vec![0x7f];
        frame.extend_from_slice(&(len as u32).to_be_bytes());
        frame
    };
    let mut at_cap = unknown(MAX_FRAME_LEN);
    at_cap.extend(std::iter::repeat_n(0u8, MAX_FRAME_LEN));
    let _ = big.send_raw(&at_cap).await;
    let _ = big.send(ClientFrame::Ping(*b"afterbig")).await;
    let pong = loop {
        match read_frame(&mut big.reader, Duration::from_secs(2)).await {
            Ok(Some((kind, payload))) if kind == frame::kind::PONG => break Some(payload),
            Ok(Some(_)) => continue,
            _ => break None,
        }
    };
    s.check(pong.as_deref() == Some(&b"afterbig"[..]), || {
        format!("after a 1 MiB unknown frame the connection does not answer a ping: {pong:?}")
    });
    let _ = big.send_raw(&unknown(MAX_FRAME_LEN + 1)).await;
    let closed = big.closed_within(Duration::from_secs(2)).await;
    s.check(closed, || {
        "a frame declaring more than 1 MiB did not close its connection".into()
    });

    // The floods, while alice sends to bob.
    let mut pinger = derp_node(&s, "pinger", 5).await;
    let mut sprayer = derp_node(&s, "sprayer", 6).await;
    let count = scale(20_000, 200_000);
    let ping_flood = tokio::spawn(async move {
        for i in 0..count {
            if !pinger
                .send(ClientFrame::Ping((i as u64).to_be_bytes()))
                .await
            {
                break;
            }
        }
        pinger
    });
    let spray = tokio::spawn(async move {
        let packet = [0u8; 1000];
        for i in 0..count {
            let mut dst = [0u8; 32];
            dst[..8].copy_from_slice(&(i as u64).to_be_bytes());
            if !sprayer
                .send(ClientFrame::SendPacket {
                    dst,
                    packet: &packet,
                })
                .await
            {
                break;
            }
        }
        sprayer
    });
    let sent = 100;
    let (mut delivered, mut slowest) = (0, Duration::ZERO);
    for i in 0..sent {
        let payload = format!("legit-{i}");
        let start = Instant::now();
        let _ = alice
            .send(ClientFrame::SendPacket {
                dst: bob.public,
                packet: payload.as_bytes(),
            })
            .await;
        if let Some((src, packet)) = bob.recv_packet(Duration::from_secs(1)).await {
            if src == alice.public && packet == payload.as_bytes() {
                delivered += 1;
                slowest = slowest.max(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = ping_flood.await;
    let _ = spray.await;
    let report = canary.finish().await;
    eprintln!("a11: {delivered} of {sent} legitimate packets delivered during the floods, slowest {slowest:?}");
    s.check(delivered * 100 >= sent * 95, || {
        format!(
            "only {delivered} of {sent} legitimate packets delivered within 1 s during the floods"
        )
    });
    s.finish(report, MAX_RSS_MIB, MAX_FDS);
}
