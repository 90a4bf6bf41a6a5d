//! Logins in flight between our redirect to the provider and the user's confirmation: two
//! bounded tables in memory, never in the event log (anyone holding an AuthURL can start
//! one). A *flight* is keyed by the OAuth `state` and consumed by its first callback, so a
//! replayed callback finds nothing; a *confirmation* waits, per registration id, for the
//! user to press "register" on our page (headscale 0.29's interstitial: a silent SSO
//! redirect alone must not register a machine).
//!
//! With several instances on one PostgreSQL database the tables are `ha::logins`'s shared
//! ones (the browser's redirect, the provider's callback and the confirmation may each land
//! on another instance), with the same bounds over all instances and the same "taken once".

use crate::core::ids::UserId;
use crate::core::Timestamp;
use crate::ha::logins::SharedLogins;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a login may take from our redirect to the confirmation (headscale's 15 minutes).
pub const SESSION_TTL: Duration = Duration::from_secs(15 * 60);
/// Flights at most, all registration ids together (headscale's auth cache size).
pub const MAX_FLIGHTS: usize = 1024;
/// Flights per registration id: opening the AuthURL again starts another, and the oldest of
/// that id goes, so one id cannot fill the table.
pub const MAX_FLIGHTS_PER_LOGIN: usize = 4;
/// Confirmations at most (one per registration id; pending logins are bounded alike).
pub const MAX_CONFIRMATIONS: usize = crate::core::limits::MAX_PENDING_LOGINS;

/// What the callback needs to finish a flight.
#[derive(Debug, Clone)]
pub struct Flight {
    /// The registration id (from the client's AuthURL).
    pub auth_id: String,
    pub nonce: String,
    pub pkce_verifier: Option<String>,
}

/// A verified, allowed login waiting for the user's confirmation.
#[derive(Debug, Clone)]
pub struct Confirmation {
    pub user: UserId,
    /// The user's `issuer/subject` (the actor of the registration).
    pub identity: String,
    /// The ID token's expiry, when `use_expiry_from_token` is on.
    pub expiry: Option<Timestamp>,
    /// The form's anti-forgery token, also set as a cookie.
    pub csrf: String,
}

/// Why a login in flight could not be kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("too many logins are in progress; try again in a few minutes")]
    Busy,
    /// Several instances: the shared table could not be reached.
    #[error("the server cannot record logins right now ({0}); try again in a moment")]
    Unavailable(String),
}

struct Timed<T> {
    value: T,
    created: Instant,
}

#[derive(Default)]
struct Tables {
    flights: HashMap<String, Timed<Flight>>,
    confirmations: HashMap<String, Timed<Confirmation>>,
}

/// The tables (cheap to clone).
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<Tables>>,
    /// Several instances: the shared tables, used instead of `inner`.
    shared: Option<SharedLogins>,
}

impl Sessions {
    /// In this process's memory, or in the tables every instance shares.
    pub fn new(shared: Option<SharedLogins>) -> Sessions {
        Sessions {
            inner: Arc::default(),
            shared,
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers a flight under its `state`. Expired entries go first; then, for a
    /// registration id with [`MAX_FLIGHTS_PER_LOGIN`] flights, its oldest; a full table
    /// refuses the newcomer (nothing genuine is pushed out by a flood).
    pub async fn start(&self, state: String, flight: Flight) -> Result<(), SessionError> {
        if let Some(shared) = &self.shared {
            return shared
                .start_flight(
                    &state,
                    &flight,
                    SESSION_TTL,
                    MAX_FLIGHTS,
                    MAX_FLIGHTS_PER_LOGIN,
                )
                .await;
        }
        let mut tables = self.tables();
        let now = Instant::now();
        tables.flights.retain(|_, f| now - f.created < SESSION_TTL);
        let mut same: Vec<(String, Instant)> = tables
            .flights
            .iter()
            .filter(|(_, f)| f.value.auth_id == flight.auth_id)
            .map(|(k, f)| (k.clone(), f.created))
            .collect();
        if same.len() >= MAX_FLIGHTS_PER_LOGIN {
            same.sort_by_key(|(_, created)| *created);
            for (key, _) in &same[..=same.len() - MAX_FLIGHTS_PER_LOGIN] {
                tables.flights.remove(key);
            }
        }
        if tables.flights.len() >= MAX_FLIGHTS {
            return Err(SessionError::Busy);
        }
        tables.flights.insert(
            state,
            Timed {
                value: flight,
                created: now,
            },
        );
        Ok(())
    }

    /// Takes the flight of `state` out (a second callback with it finds nothing).
    /// Several instances: an unreachable shared table reads as no flight (logged).
    pub async fn take_flight(&self, state: &str) -> Option<Flight> {
        if let Some(shared) = &self.shared {
            return shared.take_flight(state).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "OIDC flight not readable");
                None
            });
        }
        let entry = self.tables().flights.remove(state)?;
        (entry.created.elapsed() < SESSION_TTL).then_some(entry.value)
    }

    /// Keeps a verified login until its user confirms (a newer login for the same id
    /// replaces it).
    pub async fn confirm_later(
        &self,
        auth_id: &str,
        confirmation: Confirmation,
    ) -> Result<(), SessionError> {
        if let Some(shared) = &self.shared {
            return shared
                .confirm_later(auth_id, &confirmation, SESSION_TTL, MAX_CONFIRMATIONS)
                .await;
        }
        let mut tables = self.tables();
        let now = Instant::now();
        tables
            .confirmations
            .retain(|_, c| now - c.created < SESSION_TTL);
        if tables.confirmations.len() >= MAX_CONFIRMATIONS
            && !tables.confirmations.contains_key(auth_id)
        {
            return Err(SessionError::Busy);
        }
        tables.confirmations.insert(
            auth_id.to_string(),
            Timed {
                value: confirmation,
                created: now,
            },
        );
        Ok(())
    }

    /// Takes the confirmation of `auth_id` if `csrf` is its token (compared in constant time);
    /// a wrong token leaves it in place.
    /// Several instances: an unreachable shared table reads as none (logged).
    pub async fn take_confirmation(
        &self,
        auth_id: &str,
        csrf: &str,
    ) -> Result<Confirmation, Taken> {
        if let Some(shared) = &self.shared {
            return shared
                .take_confirmation(auth_id, csrf)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "OIDC confirmation not readable");
                    Err(Taken::Unknown)
                });
        }
        use subtle::ConstantTimeEq;
        let mut tables = self.tables();
        let Some(entry) = tables.confirmations.get(auth_id) else {
            return Err(Taken::Unknown);
        };
        if entry.created.elapsed() >= SESSION_TTL {
            tables.confirmations.remove(auth_id);
            return Err(Taken::Unknown);
        }
        if !bool::from(entry.value.csrf.as_bytes().ct_eq(csrf.as_bytes())) {
            return Err(Taken::Mismatch);
        }
        Ok(tables
            .confirmations
            .remove(auth_id)
            .map(|e| e.value)
            .expect("present: checked above under the same lock"))
    }
}

/// Why a confirmation could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// None waits (never made, expired, or already used).
    Unknown,
    /// One waits, but the form's token is not its token.
    Mismatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flight(auth_id: &str) -> Flight {
        Flight {
            auth_id: auth_id.into(),
            nonce: "n".into(),
            pkce_verifier: None,
        }
    }

    #[tokio::test]
    async fn a_flight_is_used_once() {
        let s = Sessions::default();
        s.start("state1".into(), flight("a")).await.unwrap();
        assert_eq!(s.take_flight("state1").await.unwrap().auth_id, "a");
        assert!(s.take_flight("state1").await.is_none());
    }

    #[tokio::test]
    async fn one_login_keeps_only_its_newest_flights() {
        let s = Sessions::default();
        for i in 0..MAX_FLIGHTS_PER_LOGIN + 2 {
            s.start(format!("s{i}"), flight("a")).await.unwrap();
        }
        assert!(s.take_flight("s0").await.is_none());
        assert!(s.take_flight("s1").await.is_none());
        assert!(s
            .take_flight(&format!("s{}", MAX_FLIGHTS_PER_LOGIN + 1))
            .await
            .is_some());
    }

    #[tokio::test]
    async fn a_full_table_refuses_newcomers() {
        let s = Sessions::default();
        for i in 0..MAX_FLIGHTS {
            s.start(format!("s{i}"), flight(&format!("id{i}")))
                .await
                .unwrap();
        }
        assert_eq!(
            s.start("late".into(), flight("other")).await,
            Err(SessionError::Busy)
        );
        assert!(s.take_flight("s0").await.is_some());
    }

    #[tokio::test]
    async fn confirmations_need_their_token() {
        let s = Sessions::default();
        let c = Confirmation {
            user: UserId(1),
            identity: "i".into(),
            expiry: None,
            csrf: "token".into(),
        };
        s.confirm_later("a", c).await.unwrap();
        assert_eq!(
            s.take_confirmation("a", "wrong").await.unwrap_err(),
            Taken::Mismatch
        );
        assert_eq!(
            s.take_confirmation("a", "token").await.unwrap().user,
            UserId(1)
        );
        assert_eq!(
            s.take_confirmation("a", "token").await.unwrap_err(),
            Taken::Unknown
        );
    }
}
