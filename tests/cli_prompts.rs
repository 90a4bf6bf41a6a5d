//! Destructive commands ask first when a person is at a terminal (a pseudo-terminal made
//! with util-linux `script`), never in scripts or with `--force`; `nodes backfillips`.

mod common;

use common::{TestServer, BIN};
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs the CLI on a pseudo-terminal, typing `answer`; exit status and everything printed.
fn at_terminal(server: &TestServer, args: &[&str], answer: &str) -> (bool, String) {
    let command = std::iter::once(BIN.to_string())
        .chain(["-c".into(), server.config.display().to_string()])
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` is needed for terminal tests");
    // Give the prompt a moment to appear, then answer it.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = child.stdin.take().unwrap().write_all(answer.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn user_count(server: &TestServer) -> usize {
    server.json(&["users", "list"]).as_array().unwrap().len()
}

#[test]
fn destructive_commands_ask_at_a_terminal_only() {
    let server = TestServer::start();
    for name in ["ann", "bob", "cyd", "dee"] {
        server.ok(&["users", "create", name]);
    }
    // "no" (or just Enter) changes nothing and says so.
    let (ok, printed) = at_terminal(&server, &["users", "destroy", "--name", "ann"], "n\n");
    assert!(!ok, "{printed}");
    assert!(
        printed.contains("Do you want to remove the user"),
        "{printed}"
    );
    assert!(
        printed.contains("aborted: nothing was changed"),
        "{printed}"
    );
    assert_eq!(user_count(&server), 4);
    // "yes" goes ahead.
    let (ok, printed) = at_terminal(&server, &["users", "destroy", "--name", "ann"], "y\n");
    assert!(ok, "{printed}");
    assert_eq!(user_count(&server), 3);
    // --force skips the question, at a terminal too.
    let (ok, printed) = at_terminal(
        &server,
        &["users", "destroy", "--name", "bob", "--force"],
        "",
    );
    assert!(ok, "{printed}");
    assert!(!printed.contains("Do you want"), "{printed}");
    assert_eq!(user_count(&server), 2);
    // Not at a terminal (a script): no question.
    server.ok(&["users", "destroy", "--name", "cyd"]);
    assert_eq!(user_count(&server), 1);

    // The same for a node.
    server.ok(&["debug", "create-node", "--name", "n1", "--user", "dee"]);
    let (ok, printed) = at_terminal(&server, &["nodes", "delete", "-i", "1"], "no\n");
    assert!(
        !ok && printed.contains("Do you want to remove node 1?"),
        "{printed}"
    );
    assert_eq!(server.json(&["nodes", "list"]).as_array().unwrap().len(), 1);
    let (ok, printed) = at_terminal(&server, &["nodes", "delete", "-i", "1"], "yes\n");
    assert!(ok, "{printed}");
    assert_eq!(server.json(&["nodes", "list"]).as_array().unwrap().len(), 0);
}

#[test]
fn backfillips_reports_nothing_to_do() {
    let server = TestServer::start();
    server.ok(&["users", "create", "ann"]);
    server.ok(&["debug", "create-node", "--name", "n1", "--user", "ann"]);
    let out = server.ok(&["nodes", "backfillips"]);
    assert!(out.contains("already has an address"), "{out}");
    let (ok, printed) = at_terminal(&server, &["nodes", "backfillips"], "n\n");
    assert!(!ok && printed.contains("assign/remove IPs"), "{printed}");
}
