//! The tailnet-wide parts of every netmap, built from the config once at start: DNS
//! (MagicDNS, resolvers, split DNS, search domains, extra records) and the DERP map. The
//! per-viewer access view (policy) is kept current by the map hub, and the DNS config
//! changes later when the `dns.extra_records_path` file does (`extra_records_file.rs`).

use crate::config::{Config, ExtraRecord, RecordType};
use crate::core::netmap::{Access, NetmapContext};
use crate::core::policy::Topology;
use crate::tailcfg::{DnsConfig, DnsRecord, Resolver, SharedJson};
use std::sync::Arc;

/// `DNSConfig` as headscale derives it: global nameservers replace the client's own only
/// with `override_local_dns` (otherwise they are fallbacks), split DNS becomes `Routes`, and
/// the base domain leads the search domains.
pub fn dns_config(config: &Config) -> DnsConfig {
    dns_config_with(config, &config.dns.extra_records)
}

/// [`dns_config`] with `extra_records` in place of the inline ones: the records of
/// `dns.extra_records_path`, which change while the server runs.
pub fn dns_config_with(config: &Config, extra_records: &[ExtraRecord]) -> DnsConfig {
    let dns = &config.dns;
    let resolvers = |servers: &[String]| -> Vec<Resolver> {
        servers
            .iter()
            .map(|addr| Resolver { addr: addr.clone() })
            .collect()
    };
    let global = resolvers(&dns.nameservers.global);
    let mut out = DnsConfig {
        proxied: dns.magic_dns,
        routes: dns
            .nameservers
            .split
            .iter()
            .map(|(domain, servers)| (domain.clone(), resolvers(servers)))
            .collect(),
        extra_records: extra_records
            .iter()
            .map(|r| DnsRecord {
                name: r.name.clone(),
                record_type: match r.record_type {
                    RecordType::A => "A".into(),
                    RecordType::Aaaa => "AAAA".into(),
                },
                value: r.value.clone(),
            })
            .collect(),
        ..Default::default()
    };
    if dns.override_local_dns {
        out.resolvers = global;
    } else {
        out.fallback_resolvers = global;
    }
    if !dns.base_domain.is_empty() {
        out.domains.push(dns.base_domain.clone());
    }
    out.domains.extend(dns.search_domains.iter().cloned());
    out
}

/// Everything tailnet-wide, rendered once; `derp_map` is the DERP map's JSON.
pub fn netmap_context(
    config: &Config,
    derp_map: &serde_json::Value,
) -> Result<NetmapContext, serde_json::Error> {
    Ok(NetmapContext {
        derp_map: SharedJson::new(derp_map)?,
        dns_config: SharedJson::new(&dns_config(config))?,
        // Replaced by the map hub with the view of the current state before any session.
        access: Arc::new(Access::with_topology(
            Arc::new(Topology::default()),
            None,
            &config.server_url,
        )),
        domain: config.dns.base_domain.clone(),
        self_caps: self_caps(config),
        log_tail: config.logtail.enabled,
        ranking: Arc::default(),
    })
}

/// What headscale gives every node on itself: admin and SSH capabilities, file sharing
/// (Taildrop between a user's own devices) when `taildrop.enabled`, and the tailnet's
/// auto-update default (`auto_update.enabled`, always sent, `[true]` or `[false]`).
pub fn self_caps(config: &Config) -> std::collections::BTreeMap<String, Vec<serde_json::Value>> {
    let mut caps = std::collections::BTreeMap::new();
    caps.insert("https://tailscale.com/cap/is-admin".to_string(), Vec::new());
    caps.insert("https://tailscale.com/cap/ssh".to_string(), Vec::new());
    if config.taildrop.enabled {
        caps.insert(
            "https://tailscale.com/cap/file-sharing".to_string(),
            Vec::new(),
        );
    }
    caps.insert(
        "default-auto-update".to_string(),
        vec![serde_json::Value::Bool(config.auto_update.enabled)],
    );
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logtail_and_auto_update_reach_every_node_as_headscale_sends_them() {
        let mut config = Config::default();
        let context = netmap_context(&config, &serde_json::json!({})).unwrap();
        assert!(!context.log_tail);
        assert_eq!(
            context.self_caps["default-auto-update"],
            vec![serde_json::Value::Bool(false)]
        );
        let off = serde_json::to_value(crate::tailcfg::Debug {
            disable_log_tail: true,
        })
        .unwrap();
        assert_eq!(off, serde_json::json!({"DisableLogTail": true}));

        config.logtail.enabled = true;
        config.auto_update.enabled = true;
        let context = netmap_context(&config, &serde_json::json!({})).unwrap();
        assert!(context.log_tail);
        assert_eq!(
            context.self_caps["default-auto-update"],
            vec![serde_json::Value::Bool(true)]
        );
        // Go's omitempty: logtail allowed is an empty Debug.
        let on = serde_json::to_value(crate::tailcfg::Debug {
            disable_log_tail: false,
        })
        .unwrap();
        assert_eq!(on, serde_json::json!({}));
    }
}
