//! Output formats. For the commands headscale has too, `json`, `json-line` and `yaml` print
//! exactly what headscale's Go CLI prints (the Go structs' shape, [`super::go_shape`]), so
//! scripts written for headscale keep working; `api-json` prints the `/api/v1` wire shape
//! with this server's extra fields. Our own commands (events, routes, …) print the wire shape
//! in all three. `human` prints an aligned table (lists) or a short line (single objects).
//!
//! Much of what is printed comes from clients (a node's hostname, tags, …). Human output is
//! for a terminal, so every cell and line of it goes through [`escape`]: control characters
//! (ESC, CR, LF, OSC sequences' BEL, C1 controls) and bidi overrides become visible escapes
//! and cannot move the cursor, rewrite a row, set the clipboard (OSC 52), plant links
//! (OSC 8) or reorder text (audit L2). `json`, `json-line` and `yaml` stay raw (programs read
//! them; JSON escapes C0 controls itself).

use super::go_shape::{self, GoValue, Message};
use clap::ValueEnum;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Human,
    /// headscale's `-o json` (Go struct JSON, tab-indented).
    Json,
    /// headscale's `-o json-line` (the same, on one line).
    #[value(name = "json-line")]
    JsonLine,
    /// headscale's `-o yaml` (yaml.v3 of the Go structs).
    Yaml,
    /// The `/api/v1` wire shape with this server's extra fields, pretty-printed.
    #[value(name = "api-json")]
    ApiJson,
}

/// Prints what a command shared with headscale answers: for `json`, `json-line` and `yaml`
/// the Go CLI's rendering of `kind` read from the API answer `value`; `api-json` prints
/// `value` itself; `human` prints `message`.
pub fn print_shared(
    format: Format,
    kind: Message,
    value: &Value,
    message: &str,
) -> anyhow::Result<()> {
    match format {
        Format::Human => {
            println!("{}", escape(message));
            Ok(())
        }
        Format::ApiJson => print_machine(format, value),
        _ => print_go(format, &go_shape::message(kind, value)?),
    }
}

/// [`print_shared`] for a list answer; `human` prints a table of `columns`.
pub fn print_shared_list(
    format: Format,
    kind: Message,
    items: &[Value],
    columns: &[Column],
) -> anyhow::Result<()> {
    match format {
        Format::Human | Format::ApiJson => print_list(format, items, columns),
        _ => print_go(format, &go_shape::messages(kind, items)?),
    }
}

/// Prints a Go value as the Go CLI does: `fmt.Println` of the marshalled text (so YAML,
/// which ends in a newline already, is followed by an empty line).
pub fn print_go(format: Format, value: &GoValue) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", go_shape::to_json(value, true)),
        Format::JsonLine => println!("{}", go_shape::to_json(value, false)),
        Format::Yaml => println!("{}", go_shape::to_yaml(value)),
        Format::Human | Format::ApiJson => {
            anyhow::bail!("internal: {format:?} is not one of the Go CLI's formats")
        }
    }
    Ok(())
}

/// `headscale version`: our version for humans; with a machine format, headscale's
/// `VersionInfo` with what `/version` reports (headscale's API level, ours as build metadata).
pub fn print_version(format: Format) -> anyhow::Result<()> {
    let info = crate::server::version_info();
    match format {
        Format::Human => println!("{}", crate::server::VERSION),
        Format::ApiJson => print_machine(format, &info)?,
        _ => print_go(format, &go_shape::version_info(&info))?,
    }
    Ok(())
}

/// An error as the Go CLI reports it: `Error: …` for humans; with a machine format,
/// `{"error": "…"}` in that format (on stderr, like the line).
pub fn error_text(format: Format, message: &str) -> String {
    let value = GoValue::Struct(vec![go_shape::Field::always(
        "error",
        "error",
        GoValue::Str(message.to_string()),
    )]);
    match format {
        Format::Human => format!("Error: {message}"),
        Format::Json | Format::ApiJson => go_shape::to_json(&value, true),
        Format::JsonLine => go_shape::to_json(&value, false),
        Format::Yaml => go_shape::to_yaml(&value),
    }
}

/// A table column: header and how to read the cell from one item.
pub struct Column {
    pub header: &'static str,
    pub cell: fn(&Value) -> String,
}

pub fn print_machine(format: Format, value: &Value) -> anyhow::Result<()> {
    match format {
        Format::Json | Format::ApiJson => println!("{}", serde_json::to_string_pretty(value)?),
        Format::JsonLine => println!("{}", serde_json::to_string(value)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        Format::Human => println!("{}", human_json(value)?),
    }
    Ok(())
}

/// Whether a terminal could act on `c` rather than show it: every control character (C0 with
/// ESC, CR, LF and TAB; DEL; C1, which some terminals take as 8-bit CSI/OSC) and the marks that
/// reorder text (LRM, RLM, ALM, the embeddings and overrides U+202A–U+202E, the isolates
/// U+2066–U+2069).
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` safe for one line of a terminal: each character [`acts_on_terminal`] is written as
/// a visible `\u{..}` escape (ESC is `\u{1b}`, CR `\u{d}`, U+202E `\u{202e}`).
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    escape_except(text, &[])
}

/// [`escape`] for multi-line text (a policy document): newlines and tabs are kept.
pub fn escape_multiline(text: &str) -> std::borrow::Cow<'_, str> {
    escape_except(text, &['\n', '\t'])
}

fn escape_except<'a>(text: &'a str, keep: &[char]) -> std::borrow::Cow<'a, str> {
    let unsafe_char = |c: char| acts_on_terminal(c) && !keep.contains(&c);
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Pretty JSON for a terminal: still valid JSON, with what JSON leaves raw but a terminal
/// would act on (DEL, C1 controls, bidi marks; JSON already escapes C0) written as `\uXXXX`.
/// Such characters only occur inside strings, where the escape means the same character.
pub fn human_json(value: &Value) -> anyhow::Result<String> {
    let text = serde_json::to_string_pretty(value)?;
    if !text.chars().any(acts_on_terminal) {
        return Ok(text);
    }
    Ok(text
        .chars()
        .map(|c| {
            // Outside strings, pretty JSON has only newlines and spaces.
            if acts_on_terminal(c) && c != '\n' {
                format!("\\u{:04x}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect())
}

/// Prints a list: as a table for humans, else as the wire array.
pub fn print_list(format: Format, items: &[Value], columns: &[Column]) -> anyhow::Result<()> {
    if format != Format::Human {
        return print_machine(format, &Value::Array(items.to_vec()));
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|c| (c.cell)(item)).collect())
        .collect();
    print!("{}", render_table(columns, &rows));
    Ok(())
}

/// One row of `columns` read from `item`, each cell [`escape`]d (for rows printed one at a
/// time, like `events list --follow`).
pub fn row(columns: &[Column], item: &Value) -> Vec<String> {
    columns
        .iter()
        .map(|c| escape(&(c.cell)(item)).into_owned())
        .collect()
}

/// The table for humans; every cell is [`escape`]d.
pub fn render_table(columns: &[Column], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<std::borrow::Cow<'_, str>>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| escape(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.header.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$} | "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(columns.iter().map(|c| c.header).collect());
    for row in &rows {
        out.push_str(&line(row.iter().map(|cell| cell.as_ref()).collect()));
    }
    out
}

/// A string field, or "" when absent.
pub fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A list-of-strings field joined with commas.
pub fn list(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

pub fn yes_no(value: &Value, key: &str) -> String {
    match value.get(key).and_then(Value::as_bool) {
        Some(true) => "yes".into(),
        _ => "no".into(),
    }
}

/// `user.name` for nested user objects.
pub fn user_name(value: &Value) -> String {
    value
        .get("user")
        .and_then(|u| u.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// RFC 3339 shortened to seconds for tables.
pub fn time(value: &Value, key: &str) -> String {
    let t = text(value, key);
    match t.find('.') {
        Some(dot) if t.ends_with('Z') => format!("{}Z", &t[..dot]),
        _ => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_and_bidi_marks_are_escaped() {
        let hostile = "a\u{1b}]52;c;aGk=\u{7}b\rc\u{202e}d\u{2066}e\u{9b}f\u{7f}";
        assert_eq!(
            escape(hostile),
            "a\\u{1b}]52;c;aGk=\\u{7}b\\u{d}c\\u{202e}d\\u{2066}e\\u{9b}f\\u{7f}"
        );
        assert!(matches!(
            escape("plain-name ü"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(escape_multiline("a\n\tb\u{1b}"), "a\n\tb\\u{1b}");
    }

    #[test]
    fn human_json_stays_json_without_raw_controls() {
        let value = serde_json::json!({ "name": "x\u{1b}[2J\u{202e}\u{9b}y" });
        let text = human_json(&value).unwrap();
        assert!(
            !text.chars().any(|c| acts_on_terminal(c) && c != '\n'),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }

    #[test]
    fn tables_align() {
        let columns = [
            Column {
                header: "ID",
                cell: |v| text(v, "id"),
            },
            Column {
                header: "Name",
                cell: |v| text(v, "name"),
            },
        ];
        let rows = vec![
            vec!["1".into(), "alice".into()],
            vec!["10".into(), "b".into()],
        ];
        assert_eq!(
            render_table(&columns, &rows),
            "ID | Name\n1  | alice\n10 | b\n"
        );
    }
}
