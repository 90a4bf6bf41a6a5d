//! The Tailscale control protocol (TS2021) as the real client speaks it: the server's Noise
//! key and `GET /key`, the `/ts2021` upgrade, the Noise layer and HTTP/2 inside it. Register
//! and map streams follow (issue #3).

pub mod machine;
pub mod noise;
pub mod noise_stream;
pub mod register;
pub mod server_key;
pub mod upgrade;
