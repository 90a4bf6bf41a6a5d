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
    candidates(wanted)
        .find(|candidate| !taken.contains(candidate.as_str()))
        .unwrap_or_else(|| wanted.to_string())
}

/// `(base, n)` when `name` is `base-n` as `unique_name` writes it (`n >= 1`, decimal, no
/// leading zero): how the state's index files given names so the next free suffix is one
/// lookup.
pub fn split_suffix(name: &str) -> Option<(&str, u64)> {
    let (base, digits) = name.rsplit_once('-')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, digits.parse().ok()?))
}

/// What `unique_name` returns, answered from an index rather than by trying every candidate:
/// `taken` says whether a name is in use, `free_suffix(base)` is the lowest `n >= 1` for
/// which `base-n` is not. Only a name so long that a suffix must cut it falls back to trying
/// candidates one by one.
pub fn unique_name_indexed(
    wanted: &str,
    taken: impl Fn(&str) -> bool,
    free_suffix: impl Fn(&str) -> u64,
) -> String {
    if !taken(wanted) {
        return wanted.to_string();
    }
    // While `wanted` and the suffix fit in a label, every candidate up to `n` is
    // `base-1`, `base-2`, ... (a shorter suffix fits too), all taken below `n`.
    let base = wanted.trim_end_matches('-');
    let n = free_suffix(base);
    let suffix = format!("-{n}");
    if wanted.chars().count() + suffix.len() <= MAX_LABEL_LEN {
        return format!("{base}{suffix}");
    }
    candidates(wanted)
        .find(|candidate| !taken(candidate))
        .unwrap_or_else(|| wanted.to_string())
}

/// `wanted-1`, `wanted-2`, ..., cut so that each fits in a label.
fn candidates(wanted: &str) -> impl Iterator<Item = String> + '_ {
    (1..).map(|n| {
        let suffix = format!("-{n}");
        let stem: String = wanted.chars().take(MAX_LABEL_LEN - suffix.len()).collect();
        format!("{}{}", stem.trim_end_matches('-'), suffix)
    })
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The indexed de-duplication names a node exactly as trying every candidate does,
        /// for short and label-filling names, with suffixes taken in runs and with gaps.
        #[test]
        fn indexed_unique_name_matches_the_scan(
            stem in proptest::sample::select(vec!["web".to_string(), "web-".into(), "a-1".into(), "x".repeat(58), "y".repeat(61), "z".repeat(63)]),
            suffixes in proptest::collection::vec(0u64..30, 0..30),
            others in proptest::collection::vec("[a-z]{1,3}(-[0-9]{1,2})?", 0..5),
            wanted_taken in proptest::bool::ANY,
        ) {
            let wanted = stem.to_string();
            let mut names: Vec<String> = suffixes
                .iter()
                .map(|n| candidates(&wanted).nth(*n as usize).unwrap())
                .chain(others)
                .collect();
            if wanted_taken {
                names.push(wanted.clone());
            }
            let taken: HashSet<&str> = names.iter().map(String::as_str).collect();
            let free = |base: &str| {
                (1..).find(|n| !names.iter().any(|name| split_suffix(name) == Some((base, *n)))).unwrap()
            };
            proptest::prop_assert_eq!(
                unique_name_indexed(&wanted, |n| taken.contains(n), free),
                unique_name(&wanted, &taken)
            );
        }
    }

    #[test]
    fn suffixes_split_as_written() {
        assert_eq!(split_suffix("web-12"), Some(("web", 12)));
        assert_eq!(split_suffix("a-b-3"), Some(("a-b", 3)));
        assert_eq!(split_suffix("web-012"), None);
        assert_eq!(split_suffix("web-0"), None);
        assert_eq!(split_suffix("web-"), None);
        assert_eq!(split_suffix("web"), None);
        assert_eq!(split_suffix("web-+1"), None);
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
