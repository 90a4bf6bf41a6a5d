//! HuJSON: see `src/core/policy/RULES.md` ("HuJSON").

use crate::support::*;
use headscale::core::policy::Policy;

#[test]
fn comments_and_trailing_commas_are_accepted() {
    accepted("// policy\n{\n  \"hosts\": {\"a\": \"100.64.0.1\", /* b */},\n}\n");
}

#[test]
fn a_raw_control_character_in_a_string_is_refused_at_the_strings_opening_quote() {
    // Go's JSON (Tailscale's HuJSON validates strings with it) refuses raw bytes < 0x20.
    let error = refused(
        "{\"hosts\": {\"a\tb\": \"100.64.0.1\"}}",
        "line 1, column 12: invalid literal: \"a\\tb\"",
    );
    assert!(error.starts_with("policy is not valid HuJSON: "), "{error}");
    refused(
        "{\n  \"acls\": [],\n  \"hosts\": {\"x\": \"100.64.0.1\n\"}}",
        "line 3, column 18: invalid literal: \"100.64.0.1\\n\"",
    );
    for control in ['\r', '\0', '\u{1f}'] {
        let text = format!("{{\"hosts\": {{\"a{control}\": \"100.64.0.1\"}}}}");
        let error = Policy::parse(&text).unwrap_err();
        assert!(
            error.contains("line 1, column 12: invalid literal: \"a\\"),
            "{error}"
        );
        assert!(!error.chars().any(char::is_control), "{error:?}");
    }
}

#[test]
fn escaped_control_characters_in_strings_are_accepted() {
    accepted(r#"{"hosts": {"a\tb\n\u0001": "100.64.0.1"}}"#);
}

#[test]
fn del_and_c1_control_characters_in_strings_are_accepted() {
    accepted("{\"hosts\": {\"a\u{7f}b\u{85}\": \"100.64.0.1\"}}");
}

#[test]
fn comments_may_contain_anything() {
    accepted("// a\tb \"\u{1}\n{/* \"\t\n */ \"hosts\": {}}");
}
