//! `std::time::Duration` written headscale-style: `"30m"`, `"24h"`, `"90d"`, `"1h30m"`,
//! `"120s"`, `"0"` or the integer `0`. Serialized back as e.g. `"90d"` or `"1h 30m"`.

use std::time::Duration;

use serde::{Deserializer, Serializer};

const EXPECTED: &str = "a duration with a unit, like 120s, 30m, 24h or 90d (or 0)";

/// Parse a duration; the error says what was expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bare_number(text));
    }
    humantime::parse_duration(trimmed)
        .map_err(|_| format!("invalid duration {text:?}, expected {EXPECTED}"))
}

fn bare_number(text: &str) -> String {
    format!("invalid duration {text:?} (a bare number needs a unit), expected {EXPECTED}")
}

/// Shortest exact form in days, hours, minutes, seconds and sub-seconds; `0s` for zero.
pub fn format(value: Duration) -> String {
    if value.is_zero() {
        return "0s".into();
    }
    let secs = value.as_secs();
    let nanos = value.subsec_nanos();
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3_600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (u64::from(nanos / 1_000_000), "ms"),
        (u64::from(nanos / 1_000 % 1_000), "us"),
        (u64::from(nanos % 1_000), "ns"),
    ];
    parts
        .iter()
        .filter(|(amount, _)| *amount > 0)
        .map(|(amount, unit)| format!("{amount}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*value))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(Visitor)
}

struct Visitor;

impl serde::de::Visitor<'_> for Visitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
        match v {
            0 => Ok(Duration::ZERO),
            _ => Err(E::custom(bare_number(&v.to_string()))),
        }
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
        match v {
            0 => Ok(Duration::ZERO),
            _ => Err(E::custom(bare_number(&v.to_string()))),
        }
    }
}
