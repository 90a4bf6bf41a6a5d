//! OIDC logins with real clients: `tailscale up` against a server whose `oidc:` section names
//! a real OpenID provider (zitadel's example server, inside the harness's namespace); the
//! scripted browser (`common::oidc`) follows the client's AuthURL through the provider's login
//! and our confirmation, and the client reaches `Running`. A second machine of the same person
//! joins the same user; a person outside `allowed_users` is refused and the client stays in
//! `NeedsLogin`, still waiting on the same AuthURL (an allowed person then completes it).

use crate::common::oidc::{oidc_yaml, Browser, LoginOutcome, OidcProvider, OidcUser, Step};
use crate::scenarios::{LONG, SHORT};
use crate::server::Server;
use crate::tailscale::{Background, Client, Options, Version};
use crate::wait_until;
use std::time::Instant;

/// One scenario per client version (see the module doc); prints AuthURL → Running times.
pub fn oidc_login(version: Version) {
    let alice = OidcUser::new("sub-alice", "alice", "alice@example.com");
    let bob = OidcUser::new("sub-bob", "bob", "bob@example.com");
    let mut provider = None;
    let server = Server::start_with_extra(|port| {
        let callback = format!("http://127.0.0.1:{port}/oidc/callback");
        let started = OidcProvider::start(&[&alice, &bob], &[&callback]);
        let yaml = oidc_yaml(started.port, "  allowed_users: [alice@example.com]\n");
        provider = Some(started);
        yaml
    });
    let provider = provider.expect("the provider started with the server's config");
    let _logs = ProviderLog(&provider);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let login = |url: &str, user: &OidcUser| -> LoginOutcome {
        runtime.block_on(async {
            Browser::new()
                .login(url, &user.username, &user.password)
                .await
        })
    };

    for name in ["oidc-laptop", "oidc-desktop"] {
        let (client, up, url) = waiting(&server, name, version);
        let began = Instant::now();
        let outcome = login(&url, &alice);
        assert_eq!(outcome.step, Step::Confirmed, "{}", outcome.page);
        assert!(
            outcome.body().contains("Node registered"),
            "{}",
            outcome.page
        );
        client.wait_state("Running", SHORT);
        println!(
            "  {}: {name}: AuthURL -> Running in {} ms",
            version.tag(),
            began.elapsed().as_millis()
        );
        let run = up.finish(SHORT);
        assert!(run.ok, "{name}: up failed: {run}");
        let node = server.node(name).expect("registered");
        assert_eq!(node["registerMethod"], "REGISTER_METHOD_OIDC", "{node}");
        assert_eq!(
            node["user"]["providerId"],
            provider.provider_id("sub-alice").as_str(),
            "{node}"
        );
    }
    let users = server.json(&["users", "list"]);
    assert_eq!(users.as_array().map(Vec::len), Some(1), "{users}");

    let (refused, _up, url) = waiting(&server, "oidc-intruder", version);
    let outcome = login(&url, &bob);
    assert_eq!(outcome.step, Step::Callback, "{}", outcome.page);
    assert_eq!(outcome.status(), 401, "{}", outcome.page);
    assert!(
        outcome.body().contains("unauthorised user"),
        "{}",
        outcome.page
    );
    assert_eq!(refused.backend_state(), "NeedsLogin");
    assert_eq!(
        refused.status()["AuthURL"].as_str(),
        Some(url.as_str()),
        "the client still waits on its AuthURL"
    );
    assert!(server.node("oidc-intruder").is_none());
    // It really kept waiting: an allowed person completes the same AuthURL and it runs.
    let outcome = login(&url, &alice);
    assert_eq!(outcome.step, Step::Confirmed, "{}", outcome.page);
    refused.wait_state("Running", SHORT);
}

/// A client started with `up` and no key: it, its `up`, and the AuthURL it shows.
fn waiting(server: &Server, name: &str, version: Version) -> (Client, Background, String) {
    let client = Client::start(name, version, &Options::default());
    let up = client.spawn(&[
        "up",
        &format!("--login-server={}", server.url()),
        &format!("--hostname={name}"),
        &format!("--timeout={}s", LONG.as_secs()),
    ]);
    let url = wait_until(SHORT, "an AuthURL", || {
        client.status()["AuthURL"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(String::from)
    });
    (client, up, url)
}

/// Prints the provider's log when the scenario fails.
struct ProviderLog<'a>(&'a OidcProvider);

impl Drop for ProviderLog<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            crate::print_tail("OpenID provider log", &self.0.log());
        }
    }
}

/// The rest of a machine's life with OIDC, per client version: with `use_expiry_from_token`
/// the node expires when the ID token does (the example provider's live one hour) and the
/// client knows it; after `nodes expire` the same machine logs in again through the provider
/// (the page says "Node reauthenticated"; same node id, `NodeReauthenticated` in its story);
/// machines advertising a tag the policy gives to the OIDC user (by email; by OIDC identity,
/// `issuer/sub@`, as headscale matches it) join tagged.
pub fn oidc_relogin_and_tags(version: Version) {
    let alice = OidcUser::new("sub-alice", "alice", "alice@example.com");
    let mut provider = None;
    let server = Server::start_with_extra(|port| {
        let callback = format!("http://127.0.0.1:{port}/oidc/callback");
        let started = OidcProvider::start(&[&alice], &[&callback]);
        let yaml = oidc_yaml(started.port, "  use_expiry_from_token: true\n");
        provider = Some(started);
        yaml
    });
    let provider = provider.expect("the provider started with the server's config");
    let _logs = ProviderLog(&provider);
    let policy = server.dir.path().join("policy.hujson");
    std::fs::write(
        &policy,
        format!(
            "{{\"tagOwners\": {{\"tag:oidc\": [\"alice@example.com\"], \"tag:byid\": [\"{}@\"]}}, \
             \"acls\": [{{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}}]}}",
            provider.provider_id("sub-alice")
        ),
    )
    .unwrap();
    server.ok(&["policy", "set", "-f", policy.to_str().unwrap()]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let login = |url: &str| -> LoginOutcome {
        runtime.block_on(async {
            Browser::new()
                .login(url, &alice.username, &alice.password)
                .await
        })
    };

    let (client, up, url) = waiting(&server, "oidc-expiring", version);
    let outcome = login(&url);
    assert_eq!(outcome.step, Step::Confirmed, "{}", outcome.page);
    client.wait_state("Running", SHORT);
    assert!(up.finish(SHORT).ok);
    let node = server.node("oidc-expiring").expect("registered");
    let id = node["id"].as_str().unwrap().to_string();
    let expiry = node["expiry"]
        .as_str()
        .unwrap_or_else(|| panic!("no expiry from the token: {node}"))
        .to_string();
    let left = seconds_from_now(&expiry);
    assert!(
        (50 * 60..=61 * 60).contains(&left),
        "{expiry} is not the ID token's expiry (one hour): {node}"
    );
    let own = client.status()["Self"]["KeyExpiry"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(epoch(&own), epoch(&expiry), "client {own}, server {expiry}");

    server.ok(&["nodes", "expire", "--id", &id]);
    client.wait_state("NeedsLogin", SHORT);
    let again = client.spawn(&[
        "up",
        &format!("--login-server={}", server.url()),
        "--hostname=oidc-expiring",
        &format!("--timeout={}s", LONG.as_secs()),
    ]);
    let url = wait_until(SHORT, "a new AuthURL", || {
        client.status()["AuthURL"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(String::from)
    });
    let began = Instant::now();
    let outcome = login(&url);
    assert_eq!(outcome.step, Step::Confirmed, "{}", outcome.page);
    assert!(
        outcome.body().contains("Node reauthenticated"),
        "{}",
        outcome.page
    );
    client.wait_state("Running", SHORT);
    println!(
        "  {}: re-login after expiry: AuthURL -> Running in {} ms",
        version.tag(),
        began.elapsed().as_millis()
    );
    assert!(again.finish(SHORT).ok);
    let back = server.node("oidc-expiring").expect("still there");
    assert_eq!(back["id"], id.as_str(), "{back}");
    assert_eq!(back["expired"], false, "{back}");
    let story: Vec<String> = server
        .json(&["events", "list", "--node", &id])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        story.iter().any(|k| k == "NodeReauthenticated"),
        "{story:?}"
    );

    for (name, tag) in [("oidc-tagged", "tag:oidc"), ("oidc-by-id", "tag:byid")] {
        let tagged = Client::start(name, version, &Options::default());
        let up = tagged.spawn(&[
            "up",
            &format!("--login-server={}", server.url()),
            &format!("--hostname={name}"),
            &format!("--advertise-tags={tag}"),
            &format!("--timeout={}s", LONG.as_secs()),
        ]);
        let url = wait_until(SHORT, "an AuthURL", || {
            tagged.status()["AuthURL"]
                .as_str()
                .filter(|u| !u.is_empty())
                .map(String::from)
        });
        let outcome = login(&url);
        assert_eq!(outcome.step, Step::Confirmed, "{}", outcome.page);
        tagged.wait_state("Running", SHORT);
        assert!(up.finish(SHORT).ok);
        let node = server.node(name).expect("registered");
        assert_eq!(node["tags"], serde_json::json!([tag]), "{node}");
    }
}

/// An RFC 3339 time in whole seconds since the epoch.
fn epoch(time: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .unwrap_or_else(|e| panic!("not an RFC 3339 time ({e}): {time:?}"))
        .timestamp()
}

/// Whole seconds from now until an RFC 3339 time (negative when past).
fn seconds_from_now(time: &str) -> i64 {
    epoch(time) - chrono::Utc::now().timestamp()
}

/// The production path: our server on `https://` (a test CA the client and the browser
/// trust): the state and nonce cookies and the confirmation cookie carry `Secure`, and the
/// whole login works over TLS up to `Running`.
pub fn oidc_over_https() {
    let alice = OidcUser::new("sub-alice", "alice", "alice@example.com");
    let mut provider = None;
    let server = Server::start_tls_with_extra(|port| {
        let callback = format!("https://127.0.0.1:{port}/oidc/callback");
        let started = OidcProvider::start(&[&alice], &[&callback]);
        let yaml = oidc_yaml(started.port, "");
        provider = Some(started);
        yaml
    });
    let provider = provider.expect("the provider started with the server's config");
    let _logs = ProviderLog(&provider);
    let ca = server.ca.clone().expect("a TLS server has a test CA");
    let client = Client::start(
        "oidc-secure",
        Version::Newest,
        &Options {
            trust: Some(ca.clone()),
            ..Options::default()
        },
    );
    let up = client.spawn(&[
        "up",
        &format!("--login-server={}", server.url()),
        "--hostname=oidc-secure",
        &format!("--timeout={}s", LONG.as_secs()),
    ]);
    let url = wait_until(SHORT, "an AuthURL", || {
        client.status()["AuthURL"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(String::from)
    });
    assert!(url.starts_with("https://"), "{url}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let began = Instant::now();
    runtime.block_on(async {
        let mut browser = Browser::trusting(&ca);
        let redirect = browser.get(&url).await;
        assert_eq!(redirect.status, 302, "{redirect}");
        assert_eq!(redirect.set_cookies.len(), 2, "{redirect}");
        for cookie in &redirect.set_cookies {
            assert!(cookie.contains("Secure"), "{cookie}");
        }
        let form = browser
            .open_login(redirect.location.as_deref().unwrap())
            .await
            .unwrap_or_else(|page| panic!("no login form: {page}"));
        let callback = browser
            .submit_login(&form, &alice.username, &alice.password)
            .await
            .unwrap_or_else(|page| panic!("the provider did not redirect back: {page}"));
        assert!(callback.starts_with("https://"), "{callback}");
        let confirmation = browser.get(&callback).await;
        assert_eq!(confirmation.status, 200, "{confirmation}");
        assert!(
            confirmation
                .set_cookies
                .iter()
                .any(|c| c.starts_with("headscale_register_confirm=") && c.contains("Secure")),
            "{confirmation}"
        );
        let done = browser.confirm(&confirmation).await;
        assert!(done.body.contains("Node registered"), "{done}");
    });
    client.wait_state("Running", SHORT);
    println!(
        "  over https: AuthURL -> Running in {} ms",
        began.elapsed().as_millis()
    );
    assert!(up.finish(SHORT).ok);
    let node = server.node("oidc-secure").expect("registered");
    assert_eq!(node["registerMethod"], "REGISTER_METHOD_OIDC", "{node}");
}
