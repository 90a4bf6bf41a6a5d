//! A8: one node floods the map hub with non-streaming full-map requests and stream
//! re-opens. Over the per-node limits (full maps 1 per 5 s, burst 3; stream opens 1 per 2 s,
//! burst 10) it gets 429, and the canary keeps working.

use crate::harness::{scale, Canary, Scenario, Streaming};
use crate::{MAX_FDS, MAX_RSS_MIB};
use headscale::client::ClientError;
use headscale::tailcfg::MapRequest;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counts {
    ok: AtomicUsize,
    limited: AtomicUsize,
    other: AtomicUsize,
}

impl Counts {
    fn line(&self) -> String {
        format!(
            "{} ok, {} limited (429), {} other",
            self.ok.load(Ordering::Relaxed),
            self.limited.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed)
        )
    }
}

/// Runs `attempt` from 4 tasks for `seconds`, counting outcomes.
async fn flood<F, Fut>(seconds: f64, attempt: F) -> Arc<Counts>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), ClientError>> + Send,
{
    let counts = Arc::new(Counts::default());
    let start = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (attempt, counts) = (attempt.clone(), counts.clone());
            tokio::spawn(async move {
                while start.elapsed().as_secs_f64() < seconds {
                    match attempt().await {
                        Ok(()) => counts.ok.fetch_add(1, Ordering::Relaxed),
                        Err(ClientError::Status { status: 429, .. }) => {
                            counts.limited.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(_) => counts.other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_full_map_and_stream_reopen_floods() {
    let mut s = Scenario::start("a8_map_floods", "").await;
    let canary = Canary::start(&s).await;
    let attacker = Streaming::join(&s.url(), &s.attacker_key, "map-flood").await;
    let machine = Arc::new(attacker.machine);
    let seconds = scale(3, 10) as f64;

    let full_maps = {
        let m = machine.clone();
        flood(seconds, move || {
            let m = m.clone();
            async move {
                let request = MapRequest {
                    stream: false,
                    ..m.client.stream_request(&m.node_key, &m.disco_key, vec![])
                };
                let mut one = m.client.map_stream(&request).await?;
                match one.next_within(Duration::from_secs(10)).await {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => Err(e),
                    None => Err(ClientError::Timeout),
                }
            }
        })
        .await
    };
    let reopens = {
        let m = machine.clone();
        flood(seconds, move || {
            let m = m.clone();
            async move {
                let request = m.client.stream_request(
                    &m.node_key,
                    &m.disco_key,
                    vec!["192.0.2.7:41641".into()],
                );
                let mut stream = m.client.map_stream(&request).await?;
                match stream.next_within(Duration::from_secs(10)).await {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => Err(e),
                    None => Err(ClientError::Timeout),
                }
            }
        })
        .await
    };
    let report = canary.finish().await;
    eprintln!(
        "a8: {seconds} s of full maps: {}; {seconds} s of stream re-opens: {}",
        full_maps.line(),
        reopens.line()
    );
    let full_ok = full_maps.ok.load(Ordering::Relaxed);
    let full_bound = 3 + (seconds / 5.0).ceil() as usize + 1;
    s.check(full_ok <= full_bound, || {
        format!("{full_ok} full maps served in {seconds} s to one node, bound {full_bound} (1 per 5 s, burst 3; then 429)")
    });
    s.check(full_maps.limited.load(Ordering::Relaxed) > 0, || {
        "no full-map request was answered 429".into()
    });
    let reopen_ok = reopens.ok.load(Ordering::Relaxed);
    let reopen_bound = 10 + (seconds / 2.0).ceil() as usize + 1;
    s.check(reopen_ok <= reopen_bound, || {
        format!("{reopen_ok} map streams opened in {seconds} s by one node, bound {reopen_bound} (1 per 2 s, burst 10; then 429)")
    });
    s.check(reopens.limited.load(Ordering::Relaxed) > 0, || {
        "no stream re-open was answered 429".into()
    });
    s.finish(report, MAX_RSS_MIB, MAX_FDS);
}
