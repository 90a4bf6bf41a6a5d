//! The built-in ACME keys (`tls_letsencrypt_*`, `acme_url`, `acme_email`): headscale 0.29's
//! rules for them, plus the checks that let `serve` refuse a config it could not honour
//! instead of serving without TLS. The certificate work itself is `src/acme/`.

use super::{Config, ConfigError};

/// Where certificates come from when `acme_url` is empty (headscale's example sets it).
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How the ACME server checks that we control the hostname.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// A token served over plain HTTP on `tls_letsencrypt_listen` (port 80 as seen by the CA).
    Http01,
    /// A special certificate on `listen_addr` for ALPN `acme-tls/1` (port 443 as seen by the CA).
    TlsAlpn01,
}

impl AcmeChallenge {
    fn parse(text: &str) -> Option<AcmeChallenge> {
        match text {
            "HTTP-01" => Some(AcmeChallenge::Http01),
            "TLS-ALPN-01" => Some(AcmeChallenge::TlsAlpn01),
            _ => None,
        }
    }
}

impl Config {
    /// The challenge type (validated at load, so a loaded config always has one).
    pub fn acme_challenge(&self) -> AcmeChallenge {
        AcmeChallenge::parse(&self.tls_letsencrypt_challenge_type).unwrap_or(AcmeChallenge::Http01)
    }

    /// The ACME directory URL, Let's Encrypt when `acme_url` is empty (as autocert does).
    pub fn acme_directory(&self) -> &str {
        match self.acme_url.trim() {
            "" => LETS_ENCRYPT_DIRECTORY,
            url => url,
        }
    }

    /// `tls_letsencrypt_cache_dir`, a relative path taken from the config file's directory
    /// (headscale's `AbsolutePathFromConfigPath`).
    pub fn acme_cache_dir(&self) -> std::path::PathBuf {
        let dir = &self.tls_letsencrypt_cache_dir;
        match self.source_path.as_ref().and_then(|p| p.parent()) {
            Some(base) if dir.is_relative() && !dir.as_os_str().is_empty() => base.join(dir),
            _ => dir.clone(),
        }
    }

    /// headscale's ACME rules (both certificate sources refused, challenge type), and ours:
    /// a hostname that is a plain DNS name, an `https://` directory, a usable HTTP-01 listener.
    pub(super) fn validate_acme(&self) -> Result<Vec<String>, ConfigError> {
        let mut warnings = Vec::new();
        if AcmeChallenge::parse(&self.tls_letsencrypt_challenge_type).is_none() {
            return Err(self.invalid(
                "tls_letsencrypt_challenge_type",
                format!(
                    "{:?} is not supported: use HTTP-01 or TLS-ALPN-01",
                    self.tls_letsencrypt_challenge_type
                ),
            ));
        }
        let Some(hostname) = &self.tls_letsencrypt_hostname else {
            return Ok(warnings);
        };
        if self.tls_cert_path.is_some() || self.tls_key_path.is_some() {
            return Err(self.invalid(
                "tls_letsencrypt_hostname",
                "set either tls_letsencrypt_hostname or tls_cert_path/tls_key_path, not both",
            ));
        }
        check_hostname(hostname).map_err(|problem| {
            self.invalid(
                "tls_letsencrypt_hostname",
                format!("{hostname:?} {problem}"),
            )
        })?;
        if self.tls_letsencrypt_cache_dir.as_os_str().is_empty() {
            return Err(self.invalid(
                "tls_letsencrypt_cache_dir",
                "must be set when tls_letsencrypt_hostname is set",
            ));
        }
        let directory = self.acme_directory();
        if !directory.starts_with("https://") || directory.len() == "https://".len() {
            return Err(self.invalid(
                "acme_url",
                format!("{directory:?} must be an https:// ACME directory URL"),
            ));
        }
        let email = self.acme_email.trim();
        if !email.is_empty() && (!email.contains('@') || email.contains(char::is_whitespace)) {
            return Err(self.invalid("acme_email", format!("{email:?} is not an email address")));
        }
        match self.acme_challenge() {
            AcmeChallenge::Http01 => {
                split_listen(&self.tls_letsencrypt_listen).map_err(|problem| {
                    self.invalid(
                        "tls_letsencrypt_listen",
                        format!("{:?} {problem}", self.tls_letsencrypt_listen),
                    )
                })?;
            }
            AcmeChallenge::TlsAlpn01 => {
                if !self.listen_addr.ends_with(":443") {
                    warnings.push(format!(
                        "tls_letsencrypt_challenge_type TLS-ALPN-01 needs the CA to reach \
                         listen_addr on port 443, but listen_addr is {:?}: fine only if \
                         something forwards port 443 to it",
                        self.listen_addr
                    ));
                }
            }
        }
        if !self.server_url.starts_with("https://") {
            warnings.push(format!(
                "tls_letsencrypt_hostname is set (TLS on listen_addr) but server_url {:?} \
                 does not start with https://",
                self.server_url
            ));
        }
        Ok(warnings)
    }
}

/// `host:port` in Go's syntax: an empty host means every address; the port may be a number
/// or `http`/`https`. Returns the host (without brackets) and the port.
pub fn split_listen(addr: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(bracketed) = addr.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']').ok_or("has an unclosed '['")?;
        let port = after
            .strip_prefix(':')
            .ok_or("must be host:port, like :http or 0.0.0.0:80")?;
        (inside, port)
    } else {
        match addr.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("must put an IPv6 address in brackets, like [::]:80".into())
            }
            Some(split) => split,
            None => return Err("must be host:port, like :http or 0.0.0.0:80".into()),
        }
    };
    let port = match port {
        "http" => 80,
        "https" => 443,
        digits => digits
            .parse::<u16>()
            .map_err(|_| format!("has an invalid port {digits:?}"))?,
    };
    Ok((host.to_string(), port))
}

/// A DNS name a CA can issue for: ASCII labels of letters, digits and `-`, at most 253
/// characters, no wildcard, no IP address, no port, no trailing dot.
fn check_hostname(name: &str) -> Result<(), &'static str> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err("is an IP address; ACME certificates here are for DNS names");
    }
    if name.is_empty() || name.len() > 253 {
        return Err("must be a DNS name of 1 to 253 characters");
    }
    for label in name.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err("is not a DNS name (letters, digits and '-' in dot-separated labels; no scheme, port or wildcard)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(yaml: &str) -> Result<crate::config::Loaded, ConfigError> {
        crate::config::load_str(yaml, Path::new("acme.yaml"), &|_| None)
    }

    fn error(yaml: &str) -> String {
        load(yaml).unwrap_err().to_string()
    }

    #[test]
    fn headscale_example_acme_keys_load_without_warnings() {
        // The ACME part of headscale 0.29.2's config-example.yaml, ACME off.
        let yaml = "acme_url: https://acme-v02.api.letsencrypt.org/directory\n\
                    acme_email: \"\"\n\
                    tls_letsencrypt_hostname: \"\"\n\
                    tls_letsencrypt_cache_dir: /var/lib/headscale/cache\n\
                    tls_letsencrypt_challenge_type: HTTP-01\n\
                    tls_letsencrypt_listen: \":http\"\n";
        let loaded = load(yaml).unwrap();
        assert!(
            loaded
                .warnings
                .iter()
                .all(|w| !w.contains("acme") && !w.contains("letsencrypt")),
            "{:?}",
            loaded.warnings
        );
        assert_eq!(loaded.config.tls_letsencrypt_hostname, None);
        assert_eq!(loaded.config.acme_challenge(), AcmeChallenge::Http01);
    }

    #[test]
    fn a_hostname_with_tls_alpn_loads_and_warns_like_headscale() {
        let yaml = "server_url: https://hs.example.com\n\
                    dns:\n  base_domain: tailnet.example.net\n\
                    listen_addr: 0.0.0.0:8443\n\
                    tls_letsencrypt_hostname: hs.example.com\n\
                    tls_letsencrypt_challenge_type: TLS-ALPN-01\n\
                    acme_url: \"\"\n\
                    acme_email: admin@example.com\n";
        let loaded = load(yaml).unwrap();
        let config = &loaded.config;
        assert_eq!(
            config.tls_letsencrypt_hostname.as_deref(),
            Some("hs.example.com")
        );
        assert_eq!(config.acme_challenge(), AcmeChallenge::TlsAlpn01);
        assert_eq!(config.acme_directory(), LETS_ENCRYPT_DIRECTORY);
        assert!(
            loaded.warnings.iter().any(|w| w.contains("port 443")),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn acme_and_certificate_files_together_are_refused() {
        let message = error(
            "tls_letsencrypt_hostname: hs.example.com\n\
             tls_cert_path: /etc/hs/cert.pem\n\
             tls_key_path: /etc/hs/key.pem\n",
        );
        assert!(message.contains("not both"), "{message}");
    }

    #[test]
    fn bad_acme_values_are_refused_naming_the_key() {
        for (yaml, key, words) in [
            (
                "tls_letsencrypt_challenge_type: DNS-01\n",
                "tls_letsencrypt_challenge_type",
                "HTTP-01 or TLS-ALPN-01",
            ),
            (
                "tls_letsencrypt_hostname: https://hs.example.com\n",
                "tls_letsencrypt_hostname",
                "not a DNS name",
            ),
            (
                "tls_letsencrypt_hostname: \"*.example.com\"\n",
                "tls_letsencrypt_hostname",
                "not a DNS name",
            ),
            (
                "tls_letsencrypt_hostname: 192.0.2.1\n",
                "tls_letsencrypt_hostname",
                "IP address",
            ),
            (
                "tls_letsencrypt_hostname: hs.example.com\nacme_url: http://ca.example/dir\n",
                "acme_url",
                "https://",
            ),
            (
                "tls_letsencrypt_hostname: hs.example.com\nacme_email: nobody\n",
                "acme_email",
                "not an email",
            ),
            (
                "tls_letsencrypt_hostname: hs.example.com\ntls_letsencrypt_listen: \"80\"\n",
                "tls_letsencrypt_listen",
                "host:port",
            ),
            (
                "tls_letsencrypt_hostname: hs.example.com\ntls_letsencrypt_listen: \":web\"\n",
                "tls_letsencrypt_listen",
                "invalid port",
            ),
            (
                "tls_letsencrypt_hostname: hs.example.com\ntls_letsencrypt_cache_dir: \"\"\n",
                "tls_letsencrypt_cache_dir",
                "must be set",
            ),
        ] {
            let message = error(yaml);
            assert!(
                message.contains(key) && message.contains(words),
                "{yaml:?} → {message}"
            );
        }
    }

    #[test]
    fn a_relative_cache_dir_is_beside_the_config_file() {
        let config = crate::config::load_str(
            "tls_letsencrypt_cache_dir: cache\n",
            Path::new("/etc/headscale/config.yaml"),
            &|_| None,
        )
        .unwrap()
        .config;
        assert_eq!(config.acme_cache_dir(), Path::new("/etc/headscale/cache"));
        let absolute = load("tls_letsencrypt_cache_dir: /var/lib/hs/cache\n")
            .unwrap()
            .config;
        assert_eq!(absolute.acme_cache_dir(), Path::new("/var/lib/hs/cache"));
    }

    #[test]
    fn go_listen_addresses_split_like_go() {
        assert_eq!(split_listen(":http").unwrap(), (String::new(), 80));
        assert_eq!(split_listen(":https").unwrap(), (String::new(), 443));
        assert_eq!(
            split_listen("127.0.0.1:8080").unwrap(),
            ("127.0.0.1".into(), 8080)
        );
        assert_eq!(split_listen("[::1]:80").unwrap(), ("::1".into(), 80));
        assert!(split_listen("::1:80").is_err());
        assert!(split_listen("localhost").is_err());
    }
}
