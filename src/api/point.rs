//! A point in the log as an admin writes it (`--at`, `--since`, `--until`, `--from`, `--to`):
//! a seq number, an RFC 3339 time, or a duration ago (`90s`, `2h`, `3d`, `1h30m`).
//!
//! Parsing is pure (the caller passes "now"); [`resolve`] maps the result to the last seq at
//! or before it, which is what every history question is asked at.

use super::ApiError;
use crate::core::Timestamp;
use crate::store::replay::seq_at_time;
use crate::store::EventStore;

/// What the text names, before the log is consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// A seq number: the state right after that event (0: before the first).
    Seq(u64),
    /// A moment: the state after the last event at or before it.
    Time(Timestamp),
}

/// Parses `text` for the flag `flag` (named in the error). A bare number is a seq; a duration
/// needs a unit and means that long before `now`; anything else must be an RFC 3339 time.
pub fn parse(flag: &str, text: &str, now: Timestamp) -> Result<Point, String> {
    let text = text.trim();
    if let Ok(seq) = text.parse::<u64>() {
        return Ok(Point::Seq(seq));
    }
    if let Some(time) = Timestamp::parse_rfc3339(text) {
        return Ok(Point::Time(time));
    }
    let ago = text.strip_suffix("ago").map(str::trim_end).unwrap_or(text);
    if ago.starts_with(|c: char| c.is_ascii_digit()) {
        if let Ok(duration) = humantime::parse_duration(ago) {
            return Ok(Point::Time(now.minus(duration)));
        }
    }
    Err(format!(
        "{flag} {text:?} is not a point in the log: give a seq number (e.g. 42), an RFC 3339 \
         time (e.g. 2026-01-02T15:04:05Z) or a duration ago (e.g. 2h, 3d)"
    ))
}

/// Parses and maps `text` to a seq of `store`'s log: a seq beyond the head is refused, a time
/// before the first event is 0, a time after the last is the head.
pub fn resolve(
    store: &dyn EventStore,
    flag: &str,
    text: &str,
    now: Timestamp,
) -> Result<u64, ApiError> {
    match parse(flag, text, now).map_err(ApiError::BadRequest)? {
        Point::Seq(seq) => {
            let head = store.head().seq;
            if seq > head {
                return Err(ApiError::BadRequest(format!(
                    "{flag} {seq} is beyond the end of the log (last seq is {head})"
                )));
            }
            Ok(seq)
        }
        Point::Time(time) => Ok(seq_at_time(store, time)?),
    }
}

/// [`resolve`] for a point that may be left out: absent or blank is `None` (the caller's
/// default, usually 0 for a start and the head for an end).
pub fn resolve_optional(
    store: &dyn EventStore,
    flag: &str,
    text: Option<&str>,
    now: Timestamp,
) -> Result<Option<u64>, ApiError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        Some(text) => resolve(store, flag, text, now).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-12-07T12:00:00Z").unwrap()
    }

    #[test]
    fn a_bare_number_is_a_seq() {
        assert_eq!(parse("--at", "42", now()), Ok(Point::Seq(42)));
        assert_eq!(parse("--at", " 0 ", now()), Ok(Point::Seq(0)));
    }

    #[test]
    fn a_duration_is_that_long_ago() {
        let two_hours = Timestamp::parse_rfc3339("2026-12-07T10:00:00Z").unwrap();
        assert_eq!(parse("--at", "2h", now()), Ok(Point::Time(two_hours)));
        assert_eq!(parse("--at", "2h ago", now()), Ok(Point::Time(two_hours)));
        let three_days = Timestamp::parse_rfc3339("2026-12-04T12:00:00Z").unwrap();
        assert_eq!(parse("--at", "3d", now()), Ok(Point::Time(three_days)));
        let mixed = Timestamp::parse_rfc3339("2026-12-07T10:30:00Z").unwrap();
        assert_eq!(parse("--at", "1h30m", now()), Ok(Point::Time(mixed)));
    }

    #[test]
    fn an_rfc3339_time_is_taken_as_is() {
        let time = Timestamp::parse_rfc3339("2026-11-01T14:03:00+01:00").unwrap();
        assert_eq!(
            parse("--since", "2026-11-01T14:03:00+01:00", now()),
            Ok(Point::Time(time))
        );
    }

    #[test]
    fn a_point_left_out_or_blank_is_none() {
        let store = crate::store::memory::MemoryStore::new();
        for text in [None, Some(""), Some("  ")] {
            assert_eq!(
                resolve_optional(&store, "since", text, now()).unwrap(),
                None
            );
        }
        assert_eq!(
            resolve_optional(&store, "since", Some(" 0 "), now()).unwrap(),
            Some(0)
        );
        assert!(resolve_optional(&store, "until", Some("7"), now()).is_err());
    }

    #[test]
    fn anything_else_names_the_flag_and_the_three_forms() {
        for bad in ["", "yesterday", "-5", "h2", "2026-13-01"] {
            let error = parse("--until", bad, now()).unwrap_err();
            assert!(error.starts_with("--until "), "{error}");
            assert!(error.contains("duration ago"), "{error}");
        }
    }
}
