//! The Go CLI's machine output, so scripts written for headscale keep parsing ours.
//!
//! headscale's CLI prints the protobuf Go structs it got over gRPC with `encoding/json`
//! (`-o json`: tab-indented; `-o json-line`: compact) or `gopkg.in/yaml.v3` (`-o yaml`). That
//! shape is not the API's protojson: JSON keys are the snake_case proto names and every empty
//! field is left out (`omitempty`), ids are numbers, enums are numbers, and times are
//! `{"seconds": …, "nanos": …}`; YAML keys are the Go field names lower-cased (`createdat`),
//! with every field present (`null` for an absent message, `[]` for an empty list, `""`).
//!
//! This module turns an `/api/v1` answer (protojson, which is what our CLI receives from our
//! server and from headscale's REST gateway alike) into a [`GoValue`] through a schema of the
//! proto messages in Go struct order, and writes it exactly as those two Go libraries would.

use serde_json::Value;

/// A Go value as `encoding/json` and `yaml.v3` see it.
#[derive(Clone, Debug, PartialEq)]
pub enum GoValue {
    /// A nil pointer or nil slice at the top.
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    /// A slice. Slices that reach the CLI empty are nil (protobuf decodes an empty repeated
    /// field so): `encoding/json` prints them `null`, yaml.v3 `[]`.
    Seq(Vec<GoValue>),
    /// A struct: its fields in declaration order, all tagged `omitempty` in JSON.
    Struct(Vec<Field>),
    /// A `map[string]string` (the CLI's `{"Result": …}` answers): keys sorted in JSON, as
    /// written in YAML, nothing omitted.
    Map(Vec<(String, GoValue)>),
}

/// One struct field: its JSON tag and its YAML key (the Go name, lower-cased).
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub json: &'static str,
    pub yaml: String,
    pub value: GoValue,
    /// The JSON tag says `omitempty` (every protobuf field does).
    pub omit_empty: bool,
}

impl Field {
    /// A field tagged `json:"<json>,omitempty"`, its YAML key the name without underscores.
    pub fn omitempty(json: &'static str, value: GoValue) -> Field {
        Field {
            json,
            yaml: json.replace('_', ""),
            value,
            omit_empty: true,
        }
    }

    /// A field tagged `json:"<json>"`, whose Go name lower-cased is `yaml`.
    pub fn always(json: &'static str, yaml: &str, value: GoValue) -> Field {
        Field {
            json,
            yaml: yaml.into(),
            value,
            omit_empty: false,
        }
    }
}

impl GoValue {
    /// What `omitempty` leaves out: false, 0, "", nil pointers and empty slices.
    fn is_empty(&self) -> bool {
        match self {
            GoValue::Null => true,
            GoValue::Bool(b) => !b,
            GoValue::Int(i) => *i == 0,
            GoValue::Str(s) => s.is_empty(),
            GoValue::Seq(items) => items.is_empty(),
            GoValue::Struct(_) => false,
            GoValue::Map(entries) => entries.is_empty(),
        }
    }
}

/// The kind of one proto field, for reading it from protojson.
#[derive(Clone, Copy)]
enum Kind {
    /// uint64 (protojson: a decimal string).
    U64,
    Str,
    Bool,
    /// google.protobuf.Timestamp (protojson: RFC 3339).
    Time,
    /// An enum: protojson names in number order.
    Enum(&'static [&'static str]),
    /// repeated string.
    Strings,
    Message(&'static [Proto]),
}

/// One proto field: its proto (snake_case) name and kind. The protojson key is its
/// lowerCamelCase form; the Go field name lower-cased is the name without underscores.
#[derive(Clone, Copy)]
struct Proto(&'static str, Kind);

const USER: &[Proto] = &[
    Proto("id", Kind::U64),
    Proto("name", Kind::Str),
    Proto("created_at", Kind::Time),
    Proto("display_name", Kind::Str),
    Proto("email", Kind::Str),
    Proto("provider_id", Kind::Str),
    Proto("provider", Kind::Str),
    Proto("profile_pic_url", Kind::Str),
];

const PRE_AUTH_KEY: &[Proto] = &[
    Proto("user", Kind::Message(USER)),
    Proto("id", Kind::U64),
    Proto("key", Kind::Str),
    Proto("reusable", Kind::Bool),
    Proto("ephemeral", Kind::Bool),
    Proto("used", Kind::Bool),
    Proto("expiration", Kind::Time),
    Proto("created_at", Kind::Time),
    Proto("acl_tags", Kind::Strings),
];

const REGISTER_METHODS: &[&str] = &[
    "REGISTER_METHOD_UNSPECIFIED",
    "REGISTER_METHOD_AUTH_KEY",
    "REGISTER_METHOD_CLI",
    "REGISTER_METHOD_OIDC",
];

const NODE: &[Proto] = &[
    Proto("id", Kind::U64),
    Proto("machine_key", Kind::Str),
    Proto("node_key", Kind::Str),
    Proto("disco_key", Kind::Str),
    Proto("ip_addresses", Kind::Strings),
    Proto("name", Kind::Str),
    Proto("user", Kind::Message(USER)),
    Proto("last_seen", Kind::Time),
    Proto("expiry", Kind::Time),
    Proto("pre_auth_key", Kind::Message(PRE_AUTH_KEY)),
    Proto("created_at", Kind::Time),
    Proto("register_method", Kind::Enum(REGISTER_METHODS)),
    Proto("given_name", Kind::Str),
    Proto("online", Kind::Bool),
    Proto("approved_routes", Kind::Strings),
    Proto("available_routes", Kind::Strings),
    Proto("subnet_routes", Kind::Strings),
    Proto("tags", Kind::Strings),
];

const API_KEY: &[Proto] = &[
    Proto("id", Kind::U64),
    Proto("prefix", Kind::Str),
    Proto("expiration", Kind::Time),
    Proto("created_at", Kind::Time),
    Proto("last_seen", Kind::Time),
];

const HEALTH: &[Proto] = &[Proto("database_connectivity", Kind::Bool)];

const BACKFILL: &[Proto] = &[Proto("changes", Kind::Strings)];

/// The proto messages the shared commands print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    User,
    Node,
    PreAuthKey,
    ApiKey,
    Health,
    BackfillNodeIps,
    /// A response without fields (`DeleteUserResponse`, `ExpireApiKeyResponse`, …).
    Empty,
}

impl Message {
    fn schema(self) -> &'static [Proto] {
        match self {
            Message::User => USER,
            Message::Node => NODE,
            Message::PreAuthKey => PRE_AUTH_KEY,
            Message::ApiKey => API_KEY,
            Message::Health => HEALTH,
            Message::BackfillNodeIps => BACKFILL,
            Message::Empty => &[],
        }
    }
}

/// One message from its protojson form. Fields the proto lacks (our extras) are dropped.
pub fn message(kind: Message, value: &Value) -> anyhow::Result<GoValue> {
    read_message(kind.schema(), value)
}

/// A repeated message (a list answer).
pub fn messages(kind: Message, items: &[Value]) -> anyhow::Result<GoValue> {
    let items = items
        .iter()
        .map(|item| message(kind, item))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(GoValue::Seq(items))
}

/// headscale's `types.VersionInfo` (tags without `omitempty`) from `/version`'s JSON.
pub fn version_info(value: &Value) -> GoValue {
    let text = |v: &Value, key: &str| GoValue::Str(v[key].as_str().unwrap_or("").to_string());
    let go = &value["go"];
    GoValue::Struct(vec![
        Field::always("version", "version", text(value, "version")),
        Field::always("commit", "commit", text(value, "commit")),
        Field::always("buildTime", "buildtime", text(value, "buildTime")),
        Field::always(
            "go",
            "go",
            GoValue::Struct(vec![
                Field::always("version", "version", text(go, "version")),
                Field::always("os", "os", text(go, "os")),
                Field::always("arch", "arch", text(go, "arch")),
            ]),
        ),
        Field::always(
            "dirty",
            "dirty",
            GoValue::Bool(value["dirty"].as_bool().unwrap_or(false)),
        ),
    ])
}

/// The CLI's `map[string]string{"Result": text}` answers.
pub fn result(text: &str) -> GoValue {
    GoValue::Map(vec![("Result".into(), GoValue::Str(text.into()))])
}

fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn read_message(schema: &'static [Proto], value: &Value) -> anyhow::Result<GoValue> {
    if !value.is_object() {
        anyhow::bail!("the server sent {value} where an object was expected");
    }
    let mut fields = Vec::with_capacity(schema.len());
    for Proto(name, kind) in schema {
        // protojson readers accept both names; ours and headscale's send camelCase.
        let raw = value.get(camel(name)).or_else(|| value.get(*name));
        let field = read_field(*kind, raw.unwrap_or(&Value::Null))
            .map_err(|e| anyhow::anyhow!("the server sent a bad {name}: {e}"))?;
        fields.push(Field::omitempty(name, field));
    }
    Ok(GoValue::Struct(fields))
}

fn read_field(kind: Kind, value: &Value) -> anyhow::Result<GoValue> {
    Ok(match kind {
        Kind::U64 => GoValue::Int(match value {
            Value::Null => 0,
            Value::String(s) => s.parse()?,
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| anyhow::anyhow!("{n} is not an id"))?,
            other => anyhow::bail!("{other} is not an id"),
        }),
        Kind::Str => GoValue::Str(match value {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => anyhow::bail!("{other} is not a string"),
        }),
        Kind::Bool => GoValue::Bool(match value {
            Value::Null => false,
            Value::Bool(b) => *b,
            other => anyhow::bail!("{other} is not a boolean"),
        }),
        Kind::Time => match value {
            Value::Null => GoValue::Null,
            Value::String(s) => timestamp(s)?,
            other => anyhow::bail!("{other} is not a time"),
        },
        Kind::Enum(names) => GoValue::Int(match value {
            Value::Null => 0,
            Value::String(s) => names
                .iter()
                .position(|n| n == s)
                .ok_or_else(|| anyhow::anyhow!("{s:?} is not a known value"))?
                as i64,
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| anyhow::anyhow!("{n} is not a known value"))?,
            other => anyhow::bail!("{other} is not an enum value"),
        }),
        Kind::Strings => GoValue::Seq(match value {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(GoValue::Str(s.clone())),
                    other => Err(anyhow::anyhow!("{other} is not a string")),
                })
                .collect::<anyhow::Result<_>>()?,
            other => anyhow::bail!("{other} is not a list"),
        }),
        Kind::Message(schema) => match value {
            Value::Null => GoValue::Null,
            other => read_message(schema, other)?,
        },
    })
}

/// RFC 3339 → `timestamppb.Timestamp{Seconds, Nanos}`.
fn timestamp(text: &str) -> anyhow::Result<GoValue> {
    let at = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| anyhow::anyhow!("{text:?} is not an RFC 3339 time: {e}"))?;
    Ok(GoValue::Struct(vec![
        Field::omitempty("seconds", GoValue::Int(at.timestamp())),
        Field::omitempty(
            "nanos",
            GoValue::Int(i64::from(at.timestamp_subsec_nanos())),
        ),
    ]))
}

/// `json.MarshalIndent(v, "", "\t")` (with `indent`) or `json.Marshal(v)`.
pub fn to_json(value: &GoValue, indent: bool) -> String {
    let mut out = String::new();
    write_json(&mut out, value, if indent { Some(0) } else { None });
    out
}

fn newline(out: &mut String, depth: Option<usize>) {
    if let Some(depth) = depth {
        out.push('\n');
        for _ in 0..depth {
            out.push('\t');
        }
    }
}

fn write_json(out: &mut String, value: &GoValue, depth: Option<usize>) {
    let inner = depth.map(|d| d + 1);
    let colon = if depth.is_some() { ": " } else { ":" };
    match value {
        GoValue::Null => out.push_str("null"),
        GoValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        GoValue::Int(i) => out.push_str(&i.to_string()),
        GoValue::Str(s) => json_string(out, s),
        GoValue::Seq(items) => {
            if items.is_empty() {
                out.push_str("null");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, inner);
                write_json(out, item, inner);
            }
            newline(out, depth);
            out.push(']');
        }
        GoValue::Struct(fields) => {
            let present: Vec<(&str, &GoValue)> = fields
                .iter()
                .filter(|f| !(f.omit_empty && f.value.is_empty()))
                .map(|f| (f.json, &f.value))
                .collect();
            write_object(out, &present, depth, inner, colon);
        }
        GoValue::Map(entries) => {
            let mut sorted: Vec<(&str, &GoValue)> =
                entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            write_object(out, &sorted, depth, inner, colon);
        }
    }
}

fn write_object(
    out: &mut String,
    entries: &[(&str, &GoValue)],
    depth: Option<usize>,
    inner: Option<usize>,
    colon: &str,
) {
    if entries.is_empty() {
        out.push_str("{}");
        return;
    }
    out.push('{');
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        newline(out, inner);
        json_string(out, key);
        out.push_str(colon);
        write_json(out, value, inner);
    }
    newline(out, depth);
    out.push('}');
}

/// A string as `encoding/json` writes it: HTML-safe (`<`, `>`, `&` escaped), U+2028 and
/// U+2029 escaped, `\b \f \n \r \t` short, other controls `\u00XX`.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)))
            }
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `yaml.Marshal(v)` of yaml.v3: block style, 4-space indentation except that a mapping
/// inside a sequence item starts right after its `- `.
pub fn to_yaml(value: &GoValue) -> String {
    let mut emitter = Yaml {
        out: String::new(),
        column: 0,
        whitespace: true,
        indention: true,
    };
    emitter.node(value, -1, Context::Top);
    emitter.out.push('\n');
    emitter.out
}

/// Where a node is written, which decides its indentation (yaml.v3's
/// `yaml_emitter_increase_indent`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Top,
    /// The value of a mapping key (after `key:`).
    MappingValue,
    /// A sequence item (after `- `).
    SequenceItem,
}

/// The emitter's cursor, as libyaml tracks it.
struct Yaml {
    out: String,
    column: usize,
    /// The last thing written was whitespace (or the start of a line).
    whitespace: bool,
    /// Only indentation and `-` indicators are on the current line so far.
    indention: bool,
}

impl Yaml {
    fn put(&mut self, text: &str) {
        self.out.push_str(text);
        self.column += text.chars().count();
    }

    /// `yaml_emitter_write_indent`: a new line unless the cursor can stay (after `- `).
    fn write_indent(&mut self, indent: i64) {
        let indent = indent.max(0) as usize;
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.out.push('\n');
            self.column = 0;
        }
        while self.column < indent {
            self.put(" ");
        }
        self.whitespace = true;
        self.indention = true;
    }

    /// `yaml_emitter_write_indicator`.
    fn write_indicator(&mut self, text: &str, need_whitespace: bool, is_indention: bool) {
        if need_whitespace && !self.whitespace {
            self.put(" ");
        }
        self.put(text);
        self.whitespace = false;
        self.indention = self.indention && is_indention;
    }

    /// A scalar already rendered (plain, quoted or a literal block).
    fn write_scalar(&mut self, text: &str) {
        if !self.whitespace && !text.is_empty() {
            self.put(" ");
        }
        match text.rfind('\n') {
            Some(at) => {
                self.out.push_str(text);
                self.column = text[at + 1..].chars().count();
            }
            None => self.put(text),
        }
        self.whitespace = false;
        self.indention = false;
    }

    /// The indentation of a block collection opened in `context` at `indent`.
    fn child_indent(indent: i64, context: Context) -> i64 {
        const BEST: i64 = 4;
        if indent < 0 {
            0
        } else if context == Context::SequenceItem {
            indent + 2
        } else {
            BEST * ((indent + BEST) / BEST)
        }
    }

    fn node(&mut self, value: &GoValue, indent: i64, context: Context) {
        match value {
            GoValue::Null => self.write_scalar("null"),
            GoValue::Bool(b) => self.write_scalar(if *b { "true" } else { "false" }),
            GoValue::Int(i) => self.write_scalar(&i.to_string()),
            GoValue::Str(s) => {
                let text = yaml_string(s, Self::child_indent(indent, context));
                self.write_scalar(&text)
            }
            GoValue::Seq(items) if items.is_empty() => self.write_indicator("[]", true, false),
            GoValue::Seq(items) => {
                let indent = Self::child_indent(indent, context);
                for item in items {
                    self.write_indent(indent);
                    self.write_indicator("-", true, true);
                    self.node(item, indent, Context::SequenceItem);
                }
            }
            GoValue::Struct(fields) => {
                let entries: Vec<(&str, &GoValue)> =
                    fields.iter().map(|f| (f.yaml.as_str(), &f.value)).collect();
                self.mapping(&entries, indent, context);
            }
            GoValue::Map(entries) => {
                let entries: Vec<(&str, &GoValue)> =
                    entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
                self.mapping(&entries, indent, context);
            }
        }
    }

    fn mapping(&mut self, entries: &[(&str, &GoValue)], indent: i64, context: Context) {
        if entries.is_empty() {
            self.write_indicator("{}", true, false);
            return;
        }
        let indent = Self::child_indent(indent, context);
        for (key, value) in entries {
            self.write_indent(indent);
            self.write_scalar(&yaml_string(key, indent));
            self.write_indicator(":", false, false);
            self.node(value, indent, Context::MappingValue);
        }
    }
}

/// A string scalar as yaml.v3 writes it: plain when it reads back as the same string,
/// double-quoted when it would read as something else (`""`, `true`, `12`, `1.5`, `null`,
/// a date, yes/no…), single-quoted when YAML syntax forbids it plain, a literal block when it
/// has line breaks.
fn yaml_string(text: &str, indent: i64) -> String {
    let analysis = analyze(text);
    let plain_means_other = resolves_to_non_string(text) || is_old_bool(text) || is_base60(text);
    if text.contains('\n') {
        if analysis.block_allowed {
            return literal(text, indent);
        }
        return double_quoted(text);
    }
    if !plain_means_other && analysis.plain_allowed {
        return text.to_string();
    }
    if !plain_means_other && analysis.single_allowed {
        return format!("'{}'", text.replace('\'', "''"));
    }
    double_quoted(text)
}

struct Analysis {
    plain_allowed: bool,
    single_allowed: bool,
    block_allowed: bool,
}

/// libyaml's printable set (yaml.v3 emits unicode as is).
fn printable(c: char) -> bool {
    let c = u32::from(c);
    c == 0x0A
        || (0x20..=0x7E).contains(&c)
        || c == 0x85
        || (0xA0..=0xD7FF).contains(&c)
        || ((0xE000..=0xFFFD).contains(&c) && c != 0xFEFF)
        || (0x10000..=0x10FFFF).contains(&c)
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// `yaml_emitter_analyze_scalar` for a block-context scalar.
fn analyze(text: &str) -> Analysis {
    if text.is_empty() {
        return Analysis {
            plain_allowed: true,
            single_allowed: true,
            block_allowed: false,
        };
    }
    let chars: Vec<char> = text.chars().collect();
    let mut block_indicators = text.starts_with("---") || text.starts_with("...");
    let mut line_breaks = false;
    let mut special = false;
    let mut tabs = false;
    let (mut leading_space, mut leading_break) = (false, false);
    let (mut trailing_space, mut trailing_break) = (false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut previous_space, mut previous_break) = (false, false);
    let mut preceded_by_whitespace = true;
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        let followed_by_whitespace =
            matches!(next, None | Some(' ') | Some('\t')) || next.is_some_and(is_break);
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_indicators = true,
                '?' | ':' | '-' if followed_by_whitespace => block_indicators = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_whitespace => block_indicators = true,
                '#' if preceded_by_whitespace => block_indicators = true,
                _ => {}
            }
        }
        if c == '\t' {
            tabs = true;
        } else if !printable(c) {
            special = true;
        }
        let last = i + 1 == chars.len();
        if c == ' ' {
            leading_space |= i == 0;
            trailing_space |= last;
            break_space |= previous_break;
            previous_space = true;
            previous_break = false;
        } else if is_break(c) {
            line_breaks = true;
            leading_break |= i == 0;
            trailing_break |= last;
            space_break |= previous_space;
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_whitespace = c == ' ' || c == '\t' || is_break(c);
    }
    let mut plain = true;
    let mut single = true;
    let mut block = true;
    if leading_space || leading_break || trailing_space || trailing_break {
        plain = false;
    }
    if trailing_space {
        block = false;
    }
    if break_space {
        plain = false;
        single = false;
    }
    if space_break || tabs || special {
        plain = false;
        single = false;
    }
    if space_break || special {
        block = false;
    }
    if line_breaks || block_indicators {
        plain = false;
    }
    Analysis {
        plain_allowed: plain,
        single_allowed: single,
        block_allowed: block,
    }
}

/// Whether yaml.v3's resolver reads `text`, unquoted, as anything but a string.
fn resolves_to_non_string(text: &str) -> bool {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return true,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return true,
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" | "<<" => return true,
        _ => {}
    }
    match text.chars().next() {
        Some('.') => is_yaml_float(text),
        Some('-' | '+' | '0'..='9') => {
            let plain = text.replace('_', "");
            is_yaml_timestamp(text) || is_go_int(&plain) || is_yaml_float(&plain)
        }
        _ => false,
    }
}

/// `strconv.ParseInt(s, 0, 64)` or `ParseUint` syntax (overflow aside: an all-digit string
/// too long for them still reads as a float).
fn is_go_int(text: &str) -> bool {
    let body = text
        .strip_prefix('-')
        .or_else(|| text.strip_prefix('+'))
        .unwrap_or(text);
    let all = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    let lower = body.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("0x") {
        return all(rest, 16);
    }
    if let Some(rest) = lower.strip_prefix("0b") {
        return all(rest, 2);
    }
    if let Some(rest) = lower.strip_prefix("0o") {
        return all(rest, 8);
    }
    all(body, 10)
}

/// yaml.v3's float pattern `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(text: &str) -> bool {
    let s = text
        .strip_prefix('-')
        .or_else(|| text.strip_prefix('+'))
        .unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    };
    let all_digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => all_digits(frac),
        Some((int, frac)) => all_digits(int) && frac.chars().all(|c| c.is_ascii_digit()),
        None => all_digits(mantissa),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => all_digits(
            e.strip_prefix('-')
                .or_else(|| e.strip_prefix('+'))
                .unwrap_or(e),
        ),
    };
    mantissa_ok && exponent_ok
}

/// yaml.v3 reads `2006-1-2`, and that date followed by a time (with a zone after `T`), as a
/// timestamp.
fn is_yaml_timestamp(text: &str) -> bool {
    let mut parts = text.splitn(3, '-');
    let (Some(year), Some(month), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let digits = |s: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&s.len()) && s.chars().all(|c| c.is_ascii_digit())
    };
    if !digits(year, 4..=4) || !digits(month, 1..=2) {
        return false;
    }
    let day_len = rest.chars().take_while(char::is_ascii_digit).count();
    if !(1..=2).contains(&day_len) {
        return false;
    }
    let time = &rest[day_len..];
    if time.is_empty() {
        return true;
    }
    let normalized = format!("{year}-{month:0>2}-{:0>2}{time}", &rest[..day_len]);
    match time.chars().next() {
        Some('T' | 't') => {
            chrono::DateTime::parse_from_rfc3339(&normalized.replacen('t', "T", 1)).is_ok()
        }
        Some(' ') => {
            chrono::NaiveDateTime::parse_from_str(&normalized, "%Y-%m-%d %H:%M:%S%.f").is_ok()
        }
        _ => false,
    }
}

fn is_old_bool(text: &str) -> bool {
    matches!(
        text,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "on"
            | "On"
            | "ON"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// YAML 1.1 sexagesimal floats (`190:20:30.15`), which yaml.v3 quotes.
fn is_base60(text: &str) -> bool {
    let body = text
        .strip_prefix('-')
        .or_else(|| text.strip_prefix('+'))
        .unwrap_or(text);
    if !text.contains(':') || !body.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (body, None),
    };
    let mut parts = whole.split(':');
    let first = parts.next().unwrap_or("");
    let first_ok = !first.is_empty()
        && first.starts_with(|c: char| ('1'..='9').contains(&c))
        && first.chars().all(|c| c.is_ascii_digit() || c == '_');
    let rest_ok = parts.all(|p| {
        let b = p.as_bytes();
        match b.len() {
            1 => b[0].is_ascii_digit(),
            2 => (b'0'..=b'5').contains(&b[0]) && b[1].is_ascii_digit(),
            _ => false,
        }
    });
    let frac_ok = frac.is_none_or(|f| f.chars().all(|c| c.is_ascii_digit() || c == '_'));
    first_ok && rest_ok && frac_ok
}

/// libyaml's double-quoted scalar (no folding: yaml.v3 sets no width).
fn double_quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        if printable(c) && c != '\u{FEFF}' && !is_break(c) && c != '"' && c != '\\' {
            out.push(c);
            continue;
        }
        match c {
            '\0' => out.push_str("\\0"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{85}' => out.push_str("\\N"),
            '\u{a0}' => out.push_str("\\_"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if u32::from(c) <= 0xFF => out.push_str(&format!("\\x{:02X}", u32::from(c))),
            c if u32::from(c) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08X}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// A literal block (`|`, `|-`, `|+`) for text with line breaks, lines indented one level in.
fn literal(text: &str, indent: i64) -> String {
    let chomp = if !text.ends_with('\n') {
        "-"
    } else if text.len() >= 2 && text[..text.len() - 1].ends_with('\n') {
        "+"
    } else {
        ""
    };
    let hint = if text.starts_with(' ') || text.starts_with('\n') {
        "4"
    } else {
        ""
    };
    let pad = " ".repeat((indent.max(0) as usize).max(4));
    let mut out = format!("|{hint}{chomp}");
    let body = text.strip_suffix('\n').unwrap_or(text);
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "id": "1", "name": "alice", "createdAt": "2026-12-06T10:00:00.250Z",
            "displayName": "Alice A", "email": "", "providerId": "", "provider": "",
            "profilePicUrl": ""
        })
    }

    #[test]
    fn json_is_go_struct_json() {
        let value = message(Message::User, &user()).unwrap();
        assert_eq!(
            to_json(&value, false),
            r#"{"id":1,"name":"alice","created_at":{"seconds":1796551200,"nanos":250000000},"display_name":"Alice A"}"#
        );
        assert_eq!(
            to_json(&value, true),
            "{\n\t\"id\": 1,\n\t\"name\": \"alice\",\n\t\"created_at\": {\n\t\t\"seconds\": 1796551200,\n\t\t\"nanos\": 250000000\n\t},\n\t\"display_name\": \"Alice A\"\n}"
        );
        assert_eq!(
            to_json(&messages(Message::User, &[]).unwrap(), true),
            "null"
        );
        assert_eq!(
            to_json(&message(Message::Empty, &json!({})).unwrap(), true),
            "{}"
        );
        assert_eq!(
            to_json(&GoValue::Str("a<b>&\u{2028}\u{1}\"".into()), false),
            r#""a\u003cb\u003e\u0026\u2028\u0001\"""#
        );
    }

    #[test]
    fn yaml_is_yaml_v3() {
        let value = message(Message::User, &user()).unwrap();
        let expected = "id: 1\nname: alice\ncreatedat:\n    seconds: 1796551200\n    nanos: 250000000\ndisplayname: Alice A\nemail: \"\"\nproviderid: \"\"\nprovider: \"\"\nprofilepicurl: \"\"\n";
        assert_eq!(to_yaml(&value), expected);
        let list = messages(Message::User, &[user()]).unwrap();
        let listed = to_yaml(&list);
        assert!(
            listed.starts_with("- id: 1\n  name: alice\n  createdat:\n    seconds: 1796551200\n"),
            "{listed}"
        );
        let node = message(
            Message::Node,
            &json!({"id": "3", "ipAddresses": ["100.64.0.1"], "user": user(), "tags": []}),
        )
        .unwrap();
        let text = to_yaml(&GoValue::Seq(vec![node]));
        assert!(
            text.contains("  ipaddresses:\n    - 100.64.0.1\n  name: \"\"\n  user:\n    id: 1\n    name: alice\n    createdat:\n        seconds: 1796551200\n"),
            "{text}"
        );
        assert!(text.contains("  lastseen: null\n"), "{text}");
        assert!(text.ends_with("  tags: []\n"), "{text}");
        assert_eq!(to_yaml(&GoValue::Struct(vec![])), "{}\n");
        assert_eq!(to_yaml(&GoValue::Null), "null\n");
        assert_eq!(to_yaml(&messages(Message::User, &[]).unwrap()), "[]\n");
        assert_eq!(to_yaml(&result("Node deleted")), "Result: Node deleted\n");
        let version = version_info(&json!({
            "version": "v0.29.2", "commit": "unknown", "buildTime": "unknown",
            "go": {"version": "go1.26.8", "os": "linux", "arch": "amd64"}, "dirty": false
        }));
        // The shape headscale 0.29.2 printed for `version -o json-line` / `-o yaml` (its
        // binary said "dev" where this says v0.29.2).
        assert_eq!(
            to_json(&version, false),
            r#"{"version":"v0.29.2","commit":"unknown","buildTime":"unknown","go":{"version":"go1.26.8","os":"linux","arch":"amd64"},"dirty":false}"#
        );
        assert_eq!(
            to_yaml(&version),
            "version: v0.29.2\ncommit: unknown\nbuildtime: unknown\ngo:\n    version: go1.26.8\n    os: linux\n    arch: amd64\ndirty: false\n"
        );
    }

    #[test]
    fn yaml_quotes_like_yaml_v3() {
        // Each expected value is what yaml.v3 v3.0.1 printed for the string.
        for (text, expected) in [
            ("plain", "plain"),
            ("", "\"\""),
            ("true", "\"true\""),
            ("yes", "\"yes\""),
            ("123", "\"123\""),
            ("1.5", "\"1.5\""),
            ("0x1F", "\"0x1F\""),
            ("0755", "\"0755\""),
            ("1_000", "\"1_000\""),
            ("+1", "\"+1\""),
            ("1e3", "\"1e3\""),
            ("2026-12-06", "\"2026-12-06\""),
            ("2026-12-06T10:00:00Z", "\"2026-12-06T10:00:00Z\""),
            ("null", "\"null\""),
            ("~", "\"~\""),
            ("190:20:30", "\"190:20:30\""),
            ("mkey:abc", "mkey:abc"),
            ("fd7a:115c:a1e0::1", "fd7a:115c:a1e0::1"),
            ("10.0.0.0/24", "10.0.0.0/24"),
            ("é ü", "é ü"),
            ("a: b", "'a: b'"),
            ("a:", "'a:'"),
            ("-", "'-'"),
            ("- x", "'- x'"),
            (" lead", "' lead'"),
            ("it's #1", "'it''s #1'"),
            ("'q'", "'''q'''"),
            ("@home", "'@home'"),
            ("tab\there", "\"tab\\there\""),
            ("esc\u{1b}", "\"esc\\e\""),
            ("multi\nline", "|-\n    multi\n    line"),
            ("multi\nline\n", "|\n    multi\n    line"),
        ] {
            assert_eq!(yaml_string(text, 4), expected, "{text:?}");
        }
    }
}
