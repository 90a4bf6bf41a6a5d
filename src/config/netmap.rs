//! The netmap-relevant subset of a config: the canonical JSON and its hash recorded in
//! `ConfigApplied` events (so a past netmap can be rebuilt), and the human summary that
//! `headscale configtest` prints (`explain`).

use std::path::Path;

use sha2::{Digest, Sha256};

use super::{duration, Config, PolicyMode};

impl Config {
    /// Canonical JSON (sorted keys, no whitespace) of exactly the settings that change what
    /// clients are told. Recorded in `ConfigApplied` so a past netmap can be rebuilt.
    pub fn netmap_relevant_json(&self) -> String {
        use serde_json::Value as J;
        let text = |s: &str| J::String(s.to_string());
        let path = |p: &Path| J::String(p.to_string_lossy().into_owned());
        let texts = |items: &[String]| J::Array(items.iter().map(|s| text(s)).collect());
        let opt = |value: Option<String>| value.map_or(J::Null, J::String);
        let obj = |pairs: Vec<(&str, J)>| {
            J::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        };

        let dns = &self.dns;
        let split = dns
            .nameservers
            .split
            .iter()
            .map(|(domain, servers)| (domain.clone(), texts(servers)))
            .collect();
        let records = dns
            .extra_records
            .iter()
            .map(|r| {
                obj(vec![
                    ("name", text(&r.name)),
                    ("type", text(r.record_type.as_str())),
                    ("value", text(&r.value)),
                ])
            })
            .collect();
        let derp = &self.derp.server;
        let document = obj(vec![
            ("server_url", text(&self.server_url)),
            (
                "prefixes",
                obj(vec![
                    ("v4", opt(self.prefixes.v4.map(|p| p.to_string()))),
                    ("v6", opt(self.prefixes.v6.map(|p| p.to_string()))),
                    ("allocation", text(self.prefixes.allocation.as_str())),
                ]),
            ),
            (
                "dns",
                obj(vec![
                    ("magic_dns", J::Bool(dns.magic_dns)),
                    ("base_domain", text(&dns.base_domain)),
                    ("override_local_dns", J::Bool(dns.override_local_dns)),
                    (
                        "nameservers",
                        obj(vec![
                            ("global", texts(&dns.nameservers.global)),
                            ("split", J::Object(split)),
                        ]),
                    ),
                    ("search_domains", texts(&dns.search_domains)),
                    ("extra_records", J::Array(records)),
                    (
                        "extra_records_path",
                        dns.extra_records_path.as_deref().map_or(J::Null, path),
                    ),
                ]),
            ),
            (
                "derp",
                obj(vec![
                    (
                        "server",
                        obj(vec![
                            ("enabled", J::Bool(derp.enabled)),
                            ("region_id", J::from(derp.region_id)),
                            ("region_code", text(&derp.region_code)),
                            ("region_name", text(&derp.region_name)),
                            ("stun_listen_addr", text(&derp.stun_listen_addr)),
                            (
                                "automatically_add_embedded_derp_region",
                                J::Bool(derp.automatically_add_embedded_derp_region),
                            ),
                            ("ipv4", opt(derp.ipv4.clone())),
                            ("ipv6", opt(derp.ipv6.clone())),
                        ]),
                    ),
                    ("urls", texts(&self.derp.urls)),
                    (
                        "paths",
                        J::Array(self.derp.paths.iter().map(|p| path(p)).collect()),
                    ),
                ]),
            ),
            (
                "node",
                obj(vec![
                    ("expiry", text(&duration::format(self.node.expiry))),
                    (
                        "ephemeral",
                        obj(vec![(
                            "inactivity_timeout",
                            text(&duration::format(self.node.ephemeral.inactivity_timeout)),
                        )]),
                    ),
                    ("require_approval", J::Bool(self.node.require_approval)),
                ]),
            ),
            (
                "taildrop",
                obj(vec![("enabled", J::Bool(self.taildrop.enabled))]),
            ),
            (
                "logtail",
                obj(vec![("enabled", J::Bool(self.logtail.enabled))]),
            ),
            (
                "auto_update",
                obj(vec![("enabled", J::Bool(self.auto_update.enabled))]),
            ),
            (
                "policy",
                obj(vec![("mode", text(self.policy.mode.as_str()))]),
            ),
        ]);
        let mut out = String::new();
        write_canonical(&document, &mut out);
        out
    }

    /// SHA-256 of [`Config::netmap_relevant_json`].
    pub fn netmap_relevant_hash(&self) -> [u8; 32] {
        Sha256::digest(self.netmap_relevant_json().as_bytes()).into()
    }

    /// Short human summary for `headscale configtest`.
    pub fn explain(&self) -> String {
        let metrics = match self.metrics_listen_addr.as_str() {
            "" => "off".to_string(),
            addr => addr.to_string(),
        };
        let tls = match (&self.tls_cert_path, &self.tls_letsencrypt_hostname) {
            (Some(cert), _) => format!(" (TLS: {})", cert.display()),
            (None, Some(host)) => format!(
                " (TLS: ACME for {host}, {})",
                self.tls_letsencrypt_challenge_type
            ),
            (None, None) => String::new(),
        };
        let policy = match (&self.policy.mode, &self.policy.path) {
            (PolicyMode::File, Some(path)) => format!("file {}", path.display()),
            (PolicyMode::File, None) => "file (none set: all traffic allowed)".into(),
            (PolicyMode::Database, _) => "database (set through the API)".into(),
        };
        let derp = &self.derp.server;
        let embedded = if derp.enabled {
            format!(
                "embedded region {} {:?} on, STUN {}",
                derp.region_id, derp.region_code, derp.stun_listen_addr
            )
        } else {
            "embedded off".into()
        };
        let prefixes: Vec<String> = [
            self.prefixes.v4.map(|p| p.to_string()),
            self.prefixes.v6.map(|p| p.to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let dns = match self.dns.magic_dns {
            true => format!("MagicDNS on, base domain {}", self.dns.base_domain),
            false => "MagicDNS off".into(),
        };
        let lines = [
            ("config", self.origin()),
            ("server_url", self.server_url.clone()),
            (
                "listen",
                format!("{}{tls}, metrics {metrics}", self.listen_addr),
            ),
            (
                "data",
                format!(
                    "{}, noise key {}",
                    self.database.describe(),
                    self.noise.private_key_path.display()
                ),
            ),
            (
                "socket",
                format!(
                    "{} (mode {})",
                    self.unix_socket.display(),
                    self.unix_socket_permission
                ),
            ),
            ("policy", policy),
            (
                "derp",
                format!(
                    "{embedded}; {} url(s), {} file(s){}",
                    self.derp.urls.len(),
                    self.derp.paths.len(),
                    if self.derp.auto_update_enabled
                        && !(self.derp.urls.is_empty() && self.derp.paths.is_empty())
                    {
                        format!(
                            ", refreshed every {}",
                            duration::format(self.derp.update_frequency)
                        )
                    } else {
                        String::new()
                    }
                ),
            ),
            (
                "prefixes",
                format!(
                    "{} ({})",
                    prefixes.join(", "),
                    self.prefixes.allocation.as_str()
                ),
            ),
            ("dns", dns),
            ("oidc", self.oidc.describe()),
            (
                "netmap hash",
                hex::encode(&self.netmap_relevant_hash()[..8]),
            ),
        ];
        lines
            .iter()
            .map(|(label, value)| format!("{label:<12} {value}\n"))
            .collect()
    }
}

/// JSON with object keys sorted and no whitespace, independent of serde_json's map feature.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match value {
        J::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&J::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
