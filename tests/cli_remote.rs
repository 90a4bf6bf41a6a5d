//! The CLI's remote mode: every command over HTTPS with an API key (`HEADSCALE_CLI_ADDRESS`,
//! `HEADSCALE_CLI_API_KEY`, `HEADSCALE_CLI_INSECURE`, `HEADSCALE_CLI_TIMEOUT`), against the
//! real binary serving TLS with a self-signed certificate; no config file on the CLI side.

mod common;

use common::{base_yaml, TestServer, BIN};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A server on TLS (self-signed for `localhost` and 127.0.0.1); returns it and the cert path.
fn tls_server() -> (TestServer, std::path::PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let mut cert_path = None;
    let mut server = TestServer::with_yaml(|data, port| {
        std::fs::create_dir_all(data).unwrap();
        let cert = data.join("tls.crt");
        let key = data.join("tls.key");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        cert_path = Some(cert.clone());
        format!(
            "{base}\
             tls_cert_path: {cert}\n\
             tls_key_path: {key}\n\
             grpc_listen_addr: 127.0.0.1:0\n\
             derp:\n  server:\n    enabled: false\n    private_key_path: {data}/derp.key\n\
             policy:\n  mode: database\n\
             log:\n  level: warn\n",
            base = base_yaml(data, port).replace("http://", "https://"),
            cert = cert.display(),
            key = key.display(),
            data = data.display(),
        )
    });
    server.spawn();
    (server, cert_path.unwrap())
}

/// Runs the CLI in remote mode from a directory with no config file.
fn remote(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["-c", &dir.join("absent.yaml").display().to_string()])
        .args(args)
        .env_remove("HEADSCALE_CONFIG")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn one_error_line(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    lines[0].to_string()
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_command_works_over_https_with_an_api_key() {
    let (server, cert) = tls_server();
    let key = server.ok(&["apikeys", "create"]).trim().to_string();
    assert!(key.starts_with("hskey-api-"), "{key}");
    let address = format!("localhost:{}", server.port);
    let cert = cert.display().to_string();
    let client_dir = tempfile::tempdir().unwrap();
    let env = [
        ("HEADSCALE_CLI_ADDRESS", address.as_str()),
        ("HEADSCALE_CLI_API_KEY", key.as_str()),
        ("SSL_CERT_FILE", cert.as_str()),
    ];

    // Writes and reads, verified against the server's certificate.
    let out = remote(client_dir.path(), &env, &["users", "create", "remote-ann"]);
    assert!(out.status.success(), "{out:?}");
    let users = stdout_json(&remote(
        client_dir.path(),
        &env,
        &["users", "list", "-o", "json"],
    ));
    assert_eq!(users[0]["name"], "remote-ann", "{users}");
    let created = stdout_json(&remote(
        client_dir.path(),
        &env,
        &[
            "preauthkeys",
            "create",
            "--user",
            "remote-ann",
            "--reusable",
            "-o",
            "json",
        ],
    ));
    assert_eq!(created["reusable"], true, "{created}");
    let out = remote(
        client_dir.path(),
        &env,
        &[
            "users",
            "rename",
            "--name",
            "remote-ann",
            "--new-name",
            "ann",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    // The audit log names the API key as the actor, not the local socket.
    let events = server.json(&["events", "list"]);
    let actors: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "UserCreated" || e["type"] == "UserRenamed")
        .map(|e| e["actor"].to_string())
        .collect();
    assert_eq!(actors.len(), 2, "{events}");
    assert!(
        actors.iter().all(|a| a.contains("api key 1")),
        "actors {actors:?} should name the API key"
    );

    // A wrong key: one line that says the key was refused; nothing changed.
    let bad = [
        ("HEADSCALE_CLI_ADDRESS", address.as_str()),
        (
            "HEADSCALE_CLI_API_KEY",
            "hskey-api-AAAAAAAAAAAA-nottherightsecret",
        ),
        ("SSL_CERT_FILE", cert.as_str()),
    ];
    let line = one_error_line(&remote(client_dir.path(), &bad, &["users", "create", "x"]));
    assert!(line.contains("refused the API key"), "{line}");
    // No key at all.
    let line = one_error_line(&remote(
        client_dir.path(),
        &[("HEADSCALE_CLI_ADDRESS", address.as_str())],
        &["users", "list"],
    ));
    assert!(line.contains("no API key"), "{line}");
    // An untrusted certificate is refused unless cli.insecure says otherwise.
    let untrusted = [
        ("HEADSCALE_CLI_ADDRESS", address.as_str()),
        ("HEADSCALE_CLI_API_KEY", key.as_str()),
        ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
    ];
    let line = one_error_line(&remote(client_dir.path(), &untrusted, &["users", "list"]));
    assert!(
        line.contains("certificate") || line.contains("root"),
        "{line}"
    );
    let insecure = [
        ("HEADSCALE_CLI_ADDRESS", address.as_str()),
        ("HEADSCALE_CLI_API_KEY", key.as_str()),
        ("HEADSCALE_CLI_INSECURE", "true"),
    ];
    let users = stdout_json(&remote(
        client_dir.path(),
        &insecure,
        &["users", "list", "-o", "json"],
    ));
    assert_eq!(users[0]["name"], "ann", "{users}");
    assert_eq!(server.json(&["users", "list"]).as_array().unwrap().len(), 1);
}

#[test]
fn a_silent_server_times_out_with_one_line() {
    // Accepts the connection and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let line = one_error_line(&remote(
        dir.path(),
        &[
            ("HEADSCALE_CLI_ADDRESS", address.as_str()),
            ("HEADSCALE_CLI_API_KEY", "hskey-api-AAAAAAAAAAAA-secret"),
            ("HEADSCALE_CLI_TIMEOUT", "1s"),
        ],
        &["nodes", "list"],
    ));
    assert!(line.contains("no answer") && line.contains("1s"), "{line}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    drop(listener);
}

/// L10: a renewed certificate is served after SIGHUP without a restart; a broken pair is
/// refused by the reload and the one in force stays.
#[test]
fn sighup_reloads_a_renewed_certificate() {
    let (server, cert) = tls_server();
    let key = server.ok(&["apikeys", "create"]).trim().to_string();
    let address = format!("localhost:{}", server.port);
    let client_dir = tempfile::tempdir().unwrap();
    let old_ca = client_dir.path().join("old.pem");
    std::fs::copy(&cert, &old_ca).unwrap();
    let trusting = |ca: &Path| {
        let ca = ca.display().to_string();
        remote(
            client_dir.path(),
            &[
                ("HEADSCALE_CLI_ADDRESS", address.as_str()),
                ("HEADSCALE_CLI_API_KEY", key.as_str()),
                ("SSL_CERT_FILE", ca.as_str()),
            ],
            // json-line: an error is then one `{"error": …}` line, as headscale's CLI prints it.
            &["users", "list", "-o", "json-line"],
        )
    };
    assert!(trusting(&old_ca).status.success());

    // Renewal: a new pair written over the old files, then SIGHUP (`systemctl reload`).
    let renewed =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let key_path = cert.with_file_name("tls.key");
    std::fs::write(&key_path, renewed.signing_key.serialize_pem()).unwrap();
    std::fs::write(&cert, renewed.cert.pem()).unwrap();
    let pid = server.pid().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGHUP) };
    // The signal is handled asynchronously: poll until the renewed certificate is served.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !trusting(&cert).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload: {}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let line = one_error_line(&trusting(&old_ca));
    assert!(line.contains("certificate"), "the old one is gone: {line}");

    // A key that does not match: the reload is refused, the renewed pair stays in force.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&key_path, other.signing_key.serialize_pem()).unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.log().contains("TLS certificate not reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal: {}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(trusting(&cert).status.success(), "the pair in force stays");
}
