//! headscale's gRPC admin API, `headscale.v1.HeadscaleService`, which the Go `headscale` CLI
//! calls: on the unix socket beside REST (local trust, `socket.rs`, with the `:authority`
//! shim of `authority.rs`), and on `grpc_listen_addr` (TLS with ALPN `h2`, or plaintext h2c
//! when `grpc_allow_insecure`; `authorization: Bearer <api key>`, `auth.rs`). Every RPC runs
//! the same code as its `/api/v1` route (`service.rs`); `convert.rs` turns the API's wire
//! shapes into the proto messages. The `.proto` files are ours (`proto/headscale/v1`), with
//! headscale 0.29's package, names and field numbers, compiled by `build.rs`.

pub mod auth;
pub mod authority;
mod convert;
pub mod service;
pub mod socket;

/// The generated messages, server and client of `headscale.v1`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("headscale.v1");

    /// The encoded descriptors of these files, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/headscale_v1_descriptor.bin"));
}
