//! The OpenAPI document of `/api/v1` against the real binary: it is a structurally valid
//! OpenAPI 3 document (required fields, unique operation ids, declared path parameters, every
//! `$ref` resolves), the YAML and JSON forms agree, it lists exactly the routes the router
//! serves (`headscale::api::routes()`), and real answers match their documented schemas. The
//! docs page and the document are public; CORS (`api.cors`) is off by default, and when
//! configured answers preflights from the allowed origins only.

mod common;

use common::TestServer;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One HTTP/1.1 request to the TCP listener: status, headers (lower-case names), body.
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, BTreeMap<String, String>, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(text.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, rest) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, headers, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

fn get_public(server: &TestServer, path: &str) -> (u16, BTreeMap<String, String>, String) {
    request(server.port, "GET", path, &[], None)
}

/// The document, fetched without an API key.
fn document(server: &TestServer) -> Value {
    let (status, headers, body) = get_public(server, "/api/v1/openapi.json");
    assert_eq!(status, 200, "{body}");
    assert!(headers["content-type"].starts_with("application/json"));
    serde_json::from_str(&body).unwrap()
}

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every (METHOD, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        for method in METHODS {
            if let Some(operation) = item.get(*method) {
                out.push((method.to_uppercase(), path.clone(), operation));
            }
        }
    }
    out
}

/// Every `$ref` anywhere in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => out.push(target),
                    _ => refs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| refs(i, out)),
        _ => {}
    }
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Structural validation of an OpenAPI 3 document; every problem found.
fn validate(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |p: String| problems.push(p);
    let version = doc["openapi"].as_str().unwrap_or("");
    if !(version.starts_with("3.0.") || version.starts_with("3.1.")) {
        problem(format!("openapi is {version:?}, not 3.0.x or 3.1.x"));
    }
    for field in ["title", "version"] {
        if doc["info"][field].as_str().is_none_or(str::is_empty) {
            problem(format!("info.{field} is missing"));
        }
    }
    let schemes = doc["components"]["securitySchemes"].as_object();
    let scheme_exists = |name: &str| schemes.is_some_and(|s| s.contains_key(name));
    let mut requirements: Vec<&Value> = doc["security"].as_array().into_iter().flatten().collect();
    let mut ids = BTreeSet::new();
    for (method, path, operation) in operations(doc) {
        let at = format!("{method} {path}");
        if !path.starts_with('/') {
            problem(format!("{at}: path does not start with /"));
        }
        match operation["operationId"].as_str() {
            Some(id) if ids.insert(id.to_string()) => {}
            other => problem(format!("{at}: operationId {other:?} missing or not unique")),
        }
        if operation["summary"].as_str().is_none_or(str::is_empty) {
            problem(format!("{at}: no summary"));
        }
        match operation["responses"].as_object() {
            Some(responses) if !responses.is_empty() => {
                for (status, response) in responses {
                    let valid_status = status == "default"
                        || (status.len() == 3 && status.chars().all(|c| c.is_ascii_digit()));
                    if !valid_status {
                        problem(format!("{at}: response status {status:?}"));
                    }
                    if response.get("$ref").is_none() && response["description"].as_str().is_none()
                    {
                        problem(format!("{at}: response {status} has no description"));
                    }
                }
            }
            _ => problem(format!("{at}: no responses")),
        }
        let parameters: Vec<&Value> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        for parameter in &parameters {
            let location = parameter["in"].as_str().unwrap_or("");
            if !["query", "header", "path", "cookie"].contains(&location) {
                problem(format!("{at}: parameter {parameter} has in = {location:?}"));
            }
            if parameter["name"].as_str().is_none_or(str::is_empty) {
                problem(format!("{at}: a parameter without a name"));
            }
            if location == "path" && parameter["required"] != json!(true) {
                problem(format!(
                    "{at}: path parameter {} not required",
                    parameter["name"]
                ));
            }
        }
        // Each `{name}` of the template is a declared path parameter, and nothing else is.
        let template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let declared: BTreeSet<&str> = parameters
            .iter()
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str())
            .collect();
        if template != declared {
            problem(format!(
                "{at}: path parameters {declared:?}, template has {template:?}"
            ));
        }
        if let Some(security) = operation["security"].as_array() {
            requirements.extend(security);
        }
    }
    for requirement in requirements {
        for name in requirement.as_object().into_iter().flat_map(|r| r.keys()) {
            if !scheme_exists(name) {
                problem(format!("security requirement {name:?} names no scheme"));
            }
        }
    }
    let mut all = Vec::new();
    refs(doc, &mut all);
    assert!(!all.is_empty(), "a document without a single $ref");
    for reference in all {
        if resolve(doc, reference).is_none() {
            problem(format!("$ref {reference:?} does not resolve"));
        }
    }
    problems
}

#[test]
fn the_document_is_openapi_3_and_lists_exactly_the_served_routes() {
    let mut server = TestServer::start();
    server.wait_healthy();
    let doc = document(&server);
    let problems = validate(&doc);
    assert!(
        problems.is_empty(),
        "invalid document:\n{}",
        problems.join("\n")
    );

    // The Bearer scheme for `hskey-api-…` keys applies to the API, not to the documentation.
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let (name, scheme) = schemes.iter().next().unwrap();
    assert_eq!(
        (scheme["type"].as_str(), scheme["scheme"].as_str()),
        (Some("http"), Some("bearer"))
    );
    assert!(scheme["bearerFormat"]
        .as_str()
        .unwrap()
        .starts_with("hskey-api-"));
    assert_eq!(doc["security"], json!([{ name: [] }]));
    for path in [
        "/api/v1/openapi.json",
        "/api/v1/openapi.yaml",
        "/api/v1/docs",
    ] {
        assert_eq!(doc["paths"][path]["get"]["security"], json!([]), "{path}");
    }
    // Every authenticated operation documents the error body and the plain-text 401.
    for (method, path, operation) in operations(&doc) {
        if operation.get("security").is_some() {
            continue;
        }
        let responses = &operation["responses"];
        assert!(
            responses["401"]["content"]["text/plain"].is_object(),
            "{method} {path}"
        );
        assert_eq!(
            responses["400"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error",
            "{method} {path}"
        );
    }

    // The same set of (method, path) as the router: an undocumented route, or a documented
    // one that is not served, fails here.
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let served: BTreeSet<(String, String)> = headscale::api::routes()
        .into_iter()
        .map(|(method, path)| (method, path.to_string()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let not_served: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && not_served.is_empty(),
        "served but not documented: {undocumented:?}\ndocumented but not served: {not_served:?}"
    );
    assert!(served.len() >= 40, "{served:?}");

    // The router really serves every listed route: never the JSON 404 (`Not Found`) or 501
    // of an unknown path or method; the documentation without a key, the rest not.
    let key = server.ok(&["apikeys", "create"]).trim().to_string();
    let bearer = format!("Bearer {key}");
    for (method, path) in &served {
        let concrete = path.replace(['{', '}'], "");
        let public = doc["paths"][path.as_str()][method.to_lowercase()]["security"] == json!([]);
        // (Without a key only where one is not needed: ten refusals lock this source out.)
        let (status, _, body) = match public {
            true => request(server.port, method, &concrete, &[], None),
            false => (200, BTreeMap::new(), String::new()),
        };
        assert_eq!(status, 200, "{method} {concrete}");
        let (status, _, body2) = request(
            server.port,
            method,
            &concrete,
            &[("Authorization", &bearer)],
            None,
        );
        let fallback = status == 501 || (status == 404 && body2.contains("\"Not Found\""));
        assert!(
            !fallback,
            "{method} {concrete} is not served: {status} {body} {body2}"
        );
    }

    // The YAML form is the same document.
    let (status, headers, yaml) = get_public(&server, "/api/v1/openapi.yaml");
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("application/yaml"));
    let from_yaml: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(from_yaml, doc);
}

#[test]
fn the_docs_page_is_self_contained_html_without_a_key() {
    let mut server = TestServer::start();
    server.wait_healthy();
    let doc = document(&server);
    let (status, headers, page) = get_public(&server, "/api/v1/docs");
    assert_eq!(status, 200);
    assert!(
        headers["content-type"].starts_with("text/html"),
        "{headers:?}"
    );
    assert!(page.starts_with("<!DOCTYPE html>"));
    let lower = page.to_ascii_lowercase();
    for banned in ["<script", "src=", "<link", "@import", "href=\"http", "url("] {
        assert!(!lower.contains(banned), "the page has {banned:?}");
    }
    for (method, path, operation) in operations(&doc) {
        let id = operation["operationId"].as_str().unwrap();
        assert!(page.contains(&format!("id=\"op-{id}\"")), "{id}");
        assert!(page.contains(&format!(">{method}</span>")), "{method}");
        assert!(page.contains(&path.replace('&', "&amp;")), "{path}");
    }
    for schema in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            page.contains(&format!("id=\"schema-{schema}\"")),
            "{schema}"
        );
    }
    // The API itself still needs a key.
    let (status, _, _) = get_public(&server, "/api/v1/user");
    assert_eq!(status, 401);
}

/// Whether `value` conforms to `schema` (types, required and known properties, items);
/// every mismatch, located by JSON path.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        let target = resolve(doc, reference).expect("resolving $ref");
        return conforms(doc, target, value, at, problems);
    }
    if let Some(branches) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        let fits = branches.iter().any(|b| {
            let mut inner = Vec::new();
            conforms(doc, b, value, at, &mut inner);
            inner.is_empty()
        });
        if !fits {
            problems.push(format!("{at}: {value} fits no branch of {schema}"));
        }
        return;
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return, // any value
    };
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let fits = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
    if !fits {
        problems.push(format!("{at}: {value} is {actual}, documented {types:?}"));
        return;
    }
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap();
                if !map.contains_key(name) {
                    problems.push(format!("{at}: required {name:?} is missing"));
                }
            }
            for (key, inner) in map {
                match properties.and_then(|p| p.get(key)) {
                    Some(property) => {
                        conforms(doc, property, inner, &format!("{at}/{key}"), problems)
                    }
                    None if schema["additionalProperties"].is_object() => {}
                    None => problems.push(format!("{at}: {key:?} is not documented")),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                conforms(doc, &schema["items"], item, &format!("{at}/{i}"), problems);
            }
        }
        _ => {}
    }
}

#[test]
fn real_answers_match_their_documented_schemas() {
    let mut server = TestServer::start();
    server.wait_healthy();
    let doc = document(&server);
    let key = server.ok(&["apikeys", "create"]).trim().to_string();
    let bearer = format!("Bearer {key}");
    let policy = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    // (method, documented path, concrete path, body), in an order that makes each succeed.
    let calls: Vec<(&str, &str, &str, Option<Value>)> = vec![
        ("GET", "/api/v1/health", "/api/v1/health", None),
        (
            "POST",
            "/api/v1/user",
            "/api/v1/user",
            Some(json!({"name": "alice"})),
        ),
        ("GET", "/api/v1/user", "/api/v1/user", None),
        (
            "POST",
            "/api/v1/preauthkey",
            "/api/v1/preauthkey",
            Some(json!({"user": "1", "reusable": true})),
        ),
        ("GET", "/api/v1/preauthkey", "/api/v1/preauthkey", None),
        ("POST", "/api/v1/apikey", "/api/v1/apikey", Some(json!({}))),
        ("GET", "/api/v1/apikey", "/api/v1/apikey", None),
        (
            "POST",
            "/api/v1/debug/node",
            "/api/v1/debug/node",
            Some(json!({"user": "alice", "name": "laptop", "routes": ["10.1.0.0/24"]})),
        ),
        ("GET", "/api/v1/node", "/api/v1/node", None),
        ("GET", "/api/v1/node/{id}", "/api/v1/node/1", None),
        ("GET", "/api/v1/node/{id}", "/api/v1/node/999", None),
        (
            "POST",
            "/api/v1/routes/enable",
            "/api/v1/routes/enable",
            Some(json!({"route": "10.1.0.0/24"})),
        ),
        ("GET", "/api/v1/routes", "/api/v1/routes", None),
        (
            "POST",
            "/api/v1/node/{id}/expire",
            "/api/v1/node/1/expire",
            Some(json!({"disableExpiry": true})),
        ),
        (
            "PUT",
            "/api/v1/policy",
            "/api/v1/policy",
            Some(json!({"policy": policy})),
        ),
        ("GET", "/api/v1/policy", "/api/v1/policy", None),
        (
            "POST",
            "/api/v1/policy/check",
            "/api/v1/policy/check",
            Some(json!({"policy": policy})),
        ),
        (
            "POST",
            "/api/v1/node/backfillips",
            "/api/v1/node/backfillips?confirmed=true",
            None,
        ),
        ("GET", "/api/v1/events", "/api/v1/events?limit=5", None),
        ("GET", "/api/v1/events/{seq}", "/api/v1/events/1", None),
        (
            "GET",
            "/api/v1/events/verify",
            "/api/v1/events/verify",
            None,
        ),
        ("GET", "/api/v1/state", "/api/v1/state", None),
        (
            "POST",
            "/api/v1/user",
            "/api/v1/user",
            Some(json!({"name": "alice"})),
        ),
        // The audit questions (issue #16).
        (
            "GET",
            "/api/v1/node/{id}/netmap",
            "/api/v1/node/1/netmap",
            None,
        ),
        (
            "GET",
            "/api/v1/node/{id}/netmap",
            "/api/v1/node/1/netmap?at=1",
            None,
        ),
        (
            "GET",
            "/api/v1/state/diff",
            "/api/v1/state/diff?from=1",
            None,
        ),
        (
            "GET",
            "/api/v1/policy/who-can-reach",
            "/api/v1/policy/who-can-reach?dest=laptop",
            None,
        ),
        (
            "GET",
            "/api/v1/policy/who-can-reach",
            "/api/v1/policy/who-can-reach?dest=laptop&since=0",
            None,
        ),
        (
            "GET",
            "/api/v1/policy/what-can",
            "/api/v1/policy/what-can?node=laptop",
            None,
        ),
        (
            "POST",
            "/api/v1/webhook",
            "/api/v1/webhook",
            Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["nodeCreated"]})),
        ),
        ("GET", "/api/v1/webhook", "/api/v1/webhook", None),
        (
            "GET",
            "/api/v1/webhook/{id}/deliveries",
            "/api/v1/webhook/1/deliveries",
            None,
        ),
        (
            "POST",
            "/api/v1/webhook/{id}/test",
            "/api/v1/webhook/1/test",
            None,
        ),
        ("DELETE", "/api/v1/webhook/{id}", "/api/v1/webhook/1", None),
        ("DELETE", "/api/v1/node/{id}", "/api/v1/node/1", None),
        (
            "GET",
            "/api/v1/node/register",
            "/api/v1/node/register",
            None,
        ),
    ];
    let mut problems = Vec::new();
    for (method, path, concrete, body) in &calls {
        let (status, headers, text) = request(
            server.port,
            method,
            concrete,
            &[("Authorization", &bearer)],
            body.as_ref(),
        );
        let at = format!("{method} {concrete} → {status}");
        let operation = &doc["paths"][*path][method.to_lowercase()];
        assert!(operation.is_object(), "{at}: not documented");
        let Some(response) = operation["responses"].get(status.to_string()) else {
            problems.push(format!("{at}: status not documented ({text})"));
            continue;
        };
        let media = headers["content-type"]
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let Some(schema) = response["content"][&media].get("schema") else {
            problems.push(format!("{at}: {media} not documented"));
            continue;
        };
        let value: Value = serde_json::from_str(&text).unwrap();
        conforms(&doc, schema, &value, &at, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn cors_headers(headers: &BTreeMap<String, String>) -> Vec<&String> {
    headers
        .keys()
        .filter(|h| h.starts_with("access-control-"))
        .collect()
}

fn preflight(server: &TestServer, origin: &str) -> (u16, BTreeMap<String, String>, String) {
    request(
        server.port,
        "OPTIONS",
        "/api/v1/user",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        None,
    )
}

#[test]
fn no_cors_headers_by_default() {
    let mut server = TestServer::start();
    server.wait_healthy();
    let (status, headers, _) = preflight(&server, "https://admin.example.com");
    assert_eq!(
        status, 401,
        "a preflight is an ordinary request without CORS"
    );
    assert!(cors_headers(&headers).is_empty(), "{headers:?}");
    let (_, headers, _) = request(
        server.port,
        "GET",
        "/api/v1/openapi.json",
        &[("Origin", "https://admin.example.com")],
        None,
    );
    assert!(cors_headers(&headers).is_empty(), "{headers:?}");
}

#[test]
fn cors_answers_preflights_from_allowed_origins_only() {
    let mut server = TestServer::start_with(
        "api:\n  cors:\n    allowed_origins: [\"https://admin.example.com\", \"http://localhost:3000\"]\n",
    );
    server.wait_healthy();
    let allowed = "https://admin.example.com";
    let (status, headers, _) = preflight(&server, allowed);
    assert!((200..300).contains(&status), "{status} {headers:?}");
    assert_eq!(headers["access-control-allow-origin"], allowed);
    let methods = headers["access-control-allow-methods"].to_ascii_uppercase();
    for method in ["GET", "POST", "PUT", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed_headers = headers["access-control-allow-headers"].to_ascii_lowercase();
    assert!(allowed_headers.contains("authorization") && allowed_headers.contains("content-type"));
    let (_, headers, _) = preflight(&server, "http://localhost:3000");
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://localhost:3000"
    );

    // Another origin gets no permission.
    let (_, headers, _) = preflight(&server, "https://evil.example");
    assert!(
        !headers.contains_key("access-control-allow-origin"),
        "{headers:?}"
    );

    // Real requests from the allowed origin: the answer (even a refused key) is readable.
    let key = server.ok(&["apikeys", "create"]).trim().to_string();
    let bearer = format!("Bearer {key}");
    let (status, headers, _) = request(
        server.port,
        "GET",
        "/api/v1/user",
        &[("Origin", allowed), ("Authorization", &bearer)],
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], allowed);
    let (status, headers, _) = request(
        server.port,
        "GET",
        "/api/v1/user",
        &[("Origin", allowed)],
        None,
    );
    assert_eq!(status, 401);
    assert_eq!(headers["access-control-allow-origin"], allowed);
    // Not on the rest of the listener.
    let (_, headers, _) = request(server.port, "GET", "/health", &[("Origin", allowed)], None);
    assert!(cors_headers(&headers).is_empty(), "{headers:?}");
}

#[test]
fn cors_from_the_environment_with_any_origin() {
    let mut server = TestServer::new("");
    server.env.push((
        "HEADSCALE_API_CORS_ALLOWED_ORIGINS".into(),
        "[\"*\"]".into(),
    ));
    server.spawn();
    server.wait_healthy();
    let (_, headers, _) = preflight(&server, "https://anything.example");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(
        server.log().contains("api.cors.allowed_origins"),
        "the wildcard is warned about: {}",
        server.log()
    );
}
