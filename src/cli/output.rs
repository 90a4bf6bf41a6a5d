//! Output formats: `json`, `json-line` and `yaml` print the API's wire shape; `human` prints
//! an aligned table (lists) or a short line (single objects).

use clap::ValueEnum;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Human,
    Json,
    #[value(name = "json-line")]
    JsonLine,
    Yaml,
}

/// A table column: header and how to read the cell from one item.
pub struct Column {
    pub header: &'static str,
    pub cell: fn(&Value) -> String,
}

pub fn print_machine(format: Format, value: &Value) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::JsonLine => println!("{}", serde_json::to_string(value)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        Format::Human => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
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

pub fn render_table(columns: &[Column], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.header.chars().count()).collect();
    for row in rows {
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
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
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
