//! The embedded DERP relay and STUN responder (Tailscale's packet relay for nodes that cannot
//! reach each other directly): the frame codec (`frame`), the relay (`server`), its HTTP
//! routes (`http`), STUN (`stun`), the DERP map handed to clients (`map`, with the maps of
//! `derp.urls` fetched and kept current by `map_fetch`) and start-up for
//! `headscale serve` (`embedded`).

pub mod embedded;
pub mod frame;
pub mod http;
pub mod map;
pub mod map_fetch;
pub mod server;
pub mod stun;

pub use http::router;
pub use map::{derp_map, DerpMapError};
pub use server::{ClientVerifier, DerpError, DerpOptions, DerpServer};
