//! Our CLI prints what headscale's Go CLI prints, so scripts written for headscale keep
//! working: `tests/golden/cli/*.txt` are the outputs the real Go headscale v0.29.2 CLI gave
//! against the real Go server for the command sequence `tests/golden/cli/cases.txt`
//! (re-record with `bash tests/golden/cli/record.sh`); this test runs the same sequence with
//! our CLI against our server and compares exit status and stdout byte for byte, and for a
//! failing command its stderr, after normalising only what differs between any two runs:
//! - times (`seconds`/`nanos`; the zero time `-62135596800` is kept, and the Go structs leave
//!   out `nanos` when it is 0, which is compared as equal),
//! - random key material: machine, node and disco keys (all-zero keys are kept), and the
//!   prefixes and secrets of `hskey-auth-…`/`hskey-api-…` keys,
//! - the text of an error (its shape — `{"error": …}`, `error: …` — and the exit status are
//!   compared; the wording is ours).
//!
//! One deviation is the server's, not the CLI's, and is the same as in `tests/api_contract.rs`:
//! headscale 0.29.2 gives a node registered without expiry the zero time as its `expiry`
//! (and nil once expiry is disabled); we have no expiry (nil) for both. So a zero-time
//! `expiry` in a golden may be absent in ours.

mod common;

use common::TestServer;
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cli")
}

struct Case {
    name: String,
    args: Vec<String>,
}

fn cases() -> Vec<Case> {
    let dir = golden_dir();
    let text = std::fs::read_to_string(dir.join("cases.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap().to_string();
            let args = words
                .map(|w| w.replace("{{dir}}", dir.to_str().unwrap()))
                .collect();
            Case { name, args }
        })
        .collect()
}

/// One recorded run: exit status, stdout, stderr.
#[derive(Debug, PartialEq)]
struct Run {
    rc: i32,
    stdout: String,
    stderr: String,
}

fn recorded(name: &str) -> Run {
    let path = golden_dir().join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run tests/golden/cli/record.sh)", path.display()));
    let rest = text
        .strip_prefix("rc: ")
        .expect("a golden starts with `rc: `");
    let (rc, rest) = rest.split_once('\n').unwrap();
    let rest = rest.strip_prefix("--- stdout\n").unwrap();
    let (stdout, stderr) = rest.split_once("--- stderr\n").unwrap();
    Run {
        rc: rc.parse().unwrap(),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
    }
}

const ZERO_TIME: &str = "-62135596800";

/// Replaces each number after `key` (`"seconds": `, `seconds: `, …) by `<key>` unless it is the
/// zero time; after a JSON `seconds`, also drops a following `nanos` (Go omits a zero one).
fn times(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let json = rest.find("\"seconds\":");
        let yaml = rest.find("seconds: ");
        let (at, key_len, is_json) = match (json, yaml) {
            (Some(j), Some(y)) if j < y => (j, "\"seconds\":".len(), true),
            (Some(j), None) => (j, "\"seconds\":".len(), true),
            (_, Some(y)) => (y, "seconds: ".len(), false),
            (None, None) => break,
        };
        out.push_str(&rest[..at + key_len]);
        rest = &rest[at + key_len..];
        let space = rest.len() - rest.trim_start_matches(' ').len();
        out.push_str(&rest[..space]);
        rest = &rest[space..];
        let digits = rest
            .char_indices()
            .take_while(|(i, c)| c.is_ascii_digit() || (*i == 0 && *c == '-'))
            .count();
        let number = &rest[..digits];
        rest = &rest[digits..];
        if number == ZERO_TIME {
            out.push_str(number);
            continue;
        }
        out.push_str("<S>");
        if is_json {
            // `,` + whitespace + `"nanos":` + optional space + digits.
            let after_comma = rest.strip_prefix(',').map(|r| r.trim_start());
            if let Some(r) = after_comma.and_then(|r| r.strip_prefix("\"nanos\":")) {
                let r = r.trim_start_matches(' ');
                rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
            }
        } else if let Some(nl) = rest.find('\n') {
            // YAML always has `nanos: N` on the next line.
            let next = &rest[nl + 1..];
            let trimmed = next.trim_start_matches(' ');
            if let Some(r) = trimmed.strip_prefix("nanos: ") {
                let indent = next.len() - trimmed.len();
                out.push_str(&rest[..nl + 1 + indent]);
                out.push_str("nanos: <N>");
                rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
            }
        }
    }
    out.push_str(rest);
    out
}

/// `mkey:`/`nodekey:`/`discokey:` + 64 hex → `<hex>` (all-zero keys are kept).
fn machine_keys(text: &str) -> String {
    let mut out = text.to_string();
    for kind in ["mkey:", "nodekey:", "discokey:"] {
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(kind) {
            let start = at + kind.len();
            result.push_str(&rest[..start]);
            let hex: String = rest[start..]
                .chars()
                .take_while(char::is_ascii_hexdigit)
                .collect();
            if hex.len() == 64 && hex.chars().any(|c| c != '0') {
                result.push_str("<hex>");
            } else {
                result.push_str(&hex);
            }
            rest = &rest[start + hex.len()..];
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// `hskey-<kind>-<12 chars>-<secret or ***>` → `hskey-<kind>-<prefix>-<secret or ***>`.
fn secrets(text: &str) -> String {
    let key_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("hskey-") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let kind = ["hskey-auth-", "hskey-api-"]
            .into_iter()
            .find(|k| tail.starts_with(k));
        let Some(kind) = kind else {
            out.push_str("hskey-");
            rest = &tail["hskey-".len()..];
            continue;
        };
        let body = &tail[kind.len()..];
        let prefix_len = body.chars().take(12).count();
        let after = &body[prefix_len..];
        out.push_str(kind);
        out.push_str("<prefix>-");
        let after = after.strip_prefix('-').unwrap_or(after);
        if let Some(r) = after.strip_prefix("***") {
            out.push_str("***");
            rest = r;
        } else {
            out.push_str("<secret>");
            rest = after.trim_start_matches(key_char);
        }
    }
    out.push_str(rest);
    out
}

/// The error text of a failing command, keeping its shape.
fn error_text(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("note:"))
        .map(|line| {
            for key in ["\"error\": \"", "\"error\":\"", "error: ", "Error: "] {
                if let Some(at) = line.find(key) {
                    let end = if key.ends_with('"') {
                        line.rfind('"')
                            .filter(|e| *e >= at + key.len())
                            .unwrap_or(line.len())
                    } else {
                        line.len()
                    };
                    return format!("{}{}<E>{}", &line[..at], key, &line[end..]);
                }
            }
            line.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn normalise(text: &str) -> String {
    secrets(&machine_keys(&times(text)))
}

/// The golden with headscale's zero-time node `expiry` read as nil (the deviation above), in
/// each of the three renderings.
fn zero_expiry_as_nil(text: &str) -> String {
    let mut out = text.replace("\"expiry\":{\"seconds\":-62135596800},", "");
    // Pretty JSON: the member's three lines, at any depth.
    let mut lines: Vec<&str> = out.lines().collect();
    let mut i = 0;
    while i + 2 < lines.len() {
        let indent = &lines[i][..lines[i].len() - lines[i].trim_start().len()];
        if lines[i].trim_start() == "\"expiry\": {"
            && lines[i + 1].trim() == "\"seconds\": -62135596800"
            && lines[i + 2] == format!("{indent}}},")
        {
            lines.drain(i..i + 3);
        } else {
            i += 1;
        }
    }
    let trailing = if out.ends_with('\n') { "\n" } else { "" };
    out = lines.join("\n") + trailing;
    // YAML: `expiry:` with the zero time under it becomes `expiry: null`.
    let mut result = Vec::new();
    let lines: Vec<&str> = out.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start() == "expiry:"
            && lines.get(i + 1).map(|l| l.trim()) == Some("seconds: -62135596800")
            && lines.get(i + 2).map(|l| l.trim()) == Some("nanos: 0")
        {
            result.push(format!("{} null", lines[i]));
            i += 3;
        } else {
            result.push(lines[i].to_string());
            i += 1;
        }
    }
    result.join("\n") + trailing
}

#[test]
fn normalisers_keep_shape_and_drop_run_specific_values() {
    assert_eq!(
        times("{\"seconds\":17,\"nanos\":5},{\"seconds\": 18}\n\"expiry\": {\"seconds\": -62135596800}"),
        "{\"seconds\":<S>},{\"seconds\": <S>}\n\"expiry\": {\"seconds\": -62135596800}"
    );
    assert_eq!(
        times("{\n\t\"seconds\": 17,\n\t\"nanos\": 5\n}"),
        "{\n\t\"seconds\": <S>\n}"
    );
    assert_eq!(
        times(
            "  x:\n    seconds: 17\n    nanos: 5\n  y:\n    seconds: -62135596800\n    nanos: 0\n"
        ),
        "  x:\n    seconds: <S>\n    nanos: <N>\n  y:\n    seconds: -62135596800\n    nanos: 0\n"
    );
    let zero = format!("discokey:{}", "0".repeat(64));
    assert_eq!(
        machine_keys(&format!("mkey:{} {zero}", "ab".repeat(32))),
        format!("mkey:<hex> {zero}")
    );
    assert_eq!(
        secrets("\"hskey-auth-Ab_-c1234567-***\" hskey-api-abcdefghijkl-XYZ_-09\""),
        "\"hskey-auth-<prefix>-***\" hskey-api-<prefix>-<secret>\""
    );
    assert_eq!(
        zero_expiry_as_nil(
            "{\n\t\"a\": 1,\n\t\"expiry\": {\n\t\t\"seconds\": -62135596800\n\t},\n\t\"b\": 2\n}\n"
        ),
        "{\n\t\"a\": 1,\n\t\"b\": 2\n}\n"
    );
    assert_eq!(
        zero_expiry_as_nil(
            "- id: 1\n  expiry:\n    seconds: -62135596800\n    nanos: 0\n  x: 2\n\n"
        ),
        "- id: 1\n  expiry: null\n  x: 2\n\n"
    );
    assert_eq!(
        zero_expiry_as_nil("{\"a\":1,\"expiry\":{\"seconds\":-62135596800},\"b\":2}\n"),
        "{\"a\":1,\"b\":2}\n"
    );
    assert_eq!(
        error_text("{\n\t\"error\": \"x \\\"y\\\"\"\n}\nerror: z\n"),
        "{\n\t\"error\": \"<E>\"\n}\nerror: <E>"
    );
}

#[test]
fn cli_output_matches_the_go_cli() {
    let server = TestServer::start();
    let mismatches = replay(&cases(), |args| server.cli(args));
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

/// Runs every case through `run` and compares with its golden; one line per mismatch.
fn replay(cases: &[Case], mut run: impl FnMut(&[&str]) -> std::process::Output) -> Vec<String> {
    let mut mismatches = Vec::new();
    assert!(cases.len() > 50, "cases.txt lost its cases");
    for case in cases {
        let want = recorded(&case.name);
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let out = run(&args);
        let got = Run {
            rc: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        let mut problems = Vec::new();
        if got.rc != want.rc {
            problems.push(format!(
                "exit status {} (headscale: {}); stderr: {}",
                got.rc,
                want.rc,
                got.stderr.trim()
            ));
        }
        let (got_out, want_out) = (normalise(&got.stdout), normalise(&want.stdout));
        if got_out != want_out && got_out != zero_expiry_as_nil(&want_out) {
            problems.push(format!(
                "stdout differs\n--- headscale\n{want_out}\n--- ours\n{got_out}"
            ));
        }
        if want.rc != 0 {
            let (got_err, want_err) = (error_text(&got.stderr), error_text(&want.stderr));
            if got_err != want_err {
                problems.push(format!(
                    "stderr differs\n--- headscale\n{want_err}\n--- ours\n{got_err}"
                ));
            }
        }
        if !problems.is_empty() {
            mismatches.push(format!(
                "MISMATCH {} (`headscale {}`): {}",
                case.name,
                case.args.join(" "),
                problems.join("\n")
            ));
        }
    }
    if !mismatches.is_empty() {
        let total = format!(
            "{} of {} cases differ from the Go CLI:",
            mismatches.len(),
            cases.len()
        );
        mismatches.insert(0, total);
    }
    mismatches
}

/// headscale 0.29.2's own config (its example's server-only keys: `database.type: sqlite`,
/// `derp.urls`, the gRPC listener, …, and an OIDC section) with `unix_socket` pointing at
/// `socket`.
fn headscale_config(dir: &std::path::Path, socket: &std::path::Path) -> PathBuf {
    let path = dir.join("headscale-config.yaml");
    let data = dir.display();
    std::fs::write(
        &path,
        format!(
            "server_url: https://hs.example.com\n\
             listen_addr: 127.0.0.1:0\n\
             metrics_listen_addr: 127.0.0.1:0\n\
             grpc_listen_addr: 127.0.0.1:0\n\
             grpc_allow_insecure: false\n\
             noise:\n  private_key_path: {data}/noise_private.key\n\
             prefixes:\n  v4: 100.64.0.0/10\n  v6: fd7a:115c:a1e0::/48\n  allocation: sequential\n\
             derp:\n  server:\n    enabled: false\n  urls:\n    - https://controlplane.tailscale.com/derpmap/default\n  auto_update_enabled: true\n  update_frequency: 3h\n\
             disable_check_updates: false\n\
             trusted_proxies: []\n\
             node:\n  expiry: 0\n  ephemeral:\n    inactivity_timeout: 30m\n\
             database:\n  type: sqlite\n  debug: false\n  gorm:\n    prepare_stmt: true\n    parameterized_queries: true\n    skip_err_record_not_found: true\n    slow_threshold: 1000\n  sqlite:\n    path: {data}/db.sqlite\n    write_ahead_log: true\n    wal_autocheckpoint: 1000\n\
             acme_url: https://acme-v02.api.letsencrypt.org/directory\n\
             acme_email: \"\"\n\
             tls_letsencrypt_hostname: \"\"\n\
             tls_letsencrypt_cache_dir: {data}/cache\n\
             tls_letsencrypt_challenge_type: HTTP-01\n\
             tls_letsencrypt_listen: \":http\"\n\
             tls_cert_path: \"\"\n\
             tls_key_path: \"\"\n\
             log:\n  level: info\n  format: text\n\
             policy:\n  mode: file\n  path: \"\"\n\
             dns:\n  magic_dns: true\n  base_domain: tailnet.example\n  override_local_dns: true\n  nameservers:\n    global:\n      - 1.1.1.1\n\
             oidc:\n  only_start_if_oidc_is_available: true\n  issuer: https://sso.example.com\n  client_id: headscale\n\
             unix_socket: {socket}\n\
             unix_socket_permission: \"0770\"\n\
             logtail:\n  enabled: false\n\
             taildrop:\n  enabled: true\n",
            socket = socket.display()
        ),
    )
    .unwrap();
    path
}

/// The CLI reads a headscale config as headscale's CLI does: as a client it needs only the
/// socket (or `cli.address`), so server-only keys our server would refuse do not stop it;
/// without a daemon, reading the store directly needs a valid server config and says so.
#[test]
fn a_headscale_config_serves_the_client_as_is() {
    let mut server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = headscale_config(dir.path(), &server.socket());
    let cli = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .arg("-c")
            .arg(&config)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = cli(&["users", "create", "ann", "-o", "json-line"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("{\"id\":1,\"name\":\"ann\","),
        "{out:?}"
    );
    let out = cli(&["users", "list", "-o", "yaml"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("- id: 1\n  name: ann\n"));

    // `configtest` judges it as a server config: valid, its OIDC issuer included.
    let out = cli(&["configtest"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("oidc         https://sso.example.com"));

    // No daemon: reading the store directly needs a store; a client never creates one.
    server.stop();
    let out = cli(&["users", "list"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no daemon answers") && stderr.contains("there is no store at"),
        "{stderr}"
    );
    assert!(!dir.path().join("db.sled").exists());
    let out = cli(&["users", "list", "-o", "json-line"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("{\"error\":\"no daemon answers"),
        "{stderr}"
    );

    // A config whose server-only part is invalid (here a MagicDNS domain that would swallow
    // the server's host, which headscale refuses too) still serves the client…
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("base_domain: tailnet.example", "base_domain: example.com");
    std::fs::write(&config, text).unwrap();
    server.spawn();
    let out = cli(&["users", "list", "-o", "json-line"]);
    assert!(out.status.success(), "{out:?}");
    // …and without a daemon says why the store cannot be read.
    server.stop();
    let out = cli(&["users", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no daemon answers") && stderr.contains("dns.base_domain"),
        "{stderr}"
    );
}

/// `HEADSCALE_CLI_ADDRESS`, `_API_KEY`, `_INSECURE` and `_TIMEOUT` as headscale reads them
/// (viper: `HEADSCALE_CLI_INSECURE=1` is true), over a headscale config.
#[test]
fn the_cli_environment_overrides_a_headscale_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = headscale_config(dir.path(), &dir.path().join("headscale.sock"));
    let env = |name: &str| {
        match name {
            "HEADSCALE_CLI_ADDRESS" => Some("hs.example.com:50443"),
            "HEADSCALE_CLI_API_KEY" => Some("hskey-api-abcdefghijkl-secret"),
            "HEADSCALE_CLI_INSECURE" => Some("1"),
            "HEADSCALE_CLI_TIMEOUT" => Some("7s"),
            _ => None,
        }
        .map(str::to_string)
    };
    let loaded = headscale::config::load_client(&config, &env).unwrap();
    let cli = &loaded.config.cli;
    assert_eq!(cli.address.as_deref(), Some("hs.example.com:50443"));
    assert_eq!(
        cli.api_key.as_deref(),
        Some("hskey-api-abcdefghijkl-secret")
    );
    assert!(cli.insecure);
    assert_eq!(cli.timeout, std::time::Duration::from_secs(7));
    let off = |name: &str| (name == "HEADSCALE_CLI_INSECURE").then(|| "false".to_string());
    assert!(
        !headscale::config::load_client(&config, &off)
            .unwrap()
            .config
            .cli
            .insecure
    );
    // The same file, OIDC section included, also loads as a server config.
    let loaded = headscale::config::load(&config, &env).unwrap();
    assert_eq!(loaded.config.oidc.issuer, "https://sso.example.com");
}

/// The Go server, stopped when dropped.
struct GoServer(std::process::Child);

impl Drop for GoServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Our CLI in remote mode against the real Go server's REST API (`HEADSCALE_CLI_ADDRESS`,
/// `HEADSCALE_CLI_API_KEY`, with the Go server's own config file): the same goldens, so what
/// our CLI prints for headscale's answers is what headscale's CLI prints, whatever our server
/// does. The first case (the API key) is made with the Go CLI.
#[test]
fn our_cli_against_the_go_server_prints_what_the_go_cli_prints() {
    let go = common::go_headscale();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let data = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("derp.yaml"),
        "regions:\n  900:\n    regionid: 900\n    regioncode: test\n    regionname: Test\n    \
         nodes:\n      - name: 900a\n        regionid: 900\n        hostname: 127.0.0.1\n        \
         ipv4: 127.0.0.1\n        stunport: -1\n        derpport: 1\n",
    )
    .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server_url: http://127.0.0.1:{port}\nlisten_addr: 127.0.0.1:{port}\n\
             metrics_listen_addr: 127.0.0.1:0\ngrpc_listen_addr: 127.0.0.1:0\n\
             grpc_allow_insecure: false\ndisable_check_updates: true\n\
             noise:\n  private_key_path: {data}/noise_private.key\n\
             prefixes:\n  v4: 100.64.0.0/10\n  v6: fd7a:115c:a1e0::/48\n  allocation: sequential\n\
             derp:\n  server:\n    enabled: false\n  urls: []\n  paths:\n    - {data}/derp.yaml\n  auto_update_enabled: false\n\
             node:\n  expiry: 0\n\
             database:\n  type: sqlite\n  sqlite:\n    path: {data}/db.sqlite\n    write_ahead_log: true\n\
             log:\n  level: warn\n  format: text\n\
             policy:\n  mode: database\n\
             dns:\n  magic_dns: true\n  base_domain: tailnet.example\n  override_local_dns: false\n  nameservers:\n    global: []\n\
             unix_socket: {data}/headscale.sock\nunix_socket_permission: \"0770\"\n\
             logtail:\n  enabled: false\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let _server = GoServer(
        std::process::Command::new(&go)
            .arg("-c")
            .arg(&config)
            .arg("serve")
            .env("HEADSCALE_DISABLE_CHECK_UPDATES", "true")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let up = || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && common::http(port, "GET", "/health", None).0 == 200
    };
    while !up() {
        assert!(
            std::time::Instant::now() < deadline,
            "the Go server did not start: {}",
            std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let cases = cases();
    assert_eq!(cases[0].name, "apikeys.create.admin");
    let out = std::process::Command::new(&go)
        .arg("-c")
        .arg(&config)
        .args(&cases[0].args)
        .env("HEADSCALE_DISABLE_CHECK_UPDATES", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let address = format!("http://127.0.0.1:{port}");
    let mismatches = replay(&cases[1..], |args| {
        std::process::Command::new(common::BIN)
            .arg("-c")
            .arg(&config)
            .args(args)
            .env("HEADSCALE_CLI_ADDRESS", &address)
            .env("HEADSCALE_CLI_API_KEY", &key)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    });
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}
