//! The pure core: events, state, commands and the rules between them. Nothing in here
//! performs I/O, reads the clock or draws randomness; the shell passes those in. That is what
//! makes replay, point-in-time inspection and property tests exact.

pub mod command;
pub mod event;
pub mod ids;
pub mod intervals;
pub mod ipalloc;
pub mod keys;
pub mod limits;
pub mod naming;
pub mod netmap;
pub mod oidc;
pub mod policy;
pub mod roles;
pub mod routes;
pub mod state;
pub mod state_diff;
pub mod time;

pub use command::{decide, Command, ExpiryChange, RegisterAuth, Rejection};
pub use event::{Actor, Envelope, Event};
pub use state::State;
pub use time::Timestamp;
