//! The API-key limiter's side effects stay small (audit L3), against the real binary behind a
//! trusted proxy: a valid key gets through from a locked-out source, and IPv6 sources are
//! counted per /64 (rotating addresses inside one /64 does not escape the count; the next
//! /64 is a different source).

mod common;

use common::TestServer;

/// A request from the trusted proxy 127.0.0.1 on behalf of `client`: the status and the
/// whole response.
fn via_proxy(port: u16, client: &str, bearer: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /api/v1/user HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {bearer}\r\n\
         X-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    (response[9..12].parse().unwrap(), response)
}

const WRONG: &str = "hskey-api-AAAAAAAAAAAA-notthesecretatallnotthesecretatall";

#[test]
fn a_valid_key_passes_a_lockout_and_ipv6_counts_per_64() {
    let server = TestServer::start_with("trusted_proxies: [\"127.0.0.1/32\"]\n");
    let key = server.ok(&["apikeys", "create"]).trim().to_string();
    let port = server.port;

    // Ten failures from ten addresses of one /64, then the eleventh locks the whole /64.
    for host in 1..=10 {
        let (status, response) = via_proxy(port, &format!("2001:db8:7:7::{host:x}"), WRONG);
        assert_eq!(status, 401, "host {host}: {response}");
    }
    let (status, response) = via_proxy(port, "2001:db8:7:7::ff", WRONG);
    assert_eq!(status, 429, "{response}");
    let (status, response) = via_proxy(port, "2001:db8:7:7:abcd::1", WRONG);
    assert_eq!(status, 429, "another address of the locked /64: {response}");
    // The neighbouring /64 is another source.
    let (status, response) = via_proxy(port, "2001:db8:7:8::1", WRONG);
    assert_eq!(status, 401, "{response}");
    // From inside the locked /64, a valid key still works, and does not lift the lockout.
    let (status, response) = via_proxy(port, "2001:db8:7:7::5", &key);
    assert_eq!(status, 200, "{response}");
    let (status, response) = via_proxy(port, "2001:db8:7:7::5", WRONG);
    assert_eq!(status, 429, "{response}");
}
