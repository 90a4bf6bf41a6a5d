//! When to order a certificate (sans-I/O: the time arrives as an argument). A certificate is
//! renewed once a third of its lifetime is left, at most 30 days before it expires (Let's
//! Encrypt's advice; autocert renews 30 days before, which would loop on short-lived
//! certificates). A failed attempt is retried with a doubling delay, so a CA that is down or
//! refuses us is not hammered (Let's Encrypt allows 5 failed validations an hour), while
//! the certificate in force keeps serving.

use std::time::{Duration, SystemTime};

/// Never renew earlier than this before expiry, however long the certificate lives.
pub const MAX_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The delay after the first failed attempt; doubled after each further one.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(60);
/// The longest delay between two failed attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// A certificate's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// Whether the certificate can still be served at `now`.
    pub fn is_current(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// When to order its replacement: a third of the lifetime (at most 30 days) before expiry.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        let before = (lifetime / 3).min(MAX_RENEW_BEFORE);
        self.not_after
            .checked_sub(before)
            .unwrap_or(self.not_before)
    }
}

/// What the renewal loop knows: the certificate in force and the failures since the last
/// success.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    pub current: Option<Validity>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// When the last attempt ended (success or failure).
    pub last_attempt: Option<SystemTime>,
}

impl Schedule {
    /// When the next order should start: at once without a certificate, at the renewal time
    /// with one, and never sooner than the back-off after failures.
    pub fn next_attempt(&self, now: SystemTime) -> SystemTime {
        let due = match self.current {
            Some(validity) => validity.renew_at(),
            None => now,
        };
        match (self.failures, self.last_attempt) {
            (0, _) | (_, None) => due,
            (failures, Some(last)) => due.max(last + retry_delay(failures)),
        }
    }

    /// A new certificate is in force.
    pub fn succeeded(&mut self, validity: Validity, now: SystemTime) {
        self.current = Some(validity);
        self.failures = 0;
        self.last_attempt = Some(now);
    }

    /// An attempt failed; the certificate in force (if any) stays.
    pub fn failed(&mut self, now: SystemTime) {
        self.failures = self.failures.saturating_add(1);
        self.last_attempt = Some(now);
    }
}

/// The delay after `failures` failed attempts in a row (1 → [`FIRST_RETRY_DELAY`]).
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY_DELAY
        .saturating_mul(1 << doublings)
        .min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn validity(start: SystemTime, lifetime: Duration) -> Validity {
        Validity {
            not_before: start,
            not_after: start + lifetime,
        }
    }

    #[test]
    fn a_90_day_certificate_renews_30_days_before_expiry() {
        let v = validity(at(1_000_000), 90 * DAY);
        assert_eq!(v.renew_at(), at(1_000_000) + 60 * DAY);
    }

    #[test]
    fn a_long_certificate_renews_at_most_30_days_before_expiry() {
        let v = validity(at(0), 365 * DAY);
        assert_eq!(v.renew_at(), at(0) + 335 * DAY);
    }

    #[test]
    fn a_short_lived_certificate_renews_with_a_third_left() {
        // Let's Encrypt's 6-day certificates, and the seconds-long ones of the tests.
        assert_eq!(validity(at(0), 6 * DAY).renew_at(), at(0) + 4 * DAY);
        assert_eq!(
            validity(at(100), Duration::from_secs(30)).renew_at(),
            at(120)
        );
    }

    #[test]
    fn a_backwards_validity_renews_at_once() {
        let v = Validity {
            not_before: at(100),
            not_after: at(50),
        };
        assert_eq!(v.renew_at(), at(50));
        assert!(!v.is_current(at(60)));
    }

    #[test]
    fn without_a_certificate_the_first_order_starts_now() {
        let schedule = Schedule::default();
        assert_eq!(schedule.next_attempt(at(5)), at(5));
    }

    #[test]
    fn failures_back_off_doubling_up_to_an_hour() {
        assert_eq!(retry_delay(1), Duration::from_secs(60));
        assert_eq!(retry_delay(2), Duration::from_secs(120));
        assert_eq!(retry_delay(6), Duration::from_secs(1920));
        assert_eq!(retry_delay(7), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);

        let mut schedule = Schedule::default();
        schedule.failed(at(1000));
        assert_eq!(schedule.next_attempt(at(1000)), at(1060));
        schedule.failed(at(1060));
        assert_eq!(schedule.next_attempt(at(1060)), at(1180));
    }

    #[test]
    fn a_failed_renewal_keeps_the_certificate_and_waits_for_the_back_off() {
        let mut schedule = Schedule::default();
        let v = validity(at(0), 90 * DAY);
        schedule.succeeded(v, at(0));
        assert_eq!(schedule.next_attempt(at(0)), v.renew_at());
        let failed_at = v.renew_at() + Duration::from_secs(1);
        schedule.failed(failed_at);
        assert_eq!(schedule.current, Some(v));
        assert_eq!(
            schedule.next_attempt(failed_at),
            failed_at + FIRST_RETRY_DELAY
        );
        // A success resets the back-off.
        let next = validity(failed_at, 90 * DAY);
        schedule.succeeded(next, failed_at);
        assert_eq!(schedule.failures, 0);
        assert_eq!(schedule.next_attempt(failed_at), next.renew_at());
    }

    #[test]
    fn validity_is_current_only_inside_its_window() {
        let v = validity(at(100), Duration::from_secs(10));
        assert!(!v.is_current(at(99)));
        assert!(v.is_current(at(100)));
        assert!(v.is_current(at(109)));
        assert!(!v.is_current(at(110)));
    }
}
