//! The policy engine against the 619 cases captured from Tailscale's own control plane
//! (`../shared/compat/policy`): the same check as `examples/policy_compat.rs`, in the default
//! run. At least [`MIN_PASSED`] must pass (every case, once the last gaps close); the known
//! failures are listed, with reasons, in ARCHITECTURE.md ("Policy compatibility").

#[path = "../examples/policy_compat.rs"]
mod policy_compat;

use std::path::PathBuf;

/// At least this many cases must pass: every one but `nodeattrs-ippool-g1-admin`
/// (`autogroup:admin`, user roles), which closes with the role autogroups.
const MIN_PASSED: usize = 618;

#[test]
fn captured_cases_pass() {
    // `HEADSCALE_COMPAT_DIR`, else `../shared/compat/policy` next to the checkout, else the
    // machine's shared copy (CI clones elsewhere).
    let candidates = [
        std::env::var_os("HEADSCALE_COMPAT_DIR").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/compat/policy")),
        Some(PathBuf::from("/work/shared/compat/policy")),
    ];
    let Some(corpus) = candidates.into_iter().flatten().find(|p| p.is_dir()) else {
        panic!("the compatibility corpus is missing: set HEADSCALE_COMPAT_DIR");
    };
    let summary = policy_compat::run(&[corpus]);
    let total = summary.passed + summary.failed.len();
    for (name, why) in &summary.failed {
        println!("FAIL {name}: {}", why.chars().take(200).collect::<String>());
    }
    let rate = summary.passed as f64 / total as f64;
    println!(
        "{} passed, {} failed ({:.1} %)",
        summary.passed,
        summary.failed.len(),
        rate * 100.0
    );
    assert!(total >= 619, "only {total} cases found");
    assert!(
        summary.passed >= MIN_PASSED,
        "{} cases pass, fewer than {MIN_PASSED}",
        summary.passed
    );
}
