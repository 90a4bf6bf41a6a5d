//! Logins in flight between our redirect to the provider and the user's confirmation: two
//! bounded tables in memory, never in the event log (anyone holding an AuthURL can start
//! one). A *flight* is keyed by the OAuth `state` and consumed by its first callback, so a
//! replayed callback finds nothing; a *confirmation* waits, per registration id, for the
//! user to press "register" on our page (headscale 0.29's interstitial: a silent SSO
//! redirect alone must not register a machine).

use crate::core::ids::UserId;
use crate::core::Timestamp;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many logins are in progress; try again in a few minutes")]
pub struct Busy;

struct Timed<T> {
    value: T,
    created: Instant,
}

#[derive(Default)]
struct Tables {
    flights: HashMap<String, Timed<Flight>>,
    confirmations: HashMap<String, Timed<Confirmation>>,
}

/// The shared tables (cheap to clone).
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<Tables>>,
}

impl Sessions {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers a flight under its `state`. Expired entries go first; then, for a
    /// registration id with [`MAX_FLIGHTS_PER_LOGIN`] flights, its oldest; a full table
    /// refuses the newcomer (nothing genuine is pushed out by a flood).
    pub fn start(&self, state: String, flight: Flight) -> Result<(), Busy> {
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
            return Err(Busy);
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
    pub fn take_flight(&self, state: &str) -> Option<Flight> {
        let entry = self.tables().flights.remove(state)?;
        (entry.created.elapsed() < SESSION_TTL).then_some(entry.value)
    }

    /// Keeps a verified login until its user confirms (a newer login for the same id
    /// replaces it).
    pub fn confirm_later(&self, auth_id: &str, confirmation: Confirmation) -> Result<(), Busy> {
        let mut tables = self.tables();
        let now = Instant::now();
        tables
            .confirmations
            .retain(|_, c| now - c.created < SESSION_TTL);
        if tables.confirmations.len() >= MAX_CONFIRMATIONS
            && !tables.confirmations.contains_key(auth_id)
        {
            return Err(Busy);
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
    pub fn take_confirmation(&self, auth_id: &str, csrf: &str) -> Result<Confirmation, Taken> {
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

    #[test]
    fn a_flight_is_used_once() {
        let s = Sessions::default();
        s.start("state1".into(), flight("a")).unwrap();
        assert_eq!(s.take_flight("state1").unwrap().auth_id, "a");
        assert!(s.take_flight("state1").is_none());
    }

    #[test]
    fn one_login_keeps_only_its_newest_flights() {
        let s = Sessions::default();
        for i in 0..MAX_FLIGHTS_PER_LOGIN + 2 {
            s.start(format!("s{i}"), flight("a")).unwrap();
        }
        assert!(s.take_flight("s0").is_none());
        assert!(s.take_flight("s1").is_none());
        assert!(s
            .take_flight(&format!("s{}", MAX_FLIGHTS_PER_LOGIN + 1))
            .is_some());
    }

    #[test]
    fn a_full_table_refuses_newcomers() {
        let s = Sessions::default();
        for i in 0..MAX_FLIGHTS {
            s.start(format!("s{i}"), flight(&format!("id{i}"))).unwrap();
        }
        assert_eq!(s.start("late".into(), flight("other")), Err(Busy));
        assert!(s.take_flight("s0").is_some());
    }

    #[test]
    fn confirmations_need_their_token() {
        let s = Sessions::default();
        let c = Confirmation {
            user: UserId(1),
            identity: "i".into(),
            expiry: None,
            csrf: "token".into(),
        };
        s.confirm_later("a", c).unwrap();
        assert_eq!(
            s.take_confirmation("a", "wrong").unwrap_err(),
            Taken::Mismatch
        );
        assert_eq!(s.take_confirmation("a", "token").unwrap().user, UserId(1));
        assert_eq!(
            s.take_confirmation("a", "token").unwrap_err(),
            Taken::Unknown
        );
    }
}
