//! A2: register floods (no credentials: each request is a pending interactive login with a
//! fresh node key). With small Hostinfo, the quotas: one machine key keeps ≤ 4 pending
//! logins and one source IP ≤ 16. With huge Hostinfo from one machine, many machines on one
//! IP and many IPs: Hostinfo capped or refused (RSS bound). Throughout, the victim's pending
//! login survives (the newcomer is refused, nobody is evicted by age) and `/register/<id>`
//! stays fast.

use crate::common::CLIENT_CAPVER;
use crate::harness::{api, ip, scale, Canary, Scenario, CANARY_IP};
use crate::{MAX_FDS, MAX_RSS_MIB};
use futures_util::StreamExt;
use headscale::client::raw::RawSession;
use headscale::client::{self, ControlClient};
use headscale::tailcfg::RegisterRequest;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A plain, valid Hostinfo: for the quota checks.
const SMALL: usize = 0;

/// A Hostinfo of about `bytes` of JSON made of empty strings (or short routes), the three
/// amplifying variants in turn; with `SMALL`, a plain valid one.
fn huge_hostinfo(variant: usize, bytes: usize) -> Value {
    if bytes == SMALL {
        return json!({"Hostname": format!("pending-{variant}"), "OS": "linux"});
    }
    match variant % 3 {
        0 => json!({"Hostname": "flood", "sshHostKeys": vec![""; bytes / 3]}),
        1 => json!({"Hostname": "flood", "RequestTags": vec![""; bytes / 3]}),
        _ => json!({"Hostname": "flood", "RoutableIPs": vec!["1.2.3.4/32"; bytes / 13]}),
    }
}

/// Sends `count` register requests with fresh node keys over one session; how many got an
/// AuthURL (a pending login was kept).
async fn flood_one_machine(s: &Scenario, source: IpAddr, count: usize, bytes: usize) -> usize {
    let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    let Ok(session) =
        RawSession::connect_from(&s.url(), source, &machine, s.server_key, CLIENT_CAPVER).await
    else {
        return 0;
    };
    // Four requests in flight at a time on the one session.
    let session = &session;
    let sent = (0..count).map(|i| async move {
        let request = json!({
            "Version": CLIENT_CAPVER,
            "NodeKey": client::random_key("nodekey:").0,
            "Hostinfo": huge_hostinfo(i, bytes),
        });
        let Ok((status, body)) = session
            .post(
                "/machine/register",
                serde_json::to_vec(&request).unwrap(),
                1 << 20,
            )
            .await
        else {
            return false;
        };
        let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
        status == 200 && answer["AuthURL"].as_str().is_some_and(|u| !u.is_empty())
    });
    futures_util::stream::iter(sent)
        .buffer_unordered(4)
        .filter(|kept| std::future::ready(*kept))
        .count()
        .await
}

/// `GET /register/<id>`: status and time.
async fn register_page(s: &Scenario, id: &str) -> (u16, Duration) {
    let start = Instant::now();
    let (status, _) = api(
        s.port(),
        CANARY_IP,
        "GET",
        &format!("/register/{id}"),
        None,
        "",
        None,
    )
    .await;
    (status, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_register_floods_with_huge_hostinfo() {
    let mut s = Scenario::start("a2_register_floods", "").await;
    let canary = Canary::start(&s).await;
    // The victim: a legitimate interactive login, waiting for the admin.
    let victim = ControlClient::connect(
        &s.url(),
        x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng),
        CLIENT_CAPVER,
    )
    .await
    .unwrap();
    let answer = victim
        .register(&RegisterRequest {
            version: CLIENT_CAPVER.into(),
            node_key: client::random_key("nodekey:").0,
            hostinfo: Some(headscale::tailcfg::Hostinfo {
                hostname: "victim".into(),
                os: "linux".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let victim_id = answer
        .auth_url
        .rsplit_once("/register/")
        .map(|(_, id)| id.to_string())
        .expect("an AuthURL");

    let mut page_times = Vec::new();
    // The quotas, with a plain valid Hostinfo (so nothing is refused for its content): one
    // machine key, then many machines on one IP.
    let small = SMALL;
    let kept_by_machine = flood_one_machine(&s, ip(2, 0, 1), 20, small).await;
    let kept_by_ip: usize = futures_util::stream::iter(0..30)
        .map(|_| flood_one_machine(&s, ip(2, 0, 2), 1, small))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .sum();
    page_times.push(register_page(&s, &victim_id).await);

    // The memory attack. Hostinfo size: 1/4 of the audit's 1 MiB by default (parse and
    // upload time on this box); about 1/20 of its request count.
    let bytes = scale(256 << 10, (1 << 20) - 8192);
    let mut huge_kept = flood_one_machine(&s, ip(2, 0, 3), scale(100, 1000), bytes).await;
    page_times.push(register_page(&s, &victim_id).await);
    huge_kept += futures_util::stream::iter(0..scale(30, 300))
        .map(|_| flood_one_machine(&s, ip(2, 0, 4), 1, bytes))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .sum::<usize>();
    page_times.push(register_page(&s, &victim_id).await);
    let machines = scale(30, 1000);
    let mut tasks = Vec::new();
    for m in 0..machines {
        let source = ip(2, 1 + (m / 250) as u8, (m % 250) as u8 + 1);
        tasks.push(flood_one_machine(&s, source, 2, bytes));
        if tasks.len() == 8 || m + 1 == machines {
            huge_kept += futures_util::future::join_all(tasks.drain(..))
                .await
                .into_iter()
                .sum::<usize>();
            page_times.push(register_page(&s, &victim_id).await);
        }
    }
    drop(tasks);
    let (status, _) = register_page(&s, &victim_id).await;
    let (approved, body) = s
        .admin(
            "POST",
            "/api/v1/auth/register",
            Some(json!({"authId": victim_id, "user": "canary"})),
        )
        .await;
    let report = canary.finish().await;
    let mut times: Vec<u128> = page_times.iter().map(|(_, t)| t.as_millis()).collect();
    times.sort_unstable();
    let p99 = times[(times.len() * 99).div_ceil(100) - 1];
    eprintln!(
        "a2: plain Hostinfo: one machine kept {kept_by_machine} of 20 pending logins, one IP kept {kept_by_ip} of 30; {bytes}-byte Hostinfo: {huge_kept} kept; /register/<id> p99 {p99} ms over {} samples",
        times.len()
    );
    s.check((1..=4).contains(&kept_by_machine), || {
        format!("one machine key holds {kept_by_machine} pending logins, quota 4 (and at least 1)")
    });
    s.check((1..=16).contains(&kept_by_ip), || {
        format!("one source IP holds {kept_by_ip} pending logins, quota 16 (and at least 1)")
    });
    s.check(status == 200, || {
        format!("the victim's login page answered {status} after the flood")
    });
    s.check(approved == 200, || {
        format!("approving the victim's pending login after the flood answered {approved} {body}")
    });
    s.check(p99 < 50, || {
        format!("/register/<id> p99 {p99} ms, bound 50 ms")
    });
    s.finish(report, MAX_RSS_MIB, MAX_FDS);
}
