//! Replays every input kept in `fuzz/corpus/<target>/` (seeds and crash regressions) through
//! the same checks the cargo-fuzz targets run, so plain `cargo test` on stable Rust catches a
//! regression without libFuzzer or nightly. Open bugs listed in `fuzz/known_crashes.txt` are
//! skipped, since some of them abort the process.

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::Path;

/// `<target>/<file>` entries of `fuzz/known_crashes.txt`: open bugs, skipped (they may abort).
fn known_crashes(fuzz_dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(fuzz_dir.join("known_crashes.txt")).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn fuzz_corpora_replay_cleanly() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let root = fuzz_dir.join("corpus");
    let known = known_crashes(&fuzz_dir);
    for entry in &known {
        assert!(
            root.join(entry).is_file(),
            "fuzz/known_crashes.txt names {entry}, which is not in fuzz/corpus"
        );
        eprintln!("skipping fuzz/corpus/{entry}: listed in fuzz/known_crashes.txt (open bug)");
    }
    let mut failures = Vec::new();
    for target in checks::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} has no inputs", dir.display());
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy();
            if known.contains(&format!("{target}/{name}")) {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| checks::check(target, &data));
            if outcome.is_err() {
                failures.push(format!("{target}: {}", path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "corpus inputs that panic:\n{}",
        failures.join("\n")
    );
}
