//! The `webhooks:` section (ours, not headscale's): endpoints the config file declares, each
//! with a name, a URL, a file holding its signing secret and the event types it receives.
//! Endpoints can also be added with `headscale webhooks create` (recorded in the log); both
//! kinds are delivered the same way (`src/webhooks/`).

use crate::core::command::webhooks::{check_kinds, check_url};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// At most this many endpoints in the config file.
pub const MAX_CONFIG_WEBHOOKS: usize = 20;
/// Longest endpoint name (`[a-z][a-z0-9-]*`).
pub const MAX_WEBHOOK_NAME_LEN: usize = 32;

/// One configured endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names it in `webhooks list` and keys its delivery cursor: renaming it starts over
    /// from the head of the log.
    pub name: String,
    /// `http://` or `https://`.
    pub url: String,
    /// A file holding the signing secret (its whole content, trimmed); keep it 0600.
    pub secret_path: PathBuf,
    /// Event types (`nodeCreated`, ...), or `["*"]` for all.
    pub events: Vec<String>,
}

/// Checks every configured endpoint: a valid, unique name, a valid URL, known event types
/// and at most [`MAX_CONFIG_WEBHOOKS`] of them. The error names the entry.
pub fn check(webhooks: &[WebhookConfig]) -> Result<(), (String, String)> {
    if webhooks.len() > MAX_CONFIG_WEBHOOKS {
        return Err((
            "webhooks".into(),
            format!(
                "{} endpoints configured; at most {MAX_CONFIG_WEBHOOKS} are accepted",
                webhooks.len()
            ),
        ));
    }
    for (i, hook) in webhooks.iter().enumerate() {
        let key = |field: &str| format!("webhooks[{i}].{field}");
        let name = &hook.name;
        if !name.starts_with(|c: char| c.is_ascii_lowercase())
            || name.len() > MAX_WEBHOOK_NAME_LEN
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err((
                key("name"),
                format!(
                    "{name:?} must be 1 to {MAX_WEBHOOK_NAME_LEN} characters of a-z, 0-9 and -, \
                     starting with a letter (numbers name CLI-made endpoints)"
                ),
            ));
        }
        if webhooks[..i].iter().any(|other| other.name == *name) {
            return Err((key("name"), format!("{name:?} is used by two endpoints")));
        }
        check_url(&hook.url).map_err(|message| (key("url"), message))?;
        if hook.secret_path.as_os_str().is_empty() {
            return Err((
                key("secret_path"),
                "must name the file holding the signing secret".into(),
            ));
        }
        check_kinds(&hook.events).map_err(|message| (key("events"), message))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;
    use std::path::Path;

    fn load(webhooks: &str) -> Result<crate::config::Config, String> {
        load_str(
            &format!("webhooks:\n{webhooks}"),
            Path::new("test.yaml"),
            &|_| None,
        )
        .map(|loaded| loaded.config)
        .map_err(|e| e.to_string())
    }

    fn entry(name: &str, url: &str, events: &str) -> String {
        format!("  - name: {name}\n    url: {url}\n    secret_path: /s\n    events: {events}\n")
    }

    #[test]
    fn endpoints_load_and_bad_ones_are_named() {
        let config = load(&entry("siem", "https://e.com/h", "[nodeCreated]")).unwrap();
        assert_eq!(config.webhooks.len(), 1);
        assert_eq!(config.webhooks[0].events, vec!["nodeCreated".to_string()]);

        let unknown = load(&entry("siem", "https://e.com/h", "[nodeExploded]")).unwrap_err();
        assert!(
            unknown.contains("webhooks[0].events") && unknown.contains("nodeExploded"),
            "{unknown}"
        );
        let url = load(&entry("siem", "gopher://e.com", "['*']")).unwrap_err();
        assert!(url.contains("webhooks[0].url"), "{url}");
        let name = load(&entry("1st", "https://e.com/h", "['*']")).unwrap_err();
        assert!(name.contains("webhooks[0].name"), "{name}");
        let twice = [
            entry("a", "https://e.com/h", "['*']"),
            entry("a", "https://e.com/i", "['*']"),
        ];
        assert!(load(&twice.concat()).unwrap_err().contains("used by two"));
        let many: String = (0..=super::MAX_CONFIG_WEBHOOKS)
            .map(|i| entry(&format!("e{i}"), "https://e.com/h", "['*']"))
            .collect();
        assert!(load(&many).unwrap_err().contains("at most"));
        let extra = load("  - name: a\n    url: https://e.com\n    secret_path: /s\n    events: ['*']\n    secret: x\n")
            .unwrap_err();
        assert!(extra.contains("secret"), "{extra}");
    }
}
