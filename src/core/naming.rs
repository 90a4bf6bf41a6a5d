//! Names: user names, tags, and MagicDNS labels for nodes (`<given_name>.<base_domain>`).
//! The rules follow headscale 0.29 and Tailscale's DNS label rules.

use std::collections::HashSet;

/// The longest DNS label.
pub const MAX_LABEL_LEN: usize = 63;
/// The longest fully qualified name.
pub const MAX_FQDN_LEN: usize = 255;

/// Why a user name was refused.
pub fn validate_user_name(name: &str) -> Result<(), String> {
    if name.chars().count() < 2 {
        return Err("must be at least 2 characters long".into());
    }
    if name.len() > MAX_FQDN_LEN {
        return Err(format!("must be at most {MAX_FQDN_LEN} characters long"));
    }
    if !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err("must start with a letter".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '@' | '+')))
    {
        return Err(format!(
            "contains {bad:?}; only letters, digits, '-', '.', '_', '+' and '@' are allowed"
        ));
    }
    if name.matches('@').count() > 1 {
        return Err("may contain '@' at most once".into());
    }
    Ok(())
}

/// Checks a tag's form: `tag:` followed by a name that starts with a letter and holds only
/// letters, digits and dashes.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    let Some(name) = tag.strip_prefix("tag:") else {
        return Err(format!("tag {tag:?} must start with \"tag:\""));
    };
    if !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err(format!(
            "tag {tag:?}: the name after \"tag:\" must start with a letter"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!(
            "tag {tag:?} contains {bad:?}; only letters, digits and '-' are allowed"
        ));
    }
    Ok(())
}

/// Sorted, deduplicated copy of a tag list (tags are a set; order in the log is canonical).
pub fn normalize_tags(tags: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = tags.iter().map(|t| t.trim().to_string()).collect();
    tags.sort();
    tags.dedup();
    tags
}

/// Turns a client's hostname into a DNS label: lower case, `[a-z0-9-]` only, no leading or
/// trailing dash, at most 63 characters; `node` when nothing usable is left.
pub fn sanitize_hostname(hostname: &str) -> String {
    let mut label = String::with_capacity(hostname.len());
    for c in hostname.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            label.push(c);
        } else if c.is_ascii() && !label.ends_with('-') {
            label.push('-');
        }
    }
    let label = label.trim_matches('-');
    let mut label: String = label.chars().take(MAX_LABEL_LEN).collect();
    while label.ends_with('-') {
        label.pop();
    }
    if label.is_empty() {
        "node".to_string()
    } else {
        label
    }
}

/// Checks an admin-given name: it must already be a valid DNS label.
pub fn validate_given_name(name: &str, base_domain: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_LABEL_LEN {
        return Err(format!("must be at most {MAX_LABEL_LEN} characters long"));
    }
    if sanitize_hostname(name) != name {
        return Err(format!(
            "is not a valid DNS label (use lower-case letters, digits and '-', e.g. {:?})",
            sanitize_hostname(name)
        ));
    }
    if name.len() + 1 + base_domain.len() > MAX_FQDN_LEN {
        return Err(format!(
            "makes the FQDN longer than {MAX_FQDN_LEN} characters"
        ));
    }
    Ok(())
}

/// `wanted` if free, else the first of `wanted-1`, `wanted-2`, … that is.
pub fn unique_name(wanted: &str, taken: &HashSet<&str>) -> String {
    if !taken.contains(wanted) {
        return wanted.to_string();
    }
    (1..)
        .map(|n| {
            let suffix = format!("-{n}");
            let stem: String = wanted.chars().take(MAX_LABEL_LEN - suffix.len()).collect();
            format!("{}{}", stem.trim_end_matches('-'), suffix)
        })
        .find(|candidate| !taken.contains(candidate.as_str()))
        .unwrap_or_else(|| wanted.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_become_labels() {
        assert_eq!(sanitize_hostname("My Laptop.local"), "my-laptop-local");
        assert_eq!(sanitize_hostname("--x--"), "x");
        assert_eq!(sanitize_hostname(""), "node");
        assert_eq!(sanitize_hostname("日本"), "node");
        assert_eq!(sanitize_hostname(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn collisions_get_suffixes() {
        let taken: HashSet<&str> = ["web", "web-1"].into_iter().collect();
        assert_eq!(unique_name("web", &taken), "web-2");
        assert_eq!(unique_name("db", &taken), "db");
    }

    #[test]
    fn user_names() {
        assert!(validate_user_name("alice").is_ok());
        assert!(validate_user_name("alice@example.com").is_ok());
        assert!(validate_user_name("a").is_err());
        assert!(validate_user_name("1alice").is_err());
        assert!(validate_user_name("al ice").is_err());
        assert!(validate_user_name("a@b@c").is_err());
    }

    #[test]
    fn tags() {
        assert!(validate_tag("tag:web-1").is_ok());
        assert!(validate_tag("web").is_err());
        assert!(validate_tag("tag:").is_err());
        assert!(validate_tag("tag:we b").is_err());
    }
}
