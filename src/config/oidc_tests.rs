//! Unit tests of the `oidc:` section: headscale's defaults, the client secret (exclusive keys,
//! the file and its expanded path, never shown), `HEADSCALE_OIDC_*` overrides, the PKCE
//! method, the rules checked when an issuer is set, and Go's `os.ExpandEnv`.

use super::*;
use std::collections::HashMap;
use std::path::Path;

/// A secret that must never show up in any message, summary or serialization.
const SECRET: &str = "s3cr3t-Client-Value-7f2a";

fn origin() -> &'static Path {
    Path::new("/tmp/oidc.yaml")
}

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

/// Derp paths set so the "no DERP relays" warning stays out of the way.
fn with_derp(yaml: &str) -> String {
    format!("derp:\n  paths: [/dev/null]\n{yaml}")
}

fn load_with(yaml: &str, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    load_str(&with_derp(yaml), origin(), &env_of(vars))
}

fn error_of(yaml: &str, vars: &[(&str, &str)]) -> String {
    match load_with(yaml, vars) {
        Ok(loaded) => panic!("expected an error, loaded {:?}", loaded.config.oidc),
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains('\n'), "not one line: {text}");
            text
        }
    }
}

fn oidc_of(yaml: &str, vars: &[(&str, &str)]) -> OidcConfig {
    let loaded = load_with(yaml, vars).unwrap();
    assert_eq!(loaded.warnings, Vec::<String>::new());
    loaded.config.oidc
}

const ON: &str = "oidc:\n  issuer: https://sso.example.com\n  client_id: hs\n";

#[test]
fn defaults_are_headscales() {
    let oidc = oidc_of("", &[]);
    assert!(!oidc.enabled());
    assert_eq!(oidc.scope, vec!["openid", "profile", "email"]);
    assert!(oidc.email_verified_required);
    assert!(oidc.only_start_if_oidc_is_available);
    assert!(!oidc.use_expiry_from_token);
    assert!(!oidc.pkce.enabled);
    assert_eq!(oidc.pkce.method, PkceMethod::S256);
    assert_eq!(oidc.client_secret_path, None);
    assert!(oidc.extra_params.is_empty());
    assert_eq!(oidc.describe(), "off");
    // Only the keys written change; the rest keep headscale's defaults.
    let oidc = oidc_of(ON, &[]);
    assert!(oidc.enabled());
    assert_eq!(oidc.scope, vec!["openid", "profile", "email"]);
    assert!(oidc.email_verified_required && oidc.only_start_if_oidc_is_available);
}

/// Every key of headscale's example section, with its values, maps onto the field it names.
#[test]
fn a_full_section_loads_without_warnings() {
    let yaml = format!(
        "\
oidc:
  only_start_if_oidc_is_available: false
  issuer: \"https://sso.example.com/realms/main\"
  client_id: \"headscale\"
  client_secret: \"{SECRET}\"
  use_expiry_from_token: true
  scope: [\"openid\", \"profile\", \"email\", \"groups\"]
  email_verified_required: false
  extra_params:
    domain_hint: example.com
    max_age: 0
    login_hint: true
  allowed_domains:
    - example.com
  allowed_users:
    - alice@example.com
  allowed_groups:
    - /headscale
  pkce:
    enabled: true
    method: plain
"
    );
    let oidc = oidc_of(&yaml, &[]);
    assert!(oidc.enabled());
    assert!(!oidc.only_start_if_oidc_is_available);
    assert_eq!(oidc.issuer, "https://sso.example.com/realms/main");
    assert_eq!(oidc.client_id, "headscale");
    assert_eq!(oidc.client_secret, SECRET);
    assert!(oidc.use_expiry_from_token);
    assert_eq!(oidc.scope, vec!["openid", "profile", "email", "groups"]);
    assert!(!oidc.email_verified_required);
    // Scalars in extra_params are text, as viper's GetStringMapString makes them.
    assert_eq!(oidc.extra_params["domain_hint"], "example.com");
    assert_eq!(oidc.extra_params["max_age"], "0");
    assert_eq!(oidc.extra_params["login_hint"], "true");
    assert_eq!(oidc.allowed_domains, vec!["example.com"]);
    assert_eq!(oidc.allowed_users, vec!["alice@example.com"]);
    assert_eq!(oidc.allowed_groups, vec!["/headscale"]);
    assert!(oidc.pkce.enabled);
    assert_eq!(oidc.pkce.method, PkceMethod::Plain);

    let summary = oidc.describe();
    for needle in [
        "https://sso.example.com/realms/main",
        "\"headscale\"",
        "secret set",
        "openid profile email groups",
        "PKCE plain",
        "1 domain(s), 1 user(s), 1 group(s)",
        "starts without the provider",
    ] {
        assert!(summary.contains(needle), "{needle:?} missing: {summary}");
    }
    assert!(!summary.contains(SECRET), "{summary}");
    assert!(!summary.contains('\n'));

    let nested = "oidc:\n  extra_params:\n    prompt: [a]\n";
    let error = error_of(nested, &[]);
    assert!(error.contains("oidc.extra_params"), "{error}");
}

/// Our example's commented-out section, uncommented, loads as it is, without a warning.
#[test]
fn the_examples_oidc_section_uncommented_loads() {
    let example = include_str!("../../examples/config.yaml");
    let mut section = String::new();
    let mut inside = false;
    for line in example.lines() {
        if line == "# oidc:" {
            inside = true;
        } else if inside && !line.starts_with('#') {
            break;
        }
        if inside {
            let line = line
                .strip_prefix("# ")
                .unwrap_or(line.trim_start_matches('#'));
            section.push_str(line);
            section.push('\n');
        }
    }
    assert!(section.starts_with("oidc:\n"), "{section}");
    let oidc = oidc_of(&section, &[]);
    assert!(oidc.enabled());
    assert_eq!(oidc.client_secret, "change-me");
    assert_eq!(oidc.client_secret_path, None);
    assert_eq!(oidc.extra_params["domain_hint"], "example.com");
    assert_eq!(oidc.pkce.method, PkceMethod::S256);
}

#[test]
fn secret_and_secret_path_are_exclusive() {
    let both = format!("{ON}  client_secret: {SECRET}\n  client_secret_path: /run/secret\n");
    let error = error_of(&both, &[]);
    assert!(
        error.contains("oidc.client_secret ") && error.contains("oidc.client_secret_path"),
        "{error}"
    );
    assert!(error.contains("mutually exclusive"), "{error}");
    assert!(!error.contains(SECRET), "{error}");
    // Also when one of them comes from the environment, as viper merges them.
    let path_only = format!("{ON}  client_secret_path: /run/secret\n");
    let error = error_of(&path_only, &[("HEADSCALE_OIDC_CLIENT_SECRET", SECRET)]);
    assert!(error.contains("mutually exclusive"), "{error}");
    assert!(!error.contains(SECRET), "{error}");
    // Exclusive even with OIDC off, as in headscale (the check is not tied to the issuer).
    let off = "oidc:\n  client_secret: x\n  client_secret_path: /run/secret\n";
    assert!(error_of(off, &[]).contains("mutually exclusive"));
}

#[test]
fn the_secret_file_is_read_trimmed_with_its_path_expanded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oidc_secret"), format!("\n  {SECRET} \t\n")).unwrap();
    let dir_text = dir.path().display().to_string();
    for path in [
        format!("{dir_text}/oidc_secret"),
        "${CREDENTIALS_DIRECTORY}/oidc_secret".to_string(),
        "$CREDENTIALS_DIRECTORY/oidc_secret".to_string(),
        // An unset variable is empty, as with Go's os.ExpandEnv.
        format!("{dir_text}${{UNSET}}/oidc_secret"),
    ] {
        let yaml = format!("{ON}  client_secret_path: \"{path}\"\n");
        let oidc = oidc_of(&yaml, &[("CREDENTIALS_DIRECTORY", &dir_text)]);
        assert_eq!(oidc.client_secret, SECRET, "{path}");
        // The path stays as written (shown by configtest); the secret is resolved.
        assert_eq!(oidc.client_secret_path, Some(PathBuf::from(&path)));
        let summary = oidc.describe();
        assert!(
            summary.contains(&format!("secret from {path}")),
            "{summary}"
        );
        assert!(!summary.contains(SECRET), "{summary}");
    }
    // The path from the environment works the same way.
    let oidc = oidc_of(
        ON,
        &[
            ("CREDENTIALS_DIRECTORY", &dir_text),
            (
                "HEADSCALE_OIDC_CLIENT_SECRET_PATH",
                "${CREDENTIALS_DIRECTORY}/oidc_secret",
            ),
        ],
    );
    assert_eq!(oidc.client_secret, SECRET);
    // A file of white space is an empty secret (a public client), not an error.
    std::fs::write(dir.path().join("blank"), " \n").unwrap();
    let yaml = format!("{ON}  client_secret_path: {dir_text}/blank\n");
    assert_eq!(oidc_of(&yaml, &[]).client_secret, "");
}

#[test]
fn an_unreadable_secret_file_is_one_line_naming_the_expanded_path() {
    let yaml = format!("{ON}  client_secret_path: \"${{CREDS}}/missing_secret\"\n");
    let error = error_of(&yaml, &[("CREDS", "/nonexistent/creds")]);
    assert!(
        error.starts_with("config /tmp/oidc.yaml: oidc.client_secret_path "),
        "{error}"
    );
    assert!(
        error.contains("\"/nonexistent/creds/missing_secret\": cannot read"),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    // A directory, a file that is too large, a file that is not text: each refused, and
    // none of their content is echoed.
    let large = dir.path().join("large");
    let mut content = SECRET.repeat(1 + MAX_CLIENT_SECRET_FILE_BYTES as usize / SECRET.len());
    content.push('x');
    std::fs::write(&large, &content).unwrap();
    let binary = dir.path().join("binary");
    std::fs::write(&binary, [SECRET.as_bytes(), &[0xff, 0xfe]].concat()).unwrap();
    for (path, problem) in [
        (dir.path().to_path_buf(), "cannot read"),
        (large, "larger than 65536 bytes"),
        (binary, "not UTF-8"),
    ] {
        let yaml = format!("{ON}  client_secret_path: {}\n", path.display());
        let error = error_of(&yaml, &[]);
        assert!(error.contains("oidc.client_secret_path"), "{error}");
        assert!(error.contains(problem), "{error}");
        assert!(!error.contains(SECRET), "{error}");
    }
}

/// A client of the server never needs the secret: its loader neither reads the file nor
/// refuses the exclusive pair (a server does both).
#[test]
fn a_client_load_never_touches_the_secret_file() {
    let yaml =
        format!("{ON}  client_secret: {SECRET}\n  client_secret_path: /nonexistent/secret\n");
    let loaded = load_str_unvalidated(&yaml, origin(), &env_of(&[])).unwrap();
    assert_eq!(loaded.config.oidc.client_secret, SECRET);
}

#[test]
fn the_secret_never_shows_in_debug_serialization_or_summary() {
    let yaml = format!("{ON}  client_secret: {SECRET}\n");
    let loaded = load_with(&yaml, &[]).unwrap();
    let config = &loaded.config;
    assert_eq!(config.oidc.client_secret, SECRET);
    let debug = format!("{config:?} {:#?}", config.oidc);
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(!debug.contains(SECRET), "{debug}");
    let yaml_out = serde_yaml_ng::to_string(config).unwrap();
    let json_out = serde_json::to_string(config).unwrap();
    assert!(!yaml_out.contains(SECRET) && !json_out.contains(SECRET));
    assert!(yaml_out.contains("client_secret: ''"), "{yaml_out}");
    let explain = config.explain();
    assert!(!explain.contains(SECRET), "{explain}");
    assert!(
        explain.contains("oidc         https://sso.example.com, client \"hs\", secret set"),
        "{explain}"
    );
    assert!(!config.netmap_relevant_json().contains(SECRET));
    // An empty secret says so rather than "<redacted>".
    let oidc = oidc_of(ON, &[]);
    assert!(format!("{oidc:?}").contains("client_secret: \"\""));
    assert!(oidc.describe().contains("no secret"));
}

#[test]
fn environment_overrides_every_oidc_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s"), SECRET).unwrap();
    let secret_path = format!("{}/s", dir.path().display());
    let vars = [
        ("HEADSCALE_OIDC_ISSUER", "https://idp.example/"),
        ("HEADSCALE_OIDC_CLIENT_ID", "from-env"),
        ("HEADSCALE_OIDC_CLIENT_SECRET_PATH", secret_path.as_str()),
        // Space-separated, as viper's GetStringSlice splits a variable.
        ("HEADSCALE_OIDC_SCOPE", "openid  profile groups"),
        ("HEADSCALE_OIDC_ALLOWED_DOMAINS", "a.example b.example"),
        ("HEADSCALE_OIDC_ALLOWED_USERS", "[alice@a.example]"),
        ("HEADSCALE_OIDC_ALLOWED_GROUPS", "/admins"),
        ("HEADSCALE_OIDC_EXTRA_PARAMS", r#"{"prompt": "login"}"#),
        ("HEADSCALE_OIDC_EMAIL_VERIFIED_REQUIRED", "0"),
        ("HEADSCALE_OIDC_ONLY_START_IF_OIDC_IS_AVAILABLE", "false"),
        ("HEADSCALE_OIDC_USE_EXPIRY_FROM_TOKEN", "t"),
        ("HEADSCALE_OIDC_PKCE_ENABLED", "1"),
        ("HEADSCALE_OIDC_PKCE_METHOD", "plain"),
    ];
    // The environment wins over the file.
    let oidc = oidc_of(
        "oidc:\n  issuer: https://file.example\n  client_id: file\n  scope: [openid]\n",
        &vars,
    );
    assert_eq!(oidc.issuer, "https://idp.example/");
    assert_eq!(oidc.client_id, "from-env");
    assert_eq!(oidc.client_secret, SECRET);
    assert_eq!(oidc.scope, vec!["openid", "profile", "groups"]);
    assert_eq!(oidc.allowed_domains, vec!["a.example", "b.example"]);
    assert_eq!(oidc.allowed_users, vec!["alice@a.example"]);
    assert_eq!(oidc.allowed_groups, vec!["/admins"]);
    assert_eq!(oidc.extra_params["prompt"], "login");
    assert!(!oidc.email_verified_required);
    assert!(!oidc.only_start_if_oidc_is_available);
    assert!(oidc.use_expiry_from_token);
    assert!(oidc.pkce.enabled);
    assert_eq!(oidc.pkce.method, PkceMethod::Plain);

    // The secret itself, and an issuer from the environment alone.
    let oidc = oidc_of(
        "",
        &[
            ("HEADSCALE_OIDC_ISSUER", " https://idp.example "),
            ("HEADSCALE_OIDC_CLIENT_ID", "hs"),
            ("HEADSCALE_OIDC_CLIENT_SECRET", SECRET),
        ],
    );
    assert_eq!(oidc.issuer, "https://idp.example", "trimmed");
    assert_eq!(oidc.client_secret, SECRET);
    // An empty typed variable is unset (viper); an empty list keeps the default.
    let oidc = oidc_of(ON, &[("HEADSCALE_OIDC_SCOPE", " ")]);
    assert_eq!(oidc.scope, vec!["openid", "profile", "email"]);
    // Every key of the section has its variable.
    let vars: Vec<String> = known_keys()
        .into_iter()
        .filter(|(key, _)| key.starts_with("oidc."))
        .map(|(_, var)| var)
        .collect();
    for var in [
        "HEADSCALE_OIDC_ISSUER",
        "HEADSCALE_OIDC_CLIENT_SECRET",
        "HEADSCALE_OIDC_CLIENT_SECRET_PATH",
        "HEADSCALE_OIDC_EXTRA_PARAMS",
        "HEADSCALE_OIDC_PKCE_METHOD",
    ] {
        assert!(vars.iter().any(|v| v == var), "{var} missing: {vars:?}");
    }
}

/// Lists from the environment are split on white space for every list key, not just OIDC's.
#[test]
fn environment_lists_split_on_white_space() {
    let loaded = load_str(
        "",
        origin(),
        &env_of(&[(
            "HEADSCALE_DERP_URLS",
            "https://a.example/map.json https://b.example/map.json",
        )]),
    )
    .unwrap();
    assert_eq!(
        loaded.config.derp.urls,
        vec!["https://a.example/map.json", "https://b.example/map.json"]
    );
}

#[test]
fn the_pkce_method_is_s256_or_plain() {
    let expected = "must be either 'plain' or 'S256'";
    for method in ["s256", "SHA256", "PLAIN", "none", ""] {
        let yaml = format!("oidc:\n  pkce:\n    enabled: true\n    method: \"{method}\"\n");
        let error = error_of(&yaml, &[]);
        assert!(error.contains("oidc.pkce.method"), "{error}");
        assert!(error.contains(expected), "{error}");
    }
    let error = error_of("", &[("HEADSCALE_OIDC_PKCE_METHOD", "sha256")]);
    assert!(
        error.contains("oidc.pkce.method (from $HEADSCALE_OIDC_PKCE_METHOD)"),
        "{error}"
    );
    assert!(error.contains(expected), "{error}");
    for (method, parsed) in [("S256", PkceMethod::S256), ("plain", PkceMethod::Plain)] {
        let yaml = format!("oidc:\n  pkce:\n    method: {method}\n");
        assert_eq!(oidc_of(&yaml, &[]).pkce.method, parsed);
        assert_eq!(parsed.as_str(), method);
    }
}

#[test]
fn an_issuer_needs_a_client_id_and_an_http_url() {
    let error = error_of("oidc:\n  issuer: https://sso.example.com\n", &[]);
    assert_eq!(
        error,
        "config /tmp/oidc.yaml: oidc.client_id must be set when oidc.issuer is set"
    );
    assert!(error_of(
        "oidc:\n  issuer: https://sso.example.com\n  client_id: \" \"\n",
        &[]
    )
    .contains("oidc.client_id"));
    for issuer in [
        "sso.example.com",
        "ftp://sso.example.com",
        "https://",
        "https://user:pw@sso.example.com",
        "https://sso example.com",
        "https://sso.example.com/realm one",
        "https://sso.example.com:99999",
    ] {
        let yaml = format!("oidc:\n  issuer: \"{issuer}\"\n  client_id: hs\n");
        let error = error_of(&yaml, &[]);
        assert!(error.contains("oidc.issuer"), "{issuer}: {error}");
    }
    for issuer in [
        "https://sso.example.com",
        "https://sso.example.com/realms/main/",
        "https://[2001:db8::1]:8443/oidc",
        "http://127.0.0.1:5556/dex",
        "http://localhost:9998",
    ] {
        let yaml = format!("oidc:\n  issuer: \"{issuer}\"\n  client_id: hs\n");
        assert_eq!(oidc_of(&yaml, &[]).issuer, issuer);
    }
    // Without an issuer OIDC is off and nothing else in the section is checked.
    let off = oidc_of(
        "oidc:\n  issuer: \"\"\n  client_id: \"\"\n  scope: []\n",
        &[],
    );
    assert!(!off.enabled());
}

#[test]
fn risky_but_working_values_warn() {
    let yaml = "oidc:\n  issuer: http://sso.example.com\n  client_id: hs\n  scope: [profile]\n";
    let warnings = load_with(yaml, &[]).unwrap().warnings;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("oidc.scope") && warnings[0].contains("openid"));
    assert!(warnings[1].contains("oidc.issuer") && warnings[1].contains("plain http"));
}

#[test]
fn headscales_removed_oidc_keys_stay_fatal() {
    for (key, hint) in [
        ("strip_email_domain: true", "oidc.strip_email_domain"),
        ("map_legacy_users: false", "oidc.map_legacy_users"),
        ("expiry: 180d", "node.expiry"),
    ] {
        let yaml = format!("{ON}  {key}\n");
        let error = error_of(&yaml, &[]);
        assert!(error.contains("was removed"), "{error}");
        assert!(error.contains(hint), "{error}");
        assert!(!error.contains("not supported"), "{error}");
    }
}

#[test]
fn unknown_oidc_keys_warn_with_their_path() {
    let loaded = load_with(
        &format!("{ON}  client_secrets: x\n  pkce:\n    mode: S256\n"),
        &[],
    )
    .unwrap();
    assert_eq!(
        loaded.warnings,
        vec![
            "unknown config key \"oidc.client_secrets\" (ignored)".to_string(),
            "unknown config key \"oidc.pkce.mode\" (ignored)".to_string(),
        ]
    );
}

#[test]
fn expand_env_is_gos_os_expand_env() {
    let env = env_of(&[
        ("HOME", "/root"),
        ("A_1", "x"),
        ("1", "one"),
        ("*", "star"),
        ("név", "utf"),
    ]);
    for (input, expected) in [
        ("", ""),
        ("plain/path", "plain/path"),
        ("$HOME/s", "/root/s"),
        ("${HOME}/s", "/root/s"),
        ("$A_1-$A_1", "x-x"),
        ("${A_1}${A_1}", "xx"),
        ("$UNSET/s", "/s"),
        ("${UNSET}", ""),
        // A `$` that starts no name stays; one at the very end too.
        ("cost: $ 5", "cost: $ 5"),
        ("a$", "a$"),
        ("$/x", "$/x"),
        // Special one-character names.
        ("$1x", "onex"),
        ("${1}x", "onex"),
        ("$*", "star"),
        ("$$", ""),
        // Bad syntax is eaten: `${}` whole, an unclosed `${` itself.
        ("a${}b", "ab"),
        ("a${b", "ab"),
        // Any name between braces, even one Go would not scan bare.
        ("${név}", "utf"),
        ("$név", "év"),
        ("ü$HOME/ü", "ü/root/ü"),
    ] {
        assert_eq!(expand_env(input, &env), expected, "{input:?}");
    }
}

/// Shapes the section may take that headscale (viper) accepts, and ones it cannot be.
#[test]
fn edge_cases_of_the_sections_shape() {
    // An empty section, or empty sub-keys, are headscale's defaults.
    for yaml in [
        "oidc:\n",
        "oidc:\n  pkce:\n  extra_params:\n  scope:\n",
        "oidc: {}\n",
    ] {
        assert_eq!(oidc_of(yaml, &[]), OidcConfig::default(), "{yaml}");
    }
    // A section that is not a mapping.
    for yaml in [
        "oidc: true\n",
        "oidc: https://sso.example.com\n",
        "oidc: [a]\n",
    ] {
        let error = error_of(yaml, &[]);
        assert!(
            error.contains("oidc") && error.contains("expected a section of keys"),
            "{error}"
        );
    }
    // Lists written as one string are split on white space (viper's GetStringSlice);
    // scalars in lists and as the secret are text.
    let yaml = "oidc:\n  issuer: https://sso.example.com\n  client_id: 1234\n  \
                client_secret: 987654\n  scope: \"openid  email\"\n  allowed_domains: a.example\n  \
                allowed_users: []\n  allowed_groups: [42, admins]\n";
    let oidc = oidc_of(yaml, &[]);
    assert_eq!(oidc.client_id, "1234");
    assert_eq!(oidc.client_secret, "987654");
    assert_eq!(oidc.scope, vec!["openid", "email"]);
    assert_eq!(oidc.allowed_domains, vec!["a.example"]);
    assert!(oidc.allowed_users.is_empty());
    assert_eq!(oidc.allowed_groups, vec!["42", "admins"]);
    for (yaml, key) in [
        ("oidc:\n  allowed_groups: [[a]]\n", "oidc.allowed_groups"),
        ("oidc:\n  scope: {openid: true}\n", "oidc.scope"),
        ("oidc:\n  pkce: S256\n", "oidc.pkce"),
    ] {
        let error = error_of(yaml, &[]);
        assert!(error.contains(key), "{yaml}: {error}");
    }
}

/// `""` is unset for both secret keys, as headscale compares them with "": either may be
/// left empty beside the other.
#[test]
fn an_empty_secret_key_does_not_count_as_set() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{SECRET}\r\n")).unwrap();
    let yaml = format!(
        "{ON}  client_secret: \"\"\n  client_secret_path: \"{}\"\n",
        file.display()
    );
    assert_eq!(oidc_of(&yaml, &[]).client_secret, SECRET);
    let yaml = format!("{ON}  client_secret: {SECRET}\n  client_secret_path: \"\"\n");
    let oidc = oidc_of(&yaml, &[]);
    assert_eq!(oidc.client_secret, SECRET);
    assert_eq!(oidc.client_secret_path, None);
    // White space inside a secret is kept; only the ends are trimmed.
    std::fs::write(&file, " a b\tc \n").unwrap();
    let yaml = format!("{ON}  client_secret_path: {}\n", file.display());
    assert_eq!(oidc_of(&yaml, &[]).client_secret, "a b\tc");
    // A path whose variables are all unset and leave nothing is an unreadable "".
    let error = error_of(&format!("{ON}  client_secret_path: $NOPE\n"), &[]);
    assert!(
        error.contains("oidc.client_secret_path \"\": cannot read"),
        "{error}"
    );
}

#[test]
fn an_issuer_with_a_query_or_fragment_is_refused() {
    for issuer in [
        "https://sso.example.com/?tenant=a",
        "https://sso.example.com#x",
    ] {
        let yaml = format!("oidc:\n  issuer: \"{issuer}\"\n  client_id: hs\n");
        let error = error_of(&yaml, &[]);
        assert!(
            error.contains("oidc.issuer") && error.contains("query or a fragment"),
            "{error}"
        );
    }
}

/// Loading twice gives the same result, and validating a loaded config again passes:
/// the resolved secret beside its path is not mistaken for the exclusive pair.
#[test]
fn a_loaded_config_validates_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, SECRET).unwrap();
    let yaml = format!("{ON}  client_secret_path: {}\n", file.display());
    let loaded = load_with(&yaml, &[]).unwrap();
    assert_eq!(loaded.config.oidc.client_secret, SECRET);
    assert_eq!(loaded.config.validate().unwrap(), Vec::<String>::new());
    assert_eq!(load_with(&yaml, &[]).unwrap().config, loaded.config);
}
