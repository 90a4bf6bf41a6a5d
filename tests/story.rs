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
    // During the incident eve's laptop could reach the database through group:eng, ...
    assert!(
        stdout.contains(
            "alice-laptop (alice), bob-laptop (bob), eve-laptop (eve) | db-1 (tag:db) | 5432"
        ),
        "{stdout}"
    );
    // ... gained by one policy change and lost by the next, both by an admin.
    assert!(
        stdout.contains("+ group:eng (node eve-laptop 100.64.0.7, user eve) on 5432 via acl[0] at seq 19 (PolicyReplaced by admin"),
        "{stdout}"
    );
    assert!(
        stdout.contains("- group:eng (node eve-laptop 100.64.0.7, user eve) on 5432 via acl[0] at seq 20 (PolicyReplaced by admin"),
        "{stdout}"
    );
    // Her client was given the database as a peer.
    assert!(
        stdout.contains("Netmap of node 7 (eve-laptop) at seq 19"),
        "{stdout}"
    );
    assert!(stdout.contains("db-1.acme.example."), "{stdout}");
    // The diff names the user, the nodes and the policy with the events responsible.
    assert!(stdout.contains("+ 4 eve: name eve"), "{stdout}");
    assert!(
        stdout.contains("seq 19 PolicyReplaced by admin (local socket)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+    { \"action\": \"accept\", \"src\": [\"eve@\"]"),
        "{stdout}"
    );
    // The export verifies with the pinned key, signed up to its last record.
    assert!(
        stdout.contains("ok: 23 events (seq 1..=23)")
            && stdout.contains("signed through seq 23, with the pinned key"),
        "{stdout}"
    );
}
