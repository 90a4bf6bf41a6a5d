//! House rules checked on every test run: each source file opens with a `//!` doc saying what
//! it owns, no debugging leftovers (debug macros, ignored or should-panic tests, fix-me notes)
//! land, and every test the policy rules document names exists.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "src",
        "tests",
        "benches",
        "examples",
        "fuzz/src",
        "fuzz/fuzz_targets",
    ] {
        let dir = root.join(dir);
        if dir.exists() {
            rust_files(&dir, &mut files);
        }
    }
    files
}

#[test]
fn every_source_file_has_a_module_doc() {
    let missing: Vec<String> = files()
        .into_iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! doc: {missing:#?}"
    );
}

#[test]
fn no_debugging_leftovers() {
    // Spelled in pieces so this file does not trip its own check.
    let banned = [
        ["dbg", "!("].concat(),
        ["#[", "ignore]"].concat(),
        ["#[", "should_panic"].concat(),
        ["FIX", "ME"].concat(),
    ];
    let mut found = Vec::new();
    for path in files() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            for word in &banned {
                if line.contains(word.as_str()) {
                    found.push(format!(
                        "{}:{}: {}",
                        path.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "debugging leftovers: {found:#?}");
}

/// `src/core/policy/RULES.md` names, for each documented policy rule, the test that checks
/// it: every name there must be a test that exists, so the document cannot drift from the
/// suite.
#[test]
fn every_test_the_policy_rules_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(root.join("src/core/policy/RULES.md")).unwrap();
    let sources: String = files()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let mut named = 0;
    let mut missing = Vec::new();
    for row in rules.lines().filter(|l| l.starts_with('|')) {
        // The last column of a rule table holds the test names, in backticks.
        let Some(cell) = row.trim().trim_matches('|').rsplit('|').next() else {
            continue;
        };
        for name in cell.split('`').skip(1).step_by(2) {
            let name = name.rsplit("::").next().unwrap_or(name);
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                continue;
            }
            named += 1;
            if !sources.contains(&format!("fn {name}(")) {
                missing.push(name.to_string());
            }
        }
    }
    assert!(named >= 100, "only {named} tests named in RULES.md");
    assert!(
        missing.is_empty(),
        "RULES.md names tests that do not exist: {missing:?}"
    );
}
