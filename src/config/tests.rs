//! Unit tests of the config module: defaults and the example config, loading, removed,
//! unknown and unsupported keys, environment overrides, durations, validation rules and the
//! netmap-relevant subset.

use super::*;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

const EXAMPLE: &str = include_str!("../../examples/config.yaml");

fn no_env(_: &str) -> Option<String> {
    None
}

fn origin() -> &'static Path {
    Path::new("/tmp/test.yaml")
}

/// Load YAML text with a fixed map standing in for the process environment.
fn load_with(yaml: &str, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load_str(yaml, origin(), &move |name| map.get(name).cloned())
}

fn no_derp_warning() -> String {
    "no DERP relays configured (derp.server.enabled is false and derp.urls and \
     derp.paths are empty): nodes can only connect directly"
        .to_string()
}

fn error_text(yaml: &str) -> String {
    match load_with(yaml, &[]) {
        Ok(loaded) => panic!("expected an error, loaded {loaded:?}"),
        Err(e) => e.to_string(),
    }
}

/// Defaults survive YAML serialization and an empty file yields exactly the defaults.
#[test]
fn defaults_round_trip() {
    let default = Config::default();
    let yaml = serde_yaml_ng::to_string(&default).unwrap();
    let back: Config = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(back, default);

    let json = serde_json::to_string(&default).unwrap();
    let back: Config = serde_json::from_str(&json).unwrap();
    assert_eq!(back, default);

    let loaded = load_with("", &[]).unwrap();
    let expected = Config {
        source_path: Some(origin().to_path_buf()),
        ..Config::default()
    };
    assert_eq!(loaded.config, expected);
    // Defaults have no DERP relay at all (urls are empty on purpose): that is worth a warning.
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("no DERP relays"));

    // Loading the serialized defaults gives no unknown-key warnings.
    let loaded = load_with(&yaml, &[]).unwrap();
    assert_eq!(loaded.config, expected);
    assert_eq!(loaded.warnings.len(), 1);
}

#[test]
fn default_values_match_headscale() {
    let c = Config::default();
    assert_eq!(c.unix_socket_mode().unwrap(), 0o770);
    assert_eq!(c.prefixes.v4.unwrap().to_string(), "100.64.0.0/10");
    assert_eq!(c.prefixes.v6.unwrap().to_string(), "fd7a:115c:a1e0::/48");
    assert_eq!(c.derp.update_frequency, Duration::from_secs(3 * 3600));
    assert_eq!(
        c.node.ephemeral.inactivity_timeout,
        Duration::from_secs(120)
    );
    assert_eq!(c.database.sled.cache_capacity_bytes, 64 << 20);
    assert_eq!(c.cli.timeout, Duration::from_secs(5));
    assert_eq!(c.log.level_name(), Some("info"));
}

/// The shipped example loads cleanly once its policy file exists.
#[test]
fn example_loads_without_warnings() {
    let policy = tempfile::NamedTempFile::new().unwrap();
    let policy_path = policy.path().to_str().unwrap().to_string();
    let loaded = load_with(EXAMPLE, &[("HEADSCALE_POLICY_PATH", &policy_path)]).unwrap();
    assert_eq!(loaded.warnings, Vec::<String>::new());
    let c = &loaded.config;
    assert_eq!(c.server_url, "http://127.0.0.1:8080");
    assert_eq!(c.database.sled.path, PathBuf::from("./data/db.sled"));
    assert_eq!(c.unix_socket, PathBuf::from("./data/headscale.sock"));
    assert_eq!(
        c.noise.private_key_path,
        PathBuf::from("./data/noise_private.key")
    );
    assert!(c.derp.server.enabled);
    assert_eq!(c.derp.server.stun_listen_addr, "127.0.0.1:3478");
    assert!(c.derp.urls.is_empty());
    assert_eq!(c.dns.base_domain, "tailnet.example");
    assert!(c.dns.nameservers.global.is_empty());
    assert!(!c.dns.override_local_dns);
    assert_eq!(c.node.expiry, Duration::ZERO);
    assert_eq!(
        c.node.ephemeral.inactivity_timeout,
        Duration::from_secs(1800)
    );
    assert_eq!(c.policy.path, Some(PathBuf::from(&policy_path)));

    let summary = c.explain();
    for needle in [
        "http://127.0.0.1:8080",
        "./data/db.sled",
        "embedded region 999",
        "100.64.0.0/10",
    ] {
        assert!(
            summary.contains(needle),
            "{needle} missing from:\n{summary}"
        );
    }
}

#[test]
fn load_reads_files_and_names_missing_ones() {
    let missing = Path::new("/nonexistent/headscale/config.yaml");
    let err = load(missing, &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::NotFound { .. }));
    assert_eq!(
        err.to_string(),
        "config file /nonexistent/headscale/config.yaml not found \
         (pass --config or set HEADSCALE_CONFIG)"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "server_url: https://hs.example.org\n").unwrap();
    let loaded = load(&path, &no_env).unwrap();
    assert_eq!(loaded.config.server_url, "https://hs.example.org");
    assert_eq!(loaded.config.source_path.as_deref(), Some(path.as_path()));
}

#[test]
fn resolve_path_precedence() {
    let env = |name: &str| (name == "HEADSCALE_CONFIG").then(|| "/from/env.yaml".to_string());
    let flag = Path::new("/from/flag.yaml");
    assert_eq!(
        resolve_path_with(Some(flag), &env),
        PathBuf::from("/from/flag.yaml")
    );
    assert_eq!(
        resolve_path_with(None, &env),
        PathBuf::from("/from/env.yaml")
    );
    assert_eq!(
        resolve_path_with(None, &no_env),
        PathBuf::from(DEFAULT_CONFIG_PATH)
    );
    let empty = |_: &str| Some(String::new());
    assert_eq!(
        resolve_path_with(None, &empty),
        PathBuf::from(DEFAULT_CONFIG_PATH)
    );
}

#[test]
fn removed_keys_are_fatal_with_replacement() {
    let cases = [
        (
            "acl_policy_path: /x.hujson\n",
            "acl_policy_path",
            "policy.path",
        ),
        (
            "dns_config:\n  magic_dns: true\n",
            "dns_config",
            "dns section",
        ),
        (
            "dns:\n  use_username_in_magic_dns: true\n",
            "dns.use_username_in_magic_dns",
            "base_domain",
        ),
        (
            "oidc:\n  strip_email_domain: true\n",
            "oidc.strip_email_domain",
            "email",
        ),
        (
            "oidc:\n  map_legacy_users: true\n",
            "oidc.map_legacy_users",
            "legacy",
        ),
        (
            "randomize_client_port: true\n",
            "randomize_client_port",
            "randomizeClientPort",
        ),
        ("oidc:\n  expiry: 180d\n", "oidc.expiry", "node.expiry"),
    ];
    for (yaml, key, hint) in cases {
        let err = load_with(yaml, &[]).unwrap_err();
        assert!(
            matches!(err, ConfigError::RemovedKey { .. }),
            "{yaml}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "config /tmp/test.yaml: key \"{key}\" was removed; "
            )),
            "{text}"
        );
        assert!(text.contains(hint), "{text}");
        assert!(!text.contains('\n'));
    }
}

#[test]
fn unknown_keys_warn_with_full_path() {
    let yaml = "dns:\n  basedomain: x.example\n  nameservers:\n    globl: []\nfoo: 1\n";
    let loaded = load_with(yaml, &[]).unwrap();
    for expected in [
        "unknown config key \"dns.basedomain\" (ignored)",
        "unknown config key \"dns.nameservers.globl\" (ignored)",
        "unknown config key \"foo\" (ignored)",
    ] {
        assert!(
            loaded.warnings.iter().any(|w| w == expected),
            "{expected} not in {:?}",
            loaded.warnings
        );
    }
    // Free-form maps are data, not keys.
    let yaml = "dns:\n  nameservers:\n    split:\n      corp.example: [10.0.0.53]\n";
    let loaded = load_with(yaml, &[]).unwrap();
    assert!(
        loaded.warnings.iter().all(|w| !w.contains("unknown")),
        "{:?}",
        loaded.warnings
    );
    assert_eq!(
        loaded.config.dns.nameservers.split["corp.example"],
        vec!["10.0.0.53"]
    );
}

#[test]
fn unsupported_features_warn_as_unsupported() {
    let yaml = "\
database:
  type: sled
  sqlite:
    path: /var/lib/headscale/db.sqlite
  debug: true
tuning:
  register_cache_max_entries: 4096
";
    let loaded = load_with(yaml, &[]).unwrap();
    for key in ["database.debug", "tuning.register_cache_max_entries"] {
        let warning = loaded
            .warnings
            .iter()
            .find(|w| w.contains(&format!("\"{key}\"")))
            .unwrap_or_else(|| panic!("no warning for {key}: {:?}", loaded.warnings));
        assert!(warning.contains("does not support"), "{warning}");
        assert!(!warning.contains("unknown"), "{warning}");
    }
}

/// headscale's example leaves features it does not use empty, false or at their defaults:
/// none of that is worth a warning, and `database.gorm` tunes only headscale's ORM.
#[test]
fn placeholders_and_defaults_of_missing_features_do_not_warn() {
    let yaml = "\
acme_email: \"\"
tls_letsencrypt_hostname: \"\"
oidc:
  only_start_if_oidc_is_available: true
  issuer: \"\"
  allowed_domains: [example.com]
logtail:
  enabled: true
auto_update:
  enabled: true
database:
  type: sled
  debug: false
  gorm:
    prepare_stmt: true
    slow_threshold: 1000
node:
  routes:
    ha:
      probe_interval: 10s
      probe_timeout: 5s
tuning:
  register_cache_max_entries: 1024
  register_cache_expiration: 15m
  node_store_batch_size: 100
  node_store_batch_timeout: 500ms
  notifier_send_timeout: 800ms
derp:
  paths: [/dev/null]
";
    let loaded = load_with(yaml, &[]).unwrap();
    assert_eq!(loaded.warnings, Vec::<String>::new());
    assert!(loaded.config.logtail.enabled);
    assert!(loaded.config.auto_update.enabled);
    assert!(!loaded.config.oidc.enabled());
    assert_eq!(loaded.config.oidc.allowed_domains, vec!["example.com"]);

    // Probing asked for with other timers (or off): warned about once, or silent.
    let tuned = "node:\n  routes:\n    ha:\n      probe_interval: 3s\n      probe_timeout: 1s\nderp:\n  paths: [/dev/null]\n";
    let warnings = load_with(tuned, &[]).unwrap().warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("node.routes.ha") && warnings[0].contains("3s"));
    let off = "node:\n  routes:\n    ha:\n      probe_interval: 0s\nderp:\n  paths: [/dev/null]\n";
    assert_eq!(load_with(off, &[]).unwrap().warnings, Vec::<String>::new());
}

#[test]
fn derp_urls_must_be_urls_with_a_host() {
    assert!(error_text("derp:\n  urls: [\"ftp://x/map\"]\n").contains("must start with http"));
    let err = error_text("derp:\n  urls: [\"https:// bad host/map\"]\n");
    assert!(
        err.contains("derp.urls") && err.contains("not a valid URL"),
        "{err}"
    );
    assert!(error_text("derp:\n  urls: [\"https:///map\"]\n").contains("not a valid URL"));
    load_with(
        "derp:\n  urls: [\"https://localhost:8443/derpmap/default\"]\n",
        &[],
    )
    .unwrap();
}

#[test]
fn env_overrides_nested_bool_duration_and_list() {
    let vars = [
        ("HEADSCALE_DNS_BASE_DOMAIN", "corp.example"),
        ("HEADSCALE_DNS_MAGIC_DNS", "false"),
        ("HEADSCALE_NODE_EXPIRY", "90d"),
        ("HEADSCALE_NODE_EPHEMERAL_INACTIVITY_TIMEOUT", "30m"),
        ("HEADSCALE_DERP_URLS", "[https://derp.example/map.json]"),
        ("HEADSCALE_DATABASE_SLED_PATH", "/srv/db.sled"),
        ("HEADSCALE_DERP_SERVER_REGION_ID", "901"),
        ("HEADSCALE_UNIX_SOCKET_PERMISSION", "0700"),
        ("HEADSCALE_SERVER_URL", "https://hs.example.org"),
    ];
    let yaml = "dns:\n  base_domain: file.example\n  magic_dns: true\n";
    let c = load_with(yaml, &vars).unwrap().config;
    assert_eq!(c.dns.base_domain, "corp.example");
    assert!(!c.dns.magic_dns);
    assert_eq!(c.node.expiry, Duration::from_secs(90 * 86_400));
    assert_eq!(
        c.node.ephemeral.inactivity_timeout,
        Duration::from_secs(1800)
    );
    assert_eq!(c.derp.urls, vec!["https://derp.example/map.json"]);
    assert_eq!(c.database.sled.path, PathBuf::from("/srv/db.sled"));
    assert_eq!(c.derp.server.region_id, 901);
    assert_eq!(c.unix_socket_mode().unwrap(), 0o700);
    assert_eq!(c.server_url, "https://hs.example.org");

    // Empty text disables metrics; an empty optional means unset.
    let vars = [
        ("HEADSCALE_METRICS_LISTEN_ADDR", ""),
        ("HEADSCALE_POLICY_PATH", ""),
    ];
    let c = load_with("", &vars).unwrap().config;
    assert_eq!(c.metrics_listen_addr, "");
    assert_eq!(c.policy.path, None);
}

#[test]
fn env_var_names_are_unique_and_cover_leaves() {
    let keys = known_keys();
    let mut vars: Vec<&str> = keys.iter().map(|(_, v)| v.as_str()).collect();
    vars.sort_unstable();
    let before = vars.len();
    vars.dedup();
    assert_eq!(before, vars.len());
    for var in [
        "HEADSCALE_SERVER_URL",
        "HEADSCALE_DNS_BASE_DOMAIN",
        "HEADSCALE_DATABASE_SLED_PATH",
        "HEADSCALE_DNS_NAMESERVERS_SPLIT",
        "HEADSCALE_DERP_SERVER_IPV4",
        "HEADSCALE_CLI_API_KEY",
    ] {
        assert!(vars.contains(&var), "{var}");
    }
    assert!(!vars.contains(&"HEADSCALE_SOURCE_PATH"));
}

#[test]
fn durations_parse_and_format() {
    for (text, secs) in [
        ("30m", 1800),
        ("1h", 3600),
        ("24h", 86_400),
        ("90d", 7_776_000),
        ("120s", 120),
        ("0", 0),
        ("1h30m", 5400),
    ] {
        assert_eq!(
            duration::parse(text).unwrap(),
            Duration::from_secs(secs),
            "{text}"
        );
    }
    for (secs, text) in [
        (0, "0s"),
        (7_776_000, "90d"),
        (5400, "1h 30m"),
        (120, "2m"),
        (10_800, "3h"),
    ] {
        let d = Duration::from_secs(secs);
        assert_eq!(duration::format(d), text);
        assert_eq!(duration::parse(&duration::format(d)).unwrap(), d);
    }
    let d = Duration::from_millis(1500);
    assert_eq!(duration::parse(&duration::format(d)).unwrap(), d);
    // Integer 0 in YAML.
    let c = load_with("node:\n  expiry: 0\n", &[]).unwrap().config;
    assert_eq!(c.node.expiry, Duration::ZERO);
}

#[test]
fn bad_duration_names_key_and_expectation() {
    let err = error_text("node:\n  expiry: 5x\n");
    assert_eq!(
        err,
        "config /tmp/test.yaml: node.expiry: invalid duration \"5x\", expected a duration \
         with a unit, like 120s, 30m, 24h or 90d (or 0)"
    );
    let err = error_text("cli:\n  timeout: 30\n");
    assert!(
        err.contains("cli.timeout") && err.contains("needs a unit"),
        "{err}"
    );
    let err = load_with("", &[("HEADSCALE_DERP_UPDATE_FREQUENCY", "often")]).unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("derp.update_frequency (from $HEADSCALE_DERP_UPDATE_FREQUENCY)"),
        "{err}"
    );
}

#[test]
fn type_errors_name_key_and_expectation() {
    let err = error_text("dns:\n  magic_dns: [1]\n");
    assert!(
        err.starts_with("config /tmp/test.yaml: dns.magic_dns: "),
        "{err}"
    );
    assert!(err.contains("expected a boolean"), "{err}");
    let err = error_text("policy:\n  mode: db\n");
    assert!(
        err.contains("policy.mode") && err.contains("expected `file` or `database`"),
        "{err}"
    );
    let err = error_text("prefixes:\n  v4: 100.64.0.0/40\n");
    assert!(
        err.contains("prefixes.v4") && err.contains("100.64.0.0/40"),
        "{err}"
    );
    let err = error_text("dns: 5\n");
    assert!(
        err.contains("dns: expected a section of keys, found a number"),
        "{err}"
    );
    let err = error_text("server_url: [\n");
    assert!(
        err.starts_with("config /tmp/test.yaml: invalid YAML: "),
        "{err}"
    );
    assert!(!err.contains('\n'));
}

#[test]
fn bad_server_url() {
    assert_eq!(
        error_text("server_url: ftp://x\n"),
        "config /tmp/test.yaml: server_url \"ftp://x\" must start with http:// or https://"
    );
    assert!(error_text("server_url: http://:8080\n").contains("has no host"));
    assert!(error_text("server_url: http://hs:port\n").contains("invalid port"));
    let c = load_with("server_url: https://[::1]:8443/\n", &[])
        .unwrap()
        .config;
    assert_eq!(c.server_url, "https://[::1]:8443");
}

#[test]
fn base_domain_must_not_contain_server_url() {
    let same = "server_url: https://hs.example.com\ndns:\n  base_domain: hs.example.com\n";
    let err = error_text(same);
    assert!(
        err.starts_with("config /tmp/test.yaml: dns.base_domain \"hs.example.com\" must not be"),
        "{err}"
    );
    let parent = "server_url: https://hs.example.com:443\ndns:\n  base_domain: example.com\n";
    assert!(error_text(parent).contains("must not contain the server_url host"));
    let sibling = "server_url: https://hs.example.com\ndns:\n  base_domain: ts.example.com\n";
    assert!(load_with(sibling, &[]).is_ok());
    let suffix_only = "server_url: https://myexample.com\ndns:\n  base_domain: example.com\n";
    assert!(load_with(suffix_only, &[]).is_ok());
}

#[test]
fn database_type_sqlite_keeps_the_log_beside_the_headscale_file() {
    let c = load_with(
        "database:\n  type: sqlite\n  sqlite:\n    path: /srv/hs/db.sqlite\n    write_ahead_log: true\n",
        &[],
    )
    .unwrap()
    .config;
    assert_eq!(c.database.backend(), Some(super::DatabaseKind::Sqlite));
    assert_eq!(c.database.sled_path(), PathBuf::from("/srv/hs/db.sled"));
    assert_eq!(
        c.database.import_source(),
        Some(super::ImportSource::Sqlite("/srv/hs/db.sqlite".into()))
    );
    // An explicit sled path wins.
    let c = load_with(
        "database:\n  type: sqlite\n  sqlite:\n    path: /srv/hs/db.sqlite\n  sled:\n    path: /x/log.sled\n",
        &[],
    )
    .unwrap()
    .config;
    assert_eq!(c.database.sled_path(), PathBuf::from("/x/log.sled"));
    // The default is headscale's data dir.
    let c = load_with("", &[]).unwrap().config;
    assert_eq!(
        c.database.sled_path(),
        PathBuf::from(super::DEFAULT_SLED_PATH)
    );
    assert_eq!(c.database.import_source(), None);
}

#[test]
fn database_type_postgres_reads_headscales_keys() {
    let c = load_with(
        "database:\n  type: postgres\n  postgres:\n    host: db.internal\n    port: 5433\n    name: hs\n    user: hs\n    pass: secret\n    ssl: false\n    max_open_conns: 10\n    max_idle_conns: 10\n    conn_max_idle_time_secs: 3600\n",
        &[],
    )
    .unwrap()
    .config;
    assert_eq!(c.database.backend(), Some(super::DatabaseKind::Postgres));
    assert_eq!(c.database.postgres.port, 5433);
    assert_eq!(c.database.postgres.ssl, "false");
    assert!(!format!("{:?}", c.database.postgres).contains("secret"));
    let both = "database:\n  type: postgres\n  postgres:\n    pass: a\n    pass_file: /b\n";
    assert!(error_text(both).contains("either pass or pass_file"));
}

#[test]
fn unknown_database_type_is_an_error() {
    let err = error_text("database:\n  type: mysql\n");
    assert_eq!(
        err,
        "config /tmp/test.yaml: database.type \"mysql\" is not a database type: use sled (our \
         embedded log), sqlite (a headscale database to import) or postgres"
    );
}

#[test]
fn deprecated_ephemeral_key_is_moved_with_warning() {
    let loaded = load_with("ephemeral_node_inactivity_timeout: 10m\n", &[]).unwrap();
    assert_eq!(
        loaded.config.node.ephemeral.inactivity_timeout,
        Duration::from_secs(600)
    );
    let expected = "config key \"ephemeral_node_inactivity_timeout\" is deprecated; \
                    use node.ephemeral.inactivity_timeout (value used)";
    assert_eq!(
        loaded.warnings,
        vec![expected.to_string(), no_derp_warning()]
    );

    let both = "ephemeral_node_inactivity_timeout: 10m\n\
                node:\n  ephemeral:\n    inactivity_timeout: 5m\n";
    let loaded = load_with(both, &[]).unwrap();
    assert_eq!(
        loaded.config.node.ephemeral.inactivity_timeout,
        Duration::from_secs(300)
    );
    assert!(loaded.warnings.iter().any(|w| w.contains("ignored")));
}

#[test]
fn validation_rules() {
    let cases = [
        (
            "tls_cert_path: /c.pem\n",
            "tls_key_path must be set when tls_cert_path is set",
        ),
        (
            "dns:\n  nameservers:\n    global: []\n",
            "dns.override_local_dns is true but dns.nameservers.global is empty",
        ),
        (
            "dns:\n  extra_records: [{name: a.example.com, type: A, value: 100.64.0.9}]\n  \
             extra_records_path: /r.json\n",
            "mutually exclusive",
        ),
        (
            "dns:\n  extra_records: [{name: a, type: AAAA, value: 1.2.3.4}]\n",
            "not a valid AAAA record value",
        ),
        (
            "prefixes:\n  v4: \"\"\n  v6: \"\"\n",
            "prefixes must set at least one of v4 and v6",
        ),
        (
            "policy:\n  path: /nonexistent/policy.hujson\n",
            "policy.path \"/nonexistent/policy.hujson\" does not exist",
        ),
        ("log:\n  level: loud\n", "log.level \"loud\" must be one of"),
        (
            "unix_socket_permission: \"0999\"\n",
            "unix_socket_permission \"0999\" must be an octal file mode",
        ),
        (
            "trusted_proxies: [not-a-cidr]\n",
            "trusted_proxies entry \"not-a-cidr\"",
        ),
        (
            "listen_addr: localhost\n",
            "listen_addr \"localhost\" must be host:port",
        ),
        (
            "dns:\n  nameservers:\n    global: [dns.example]\n",
            "must be an IP address or an https:// DoH URL",
        ),
        (
            "dns:\n  magic_dns: true\n  base_domain: \"\"\n",
            "dns.base_domain must be set when dns.magic_dns is true",
        ),
    ];
    for (yaml, needle) in cases {
        let err = error_text(yaml);
        assert!(err.contains(needle), "{yaml}: {err}");
        assert!(err.starts_with("config /tmp/test.yaml: "), "{err}");
    }

    // Warnings, not errors.
    let yaml = "prefixes:\n  v4: 10.0.0.0/8\n\
                node:\n  ephemeral:\n    inactivity_timeout: 5s\n\
                log:\n  level: warning\n";
    let loaded = load_with(yaml, &[]).unwrap();
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("prefixes.v4 10.0.0.0/8 is outside 100.64.0.0/10: unsupported")));
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("inactivity_timeout 5s is below 1m 5s")));
    assert_eq!(loaded.config.log.level_name(), Some("warn"));
    let fatal = LogConfig {
        level: "fatal".into(),
        format: LogFormat::Json,
    };
    assert_eq!(fatal.level_name(), Some("error"));

    // headscale's example writes empty strings for unset paths.
    let yaml = "tls_cert_path: \"\"\ntls_key_path: \"\"\npolicy:\n  path: \"\"\n";
    let c = load_with(yaml, &[]).unwrap().config;
    assert_eq!(
        (c.tls_cert_path, c.tls_key_path, c.policy.path),
        (None, None, None)
    );
}

#[test]
fn netmap_relevant_json_is_canonical_and_selective() {
    let a = Config::default();
    let b = Config::default();
    assert_eq!(a.netmap_relevant_json(), b.netmap_relevant_json());
    let json = a.netmap_relevant_json();
    assert!(!json.contains(": ") && !json.contains(", "), "{json}");
    assert!(!json.contains('\n'));
    assert!(
        json.starts_with(
            "{\"auto_update\":{\"enabled\":false},\"derp\":{\"paths\":[],\"server\":{\"automatically_add"
        ),
        "{json}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["node"]["ephemeral"]["inactivity_timeout"], "2m");
    assert_eq!(parsed["policy"]["mode"], "file");

    let mut unrelated = a.clone();
    unrelated.log.level = "debug".into();
    unrelated.listen_addr = "0.0.0.0:443".into();
    unrelated.database.sled.path = "/elsewhere".into();
    unrelated.cli.timeout = Duration::from_secs(60);
    unrelated.derp.server.private_key_path = "/other.key".into();
    assert_eq!(unrelated.netmap_relevant_hash(), a.netmap_relevant_hash());

    let mut renamed = a.clone();
    renamed.dns.base_domain = "other.example".into();
    assert_ne!(renamed.netmap_relevant_hash(), a.netmap_relevant_hash());
    let mut expiry = a.clone();
    expiry.node.expiry = Duration::from_secs(3600);
    assert_ne!(expiry.netmap_relevant_hash(), a.netmap_relevant_hash());
    assert_eq!(
        a.netmap_relevant_hash().to_vec(),
        Sha256::digest(a.netmap_relevant_json().as_bytes()).to_vec()
    );
}

#[test]
fn derp_key_must_not_be_the_noise_key_file() {
    let text = error_text(
        "noise:\n  private_key_path: /tmp/k.key\nderp:\n  server:\n    enabled: true\n    \
         private_key_path: /tmp/k.key\n",
    );
    assert!(text.contains("derp.server.private_key_path"), "{text}");
}

#[test]
fn tuning_is_read() {
    let yaml = "tuning:\n  batch_change_delay: 50ms\n  map_keepalive_interval: 2s\n  node_offline_grace: 1s\n";
    let loaded = load_with(yaml, &[]).unwrap();
    assert!(
        loaded.warnings.iter().all(|w| !w.contains("tuning")),
        "{:?}",
        loaded.warnings
    );
    let tuning = &loaded.config.tuning;
    assert_eq!(
        tuning.batch_change_delay,
        std::time::Duration::from_millis(50)
    );
    assert_eq!(
        tuning.map_keepalive_interval,
        std::time::Duration::from_secs(2)
    );
    assert_eq!(tuning.node_offline_grace, std::time::Duration::from_secs(1));
}

#[test]
fn api_cors_allowed_origins() {
    // Off by default: no origin, no CORS headers.
    let c = load_with("", &[]).unwrap().config;
    assert!(c.api.cors.allowed_origins.is_empty());

    let yaml = "api:\n  cors:\n    allowed_origins: [\"https://admin.example.com\", \"http://localhost:3000/\"]\n";
    let loaded = load_with(yaml, &[]).unwrap();
    assert_eq!(
        loaded.config.api.cors.allowed_origins,
        vec!["https://admin.example.com", "http://localhost:3000/"]
    );
    assert!(
        !loaded.warnings.iter().any(|w| w.contains("api.cors")),
        "{:?}",
        loaded.warnings
    );

    // From the environment, as every key.
    let vars = [(
        "HEADSCALE_API_CORS_ALLOWED_ORIGINS",
        "[https://ui.example.org]",
    )];
    let c = load_with("", &vars).unwrap().config;
    assert_eq!(c.api.cors.allowed_origins, vec!["https://ui.example.org"]);

    // Any origin: allowed, warned about.
    let loaded = load_with("api:\n  cors:\n    allowed_origins: [\"*\"]\n", &[]).unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("api.cors.allowed_origins is [\"*\"]")),
        "{:?}",
        loaded.warnings
    );

    for (origins, needle) in [
        ("[\"*\", \"https://a.example\"]", "must be [\"*\"] alone"),
        (
            "[admin.example.com]",
            "entry \"admin.example.com\" must be an origin",
        ),
        (
            "[\"https://a.example/ui\"]",
            "entry \"https://a.example/ui\"",
        ),
        ("[\"ftp://a.example\"]", "entry \"ftp://a.example\""),
        (
            "[\"https://a.example:99999\"]",
            "entry \"https://a.example:99999\"",
        ),
        ("[\"https://\"]", "entry \"https:\""),
    ] {
        let err = error_text(&format!("api:\n  cors:\n    allowed_origins: {origins}\n"));
        assert!(
            err.contains("api.cors.allowed_origins") && err.contains(needle),
            "{origins}: {err}"
        );
    }
}
