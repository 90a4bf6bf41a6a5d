//! Connection exhaustion. A9: idle TCP, idle h2c prefaces, idle Noise sessions, stalled
//! DERP handshakes and HTTP/1 slowloris held at once, with the server started under the
//! common default soft `RLIMIT_NOFILE` of 1024 (hard limit unchanged): the server must raise
//! its soft limit, keep its fds below it minus a reserve, enforce the per-IP cap (256) and
//! still accept a new legitimate client within 1 s. A10: a `/ts2021` handshake flood from
//! one IP meets the per-IP limiter (20/s, burst 100); a flood from many IPs leaves the
//! canary working.

use crate::common::CLIENT_CAPVER;
use crate::derp_client;
use crate::harness::{ip, register_node, scale, soft_nofile, Canary, Scenario};
use crate::MAX_RSS_MIB;
use headscale::client::raw::{handshake_on, tcp_from, Handshake, RawSession};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Headroom the server keeps below its fd limit (listeners, store, log files).
const FD_RESERVE: u64 = 64;
/// Per-IP connection cap (limits table).
const PER_IP_CAP: usize = 256;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Starts the server with a soft fd limit of 1024 (the hard limit stays).
fn spawn_with_low_soft_limit(server: &mut crate::common::TestServer) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    let saved = limit;
    limit.rlim_cur = 1024.min(limit.rlim_max);
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    server.spawn();
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) };
}

/// Whether the server has closed `tcp` (EOF or reset), without waiting.
fn is_closed(tcp: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match tcp.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a9_connection_exhaustion() {
    let mut s =
        Scenario::start_with("a9_connection_exhaustion", "", spawn_with_low_soft_limit).await;
    let canary = Canary::start(&s).await;
    let per_kind = scale(300, 3000);
    let source = |i: usize| ip(9, (i / 100) as u8, (i % 100) as u8 + 1);
    let url = s.url();
    let port = s.port();
    let server_key = s.server_key;
    // Each kind opened 32 at a time.
    let mut held: Vec<TcpStream> = Vec::new();
    let mut sessions = Vec::new();
    let mut opened = [0usize; 5];
    for batch in (0..per_kind).collect::<Vec<_>>().chunks(32) {
        let idle = batch.iter().map(|&i| tcp_from(&url, source(i)));
        for tcp in futures_util::future::join_all(idle)
            .await
            .into_iter()
            .flatten()
        {
            held.push(tcp);
            opened[0] += 1;
        }
        let url_ref = &url;
        let prefaces = batch.iter().map(|&i| async move {
            let mut tcp = tcp_from(url_ref, source(i)).await.ok()?;
            tcp.write_all(PREFACE).await.ok()?;
            Some(tcp)
        });
        for tcp in futures_util::future::join_all(prefaces)
            .await
            .into_iter()
            .flatten()
        {
            held.push(tcp);
            opened[1] += 1;
        }
        // A stalled DERP handshake: upgraded, no ClientInfo.
        let derps = batch.iter().map(|&i| derp_client::upgrade(port, source(i)));
        for tcp in futures_util::future::join_all(derps)
            .await
            .into_iter()
            .flatten()
        {
            held.push(tcp);
            opened[3] += 1;
        }
        // Idle Noise sessions.
        let noises = batch.iter().map(|&i| {
            let url = url.clone();
            async move {
                let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
                RawSession::connect_from(&url, source(i), &machine, server_key, CLIENT_CAPVER)
                    .await
                    .ok()
            }
        });
        for session in futures_util::future::join_all(noises)
            .await
            .into_iter()
            .flatten()
        {
            sessions.push(session);
            opened[2] += 1;
        }
    }
    // Slowloris: a request head one byte at a time.
    let slow_count = scale(50, 500);
    let mut slow = Vec::new();
    for i in 0..slow_count {
        if let Ok(tcp) = tcp_from(&url, source(i)).await {
            slow.push(tcp);
            opened[4] += 1;
        }
    }
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    for step in 0..3 {
        for tcp in slow.iter_mut() {
            let _ = tcp.write_all(&request[step..step + 1]).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The per-IP cap: one more address opens 300 idle connections.
    let lone: IpAddr = ip(9, 200, 1);
    let mut crowd = Vec::new();
    for _ in 0..PER_IP_CAP + 44 {
        if let Ok(tcp) = tcp_from(&url, lone).await {
            crowd.push(tcp);
        }
    }
    // A new legitimate client, while all that is held.
    let mut legit = Vec::new();
    for n in 0..3 {
        let start = Instant::now();
        let joined = tokio::time::timeout(
            Duration::from_secs(1),
            register_node(&url, &s.canary_key, &format!("legit-{n}")),
        )
        .await;
        legit.push((start.elapsed(), joined.map(|r| r.is_ok()).unwrap_or(false)));
    }
    // Connections over the cap are closed at once; poll up to 1 s for it.
    let mut closed = vec![false; crowd.len()];
    let deadline = Instant::now() + Duration::from_secs(1);
    let still_open = loop {
        for (tcp, closed) in crowd.iter().zip(closed.iter_mut()) {
            *closed = *closed || is_closed(tcp);
        }
        let open = closed.iter().filter(|c| !**c).count();
        if open <= PER_IP_CAP || Instant::now() >= deadline {
            break open;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let soft = soft_nofile(s.pid);
    let report = canary.finish().await;
    eprintln!(
        "a9: held idle TCP {}, h2c {}, Noise {}, DERP {}, slowloris {}; server soft RLIMIT_NOFILE {soft}; one IP kept {still_open} of {} connections; legit joins {:?}",
        opened[0], opened[1], opened[2], opened[3], opened[4], crowd.len(), legit
    );
    for (n, (took, ok)) in legit.iter().enumerate() {
        s.check(*ok, || {
            format!("legit client {n} did not register within 1 s ({took:?})")
        });
    }
    s.check(still_open <= PER_IP_CAP, || {
        format!("one IP holds {still_open} open connections, per-IP cap {PER_IP_CAP}")
    });
    s.check(soft > 1024, || {
        "the server did not raise its soft RLIMIT_NOFILE above 1024".into()
    });
    drop((held, sessions, slow, crowd));
    s.finish(report, MAX_RSS_MIB, soft.saturating_sub(FD_RESERVE));
}

/// Handshakes from `sources` for `seconds` (16 at a time): (accepted, refused).
async fn handshake_flood(s: &Scenario, sources: Vec<IpAddr>, seconds: f64) -> (usize, usize) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (accepted, refused) = (accepted.clone(), refused.clone());
            let (url, key, sources) = (s.url(), s.server_key, sources.clone());
            tokio::spawn(async move {
                let mut n = t;
                while start.elapsed().as_secs_f64() < seconds {
                    n += 16;
                    let source = sources[n % sources.len()];
                    let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
                    let outcome = match tcp_from(&url, source).await {
                        Ok(tcp) => handshake_on(tcp, &url, &machine, key, CLIENT_CAPVER).await,
                        Err(e) => Err(e),
                    };
                    match outcome {
                        Ok(Handshake::Accepted(_)) => accepted.fetch_add(1, Ordering::Relaxed),
                        _ => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a10_handshake_flood() {
    let mut s = Scenario::start("a10_handshake_flood", "").await;
    let canary = Canary::start(&s).await;
    let seconds = scale(3, 10) as f64;
    let start = Instant::now();
    let (accepted, refused) = handshake_flood(&s, vec![ip(10, 0, 1)], seconds).await;
    let one_ip_seconds = start.elapsed().as_secs_f64();
    let many: Vec<IpAddr> = (0..scale(50, 500))
        .map(|i| ip(10, 1 + (i / 250) as u8, (i % 250) as u8 + 1))
        .collect();
    let (many_accepted, many_refused) = handshake_flood(&s, many, seconds).await;
    let report = canary.finish().await;
    eprintln!(
        "a10: one IP {one_ip_seconds:.1} s: {accepted} accepted, {refused} refused; many IPs: {many_accepted} accepted, {many_refused} refused"
    );
    let bound = 100 + (20.0 * one_ip_seconds).ceil() as usize + 10;
    s.check(accepted <= bound, || {
        format!("{accepted} handshakes accepted from one IP in {one_ip_seconds:.1} s, bound {bound} (20/s, burst 100)")
    });
    s.check(accepted + refused > 100, || {
        "the flood made almost no attempts".into()
    });
    s.finish(report, MAX_RSS_MIB, crate::MAX_FDS);
}
