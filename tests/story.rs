//! The story tailnet in `examples/story/` plays through and every audit question it asks is
//! answered, so the example the README points to stays true as the commands move.

use std::process::Command;

#[test]
fn the_story_plays_and_every_question_is_answered() {
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/story/story.sh"
        ))
        .env("HEADSCALE", env!("CARGO_BIN_EXE_headscale"))
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "story failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("The story is in the log: before the incident = seq "),
        "{stdout}"
    );
    // During the incident eve exists; the contractor was added by an admin.
    assert!(stdout.contains("| eve "), "{stdout}");
    assert!(stdout.contains("PolicyReplaced"), "{stdout}");
}
