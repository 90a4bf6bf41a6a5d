//! The admin surfaces. A12: the API lockout — a valid key still works from an IP that
//! failed too often, a spoofed `X-Forwarded-For` from an untrusted peer is ignored (the peer
//! itself is counted), other IPs are unaffected. A13: hostnames carrying ESC, CR, OSC 52,
//! OSC 8 and bidi overrides — `nodes list` and `events list` print them escaped and the
//! login page HTML-escapes them.

use crate::common::CLIENT_CAPVER;
use crate::harness::{api, ip, register_node, Canary, Scenario};
use crate::{MAX_FDS, MAX_RSS_MIB};
use headscale::client::{self, ControlClient};
use headscale::tailcfg::RegisterRequest;

const BAD_KEY: &str =
    "hskey-api-AAAAAAAAAAAA-notavalidsecretnotavalidsecretnotavalidsecretnotavalid";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a12_api_lockout() {
    let mut s = Scenario::start("a12_api_lockout", "").await;
    let canary = Canary::start(&s).await;
    let port = s.port();
    let locked = ip(12, 0, 1);
    let mut last = 0;
    for _ in 0..12 {
        last = api(port, locked, "GET", "/api/v1/user", Some(BAD_KEY), "", None)
            .await
            .0;
    }
    s.check(last == 429, || {
        format!("12 failures from one IP: last answer {last}, want 429")
    });
    let (valid, body) = api(
        port,
        locked,
        "GET",
        "/api/v1/user",
        Some(&s.api_key),
        "",
        None,
    )
    .await;
    s.check(valid == 200, || {
        format!("a valid key from the locked-out IP answered {valid} {body}, want 200")
    });

    let spoofer = ip(12, 0, 2);
    let mut statuses = Vec::new();
    for i in 0..12 {
        let xff = format!("X-Forwarded-For: 10.0.0.{i}\r\n");
        statuses.push(
            api(
                port,
                spoofer,
                "GET",
                "/api/v1/user",
                Some(BAD_KEY),
                &xff,
                None,
            )
            .await
            .0,
        );
    }
    s.check(statuses.last() == Some(&429), || {
        format!("12 failures behind rotating spoofed X-Forwarded-For: {statuses:?}, want the last 429 (XFF from an untrusted peer ignored)")
    });
    let (other, _) = api(
        port,
        ip(12, 0, 3),
        "GET",
        "/api/v1/user",
        Some(BAD_KEY),
        "",
        None,
    )
    .await;
    s.check(other == 401, || {
        format!("a fresh IP with a bad key answered {other}, want 401")
    });
    let report = canary.finish().await;
    s.finish(report, MAX_RSS_MIB, MAX_FDS);
}

/// Characters a terminal must never receive raw from client-controlled text.
fn dangerous(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

const EVIL: &str =
    "evil\u{1b}]52;c;aGVsbG8=\u{7}\r\u{202e}gpj.exe\u{1b}]8;;http://x/\u{1b}\\link\u{1b}[2J";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a13_terminal_and_html_escapes() {
    let mut s = Scenario::start("a13_escapes", "").await;
    let canary = Canary::start(&s).await;
    let joined = register_node(&s.url(), &s.attacker_key, EVIL).await;
    s.check(
        joined.is_ok() || joined.as_ref().is_err_and(|e| e.contains("refused")),
        || {
            format!(
                "registering the evil hostname failed oddly: {:?}",
                joined.as_ref().err()
            )
        },
    );
    for args in [&["nodes", "list"][..], &["events", "list"][..]] {
        let out = s.server.cli(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let raw: Vec<String> = text
            .chars()
            .filter(|c| dangerous(*c))
            .map(|c| format!("U+{:04X}", c as u32))
            .collect();
        s.check(raw.is_empty(), || {
            format!(
                "`{}` printed raw control/bidi characters: {raw:?}",
                args.join(" ")
            )
        });
    }
    // The login page of a pending login with markup in its hostname.
    let client = ControlClient::connect(
        &s.url(),
        x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng),
        CLIENT_CAPVER,
    )
    .await
    .unwrap();
    let answer = client
        .register(&RegisterRequest {
            version: CLIENT_CAPVER.into(),
            node_key: client::random_key("nodekey:").0,
            hostinfo: Some(headscale::tailcfg::Hostinfo {
                hostname: "<script>alert(1)</script>".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let path = answer
        .auth_url
        .split_once("127.0.0.1")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, p)| format!("/{p}"))
        .unwrap_or_default();
    let (status, page) = api(
        s.port(),
        crate::harness::CANARY_IP,
        "GET",
        &path,
        None,
        "",
        None,
    )
    .await;
    s.check(status == 200, || {
        format!("the login page {path} answered {status}")
    });
    s.check(!page.contains("<script>alert"), || {
        "the login page has the hostname's markup raw".into()
    });
    let report = canary.finish().await;
    s.finish(report, MAX_RSS_MIB, MAX_FDS);
}
