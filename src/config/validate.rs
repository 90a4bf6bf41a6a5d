//! Validation of a deserialized config: headscale's rules (and a few of ours) as one-line
//! errors naming the key, warnings for risky-but-allowed values, the tidy-up done before
//! validation, and `unix_socket_mode`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;

use super::{
    duration, tailscale_v4_range, tailscale_v6_range, Config, ConfigError, DatabaseKind, PolicyMode,
};

/// Headscale refuses shorter ephemeral timeouts; we only warn so tests can use short ones.
const EPHEMERAL_TIMEOUT_MIN: Duration = Duration::from_secs(65);

impl Config {
    /// Name of the source for messages.
    pub(super) fn origin(&self) -> String {
        match &self.source_path {
            Some(path) => path.display().to_string(),
            None => "(in memory)".into(),
        }
    }

    pub(super) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Headscale's tidy-ups before validation (a trailing `/` on `server_url`), and white
    /// space around `oidc.issuer` (a stray space from an environment variable would
    /// otherwise fail discovery against the provider).
    pub(super) fn normalize(&mut self) {
        while self.server_url.ends_with('/') {
            self.server_url.pop();
        }
        let issuer = self.oidc.issuer.trim();
        if issuer.len() != self.oidc.issuer.len() {
            self.oidc.issuer = issuer.to_string();
        }
    }

    /// `unix_socket_permission` as a mode, e.g. `"0770"` → `0o770`.
    pub fn unix_socket_mode(&self) -> Result<u32, ConfigError> {
        let text = self.unix_socket_permission.trim();
        let digits = text.strip_prefix("0o").unwrap_or(text);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if !digits.is_empty() && mode <= 0o7777 => Ok(mode),
            _ => Err(self.invalid(
                "unix_socket_permission",
                format!("{text:?} must be an octal file mode such as 0770"),
            )),
        }
    }

    /// Check the rules headscale enforces (and a few of ours). Returns warnings for values
    /// that work but are unsupported or risky; the first hard problem is an error.
    pub fn validate(&self) -> Result<Vec<String>, ConfigError> {
        let mut warnings = Vec::new();

        // Server and listeners.
        let server = parse_server_url(&self.server_url).map_err(|problem| {
            self.invalid("server_url", format!("{:?} {problem}", self.server_url))
        })?;
        check_host_port(&self.listen_addr).map_err(|problem| {
            self.invalid("listen_addr", format!("{:?} {problem}", self.listen_addr))
        })?;
        if !self.metrics_listen_addr.is_empty() {
            check_host_port(&self.metrics_listen_addr).map_err(|problem| {
                self.invalid(
                    "metrics_listen_addr",
                    format!(
                        "{:?} {problem} (leave it empty to disable)",
                        self.metrics_listen_addr
                    ),
                )
            })?;
        }
        check_host_port(&self.grpc_listen_addr).map_err(|problem| {
            self.invalid(
                "grpc_listen_addr",
                format!("{:?} {problem}", self.grpc_listen_addr),
            )
        })?;
        self.unix_socket_mode()?;
        match (&self.tls_cert_path, &self.tls_key_path) {
            (Some(_), None) => {
                return Err(self.invalid("tls_key_path", "must be set when tls_cert_path is set"))
            }
            (None, Some(_)) => {
                return Err(self.invalid("tls_cert_path", "must be set when tls_key_path is set"))
            }
            _ => {}
        }
        warnings.extend(self.validate_acme()?);
        for proxy in &self.trusted_proxies {
            if proxy.parse::<IpNet>().is_err() && proxy.parse::<IpAddr>().is_err() {
                return Err(self.invalid(
                    "trusted_proxies",
                    format!("entry {proxy:?} must be a CIDR like 10.0.0.0/8 or an IP address"),
                ));
            }
        }
        warnings.extend(self.validate_cors()?);
        if self.noise.private_key_path.as_os_str().is_empty() {
            return Err(self.invalid("noise.private_key_path", "must be set"));
        }

        // Storage.
        match self.database.backend() {
            None => {
                return Err(self.invalid(
                    "database.type",
                    format!(
                        "{:?} is not a database type: use sled (our embedded log), sqlite (a \
                         headscale database to import) or postgres",
                        self.database.kind
                    ),
                ))
            }
            Some(DatabaseKind::Sqlite) if self.database.sqlite.path.as_os_str().is_empty() => {
                return Err(self.invalid("database.sqlite.path", "must be set"));
            }
            Some(DatabaseKind::Postgres) => {
                let pg = &self.database.postgres;
                if pg.host.is_empty() || pg.name.is_empty() || pg.user.is_empty() {
                    return Err(
                        self.invalid("database.postgres", "host, name and user must be set")
                    );
                }
                if !pg.pass.is_empty() && !pg.pass_file.as_os_str().is_empty() {
                    return Err(self.invalid(
                        "database.postgres.pass_file",
                        "set either pass or pass_file, not both",
                    ));
                }
            }
            Some(_) => {}
        }

        // Addresses.
        if self.prefixes.v4.is_none() && self.prefixes.v6.is_none() {
            return Err(self.invalid("prefixes", "must set at least one of v4 and v6"));
        }
        if let Some(v4) = self.prefixes.v4 {
            if !tailscale_v4_range().contains(&v4) {
                warnings.push(format!(
                    "prefixes.v4 {v4} is outside {}: unsupported, clients may misbehave",
                    tailscale_v4_range()
                ));
            }
        }
        if let Some(v6) = self.prefixes.v6 {
            if !tailscale_v6_range().contains(&v6) {
                warnings.push(format!(
                    "prefixes.v6 {v6} is outside {}: unsupported, clients may misbehave",
                    tailscale_v6_range()
                ));
            }
        }

        // DNS.
        self.validate_dns(&server.host)?;

        self.validate_derp(&mut warnings)?;

        // Policy.
        match (self.policy.mode, &self.policy.path) {
            (PolicyMode::File, Some(path)) if !path.exists() => {
                return Err(self.invalid(
                    "policy.path",
                    format!(
                        "{:?} does not exist (policy.mode is file)",
                        path.display().to_string()
                    ),
                ));
            }
            (PolicyMode::Database, Some(path)) => warnings.push(format!(
                "policy.path {:?} is ignored because policy.mode is database",
                path.display().to_string()
            )),
            _ => {}
        }

        // Logins.
        self.validate_oidc(&mut warnings)?;
        super::webhooks::check(&self.webhooks)
            .map_err(|(key, message)| self.invalid(&key, message))?;

        // Nodes and logging.
        self.validate_nodes(&mut warnings);
        self.validate_timers()?;
        if self.log.level_name().is_none() {
            return Err(self.invalid(
                "log.level",
                format!(
                    "{:?} must be one of trace, debug, info, warn, error",
                    self.log.level
                ),
            ));
        }
        Ok(warnings)
    }

    /// `derp.*`: the embedded relay's settings, the URLs and the refresh period.
    fn validate_derp(&self, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
        let derp = &self.derp.server;
        if derp.enabled {
            check_host_port(&derp.stun_listen_addr).map_err(|problem| {
                self.invalid(
                    "derp.server.stun_listen_addr",
                    format!(
                        "{:?} {problem} (required when derp.server.enabled)",
                        derp.stun_listen_addr
                    ),
                )
            })?;
            if derp.region_id == 0 {
                return Err(self.invalid("derp.server.region_id", "must not be 0"));
            }
            if derp.region_code.trim().is_empty() {
                return Err(self.invalid("derp.server.region_code", "must be set"));
            }
            if derp.private_key_path == self.noise.private_key_path {
                return Err(self.invalid(
                    "derp.server.private_key_path",
                    "must differ from noise.private_key_path (the DERP key must not be the Noise key)",
                ));
            }
        }
        if let Some(ip) = &derp.ipv4 {
            if ip.parse::<Ipv4Addr>().is_err() {
                return Err(
                    self.invalid("derp.server.ipv4", format!("{ip:?} is not an IPv4 address"))
                );
            }
        }
        if let Some(ip) = &derp.ipv6 {
            if ip.parse::<Ipv6Addr>().is_err() {
                return Err(
                    self.invalid("derp.server.ipv6", format!("{ip:?} is not an IPv6 address"))
                );
            }
        }
        for url in &self.derp.urls {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(self.invalid(
                    "derp.urls",
                    format!("entry {url:?} must start with http:// or https://"),
                ));
            }
            let parsed = url.parse::<hyper::Uri>();
            if parsed.as_ref().map_or(true, |uri| uri.host().is_none()) {
                return Err(self.invalid(
                    "derp.urls",
                    format!("entry {url:?} is not a valid URL with a host"),
                ));
            }
        }
        if self.derp.auto_update_enabled && self.derp.update_frequency.is_zero() {
            return Err(self.invalid(
                "derp.update_frequency",
                "must be more than 0 when derp.auto_update_enabled is true",
            ));
        }
        if !derp.enabled && self.derp.urls.is_empty() && self.derp.paths.is_empty() {
            warnings.push(
                "no DERP relays configured (derp.server.enabled is false and derp.urls and \
                 derp.paths are empty): nodes can only connect directly"
                    .into(),
            );
        }
        Ok(())
    }

    /// `oidc.*` when OIDC is on (an issuer is set): a client id and an http(s) issuer URL.
    /// Without an issuer headscale ignores the section, and so do we.
    fn validate_oidc(&self, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
        let oidc = &self.oidc;
        if !oidc.enabled() {
            return Ok(());
        }
        let issuer = oidc.issuer.trim();
        let host = parse_server_url(issuer)
            .map(|url| url.host)
            .map_err(|problem| {
                self.invalid(
                    "oidc.issuer",
                    format!("{issuer:?} {problem} (the provider's issuer URL)"),
                )
            })?;
        if issuer.contains(char::is_whitespace) {
            return Err(self.invalid(
                "oidc.issuer",
                format!("{issuer:?} must not contain white space"),
            ));
        }
        // OpenID Connect Discovery appends its path to the issuer: no query, no fragment.
        if issuer.contains(['?', '#']) {
            return Err(self.invalid(
                "oidc.issuer",
                format!("{issuer:?} must not have a query or a fragment"),
            ));
        }
        if oidc.client_id.trim().is_empty() {
            return Err(self.invalid("oidc.client_id", "must be set when oidc.issuer is set"));
        }
        if !oidc.scope.iter().any(|scope| scope == "openid") {
            warnings.push(format!(
                "oidc.scope {:?} lacks \"openid\": providers then return no ID token and \
                 OIDC logins fail",
                oidc.scope.join(" ")
            ));
        }
        if issuer.starts_with("http://") && !is_loopback_host(&host) {
            warnings.push(format!(
                "oidc.issuer {issuer:?} is plain http: the client secret and the users' \
                 tokens cross the network unencrypted; use https"
            ));
        }
        Ok(())
    }

    /// `node.*` beyond the timers: what is accepted but done differently.
    fn validate_nodes(&self, warnings: &mut Vec<String>) {
        let timeout = self.node.ephemeral.inactivity_timeout;
        if timeout < EPHEMERAL_TIMEOUT_MIN {
            warnings.push(format!(
                "node.ephemeral.inactivity_timeout {} is below {}: headscale refuses this; \
                 allowed here for tests",
                duration::format(timeout),
                duration::format(EPHEMERAL_TIMEOUT_MIN)
            ));
        }
        let ha = &self.node.routes.ha;
        if !ha.probe_interval.is_zero() && *ha != super::HaRoutesConfig::default() {
            warnings.push(format!(
                "node.routes.ha asks for HA subnet routers to be probed every {} (timeout {}); \
                 this server does not probe them: a primary router fails over when its map \
                 stream drops (after tuning.node_offline_grace)",
                duration::format(ha.probe_interval),
                duration::format(ha.probe_timeout)
            ));
        }
    }

    /// Timers that drive intervals and loops: zero would panic (`tokio::time::interval`) or
    /// spin (keep-alives, snapshots, DERP map refresh), so it is refused (L6).
    fn validate_timers(&self) -> Result<(), ConfigError> {
        let mut timers = vec![
            ("tuning.batch_change_delay", self.tuning.batch_change_delay),
            (
                "tuning.map_keepalive_interval",
                self.tuning.map_keepalive_interval,
            ),
            (
                "database.sled.snapshot_interval",
                self.database.sled.snapshot_interval,
            ),
            ("cli.timeout", self.cli.timeout),
            ("ha.poll_interval", self.ha.poll_interval),
            ("ha.heartbeat_interval", self.ha.heartbeat_interval),
            ("ha.presence_ttl", self.ha.presence_ttl),
            ("ha.max_staleness", self.ha.max_staleness),
        ];
        if self.derp.auto_update_enabled {
            timers.push(("derp.update_frequency", self.derp.update_frequency));
        }
        for (key, value) in timers {
            if value.is_zero() {
                return Err(self.invalid(key, "must be longer than 0s"));
            }
        }
        if self.tuning.node_mapsession_buffered_chan_size == 0 {
            return Err(self.invalid(
                "tuning.node_mapsession_buffered_chan_size",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// `api.cors.allowed_origins`: `*` alone, or origins (`scheme://host[:port]`, no path).
    fn validate_cors(&self) -> Result<Vec<String>, ConfigError> {
        let key = "api.cors.allowed_origins";
        let origins = &self.api.cors.allowed_origins;
        if origins.iter().any(|o| o.trim() == "*") {
            if origins.len() > 1 {
                return Err(self.invalid(key, "must be [\"*\"] alone or a list of origins"));
            }
            return Ok(vec![format!(
                "{key} is [\"*\"]: a page on any web site may call the API from a browser \
                 (it still needs an API key); list your admin UI's origin instead"
            )]);
        }
        for origin in origins {
            let origin = origin.trim().trim_end_matches('/');
            let rest = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            let valid = rest.is_some_and(|authority| {
                !authority.is_empty()
                    && !authority.contains(['/', '?', '#', '@', ' '])
                    && split_host_port(authority, false).is_ok()
            });
            if !valid {
                return Err(self.invalid(
                    key,
                    format!(
                        "entry {origin:?} must be an origin like https://admin.example.com \
                         (scheme, host and optional port; no path)"
                    ),
                ));
            }
        }
        Ok(Vec::new())
    }

    fn validate_dns(&self, server_host: &str) -> Result<(), ConfigError> {
        let dns = &self.dns;
        let base = dns
            .base_domain
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if dns.magic_dns && base.is_empty() {
            return Err(self.invalid("dns.base_domain", "must be set when dns.magic_dns is true"));
        }
        if !base.is_empty() {
            // Clients take over base_domain, so the server must not live in it (headscale rule).
            let host = server_host.trim_end_matches('.').to_ascii_lowercase();
            if host == base {
                return Err(self.invalid(
                    "dns.base_domain",
                    format!(
                        "{:?} must not be the server_url host: clients resolve base_domain \
                         through MagicDNS and could no longer reach the server",
                        dns.base_domain
                    ),
                ));
            }
            if host.ends_with(&format!(".{base}")) {
                return Err(self.invalid(
                    "dns.base_domain",
                    format!(
                        "{:?} must not contain the server_url host {host:?}: clients resolve \
                         base_domain through MagicDNS and could no longer reach the server",
                        dns.base_domain
                    ),
                ));
            }
        }
        if dns.override_local_dns && dns.nameservers.global.is_empty() {
            return Err(self.invalid(
                "dns.override_local_dns",
                "is true but dns.nameservers.global is empty (add resolvers or set it to false)",
            ));
        }
        for server in &dns.nameservers.global {
            if !is_resolver(server) {
                return Err(self.invalid(
                    "dns.nameservers.global",
                    format!("entry {server:?} must be an IP address or an https:// DoH URL"),
                ));
            }
        }
        for (domain, servers) in &dns.nameservers.split {
            if let Some(bad) = servers.iter().find(|s| !is_resolver(s)) {
                return Err(self.invalid(
                    &format!("dns.nameservers.split.{domain}"),
                    format!("entry {bad:?} must be an IP address or an https:// DoH URL"),
                ));
            }
        }
        if !dns.extra_records.is_empty() && dns.extra_records_path.is_some() {
            return Err(self.invalid(
                "dns.extra_records",
                "and dns.extra_records_path are mutually exclusive (use one)",
            ));
        }
        for (index, record) in dns.extra_records.iter().enumerate() {
            if let Err(problem) = super::extra_records::check_record(record) {
                return Err(self.invalid("dns.extra_records", format!("entry {index}: {problem}")));
            }
        }
        Ok(())
    }
}

/// `localhost` or a loopback address: plain http there stays on the machine.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_resolver(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok() || text.starts_with("https://")
}

/// The parts of `server_url` validation needs.
struct ServerUrl {
    host: String,
}

fn parse_server_url(url: &str) -> Result<ServerUrl, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not contain user information".into());
    }
    let host = split_host_port(authority, false)?;
    if host.is_empty() {
        return Err("has no host".into());
    }
    Ok(ServerUrl { host })
}

/// Accepts `host:port`, `[v6]:port` and `:port`.
fn check_host_port(addr: &str) -> Result<(), String> {
    split_host_port(addr, true).map(|_| ())
}

/// Split off and check the port; returns the host (without IPv6 brackets).
fn split_host_port(authority: &str, port_required: bool) -> Result<String, String> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']').ok_or("has an unclosed '['")?;
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(format!("has an invalid IPv6 address {inside:?}"));
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("has junk after ']'")?),
        };
        (inside.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("must put an IPv6 address in brackets, like [::1]:8080".into())
            }
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    match port {
        Some(port) => match port.parse::<u16>() {
            Ok(_) => {}
            Err(_) => return Err(format!("has an invalid port {port:?}")),
        },
        None if port_required => return Err("must be host:port, like 127.0.0.1:8080".into()),
        None => {}
    }
    let valid = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
    if !valid {
        return Err(format!("has an invalid host {host:?}"));
    }
    Ok(host)
}

#[cfg(test)]
mod timer_tests {
    use crate::config::load::load_str;

    fn error(yaml: &str) -> String {
        load_str(yaml, std::path::Path::new("/tmp/t.yaml"), &|_| None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn zero_timers_are_refused_with_their_key() {
        for (yaml, key) in [
            (
                "tuning:\n  batch_change_delay: 0s\n",
                "tuning.batch_change_delay",
            ),
            (
                "tuning:\n  map_keepalive_interval: 0s\n",
                "tuning.map_keepalive_interval",
            ),
            (
                "database:\n  sled:\n    snapshot_interval: 0s\n",
                "database.sled.snapshot_interval",
            ),
            (
                "tuning:\n  node_mapsession_buffered_chan_size: 0\n",
                "tuning.node_mapsession_buffered_chan_size",
            ),
        ] {
            let message = error(yaml);
            assert!(message.contains(key), "{yaml:?}: {message}");
        }
        assert!(!error("tuning:\n  batch_change_delay: 50ms\n").contains("batch_change_delay"));
    }
}
