//! The Tailscale control protocol (TS2021) as the real client speaks it: the server's Noise
//! key and `GET /key`, the `/ts2021` upgrade, the Noise layer and HTTP/2 inside it. Register,
//! map streams (`hub` owns the sessions, `map_stream` serves them) and the netmap's
//! tailnet-wide context (with the watched extra-records file).

pub mod extra_records_file;
pub mod h2_deadline;
pub mod hub;
pub mod login_page;
pub mod machine;
pub mod map_stream;
pub mod netmap_context;
pub mod noise;
pub mod noise_stream;
pub mod pending;
pub mod register;
pub mod server_key;
pub mod upgrade;
