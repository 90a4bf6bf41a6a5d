//! OIDC logins end to end: our server (the real binary) against a real OpenID provider
//! (zitadel's example server, `.ci/install-oidc-provider`), a scripted browser doing what a
//! person does (follow the AuthURL, log in on the provider's form, confirm on our page), and our
//! own control client waiting for the login as `tailscale up` does.
//!
//! The provider listens on every interface, so each test re-runs itself inside a network
//! namespace of its own (`isolated`): only loopback exists there, nothing is reachable from
//! outside, and everything the test started dies with it. Needs root (for `unshare`).

mod common;

use common::oidc::{
    oidc_yaml, query_param, Browser, LoginOutcome, OidcProvider, OidcUser, Page, Step, CLIENT_ID,
    CLIENT_SECRET,
};
use common::TestServer;
use headscale::client::{self, ControlClient};
use headscale::tailcfg::{Hostinfo, RegisterRequest, RegisterResponse};
use serde_json::Value;
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the re-executed test: "we are inside the namespace".
const INSIDE: &str = "HEADSCALE_OIDC_TEST_NETNS";
/// One test, namespace and all, at most (each step inside has its own shorter deadline).
const TEST_LIMIT: Duration = Duration::from_secs(180);

/// Runs the calling test's `body` inside a network (and PID) namespace of its own: outside,
/// re-executes this test binary for just this test under `unshare` and fails with its output
/// if it fails; inside, brings `lo` up and runs `body` on a tokio runtime.
fn isolated<F: Future<Output = ()>>(body: impl FnOnce() -> F) {
    if std::env::var_os(INSIDE).is_some() {
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .output()
            .expect("`ip` (iproute2) is needed");
        assert!(up.status.success(), "ip link set lo up: {up:?}");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(body());
        return;
    }
    let thread = std::thread::current();
    let name = thread
        .name()
        .expect("libtest names each test's thread after the test");
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the OIDC tests need root: they run the provider in a network namespace (unshare)"
    );
    let mut command = Command::new("unshare");
    command
        .args(["--net", "--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1");
    // If this test process dies, the namespace and everything in it go too.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `unshare` ({e}): util-linux is needed"));
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    // Killing `unshare` kills the namespace's first process (--kill-child), and with it
    // everything the test started.
    let deadline = Instant::now() + TEST_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap();
    print!("{stdout}");
    eprint!("{}", stderr.join().unwrap());
    let status = status.unwrap_or_else(|| panic!("{name} took more than {TEST_LIMIT:?}"));
    assert!(
        status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} failed inside its namespace ({status})"
    );
}

/// A `/oidc/callback` redirect URI on a loopback port nothing listens on (the browser stops
/// before it).
fn unused_callback() -> String {
    format!("http://127.0.0.1:{}/oidc/callback", common::free_port())
}

/// The claims part of a JWT, decoded (not verified: the test only reads it).
fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The harness alone: the provider starts, refuses a wrong password on its own form, and for
/// the right one redirects the scripted browser to the redirect URI with a code and our state;
/// the code, with the PKCE verifier and the `web` client's secret, buys an ID token that
/// carries no email or name (those come from userinfo: the server must merge them).
#[test]
fn provider_gives_the_scripted_browser_a_code() {
    isolated(|| async {
        let alice = OidcUser::new("sub-alice", "alice", "alice@example.com");
        let redirect = unused_callback();
        let provider = OidcProvider::start(&[&alice], &[&redirect]);
        let verifier = "a-verifier-of-at-least-forty-three-characters-0123456789";
        let challenge = {
            use base64::Engine;
            use sha2::Digest;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()))
        };
        let authorize = format!(
            "{}auth?{}",
            provider.issuer(),
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs([
                    ("response_type", "code"),
                    ("client_id", CLIENT_ID),
                    ("redirect_uri", redirect.as_str()),
                    ("scope", "openid profile email"),
                    ("state", "state-0123456789"),
                    ("nonce", "nonce-0123456789"),
                    ("code_challenge", challenge.as_str()),
                    ("code_challenge_method", "S256"),
                ])
                .finish()
        );
        let mut browser = Browser::new();
        let form = browser
            .open_login(&authorize)
            .await
            .unwrap_or_else(|page| panic!("no login form: {page}"));
        assert!(form.action.ends_with("/login/username"), "{}", form.action);

        let wrong = browser
            .submit_login(&form, "alice", "not-her-password")
            .await
            .expect_err("a wrong password was accepted");
        assert_eq!(wrong.status, 200, "{wrong}");
        assert!(wrong.body.contains("username or password wrong"), "{wrong}");

        let callback = browser
            .submit_login(&form, &alice.username, &alice.password)
            .await
            .unwrap_or_else(|page| panic!("the provider did not redirect back: {page}"));
        assert!(callback.starts_with(&redirect), "{callback}");
        assert_eq!(
            query_param(&callback, "state").as_deref(),
            Some("state-0123456789")
        );
        let code = query_param(&callback, "code").expect("a code");

        let token = browser
            .post_form(
                &format!("{}oauth/token", provider.issuer()),
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", &redirect),
                    ("client_id", CLIENT_ID),
                    ("client_secret", CLIENT_SECRET),
                    ("code_verifier", verifier),
                ],
            )
            .await;
        assert_eq!(token.status, 200, "{token}");
        let token: serde_json::Value = serde_json::from_str(&token.body).unwrap();
        let claims = jwt_claims(token["id_token"].as_str().expect("an id_token"));
        assert_eq!(claims["sub"], "sub-alice", "{claims}");
        assert_eq!(claims["iss"], provider.issuer(), "{claims}");
        assert_eq!(claims["nonce"], "nonce-0123456789", "{claims}");
        assert!(claims.get("email").is_none(), "{claims}");
        assert!(claims.get("name").is_none(), "{claims}");
    });
}

// ---- Our server with OIDC on, and our own client waiting as `tailscale up` does ----

/// How long a waiting client may take to be answered once its login is confirmed.
const ANSWER_WAIT: Duration = Duration::from_secs(20);

/// Our server configured for the provider, and the provider (started first: discovery runs
/// when the server starts).
struct Oidc {
    server: TestServer,
    provider: OidcProvider,
}

impl Oidc {
    /// A provider with `users`, and our server with `extra` lines in its `oidc:` section.
    fn start(users: &[&OidcUser], extra: &str) -> Oidc {
        let port = common::free_port();
        let mut server = TestServer::new(&oidc_yaml(port, extra));
        let callback = format!("{}/oidc/callback", server.url());
        let provider = OidcProvider::start_on(port, users, &[&callback]);
        server.spawn();
        server.wait_healthy();
        Oidc { server, provider }
    }

    /// The user the API lists with `providerId` for `sub`, if any.
    fn user(&self, sub: &str) -> Option<Value> {
        let id = self.provider.provider_id(sub);
        users(&self.server)
            .into_iter()
            .find(|u| u["providerId"] == id.as_str())
    }

    /// A waiting login's whole way through the browser, asserting every step succeeds; the
    /// time from opening the AuthURL to the client's answer.
    async fn log_in(&self, waiting: Waiting, user: &OidcUser) -> (RegisterResponse, Duration) {
        let began = Instant::now();
        let mut browser = Browser::new();
        let outcome = browser
            .login(&waiting.auth_url, &user.username, &user.password)
            .await;
        assert_confirmed(&outcome, &self.provider);
        let answer = waiting.answered().await;
        let took = began.elapsed();
        assert!(answer.error.is_empty(), "{answer:?}");
        assert!(answer.machine_authorized, "{answer:?}");
        (answer, took)
    }
}

impl Drop for Oidc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- server log -----\n{}", self.server.log());
            eprintln!("----- provider log -----\n{}", self.provider.log());
        }
    }
}

/// `users list` as a list.
fn users(server: &TestServer) -> Vec<Value> {
    match server.json(&["users", "list"]) {
        Value::Array(users) => users,
        other => panic!("users list is not a list: {other}"),
    }
}

/// `events list --type KIND` as a list.
fn events(server: &TestServer, kind: &str) -> Vec<Value> {
    match server.json(&["events", "list", "--type", kind]) {
        Value::Array(events) => events,
        other => panic!("events list is not a list: {other}"),
    }
}

fn assert_confirmed(outcome: &LoginOutcome, provider: &OidcProvider) {
    assert_eq!(
        outcome.step,
        Step::Confirmed,
        "the login stopped: {}\nprovider log: {}",
        outcome.page,
        provider.log()
    );
    assert_eq!(outcome.status(), 200, "{}", outcome.page);
    assert!(
        outcome.body().contains("Node registered"),
        "{}",
        outcome.page
    );
}

/// An error page: `status`, HTML, and the contract's phrase in its text.
fn assert_refused(page: &Page, status: u16, phrase: &str) {
    assert_eq!(page.status, status, "{page}");
    assert!(page.body.contains(phrase), "wanted {phrase:?}: {page}");
    assert!(
        page.content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/html")),
        "not an HTML page ({:?}): {page}",
        page.content_type
    );
}

/// A machine waiting in an interactive login (our control client, `tailscale up` without a
/// key): its AuthURL, and its follow-up request in flight.
struct Waiting {
    auth_url: String,
    answer: tokio::task::JoinHandle<RegisterResponse>,
}

impl Waiting {
    /// Starts an interactive login for a new machine called `hostname`.
    async fn start(server: &TestServer, hostname: &str) -> Waiting {
        let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        let client = ControlClient::connect(&server.url(), machine, common::CLIENT_CAPVER)
            .await
            .unwrap();
        let request = RegisterRequest {
            version: common::CLIENT_CAPVER.into(),
            node_key: client::random_key("nodekey:").0,
            hostinfo: Some(Hostinfo {
                hostname: hostname.into(),
                os: "linux".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let first = client.register(&request).await.unwrap();
        assert!(first.error.is_empty(), "{first:?}");
        let prefix = format!("{}/register/", server.url());
        assert!(first.auth_url.starts_with(&prefix), "{first:?}");
        assert_eq!(first.auth_url.len(), prefix.len() + 24, "{first:?}");
        let mut followup = request;
        followup.followup = first.auth_url.clone();
        let answer = tokio::spawn(async move { client.register(&followup).await.unwrap() });
        Waiting {
            auth_url: first.auth_url,
            answer,
        }
    }

    /// The registration id at the end of the AuthURL.
    fn id(&self) -> String {
        self.auth_url.rsplit('/').next().unwrap().to_string()
    }

    /// The answer to the follow-up, once the login is done.
    async fn answered(self) -> RegisterResponse {
        tokio::time::timeout(ANSWER_WAIT, self.answer)
            .await
            .expect("the waiting client was not answered")
            .unwrap()
    }
}

/// Opens `auth_url`, logs `user` in at the provider and returns the callback URL (code and
/// state) without delivering it.
async fn callback_for(browser: &mut Browser, auth_url: &str, user: &OidcUser) -> String {
    let form = browser
        .open_login(auth_url)
        .await
        .unwrap_or_else(|page| panic!("no login form from {auth_url}: {page}"));
    browser
        .submit_login(&form, &user.username, &user.password)
        .await
        .unwrap_or_else(|page| panic!("the provider did not redirect back: {page}"))
}

/// `url` with query parameter `name` set to `value` (others kept).
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .filter(|(k, _)| k != name)
        .collect();
    pairs.push((name.into(), value.into()));
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{base}?{query}")
}

/// `url` without query parameter `name`.
fn without_param(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != name))
        .finish();
    format!("{base}?{query}")
}

fn alice() -> OidcUser {
    OidcUser::new("sub-alice", "alice", "alice@example.com")
}

fn bob() -> OidcUser {
    OidcUser::new("sub-bob", "bob", "bob@example.com")
}

/// The happy path, step by step: the AuthURL redirects to the provider with what an
/// authorization request needs and sets the state and nonce cookies; the provider's login
/// brings the browser back to our callback, which creates the user from the ID token merged
/// with userinfo (the example provider's ID token has no email or name) and shows the
/// confirmation form; confirming registers the node for that user and answers the waiting
/// client at once. Nothing secret lands in the event log.
#[test]
fn a_first_login_creates_the_user_and_registers_the_node() {
    isolated(|| async {
        let alice = alice();
        let oidc = Oidc::start(&[&alice], "");
        let server = &oidc.server;
        let waiting = Waiting::start(server, "laptop").await;
        let id = waiting.id();
        let mut browser = Browser::new();
        let began = Instant::now();

        let redirect = browser.get(&waiting.auth_url).await;
        assert_eq!(redirect.status, 302, "{redirect}");
        let location = redirect.location.clone().unwrap();
        assert!(
            location.starts_with(&format!("{}auth?", oidc.provider.issuer())),
            "{redirect}"
        );
        let param = |name: &str| redirect.location_param(name);
        assert_eq!(param("response_type").as_deref(), Some("code"));
        assert_eq!(param("client_id").as_deref(), Some(CLIENT_ID));
        assert_eq!(
            param("redirect_uri"),
            Some(format!("{}/oidc/callback", server.url()))
        );
        assert_eq!(param("scope").as_deref(), Some("openid profile email"));
        assert_eq!(param("code_challenge"), None, "PKCE is off by default");
        let state = param("state").expect("a state");
        let nonce = param("nonce").expect("a nonce");
        for (kind, value) in [("state", &state), ("nonce", &nonce)] {
            let name = format!("{kind}_{}", &value[..6]);
            let set = redirect
                .set_cookies
                .iter()
                .find(|c| c.starts_with(&format!("{name}={value}")))
                .unwrap_or_else(|| panic!("no {name} cookie: {redirect}"));
            for attribute in [
                "Path=/oidc/callback",
                "HttpOnly",
                "SameSite=Lax",
                "Max-Age=3600",
            ] {
                assert!(set.contains(attribute), "{set}");
            }
            assert!(!set.contains("Secure"), "no TLS, no Secure: {set}");
        }

        let form = browser
            .open_login(&location)
            .await
            .unwrap_or_else(|page| panic!("no login form: {page}"));
        let callback = browser
            .submit_login(&form, &alice.username, &alice.password)
            .await
            .unwrap_or_else(|page| panic!("the provider did not redirect back: {page}"));
        assert_eq!(query_param(&callback, "state"), Some(state.clone()));
        let code = query_param(&callback, "code").expect("a code");

        let confirmation = browser.get(&callback).await;
        assert_eq!(confirmation.status, 200, "{confirmation}");
        assert!(
            confirmation
                .body
                .contains(&format!("action=\"/register/confirm/{id}\"")),
            "{confirmation}"
        );
        assert!(
            confirmation.body.contains("laptop"),
            "names the machine: {confirmation}"
        );
        assert!(
            confirmation.body.contains("alice"),
            "names the user: {confirmation}"
        );
        let set = confirmation
            .set_cookies
            .iter()
            .find(|c| c.starts_with("headscale_register_confirm="))
            .unwrap_or_else(|| panic!("no confirmation cookie: {confirmation}"));
        for attribute in [
            format!("Path=/register/confirm/{id}"),
            "HttpOnly".into(),
            "SameSite=Strict".into(),
        ] {
            assert!(set.contains(&attribute), "{set}");
        }
        // The user exists from the callback on; the node waits for the confirmation.
        let user = oidc
            .user("sub-alice")
            .expect("the user is created at the callback");
        assert_eq!(user["provider"], "oidc", "{user}");
        assert_eq!(user["name"], "alice", "{user}");
        assert_eq!(user["email"], "alice@example.com", "{user}");
        assert_eq!(user["displayName"], alice.full_name().as_str(), "{user}");
        assert!(
            server.nodes().is_empty(),
            "registered before the confirmation"
        );

        let done = browser.confirm(&confirmation).await;
        assert_eq!(done.status, 200, "{done}");
        assert!(done.body.contains("Node registered"), "{done}");
        let answer = waiting.answered().await;
        println!("AuthURL -> answered in {} ms", began.elapsed().as_millis());
        assert!(
            answer.error.is_empty() && answer.machine_authorized,
            "{answer:?}"
        );

        let nodes = server.nodes();
        assert_eq!(nodes.len(), 1, "{nodes:?}");
        let node = &nodes[0];
        assert_eq!(
            node["user"]["providerId"],
            oidc.provider.provider_id("sub-alice").as_str(),
            "{node}"
        );
        assert_eq!(node["registerMethod"], "REGISTER_METHOD_OIDC", "{node}");
        assert_eq!(node["givenName"], "laptop", "{node}");
        assert!(node["expiry"].is_null(), "node.expiry is 0 (never): {node}");
        assert_eq!(users(server).len(), 1);

        // The log names what happened and who did it (the person's OIDC identity), never
        // the code, the state or the nonce.
        let log = server.ok(&["events", "list", "-o", "api-json"]);
        let events: Vec<Value> = serde_json::from_str(&log).unwrap();
        let person = format!("oidc {}", oidc.provider.provider_id("sub-alice"));
        let by_person: Vec<&str> = events
            .iter()
            .filter(|e| e["actor"] == person.as_str())
            .filter_map(|e| e["type"].as_str())
            .collect();
        assert_eq!(
            by_person,
            ["UserCreated", "UserIdentityLinked", "NodeRegistered"],
            "{log}"
        );
        for secret in [&code, &state, &nonce] {
            assert!(
                !log.contains(secret.as_str()),
                "{secret} in the event log: {log}"
            );
        }
    });
}

/// A second machine of the same person: the same user, a second node; still one user.
/// Their profile is updated from the provider's current one: here the provider's users file
/// changed (a new last name and email; the provider restarted, so our server does too, to
/// stay out of key rotation, which `a_provider_key_rotation_keeps_logins_working` covers).
#[test]
fn a_second_login_reuses_the_user_and_updates_its_profile() {
    isolated(|| async {
        let alice = alice();
        let mut oidc = Oidc::start(&[&alice], "");
        let first = Waiting::start(&oidc.server, "laptop").await;
        oidc.log_in(first, &alice).await;
        let before = oidc.user("sub-alice").expect("alice");

        let mut renamed = alice.clone();
        renamed.last_name = "Married".into();
        renamed.email = "alice@example.org".into();
        let port = oidc.provider.port;
        oidc.provider.stop();
        let callback = format!("{}/oidc/callback", oidc.server.url());
        oidc.provider = OidcProvider::start_on(port, &[&renamed], &[&callback]);
        oidc.server.stop();
        oidc.server.spawn();
        oidc.server.wait_healthy();
        let second = Waiting::start(&oidc.server, "desktop").await;
        let (_, took) = oidc.log_in(second, &renamed).await;
        println!(
            "second login: AuthURL -> answered in {} ms",
            took.as_millis()
        );

        let after = oidc.user("sub-alice").expect("alice");
        assert_eq!(after["id"], before["id"], "the same user");
        assert_eq!(
            after["displayName"],
            renamed.full_name().as_str(),
            "{after}"
        );
        assert_eq!(after["email"], "alice@example.org", "{after}");
        assert_eq!(users(&oidc.server).len(), 1);
        let nodes = oidc.server.nodes();
        assert_eq!(nodes.len(), 2, "{nodes:?}");
        assert!(
            nodes.iter().all(|n| n["user"]["id"] == before["id"]),
            "{nodes:?}"
        );
    });
}

/// PKCE with S256: the authorization request carries the challenge, and the login completes
/// (the provider checked the verifier). With `use_expiry_from_token` the node expires with the
/// ID token (the example provider's live one hour).
#[test]
fn pkce_s256_logs_in_and_the_node_expires_with_the_token() {
    isolated(|| async {
        let alice = alice();
        let oidc = Oidc::start(
            &[&alice],
            "  pkce:\n    enabled: true\n    method: S256\n  use_expiry_from_token: true\n",
        );
        let waiting = Waiting::start(&oidc.server, "laptop").await;
        let redirect = Browser::new().get(&waiting.auth_url).await;
        assert_eq!(
            redirect.location_param("code_challenge_method").as_deref(),
            Some("S256")
        );
        let challenge = redirect
            .location_param("code_challenge")
            .expect("a challenge");
        assert_eq!(challenge.len(), 43, "base64url of SHA-256: {challenge}");
        let (_, took) = oidc.log_in(waiting, &alice).await;
        println!("PKCE S256: AuthURL -> answered in {} ms", took.as_millis());
        let node = &oidc.server.nodes()[0];
        let expiry = chrono::DateTime::parse_from_rfc3339(
            node["expiry"]
                .as_str()
                .unwrap_or_else(|| panic!("no expiry: {node}")),
        )
        .unwrap();
        let left = expiry.signed_duration_since(chrono::Utc::now());
        assert!(
            left > chrono::Duration::minutes(50) && left <= chrono::Duration::minutes(61),
            "expiry {expiry} is not the ID token's (one hour): {node}"
        );
    });
}

/// PKCE with the plain method: the challenge is the verifier itself, and the login completes.
#[test]
fn pkce_plain_logs_in() {
    isolated(|| async {
        let alice = alice();
        let oidc = Oidc::start(&[&alice], "  pkce:\n    enabled: true\n    method: plain\n");
        let waiting = Waiting::start(&oidc.server, "laptop").await;
        let redirect = Browser::new().get(&waiting.auth_url).await;
        assert_eq!(
            redirect.location_param("code_challenge_method").as_deref(),
            Some("plain")
        );
        let challenge = redirect
            .location_param("code_challenge")
            .expect("a challenge");
        assert!(
            (43..=128).contains(&challenge.len()),
            "RFC 7636 verifier length: {challenge}"
        );
        oidc.log_in(waiting, &alice).await;
        assert_eq!(
            oidc.server.nodes()[0]["registerMethod"],
            "REGISTER_METHOD_OIDC"
        );
    });
}

/// A wrong password: the provider shows its form again and nothing reaches our server; the
/// right password on the same form then completes the same login.
#[test]
fn a_wrong_password_registers_nothing() {
    isolated(|| async {
        let alice = alice();
        let oidc = Oidc::start(&[&alice], "");
        let waiting = Waiting::start(&oidc.server, "laptop").await;
        let mut browser = Browser::new();
        let outcome = browser.login(&waiting.auth_url, "alice", "guess").await;
        assert_eq!(outcome.step, Step::Provider, "{}", outcome.page);
        assert!(
            outcome.body().contains("username or password wrong"),
            "{}",
            outcome.page
        );
        assert!(
            outcome.body().contains("action=\"/login/username\""),
            "{}",
            outcome.page
        );
        assert!(users(&oidc.server).is_empty());
        assert!(oidc.server.nodes().is_empty());
        // The client kept waiting: the same follow-up is answered by the next login.
        oidc.log_in(waiting, &alice).await;
    });
}

/// `allowed_domains` and `allowed_users` refuse a login with 401 and a page saying why, record
/// `OidcLoginRefused`, create no user and leave the client waiting: an allowed person can
/// then use the same AuthURL.
#[test]
fn allow_lists_refuse_and_the_client_keeps_waiting() {
    isolated(|| async {
        let alice = alice();
        let mallory = OidcUser::new("sub-mallory", "mallory", "mallory@evil.test");
        let bob = bob();
        for (extra, intruder, phrase) in [
            (
                "  allowed_domains: [example.com]\n",
                &mallory,
                "unauthorised domain",
            ),
            (
                "  allowed_users: [alice@example.com]\n",
                &bob,
                "unauthorised user",
            ),
        ] {
            let oidc = Oidc::start(&[&alice, &bob, &mallory], extra);
            let waiting = Waiting::start(&oidc.server, "laptop").await;
            let outcome = Browser::new()
                .login(&waiting.auth_url, &intruder.username, &intruder.password)
                .await;
            assert_eq!(outcome.step, Step::Callback, "{extra}: {}", outcome.page);
            assert_refused(&outcome.page, 401, phrase);
            assert!(users(&oidc.server).is_empty(), "{extra}");
            assert!(oidc.server.nodes().is_empty(), "{extra}");
            let refused = events(&oidc.server, "OidcLoginRefused");
            assert_eq!(refused.len(), 1, "{extra}: {refused:?}");
            // The client kept waiting: its follow-up (still the first one) is answered
            // with a registration once an allowed person uses the same AuthURL.
            let (answer, _) = oidc.log_in(waiting, &alice).await;
            assert!(answer.machine_authorized);
            assert_eq!(oidc.server.nodes()[0]["user"]["email"], "alice@example.com");
        }
    });
}

/// `allowed_groups` against a provider that sends no `groups` claim (the example provider
/// has none): everyone is refused as "unauthorised group" (the matching case is a unit test
/// of the claim rules in src/core/oidc.rs); the client keeps waiting, and an admin's
/// `nodes register` still completes it.
#[test]
fn allowed_groups_refuse_a_person_without_groups() {
    isolated(|| async {
        let alice = alice();
        let oidc = Oidc::start(&[&alice], "  allowed_groups: [admins]\n");
        let waiting = Waiting::start(&oidc.server, "laptop").await;
        let outcome = Browser::new()
            .login(&waiting.auth_url, &alice.username, &alice.password)
            .await;
        assert_eq!(outcome.step, Step::Callback, "{}", outcome.page);
        assert_refused(&outcome.page, 401, "unauthorised group");
        assert_eq!(events(&oidc.server, "OidcLoginRefused").len(), 1);
        assert!(oidc.server.nodes().is_empty());
        oidc.server.create_user("admin-made");
        oidc.server.ok(&[
            "nodes",
            "register",
            "--user",
            "admin-made",
            "--key",
            &waiting.id(),
        ]);
        assert!(waiting.answered().await.machine_authorized);
    });
}

/// An unverified email (the provider says `email_verified: false`): with an allow-list and
/// `email_verified_required` (the default) the login is refused as "unverified email"; with
/// `email_verified_required: false` the same person logs in and keeps the email.
#[test]
fn an_unverified_email_is_refused_when_verification_is_required() {
    isolated(|| async {
        let mut carol = OidcUser::new("sub-carol", "carol", "carol@example.com");
        carol.email_verified = false;
        let required = Oidc::start(&[&carol], "  allowed_domains: [example.com]\n");
        let waiting = Waiting::start(&required.server, "laptop").await;
        let outcome = Browser::new()
            .login(&waiting.auth_url, &carol.username, &carol.password)
            .await;
        assert_eq!(outcome.step, Step::Callback, "{}", outcome.page);
        assert_refused(&outcome.page, 401, "unverified email");
        assert!(users(&required.server).is_empty());
        assert_eq!(events(&required.server, "OidcLoginRefused").len(), 1);
        drop(required);

        let trusting = Oidc::start(
            &[&carol],
            "  allowed_domains: [example.com]\n  email_verified_required: false\n",
        );
        let waiting = Waiting::start(&trusting.server, "laptop").await;
        trusting.log_in(waiting, &carol).await;
        let user = trusting.user("sub-carol").expect("carol");
        assert_eq!(user["email"], "carol@example.com", "{user}");
    });
}

/// A callback whose state is not the browser's: a missing code or state, a state too short
/// to name a cookie (400), a state whose cookie the browser does not have (400 "state not
/// found"), one whose cookie holds another value (403 "state did not match"). None of them
/// burns the genuine callback, which then completes.
#[test]
fn a_callback_with_a_wrong_state_is_refused() {
    isolated(|| async {
        let alice = alice();
        let oidc = Oidc::start(&[&alice], "");
        let waiting = Waiting::start(&oidc.server, "laptop").await;
        let mut browser = Browser::new();
        let callback = callback_for(&mut browser, &waiting.auth_url, &alice).await;
        let state = query_param(&callback, "state").unwrap();

        let page = browser.get(&without_param(&callback, "code")).await;
        assert_refused(&page, 400, "");
        let page = browser.get(&without_param(&callback, "state")).await;
        assert_refused(&page, 400, "");
        let page = browser.get(&with_param(&callback, "state", "abc")).await;
        assert_refused(&page, 400, "");
        let other = if state.starts_with("zz") { "yy" } else { "zz" };
        let other = format!("{other}{}", &state[2..]);
        let page = browser.get(&with_param(&callback, "state", &other)).await;
        assert_refused(&page, 400, "state not found");
        let forged = format!("{}forged", &state[..6]);
        let page = browser.get(&with_param(&callback, "state", &forged)).await;
        assert_refused(&page, 403, "state did not match");
        assert!(users(&oidc.server).is_empty());
        assert!(oidc.server.nodes().is_empty());

        let confirmation = browser.get(&callback).await;
        assert_eq!(confirmation.status, 200, "{confirmation}");
        let done = browser.confirm(&confirmation).await;
        assert!(done.body.contains("Node registered"), "{done}");
        assert!(waiting.answered().await.machine_authorized);
    });
}

/// The nonce cookie binds the ID token to this browser: without it the callback is refused
/// (400 "nonce not found"), with another value too (403 "nonce did not match"); each attempt
/// consumed its state, and a fresh start of the same AuthURL still logs in.
#[test]
fn a_callback_with_a_wrong_nonce_is_refused() {
    isolated(|| async {
        let alice = alice();
        let oidc = Oidc::start(&[&alice], "");
        let waiting = Waiting::start(&oidc.server, "laptop").await;

        let mut browser = Browser::new();
        let callback = callback_for(&mut browser, &waiting.auth_url, &alice).await;
        browser.cookies.retain(|c| !c.name.starts_with("nonce_"));
        let page = browser.get(&callback).await;
        assert_refused(&page, 400, "nonce not found");

        let mut browser = Browser::new();
        let callback = callback_for(&mut browser, &waiting.auth_url, &alice).await;
        let nonce = browser
            .cookies
            .iter_mut()
            .find(|c| c.name.starts_with("nonce_"))
            .expect("a nonce cookie");
        nonce.value = format!("{}tampered", &nonce.value[..6]);
        let page = browser.get(&callback).await;
        assert_refused(&page, 403, "nonce did not match");
        // That attempt consumed its state: the same callback again is gone.
        let page = browser.get(&callback).await;
        assert_refused(&page, 410, "login session expired, try again");
        assert!(users(&oidc.server).is_empty());
        assert!(oidc.server.nodes().is_empty());

        oidc.log_in(waiting, &alice).await;
    });
}

/// A replayed callback (the same URL with the same cookies, after it was used): 410, and
/// nothing more is registered. A second confirmation is refused: without the cookie the
/// server cleared (403), and with it put back, as a replaying attacker would (410).
#[test]
fn a_replayed_callback_is_gone() {
    isolated(|| async {
        let alice = alice();
        let oidc = Oidc::start(&[&alice], "");
        let waiting = Waiting::start(&oidc.server, "laptop").await;
        let mut browser = Browser::new();
        let callback = callback_for(&mut browser, &waiting.auth_url, &alice).await;
        let confirmation = browser.get(&callback).await;
        assert_eq!(confirmation.status, 200, "{confirmation}");
        let replay = browser.get(&callback).await;
        assert_refused(&replay, 410, "login session expired, try again");
        let confirm_cookie = browser
            .cookie_starting("headscale_register_confirm")
            .expect("the confirmation cookie")
            .clone();
        let done = browser.confirm(&confirmation).await;
        assert!(done.body.contains("Node registered"), "{done}");
        assert!(waiting.answered().await.machine_authorized);
        let again = browser.get(&callback).await;
        assert_refused(&again, 410, "login session expired, try again");
        // Confirming twice, with the cookie the server cleared put back: used up.
        let twice = browser.confirm(&confirmation).await;
        assert_refused(&twice, 403, "");
        browser.cookies.push(confirm_cookie);
        let twice = browser.confirm(&confirmation).await;
        assert_refused(&twice, 410, "");
        assert_eq!(oidc.server.nodes().len(), 1);
    });
}

/// PKCE stops a stolen code: login A's code delivered with login B's state and cookies makes
/// our server exchange it with B's verifier, which the provider refuses: 403 "invalid code",
/// nothing registered.
#[test]
fn a_code_from_another_login_fails_pkce() {
    isolated(|| async {
        let alice = alice();
        let bob = bob();
        let oidc = Oidc::start(&[&alice, &bob], "  pkce:\n    enabled: true\n");
        let victim = Waiting::start(&oidc.server, "victim").await;
        let attacker = Waiting::start(&oidc.server, "attacker").await;
        let mut a = Browser::new();
        let callback_a = callback_for(&mut a, &victim.auth_url, &alice).await;
        let mut b = Browser::new();
        let callback_b = callback_for(&mut b, &attacker.auth_url, &bob).await;
        let stolen = with_param(
            &callback_b,
            "code",
            &query_param(&callback_a, "code").unwrap(),
        );
        let page = b.get(&stolen).await;
        assert_refused(&page, 403, "invalid code");
        assert!(users(&oidc.server).is_empty());
        assert!(oidc.server.nodes().is_empty());
        // A's own login is untouched.
        let confirmation = a.get(&callback_a).await;
        assert_eq!(confirmation.status, 200, "{confirmation}");
        a.confirm(&confirmation).await;
        assert!(victim.answered().await.machine_authorized);
    });
}

/// `nodes register` still completes a waiting login on a server with OIDC on.
#[test]
fn nodes_register_works_beside_oidc() {
    isolated(|| async {
        let oidc = Oidc::start(&[&alice()], "");
        oidc.server.create_user("admin-made");
        let waiting = Waiting::start(&oidc.server, "laptop").await;
        oidc.server.ok(&[
            "nodes",
            "register",
            "--user",
            "admin-made",
            "--key",
            &waiting.id(),
        ]);
        let answer = waiting.answered().await;
        assert!(answer.machine_authorized, "{answer:?}");
        let node = &oidc.server.nodes()[0];
        assert_eq!(node["user"]["name"], "admin-made", "{node}");
        assert_eq!(node["registerMethod"], "REGISTER_METHOD_CLI", "{node}");
    });
}

/// The provider down at start: by default (`only_start_if_oidc_is_available: true`) `serve`
/// exits non-zero naming `oidc.issuer`; with `false` it serves, and logins fall back to the
/// admin-approved page and `nodes register`.
#[test]
fn a_provider_down_at_start() {
    isolated(|| async {
        let port = common::free_port();
        let server = TestServer::new(&oidc_yaml(port, ""));
        let mut serve = Command::new(common::BIN)
            .args(["serve", "-c"])
            .arg(&server.config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = serve.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = serve.kill();
                panic!("serve kept running without its OpenID provider");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{stderr}");
        let last = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default();
        assert!(last.contains("oidc.issuer"), "{stderr}");

        let mut lenient = TestServer::new(&oidc_yaml(
            port,
            "  only_start_if_oidc_is_available: false\n",
        ));
        lenient.spawn();
        lenient.wait_healthy();
        lenient.create_user("alice");
        let waiting = Waiting::start(&lenient, "laptop").await;
        let page = Browser::new().get(&waiting.auth_url).await;
        assert_eq!(page.status, 200, "{page}");
        assert!(
            page.body.contains(&format!(
                "headscale nodes register --user USERNAME --key {}",
                waiting.id()
            )),
            "{page}"
        );
        lenient.ok(&[
            "nodes",
            "register",
            "--user",
            "alice",
            "--key",
            &waiting.id(),
        ]);
        assert!(waiting.answered().await.machine_authorized);
    });
}

/// A person who logged in to the real Go headscale through the same provider is, after we
/// import headscale's database, the same user with us: their next OIDC login (on a new
/// machine) lands on the imported user, and no second user appears. The Go headscale makes
/// the user itself (its own OIDC login through the scripted browser), so the identifier
/// format is headscale's, not ours.
#[test]
fn a_user_imported_from_headscale_logs_in_as_themself() {
    isolated(|| async {
        let bob = bob();
        let go_dir = tempfile::tempdir().unwrap();
        let go_port = common::free_port();
        let provider_port = common::free_port();
        let db = go_dir.path().join("db.sqlite");
        let noise = go_dir.path().join("noise_private.key");
        let mut ours = TestServer::with_yaml(|data, port| {
            format!(
                "server_url: http://127.0.0.1:{port}\nlisten_addr: 127.0.0.1:{port}\n\
                 metrics_listen_addr: \"\"\nunix_socket: {data}/headscale.sock\n\
                 noise:\n  private_key_path: {noise}\n\
                 database:\n  type: sqlite\n  sqlite:\n    path: {db}\n  sled:\n    path: {data}/db.sled\n\
                 prefixes:\n  v4: 100.64.0.0/10\n  v6: fd7a:115c:a1e0::/48\n\
                 dns:\n  base_domain: tailnet.example\n  override_local_dns: false\n\
                 derp:\n  server:\n    enabled: false\n    private_key_path: {data}/derp.key\n\
                 policy:\n  mode: database\nlog:\n  level: info\n{oidc}",
                data = data.display(),
                noise = noise.display(),
                db = db.display(),
                oidc = oidc_yaml(provider_port, ""),
            )
        });
        let provider = OidcProvider::start_on(
            provider_port,
            &[&bob],
            &[
                &format!("http://127.0.0.1:{go_port}/oidc/callback"),
                &format!("{}/oidc/callback", ours.url()),
            ],
        );

        // The Go headscale: bob logs in through the provider for a pending machine.
        let go = GoHeadscale::start(go_dir.path(), go_port, provider_port);
        go.cli(&["users", "create", "admin"]);
        let authreq = format!("hskey-authreq-{}", "oidcimport00".repeat(2));
        go.cli(&[
            "debug",
            "create-node",
            "--user",
            "admin",
            "--name",
            "old-laptop",
            "--key",
            &authreq,
        ]);
        let outcome = Browser::new()
            .login(
                &format!("http://127.0.0.1:{go_port}/register/{authreq}"),
                &bob.username,
                &bob.password,
            )
            .await;
        assert_eq!(
            outcome.step,
            Step::Confirmed,
            "Go headscale: {}\n{}",
            outcome.page,
            go.log()
        );
        let go_users = common::go_cli_json(&go.config(), &["users", "list", "--force"], &[]);
        let go_bob = go_users
            .as_array()
            .and_then(|users| users.iter().find(|u| u["provider"] == "oidc"))
            .unwrap_or_else(|| panic!("no OIDC user in Go headscale: {go_users}"))
            .clone();
        drop(go);

        // We import headscale's database and bob logs in again, on a new machine.
        ours.spawn();
        ours.wait_healthy();
        assert!(
            ours.log().contains("imported headscale's database"),
            "{}",
            ours.log()
        );
        let before = users(&ours);
        let imported = before
            .iter()
            .find(|u| u["provider"] == "oidc")
            .unwrap_or_else(|| panic!("no imported OIDC user: {before:?}"))
            .clone();
        assert_eq!(
            imported["providerId"], go_bob["provider_id"],
            "{imported} vs {go_bob}"
        );
        assert_eq!(
            imported["providerId"],
            provider.provider_id("sub-bob").as_str()
        );
        let waiting = Waiting::start(&ours, "new-laptop").await;
        let outcome = Browser::new()
            .login(&waiting.auth_url, &bob.username, &bob.password)
            .await;
        assert_confirmed(&outcome, &provider);
        assert!(waiting.answered().await.machine_authorized);
        assert_eq!(users(&ours).len(), before.len(), "a second user appeared");
        let node = ours
            .nodes()
            .into_iter()
            .find(|n| n["givenName"] == "new-laptop")
            .expect("the new machine");
        assert_eq!(node["user"]["id"], imported["id"], "{node}");
        assert_eq!(node["registerMethod"], "REGISTER_METHOD_OIDC", "{node}");
        ours.stop();
    });
}

/// The real Go headscale v0.29.2 with OIDC on, on a sqlite database in `dir` (killed on drop).
struct GoHeadscale {
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl GoHeadscale {
    fn start(dir: &std::path::Path, port: u16, provider_port: u16) -> GoHeadscale {
        let d = dir.display();
        std::fs::write(
            dir.join("derp.yaml"),
            "regions:\n  900:\n    regionid: 900\n    regioncode: test\n    regionname: Test\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: 127.0.0.1\n        ipv4: 127.0.0.1\n        stunport: -1\n        derpport: 1\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "server_url: http://127.0.0.1:{port}\nlisten_addr: 127.0.0.1:{port}\n\
                 metrics_listen_addr: 127.0.0.1:0\ngrpc_listen_addr: 127.0.0.1:0\n\
                 disable_check_updates: true\nnoise:\n  private_key_path: {d}/noise_private.key\n\
                 prefixes:\n  v4: 100.64.0.0/10\n  v6: fd7a:115c:a1e0::/48\n  allocation: sequential\n\
                 derp:\n  server:\n    enabled: false\n  urls: []\n  paths: [{d}/derp.yaml]\n  auto_update_enabled: false\n\
                 node:\n  expiry: 0\n\
                 database:\n  type: sqlite\n  sqlite:\n    path: {d}/db.sqlite\n    write_ahead_log: true\n\
                 log:\n  level: warn\npolicy:\n  mode: database\n\
                 dns:\n  magic_dns: true\n  base_domain: tailnet.example\n  override_local_dns: false\n  nameservers:\n    global: []\n\
                 unix_socket: {d}/headscale.sock\nunix_socket_permission: \"0770\"\n{oidc}",
                oidc = oidc_yaml(provider_port, ""),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("go.log")).unwrap();
        let child = Command::new(common::go_headscale())
            .arg("-c")
            .arg(dir.join("config.yaml"))
            .arg("serve")
            .env("HEADSCALE_DISABLE_CHECK_UPDATES", "true")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut go = GoHeadscale {
            dir: dir.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(dir.join("headscale.sock").exists()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && common::http(port, "GET", "/health", None).0 == 200)
        {
            if let Some(status) = go.child.try_wait().unwrap() {
                panic!("Go headscale exited with {status}: {}", go.log());
            }
            assert!(
                Instant::now() < deadline,
                "Go headscale did not start: {}",
                go.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        go
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.join("config.yaml")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("go.log")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.push("--force");
        common::go_cli_ok(&self.config(), &all, &[])
    }
}

impl Drop for GoHeadscale {
    /// SIGTERM first, so the sqlite database is closed cleanly before we import it.
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `scope` and `extra_params` go into the authorization request as configured; without the
/// `email` scope the provider's userinfo has no email, so the user has none.
#[test]
fn scope_and_extra_params_reach_the_provider() {
    isolated(|| async {
        let alice = alice();
        let oidc = Oidc::start(
            &[&alice],
            "  scope: [openid, profile]\n  extra_params:\n    prompt: login\n    domain_hint: example.com\n",
        );
        let waiting = Waiting::start(&oidc.server, "laptop").await;
        let redirect = Browser::new().get(&waiting.auth_url).await;
        assert_eq!(redirect.status, 302, "{redirect}");
        assert_eq!(
            redirect.location_param("scope").as_deref(),
            Some("openid profile")
        );
        assert_eq!(redirect.location_param("prompt").as_deref(), Some("login"));
        assert_eq!(
            redirect.location_param("domain_hint").as_deref(),
            Some("example.com")
        );
        oidc.log_in(waiting, &alice).await;
        let user = oidc.user("sub-alice").expect("alice");
        assert_eq!(user["name"], "alice", "{user}");
        assert_eq!(user["email"], "", "{user}");
        assert_eq!(user["displayName"], alice.full_name().as_str(), "{user}");
    });
}

/// The confirmation is bound to the browser that logged in: no token (400), the token
/// without the cookie (403), the cookie with another token (403) register nothing; the
/// genuine pair does. An AuthURL nobody waits on is a 404 page.
#[test]
fn the_confirmation_needs_its_token_and_cookie() {
    isolated(|| async {
        let alice = alice();
        let oidc = Oidc::start(&[&alice], "");
        let unknown = Browser::new()
            .get(&format!(
                "{}/register/AAAAAAAAAAAAAAAAAAAAAAAA",
                oidc.server.url()
            ))
            .await;
        assert_refused(&unknown, 404, "");

        let waiting = Waiting::start(&oidc.server, "laptop").await;
        let mut browser = Browser::new();
        let callback = callback_for(&mut browser, &waiting.auth_url, &alice).await;
        let confirmation = browser.get(&callback).await;
        assert_eq!(confirmation.status, 200, "{confirmation}");
        let action = format!("{}/register/confirm/{}", oidc.server.url(), waiting.id());

        let page = browser.post_form(&action, &[]).await;
        assert_refused(&page, 400, "");
        let page = browser
            .post_form(&action, &[("headscale_register_confirm", "not-the-token")])
            .await;
        assert_refused(&page, 403, "");
        let cookie = browser
            .cookie_starting("headscale_register_confirm")
            .expect("the confirmation cookie")
            .clone();
        browser.cookies.retain(|c| c != &cookie);
        let page = browser.confirm(&confirmation).await;
        assert_refused(&page, 403, "");
        assert!(oidc.server.nodes().is_empty());

        browser.cookies.push(cookie);
        let done = browser.confirm(&confirmation).await;
        assert!(done.body.contains("Node registered"), "{done}");
        assert!(waiting.answered().await.machine_authorized);
    });
}

/// The provider rotates its signing key (the example provider makes a new one, with a new
/// key id, each time it starts): logins keep working without restarting our server, as in
/// headscale, whose key set is re-fetched when a token names a key it does not know.
#[test]
fn a_provider_key_rotation_keeps_logins_working() {
    isolated(|| async {
        let alice = alice();
        let mut oidc = Oidc::start(&[&alice], "");
        let first = Waiting::start(&oidc.server, "laptop").await;
        oidc.log_in(first, &alice).await;
        let port = oidc.provider.port;
        oidc.provider.stop();
        let callback = format!("{}/oidc/callback", oidc.server.url());
        oidc.provider = OidcProvider::start_on(port, &[&alice], &[&callback]);
        let second = Waiting::start(&oidc.server, "desktop").await;
        oidc.log_in(second, &alice).await;
        assert_eq!(oidc.server.nodes().len(), 2);
    });
}

/// `client_secret_path` (with an environment variable in it, expanded as headscale does):
/// the secret read from the file is what the token exchange presents; a wrong one in the
/// file makes the provider refuse the code (403 "invalid code").
#[test]
fn the_client_secret_can_come_from_a_file() {
    isolated(|| async {
        let alice = alice();
        for (secret, works) in [
            (format!("{CLIENT_SECRET}\n"), true),
            ("wrong".into(), false),
        ] {
            let secrets = tempfile::tempdir().unwrap();
            std::fs::write(secrets.path().join("client_secret"), &secret).unwrap();
            let port = common::free_port();
            let mut server = TestServer::new(&format!(
                "oidc:\n  issuer: {}\n  client_id: {CLIENT_ID}\n  client_secret_path: ${{OIDC_SECRETS}}/client_secret\n",
                common::oidc::issuer(port)
            ));
            server.env = vec![("OIDC_SECRETS".into(), secrets.path().display().to_string())];
            let callback = format!("{}/oidc/callback", server.url());
            let provider = OidcProvider::start_on(port, &[&alice], &[&callback]);
            server.spawn();
            server.wait_healthy();
            let oidc = Oidc { server, provider };
            let waiting = Waiting::start(&oidc.server, "laptop").await;
            if works {
                oidc.log_in(waiting, &alice).await;
            } else {
                let outcome = Browser::new()
                    .login(&waiting.auth_url, &alice.username, &alice.password)
                    .await;
                assert_eq!(outcome.step, Step::Callback, "{}", outcome.page);
                assert_refused(&outcome.page, 403, "invalid code");
                assert!(oidc.server.nodes().is_empty());
            }
        }
    });
}

/// Opening the same AuthURL again starts another flight; each registration id keeps at most
/// `MAX_FLIGHTS_PER_LOGIN`, the oldest going first, so one AuthURL cannot fill the table: a
/// callback for a pushed-out flight is gone (410) and the newest login still completes.
#[test]
fn an_auth_url_opened_again_and_again_keeps_only_its_newest_flights() {
    use headscale::oidc::sessions::MAX_FLIGHTS_PER_LOGIN;
    isolated(|| async {
        let alice = alice();
        let oidc = Oidc::start(&[&alice], "");
        let waiting = Waiting::start(&oidc.server, "laptop").await;
        let mut oldest = Browser::new();
        let stale = callback_for(&mut oldest, &waiting.auth_url, &alice).await;
        for _ in 0..MAX_FLIGHTS_PER_LOGIN {
            let again = Browser::new().get(&waiting.auth_url).await;
            assert_eq!(again.status, 302, "{again}");
        }
        let page = oldest.get(&stale).await;
        assert_refused(&page, 410, "login session expired, try again");
        assert!(users(&oidc.server).is_empty());
        oidc.log_in(waiting, &alice).await;
    });
}

/// Device approval applies to OIDC logins as to any other: with `node.require_approval` the
/// confirmed machine is registered for its person but not authorized until `nodes approve`.
#[test]
fn an_oidc_machine_waits_for_device_approval() {
    isolated(|| async {
        let alice = alice();
        let port = common::free_port();
        let mut server = TestServer::new(&format!(
            "{}node:\n  require_approval: true\n",
            oidc_yaml(port, "")
        ));
        let callback = format!("{}/oidc/callback", server.url());
        let provider = OidcProvider::start_on(port, &[&alice], &[&callback]);
        server.spawn();
        server.wait_healthy();
        let oidc = Oidc { server, provider };
        let waiting = Waiting::start(&oidc.server, "kiosk").await;
        let outcome = Browser::new()
            .login(&waiting.auth_url, &alice.username, &alice.password)
            .await;
        assert_confirmed(&outcome, &oidc.provider);
        let answer = waiting.answered().await;
        assert!(answer.error.is_empty(), "{answer:?}");
        assert!(!answer.machine_authorized, "{answer:?}");
        let node = &oidc.server.nodes()[0];
        assert_eq!(node["authorized"], false, "{node}");
        assert_eq!(node["registerMethod"], "REGISTER_METHOD_OIDC", "{node}");
        let id = node["id"].as_str().unwrap().to_string();
        oidc.server.ok(&["nodes", "approve", "--id", &id]);
        assert_eq!(oidc.server.nodes()[0]["authorized"], true);
    });
}
