//! The gRPC admin API (`headscale.v1.HeadscaleService`) through our generated client stubs:
//! every RPC over the unix socket (local trust), the same error messages as REST, the
//! API-key check and lockout of `grpc_listen_addr` (h2c and TLS with ALPN `h2`), REST still
//! answering on the socket, and the `:authority` that grpc-go sends on a socket (a raw
//! HTTP/2 exchange, byte for byte what grpc-go writes).

mod common;

use common::{free_port, TestServer};
use headscale::grpc::proto::headscale_service_client::HeadscaleServiceClient;
use headscale::grpc::proto::*;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

type Client = HeadscaleServiceClient<Channel>;

/// A call that must succeed, and the message field of its answer that must be set.
macro_rules! answer {
    ($call:expr, $field:ident) => {
        $call.await.unwrap().into_inner().$field.unwrap()
    };
}

/// A channel over the unix socket at `path`.
async fn socket_channel(path: PathBuf) -> Channel {
    Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .unwrap()
}

/// A client over the unix socket at `path`.
async fn socket_client(path: PathBuf) -> Client {
    HeadscaleServiceClient::new(socket_channel(path).await)
}

/// A request carrying `authorization` metadata, when given.
fn with_auth<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

fn code_and_message<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
) -> (Code, String) {
    let status = result.expect_err("the call should fail");
    (status.code(), status.message().to_string())
}

const POLICY: &str = r#"{"tagOwners": {"tag:server": ["alice@"]}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_answers_over_the_unix_socket_with_the_rest_apis_errors() {
    let server = TestServer::start();
    let mut c = socket_client(server.socket()).await;

    // Health and users.
    let health = c.health(HealthRequest {}).await.unwrap().into_inner();
    assert!(health.database_connectivity);
    let alice = answer!(
        c.create_user(CreateUserRequest {
            name: "alice".into(),
            display_name: "Alice A".into(),
            email: "alice@example.com".into(),
            picture_url: String::new(),
        }),
        user
    );
    assert_eq!(
        (alice.name.as_str(), alice.display_name.as_str()),
        ("alice", "Alice A")
    );
    assert!(alice.id > 0 && alice.created_at.unwrap().seconds > 1_600_000_000);
    let bob = answer!(
        c.create_user(CreateUserRequest {
            name: "bob".into(),
            ..Default::default()
        }),
        user
    );
    let renamed = answer!(
        c.rename_user(RenameUserRequest {
            old_id: bob.id,
            new_name: "robert".into(),
        }),
        user
    );
    assert_eq!((renamed.id, renamed.name.as_str()), (bob.id, "robert"));
    let all = c
        .list_users(ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(
        all.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["alice", "robert"]
    );
    let by_name = c
        .list_users(ListUsersRequest {
            name: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(by_name.len(), 1);
    // A duplicate is refused with the REST API's code and message.
    let (code, message) = code_and_message(
        c.create_user(CreateUserRequest {
            name: "alice".into(),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(code, Code::AlreadyExists, "{message}");
    let key = c
        .create_api_key(CreateApiKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .api_key;
    let (status, body) = common::http(server.port, "POST", "/api/v1/user", Some(&key));
    assert_eq!(status, 400, "an empty REST body has no name: {body}");
    let rest = rest_json(
        server.port,
        "POST",
        "/api/v1/user",
        &key,
        r#"{"name":"alice"}"#,
    );
    assert_eq!(rest["message"], message.as_str());
    assert_eq!(rest["code"], 6);

    // Pre-auth keys.
    let expiration = prost_types::Timestamp {
        seconds: now_secs() + 30 * 86_400,
        nanos: 0,
    };
    let pak = answer!(
        c.create_pre_auth_key(CreatePreAuthKeyRequest {
            user: alice.id,
            reusable: true,
            ephemeral: false,
            expiration: Some(expiration),
            acl_tags: vec![],
        }),
        pre_auth_key
    );
    assert!(pak.key.starts_with("hskey-auth-"), "{}", pak.key);
    assert_eq!(pak.expiration, Some(expiration));
    assert_eq!(pak.user.as_ref().unwrap().name, "alice");
    let listed = c
        .list_pre_auth_keys(ListPreAuthKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.pre_auth_keys.len(), 1);
    assert!(listed.pre_auth_keys[0].key.ends_with("-***"));
    c.expire_pre_auth_key(ExpirePreAuthKeyRequest { id: pak.id })
        .await
        .unwrap();
    let expired = &c
        .list_pre_auth_keys(ListPreAuthKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .pre_auth_keys[0];
    assert!(expired.expiration.unwrap().seconds < expiration.seconds);
    c.delete_pre_auth_key(DeletePreAuthKeyRequest { id: pak.id })
        .await
        .unwrap();
    assert!(c
        .list_pre_auth_keys(ListPreAuthKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .pre_auth_keys
        .is_empty());

    // Policy.
    let (code, _) = code_and_message(c.get_policy(GetPolicyRequest {}).await);
    assert_eq!(code, Code::NotFound);
    let (code, message) = code_and_message(
        c.check_policy(CheckPolicyRequest { policy: "{".into() })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument, "{message}");
    c.check_policy(CheckPolicyRequest {
        policy: POLICY.into(),
    })
    .await
    .unwrap();
    let set = c
        .set_policy(SetPolicyRequest {
            policy: POLICY.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.policy, POLICY);
    let got = c
        .get_policy(GetPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.policy.as_str(), got.updated_at),
        (POLICY, set.updated_at)
    );

    // Nodes.
    let node = answer!(
        c.debug_create_node(DebugCreateNodeRequest {
            user: "alice".into(),
            key: String::new(),
            name: "laptop".into(),
            routes: vec!["10.1.0.0/24".into()],
        }),
        node
    );
    assert_eq!(node.given_name, "laptop");
    assert_eq!(node.register_method(), RegisterMethod::Cli);
    assert_eq!(node.available_routes, ["10.1.0.0/24"]);
    assert_eq!(node.ip_addresses.len(), 2, "{:?}", node.ip_addresses);
    let got = answer!(c.get_node(GetNodeRequest { node_id: node.id }), node);
    assert_eq!(got, node);
    let renamed = answer!(
        c.rename_node(RenameNodeRequest {
            node_id: node.id,
            new_name: "work".into(),
        }),
        node
    );
    assert_eq!(renamed.given_name, "work");
    let tagged = answer!(
        c.set_tags(SetTagsRequest {
            node_id: node.id,
            tags: vec!["tag:server".into()],
        }),
        node
    );
    assert_eq!(tagged.tags, ["tag:server"]);
    let (code, message) = code_and_message(
        c.set_tags(SetTagsRequest {
            node_id: node.id,
            tags: vec!["tag:nope".into()],
        })
        .await,
    );
    assert!(
        matches!(code, Code::InvalidArgument | Code::PermissionDenied),
        "{code:?} {message}"
    );
    let routed = answer!(
        c.set_approved_routes(SetApprovedRoutesRequest {
            node_id: node.id,
            routes: vec!["10.1.0.0/24".into()],
        }),
        node
    );
    assert_eq!(routed.approved_routes, ["10.1.0.0/24"]);
    assert_eq!(routed.subnet_routes, ["10.1.0.0/24"]);
    let (code, message) = code_and_message(
        c.set_approved_routes(SetApprovedRoutesRequest {
            node_id: node.id,
            routes: vec!["nope".into()],
        })
        .await,
    );
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("invalid route \"nope\""), "{message}");
    let when = prost_types::Timestamp {
        seconds: now_secs() + 7 * 86_400,
        nanos: 0,
    };
    let expiring = answer!(
        c.expire_node(ExpireNodeRequest {
            node_id: node.id,
            expiry: Some(when),
            disable_expiry: false,
        }),
        node
    );
    assert_eq!(expiring.expiry, Some(when));
    let never = answer!(
        c.expire_node(ExpireNodeRequest {
            node_id: node.id,
            expiry: None,
            disable_expiry: true,
        }),
        node
    );
    assert_eq!(never.expiry, None);
    let listed = c
        .list_nodes(ListNodesRequest {
            user: "robert".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.nodes.is_empty());
    let listed = c
        .list_nodes(ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].user.as_ref().unwrap().name, "tagged-devices");
    let changes = c
        .backfill_node_i_ps(BackfillNodeIPsRequest { confirmed: true })
        .await
        .unwrap();
    assert!(changes.into_inner().changes.is_empty());
    let (code, message) = code_and_message(
        c.backfill_node_i_ps(BackfillNodeIPsRequest { confirmed: false })
            .await,
    );
    assert_eq!(
        (code, message.as_str()),
        (Code::InvalidArgument, "not confirmed, aborting")
    );
    // Not found: the same message as REST.
    let (code, message) = code_and_message(c.get_node(GetNodeRequest { node_id: 999 }).await);
    assert_eq!(code, Code::NotFound);
    let rest = rest_json(server.port, "GET", "/api/v1/node/999", &key, "");
    assert_eq!(rest["message"], message.as_str());

    // Interactive logins: queued by DebugCreateNode with a registration id, then completed,
    // approved or rejected.
    let auth_id = |c: char| format!("hskey-authreq-{}", c.to_string().repeat(24));
    for (id, name) in [
        (auth_id('a'), "one"),
        (auth_id('b'), "two"),
        (auth_id('c'), "three"),
    ] {
        let pending = answer!(
            c.debug_create_node(DebugCreateNodeRequest {
                user: "alice".into(),
                key: id,
                name: name.into(),
                routes: vec![],
            }),
            node
        );
        assert_eq!(pending.id, 0);
    }
    let one = answer!(
        c.auth_register(AuthRegisterRequest {
            user: "alice".into(),
            auth_id: auth_id('a'),
        }),
        node
    );
    assert_eq!(one.given_name, "one");
    let two = answer!(
        c.register_node(RegisterNodeRequest {
            user: "robert".into(),
            key: auth_id('b'),
        }),
        node
    );
    assert_eq!(two.user.unwrap().name, "robert");
    c.auth_reject(AuthRejectRequest {
        auth_id: auth_id('c'),
    })
    .await
    .unwrap();
    let (code, _) = code_and_message(
        c.auth_approve(AuthApproveRequest {
            auth_id: auth_id('d'),
        })
        .await,
    );
    assert_eq!(code, Code::NotFound);
    let (code, message) = code_and_message(
        c.auth_reject(AuthRejectRequest {
            auth_id: "nope".into(),
        })
        .await,
    );
    assert_eq!(code, Code::InvalidArgument, "{message}");

    // API keys.
    let keys = c
        .list_api_keys(ListApiKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].last_seen.is_some(), "the REST calls above used it");
    let prefix = keys[0].prefix.clone();
    c.expire_api_key(ExpireApiKeyRequest {
        prefix: prefix.clone(),
        id: 0,
    })
    .await
    .unwrap();
    assert_eq!(
        common::http(server.port, "GET", "/api/v1/user", Some(&key)).0,
        401
    );
    let (code, message) = code_and_message(c.expire_api_key(ExpireApiKeyRequest::default()).await);
    assert_eq!(
        (code, message.as_str()),
        (Code::InvalidArgument, "must provide id or prefix")
    );
    c.delete_api_key(DeleteApiKeyRequest {
        prefix: String::new(),
        id: keys[0].id,
    })
    .await
    .unwrap();
    assert!(c
        .list_api_keys(ListApiKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .api_keys
        .is_empty());

    // Deletions.
    c.delete_node(DeleteNodeRequest { node_id: node.id })
        .await
        .unwrap();
    let (code, _) = code_and_message(c.get_node(GetNodeRequest { node_id: node.id }).await);
    assert_eq!(code, Code::NotFound);
    c.delete_node(DeleteNodeRequest { node_id: two.id })
        .await
        .unwrap();
    c.delete_user(DeleteUserRequest { id: bob.id })
        .await
        .unwrap();
    let names: Vec<String> = c
        .list_users(ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .users
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice"]);

    // Our own CLI still speaks REST (HTTP/1.1) on the same socket.
    assert!(server.ok(&["users", "list"]).contains("alice"));
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A REST call with a body; the JSON answer.
fn rest_json(port: u16, method: &str, path: &str, key: &str, body: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_listen_addr_needs_an_api_key_and_locks_out_guessers() {
    let grpc_port = free_port();
    let server = TestServer::start_with(&format!(
        "grpc_listen_addr: 127.0.0.1:{grpc_port}\ngrpc_allow_insecure: true\n"
    ));
    assert!(
        server.log().contains("grpc_allow_insecure"),
        "{}",
        server.log()
    );
    let mut local = socket_client(server.socket()).await;
    let key = local
        .create_api_key(CreateApiKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .api_key;
    let channel = Endpoint::try_from(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut remote = HeadscaleServiceClient::new(channel);
    let cases = [
        (None, "authorization token not supplied"),
        (
            Some("Basic abc".to_string()),
            "missing \"Bearer \" prefix in \"Authorization\" header",
        ),
        (
            Some("Bearer hskey-api-AAAAAAAAAAAA-nope".to_string()),
            "invalid token",
        ),
    ];
    for (authorization, expected) in &cases {
        let (code, message) = code_and_message(
            remote
                .list_users(with_auth(
                    ListUsersRequest::default(),
                    authorization.as_deref(),
                ))
                .await,
        );
        assert_eq!((code, message.as_str()), (Code::Unauthenticated, *expected));
    }
    let bearer = format!("Bearer {key}");
    let users = remote
        .list_users(with_auth(ListUsersRequest::default(), Some(&bearer)))
        .await
        .unwrap();
    assert!(users.into_inner().users.is_empty());
    // Writes are recorded as the key's.
    remote
        .create_user(with_auth(
            CreateUserRequest {
                name: "carol".into(),
                ..Default::default()
            },
            Some(&bearer),
        ))
        .await
        .unwrap();
    let events = server.ok(&["events", "list"]);
    assert!(events.lines().any(|l| l.contains("api key")), "{events}");
    // Guessing is locked out (the REST API's limiter), yet the valid key still works.
    let mut last = None;
    for _ in 0..12 {
        last = Some(code_and_message(
            remote
                .list_users(with_auth(ListUsersRequest::default(), Some("Bearer wrong")))
                .await,
        ));
    }
    let (code, message) = last.unwrap();
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(
        message.contains("too many failed API key attempts"),
        "{message}"
    );
    assert_eq!(
        common::http(server.port, "GET", "/api/v1/user", Some("wrong")).0,
        429
    );
    remote
        .list_users(with_auth(ListUsersRequest::default(), Some(&bearer)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_listen_addr_speaks_tls_with_alpn_h2_when_tls_is_configured() {
    let grpc_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = common::self_signed_localhost(dir.path());
    let server = TestServer::start_with(&format!(
        "grpc_listen_addr: 127.0.0.1:{grpc_port}\ntls_cert_path: {}\ntls_key_path: {}\n",
        cert.display(),
        key.display()
    ));
    let mut local = socket_client(server.socket()).await;
    let api_key = local
        .create_api_key(CreateApiKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .api_key;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
        .domain_name("localhost");
    let channel = Endpoint::try_from(format!("https://127.0.0.1:{grpc_port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut remote = HeadscaleServiceClient::new(channel);
    let health = remote
        .health(with_auth(
            HealthRequest {},
            Some(&format!("Bearer {api_key}")),
        ))
        .await
        .unwrap();
    assert!(health.into_inner().database_connectivity);
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_gos_percent_encoded_socket_authority_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start();
    server.create_user("alice");
    let socket = server.socket();
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    // What grpc-go v1.81 writes for `ListUsers` when dialing a bare socket path.
    let authority = socket.display().to_string().replace('/', "%2F");
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/headscale.v1.HeadscaleService/ListUsers"),
        (b":authority", authority.as_bytes()),
        (b"content-type", b"application/grpc"),
        (b"user-agent", b"grpc-go/1.81.1"),
        (b"te", b"trailers"),
        (b"grpc-timeout", b"4999m"),
    ];
    let block = loona_hpack::Encoder::new().encode(fields);
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(0x4, 0, 0, &[]));
    bytes.extend(frame(0x1, 0x4, 1, &block));
    bytes.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]));
    stream.write_all(&bytes).await.unwrap();

    // Read frames until stream 1 ends (trailers) or is reset.
    let mut decoder = loona_hpack::Decoder::new();
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut data = Vec::new();
    let read = async {
        loop {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await.unwrap();
            let length =
                usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; length];
            stream.read_exact(&mut payload).await.unwrap();
            let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
            match head[3] {
                0x4 if head[4] & 1 == 0 => stream.write_all(&frame(0x4, 1, 0, &[])).await.unwrap(),
                0x3 => panic!("stream reset: {payload:?}"),
                0x7 => panic!("GOAWAY: {payload:?}"),
                0x0 if stream_id == 1 => data.extend(payload),
                0x1 if stream_id == 1 => {
                    for (n, v) in decoder.decode(&payload).unwrap() {
                        headers
                            .push((String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()));
                    }
                    if head[4] & 1 != 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(":status"), Some("200"), "{headers:?}");
    assert_eq!(header("grpc-status"), Some("0"), "{headers:?}");
    use prost::Message as _;
    let answer = ListUsersResponse::decode(&data[5..]).unwrap();
    assert_eq!(answer.users.len(), 1);
    assert_eq!(answer.users[0].name, "alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_socket_offers_grpc_reflection_as_headscale_does() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let server = TestServer::start();
    let mut client = ServerReflectionClient::new(socket_channel(server.socket()).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"headscale.v1.HeadscaleService"),
        "{names:?}"
    );
}

/// A request stream of one message.
fn tokio_stream_once<T: Send + 'static>(item: T) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::iter([item])
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_stalled_clients_of_grpc_listen_addr_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let grpc_port = free_port();
    let server = TestServer::start_with(&format!(
        "grpc_listen_addr: 127.0.0.1:{grpc_port}\ngrpc_allow_insecure: true\n"
    ));
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", grpc_port))
        .await
        .unwrap();
    // Half a preface, then nothing.
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", grpc_port))
        .await
        .unwrap();
    stalled.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    for (name, stream) in [("silent", &mut silent), ("stalled", &mut stalled)] {
        let mut sink = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut sink)).await;
        assert!(
            closed.is_ok(),
            "{name} client still connected after {:?}",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "closed before the deadline"
    );
    drop(server);
}
