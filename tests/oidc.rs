//! OIDC logins end to end: our server (the real binary) against a real OpenID provider
//! (zitadel's example server, `.ci/install-oidc-provider`), a scripted browser doing what a
//! person does (follow the AuthURL, log in on the provider's form, confirm on our page), and our
//! own control client waiting for the login as `tailscale up` does.
//!
//! The provider listens on every interface, so each test re-runs itself inside a network
//! namespace of its own (`isolated`): only loopback exists there, nothing is reachable from
//! outside, and everything the test started dies with it. Needs root (for `unshare`).

mod common;

use common::oidc::{query_param, Browser, OidcProvider, OidcUser, CLIENT_ID, CLIENT_SECRET};
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Set in the re-executed test: "we are inside the namespace".
const INSIDE: &str = "HEADSCALE_OIDC_TEST_NETNS";

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
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run `unshare` ({e}): util-linux is needed"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} failed inside its namespace ({})",
        out.status
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
