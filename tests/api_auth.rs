//! API-key authentication on the TCP listener of the real binary: a source that keeps
//! failing is answered 429 with `Retry-After` until it cools down (a good key still gets
//! through), other sources are unaffected, and each key's last use shows in `apikeys list`.

mod common;

use common::{http, TestServer};

/// A request with a raw header set, from 127.0.0.1 or (through `X-Forwarded-For` is
/// ignored: the test peer is not a trusted proxy) — status, headers and body.
fn raw(port: u16, path: &str, bearer: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {bearer}\r\n\
         X-Forwarded-For: 198.51.100.7\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    (response[9..12].parse().unwrap(), response)
}

#[test]
fn repeated_failures_get_429_and_last_use_is_shown() {
    let server = TestServer::start();
    let key = server.ok(&["apikeys", "create"]).trim().to_string();
    let (status, _) = http(server.port, "GET", "/api/v1/user", Some(&key));
    assert_eq!(status, 200);
    // Last use is volatile and shown for the key that was used.
    let keys = server.json(&["apikeys", "list"]);
    assert!(
        keys[0]["lastSeen"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{keys}"
    );

    let wrong = "hskey-api-AAAAAAAAAAAA-notthesecretatallnotthesecretatall";
    for attempt in 1..=10 {
        let (status, _) = raw(server.port, "/api/v1/user", wrong);
        assert_eq!(status, 401, "attempt {attempt}");
    }
    let (status, response) = raw(server.port, "/api/v1/user", wrong);
    assert_eq!(status, 429, "{response}");
    let retry_after: u64 = response
        .lines()
        .find_map(|l| {
            l.strip_prefix("retry-after: ")
                .or_else(|| l.strip_prefix("Retry-After: "))
        })
        .expect("a Retry-After header")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    let error: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(error["code"], 8, "{error}");
    assert!(error["message"].as_str().unwrap().contains("retry in"));
    // The header it sent is not believed (the peer is not a trusted proxy), so the lockout is
    // on 127.0.0.1 itself; a good key still gets through from there (L3).
    let (status, _) = raw(server.port, "/api/v1/user", wrong);
    assert_eq!(status, 429);
    let (status, response) = raw(server.port, "/api/v1/user", &key);
    assert_eq!(status, 200, "{response}");
    // The local socket needs no key and is never locked out.
    server.ok(&["users", "list"]);
}
