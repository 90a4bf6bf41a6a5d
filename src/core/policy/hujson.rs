//! HuJSON (JSON with comments and trailing commas, Tailscale's policy syntax) to JSON.
//! Parsing is the `jsonc-parser` crate's, restricted to exactly what HuJSON adds: no
//! unquoted keys, single quotes or hex numbers, so a policy we accept is one Tailscale
//! accepts too. One rule is checked by hand: a raw control character inside a string is
//! refused, as Go's JSON (which Tailscale's HuJSON library validates strings with) refuses it
//! and `jsonc-parser` does not.

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
    raw_control_in_string(text).map_err(|error| format!("policy is not valid HuJSON: {error}"))?;
    jsonc_parser::parse_to_serde_value::<Value>(text, &options)
        .map_err(|error| format!("policy is not valid HuJSON: {error}"))
}

/// Refuses the first string holding a raw byte below 0x20 (tab, newline, NUL, ...), with
/// Tailscale's wording: `line L, column C: invalid literal: "..."`, L:C being the string's
/// opening quote (1-based, columns in bytes). DEL and C1 controls are valid JSON and pass;
/// comments may hold anything. Other syntax errors are left to the parser.
fn raw_control_in_string(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    let (mut line, mut line_start) = (1usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                line += 1;
                line_start = i + 1;
                i += 1;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = text[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |e| i + 2 + e + 2);
                for (at, b) in bytes.iter().enumerate().take(end).skip(i) {
                    if *b == b'\n' {
                        line += 1;
                        line_start = at + 1;
                    }
                }
                i = end;
            }
            b'"' => {
                let (start, start_line, column) = (i, line, i - line_start + 1);
                let mut control = false;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    control |= bytes[i] < 0x20;
                    if bytes[i] == b'\n' {
                        line += 1;
                        line_start = i + 1;
                    }
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if i >= bytes.len() {
                    return Ok(()); // unterminated: the parser says so
                }
                i += 1;
                if control {
                    return Err(format!(
                        "line {start_line}, column {column}: invalid literal: {}",
                        &text[start..i]
                    ));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
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

    #[test]
    fn raw_controls_in_strings_are_refused_with_the_opening_quote_position() {
        let error = parse("{\"hosts\": {\n  \"a\tb\": \"1.2.3.4\"}}").unwrap_err();
        assert_eq!(
            error,
            "policy is not valid HuJSON: line 2, column 3: invalid literal: \"a\tb\""
        );
        let error = parse("{\"a\": \"x\ny\", \"b\": 1}").unwrap_err();
        assert!(
            error.ends_with("line 1, column 7: invalid literal: \"x\ny\""),
            "{error}"
        );
        // Escaped controls, DEL, C1 and anything in comments are fine.
        assert!(parse("{\"a\": \"\\t\\n\\u0001\\\"\"}").is_ok());
        assert!(parse("{\"a\": \"\u{7f}\u{85}\"}").is_ok());
        assert!(parse("// a\tb \"\n{/* \"\t\u{1}\n*/ \"a\": 1}").is_ok());
    }
}
