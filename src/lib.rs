//! A self-hosted Tailscale control server built on an append-only, hash-chained event log.
//! See ARCHITECTURE.md for the map of modules.

pub mod acme;
pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn_limits;
pub mod control;
pub mod core;
pub mod debug_listener;
pub mod derp;
pub mod engine;
pub mod error_chain;
pub mod grpc;
pub mod ha;
pub mod import;
pub mod keyfile;
pub mod listener;
pub mod metrics;
pub mod oidc;
pub mod outbound_tls;
pub mod secrets;
pub mod server;
pub mod store;
pub mod supervise;
pub mod tailcfg;
pub mod tls;
pub mod webhooks;
