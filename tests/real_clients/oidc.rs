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
