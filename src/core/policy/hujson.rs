//! HuJSON (JSON with comments and trailing commas, Tailscale's policy syntax) to JSON.
//! Parsing is the `jsonc-parser` crate's, restricted to exactly what HuJSON adds: no
//! unquoted keys, single quotes or hex numbers, so a policy we accept is one Tailscale
//! accepts too.

use serde_json::Value;

/// Policies larger than this are refused before parsing (a policy is a few KB; the
/// largest real ones are well under 1 MB).
pub const MAX_POLICY_BYTES: usize = 4 << 20;

/// Parses HuJSON text into a JSON value; errors name the line and column.
pub fn parse(text: &str) -> Result<Value, String> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(format!(
            "policy is {} bytes; the limit is {MAX_POLICY_BYTES}",
            text.len()
        ));
    }
    let options = jsonc_parser::ParseOptions {
        allow_comments: true,
        allow_trailing_commas: true,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    };
    if text.trim().is_empty() {
        return Err("policy is empty".into());
    }
    jsonc_parser::parse_to_serde_value::<Value>(text, &options)
        .map_err(|error| format!("policy is not valid HuJSON: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_trailing_commas() {
        let text =
            "// top\n{\n  \"acls\": [ /* none */ ],\n  \"hosts\": {\"a\": \"1.2.3.4\",},\n}\n";
        let value = parse(text).unwrap();
        assert_eq!(value["hosts"]["a"], "1.2.3.4");
    }

    #[test]
    fn errors_name_the_line() {
        let error = parse("{\n\"acls\": [\n  {,\n]}").unwrap_err();
        assert!(error.contains("line 3") || error.contains("3:"), "{error}");
        assert!(parse("{'a': 1}").is_err());
        assert!(parse("{a: 1}").is_err());
        assert!(parse("").is_err());
    }
}
