//! OIDC logins, the rules part (pure): which claims count, who may log in, which user a
//! login is, and what that user's profile becomes. The shell (`src/oidc/`) verifies the ID
//! token and fetches userinfo; everything it then decides goes through here, so the rules are
//! the same for a login today and when the log is replayed. headscale 0.29's semantics.

use super::naming;

/// What the identity provider says about the person logging in (ID token claims, with the
/// userinfo endpoint's merged in by [`Claims::merge_userinfo`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub issuer: String,
    pub subject: String,
    /// `name`.
    pub name: String,
    /// `preferred_username`.
    pub preferred_username: String,
    pub email: String,
    pub email_verified: bool,
    /// `picture`.
    pub picture: String,
    /// `groups`; `None` when the claim is absent (userinfo's then replaces nothing).
    pub groups: Option<Vec<String>>,
}

impl Claims {
    /// headscale's merge: a userinfo value wins when it is not empty, `email_verified` is true
    /// if either says so, and userinfo's `groups` (when present) replace the token's. Userinfo
    /// about another subject is ignored (the caller checks; headscale does the same).
    pub fn merge_userinfo(&mut self, info: &Claims) {
        fn or(info: &str, token: &mut String) {
            if !info.is_empty() {
                *token = info.to_string();
            }
        }
        or(&info.email, &mut self.email);
        self.email_verified |= info.email_verified;
        or(&info.preferred_username, &mut self.preferred_username);
        or(&info.name, &mut self.name);
        or(&info.picture, &mut self.picture);
        if info.groups.is_some() {
            self.groups = info.groups.clone();
        }
    }

    /// The key a user is found by: issuer and subject, as headscale's `Identifier()` (so users
    /// imported from headscale are found again).
    pub fn identifier(&self) -> String {
        identifier(&self.issuer, &self.subject)
    }

    /// Whether the email may be believed (and so used for rules and the profile).
    fn email_trusted(&self, rules: &LoginRules) -> bool {
        !rules.email_verified_required || self.email_verified
    }
}

/// Who may log in (the config's `oidc.allowed_*` and `email_verified_required`), carried in
/// the command so that the decision is made by `decide` from what the shell passed in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginRules {
    pub allowed_domains: Vec<String>,
    pub allowed_users: Vec<String>,
    pub allowed_groups: Vec<String>,
    pub email_verified_required: bool,
}

/// Why a login was refused; the text is headscale's (shown on the refusal page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unauthorised group")]
    Group,
    #[error("unverified email")]
    UnverifiedEmail,
    #[error("unauthorised domain")]
    Domain,
    #[error("unauthorised user")]
    User,
    /// Our own bound: an identity we will not store.
    #[error("identity too long")]
    IdentityTooLong,
}

/// The longest `issuer/subject` we keep (OIDC allows 255 ASCII characters of subject; the
/// issuer is ours to configure).
pub const MAX_IDENTIFIER_BYTES: usize = 1024;
/// Profile strings from the provider are cut to these (they become events).
pub const MAX_PROFILE_BYTES: usize = 256;
pub const MAX_PICTURE_URL_BYTES: usize = 2048;

/// headscale's `doOIDCAuthorization`: the group rule always; email rules only when the email
/// can be trusted (otherwise they refuse as "unverified email").
pub fn check(rules: &LoginRules, claims: &Claims) -> Result<(), Refusal> {
    if claims.identifier().len() > MAX_IDENTIFIER_BYTES {
        return Err(Refusal::IdentityTooLong);
    }
    if !rules.allowed_groups.is_empty() {
        let groups = claims.groups.as_deref().unwrap_or_default();
        if !rules.allowed_groups.iter().any(|g| groups.contains(g)) {
            return Err(Refusal::Group);
        }
    }
    let email_rules = !rules.allowed_domains.is_empty() || !rules.allowed_users.is_empty();
    if email_rules && !claims.email_trusted(rules) {
        return Err(Refusal::UnverifiedEmail);
    }
    if !rules.allowed_domains.is_empty() {
        let domain = claims.email.rsplit_once('@').map(|(_, d)| d);
        if !domain.is_some_and(|d| rules.allowed_domains.iter().any(|a| a == d)) {
            return Err(Refusal::Domain);
        }
    }
    if !rules.allowed_users.is_empty() && !rules.allowed_users.contains(&claims.email) {
        return Err(Refusal::User);
    }
    Ok(())
}

/// The profile a login gives its user (headscale's `FromClaim`): the preferred username when
/// it is a valid user name, the email only when trusted and well-formed, the display name
/// and picture as given (cut to their bounds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// `None`: the claims hold no usable name (the user keeps, or is given, another).
    pub name: Option<String>,
    pub display_name: String,
    pub email: String,
    pub picture_url: String,
}

pub fn profile(rules: &LoginRules, claims: &Claims) -> Profile {
    let name =
        Some(claims.preferred_username.clone()).filter(|n| naming::validate_user_name(n).is_ok());
    let email = if claims.email_trusted(rules) && plausible_email(&claims.email) {
        claims.email.clone()
    } else {
        String::new()
    };
    Profile {
        name,
        display_name: cut(&claims.name, MAX_PROFILE_BYTES),
        email: cut(&email, MAX_PROFILE_BYTES),
        picture_url: cut(&claims.picture, MAX_PICTURE_URL_BYTES),
    }
}

/// A name for a new user whose claims give none that is free: the email when it is a valid,
/// unused user name, else `oidc-` and a digest-like suffix of the identifier (stable, so the
/// same person gets the same fallback). headscale would leave the name empty; ours must be
/// a valid, unique name because admins and policies address users by it.
pub fn fallback_name(profile: &Profile, identifier: &str, taken: impl Fn(&str) -> bool) -> String {
    if let Some(name) = &profile.name {
        if !taken(name) {
            return name.clone();
        }
    }
    if naming::validate_user_name(&profile.email).is_ok() && !taken(&profile.email) {
        return profile.email.clone();
    }
    // FNV-1a: stable across versions and platforms (no std hasher), short, not a secret.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in identifier.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let base = format!("oidc-{:012x}", hash & 0xffff_ffff_ffff);
    let mut candidate = base.clone();
    let mut n = 2;
    while taken(&candidate) {
        candidate = format!("{base}-{n}");
        n += 1;
    }
    candidate
}

/// `local@domain` with something on both sides (headscale parses it as an RFC 5322 address;
/// this is the part of that which matters for rules and display).
fn plausible_email(email: &str) -> bool {
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// headscale's `Identifier()` + `CleanIdentifier`: `issuer/subject` with the issuer's
/// trailing and the subject's leading slash dropped, then empty and blank path segments
/// removed and the scheme lower-cased.
pub fn identifier(issuer: &str, subject: &str) -> String {
    let joined = match (issuer.is_empty(), subject.is_empty()) {
        (true, true) => return String::new(),
        (true, false) => subject.to_string(),
        (false, true) => issuer.to_string(),
        (false, false) => format!(
            "{}/{}",
            issuer.strip_suffix('/').unwrap_or(issuer),
            subject.strip_prefix('/').unwrap_or(subject)
        ),
    };
    clean_identifier(&joined)
}

fn clean_segments(path: &str) -> Vec<&str> {
    path.split('/')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn clean_identifier(identifier: &str) -> String {
    let identifier = identifier.trim();
    if let Some((scheme, rest)) = identifier.split_once("://") {
        let valid_scheme = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if valid_scheme {
            let (before_tail, tail) = match rest.find(['?', '#']) {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let (host, path) = before_tail.split_once('/').unwrap_or((before_tail, ""));
            let segments = clean_segments(path);
            let path = if segments.is_empty() {
                String::new()
            } else {
                format!("/{}", segments.join("/"))
            };
            return format!("{}://{host}{path}{tail}", scheme.to_ascii_lowercase());
        }
    }
    clean_segments(identifier).join("/")
}

/// The most groups a login's claims keep (the rest are dropped before the rules run).
pub const MAX_GROUPS: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claims(email: &str, verified: bool) -> Claims {
        Claims {
            issuer: "https://idp.example/".into(),
            subject: "u1".into(),
            email: email.into(),
            email_verified: verified,
            ..Claims::default()
        }
    }

    fn rules(domains: &[&str], users: &[&str], groups: &[&str], verified: bool) -> LoginRules {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        LoginRules {
            allowed_domains: own(domains),
            allowed_users: own(users),
            allowed_groups: own(groups),
            email_verified_required: verified,
        }
    }

    #[test]
    fn identifiers_match_headscale() {
        for (issuer, subject, want) in [
            ("https://idp.example/", "u1", "https://idp.example/u1"),
            ("https://idp.example", "/u1", "https://idp.example/u1"),
            (
                "HTTPS://idp.example//realms/x/",
                " u1 ",
                "https://idp.example/realms/x/u1",
            ),
            ("http://localhost:9998/", "id1", "http://localhost:9998/id1"),
            ("oidc", "sub", "oidc/sub"),
            ("", "sub", "sub"),
            ("https://idp.example", "", "https://idp.example"),
            ("", "", ""),
            ("https://idp.example", "..", "https://idp.example/.."),
        ] {
            assert_eq!(identifier(issuer, subject), want, "{issuer:?} {subject:?}");
        }
    }

    #[test]
    fn group_rule_applies_always() {
        let r = rules(&[], &[], &["admins"], true);
        let mut c = claims("a@b.c", false);
        assert_eq!(check(&r, &c), Err(Refusal::Group));
        c.groups = Some(vec!["users".into(), "admins".into()]);
        assert_eq!(check(&r, &c), Ok(()));
    }

    #[test]
    fn email_rules_need_a_verified_email_when_required() {
        let r = rules(&["example.com"], &[], &[], true);
        assert_eq!(
            check(&r, &claims("a@example.com", false)),
            Err(Refusal::UnverifiedEmail)
        );
        assert_eq!(check(&r, &claims("a@example.com", true)), Ok(()));
        assert_eq!(
            check(&r, &claims("a@other.com", true)),
            Err(Refusal::Domain)
        );
        assert_eq!(check(&r, &claims("no-at-sign", true)), Err(Refusal::Domain));
        // Not required: the email counts as it is.
        let r = rules(&["example.com"], &[], &[], false);
        assert_eq!(check(&r, &claims("a@example.com", false)), Ok(()));
        // No email rules: an unverified email refuses nothing.
        let r = rules(&[], &[], &[], true);
        assert_eq!(check(&r, &claims("a@example.com", false)), Ok(()));
    }

    #[test]
    fn allowed_users_match_the_whole_email() {
        let r = rules(&[], &["alice@example.com"], &[], true);
        assert_eq!(check(&r, &claims("alice@example.com", true)), Ok(()));
        assert_eq!(
            check(&r, &claims("bob@example.com", true)),
            Err(Refusal::User)
        );
        assert_eq!(
            check(&r, &claims("ALICE@example.com", true)),
            Err(Refusal::User)
        );
    }

    #[test]
    fn userinfo_merges_as_headscale_does() {
        let mut token = Claims {
            name: "Token Name".into(),
            groups: Some(vec!["a".into()]),
            ..claims("", false)
        };
        token.merge_userinfo(&Claims {
            email: "u@example.com".into(),
            email_verified: true,
            preferred_username: "user1".into(),
            groups: None,
            ..Claims::default()
        });
        assert_eq!(token.email, "u@example.com");
        assert!(token.email_verified);
        assert_eq!(token.name, "Token Name");
        assert_eq!(token.preferred_username, "user1");
        assert_eq!(token.groups, Some(vec!["a".into()]));
        token.merge_userinfo(&Claims {
            groups: Some(vec![]),
            ..Claims::default()
        });
        assert_eq!(token.groups, Some(vec![]));
    }

    #[test]
    fn profile_keeps_only_trusted_and_valid_parts() {
        let r = rules(&[], &[], &[], true);
        let mut c = claims("u@example.com", false);
        c.preferred_username = "1bad".into();
        c.name = "N".repeat(1000);
        let p = profile(&r, &c);
        assert_eq!(p.name, None);
        assert_eq!(p.email, "");
        assert_eq!(p.display_name.len(), MAX_PROFILE_BYTES);
        c.email_verified = true;
        c.preferred_username = "user1".into();
        let p = profile(&r, &c);
        assert_eq!(p.name.as_deref(), Some("user1"));
        assert_eq!(p.email, "u@example.com");
    }

    #[test]
    fn fallback_names_are_valid_unique_and_stable() {
        let p = Profile {
            name: Some("alice".into()),
            display_name: String::new(),
            email: "alice@example.com".into(),
            picture_url: String::new(),
        };
        assert_eq!(fallback_name(&p, "id", |_| false), "alice");
        assert_eq!(
            fallback_name(&p, "id", |n| n == "alice"),
            "alice@example.com"
        );
        let a = fallback_name(&p, "https://i/x", |n| n.starts_with("alice"));
        assert!(a.starts_with("oidc-"), "{a}");
        assert_eq!(
            a,
            fallback_name(&p, "https://i/x", |n| n.starts_with("alice"))
        );
        let b = fallback_name(&p, "https://i/x", |n| n.starts_with("alice") || n == a);
        assert_eq!(b, format!("{a}-2"));
        assert!(naming::validate_user_name(&b).is_ok());
    }

    proptest! {
        /// Cleaning is idempotent and never leaves empty segments (so two spellings of one
        /// identity cannot become two users).
        #[test]
        fn identifier_cleaning_is_idempotent(issuer in "[a-zA-Z:/. ]{0,20}", subject in "[a-z0-9/ .]{0,12}") {
            let once = identifier(&issuer, &subject);
            prop_assert_eq!(clean_identifier(&once), once.clone());
            prop_assert!(!once.contains("//") || once.contains("://"));
        }

        /// No claims make `check` or `profile` panic, and a refusal never depends on the
        /// display name or picture.
        #[test]
        fn rules_ignore_the_display_parts(name in ".{0,40}", picture in ".{0,40}", verified: bool) {
            let r = rules(&["example.com"], &[], &[], true);
            let mut c = claims("a@example.com", verified);
            let before = check(&r, &c);
            c.name = name;
            c.picture = picture;
            prop_assert_eq!(check(&r, &c), before);
            let _ = profile(&r, &c);
        }
    }
}
