//! Built-in ACME against Let's Encrypt's test CA, pebble (`.ci/install-pebble`), on
//! loopback: real HTTP-01 and TLS-ALPN-01 validation (pebble's VA is pointed at our ports and
//! resolves the test hostname through a tiny DNS stub here), the issued certificate served on
//! `listen_addr`, a restart that reuses the cache without a new order, renewal of a
//! short-lived certificate, a failed renewal that keeps the certificate in force, and the
//! configs `serve` must refuse.

mod common;

use common::{free_port, TestServer, BIN};
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keep in step with `.ci/install-pebble`.
const PEBBLE_VERSION: &str = "v2.10.3";
/// The name certificates are ordered for; the DNS stub resolves every name to 127.0.0.1.
const HOSTNAME: &str = "hs.acme.test";

fn pebble_binary() -> PathBuf {
    common::cached_tool(
        "PEBBLE",
        &format!("pebble/{PEBBLE_VERSION}/pebble"),
        ".ci/install-pebble",
    )
}

/// Answers every A query with 127.0.0.1 and every other query with no records (DNS over
/// TCP, as pebble's VA asks a custom resolver), until dropped.
struct DnsStub {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
}

impl DnsStub {
    fn start() -> DnsStub {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    // RFC 1035 §4.2.2: each message is preceded by its 2-byte length.
                    let mut len = [0u8; 2];
                    while stream.read_exact(&mut len).is_ok() {
                        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if stream.read_exact(&mut query).is_err() {
                            break;
                        }
                        let Some(answer) = dns_answer(&query) else {
                            break;
                        };
                        let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&answer);
                        if stream.write_all(&framed).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        DnsStub { addr, stop }
    }
}

impl Drop for DnsStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// The reply to one DNS query (RFC 1035 §4.1): the question echoed, plus `A 127.0.0.1` when
/// it asks for an A record.
fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question_end = end + 5;
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let answers: u16 = u16::from(qtype == 1);
    let mut out = Vec::with_capacity(question_end + 16);
    out.extend_from_slice(&query[..2]);
    out.extend_from_slice(&[0x85, 0x80, 0, 1]);
    out.extend_from_slice(&answers.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..question_end)?);
    if answers == 1 {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(out)
}

/// A test CA and a certificate for 127.0.0.1 it signed, in PEM: pebble's own HTTPS identity.
fn pebble_https_identity() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A running pebble whose VA validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`.
struct Pebble {
    dir: tempfile::TempDir,
    port: u16,
    management_port: u16,
    child: Option<Child>,
    _dns: DnsStub,
}

impl Pebble {
    /// `validity` is the lifetime of the certificates it issues.
    fn start(http_port: u16, tls_port: u16, validity: Duration) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = pebble_https_identity();
        std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let port = free_port();
        let management_port = free_port();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "retryAfter": {"authz": 1, "order": 1},
            "keyAlgorithm": "ecdsa",
            "profiles": {"default": {
                "description": "test", "validityPeriod": validity.as_secs()
            }}
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        let dns = DnsStub::start();
        let log = std::fs::File::create(dir.path().join("pebble.log")).unwrap();
        let child = Command::new(pebble_binary())
            .arg("-config")
            .arg(dir.path().join("pebble.json"))
            .arg("-dnsserver")
            .arg(dns.addr.to_string())
            // No random 0-5 s sleeps before validating, no injected bad nonces, and a real
            // validation for every order (no reuse of earlier authorizations).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut pebble = Pebble {
            dir,
            port,
            management_port,
            child: Some(child),
            _dns: dns,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", management_port)).is_err()
        {
            if let Some(status) = pebble.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("pebble exited with {status}: {}", pebble.log());
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not start: {}",
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        pebble
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The CA file our server trusts for pebble's HTTPS (through `SSL_CERT_FILE`).
    fn https_ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// How many certificates pebble has issued.
    fn issued(&self) -> usize {
        self.log().matches("Issued certificate serial").count()
    }

    /// The root that signs pebble's certificates (generated at its start), from its
    /// management interface.
    fn issuing_root(&self) -> CertificateDer<'static> {
        let https_ca = std::fs::read(self.https_ca()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&https_ca) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = client_config(roots);
        let body = https_get(config, self.management_port, "127.0.0.1", "/roots/0");
        let pem = body.split_once("\r\n\r\n").unwrap().1;
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One `GET path` over TLS to 127.0.0.1:`port` naming `server_name`; the raw response.
fn https_get(
    config: Arc<rustls::ClientConfig>,
    port: u16,
    server_name: &str,
    path: &str,
) -> String {
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let mut tls = rustls::ClientConnection::new(config, name).unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// The certificate chain our server presents for `HOSTNAME`, verified against `root` (the
/// handshake fails unless pebble's chain for `HOSTNAME` is served and current); `None` while
/// the handshake fails.
fn served_chain(port: u16, root: &CertificateDer<'static>) -> Option<Vec<CertificateDer<'static>>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let name = ServerName::try_from(HOSTNAME.to_string()).unwrap();
    let mut tls = rustls::ClientConnection::new(client_config(roots), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).ok()?;
    }
    Some(tls.peer_certificates()?.to_vec())
}

/// Polls until our server presents a valid pebble certificate that differs from `old`.
fn wait_for_new_certificate(
    server: &TestServer,
    root: &CertificateDer<'static>,
    old: Option<&CertificateDer<'static>>,
    within: Duration,
) -> Vec<CertificateDer<'static>> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(chain) = served_chain(server.port, root) {
            if Some(&chain[0]) != old {
                return chain;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new certificate within {within:?}\nserver log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server config for ACME with `challenge` against `pebble`, HTTP-01 on `http_port`,
/// metrics on `metrics_port`.
fn acme_server_with_metrics(
    pebble: &Pebble,
    challenge: &str,
    http_port: u16,
    port: u16,
    metrics_port: u16,
) -> TestServer {
    let directory = pebble.directory();
    let mut server = TestServer::with_yaml(|data, _| {
        format!(
            "server_url: https://{HOSTNAME}:{port}\n\
             listen_addr: 127.0.0.1:{port}\n\
             metrics_listen_addr: 127.0.0.1:{metrics_port}\n\
             unix_socket: {data}/headscale.sock\n\
             noise:\n  private_key_path: {data}/noise_private.key\n\
             database:\n  type: sled\n  sled:\n    path: {data}/db.sled\n\
             dns:\n  base_domain: tailnet.example\n  override_local_dns: false\n\
             derp:\n  server:\n    enabled: false\n\
             policy:\n  mode: database\n\
             log:\n  level: info\n\
             grpc_listen_addr: 127.0.0.1:0\n\
             tls_letsencrypt_hostname: {HOSTNAME}\n\
             tls_letsencrypt_cache_dir: {data}/acme\n\
             tls_letsencrypt_challenge_type: {challenge}\n\
             tls_letsencrypt_listen: 127.0.0.1:{http_port}\n\
             acme_url: {directory}\n\
             acme_email: admin@{HOSTNAME}\n",
            data = data.display()
        )
    });
    server.port = port;
    server.env.push((
        "SSL_CERT_FILE".into(),
        pebble.https_ca().display().to_string(),
    ));
    server
}

/// A server config for ACME with `challenge` against `pebble`, HTTP-01 on `http_port`.
fn acme_server(pebble: &Pebble, challenge: &str, http_port: u16, port: u16) -> TestServer {
    acme_server_with_metrics(pebble, challenge, http_port, port, free_port())
}

/// The value of the Prometheus sample `name` on the metrics listener.
fn metric(metrics_port: u16, name: &str) -> f64 {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn http01_issues_serves_caches_and_restarts_without_a_new_order() {
    let (http_port, port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, port, Duration::from_secs(90 * 24 * 3600));
    let root = pebble.issuing_root();
    let mut server = acme_server(&pebble, "HTTP-01", http_port, port);
    server.spawn();
    let chain = wait_for_new_certificate(&server, &root, None, Duration::from_secs(30));
    assert!(chain.len() >= 2, "leaf and intermediate are served");
    assert_eq!(pebble.issued(), 1);

    // The control server answers over that TLS: the certificate is on listen_addr.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let health = https_get(client_config(roots), port, HOSTNAME, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    // The HTTP-01 listener redirects everything but challenges to server_url.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", http_port)).unwrap();
    write!(
        plain,
        "GET /x HTTP/1.1\r\nHost: {HOSTNAME}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut redirect = String::new();
    plain.read_to_string(&mut redirect).unwrap();
    assert!(redirect.starts_with("HTTP/1.1 302"), "{redirect}");
    assert!(
        redirect.contains(&format!("location: https://{HOSTNAME}:{port}/x")),
        "{redirect}"
    );

    // Cached in autocert's layout, private.
    let cache = server.data_dir().join("acme");
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&cache.join(HOSTNAME)), 0o600);
    assert_eq!(mode(&cache.join("acme_account+key")), 0o600);

    // A restart serves the cached certificate and orders nothing.
    server.stop();
    server.spawn();
    let again = wait_for_new_certificate(&server, &root, None, Duration::from_secs(10));
    assert_eq!(again[0], chain[0], "the cached certificate is served");
    assert_eq!(pebble.issued(), 1, "no new order after a restart");
    assert!(
        server.log().contains("serving the cached certificate"),
        "{}",
        server.log()
    );
}

#[test]
fn tls_alpn01_issues_on_the_main_listener() {
    let (http_port, port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, port, Duration::from_secs(90 * 24 * 3600));
    let root = pebble.issuing_root();
    let mut server = acme_server(&pebble, "TLS-ALPN-01", http_port, port);
    server.spawn();
    wait_for_new_certificate(&server, &root, None, Duration::from_secs(30));
    assert_eq!(pebble.issued(), 1);
    // Nothing listens on pebble's HTTP-01 port, so the validation was TLS-ALPN-01 on
    // listen_addr.
    assert!(std::net::TcpStream::connect(("127.0.0.1", http_port)).is_err());
    // Outside an order, a client offering `acme-tls/1` gets no certificate at all.
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let name = ServerName::try_from(HOSTNAME.to_string()).unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let error = loop {
        match tls.complete_io(&mut tcp) {
            Ok(_) if tls.is_handshaking() => continue,
            Ok(_) => panic!("a validation handshake succeeded outside an order"),
            Err(error) => break error.to_string(),
        }
    };
    // rustls answers a resolver without a certificate with access_denied.
    assert!(error.contains("AccessDenied"), "{error}");
}

#[test]
fn a_short_lived_certificate_renews_and_a_failed_renewal_keeps_it() {
    let (http_port, port) = (free_port(), free_port());
    // Renewed with a third of its life left: about 12 s after issuance, leaving 6 s in
    // which the old certificate is still valid after a failed renewal.
    let mut pebble = Pebble::start(http_port, port, Duration::from_secs(18));
    let root = pebble.issuing_root();
    let metrics_port = free_port();
    let mut server = acme_server_with_metrics(&pebble, "HTTP-01", http_port, port, metrics_port);
    server.spawn();
    let first = wait_for_new_certificate(&server, &root, None, Duration::from_secs(30));
    let second = wait_for_new_certificate(&server, &root, Some(&first[0]), Duration::from_secs(30));
    assert!(server.log().matches("new certificate in force").count() >= 2);

    // The CA goes away: the next renewal fails, is logged, and the certificate stays.
    pebble.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().contains("renewal failed") {
        assert!(
            Instant::now() < deadline,
            "no failed renewal: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let still = served_chain(port, &root).expect("the certificate in force is still served");
    assert_eq!(still[0], second[0]);
    assert_eq!(
        metric(metrics_port, "headscale_acme_order_failures_total"),
        1.0
    );
    let expiry = metric(
        metrics_port,
        "headscale_acme_certificate_expiry_timestamp_seconds",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now && expiry < now + 18.0, "{expiry} vs {now}");
}

/// Runs `serve` expecting it to refuse to start; returns its output.
fn refused(server: &TestServer) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&server.config)
        .envs(server.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(!status.success(), "serve should have failed: {out}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err(),
        "nothing may listen after a refusal"
    );
    assert!(
        !server.data_dir().join("db.sled").exists(),
        "a start that cannot serve records nothing"
    );
    out
}

/// A test server config with ACME on and `extra` appended; the cache is in the temp dir
/// unless `extra` sets `tls_letsencrypt_cache_dir`.
fn config_with(extra: &str) -> TestServer {
    let mut server = TestServer::new("");
    let mut yaml = std::fs::read_to_string(&server.config).unwrap();
    // With TLS, gRPC for remote CLIs starts too: on a free port, as tests run in parallel.
    yaml.push_str(&format!(
        "grpc_listen_addr: 127.0.0.1:0\ntls_letsencrypt_hostname: {HOSTNAME}\n{extra}"
    ));
    if !extra.contains("tls_letsencrypt_cache_dir") {
        yaml.push_str(&format!(
            "tls_letsencrypt_cache_dir: {}\n",
            server.data_dir().join("acme").display()
        ));
    }
    std::fs::write(&server.config, yaml).unwrap();
    // Some trusted root, so the outcome never depends on the machine's CA bundle.
    let roots = server.dir.path().join("roots.pem");
    std::fs::write(&roots, pebble_https_identity().0).unwrap();
    server
        .env
        .push(("SSL_CERT_FILE".into(), roots.display().to_string()));
    server
}

#[test]
fn configs_that_cannot_get_a_certificate_refuse_to_start() {
    // Both certificate sources, as headscale refuses.
    let out = refused(&config_with(
        "tls_cert_path: /c.pem\ntls_key_path: /k.pem\n",
    ));
    assert!(out.contains("not both"), "{out}");

    // No ACME server answering and nothing cached: no silent start without TLS.
    let closed = free_port();
    let out = refused(&config_with(&format!(
        "tls_letsencrypt_listen: 127.0.0.1:{}\nacme_url: https://127.0.0.1:{closed}/dir\n",
        free_port()
    )));
    assert!(out.contains("cannot set up ACME"), "{out}");

    // The HTTP-01 port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = refused(&config_with(&format!(
        "tls_letsencrypt_listen: {}\n",
        taken.local_addr().unwrap()
    )));
    assert!(out.contains("tls_letsencrypt_listen"), "{out}");

    // The cache directory cannot be created.
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let out = refused(&config_with(&format!(
        "tls_letsencrypt_cache_dir: {}\ntls_letsencrypt_listen: 127.0.0.1:{}\n",
        blocker.path().join("cache").display(),
        free_port()
    )));
    assert!(out.contains("tls_letsencrypt_cache_dir"), "{out}");
}

/// Kills the child on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The cache is autocert's layout both ways: the real Go headscale, started on the cache we
/// filled, serves our certificate without ordering. (The other way, headscale filling it
/// from pebble, cannot run: golang.org/x/crypto/acme follows the finalize response's
/// `Location` header, which pebble does not send, so autocert never gets a certificate from
/// pebble; `cache.rs` unit-tests reading autocert's files instead.)
#[test]
fn headscale_serves_the_certificate_we_cached() {
    let (http_port, port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, port, Duration::from_secs(90 * 24 * 3600));
    let root = pebble.issuing_root();
    let mut server = acme_server(&pebble, "HTTP-01", http_port, port);
    server.spawn();
    let ours = wait_for_new_certificate(&server, &root, None, Duration::from_secs(30));
    server.stop();
    let cache = server.data_dir().join("acme");

    let go = server.dir.path().join("go");
    std::fs::create_dir_all(&go).unwrap();
    std::fs::write(
        go.join("derp.yaml"),
        "regions:\n  900:\n    regionid: 900\n    regioncode: test\n    regionname: Test\n    \
         nodes:\n      - name: 900a\n        regionid: 900\n        hostname: 127.0.0.1\n        \
         ipv4: 127.0.0.1\n        stunport: -1\n        derpport: 1\n",
    )
    .unwrap();
    let config = format!(
        "server_url: https://{HOSTNAME}:{port}\n\
         listen_addr: 127.0.0.1:{port}\n\
         metrics_listen_addr: 127.0.0.1:0\n\
         grpc_listen_addr: 127.0.0.1:0\n\
         disable_check_updates: true\n\
         noise:\n  private_key_path: {go}/noise_private.key\n\
         prefixes:\n  v4: 100.64.0.0/10\n  v6: fd7a:115c:a1e0::/48\n\
         derp:\n  server:\n    enabled: false\n  urls: []\n  paths:\n    - {go}/derp.yaml\n  \
         auto_update_enabled: false\n\
         database:\n  type: sqlite\n  sqlite:\n    path: {go}/db.sqlite\n\
         dns:\n  magic_dns: true\n  base_domain: tailnet.example\n  override_local_dns: false\n  \
         nameservers:\n    global: []\n\
         unix_socket: {go}/headscale.sock\n\
         unix_socket_permission: \"0770\"\n\
         tls_letsencrypt_hostname: {HOSTNAME}\n\
         tls_letsencrypt_cache_dir: {cache}\n\
         tls_letsencrypt_challenge_type: HTTP-01\n\
         tls_letsencrypt_listen: 127.0.0.1:{http_port}\n\
         acme_url: {directory}\n",
        go = go.display(),
        cache = cache.display(),
        directory = pebble.directory(),
    );
    std::fs::write(go.join("config.yaml"), &config).unwrap();
    let log = std::fs::File::create(go.join("serve.log")).unwrap();
    let _headscale = Reaped(
        Command::new(common::go_headscale())
            .arg("-c")
            .arg(go.join("config.yaml"))
            .arg("serve")
            .env("HEADSCALE_DISABLE_CHECK_UPDATES", "true")
            .env("SSL_CERT_FILE", pebble.https_ca())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let theirs = loop {
        if let Some(chain) = served_chain(port, &root) {
            break chain;
        }
        assert!(
            Instant::now() < deadline,
            "the Go headscale served no certificate:\n{}",
            std::fs::read_to_string(go.join("serve.log")).unwrap_or_default(),
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        theirs[0], ours[0],
        "headscale serves the certificate we cached"
    );
    assert_eq!(pebble.issued(), 1, "and orders nothing");
}
