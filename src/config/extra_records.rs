//! The `dns.extra_records_path` file, parsed purely: headscale's format, a JSON array of
//! `{"name": "…", "type": "A" | "AAAA", "value": "…"}`. The file is written by scripts while
//! the server runs, so every problem becomes one error naming the entry, never a panic, and
//! the size is bounded before anything is parsed.
//!
//! Field names match case-insensitively and unknown fields are ignored, because headscale
//! decodes this file with Go's `encoding/json`, which does both; a file that works there
//! works here. Unlike headscale we check each record the way the client would use it (a
//! record the client silently drops is an error here, so a typo is seen at once).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{ExtraRecord, RecordType};

/// Larger files are refused unread: tens of thousands of records, far more than anyone
/// serves through MagicDNS, and every full map carries all of them.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// A DNS name including its final dot, as the client counts (`dnsname.ToFQDN`).
const MAX_NAME_BYTES: usize = 254;
const MAX_LABEL_BYTES: usize = 63;

/// Why an extra-records file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtraRecordsError {
    /// Zero bytes: usually a writer caught between truncating and writing.
    #[error("is empty (write [] for no records)")]
    Empty,
    #[error("is {size} bytes, more than the {MAX_FILE_BYTES} allowed")]
    TooLarge { size: u64 },
    #[error("is not valid JSON: {0}")]
    Json(String),
    #[error("must be a JSON array of records, not {0}")]
    NotAnArray(&'static str),
    #[error("entry {index}: {problem}")]
    Entry { index: usize, problem: String },
}

/// Parses the whole file. Exact duplicates are dropped (headscale keeps a set), the first
/// occurrence keeping its place, so the order clients see follows the file.
pub fn parse(bytes: &[u8]) -> Result<Vec<ExtraRecord>, ExtraRecordsError> {
    if bytes.is_empty() {
        return Err(ExtraRecordsError::Empty);
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ExtraRecordsError::TooLarge {
            size: bytes.len() as u64,
        });
    }
    // serde_json bounds nesting depth, so hostile input cannot exhaust the stack.
    let document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ExtraRecordsError::Json(e.to_string()))?;
    let serde_json::Value::Array(entries) = document else {
        return Err(ExtraRecordsError::NotAnArray(kind(&document)));
    };
    let mut records: Vec<ExtraRecord> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let record =
            entry_record(entry).map_err(|problem| ExtraRecordsError::Entry { index, problem })?;
        if !records.contains(&record) {
            records.push(record);
        }
    }
    Ok(records)
}

/// One array element as a record.
fn entry_record(entry: &serde_json::Value) -> Result<ExtraRecord, String> {
    let serde_json::Value::Object(fields) = entry else {
        return Err(format!(
            "must be an object with name, type and value, not {}",
            kind(entry)
        ));
    };
    let mut name = None;
    let mut record_type = None;
    let mut value = None;
    for (key, field) in fields {
        let slot = match key.to_ascii_lowercase().as_str() {
            "name" => &mut name,
            "type" => &mut record_type,
            "value" => &mut value,
            _ => continue,
        };
        if slot.is_some() {
            return Err(format!(
                "field {:?} is given twice",
                key.to_ascii_lowercase()
            ));
        }
        let serde_json::Value::String(text) = field else {
            return Err(format!(
                "field {:?} must be a string, not {}",
                key.to_ascii_lowercase(),
                kind(field)
            ));
        };
        *slot = Some(text.clone());
    }
    let name = name.ok_or("has no \"name\"")?;
    let record_type = match record_type.ok_or("has no \"type\" (A or AAAA)")?.as_str() {
        "A" => RecordType::A,
        "AAAA" => RecordType::Aaaa,
        other => return Err(format!("type {other:?} is not supported (A or AAAA)")),
    };
    let value = value.ok_or("has no \"value\"")?;
    let record = ExtraRecord {
        name,
        record_type,
        value,
    };
    check_record(&record)?;
    Ok(record)
}

/// The rules every extra record follows, inline in the config or from the file: a name the
/// client accepts as a DNS name, and an address of the record's family. Tailscale clients
/// silently skip a record that breaks them, so we refuse it where the admin sees why.
pub fn check_record(record: &ExtraRecord) -> Result<(), String> {
    let name = record.name.as_str();
    if name.trim().is_empty() {
        return Err("has an empty name".into());
    }
    check_dns_name(name).map_err(|problem| format!("name {name:?} {problem}"))?;
    let valid = match record.record_type {
        RecordType::A => record.value.parse::<Ipv4Addr>().is_ok(),
        RecordType::Aaaa => record.value.parse::<Ipv6Addr>().is_ok(),
    };
    if !valid {
        let family = match record.record_type {
            RecordType::A => "IPv4",
            RecordType::Aaaa => "IPv6",
        };
        return Err(format!(
            "{:?} is not a valid {} record value (an {family} address)",
            record.value,
            record.record_type.as_str()
        ));
    }
    Ok(())
}

/// The client's own limits (`dnsname.ToFQDN`): at most 254 bytes with the final dot, labels
/// of 1 to 63 bytes; one leading and one trailing dot are allowed.
fn check_dns_name(name: &str) -> Result<(), String> {
    let name = name.strip_prefix('.').unwrap_or(name);
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err("is not a DNS name".into());
    }
    if bare.len() + 1 > MAX_NAME_BYTES {
        return Err(format!(
            "is longer than {} bytes",
            MAX_NAME_BYTES.saturating_sub(1)
        ));
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return Err("has an empty label".into());
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(format!("has a label longer than {MAX_LABEL_BYTES} bytes"));
        }
        if label.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("contains whitespace or control characters".into());
        }
    }
    Ok(())
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, record_type: RecordType, value: &str) -> ExtraRecord {
        ExtraRecord {
            name: name.into(),
            record_type,
            value: value.into(),
        }
    }

    fn error(text: &str) -> String {
        parse(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn headscale_example_parses_in_order() {
        let text = r#"[
          {"name": "grafana.myvpn.example.com", "type": "A", "value": "100.64.0.3"},
          {"name": "prometheus.myvpn.example.com", "type": "A", "value": "100.64.0.3"},
          {"name": "v6.myvpn.example.com.", "type": "AAAA", "value": "fd7a:115c:a1e0::3"}
        ]"#;
        assert_eq!(
            parse(text.as_bytes()).unwrap(),
            vec![
                record("grafana.myvpn.example.com", RecordType::A, "100.64.0.3"),
                record("prometheus.myvpn.example.com", RecordType::A, "100.64.0.3"),
                record(
                    "v6.myvpn.example.com.",
                    RecordType::Aaaa,
                    "fd7a:115c:a1e0::3"
                ),
            ]
        );
    }

    #[test]
    fn empty_array_means_no_records() {
        assert_eq!(parse(b"[]").unwrap(), Vec::new());
        assert_eq!(parse(b" \n[ ]\n").unwrap(), Vec::new());
    }

    #[test]
    fn go_style_field_names_and_unknown_fields_are_accepted() {
        let text = r#"[{"Name": "a.example", "TYPE": "A", "Value": "1.2.3.4", "ttl": 60}]"#;
        assert_eq!(
            parse(text.as_bytes()).unwrap(),
            vec![record("a.example", RecordType::A, "1.2.3.4")]
        );
    }

    #[test]
    fn exact_duplicates_are_dropped() {
        let one = r#"{"name": "a.example", "type": "A", "value": "1.2.3.4"}"#;
        let other = r#"{"name": "a.example", "type": "A", "value": "1.2.3.5"}"#;
        let text = format!("[{one}, {other}, {one}]");
        let records = parse(text.as_bytes()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].value, "1.2.3.5");
    }

    #[test]
    fn errors_name_the_entry_and_the_problem() {
        let cases = [
            ("", "is empty (write [] for no records)"),
            ("[", "is not valid JSON"),
            ("{}", "must be a JSON array of records, not an object"),
            ("\"x\"", "must be a JSON array of records, not a string"),
            ("null", "must be a JSON array of records, not null"),
            (
                "[1]",
                "entry 0: must be an object with name, type and value, not a number",
            ),
            (
                r#"[{"name": "ok.example", "type": "A", "value": "1.2.3.4"},
                    {"name": "", "type": "A", "value": "1.2.3.4"}]"#,
                "entry 1: has an empty name",
            ),
            (
                r#"[{"name": "  ", "type": "A", "value": "1.2.3.4"}]"#,
                "entry 0: has an empty name",
            ),
            (
                r#"[{"type": "A", "value": "1.2.3.4"}]"#,
                "entry 0: has no \"name\"",
            ),
            (
                r#"[{"name": "a.example", "value": "1.2.3.4"}]"#,
                "entry 0: has no \"type\" (A or AAAA)",
            ),
            (
                r#"[{"name": "a.example", "type": "A"}]"#,
                "entry 0: has no \"value\"",
            ),
            (
                r#"[{"name": "a.example", "type": "CNAME", "value": "b.example"}]"#,
                "entry 0: type \"CNAME\" is not supported (A or AAAA)",
            ),
            (
                r#"[{"name": "a.example", "type": "a", "value": "1.2.3.4"}]"#,
                "entry 0: type \"a\" is not supported (A or AAAA)",
            ),
            (
                r#"[{"name": "a.example", "type": "A", "value": "fd7a::1"}]"#,
                "entry 0: \"fd7a::1\" is not a valid A record value (an IPv4 address)",
            ),
            (
                r#"[{"name": "a.example", "type": "AAAA", "value": "1.2.3.4"}]"#,
                "entry 0: \"1.2.3.4\" is not a valid AAAA record value (an IPv6 address)",
            ),
            (
                r#"[{"name": "a.example", "type": "A", "value": "01.2.3.4"}]"#,
                "is not a valid A record value",
            ),
            (
                r#"[{"name": "a.example", "type": "A", "value": 1234}]"#,
                "entry 0: field \"value\" must be a string, not a number",
            ),
            (
                r#"[{"name": "a.example", "Name": "b", "type": "A", "value": "1.2.3.4"}]"#,
                "entry 0: field \"name\" is given twice",
            ),
            (
                r#"[{"name": "a..example", "type": "A", "value": "1.2.3.4"}]"#,
                "entry 0: name \"a..example\" has an empty label",
            ),
            (
                r#"[{"name": ".", "type": "A", "value": "1.2.3.4"}]"#,
                "entry 0: name \".\" is not a DNS name",
            ),
            (
                r#"[{"name": "a b.example", "type": "A", "value": "1.2.3.4"}]"#,
                "contains whitespace",
            ),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(
                message.contains(expected),
                "{text:?}: {message:?} does not contain {expected:?}"
            );
            assert!(!message.contains('\n'), "not one line: {message:?}");
        }
    }

    #[test]
    fn name_length_limits_follow_the_client() {
        let label = "a".repeat(63);
        let ok = format!("{label}.example");
        let check = |name: &str| check_record(&record(name, RecordType::A, "1.2.3.4"));
        assert!(check(&ok).is_ok());
        assert!(check(&format!("{label}a.example"))
            .unwrap_err()
            .contains("label longer than 63"));
        // 253 bytes without the final dot is the most a name may have.
        let longest = [label.as_str(); 4].join(".")[..253].to_string();
        assert!(check(&longest).is_ok(), "{}", longest.len());
        assert!(check(&format!("{longest}.")).is_ok());
        assert!(check(&format!("{longest}a"))
            .unwrap_err()
            .contains("longer than 253 bytes"));
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let mut big = b"[".to_vec();
        big.resize(MAX_FILE_BYTES as usize + 1, b' ');
        assert_eq!(
            parse(&big),
            Err(ExtraRecordsError::TooLarge {
                size: MAX_FILE_BYTES + 1
            })
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "[".repeat(100_000);
        assert!(error(&text).starts_with("is not valid JSON"));
    }
}
