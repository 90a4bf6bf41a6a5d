//! The Tailscale control protocol (TS2021) as the real client speaks it. So far: the server's
//! Noise key and `GET /key`; the Noise handshake, HTTP/2, register and map streams follow
//! (issue #3).

pub mod noise;
pub mod server_key;
