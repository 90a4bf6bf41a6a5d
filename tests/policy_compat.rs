//! The policy engine against cases captured from Tailscale's own control plane: the 619 in
//! `../shared/compat/policy`, and the further scenarios of the same capture tool that
//! headscale keeps in its Go module (`hscontrol/policy/v2/testdata`, read from the module
//! cache, never copied here). The same check as `examples/policy_compat.rs`, in the default
//! run; known failures are listed, with reasons, in ARCHITECTURE.md ("Policy compatibility").

#[path = "../examples/policy_compat.rs"]
mod policy_compat;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// Every case must pass.
const MIN_PASSED: usize = 619;

/// How many of headscale's further scenarios must pass: all but
/// `policytest-allpass-grants-only-tag-src-ipv6-literal-dst`, a capture artefact
/// (ARCHITECTURE.md, "Policy compatibility").
const FURTHER_MIN_PASSED: usize = 246;

/// The headscale version whose module holds the further captures (the one the drop-in tests
/// run: `.ci/install-go-headscale`).
const HEADSCALE_MODULE: &str = "github.com/juanfont/headscale@v0.29.2";

fn our_corpus() -> PathBuf {
    // `HEADSCALE_COMPAT_DIR`, else `../shared/compat/policy` next to the checkout, else the
    // machine's shared copy (CI clones elsewhere).
    let candidates = [
        std::env::var_os("HEADSCALE_COMPAT_DIR").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/compat/policy")),
        Some(PathBuf::from("/work/shared/compat/policy")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_dir())
        .expect("the compatibility corpus is missing: set HEADSCALE_COMPAT_DIR")
}

/// headscale's capture directory in the Go module cache, downloading the module (from the
/// machine's Go proxy, as `.ci/install-go-headscale` does) when it is not there yet.
fn headscale_captures() -> PathBuf {
    let go = |args: &[&str]| {
        Command::new("go")
            .args(args)
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .output()
            .unwrap_or_else(|e| panic!("go {args:?}: {e} (Go is needed for this test)"))
    };
    let cache = go(&["env", "GOMODCACHE"]);
    let dir = PathBuf::from(String::from_utf8_lossy(&cache.stdout).trim())
        .join(HEADSCALE_MODULE)
        .join("hscontrol/policy/v2/testdata");
    if !dir.is_dir() {
        let out = go(&["mod", "download", HEADSCALE_MODULE]);
        assert!(
            out.status.success(),
            "go mod download {HEADSCALE_MODULE}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dir.is_dir(), "{} is missing", dir.display());
    dir
}

fn report(what: &str, summary: &policy_compat::Summary) {
    for (name, why) in &summary.failed {
        println!("FAIL {name}: {}", why.chars().take(200).collect::<String>());
    }
    let total = summary.passed + summary.failed.len();
    let rate = summary.passed as f64 / total.max(1) as f64;
    println!(
        "{what}: {} passed, {} failed ({:.1} %)",
        summary.passed,
        summary.failed.len(),
        rate * 100.0
    );
}

#[test]
fn captured_cases_pass() {
    let summary = policy_compat::run(&[our_corpus()]);
    report("our corpus", &summary);
    let total = summary.passed + summary.failed.len();
    assert!(total >= 619, "only {total} cases found");
    assert!(
        summary.passed >= MIN_PASSED,
        "{} cases pass, fewer than {MIN_PASSED}",
        summary.passed
    );
}

#[test]
fn headscale_held_scenarios_pass() {
    let ours = policy_compat::run(&[our_corpus()]);
    let known: BTreeSet<String> = ours.ids;
    let summary = policy_compat::run_except(&[headscale_captures()], &known);
    report("headscale's further scenarios", &summary);
    let total = summary.passed + summary.failed.len();
    assert!(total >= 200, "only {total} further scenarios found");
    assert!(
        summary.passed >= FURTHER_MIN_PASSED,
        "{} further scenarios pass, fewer than {FURTHER_MIN_PASSED}",
        summary.passed
    );
}
